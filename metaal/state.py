"""The state of an active-learning run, shared by the simulator, the environments and the real
labeling loop (one source of truth, DESIGN.md "One loop").

:class:`Task` is a pool-based problem: pool and test features standardized with statistics of the
pool, the pool's labels when they are known (the simulation oracle), the test labels, and the
initial labeled positions. :class:`ALState` is what a strategy sees: the pool, which items are
labeled with which labels, the budget, the history of queries and the current fitted learner with
its cached pool probabilities. It never holds the labels of unlabeled items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn import config_context

from metaal.data import Dataset, Split, validate_split
from metaal.errors import DataError, LabelError
from metaal.geometry import PoolGeometry, pairwise_dist, update_min_dist
from metaal.learners import Learner


def standardize(X_pool: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale ``X_pool`` (n, d) to zero mean and unit variance per column, and ``others`` with the
    same statistics; constant columns are left centered (divided by 1)."""
    X_pool = np.asarray(X_pool, dtype=np.float64)
    mu = X_pool.mean(axis=0)
    sd = X_pool.std(axis=0)
    sd[sd < 1e-12] = 1.0
    return tuple(((np.asarray(a, dtype=np.float64) - mu) / sd) for a in (X_pool, *others))


@dataclass
class Task:
    """A pool-based active-learning problem.

    :param X_pool: standardized pool features, shape ``(n_pool, d)``.
    :param y_pool: pool labels ``(n_pool,)``; in the real labeling loop unknown ones are ``-1``.
    :param X_test: standardized test features ``(n_test, d)`` (may have 0 rows).
    :param y_test: test labels ``(n_test,)``.
    :param initial: positions into the pool labeled before the first query.
    :param classes: class names ``(C,)``.
    :param pool_ids: dataset row of each pool position (for reports and splits).
    """

    X_pool: np.ndarray
    y_pool: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    initial: np.ndarray
    classes: np.ndarray
    name: str = "task"
    pool_ids: np.ndarray | None = None
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def n_pool(self) -> int:
        return int(self.X_pool.shape[0])

    @classmethod
    def from_split(cls, dataset: Dataset, split: Split) -> "Task":
        """Standardize with pool statistics and map the split's row indices to pool positions."""
        X = dataset.require_features()
        validate_split(split, dataset, where=f"{dataset.name}: split seed {split.seed}")
        X_pool, X_test = standardize(X[split.pool], X[split.test])
        pos = {int(r): i for i, r in enumerate(split.pool)}
        initial = np.array([pos[int(r)] for r in split.initial], dtype=np.int64)
        return cls(
            X_pool=X_pool,
            y_pool=dataset.y[split.pool].copy(),
            X_test=X_test,
            y_test=dataset.y[split.test].copy(),
            initial=initial,
            classes=dataset.classes,
            name=dataset.name,
            pool_ids=np.asarray(split.pool),
            seed=split.seed,
        )

    def check_budget(self, budget: int, n_initial: int | None = None) -> None:
        """Refuse a negative budget or one larger than the pool left after the initial set.

        :param n_initial: size of the initial set (default ``len(self.initial)``; the labeling
            session of unlabeled data passes the size of its cold start).
        :raises DataError: naming the budget and the unlabeled pool.
        """
        n_init = len(self.initial) if n_initial is None else int(n_initial)
        free = self.n_pool - n_init
        if budget < 0:
            raise DataError(f"budget must be >= 0 (got {budget})")
        if budget > free:
            raise DataError(
                f"{self.name}: budget {budget} is larger than the unlabeled pool "
                f"({free} items after the {n_init} initial labels)"
            )


class ALState:
    """Labeled / unlabeled bookkeeping, the fitted learner and cached predictions.

    :param X_pool: standardized pool features ``(n_pool, d)``.
    :param n_classes: ``C``.
    :param learner: the :class:`~metaal.learners.Learner` refitted after every labeling step.
    :param budget: number of labels the strategy may still acquire (``None``: unlimited).
    :param classes: class names ``(C,)``.

    Cached quantities (recomputed or updated when labels change):

    * ``proba`` ``(n_pool, C)``: the current model's probabilities on the pool.
    * ``prev_pred`` ``(n_pool,)`` and ``prev_proba`` ``(n_pool, C)``: predictions before the
      last refit (``None`` before the second fit); ``prev_model_ready``: whether that model was
      fitted on two classes (:attr:`model_ready`).
    * :meth:`min_dist_labeled` ``(n_pool,)``: distance to the nearest labeled item, updated
      incrementally per new label.
    * ``cache``: a dict where strategies and observers keep per-state values; entries whose key
      starts with ``"fit:"`` are dropped at every refit.
    """

    def __init__(
        self,
        X_pool: np.ndarray,
        n_classes: int,
        learner: Learner,
        budget: int | None = None,
        classes: np.ndarray | None = None,
    ) -> None:
        self.X_pool = np.asarray(X_pool, dtype=np.float64)
        if self.X_pool.ndim != 2:
            raise DataError(f"pool features must be 2-D, got shape {self.X_pool.shape}")
        if not np.isfinite(self.X_pool).all():  # checked once: every refit predicts on the pool unchecked
            raise DataError("pool features must be finite (NaN or infinite values found)")
        self.n_classes = int(n_classes)
        self.learner = learner
        self.budget = budget
        self.classes = (
            np.asarray(classes) if classes is not None else np.array([str(i) for i in range(n_classes)])
        )
        n = self.X_pool.shape[0]
        self.labels = np.full(n, -1, dtype=np.int64)
        self.labeled_mask = np.zeros(n, dtype=bool)
        self.order: list[int] = []  # pool positions in the order they were labeled
        self.history: list[np.ndarray] = []  # one array of queried positions per step
        self.n_initial = 0
        self.proba: np.ndarray = np.full((n, self.n_classes), 1.0 / self.n_classes)
        self._pred: np.ndarray | None = None  # argmax of proba, made on first use
        self._prev_pred: np.ndarray | None = None  # argmax of prev_proba, made on first use
        self.prev_proba: np.ndarray | None = None
        #: whether the model behind ``prev_proba`` was fitted on two classes (the stopping rule
        #: compares two real models only, never the cold start's label frequencies)
        self.prev_model_ready = False
        self._proba_ready = False
        self.cache: dict[str, Any] = {}
        self._min_dist: np.ndarray | None = None
        self._geometry: PoolGeometry | None = None

    # -- views ----------------------------------------------------------------------------------
    @property
    def n_pool(self) -> int:
        return int(self.X_pool.shape[0])

    @property
    def n_labeled(self) -> int:
        return int(self.labeled_mask.sum())

    @property
    def labeled_idx(self) -> np.ndarray:
        return np.flatnonzero(self.labeled_mask)

    @property
    def unlabeled_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.labeled_mask)

    @property
    def y_labeled(self) -> np.ndarray:
        return self.labels[self.labeled_mask]

    @property
    def n_queried(self) -> int:
        return self.n_labeled - self.n_initial

    @property
    def budget_left(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.n_queried, 0)

    @property
    def model_ready(self) -> bool:
        """True once the learner is fitted on at least two classes (before that it predicts the
        smoothed label frequencies, :attr:`metaal.learners.Learner.prior`: the cold start)."""
        return self.learner.n_fits > 0 and self.learner.prior is None

    @property
    def pred(self) -> np.ndarray:
        """The current model's predicted class of every pool item ``(n_pool,)`` (argmax of
        ``proba``; computed once per fit)."""
        if self._pred is None:
            self._pred = np.argmax(self.proba, axis=1)
        return self._pred

    @property
    def prev_pred(self) -> np.ndarray | None:
        """The predicted classes before the last refit ``(n_pool,)`` (argmax of ``prev_proba``,
        computed on first use), None before the second fit."""
        if self._prev_pred is None and self.prev_proba is not None:
            self._prev_pred = np.argmax(self.prev_proba, axis=1)
        return self._prev_pred

    @prev_pred.setter
    def prev_pred(self, pred: np.ndarray | None) -> None:
        self._prev_pred = pred

    # -- updates --------------------------------------------------------------------------------
    def initialize(self, idx: np.ndarray, labels: np.ndarray) -> None:
        """Label the initial set (not counted against the budget) and fit."""
        self.add_labels(idx, labels, refit=True, record=False)
        self.n_initial = self.n_labeled

    def add_labels(
        self, idx: np.ndarray, labels: np.ndarray, refit: bool = True, record: bool = True
    ) -> None:
        """Label pool positions ``idx`` (m,) with ``labels`` (m,) and refit the learner.

        :raises LabelError: for a position out of range or already labeled, or a label outside
            ``0..C-1``; nothing is changed then.
        """
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        labels = np.atleast_1d(np.asarray(labels, dtype=np.int64))
        if idx.shape != labels.shape:
            raise LabelError(f"{len(idx)} positions but {len(labels)} labels")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_pool):
            raise LabelError(f"pool position out of range 0..{self.n_pool - 1}: {idx.tolist()}")
        if len(np.unique(idx)) != len(idx):
            raise LabelError(f"the same item appears twice in one step: {idx.tolist()}")
        if self.labeled_mask[idx].any():
            raise LabelError(f"already labeled: {idx[self.labeled_mask[idx]].tolist()}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise LabelError(f"labels must be in 0..{self.n_classes - 1}, got {labels.tolist()}")
        self.labels[idx] = labels
        self.labeled_mask[idx] = True
        self.order.extend(int(i) for i in idx)
        if record:
            self.history.append(idx.copy())
        if self._min_dist is not None:
            update_min_dist(self._min_dist, self.X_pool, idx, self.geometry.sq_norms)
        if refit:
            self.refit()

    def refit(self) -> None:
        """Refit the learner on all labels and refresh the cached pool probabilities."""
        first = self.learner.n_fits == 0
        m = self.labeled_mask
        self.learner.fit(self.X_pool[m], self.labels[m])
        with config_context(assume_finite=True):  # the pool was checked once, in __init__
            proba = self.learner.predict_proba(self.X_pool)
        self.set_proba(proba, first=first)

    def set_proba(self, proba: np.ndarray, first: bool = False, pred: np.ndarray | None = None) -> None:
        """Install new pool probabilities ``(n_pool, C)`` after a fit (done by :meth:`refit`, or
        by a batched learner that fits many states at once): keeps the previous ones, drops the
        ``"fit:"`` cache entries. ``pred``: the current probabilities' argmax (:attr:`pred`) when
        the caller has it at hand."""
        # the previous argmax: given, else the cached one, else made from prev_proba when asked
        self._prev_pred = None if first else (self._pred if pred is None else pred)
        self.prev_proba = None if first else self.proba
        self.prev_model_ready = (not first) and self._proba_ready
        self._proba_ready = self.model_ready
        self.proba = np.asarray(proba, dtype=np.float64)
        self._pred = None
        for key in [k for k in self.cache if k.startswith("fit:")]:
            del self.cache[key]

    # -- geometry (incremental) -----------------------------------------------------------------
    @property
    def geometry(self) -> PoolGeometry:
        """The pool's :class:`~metaal.geometry.PoolGeometry` (distance scale, observation density),
        made on first use; another state over the same pool may share it (:meth:`share_geometry`)."""
        if self._geometry is None:
            self._geometry = PoolGeometry(self.X_pool)
        return self._geometry

    def share_geometry(self, geometry: PoolGeometry) -> None:
        """Use ``geometry`` (computed for the same pool features) instead of computing it again."""
        if geometry.n != self.n_pool:
            raise DataError(f"a geometry of {geometry.n} items for a pool of {self.n_pool}")
        self._geometry = geometry

    def distance_scale(self) -> float:
        """Median pairwise distance in the pool (:func:`metaal.geometry.distance_scale`); divides
        distances to make them scale-free."""
        return self.geometry.scale

    def min_dist_labeled(self) -> np.ndarray:
        """Distance of every pool item to its nearest labeled item, shape ``(n_pool,)``; computed
        once, then updated incrementally with each new label."""
        if self._min_dist is None:
            self._min_dist = np.full(self.n_pool, np.inf)
            if self.n_labeled:
                update_min_dist(self._min_dist, self.X_pool, self.labeled_idx, self.geometry.sq_norms)
        return self._min_dist


__all__ = ["ALState", "Task", "pairwise_dist", "standardize"]
