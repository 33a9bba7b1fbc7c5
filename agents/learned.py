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
from metaal.observe import OBS_VERSION
from metaal.state import ALState
from metaal.strategies import Strategy, check_k, get, make_observer

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

    :param path: ``default``, a policy ``.zip`` (with its ``.json``), or a training output folder;
        a suffix ``?guard=G`` sets ``guard``.
    :param fallback: the heuristic used when the policy cannot be loaded (``strict=False``).
    :param strict: raise :class:`PolicyError` instead of falling back.
    :param guard: the deployment guard, in ``[0, 1)``: where the policy's softmax probability of
        its best candidate exceeds that of margin's pick (candidate 0) by less than ``guard``, the
        policy is unsure and margin's pick is labeled instead (:attr:`guard_picks` counts how often
        that changed the pick). Default: the policy file's ``guard`` (0: off).

    A suffix ``?cold=fallback`` makes an ``obs-v2`` policy wait, like a v1 one, behind the loop's
    cold-start heuristic until two classes are labeled (:attr:`needs_model`); ``?cold=policy`` (the
    default) lets it pick from zero labels itself. Options join with ``&``.

    Each step builds the observation with the observer of the policy's observation version
    (:func:`metaal.strategies.make_observer`, ``K`` from the metadata) and runs the policy
    deterministically. An ``obs-v1`` policy needs a model (:attr:`needs_model`; before two classes
    are labeled the loop's cold-start heuristic picks) and takes the ``k`` highest candidate logits
    for a batch (then margin's order if ``k`` exceeds the candidates offered). An ``obs-v2`` policy
    acts from zero labels and picks a batch one item at a time: each pick is observed again with
    the batch's earlier picks as labeled for the geometry (``dist_batch``, coverage) and out of
    the candidates.
    """

    has_score = False

    def __init__(self, path: "str | os.PathLike" = "default", fallback: str = "margin", strict: bool = False,
                 guard: float | None = None):
        spec = str(path) or "default"
        cold_model: str | None = None
        if "?" in spec:
            spec, _, query = spec.partition("?")
            for part in query.split("&"):
                key, _, val = part.partition("=")
                if key == "guard":
                    try:
                        guard = float(val)
                    except ValueError:
                        raise ConfigError(f"policy:{path}: guard must be a number in [0, 1) (got {val!r})") from None
                elif key == "cold" and val in ("policy", "fallback"):
                    cold_model = val
                else:
                    raise ConfigError(f"policy:{path}: unknown option {part!r} (known: guard=G, cold=policy|fallback)")
        self.spec = spec or "default"
        self.fallback_name = fallback
        self.strict = bool(strict)
        self.model: Any = None
        self.meta: dict[str, Any] = {}
        self.fallback: Strategy | None = None
        self.error: PolicyError | None = None
        self.zip_path = resolve_policy_path(self.spec)
        self.guard_picks = 0
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
        self.guard = float(self.meta.get("guard", 0.0) if guard is None else guard)
        if not 0.0 <= self.guard < 1.0:
            raise ConfigError(f"policy:{self.spec}: guard must be in [0, 1) (got {self.guard})")
        self.version = str(self.meta.get("obs_version", OBS_VERSION))
        #: an obs-v2 policy acts from zero labels (coverage features); an obs-v1 one needs a model
        self.needs_model = self.fallback is not None or self.version == OBS_VERSION or cold_model == "fallback"
        opts = ([f"guard={self.guard:g}"] if guard is not None else []) + ([f"cold={cold_model}"] if cold_model else [])
        suffix = "?" + "&".join(opts) if opts else ""
        if self.fallback is not None:
            self.name = f"policy:{self.spec}{suffix}(fallback={fallback})"  # type: ignore[misc]
        else:
            self.name = f"policy:{self.spec}{suffix}"  # type: ignore[misc]
            self.observer = make_observer(int(self.meta["k"]), self.version, **dict(self.meta.get("observer") or {}))

    @property
    def is_fallback(self) -> bool:
        return self.fallback is not None

    def reset(self, state: ALState | None = None, rng: np.random.Generator | None = None) -> None:
        self.guard_picks = 0
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

    def logits(
        self, state: ALState, rng: np.random.Generator, pending: np.ndarray | None = None, batch_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (K,), pool positions (K,))`` of the current observation (padding: -inf, -1);
        ``pending``: the batch's earlier picks (``obs-v2``)."""
        obs = self.observer.observe(state, rng, pending=pending, batch_size=batch_size)
        return policy_logits(self.model.policy, obs.as_dict()), obs.indices

    def _best(self, logits: np.ndarray, state: ALState) -> int:
        """The candidate the policy picks: its best, or margin's pick (candidate 0) where the
        guard says the policy is unsure."""
        valid = np.flatnonzero(np.isfinite(logits))
        a = int(valid[np.argmax(logits[valid])])
        if self.guard > 0 and a != 0 and np.isfinite(logits[0]) and state.model_ready:
            p = np.exp(logits[valid] - logits[a])
            p /= p.sum()
            if p[np.searchsorted(valid, a)] - p[np.searchsorted(valid, 0)] < self.guard:
                self.guard_picks += 1
                return 0
        return a

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.fallback is not None:
            return self.fallback.select(state, k, rng)
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        if self.version != OBS_VERSION:  # one pick at a time, each seeing the batch's earlier ones
            picks: list[int] = []
            for _ in range(k):
                logits, idx = self.logits(state, rng, np.asarray(picks, dtype=np.int64), k)
                if not np.isfinite(logits).any():
                    break
                picks.append(int(idx[self._best(logits, state)]))
            chosen = np.asarray(picks, dtype=np.int64)
        else:
            logits, idx = self.logits(state, rng)
            if k == 1:
                chosen = idx[[self._best(logits, state)]]
            else:
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
