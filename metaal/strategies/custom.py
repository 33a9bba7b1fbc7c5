"""Strategies written by users: a plain function wrapped as a :class:`Strategy`
(:class:`FunctionStrategy`), and ``module:Class`` / ``path.py:Class`` names resolved by
:func:`metaal.strategies.get` (:func:`load_strategy_class`)."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
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


def _module_from_file(path: Path) -> Any:
    """Import a ``.py`` file as a module (once per resolved path; kept in ``sys.modules`` under a
    name derived from the path, so its classes pickle within the process)."""
    key = "metaal_user_strategy_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import strategy file {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # the user's file: any error becomes one line
        del sys.modules[key]
        raise ConfigError(f"strategy file {path} failed to import: {type(exc).__name__}: {exc}") from None
    return mod


def load_strategy_class(spec: str) -> type[Strategy]:
    """The :class:`Strategy` subclass named by ``module:Class`` (an importable module) or
    ``path.py:Class`` (a Python file, relative to the working directory or absolute).

    :raises ConfigError: the module or file cannot be imported, has no such attribute, or the
        attribute is not a :class:`Strategy` subclass.
    """
    where, _, cls_name = spec.rpartition(":")
    if not where or not cls_name.isidentifier():
        raise ConfigError(f"strategy {spec!r}: expected module:Class or path.py:Class")
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"strategy {spec!r}: file {where} does not exist")
        mod = _module_from_file(path)
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as exc:
            raise ConfigError(f"strategy {spec!r}: cannot import module {where!r} ({exc})") from None
        except Exception as exc:
            raise ConfigError(
                f"strategy {spec!r}: module {where!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise ConfigError(f"strategy {spec!r}: {where} has no {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(
            f"strategy {spec!r}: {cls_name} is not a subclass of metaal.strategies.Strategy "
            "(write a class with a score(state) method; see docs/strategies.md)"
        )
    return cls
