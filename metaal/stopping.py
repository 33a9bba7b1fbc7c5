"""When to stop labeling: the "stabilizing predictions" rule (Bloodgood and Vijay-Shanker, 2009).

A fixed **stop set** of pool items is drawn once per run (:func:`draw_stop_set`: a seeded random
sample of ``min(2000, pool)`` positions, from a generator of its own so that no strategy's stream
moves). After every refit the current model's predictions on the stop set are compared with the
previous model's by Cohen's kappa (:func:`prediction_kappa`); the rule **fires** the first time the
mean kappa over the last ``window`` refits (default 3) is at least ``threshold`` (default 0.99).
The stop set needs no labels; items of it that get labeled stay in it (the set is fixed).

One implementation, :class:`StabilizingPredictions`, is used by :func:`metaal.loop.simulate`
(``metaal compare``: ``stop_labels`` / ``stop_accuracy`` of a curve), by the labeling session
(:meth:`metaal.loop.session.ActiveLearner.progress` ``["stopping"]``) and by the Python API
(``learner.stabilized``).

Typical use::

    rule = StabilizingPredictions(window=3, threshold=0.99)
    stop = draw_stop_set(n_pool, seed)
    rule.update(model_predictions[stop], n_labeled)      # after the first fit: no kappa yet
    ...
    if rule.update(model_predictions[stop], n_labeled):  # after every refit
        print("stable since", rule.stop_at, "labels")
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from metaal.errors import ConfigError

DEFAULT_WINDOW = 3
DEFAULT_THRESHOLD = 0.99
STOP_SET_SIZE = 2000
_STOP_STREAM = 0x5709  # the stop set's own generator: default_rng([seed, 0x5709])


def draw_stop_set(n_pool: int, seed: int, size: int = STOP_SET_SIZE) -> np.ndarray:
    """Pool positions of the stop set, sorted: every position when the pool holds at most
    ``size`` items, else ``size`` positions drawn without replacement from the generator
    ``default_rng([seed, 0x5709])`` (used for nothing else, so strategies' streams are untouched)."""
    n_pool, size = int(n_pool), int(size)
    if size < 1:
        raise ConfigError(f"the stop set needs at least one item (got size {size})")
    if n_pool <= size:
        return np.arange(n_pool, dtype=np.int64)
    rng = np.random.default_rng([int(seed), _STOP_STREAM])
    return np.sort(rng.choice(n_pool, size=size, replace=False)).astype(np.int64)


def prediction_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa between two prediction vectors of the same items
    (:func:`sklearn.metrics.cohen_kappa_score`).

    Identical vectors count as 1.0: this covers the degenerate case where both are constant and
    equal (one class everywhere), where kappa is undefined (0/0: the expected agreement is 1) and
    scikit-learn would return nan; two models that agree on every item have stabilized.
    """
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"prediction vectors differ in shape: {a.shape} and {b.shape}")
    if np.array_equal(a, b):
        return 1.0
    k = float(cohen_kappa_score(a, b))
    return 1.0 if np.isnan(k) else k


class StabilizingPredictions:
    """The stabilizing-predictions stopping rule.

    :param window: number of most recent kappas averaged (>= 1).
    :param threshold: the rule fires when that mean is at least this (in ``(-1, 1]``).

    Attributes: ``kappas`` (one per refit after the first), ``n_labels`` (labels at each of them),
    ``stop_at`` (labels when the rule first fired, or None), ``stop_index`` (position of that
    kappa). The rule fires once: :attr:`stopped` stays True afterwards, even if later kappas drop.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, threshold: float = DEFAULT_THRESHOLD) -> None:
        if int(window) < 1:
            raise ConfigError(f"the stopping window must be >= 1 (got {window})")
        if not -1.0 < float(threshold) <= 1.0:
            raise ConfigError(f"the stopping threshold must be in (-1, 1] (got {threshold})")
        self.window = int(window)
        self.threshold = float(threshold)
        self.kappas: list[float] = []
        self.n_labels: list[int | None] = []
        self.stop_at: int | None = None
        self.stop_index: int | None = None
        self._prev: np.ndarray | None = None

    @property
    def stopped(self) -> bool:
        """True once the rule has fired."""
        return self.stop_index is not None

    @property
    def window_mean(self) -> float | None:
        """Mean kappa over the last ``window`` refits (None until there are that many)."""
        if len(self.kappas) < self.window:
            return None
        return float(np.mean(self.kappas[-self.window:]))

    def update(self, pred: Sequence[Any], n_labeled: int | None = None) -> bool:
        """Record the predictions ``(n_stop,)`` of the model just fitted on the stop set, with
        ``n_labeled`` labels; from the second call on, add their kappa with the previous ones.

        :returns: :attr:`stopped`.
        """
        pred = np.array(pred, copy=True)
        prev, self._prev = self._prev, pred
        if prev is None:
            return self.stopped
        return self.add_kappa(prediction_kappa(prev, pred), n_labeled)

    def add_kappa(self, kappa: float, n_labeled: int | None = None) -> bool:
        """Add one kappa (a refit) directly, e.g. when replaying a stored history.

        :returns: :attr:`stopped`.
        """
        self.kappas.append(float(kappa))
        self.n_labels.append(None if n_labeled is None else int(n_labeled))
        if not self.stopped:
            mean = self.window_mean
            if mean is not None and mean >= self.threshold:
                self.stop_index = len(self.kappas) - 1
                self.stop_at = self.n_labels[-1]
        return self.stopped

    def set_previous(self, pred: "Sequence[Any] | None") -> None:
        """Set the previous model's predictions (the reference of the next :meth:`update`)."""
        self._prev = None if pred is None else np.array(pred, copy=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: ``stable`` (fired), ``labels_at_stop``, ``window``, ``threshold``,
        ``kappa`` (every kappa so far), ``n_labels`` and ``window_mean``."""
        return {
            "stable": self.stopped,
            "labels_at_stop": self.stop_at,
            "window": self.window,
            "threshold": self.threshold,
            "kappa": list(self.kappas),
            "n_labels": list(self.n_labels),
            "window_mean": self.window_mean,
        }
