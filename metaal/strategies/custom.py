"""A plain function as a strategy (:class:`FunctionStrategy`); ``module:Class`` and
``path.py:Class`` names are resolved by :func:`metaal.strategies.get`
(:func:`metaal.strategies.base.load_strategy_class`)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from metaal.errors import ConfigError
from metaal.state import ALState
from metaal.strategies.base import Strategy


class FunctionStrategy(Strategy):
    """A plain function ``f(estimator, X_unlabeled) -> scores`` as a strategy (modAL's habit).

    ``f`` gets the fitted scikit-learn estimator (``state.learner.estimator``, fitted on the
    standardized pool features) and the unlabeled rows of the pool, ``(n_unlabeled, d)``, in
    ``state.unlabeled_idx`` order, and returns one score per row, shape ``(n_unlabeled,)``; higher
    is queried first (ties keep pool order, NaN counts as the lowest score).

    :param func: the function.
    :param name: the strategy's name (default ``function:<qualified name of func>``).
    :raises ConfigError: ``func`` is not callable; at query time, when it returns another shape.
    """

    name = "function"

    def __init__(self, func: Callable[[Any, np.ndarray], Any], name: str | None = None) -> None:
        if not callable(func):
            raise ConfigError(f"a function strategy must be callable, got {type(func).__name__}")
        self.func = func
        self.name = name or f"function:{getattr(func, '__qualname__', type(func).__name__)}"  # type: ignore[misc]

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        est = getattr(state.learner, "estimator", state.learner)
        out = np.asarray(self.func(est, state.X_pool[unl]), dtype=np.float64)
        if out.shape != (len(unl),):
            raise ConfigError(
                f"strategy {self.name!r} returned scores of shape {out.shape}; it must return one score "
                f"per unlabeled row, shape ({len(unl)},)"
            )
        return out

    def __repr__(self) -> str:
        return f"FunctionStrategy({self.name!r})"
