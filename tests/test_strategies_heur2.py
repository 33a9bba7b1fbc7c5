"""The model-based strategies eer, xpal (metaal.strategies.expected), falcun and dropquery
(metaal.strategies.batch): the strategy contract, their formulas against brute force and
scikit-activeml, beating random where the literature says so, and equivalence with
scikit-activeml on identical splits."""
from __future__ import annotations

import numpy as np
import pytest
from strategy_contract import check_select_contract

from metaal import strategies
from metaal.data import Dataset, load_dataset, make_split
from metaal.errors import ConfigError
from metaal.learners import make_learner
from metaal.loop import new_state, simulate
from metaal.state import ALState, Task
from metaal.strategies import expected
from metaal.strategies.batch import dropout_disagreement
from metaal.strategies.expected import (
    eer_future_loss,
    expected_loss,
    mean_bandwidth_gamma,
    probabilistic_gain,
)

NAMES = ["eer", "xpal", "falcun", "dropquery"]


def _task(ds: Dataset, seed: int = 0, n_initial: int = 10) -> Task:
    return Task.from_split(ds, make_split(ds, seed, n_initial=n_initial))


@pytest.fixture(scope="module", autouse=True)
def _single_thread_blas():
    """Small fits only: one BLAS thread avoids oversubscribing the shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def wine_task() -> Task:
    return _task(load_dataset("sklearn:wine"))


@pytest.fixture(scope="module")
def digits_task() -> Task:
    """sklearn digits, 10 classes: multi-class with a 64-d pool of 1,257 items."""
    return _task(load_dataset("sklearn:digits"), n_initial=20)


# ----------------------------------------------------------------------------------------------
# the contract


def test_registered_need_a_model_and_cite() -> None:
    assert set(NAMES) <= set(strategies.names())
    for n in NAMES:
        s = strategies.get(n)
        assert s.name == n and s.needs_model is True
        assert "Reference" in (type(s).__doc__ or "")
    assert strategies.Strategy.needs_model is True  # the base default


@pytest.mark.parametrize(
    "name, which",
    [(n, w) for n in NAMES for w in ("wine", "digits") if (n, w) != ("eer", "digits")]
    + [pytest.param("eer", "digits", marks=pytest.mark.slow)],  # ~600 refits of 650 weights per query
)
def test_select_contract(name: str, which: str, wine_task: Task, digits_task: Task) -> None:
    """The template (tests/strategy_contract.py); the end-of-pool part on the small pool only."""
    check_select_contract(name, wine_task if which == "wine" else digits_task, end_of_pool=which == "wine")


def test_bad_parameters() -> None:
    for name, kw in [
        ("eer", {"n_candidates": 0}), ("eer", {"n_eval": 0}), ("eer", {"loss": "hinge"}),
        ("eer", {"min_proba": 1.0}), ("xpal", {"prior": 0.0}), ("xpal", {"gamma": -1.0}),
        ("falcun", {"gamma": -1.0}), ("dropquery", {"dropout": 1.0}), ("dropquery", {"n_dropout": 0}),
    ]:
        with pytest.raises(ConfigError):
            strategies.get(name, **kw)


# ----------------------------------------------------------------------------------------------
# formulas


def test_probabilistic_gain_is_scikit_activeml_cost_reduction() -> None:
    pytest.importorskip("skactiveml")
    from skactiveml.pool._probabilistic_al import cost_reduction

    rng = np.random.default_rng(0)
    for C in (2, 3, 5):
        k = rng.gamma(0.7, 2.0, size=(200, C)) * (rng.random((200, 1)) < 0.9)  # some all-zero rows
        k[:5] = np.eye(C)[rng.integers(0, C, 5)] * 3.0  # ties broken by the added label
        np.testing.assert_allclose(probabilistic_gain(k, 1.0), cost_reduction(k, prior=1.0, m_max=1), atol=1e-12)
        np.testing.assert_allclose(probabilistic_gain(k, 0.5), cost_reduction(k, prior=0.5, m_max=1), atol=1e-12)


def test_probabilistic_gain_prefers_uncertain_items_with_few_labels_near() -> None:
    g = probabilistic_gain(np.array([[0.5, 0.5], [5.0, 5.0], [0.9, 0.1], [9.0, 1.0]]))
    assert g[0] > g[1] > 0  # same posterior, fewer labels near: more to gain
    assert g[0] > g[2] and g[1] > g[3]  # same count, more uncertain: more to gain


def test_mean_bandwidth_matches_scikit_activeml_rule(wine_task: Task) -> None:
    pytest.importorskip("skactiveml")
    from skactiveml.classifier import ParzenWindowClassifier

    X = wine_task.X_pool
    var = np.var(X, axis=0)
    for n in (0, 2, 10, 57):
        ours = mean_bandwidth_gamma(float(var.sum()), n, X.shape[1])
        theirs = ParzenWindowClassifier._calculate_mean_gamma(max(2, n), var, X.shape[1])
        assert ours == pytest.approx(theirs, rel=1e-12)
    assert mean_bandwidth_gamma(0.0, 10, 4) == 0.25


def test_xpal_score_by_brute_force(wine_task: Task) -> None:
    """k(x) = sum_l exp(-gamma ||x - x_l||^2) * p(.|x), gain from the Dirichlet closed form; the
    cached distances stay right as labels are added."""
    state = new_state(wine_task, budget=30)
    xp = strategies.get("xpal")
    for _ in range(3):
        unl, lab = state.unlabeled_idx, state.labeled_idx
        gamma = xp.bandwidth(state)
        D = ((state.X_pool[unl, None, :] - state.X_pool[None, lab, :]) ** 2).sum(-1)
        n = np.exp(-gamma * D).sum(1)
        np.testing.assert_allclose(xp.score(state), probabilistic_gain(n[:, None] * state.proba[unl]), rtol=1e-9)
        idx = xp.select(state, 3)
        state.add_labels(idx, wine_task.y_pool[idx])
    s = strategies.get("xpal", density=True).score(state)
    assert s.shape == (len(state.unlabeled_idx),) and (s >= 0).all()


def test_eer_by_brute_force(wine_task: Task) -> None:
    """eer_future_loss against refitting scikit-learn's LogisticRegression by hand for every
    (candidate, label) pair; the batched refit (BatchedLogReg, same objective) agrees with it."""
    from sklearn.linear_model import LogisticRegression

    state = new_state(wine_task, budget=30)
    lab = state.labeled_idx
    cand = state.unlabeled_idx[:6]
    ev = np.arange(state.n_pool)
    brute = []
    for x in cand:
        e = 0.0
        for y in range(state.n_classes):
            Xf = np.vstack([state.X_pool[lab], state.X_pool[x]])
            yf = np.append(state.labels[lab], y)
            m = LogisticRegression(max_iter=1000, tol=1e-10).fit(Xf, yf)
            p = np.zeros((len(ev), state.n_classes))
            p[:, m.classes_] = m.predict_proba(state.X_pool[ev])
            e += state.proba[x, y] * expected_loss(np.maximum(p, 1e-12), "zero_one")
        brute.append(e)
    fast = eer_future_loss(state, cand, ev, "zero_one", 0.0)
    np.testing.assert_allclose(fast, brute, atol=2e-3 * len(ev))
    # the generic path (any estimator: copied and refitted one by one) gives the same numbers
    generic = state.learner
    state.learner = make_learner("knn", state.n_classes)
    state.learner.fit(state.X_pool[lab], state.labels[lab])
    assert expected.logreg_c(state.learner) is None
    assert np.isfinite(eer_future_loss(state, cand, ev, "log", 0.01)).all()
    state.learner = generic
    assert expected.logreg_c(generic) == 1.0
    # min_proba only drops improbable labels: close to the full expectation
    approx = eer_future_loss(state, cand, ev, "zero_one", 0.01)
    assert np.abs(approx - fast).max() < 0.02 * len(ev)


def test_eer_subsamples_candidates_and_evaluation(wine_task: Task) -> None:
    state = new_state(wine_task, budget=10)
    eer = strategies.get("eer", n_candidates=7, n_eval=50)
    ev = eer.evaluation_sample(state)
    assert len(ev) == 50 and len(np.unique(ev)) == 50
    np.testing.assert_array_equal(ev, eer.evaluation_sample(new_state(wine_task, budget=10)))
    # the pick is the best of the 7 candidates drawn from the generator
    rng = np.random.default_rng(5)
    cand = np.sort(np.random.default_rng(5).choice(state.unlabeled_idx, size=7, replace=False))
    pick = eer.select(state, 1, rng)
    s = -eer_future_loss(state, cand, ev, "zero_one", 0.01)
    assert pick[0] == cand[int(np.argmax(s))]


def _state_with_proba(P: np.ndarray) -> ALState:
    """A state over a dummy pool whose cached probabilities are ``P`` (n, C)."""
    n, C = P.shape
    state = ALState(np.random.default_rng(0).normal(size=(n, 2)), C, make_learner("logreg", C))
    state.set_proba(P, first=True)
    return state


def test_falcun_is_uncertain_then_diverse() -> None:
    """Two groups of equally uncertain items far apart in probability space and a confident group:
    with a large gamma, the batch takes one item of each uncertain group, not two of one."""
    P = np.array([[0.5, 0.5, 0.0]] * 5 + [[0.0, 0.5, 0.5]] * 5 + [[1.0, 0.0, 0.0]] * 20)
    P = np.clip(P, 1e-12, None)
    P /= P.sum(1, keepdims=True)
    state = _state_with_proba(P)
    falcun = strategies.get("falcun", gamma=50.0)
    for seed in range(5):
        picks = falcun.select(state, 2, np.random.default_rng(seed))
        assert sorted(p // 5 for p in picks) == [0, 1], picks
    # k = 1: a draw proportional to (2u)^gamma, i.e. almost surely a most uncertain item
    assert all(falcun.select(state, 1, np.random.default_rng(s))[0] < 10 for s in range(10))
    # gamma = 0 is uniform random sampling: confident items are picked too
    uniform = strategies.get("falcun", gamma=0.0)
    assert any(uniform.select(state, 1, np.random.default_rng(s))[0] >= 10 for s in range(20))


def test_dropquery_clusters_the_items_whose_prediction_flips(digits_task: Task) -> None:
    state = new_state(digits_task, budget=30)
    unl = state.unlabeled_idx
    rate = dropout_disagreement(state, unl, 0.75, 3, np.random.default_rng(0), rescale=True)
    assert rate.shape == (len(unl),) and ((rate >= 0) & (rate <= 1)).all()
    assert 0 < (rate > 0.5).sum() < len(unl)  # some predictions flip under dropout, not all
    # the picks are candidates (disagreement > 0.5 under the same draws), one per k-means cluster
    dq = strategies.get("dropquery")
    picks = dq.select(state, 10, np.random.default_rng(0))
    cand = set(unl[rate > 0.5].tolist())
    assert set(picks.tolist()) <= cand
    # k = 1: the candidate nearest the candidates' mean
    one = dq.select(state, 1, np.random.default_rng(0))[0]
    C = state.X_pool[sorted(cand)]
    d = ((C - C.mean(0)) ** 2).sum(1)
    assert one == sorted(cand)[int(np.argmin(d))]


# ----------------------------------------------------------------------------------------------
# against random, on real data


def _mean_aulc(ds: Dataset, names: list[str], budget: int, seeds: range, batch: int = 1,
               n_initial: int = 10) -> dict[str, float]:
    out: dict[str, list[float]] = {n: [] for n in names}
    for seed in seeds:
        task = _task(ds, seed, n_initial=n_initial)
        for n in names:
            out[n].append(simulate(task, n, budget, seed=seed, batch_size=batch).aulc)
    return {n: float(np.mean(v)) for n, v in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["banknote", "vertebral_column"])
def test_eer_beats_random_at_small_budgets(name: str, shared) -> None:
    """The standard protocol at a small budget (10 initial labels, 30 queries, one at a time)."""
    mean = _mean_aulc(shared(name), ["random", "eer"], budget=30, seeds=range(3))
    assert mean["eer"] > mean["random"], mean


@pytest.mark.slow
@pytest.mark.parametrize("name", ["banknote", "wheat_seeds"])
def test_xpal_beats_random_at_small_budgets(name: str, shared) -> None:
    """As above. Not everywhere: on vertebral_column and breast_cancer xpal is no better than
    random with the default bandwidth (docs/benchmarks.md)."""
    mean = _mean_aulc(shared(name), ["random", "xpal"], budget=30, seeds=range(3))
    assert mean["xpal"] > mean["random"], mean


@pytest.mark.slow
@pytest.mark.parametrize("name", ["optdigits", "phoneme_timit"])
def test_falcun_and_dropquery_beat_random_in_batch_mode(name: str, shared) -> None:
    """Batches of 20 from 10 initial labels up to 100 queried (10 and 5 classes). Not everywhere: both
    lose to random on letter (16 raw features, 26 classes; docs/benchmarks.md)."""
    mean = _mean_aulc(shared(name), ["random", "falcun", "dropquery"], budget=100, seeds=range(3), batch=20)
    assert mean["falcun"] > mean["random"], mean
    assert mean["dropquery"] > mean["random"], mean


# ----------------------------------------------------------------------------------------------
# scikit-activeml on identical splits


def test_xpal_matches_scikit_activeml(wine_task: Task) -> None:
    """xpal is deterministic: the same curve as ProbabilisticAL(metric="rbf") given the same
    bandwidth, up to tie-breaking (mean AULC within 0.01 over 3 seeds)."""
    pytest.importorskip("skactiveml")
    from metaal.experiments.skactiveml_ref import run_skactiveml

    wine = load_dataset("sklearn:wine")
    ours, theirs = [], []
    for seed in range(3):
        task = _task(wine, seed)
        ours.append(simulate(task, "xpal", 20, seed=seed).aulc)
        theirs.append(float(np.mean(run_skactiveml(task, "xpal", 20, seed))))
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.01, (ours, theirs)
