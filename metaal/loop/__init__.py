"""The labeling loop: :func:`simulate` for experiments (and, in :mod:`metaal.loop.active`, the
:class:`ActiveLearner` for real labeling with a durable store)."""
from metaal.loop.simulate import Curve, evaluate, new_state, simulate, strategy_rng
from metaal.loop.active import ActiveLearner, QueryItem

__all__ = ["ActiveLearner", "QueryItem", "Curve", "evaluate", "new_state", "simulate", "strategy_rng"]
