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

import numpy as np

from metaal.errors import ConfigError
from metaal.state import Task

#: metaal strategy name -> scikit-activeml ``UncertaintySampling`` method (None: RandomSampling)
METHODS: dict[str, str | None] = {
    "random": None,
    "least_confident": "least_confident",
    "margin": "margin_sampling",
    "margin_sampling": "margin_sampling",
    "entropy": "entropy",
}


def run_skactiveml(task: Task, method: str, budget: int, seed: int = 0) -> np.ndarray:
    """Accuracy curve of scikit-activeml on ``task``, shape ``(budget + 1,)``.

    :param task: pool / test features (already standardized) and the initial labeled positions.
    :param method: ``random``, ``least_confident``, ``margin`` (``margin_sampling``) or ``entropy``.
    :param budget: labels to acquire after the initial set.
    :param seed: ``random_state`` of the query strategy (tie breaks, random sampling).
    :raises ConfigError: for an unknown method or a missing scikit-activeml.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown scikit-activeml method {method!r} (known: {', '.join(METHODS)})")
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
    sk_method = METHODS[method]
    qs = RandomSampling(random_state=seed) if sk_method is None else UncertaintySampling(
        method=sk_method, random_state=seed
    )
    accs = np.empty(budget + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(budget + 1):
            clf.fit(X, y)
            accs[step] = float(np.mean(clf.predict(X_test) == y_test))
            if step == budget:
                break
            if sk_method is None:
                idx = qs.query(X, y)
            else:
                idx = qs.query(X, y, clf=clf, fit_clf=False)
            idx = np.asarray(idx, dtype=np.int64)
            y[idx] = task.y_pool[idx]
    return accs
