"""``metaal/PoolBatch-v0``: batch-mode pool-based active learning, ``b`` labels per step.

The action is a ``Box(-1, 1, (K,))`` vector of **scores**, one per candidate; the ``b`` valid
candidates with the highest scores are labeled together (ties: lower candidate index first;
masked / padding candidates are never taken). Why scores and not ``MultiBinary(K)`` or an
autoregressive ``MultiDiscrete``: a binary vector rarely has exactly ``b`` ones (it needs a repair
rule that the agent cannot see), and ``MultiDiscrete([K] * b)`` can repeat a candidate and makes
the ``b`` choices conditionally independent given the observation. A score vector always yields
exactly ``b`` distinct valid items, keeps the permutation-equivariant "score every candidate with
the same weights" design of the single-label env, and works with any SB3 algorithm that supports
``Box`` actions (PPO, SAC); a NaN score counts as ``-inf``. An all-NaN action labels margin's
top-``b`` instead and sets ``info["invalid_action"]``.

The reward compares the batch with margin's top-``b`` batch at the same step
(:mod:`metaal.envs.rewards`); ``info["pool_index"]`` and ``info["margin_index"]`` are ``(b,)``
arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from metaal.envs.pool import PoolEnv
from metaal.errors import ConfigError
from metaal.strategies import get


class PoolBatchEnv(PoolEnv):
    """``metaal/PoolBatch-v0``. Same options as ``metaal/Pool-v0`` plus ``batch_size`` (``b``,
    default 5, at most ``K``); observation space identical to ``Pool-v0``."""

    action_kind = "batch"

    def __init__(self, batch_size: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 1 <= batch_size <= self.k:
            raise ConfigError(f"batch_size must be in 1..k={self.k} (got {batch_size})")
        self.batch_size = int(batch_size)
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=(self.k,), dtype=np.float32)
        self._margin = get("margin")

    def _step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        ob, state = self.last_observation, self.state
        assert ob is not None and state is not None
        b = min(self.batch_size, self.budget - state.n_queried, int(ob.mask.sum()))
        margin_idx = np.asarray(self._margin.select(state, b), dtype=np.int64)
        try:
            s = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            s = np.full(self.k, np.nan)
        invalid = s.shape != (self.k,) or bool(np.all(np.isnan(s)))
        if invalid:
            idx = margin_idx.copy()
        else:
            s = np.where(np.isnan(s), -np.inf, s)
            s[~ob.mask] = -np.inf
            # stable sort: ties keep the lower candidate index first
            order = np.argsort(-s, kind="stable")
            order = order[ob.mask[order]]
            idx = ob.indices[order[:b]]
        reward, terminated = self._label(idx, margin_idx)
        new = self._observe()
        info = self._info(-1, -1, invalid)
        info["pool_index"] = idx.astype(np.int64)
        info["margin_index"] = margin_idx
        return new.as_dict(), reward, terminated, False, info
