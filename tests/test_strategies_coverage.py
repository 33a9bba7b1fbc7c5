"""The model-free strategies of metaal.strategies.coverage (typiclust, probcover, maxherding): the
strategy contract with and without labels, each method against its definition computed by brute
force, beating random from a cold start on real embeddings, and equivalence with scikit-activeml
on identical splits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from strategy_contract import check_select_contract

from metaal import strategies
from metaal.data import Dataset, load_dataset, make_split
from metaal.errors import ConfigError
from metaal.learners import make_learner
from metaal.loop import simulate
from metaal.state import ALState, Task
from metaal.strategies.coverage import (
    cluster_pool,
    distance_to_other_cluster,
    purity_radius,
    typicality,
)

NAMES = ["typiclust", "probcover", "maxherding"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread_blas():
    """Small fits only: one BLAS thread avoids oversubscribing the shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _task(ds: Dataset, seed: int = 0, n_initial: int = 10) -> Task:
    return Task.from_split(ds, make_split(ds, seed, n_initial=n_initial))


def _cold(task: Task) -> Task:
    """The same split with no initial labels (a cold start)."""
    return dataclasses.replace(task, initial=np.zeros(0, dtype=np.int64))


def _bare_state(X: np.ndarray, labeled: dict[int, int] | None = None, n_classes: int = 2) -> ALState:
    """An ALState over ``X`` with the given labels (none by default) and no fitted model."""
    state = ALState(X, n_classes, make_learner("logreg", n_classes))
    if labeled:
        state.add_labels(np.array(list(labeled)), np.array(list(labeled.values())), refit=False)
    return state


@pytest.fixture(scope="module")
def wine_task() -> Task:
    return _task(load_dataset("sklearn:wine"))


# ----------------------------------------------------------------------------------------------
# contract


def test_registered_model_free_with_reference() -> None:
    for n in NAMES:
        s = strategies.get(n)
        assert s.name == n and s.needs_model is False
        assert "Reference" in (type(s).__doc__ or "")
    assert strategies.get("margin").needs_model is True  # the base default
    assert set(NAMES) <= set(strategies.parse_list("all"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cold", [False, True])
def test_select_contract(name: str, cold: bool, wine_task: Task) -> None:
    """The template (tests/strategy_contract.py), from ten labels and from none, with the score."""
    task = _cold(wine_task) if cold else wine_task
    assert len(task.initial) == (0 if cold else 10)
    check_select_contract(name, task, scored=True)


def test_bad_parameters() -> None:
    for name, kw in [
        ("typiclust", {"k_neighbors": 0}), ("typiclust", {"max_clusters": 0}), ("probcover", {"delta": 0.0}),
        ("probcover", {"alpha": 1.0}), ("maxherding", {"bandwidth": -1.0}),
    ]:
        with pytest.raises(ConfigError, match=name):
            strategies.get(name, **kw)


# ----------------------------------------------------------------------------------------------
# against the definitions


def _blobs() -> np.ndarray:
    """Three well separated 2-D blobs of 60, 30 and 12 points (in this order)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    return np.concatenate([c + rng.normal(size=(m, 2)) for c, m in zip(centres, (60, 30, 12))])


def _brute_typicality(X: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    kk = min(k, len(X) - 1)
    return 1.0 / np.sort(d, axis=1)[:, :kk].mean(axis=1)


def test_typiclust_picks_the_most_typical_item_of_the_largest_uncovered_clusters() -> None:
    X = _blobs()
    blob = np.repeat([0, 1, 2], (60, 30, 12))
    np.testing.assert_allclose(typicality(X[blob == 1], 20), _brute_typicality(X[blob == 1], 20), rtol=1e-9)
    typ = strategies.get("typiclust")
    # zero labels, k = 1: one cluster, the pool's most typical item
    state = _bare_state(X)
    assert typ.select(state, 1)[0] == int(np.argmax(_brute_typicality(X, 20)))
    # zero labels, k = 3: one item per blob, largest blob first, each its blob's most typical
    best = [int(np.flatnonzero(blob == b)[np.argmax(_brute_typicality(X[blob == b], 20))]) for b in range(3)]
    assert typ.select(state, 3).tolist() == best
    # the largest blob covered by a label: 3 clusters, the two uncovered blobs, larger first
    state = _bare_state(X, {5: 0})
    assert typ.select(state, 2).tolist() == best[1:]


def _brute_probcover(X: np.ndarray, labeled: list[int], r: float, k: int) -> list[int]:
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    ball = d <= r
    covered = ball[labeled].any(axis=0) if labeled else np.zeros(len(X), dtype=bool)
    taken = set(labeled)
    out = []
    for _ in range(k):
        deg = np.array([-1 if i in taken else int((ball[i] & ~covered).sum()) for i in range(len(X))])
        j = int(np.argmax(deg))
        out.append(j)
        taken.add(j)
        covered |= ball[j]
    return out


def test_probcover_greedy_max_coverage_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(80, 3)), 4 + rng.normal(size=(40, 3))])
    strat = strategies.get("probcover", delta=0.3)
    state = _bare_state(X)
    r = strat.radius(state)
    assert r == pytest.approx(0.3 * state.distance_scale())
    assert strat.select(state, 6).tolist() == _brute_probcover(X, [], r, 6)
    # labels cover their balls; the cached coverage follows the labels added since
    first = _brute_probcover(X, [], r, 4)
    state.add_labels(np.array(first), np.zeros(4, dtype=np.int64), refit=False)
    assert strat.select(state, 5).tolist() == _brute_probcover(X, first, r, 5)
    s = strat.score(state)
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1)) <= r
    uncovered = ~d[first].any(axis=0)
    np.testing.assert_array_equal(s, (d[state.unlabeled_idx] & uncovered).sum(axis=1))
    # once everything is covered: random picks among the unlabeled ones, still distinct
    big = strategies.get("probcover", delta=10.0)
    st2 = _bare_state(X, {0: 0})
    idx = big.select(st2, 5, np.random.default_rng(0))
    assert len(set(idx.tolist())) == 5 and 0 not in idx


def test_probcover_radius_is_the_largest_pure_one() -> None:
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(size=(70, 2)), [3.0, 0.0] + rng.normal(size=(50, 2))])
    state = _bare_state(X)
    r = strategies.get("probcover").radius(state)
    clusters = cluster_pool(X, 2, 0)
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    other = np.where(clusters[:, None] != clusters[None], d, np.inf).min(axis=1)
    np.testing.assert_allclose(distance_to_other_cluster(X, clusters), other, atol=1e-9)
    purity = lambda delta: np.mean((np.where(clusters[:, None] != clusters[None], d, np.inf) <= delta).sum(1) == 0)
    assert 0 < r < state.distance_scale()
    assert purity(r) >= 0.95 and purity(r * (1 + 1e-6)) < 0.95  # the largest pure radius
    assert purity_radius(np.zeros(10), 0.95, 2.0) == pytest.approx(2e-6)  # nothing pure: the floor
    assert purity_radius(np.full(10, np.inf), 0.95, 2.0) == 2.0  # one cluster: the scale


def _brute_herding(X: np.ndarray, labeled: list[int], gamma: float, k: int) -> list[int]:
    K = np.exp(-gamma * ((X[:, None] - X[None]) ** 2).sum(-1))
    kmax = K[:, labeled].max(axis=1) if labeled else np.zeros(len(X))
    out: list[int] = []
    for _ in range(k):
        gain = np.maximum(K - kmax[:, None], 0.0).mean(axis=0)
        gain[labeled + out] = -np.inf
        j = int(np.argmax(gain))
        out.append(j)
        kmax = np.maximum(kmax, K[:, j])
    return out


def test_maxherding_lazy_greedy_equals_plain_greedy() -> None:
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(150, 4)), 3 + rng.normal(size=(60, 4))])
    strat = strategies.get("maxherding")
    state = _bare_state(X)
    gamma = strat.gamma(state)
    assert gamma == pytest.approx(1.0 / (2 * (0.5 * state.distance_scale()) ** 2))
    labeled: list[int] = []
    for k in (1, 6, 4, 8):  # successive queries reuse the cached bounds
        want = _brute_herding(X, labeled, gamma, k)
        got = strat.select(state, k).tolist()
        assert got == want
        state.add_labels(np.array(got), np.zeros(k, dtype=np.int64), refit=False)
        labeled += got
    K = np.exp(-gamma * ((X[:, None] - X[None]) ** 2).sum(-1))
    kmax = K[:, labeled].max(axis=1)
    want = np.maximum(K[:, state.unlabeled_idx] - kmax[:, None], 0.0).mean(axis=0)
    np.testing.assert_allclose(strat.score(state), want, rtol=1e-9, atol=1e-15)
    # an undo (labels removed) invalidates the cached bounds: a fresh state over the same pool
    fresh = _bare_state(X, {i: 0 for i in labeled[:3]})
    fresh.cache = state.cache
    assert strat.select(fresh, 3).tolist() == _brute_herding(X, labeled[:3], gamma, 3)


# ----------------------------------------------------------------------------------------------
# cold start on real embeddings


@pytest.mark.slow
def test_cold_start_beats_random(shared) -> None:
    """From zero labels, 20 labels: typicality and coverage beat random sampling on pre-trained
    image embeddings (ResNet-18 features of wood knots, 3 classes), the literature's claim for small
    budgets (Hacohen et al. 2022, Yehuda et al. 2022, Bae et al. 2024). docs/benchmarks.md has more
    datasets, and where it does not hold (binary text embeddings)."""
    ds = shared("woodknots_resnet18")
    aulc: dict[str, list[float]] = {s: [] for s in ["random", *NAMES]}
    for seed in range(6):
        task = _cold(_task(ds, seed))
        for s in aulc:
            aulc[s].append(simulate(task, s, 20, seed=seed).aulc)
    mean = {s: float(np.mean(v)) for s, v in aulc.items()}
    for s in NAMES:
        assert mean[s] > mean["random"] + 0.01, mean


# ----------------------------------------------------------------------------------------------
# scikit-activeml


def test_matches_scikit_activeml(wine: Dataset) -> None:
    """Same splits, same definitions (metaal's defaults passed to scikit-activeml): MaxHerding has
    no random choice and gives the same curves; ProbCover differs only by tie-breaking (the lowest
    position vs random). TypiClust (k-means seeds differ too) is in scripts/bench_skactiveml.py."""
    pytest.importorskip("skactiveml")
    from metaal.experiments.skactiveml_ref import run_skactiveml

    for method, tol in [("maxherding", 1e-12), ("probcover", 0.01)]:
        ours, theirs = [], []
        for seed in range(3):
            task = _task(wine, seed, n_initial=10)
            ours.append(simulate(task, method, 20, seed=seed).aulc)
            theirs.append(float(np.mean(run_skactiveml(task, method, 20, seed))))
        assert abs(np.mean(ours) - np.mean(theirs)) <= tol, (method, ours, theirs)
