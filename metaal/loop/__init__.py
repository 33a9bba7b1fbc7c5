"""The labeling loop: :func:`simulate` for experiments and, in :mod:`metaal.loop.session`, the
labeling session :class:`ActiveLearner` for real labeling with a durable store; in
:mod:`metaal.loop.stream_session` the stream labeling session :class:`StreamLearner`.

The session module (which loads the SQLite store and the featurizers) is imported on first use of
``metaal.loop.ActiveLearner`` / ``QueryItem`` (PEP 562), so that importing :mod:`metaal.loop`
(every environment worker does) stays light.
"""
from typing import Any

from metaal.loop.simulate import Curve, evaluate, new_state, simulate, strategy_rng

__all__ = [
    "ActiveLearner", "Curve", "QueryItem", "StreamItem", "StreamLearner", "evaluate", "new_state", "simulate",
    "strategy_rng",
]

_SESSION_NAMES = ("ActiveLearner", "QueryItem")
_STREAM_NAMES = ("StreamItem", "StreamLearner")


def __getattr__(name: str) -> Any:
    if name in _SESSION_NAMES:
        from metaal.loop import session

        return getattr(session, name)
    if name in _STREAM_NAMES:
        from metaal.loop import stream_session

        return getattr(stream_session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
