"""Learned query policies behind the :class:`~metaal.strategies.Strategy` contract.

:class:`LearnedStrategy` loads a policy file (:mod:`metaal.agents.policy_file`) and, at each step,
observes the state with :class:`metaal.observe.Observer`, scores the candidates with the policy
and returns the best. When the policy cannot be loaded it raises :class:`~metaal.errors.PolicyError`
if ``strict=True``; otherwise it warns loudly (``warnings.warn`` and ``logging``) and uses the
named heuristic instead, and its ``name`` says so (``policy:default(fallback=margin)``).
:func:`policy_factory` is the ``policy:PATH`` factory of the strategy registry (registered through
the ``metaal.strategies`` entry point group, see :func:`metaal.strategies.get`).
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np

from metaal import scores
from metaal.agents.policy_file import load_model, resolve_policy_path
from metaal.errors import ConfigError, PolicyError
from metaal.observe import Observer
from metaal.state import ALState
from metaal.strategies import Strategy, check_k, get

log = logging.getLogger("metaal.agents")


def policy_logits(policy: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
    """Candidate logits ``(K,)`` of one observation (``Observation.as_dict()``), Q-values for a
    DQN policy; padding ``-inf``."""
    import torch as th  # heavy: only when a policy runs

    threads = th.get_num_threads()
    one_thread = policy.device.type == "cpu" and threads != 1
    if one_thread:  # K candidates are a tiny problem: extra threads only wait for each other
        th.set_num_threads(1)
    try:
        with th.no_grad():
            tens, _ = policy.obs_to_tensor(obs)
            if hasattr(policy, "candidate_logits"):
                logits = policy.candidate_logits(tens)
            else:  # any SB3 actor-critic: the distribution's logits
                logits = policy.get_distribution(tens).distribution.logits
    finally:
        if one_thread:
            th.set_num_threads(threads)
    out = logits.reshape(-1).cpu().numpy().astype(np.float64)
    out[~np.asarray(obs["action_mask"], dtype=bool)] = -np.inf
    return out


class LearnedStrategy(Strategy):
    """A learned query policy as a :class:`Strategy`.

    :param path: ``default``, a policy ``.zip`` (with its ``.json``), or a training output folder.
    :param fallback: the heuristic used when the policy cannot be loaded (``strict=False``).
    :param strict: raise :class:`PolicyError` instead of falling back.

    Each step builds the observation with :class:`metaal.observe.Observer` (``K`` from the
    metadata), runs the policy deterministically and maps the best candidate(s) to pool positions;
    ``k > 1`` takes the ``k`` highest candidate logits (then margin's order if ``k`` exceeds the
    candidates offered).
    """

    has_score = False

    def __init__(self, path: "str | os.PathLike" = "default", fallback: str = "margin", strict: bool = False):
        self.spec = str(path) or "default"
        self.fallback_name = fallback
        self.strict = bool(strict)
        self.model: Any = None
        self.meta: dict[str, Any] = {}
        self.fallback: Strategy | None = None
        self.error: PolicyError | None = None
        self.zip_path = resolve_policy_path(self.spec)
        try:
            self.model, self.meta = load_model(self.zip_path)
        except PolicyError as exc:
            if self.strict:
                raise
            if ":" in fallback:
                raise ConfigError(f"the fallback of a policy must be a heuristic (got {fallback!r})") from None
            self.fallback = get(fallback)
            self.error = exc
            msg = f"{exc}; falling back to the {fallback!r} heuristic"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        if self.fallback is not None:
            self.name = f"policy:{self.spec}(fallback={fallback})"  # type: ignore[misc]
        else:
            self.name = f"policy:{self.spec}"  # type: ignore[misc]
            self.observer = Observer(k=int(self.meta["k"]), **dict(self.meta.get("observer") or {}))

    @property
    def is_fallback(self) -> bool:
        return self.fallback is not None

    def reset(self, state: ALState | None = None, rng: np.random.Generator | None = None) -> None:
        if self.fallback is not None:
            self.fallback.reset(state, rng)

    def get_state(self) -> dict[str, Any]:
        """The fallback heuristic's state when it has taken over (a policy itself keeps none)."""
        return self.fallback.get_state() if self.fallback is not None else {}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.fallback is not None:
            self.fallback.set_state(state)
        else:
            super().set_state(state)

    def logits(self, state: ALState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (K,), pool positions (K,))`` of the current observation (padding: -inf, -1)."""
        obs = self.observer.observe(state, rng)
        return policy_logits(self.model.policy, obs.as_dict()), obs.indices

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.fallback is not None:
            return self.fallback.select(state, k, rng)
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        logits, idx = self.logits(state, rng)
        valid = np.flatnonzero(np.isfinite(logits))
        order = valid[np.argsort(-logits[valid], kind="stable")]
        chosen = idx[order[:k]]
        if len(chosen) < k:  # more queries than candidates offered: continue in margin's order
            rest = np.setdiff1d(unl, chosen)
            rest = rest[np.argsort(scores.margin(state.proba[rest]), kind="stable")]
            chosen = np.concatenate([chosen, rest[: k - len(chosen)]])
        return np.asarray(chosen, dtype=np.int64)

    def __repr__(self) -> str:
        return f"LearnedStrategy({self.spec!r}, fallback={self.fallback_name!r}, strict={self.strict})"


def policy_factory(arg: str, **kwargs: Any) -> LearnedStrategy:
    """The registry factory for ``policy:PATH``."""
    return LearnedStrategy(arg or "default", **kwargs)
