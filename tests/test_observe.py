"""Observation features: shapes, documented ranges, candidate sources, determinism."""
from __future__ import annotations

import numpy as np

from metaal import scores
from metaal.data import make_split
from metaal.loop import new_state
from metaal.observe import CANDIDATE_FEATURES, GLOBAL_FEATURES, Observer
from metaal.state import Task


def test_shapes_ranges_and_margin_first(shared):
    for name in ["banknote", "dermatology"]:
        d = shared(name)
        t = Task.from_split(d, make_split(d, 0, 10))
        s = new_state(t, budget=30)
        obs = Observer(k=32).observe(s, np.random.default_rng(0))
        assert obs.candidates.shape == (32, len(CANDIDATE_FEATURES))
        assert obs.global_.shape == (len(GLOBAL_FEATURES),)
        assert obs.mask.all() and len(set(obs.indices)) == 32
        assert not s.labeled_mask[obs.indices].any()
        unl = s.unlabeled_idx
        assert obs.indices[0] == unl[np.argmin(scores.margin(s.proba[unl]))]  # margin's best first
        c = obs.candidates
        assert (c[:, :3] >= 0).all() and (c[:, :3] <= 1 + 1e-6).all()
        assert (c[:, 4] >= 0).all() and (c[:, 4] <= 1).all() and c[0, 4] == 0
        assert (c[:, 5] >= 0).all() and (c[:, 5] <= 4).all()
        assert (c[:, 8:].sum(1) >= 1).all()  # every candidate has a source flag
        assert ((obs.global_ >= 0) & (obs.global_ <= 1)).all()


def test_same_seed_same_observation_and_padding(wine):
    t = Task.from_split(wine, make_split(wine, 0, 10))
    a = Observer(k=16).observe(new_state(t, budget=5), np.random.default_rng(7))
    b = Observer(k=16).observe(new_state(t, budget=5), np.random.default_rng(7))
    assert np.array_equal(a.candidates, b.candidates) and np.array_equal(a.indices, b.indices)
    big = Observer(k=200).observe(new_state(t, budget=5), np.random.default_rng(0))
    n_unl = t.n_pool - 10
    assert big.mask.sum() == n_unl and (big.indices[n_unl:] == -1).all()
    assert (big.candidates[n_unl:] == 0).all()


def test_disagreement_and_flip_rate_follow_refits(wine):
    t = Task.from_split(wine, make_split(wine, 0, 4))
    s = new_state(t, budget=10)
    o = Observer(k=8)
    first = o.observe(s, np.random.default_rng(0))
    assert (first.candidates[:, 3] == 0).all() and first.global_[8] == 0
    i = first.indices[0]
    s.add_labels([i], [t.y_pool[i]])
    second = o.observe(s, np.random.default_rng(0))
    assert second.candidates[:, 3].max() > 0  # the model changed
    assert np.isclose(second.global_[8], np.mean(s.prev_pred != s.pred))


def test_random_candidates_are_the_choice_over_the_rest_of_the_pool():
    """The random fill draws what ``rng.choice`` over the unchosen unlabeled items would draw."""
    from metaal.observe import _random_fill

    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 80))
        unlabeled = rng.random(n) < 0.7
        unl = np.flatnonzero(unlabeled)
        if len(unl) < 2:
            continue
        picks = rng.choice(unl, size=int(rng.integers(0, len(unl))), replace=False)
        rest = np.setdiff1d(unl, picks)
        k = int(rng.integers(1, len(rest) + 1))
        seed = int(rng.integers(1 << 30))
        want = np.random.default_rng(seed).choice(rest, size=k, replace=False)
        np.testing.assert_array_equal(_random_fill(unlabeled, picks, k, np.random.default_rng(seed)), want)


def test_large_pool_observation_is_cheap_and_the_same_as_read_whole(monkeypatch):
    """Beyond the exact sizes (here lowered so that the test is fast) the density is computed for a
    shortlist and the candidates only, the margin rank on a fixed sample; the orderings read within
    the universe of their heads give the very observation of the whole-pool path."""
    import metaal.geometry as geometry
    import metaal.observe as observe
    from metaal.data import load_dataset

    monkeypatch.setattr(geometry, "EXACT_DENSITY_MAX", 500)
    monkeypatch.setattr(observe, "RANK_SAMPLE", 400)
    d = load_dataset("synth:blobs?n=4000&d=6&sep=1.0&seed=2")
    t = Task.from_split(d, make_split(d, 0, 10))
    s = new_state(t, budget=20)
    rng = np.random.default_rng(0)
    whole = observe._universe
    for step in range(6):
        a = Observer(k=32).observe(s, np.random.default_rng(step))
        monkeypatch.setattr(observe, "_universe", lambda keys, L: None)
        b = Observer(k=32).observe(s, np.random.default_rng(step))
        monkeypatch.setattr(observe, "_universe", whole)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.candidates, b.candidates)
        unl = s.unlabeled_idx
        assert a.indices[0] == unl[np.argmin(scores.margin(s.proba[unl]))]  # margin's best first, still
        assert not s.labeled_mask[a.indices].any() and len(set(a.indices)) == 32
        assert (a.candidates[:, 9].sum() >= 1) and (a.candidates[:, 11].sum() >= 1)  # density and random picks
        known = np.isfinite(s.geometry.known_density()).sum()
        assert known < s.n_pool / 4  # densities of a shortlist and the candidates, not of the pool
        i = a.indices[int(rng.integers(0, 32))]
        s.add_labels([i], [t.y_pool[i]])
