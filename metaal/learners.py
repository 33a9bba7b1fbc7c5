"""Learners: scikit-learn classifiers behind one small interface.

:class:`Learner` wraps any estimator with ``predict_proba``. Classes are fixed up front, so a model
trained on two of five classes still returns five probability columns (zeros for unseen classes,
with a tiny floor so entropies stay finite). With fewer than two classes labeled, the learner
predicts the smoothed label frequencies. Standardization happens once per task, with statistics
of the pool (:class:`metaal.state.Task`), so every learner sees the same scaled features.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import numpy as np
from sklearn.base import clone as sk_clone

from metaal.errors import ConfigError

PROBA_FLOOR = 1e-12

_CONTROLLER: Any = None


def blas_limit(n: int | None) -> ContextManager[Any]:
    """A context limiting every loaded BLAS to ``n`` threads (a no-op for None); the previous
    limits come back on exit, so torch and the rest of the process are unaffected.

    A refit fits tens to hundreds of rows: multi-threaded BLAS only adds synchronisation there, and
    on a loaded machine its spinning threads make fits and the steps around them 5 to 20 times
    slower. ``metaal compare`` runs every cell under ``blas_limit(1)``
    (:func:`metaal.experiments.runner.run_cell`), the environments and the labeling session do too.
    """
    global _CONTROLLER
    if n is None:
        return nullcontext()
    if _CONTROLLER is None:
        import scipy.optimize  # noqa: F401  (load scipy's and sklearn's BLAS before the snapshot)
        import sklearn.linear_model  # noqa: F401
        from threadpoolctl import ThreadpoolController  # imported on first use: a light module top

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=int(n), user_api="blas")


def _logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def _svm(seed: int) -> Any:
    from sklearn.svm import SVC

    # Platt scaling; scikit-learn >= 1.9 warns that this spelling is deprecated (Learner.fit
    # silences that one warning), the results are unchanged.
    return SVC(probability=True, random_state=seed)


def _rf(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5)


def _gb(seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    # the classic estimator: it splits down to single samples, which small labeled sets need
    return GradientBoostingClassifier(n_estimators=50, random_state=seed)


def _torch_logreg(seed: int) -> Any:
    # imported here, not at module top, only because torch is heavy: every other learner and every
    # env worker would pay for it; metaal.torch_learners imports nothing from this module
    from metaal.torch_learners import torch_logreg_estimator

    return torch_logreg_estimator(seed)


LEARNERS: dict[str, Callable[[int], Any]] = {
    "logreg": _logreg,
    "torch_logreg": _torch_logreg,
    "svm": _svm,
    "rf": _rf,
    "knn": _knn,
    "gb": _gb,
}


class Learner:
    """A classifier with fixed classes.

    :param estimator: an unfitted scikit-learn classifier with ``predict_proba``.
    :param n_classes: ``C``, the number of classes of the task.
    :param name: a short name used in logs and tables.
    :param warm_start: reuse the previous solution as the starting point when the estimator supports
        it and the set of labeled classes did not change (LogisticRegression with lbfgs does).
    """

    def __init__(self, estimator: Any, n_classes: int, name: str = "custom", warm_start: bool = False):
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(f"learner {name!r} has no predict_proba")
        self.estimator = estimator
        self.n_classes = int(n_classes)
        self.name = name
        self.warm_start = warm_start
        self.classes_: np.ndarray = np.zeros(0, dtype=np.int64)
        #: the smoothed label frequencies ``(C,)`` that the learner predicts while fewer than two
        #: classes are labeled; None once a real model is fitted
        self.prior: np.ndarray | None = None
        self.n_fits = 0

    def clone(self) -> "Learner":
        return Learner(sk_clone(self.estimator), self.n_classes, self.name, self.warm_start)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Learner":
        """Fit on ``X`` (m, d) and labels ``y`` (m,) in ``0..C-1``."""
        y = np.asarray(y, dtype=np.int64)
        present = np.unique(y)
        self.n_fits += 1
        if len(present) < 2:
            counts = np.bincount(y, minlength=self.n_classes).astype(float) + 1.0
            self.prior = counts / counts.sum()
            self.classes_ = present
            return self
        self.prior = None
        same_classes = np.array_equal(present, self.classes_)
        if self.warm_start and same_classes and hasattr(self.estimator, "warm_start"):
            self.estimator.set_params(warm_start=True)
        elif hasattr(self.estimator, "warm_start"):
            self.estimator.set_params(warm_start=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
            # few labels over many classes is the normal start of active learning, not a regression
            warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%",
                                    category=UserWarning)
            self.estimator.fit(X, y)
        self.classes_ = np.asarray(self.estimator.classes_, dtype=np.int64)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of shape ``(n, C)`` for all ``C`` classes, rows summing to one."""
        n = X.shape[0]
        if self.prior is not None:
            return np.tile(self.prior, (n, 1))
        p = self.estimator.predict_proba(X)
        if p.shape[1] == self.n_classes and np.array_equal(self.classes_, np.arange(self.n_classes)):
            out = np.asarray(p, dtype=np.float64)
        else:
            out = np.zeros((n, self.n_classes))
            out[:, self.classes_] = p
        out = np.maximum(out, PROBA_FLOOR)
        # two classes: the row sums of ``out.sum(axis=1)``, bit for bit, without numpy's slow
        # reduction over a short axis (a pool of a million rows: tens of milliseconds)
        total = out[:, 0] + out[:, 1] if out.shape[1] == 2 else out.sum(axis=1)
        return out / total[:, None]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    @property
    def is_linear(self) -> bool:
        return hasattr(self.estimator, "coef_") and self.prior is None


def make_learner(spec: "str | Any", n_classes: int, seed: int = 0, warm_start: bool = False) -> Learner:
    """A :class:`Learner` from a name in :data:`LEARNERS` or from a scikit-learn estimator."""
    if isinstance(spec, Learner):
        return Learner(sk_clone(spec.estimator), n_classes, spec.name, spec.warm_start)
    if isinstance(spec, str):
        if spec not in LEARNERS:
            raise ConfigError(f"unknown learner {spec!r} (known: {', '.join(LEARNERS)})")
        return Learner(LEARNERS[spec](seed), n_classes, spec, warm_start)
    return Learner(sk_clone(spec), n_classes, type(spec).__name__, warm_start)
