"""Every heuristic usable as a policy, and one evaluator for heuristics and trained agents.

:class:`HeuristicPolicy` acts on ``(observation, env)``: it runs the heuristic's ``select`` on the
environment's :class:`~metaal.state.ALState` and returns the candidate that holds the pick.

**Mapping rule when the pick is not among the K candidates** (documented in
``docs/environments.md``): a heuristic with a per-item ``score`` takes the valid candidate with
the highest score (ties: the lower candidate index); a select-only heuristic (``coreset``,
``dbal``, ...: ``has_score`` False, or ``score`` not implemented) takes candidate 0, margin's pick.
``random`` is the exception: it takes a uniformly random candidate among those the observer drew
at random (flag ``from_random``; any valid candidate if there is none), which keeps it a uniform
draw from the pool rather than turning it into margin.

In ``metaal/PoolBatch-v0`` the policy returns K scores in ``[-1, 1]``: its ``select(state, b)``
picks that are candidates get the highest scores (in selection order, in ``(0.6, 1]``), the other
candidates its own rescaled score in ``[-1, 0.5]`` (or -1 for select-only heuristics, so that
margin's order fills the batch; ``random`` fills it with random candidates). In
``metaal/Heuristic-v0`` it returns the index of its heuristic among the env's arms.

:func:`evaluate_policy` drives any policy (a :class:`HeuristicPolicy`, an SB3 / sb3-contrib model
with ``predict(obs, action_masks=...)``, or a plain callable ``f(obs, env) -> action``) through
episodes and returns learning curves.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metaal.errors import ConfigError
from metaal.loop.simulate import Curve, strategy_rng
from metaal.strategies import Strategy, get, reads_truth, with_cold_start


def _base(env: gym.Env) -> Any:
    return env.unwrapped if hasattr(env, "unwrapped") else env


class HeuristicPolicy:
    """A heuristic (registry name or :class:`Strategy`) acting as a policy.

    :param strategy: ``"margin"``, ``"coreset"``, ... (:func:`metaal.strategies.names`).
    :param seed: seeds the heuristic's generator (:func:`metaal.loop.strategy_rng`) at every
        episode, as :func:`metaal.loop.simulate` does.
    """

    def __init__(self, strategy: "str | Strategy", seed: int = 0) -> None:
        strat = get(strategy) if isinstance(strategy, str) else strategy
        if reads_truth(strat):
            raise ConfigError(
                f"{getattr(strat, 'name', strategy)!r} reads the test labels: it runs in simulations "
                "(metaal compare / evaluate, metaal.loop.simulate), not as an environment policy"
            )
        # from a cold start (initial = 0), random picks for a model-based heuristic until two classes
        self.strategy = with_cold_start(strat)
        self.name = getattr(self.strategy, "name", str(strategy))
        self.seed = int(seed)
        self.rng = strategy_rng(self.seed)
        self._state_id: int | None = None
        self.n_fallback = 0  # picks that were not among the candidates

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Start an episode on ``env`` (after ``env.reset``)."""
        if seed is not None:
            self.seed = int(seed)
        self.rng = strategy_rng(self.seed)
        state = _base(env).state
        self.strategy.reset(state, self.rng)
        self._state_id = id(state)

    def _ensure(self, env: Any) -> None:
        if self._state_id != id(env.state):
            self.reset(env)

    def _scores(self, state: Any, cand: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        """The heuristic's scores of the candidate pool positions ``cand`` (K,) or None."""
        if not getattr(self.strategy, "has_score", True):
            return None
        try:
            s = np.asarray(self.strategy.score(state), dtype=np.float64)
        except NotImplementedError:
            return None
        unl = state.unlabeled_idx
        out = np.full(len(cand), -np.inf)
        pos = np.searchsorted(unl, cand[valid])
        out[valid] = np.nan_to_num(s[pos], nan=-np.inf)
        return out

    def act(self, obs: Any, env: gym.Env) -> Any:
        """The action for the current step of ``env`` (its last observation is ``obs``)."""
        base = _base(env)
        self._ensure(base)
        kind = getattr(base, "action_kind", "candidate")
        if kind == "stream":
            raise ConfigError("HeuristicPolicy acts in the pool-based envs; use ThresholdStreamPolicy in Stream-v0")
        if kind == "heuristic":
            try:
                return int(base.heuristics.index(self.name))
            except ValueError:
                raise ConfigError(f"{self.name!r} is not an arm of this env ({', '.join(base.heuristics)})") from None
        state, ob = base.state, base.last_observation
        cand, valid = ob.indices, ob.mask
        if self.name == "random":
            pool = np.flatnonzero(valid & (ob.candidates[:, 11] > 0))
            if pool.size < (base.batch_size if kind == "batch" else 1):
                pool = np.flatnonzero(valid)
            if kind == "batch":
                out = np.full(len(cand), -1.0, dtype=np.float32)
                b = min(base.batch_size, pool.size)
                out[self.rng.choice(pool, size=b, replace=False)] = 1.0
                return out
            return int(self.rng.choice(pool))
        if kind == "batch":
            b = min(base.batch_size, int(valid.sum()))
            picks = np.asarray(self.strategy.select(state, b, self.rng), dtype=np.int64).reshape(-1)
            s = self._scores(state, cand, valid)
            out = np.full(len(cand), -1.0)
            if s is not None and np.isfinite(s[valid]).any():
                sv = s[valid]
                lo, hi = np.min(sv[np.isfinite(sv)]), np.max(sv[np.isfinite(sv)])
                # the heuristic's own scores, rescaled into [-1, 0.5]
                out[valid] = -1.0 + 1.5 * np.clip((sv - lo) / (hi - lo + 1e-12), 0.0, 1.0)
            for rank, p in enumerate(picks):
                hit = np.flatnonzero(cand == p)
                if hit.size:
                    out[hit[0]] = 1.0 - 0.4 * rank / len(picks)  # in (0.6, 1], in pick order
                else:
                    self.n_fallback += 1
            return out.astype(np.float32)
        pick = int(np.asarray(self.strategy.select(state, 1, self.rng)).reshape(-1)[0])
        hit = np.flatnonzero(cand == pick)
        if hit.size:
            return int(hit[0])
        self.n_fallback += 1
        s = self._scores(state, cand, valid)
        if s is None or not np.isfinite(s).any():
            return 0
        return int(np.argmax(s))

    __call__ = act


#: the learning curve of an evaluated episode: :class:`metaal.loop.simulate.Curve` (one curve type)
PolicyCurve = Curve


def _model_action(model: Any, obs: Any, base: Any, deterministic: bool) -> Any:
    masks = base.action_masks() if hasattr(base, "action_masks") else None
    if masks is not None:
        try:
            action, _ = model.predict(obs, action_masks=masks, deterministic=deterministic)
            return action
        except TypeError:  # a model without masking (PPO, DQN)
            pass
    action, _ = model.predict(obs, deterministic=deterministic)
    return action


def evaluate_policy(
    env: gym.Env,
    policy: "HeuristicPolicy | Callable[[Any, gym.Env], Any] | Any",
    n_episodes: int = 1,
    seed: int = 0,
    deterministic: bool = True,
    options: dict[str, Any] | None = None,
) -> list[PolicyCurve]:
    """Run ``n_episodes`` episodes (``env.reset(seed=seed + i, options=options)``) with ``policy``
    and return their learning curves (test accuracy after every step, from ``info``).

    ``policy`` is a :class:`HeuristicPolicy`, a model with ``predict`` (SB3 / sb3-contrib; the
    env's ``action_masks()`` are passed when the model accepts them), or a callable
    ``f(obs, env) -> action``.
    """
    if n_episodes < 1:
        raise ConfigError(f"n_episodes must be >= 1 (got {n_episodes})")
    base = _base(env)
    if getattr(base, "action_kind", "candidate") == "stream":
        raise ConfigError("evaluate_policy evaluates the pool-based envs; for Stream-v0 see scripts/bench_stream.py")
    name = getattr(policy, "name", type(policy).__name__)
    curves: list[PolicyCurve] = []
    for ep in range(n_episodes):
        obs, info = env.reset(seed=seed + ep, options=options)
        if isinstance(policy, HeuristicPolicy):
            policy.reset(env, seed=seed + ep)
        ns, accs, racc, rews, queried, invalid = (
            [info["n_labeled"]], [info["test_accuracy"]], [info["reward_accuracy"]], [], [], 0
        )
        f1s = [info.get("test_macro_f1", np.nan)]
        done = False
        while not done:
            if isinstance(policy, HeuristicPolicy) or (callable(policy) and not hasattr(policy, "predict")):
                action = policy(obs, env)
            else:
                action = _model_action(policy, obs, base, deterministic)
            obs, r, term, trunc, info = env.step(action)
            done = bool(term or trunc)
            ns.append(info["n_labeled"])
            accs.append(info["test_accuracy"])
            racc.append(info["reward_accuracy"])
            f1s.append(info.get("test_macro_f1", np.nan))
            rews.append(float(r))
            pi = info.get("pool_index", -1)
            queried.extend(int(i) for i in np.atleast_1d(pi) if int(i) >= 0)
            invalid += int(bool(info.get("invalid_action", False)))
        curves.append(
            Curve(
                dataset=str(info.get("dataset", "")), strategy=name, seed=seed + ep,
                n_labeled=np.asarray(ns), accuracy=np.asarray(accs, dtype=float),
                macro_f1=np.asarray(f1s, dtype=float), reward_accuracy=np.asarray(racc, dtype=float),
                rewards=np.asarray(rews), queried=queried, invalid_actions=invalid,
            )
        )
    return curves
