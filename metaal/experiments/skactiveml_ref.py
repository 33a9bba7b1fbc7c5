"""The same pool-based experiment run with scikit-activeml, as an external reference.

:func:`run_skactiveml` replays the default protocol of ``DESIGN.md`` on a :class:`Task` (same
standardized pool and test features, same initial set) with scikit-activeml's
``SklearnClassifier(LogisticRegression(max_iter=1000))`` and its ``UncertaintySampling`` (or
``RandomSampling``) query strategies, one query per step. Its accuracy curve has the same points
as :attr:`metaal.loop.Curve.accuracy` (initial set, then after each label), so AULCs compare
directly. scikit-activeml is an optional dependency, imported inside the function.

Typical use::

    task = Task.from_split(ds, make_split(ds, seed))
    ref = run_skactiveml(task, "margin", budget=50, seed=seed)      # (51,) accuracies
    ours = simulate(task, "margin", 50, seed=seed).accuracy
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from metaal.errors import ConfigError
from metaal.geometry import distance_scale
from metaal.state import Task
from metaal.strategies.coverage import probcover_radius
from metaal.strategies.expected import mean_bandwidth_gamma

#: metaal strategy name -> scikit-activeml ``UncertaintySampling`` method (None: RandomSampling)
METHODS: dict[str, str | None] = {
    "random": None,
    "least_confident": "least_confident",
    "margin": "margin_sampling",
    "margin_sampling": "margin_sampling",
    "entropy": "entropy",
}

#: metaal's model-free strategies (:mod:`metaal.strategies.coverage`) -> scikit-activeml class name;
#: :func:`coverage_query_strategy` builds each with metaal's defaults
COVERAGE_METHODS: dict[str, str] = {
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
    "maxherding": "MaxHerding",
}


def coverage_query_strategy(task: Task, method: str, seed: int) -> Any:
    """scikit-activeml's ``TypiClust`` / ``ProbCover`` / ``MaxHerding`` with the definitions of
    metaal's defaults on the task's standardized pool: TypiClust with 20 neighbours; ProbCover with
    metaal's radius (:func:`metaal.strategies.coverage.probcover_radius`: scikit-activeml searches
    a grid of absolute radii, too coarse for standardized features); MaxHerding with the Gaussian kernel of
    width ``0.5 x`` the distance scale on unnormalized features. Clusterings and ties follow
    ``random_state=seed`` (metaal: ``random_state=0``, ties to the lowest position)."""
    from skactiveml.pool import MaxHerding, ProbCover, TypiClust  # optional dependency

    scale = distance_scale(task.X_pool)
    if method == "typiclust":
        return TypiClust(k=20, random_state=seed)
    if method == "probcover":
        r = probcover_radius(task.X_pool, task.n_classes, 0.95, 0, scale)
        return ProbCover(n_classes=max(task.n_classes, 2), deltas=[r], random_state=seed)
    if method == "maxherding":
        sigma = 0.5 * scale
        return MaxHerding(
            normalize_samples=False, metric="rbf", metric_dict={"gamma": 1.0 / (2 * sigma * sigma)},
            random_state=seed,
        )
    raise ConfigError(f"unknown scikit-activeml coverage method {method!r} (known: {', '.join(COVERAGE_METHODS)})")


#: a scikit-activeml query ``(X, y, clf, batch_size) -> pool positions`` for one run
Query = Callable[[np.ndarray, np.ndarray, Any, int], np.ndarray]


def _eer_query(task: Task, seed: int) -> Query:
    """``MonteCarloEER`` (misclassification loss, evaluated on the whole pool) behind a
    ``SubSamplingWrapper`` of 100 candidates, as metaal's ``eer`` defaults."""
    from skactiveml.pool import MonteCarloEER, SubSamplingWrapper

    qs = SubSamplingWrapper(MonteCarloEER(random_state=seed), max_candidates=100, random_state=seed)
    # fit_clf=True: its index wrapper refits only a classifier it fitted itself (the same model)
    return lambda X, y, clf, b: qs.query(X, y, clf=clf, fit_clf=True, batch_size=b)


def _xpal_query(task: Task, seed: int) -> Query:
    """``ProbabilisticAL(metric="rbf")`` with the bandwidth of metaal's ``xpal`` given explicitly
    (the mean criterion with N = the number of labels; scikit-activeml 1.0.1's ``gamma="mean"``
    counts N differently, see :class:`metaal.strategies.expected.ProbabilisticAL`)."""
    from skactiveml.pool import ProbabilisticAL

    total_var = float(np.var(task.X_pool, axis=0).sum())
    d = task.X_pool.shape[1]

    def query(X: np.ndarray, y: np.ndarray, clf: Any, b: int) -> np.ndarray:
        gamma = mean_bandwidth_gamma(total_var, int(np.sum(~np.isnan(y))), d)
        qs = ProbabilisticAL(metric="rbf", metric_dict={"gamma": gamma}, random_state=seed)
        return qs.query(X, y, clf=clf, fit_clf=False, batch_size=b)

    return query


def _falcun_query(task: Task, seed: int) -> Query:
    from skactiveml.pool import Falcun

    qs = Falcun(random_state=seed)
    return lambda X, y, clf, b: qs.query(X, y, clf=clf, fit_clf=False, batch_size=b)


def _dropquery_query(task: Task, seed: int) -> Query:
    from skactiveml.pool import DropQuery

    qs = DropQuery(random_state=seed, cluster_algo_dict={"random_state": seed})
    return lambda X, y, clf, b: qs.query(X, y, clf=clf, fit_clf=False, batch_size=b)


#: metaal strategy name -> builder ``(task, seed) -> Query`` of the scikit-activeml strategy that
#: metaal's model-based strategy (:mod:`metaal.strategies.expected`, :mod:`metaal.strategies.batch`)
#: reproduces, with the same settings
MODEL_BASED: dict[str, Callable[[Task, int], Query]] = {
    "eer": _eer_query,
    "xpal": _xpal_query,
    "falcun": _falcun_query,
    "dropquery": _dropquery_query,
}


def run_skactiveml(task: Task, method: str, budget: int, seed: int = 0, batch_size: int = 1) -> np.ndarray:
    """Accuracy curve of scikit-activeml on ``task``, shape ``(ceil(budget / batch_size) + 1,)``.

    :param task: pool / test features (already standardized) and the initial labeled positions.
    :param method: ``random``, ``least_confident``, ``margin`` (``margin_sampling``) or
        ``entropy``, a model-free method of :data:`COVERAGE_METHODS` (``typiclust``,
        ``probcover``, ``maxherding``), or a key of :data:`MODEL_BASED` (``eer``, ``xpal``,
        ``falcun``, ``dropquery``).
    :param budget: labels to acquire after the initial set.
    :param seed: ``random_state`` of the query strategy (tie breaks, random sampling).
    :param batch_size: labels per query (the last one may be smaller), as ``simulate``.
    :raises ConfigError: for an unknown method or a missing scikit-activeml.
    """
    if method not in METHODS and method not in MODEL_BASED and method not in COVERAGE_METHODS:
        known = ", ".join([*METHODS, *COVERAGE_METHODS, *MODEL_BASED])
        raise ConfigError(f"unknown scikit-activeml method {method!r} (known: {known})")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
    try:
        from skactiveml.classifier import SklearnClassifier
        from skactiveml.pool import RandomSampling, UncertaintySampling
        from skactiveml.utils import MISSING_LABEL
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("scikit-activeml is not installed: pip install scikit-activeml") from None
    from sklearn.linear_model import LogisticRegression

    task.check_budget(budget)
    X, X_test, y_test = task.X_pool, task.X_test, task.y_test
    y = np.full(task.n_pool, MISSING_LABEL, dtype=float)
    y[task.initial] = task.y_pool[task.initial]
    clf = SklearnClassifier(
        LogisticRegression(max_iter=1000), classes=np.arange(task.n_classes), random_state=seed
    )
    if method in MODEL_BASED:
        query = MODEL_BASED[method](task, seed)
    elif method in COVERAGE_METHODS:  # model-free: no classifier
        cqs = coverage_query_strategy(task, method, seed)

        def query(X: np.ndarray, y: np.ndarray, clf: Any, b: int) -> np.ndarray:
            return cqs.query(X, y, batch_size=b)
    else:
        sk_method = METHODS[method]
        qs = RandomSampling(random_state=seed) if sk_method is None else UncertaintySampling(
            method=sk_method, random_state=seed
        )
        if sk_method is None:
            def query(X: np.ndarray, y: np.ndarray, clf: Any, b: int) -> np.ndarray:
                return qs.query(X, y, batch_size=b)
        else:
            def query(X: np.ndarray, y: np.ndarray, clf: Any, b: int) -> np.ndarray:
                return qs.query(X, y, clf=clf, fit_clf=False, batch_size=b)
    steps = -(-budget // batch_size)
    accs = np.empty(steps + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps + 1):
            clf.fit(X, y)
            accs[step] = float(np.mean(clf.predict(X_test) == y_test))
            if step == steps:
                break
            b = min(batch_size, budget - step * batch_size)
            idx = np.asarray(query(X, y, clf, b), dtype=np.int64)
            y[idx] = task.y_pool[idx]
    return accs
