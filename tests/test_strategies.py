"""The heuristic suite of metaal.strategies: contract (distinct unlabeled picks, reproducible),
formulas against brute force, ALBL's bandit, AL beating random, and equivalence with
scikit-activeml's uncertainty sampling on identical splits."""
from __future__ import annotations

import numpy as np
import pytest
from strategy_contract import check_select_contract

from metaal import strategies
from metaal.data import Dataset, load_dataset, make_split
from metaal.errors import ConfigError
from metaal.loop import new_state, simulate
from metaal.state import Task
from metaal.strategies.committee import (
    bootstrap_indices,
    committee_proba,
    mean_kl_to_consensus,
    mutual_information,
    vote_entropy,
)
from metaal.strategies.gradient import badge_embedding_parts, egl_score, kmeanspp_outer

ALL = strategies.names()
EXPECTED = {
    "random", "least_confident", "margin", "entropy", "qbc_vote", "qbc_kl", "bald", "egl",
    "badge", "density", "coreset", "dbal", "albl", "typiclust", "probcover", "maxherding", "eer", "xpal",
    "falcun", "dropquery",
}


def _task(ds: Dataset, seed: int = 0, n_initial: int = 10) -> Task:
    return Task.from_split(ds, make_split(ds, seed, n_initial=n_initial))


def _imbalanced() -> Dataset:
    """sklearn digits classes 0..4 kept at 150 / 60 / 30 / 15 / 8 rows (imbalanced, 5 classes)."""
    d = load_dataset("sklearn:digits")
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [rng.choice(np.flatnonzero(d.y == c), size=n, replace=False) for c, n in enumerate((150, 60, 30, 15, 8))]
    )
    sub = d.subset(np.sort(keep))
    return Dataset(X=sub.X, y=sub.y, classes=sub.classes[:5], name="digits_imbalanced")


@pytest.fixture(scope="module", autouse=True)
def _single_thread_blas():
    """Small fits only: one BLAS thread avoids oversubscribing the shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {"wine": _task(load_dataset("sklearn:wine")), "imbalanced": _task(_imbalanced())}


def test_all_heuristics_registered() -> None:
    assert EXPECTED <= set(ALL)
    for n in EXPECTED:
        assert strategies.get(n).name == n
        if n != "random":
            assert "Reference" in (type(strategies.get(n)).__doc__ or ""), n


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("which", ["wine", "imbalanced"])
def test_select_contract(name: str, which: str, tasks: dict[str, Task]) -> None:
    check_select_contract(name, tasks[which])


def test_albl_never_repicks_and_learns(tasks: dict[str, Task]) -> None:
    task = tasks["wine"]
    albl = strategies.get("albl")
    for batch in (1, 3):
        curve = simulate(task, albl, budget=30, batch_size=batch, seed=2)  # raises on a re-pick
        q = np.asarray(curve.queried)
        assert len(q) == 30 and len(np.unique(q)) == 30
        assert not np.isin(q, task.initial).any()
        w = albl.expert_probabilities
        assert np.isclose(w.sum(), 1.0) and not np.allclose(w, 0.25)  # the weights moved
    albl.reset()
    np.testing.assert_array_equal(albl.weights, np.ones(4))
    assert albl._queried == [] and albl._pending == []
    # same seed, same run
    a = simulate(task, "albl", budget=15, seed=4).queried
    b = simulate(task, "albl", budget=15, seed=4).queried
    assert a == b


def test_albl_bad_config() -> None:
    with pytest.raises(ConfigError):
        strategies.get("albl", experts=["margin"])
    with pytest.raises(ConfigError):
        strategies.get("albl", experts=["margin", "nope"])
    with pytest.raises(ConfigError):
        strategies.get("albl", gamma=0.0)


def test_albl_state_round_trip(tasks: dict[str, Task]) -> None:
    """get_state is JSON-serializable and set_state on a fresh bandit restores it exactly: both
    bandits then pick the same items and end in the same state."""
    import json

    task = tasks["wine"]
    state = new_state(task, budget=30)
    albl = strategies.get("albl")
    albl.reset(state, np.random.default_rng(0))
    for step in range(4):
        idx = albl.select(state, 2, np.random.default_rng([7, step]))
        state.add_labels(idx, task.y_pool[idx])
    last = albl.select(state, 2, np.random.default_rng([7, 4]))  # leaves a pending update
    saved = json.loads(json.dumps(albl.get_state()))
    assert saved == albl.get_state()
    assert len(saved["pending"]) == 2 and len(saved["queried"]) == 10 and saved["weights"] != [1.0] * 4

    twin = strategies.get("albl")
    twin.reset(state, np.random.default_rng(0))
    twin.set_state(saved)
    assert twin.get_state() == saved
    np.testing.assert_array_equal(twin.weights, albl.weights)
    state.add_labels(last, task.y_pool[last])  # the pending update is applied at the next select
    for step in range(5, 8):
        a = albl.select(state, 2, np.random.default_rng([7, step]))
        b = twin.select(state, 2, np.random.default_rng([7, step]))
        np.testing.assert_array_equal(a, b)
        state.add_labels(a, task.y_pool[a])
    assert twin.get_state() == albl.get_state()
    # without set_state the fresh bandit's state differs (the round trip above is not vacuous)
    fresh = strategies.get("albl")
    fresh.reset(state, np.random.default_rng(0))
    assert fresh.get_state() != albl.get_state()


def test_strategy_state_api_errors() -> None:
    for name in sorted(EXPECTED - {"albl"}):
        strat = strategies.get(name)
        assert strat.get_state() == {}, name
        strat.set_state({})  # nothing to restore: accepted
    with pytest.raises(ConfigError, match="strategy 'margin' keeps no state.*weights"):
        strategies.get("margin").set_state({"weights": [1.0, 1.0]})
    with pytest.raises(ConfigError, match="'entropy': a state must be a dict"):
        strategies.get("entropy").set_state([1.0])  # type: ignore[arg-type]
    albl = strategies.get("albl")
    good = albl.get_state()
    for bad, msg in [
        ({}, "version"),
        ({**good, "expert_names": ["margin", "random"]}, "experts"),
        ({**good, "weights": [1.0, 1.0]}, "malformed"),
        ({k: v for k, v in good.items() if k != "iw"}, "malformed"),
    ]:
        with pytest.raises(ConfigError, match=f"albl: .*{msg}"):
            albl.set_state(bad)
    assert albl.get_state() == good


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        strategies.get("qbc_vote", n_members=1)
    with pytest.raises(ConfigError):
        strategies.get("density", beta=-1)
    with pytest.raises(ConfigError):
        strategies.get("density", measure="gini")
    with pytest.raises(ConfigError):
        strategies.get("density", similarity="manhattan")
    with pytest.raises(ConfigError):
        strategies.get("dbal", beta=0)


def test_coreset_matches_brute_force(tasks: dict[str, Task]) -> None:
    task = tasks["imbalanced"]
    state = new_state(task)
    X = state.X_pool

    def brute(labeled: np.ndarray, k: int) -> list[int]:
        lab = list(labeled)
        out = []
        for _ in range(k):
            unl = np.setdiff1d(np.arange(state.n_pool), lab)
            d = np.sqrt(((X[unl, None, :] - X[None, lab, :]) ** 2).sum(-1)).min(axis=1)
            j = int(unl[np.argmax(d)])
            out.append(j)
            lab.append(j)
        return out

    cs = strategies.get("coreset")
    assert cs.select(state, 1).tolist() == brute(state.labeled_idx, 1)
    assert cs.select(state, 5).tolist() == brute(state.labeled_idx, 5)
    state.add_labels(cs.select(state, 4), task.y_pool[cs.select(state, 4)])
    assert cs.select(state, 3).tolist() == brute(state.labeled_idx, 3)
    # score = distance to the nearest labeled item
    unl = state.unlabeled_idx
    d = np.sqrt(((X[unl, None, :] - X[None, state.labeled_idx, :]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(cs.score(state), d, atol=1e-6)


def test_committee_measures_by_hand() -> None:
    same = np.tile(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), (4, 1, 1))  # (M=4, n=2, C=3)
    np.testing.assert_allclose(vote_entropy(same), 0.0, atol=1e-9)
    np.testing.assert_allclose(mean_kl_to_consensus(same), 0.0, atol=1e-9)
    np.testing.assert_allclose(mutual_information(same), 0.0, atol=1e-9)
    split = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])  # two members disagree on one item
    np.testing.assert_allclose(vote_entropy(split), [np.log(2)])
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    np.testing.assert_allclose(mean_kl_to_consensus(split), [kl])
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(mutual_information(split), [np.log(2) - h])


def test_bald_equals_mean_kl_for_an_ensemble(tasks: dict[str, Task]) -> None:
    # H[mean P] - mean H[P] == mean KL(P_m || mean P): BALD's ensemble estimate is QBC-KL
    state = new_state(tasks["imbalanced"])
    P = committee_proba(state, np.random.default_rng(0), n_members=4)
    np.testing.assert_allclose(mutual_information(P), mean_kl_to_consensus(P), atol=1e-8)
    assert mutual_information(P).max() > 0.05


def test_committee_bootstrap(tasks: dict[str, Task]) -> None:
    y = np.array([0] * 9 + [1])
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert len(np.unique(y[bootstrap_indices(y, rng)])) == 2
    state = new_state(tasks["wine"])
    P1 = committee_proba(state, np.random.default_rng(5), n_members=3)
    P2 = committee_proba(state, np.random.default_rng(5), n_members=3)
    assert P1.shape == (3, len(state.unlabeled_idx), state.n_classes)
    np.testing.assert_array_equal(P1, P2)
    assert not np.allclose(P1[0], P1[1])  # members differ
    np.testing.assert_allclose(P1.sum(axis=2), 1.0)


def test_egl_and_badge_against_explicit_gradients(tasks: dict[str, Task]) -> None:
    state = new_state(tasks["imbalanced"])
    unl = state.unlabeled_idx[:60]
    P, X = state.proba[unl], state.X_pool[unl]
    Z = np.hstack([X, np.ones((len(X), 1))])
    C = P.shape[1]
    explicit = np.array(
        [sum(P[i, c] * np.linalg.norm(np.outer(P[i] - np.eye(C)[c], Z[i])) for c in range(C)) for i in range(len(P))]
    )
    np.testing.assert_allclose(egl_score(P, X), explicit, rtol=1e-10)
    # BADGE: factorized distances == distances of the explicit embeddings
    a, z = badge_embedding_parts(P, X)
    G = np.stack([np.outer(P[i] - np.eye(C)[P[i].argmax()], Z[i]).ravel() for i in range(len(P))])
    np.testing.assert_allclose(np.einsum("ij,ij->i", G, G), (a * a).sum(1) * (z * z).sum(1), rtol=1e-10)
    picks = kmeanspp_outer(a, z, 8, np.random.default_rng(0))
    assert picks[0] == int(np.argmax((G * G).sum(1)))
    assert len(np.unique(picks)) == 8
    # k = 1: the largest-norm gradient embedding
    badge = strategies.get("badge")
    full = state.unlabeled_idx
    a, z = badge_embedding_parts(state.proba[full], state.X_pool[full])
    assert badge.select(state, 1)[0] == full[np.argmax((a * a).sum(1) * (z * z).sum(1))]


def test_density_cache_survives_refits(tasks: dict[str, Task]) -> None:
    task = tasks["wine"]
    state = new_state(task)
    dens = strategies.get("density")
    s1 = dens.score(state)
    keys = [k for k in state.cache if k.startswith("density_sim:")]
    assert len(keys) == 1
    sim = state.cache[keys[0]]
    assert sim.shape == (state.n_pool,) and (sim > 0).all() and (sim <= 1).all()
    idx = dens.select(state, 2)
    state.add_labels(idx, task.y_pool[idx])
    assert state.cache[keys[0]] is sim  # not recomputed after the refit
    # beta = 0 is plain entropy sampling
    ent = strategies.get("entropy")
    assert strategies.get("density", beta=0).select(state, 3).tolist() == ent.select(state, 3).tolist()
    assert s1.shape == (len(state.unlabeled_idx) + 2,)


def test_dbal_k1_is_among_margins_top_beta(tasks: dict[str, Task]) -> None:
    state = new_state(tasks["imbalanced"])
    margin = strategies.get("margin")
    top10 = set(margin.select(state, 10).tolist())
    assert strategies.get("dbal").select(state, 1)[0] in top10
    top50 = set(margin.select(state, 50).tolist())
    assert set(strategies.get("dbal").select(state, 5, np.random.default_rng(0)).tolist()) <= top50


@pytest.mark.parametrize("name", ["banknote", "vote", "sklearn:wine"])
def test_uncertainty_beats_random(name: str, shared) -> None:
    ds = load_dataset(name) if name.startswith("sklearn:") else shared(name)
    budget, seeds = 30, range(4)
    aulc = {s: [] for s in ("random", "margin", "entropy")}
    for seed in seeds:
        task = _task(ds, seed, n_initial=6)
        for s in aulc:
            aulc[s].append(simulate(task, s, budget, seed=seed).aulc)
    mean = {s: float(np.mean(v)) for s, v in aulc.items()}
    assert mean["margin"] > mean["random"], mean
    assert mean["entropy"] > mean["random"], mean


@pytest.mark.parametrize("method", ["least_confident", "margin", "entropy"])
def test_matches_scikit_activeml(method: str, wine: Dataset) -> None:
    pytest.importorskip("skactiveml")
    from metaal.experiments.skactiveml_ref import run_skactiveml

    ours, theirs = [], []
    for seed in range(3):
        task = _task(wine, seed, n_initial=6)
        ours.append(simulate(task, method, 30, seed=seed).aulc)
        theirs.append(float(np.mean(run_skactiveml(task, method, 30, seed))))
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.01, (ours, theirs)
    for a, b in zip(ours, theirs):
        assert abs(a - b) < 0.01


def test_policy_prefix_is_registered_by_the_agents_layer_through_an_entry_point(monkeypatch):
    """``policy:`` comes from the ``metaal.strategies`` entry point group (pyproject.toml), which
    get() loads for a prefix it does not know; the strategies layer names no agents module."""
    from importlib.metadata import entry_points

    from metaal.strategies import base

    eps = {ep.name: ep.value for ep in entry_points(group=base.ENTRY_POINT_GROUP)}
    assert eps.get("policy") == "metaal.agents.learned:policy_factory"
    # forget the factory, as in a fresh interpreter that never imported metaal.agents
    monkeypatch.delitem(base._REGISTRY, "policy:", raising=False)
    s = strategies.get("policy:default")
    assert type(s).__name__ == "LearnedStrategy" and s.name.startswith("policy:default")
    assert "policy:" in base._REGISTRY  # loaded once, then kept
    assert "policy" in base.prefixes()
    with pytest.raises(ConfigError, match="unknown strategy prefix 'nope'.*policy:ARG"):
        strategies.get("nope:x")
