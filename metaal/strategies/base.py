"""The Strategy contract and the strategy registry."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from metaal.errors import ConfigError
from metaal.state import ALState


class Strategy:
    """A query strategy: picks the next unlabeled pool items to label.

    Subclasses set :attr:`name` and implement :meth:`score` (higher = label first) or override
    :meth:`select`. Strategies may keep state across the steps of one run (a bandit, a
    committee); :meth:`reset` is called at the start of each run.

    State that a strategy learns across queries (and that cannot be recomputed from the
    :class:`~metaal.state.ALState` and the generator passed to :meth:`select`) must be exposed by
    :meth:`get_state` / :meth:`set_state`, so that a labeling session resumed from its store
    (:class:`metaal.loop.ActiveLearner`) asks exactly what an uninterrupted one would have asked.
    Stateless strategies keep the defaults (``{}``).
    """

    name: ClassVar[str] = "base"
    #: True if :meth:`score` is meaningful (used by observers and the ALBL bandit).
    has_score: ClassVar[bool] = True
    #: True if :meth:`score` / :meth:`select` need a model fitted on at least two classes; the loop
    #: asks a fallback before that. False for model-free strategies, which must work with no labels.
    needs_model: ClassVar[bool] = True

    def reset(self, state: ALState | None = None, rng: np.random.Generator | None = None) -> None:
        """Forget anything learned in a previous run."""

    def score(self, state: ALState) -> np.ndarray:
        """Informativeness of every unlabeled item, shape ``(n_unlabeled,)``, aligned with
        ``state.unlabeled_idx``; higher means label first."""
        raise NotImplementedError(f"{self.name} has no per-item score")

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        """Pool positions of the ``k`` unlabeled items to label next, shape ``(k,)``.

        The default takes the ``k`` highest scores; ties keep pool order.
        """
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        s = np.asarray(self.score(state), dtype=np.float64)
        return unl[top_k(s, k)]

    def get_state(self) -> dict[str, Any]:
        """The strategy's mutable state between queries, as a JSON-serializable dict (lists,
        floats, ints, strings; no numpy types). The default, for strategies that keep no state
        between queries, is ``{}``.

        The state does not include what :meth:`reset` derives from the ALState or the generator;
        restore it with :meth:`set_state` after :meth:`reset`.
        """
        return {}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state` (call it after :meth:`reset`).

        :raises ConfigError: the default accepts only ``{}`` (this strategy keeps no state) and
            names the strategy for anything else.
        """
        if not isinstance(state, Mapping):
            raise ConfigError(f"strategy {self.name!r}: a state must be a dict, got {type(state).__name__}")
        if state:
            keys = ", ".join(sorted(str(k) for k in state))
            raise ConfigError(
                f"strategy {self.name!r} keeps no state between queries; cannot restore a state with keys {keys}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_k(k: int, n_unlabeled: int) -> int:
    if k < 1:
        raise ConfigError(f"k must be >= 1 (got {k})")
    if k > n_unlabeled:
        raise ConfigError(f"cannot select {k} items: only {n_unlabeled} unlabeled left")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, best first; ties keep the lower position first."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    if k >= len(s):
        return np.argsort(-s, kind="stable")
    part = np.argpartition(-s, k - 1)[:k]
    # stable order among the chosen (ties broken by position) and include all tied at the boundary
    thr = s[part].min()
    cand = np.flatnonzero(s >= thr)
    order = cand[np.argsort(-s[cand], kind="stable")]
    return order[:k]


# ----------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., Strategy]] = {}
#: entry point group of ``PREFIX:ARG`` strategy factories registered by higher layers (``policy``
#: by :mod:`metaal.agents`, declared in pyproject.toml); the strategies layer names no such layer
ENTRY_POINT_GROUP = "metaal.strategies"


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a strategy to the registry under ``name``."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return deco


def register_factory(prefix: str, factory: Callable[..., Strategy]) -> None:
    """Register a factory for names ``PREFIX:ARG``. Packages register theirs as an entry point in
    the :data:`ENTRY_POINT_GROUP` group (``policy = "metaal.agents.learned:policy_factory"``),
    which :func:`get` loads the first time it meets the prefix."""
    _REGISTRY[prefix + ":"] = factory


def _plugin_factory(prefix: str) -> Callable[..., Strategy] | None:
    """The factory registered for ``prefix`` in the :data:`ENTRY_POINT_GROUP` entry points, now
    in the registry too; None if no installed package declares one."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == prefix:
            register_factory(prefix, ep.load())
            return _REGISTRY[prefix + ":"]
    return None


def prefixes() -> list[str]:
    """Registered and installed ``PREFIX:ARG`` prefixes."""
    known = {n[:-1] for n in _REGISTRY if n.endswith(":")}
    known |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(known)


def names() -> list[str]:
    """Registered heuristic names (prefix factories excluded)."""
    return [n for n in _REGISTRY if not n.endswith(":")]


def _is_class_spec(name: str) -> bool:
    """``module:Class`` or ``path.py:Class`` (a class name after the last colon)."""
    where, _, cls_name = name.rpartition(":")
    if not where or not cls_name.isidentifier():
        return False
    return where.endswith(".py") or all(part.isidentifier() for part in where.split("."))


def get(name: str, **kwargs: Any) -> Strategy:
    """Instantiate a strategy by name (``"margin"``, ``"policy:default"``, ...), or a user's
    :class:`Strategy` subclass by ``module:Class`` (an importable module) or ``path.py:Class`` (a
    Python file) when the part before the colon is no registered prefix (``policy``).

    :raises ConfigError: for an unknown name, listing the known ones; for a ``module:Class`` that
        cannot be imported or is not a :class:`Strategy` subclass.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy name must be a non-empty string, got {name!r}")
    if ":" in name:
        prefix, arg = name.split(":", 1)
        factory = _REGISTRY.get(prefix + ":") or _plugin_factory(prefix)
        if factory is None and _is_class_spec(name):
            cls = load_strategy_class(name)
            try:
                return cls(**kwargs)
            except TypeError as exc:
                raise ConfigError(f"strategy {name!r} cannot be built without arguments ({exc})") from None
        if factory is None:
            known = ", ".join(f"{p}:ARG" for p in prefixes()) or "none installed"
            raise ConfigError(
                f"unknown strategy prefix {prefix!r} in {name!r} (known: {known}, module:Class, path.py:Class)"
            )
        return factory(arg, **kwargs)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown strategy {name!r} (known: {', '.join(sorted(names()))}, policy:PATH)")
    return _REGISTRY[name](**kwargs)


def parse_list(spec: str) -> list[str]:
    """Split a comma-separated strategy list; ``all`` expands to every registered heuristic."""
    out: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            out.extend(n for n in names() if n not in out)
        elif part not in out:
            out.append(part)
    if not out:
        raise ConfigError("no strategy given")
    for n in out:
        if ":" not in n and n not in _REGISTRY:
            raise ConfigError(f"unknown strategy {n!r} (known: {', '.join(sorted(names()))}, policy:PATH)")
    return out


# ----------------------------------------------------------------------------------------------
# users' strategies: module:Class and path.py:Class


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
            if isinstance(exc, ModuleNotFoundError) and exc.name == where.split(".")[0]:
                known = ", ".join(f"{p}:ARG" for p in prefixes()) or "none installed"
                raise ConfigError(
                    f"unknown strategy prefix {where!r} in {spec!r} (known: {known}), and no module {where!r} "
                    "to load a module:Class from (a file: path.py:Class)"
                ) from None
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
