"""metaal: learn how to choose what to label.

Layers (a lower one never imports a higher one; ``tests/test_layers.py`` checks it):
:mod:`metaal.data` -> :mod:`metaal.learners` -> :mod:`metaal.scores` and :mod:`metaal.geometry` ->
:mod:`metaal.state` -> :mod:`metaal.observe` and :mod:`metaal.stream` ->
:mod:`metaal.strategies` -> :mod:`metaal.loop` ->
:mod:`metaal.envs` -> :mod:`metaal.agents` -> :mod:`metaal.experiments` -> :mod:`metaal.cli`.
"""
__version__ = "0.1.0"

import logging  # noqa: E402

from metaal.errors import ConfigError, DataError, LabelError, MetaalError, PolicyError  # noqa: E402

# a library's loggers stay quiet unless the application configures logging (the command line shows
# warnings once, as ``metaal: warning: ...``; without this, logging's last resort repeats them)
logging.getLogger("metaal").addHandler(logging.NullHandler())

__all__ = [
    "ActiveLearner", "ConfigError", "DataError", "LabelError", "MetaalError", "PolicyError", "StreamLearner",
    "__version__",
]


def __getattr__(name: str) -> object:
    """``from metaal import ActiveLearner`` (the pool labeling session) and ``StreamLearner`` (the
    stream one), imported on first use (PEP 562)."""
    if name == "ActiveLearner":
        from metaal.loop.session import ActiveLearner

        return ActiveLearner
    if name == "StreamLearner":
        from metaal.loop.stream_session import StreamLearner

        return StreamLearner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
