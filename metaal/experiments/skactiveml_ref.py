"""The same pool-based experiment run with scikit-activeml, as an external reference.

:func:`run_skactiveml` replays the default protocol of ``DESIGN.md`` on a :class:`Task` (same
standardized pool and test features, same initial set) with scikit-activeml's
``SklearnClassifier(LogisticRegression(max_iter=1000))`` and its ``UncertaintySampling`` (or
``RandomSampling``) query strategies, or its model-free ``TypiClust``, ``ProbCover`` and
``MaxHerding`` built with metaal's definitions (:data:`COVERAGE_METHODS`), one query per step (or
batches of ``batch_size``). Its accuracy curve has the same points
as :attr:`metaal.loop.Curve.accuracy` (initial set, then after each label), so AULCs compare
directly. scikit-activeml is an optional dependency, imported inside the function.

Typical use::

    task = Task.from_split(ds, make_split(ds, seed))
    ref = run_skactiveml(task, "margin", budget=50, seed=seed)      # (51,) accuracies
    ours = simulate(task, "margin", 50, seed=seed).accuracy
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from metaal.errors import ConfigError
from metaal.geometry import distance_scale
from metaal.state import Task
from metaal.strategies.coverage import probcover_radius

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


def run_skactiveml(task: Task, method: str, budget: int, seed: int = 0, batch_size: int = 1) -> np.ndarray:
    """Accuracy curve of scikit-activeml on ``task``, shape ``(steps + 1,)`` with ``steps =
    ceil(budget / batch_size)`` (the last batch may be smaller), as :attr:`metaal.loop.Curve.accuracy`.

    :param task: pool / test features (already standardized) and the initial labeled positions.
    :param method: ``random``, ``least_confident``, ``margin`` (``margin_sampling``), ``entropy``,
        or a model-free method of :data:`COVERAGE_METHODS`.
    :param budget: labels to acquire after the initial set.
    :param seed: ``random_state`` of the query strategy (tie breaks, random sampling, clusterings).
    :param batch_size: labels per query.
    :raises ConfigError: for an unknown method or a missing scikit-activeml.
    """
    if method not in METHODS and method not in COVERAGE_METHODS:
        known = ", ".join([*METHODS, *COVERAGE_METHODS])
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
    model_free = method in COVERAGE_METHODS
    sk_method = None if model_free else METHODS[method]
    if model_free:
        qs = coverage_query_strategy(task, method, seed)
    else:
        qs = RandomSampling(random_state=seed) if sk_method is None else UncertaintySampling(
            method=sk_method, random_state=seed
        )
    accs: list[float] = []
    queried = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while True:
            clf.fit(X, y)
            accs.append(float(np.mean(clf.predict(X_test) == y_test)))
            if queried >= budget:
                break
            b = min(batch_size, budget - queried)
            if sk_method is None or model_free:
                idx = qs.query(X, y, batch_size=b)
            else:
                idx = qs.query(X, y, clf=clf, fit_clf=False, batch_size=b)
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            y[idx] = task.y_pool[idx]
            queried += len(idx)
    return np.asarray(accs)
