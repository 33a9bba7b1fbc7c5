"""Learners with fixed classes, ALState bookkeeping, incremental geometry and simulate()."""
from __future__ import annotations

import numpy as np
import pytest

from metaal.data import make_split
from metaal.errors import DataError, LabelError
from metaal.learners import make_learner
from metaal.loop import new_state, simulate
from metaal.state import Task, pairwise_dist


def test_learner_keeps_all_class_columns(wine):
    lrn = make_learner("logreg", n_classes=5)
    m = wine.y < 2
    lrn.fit(wine.X[m], wine.y[m])
    p = lrn.predict_proba(wine.X)
    assert p.shape == (wine.n, 5) and np.allclose(p.sum(1), 1)
    assert p[:, 2:].max() < 1e-9 and set(lrn.predict(wine.X)) <= {0, 1}


def test_learner_single_class_predicts_prior():
    lrn = make_learner("logreg", n_classes=3).fit(np.ones((4, 2)), np.array([1, 1, 1, 1]))
    p = lrn.predict_proba(np.zeros((2, 2)))
    assert np.argmax(p[0]) == 1 and np.allclose(p.sum(1), 1)


def test_learner_quiet_on_few_labels_over_many_classes():
    """30 labels over 20 classes is a normal early active-learning state: no scikit-learn warning
    that the labels look like a regression target (it flooded training and evaluation logs)."""
    import warnings

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), np.arange(30) % 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = make_learner("logreg", n_classes=20).fit(X, y).predict_proba(X)
    assert p.shape == (30, 20) and np.allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize("name", ["logreg", "svm", "rf", "knn", "gb"])
def test_every_learner_by_name(name, wine):
    t = Task.from_split(wine, make_split(wine, 0, 10))
    c = simulate(t, "margin", budget=3, learner=name)
    assert c.accuracy.shape == (4,) and c.accuracy[-1] > 0.45  # above chance (1/3) from 13 labels


def test_state_rejects_bad_labels_without_change(wine):
    t = Task.from_split(wine, make_split(wine, 0, 6))
    s = new_state(t, budget=5)
    before = s.labels.copy()
    for idx, lab, msg in [([t.initial[0]], [0], "already labeled"), ([10**6], [0], "out of range"),
                          ([s.unlabeled_idx[0]], [7], "labels must be in")]:
        with pytest.raises(LabelError, match=msg):
            s.add_labels(idx, lab)
        assert np.array_equal(s.labels, before)


def test_incremental_min_distance_matches_brute_force(shared):
    d = shared("vertebral_column")
    t = Task.from_split(d, make_split(d, 1, 5))
    s = new_state(t, budget=20)
    s.min_dist_labeled()  # start incremental tracking
    rng = np.random.default_rng(0)
    for _ in range(10):
        i = rng.choice(s.unlabeled_idx)
        s.add_labels([i], [t.y_pool[i]])
    brute = pairwise_dist(s.X_pool, s.X_pool[s.labeled_idx]).min(1)
    assert np.allclose(s.min_dist_labeled(), brute, atol=1e-6)


def test_simulate_reproducible_and_budget_checked(wine):
    t = Task.from_split(wine, make_split(wine, 2, 6))
    a = simulate(t, "random", budget=15, seed=4)
    b = simulate(t, "random", budget=15, seed=4)
    assert np.array_equal(a.accuracy, b.accuracy) and a.queried == b.queried
    assert list(a.n_labeled) == list(range(6, 22))
    c = simulate(t, "margin", budget=15, batch_size=4)
    assert list(c.n_labeled) == [6, 10, 14, 18, 21]
    with pytest.raises(DataError, match="larger than the unlabeled pool"):
        simulate(t, "margin", budget=10_000)


def test_standardized_with_pool_statistics(wine):
    t = Task.from_split(wine, make_split(wine, 0, 6))
    assert np.allclose(t.X_pool.mean(0), 0, atol=1e-9) and np.allclose(t.X_pool.std(0), 1)
    assert not np.allclose(t.X_test.mean(0), 0, atol=1e-3)
