"""The stable-baselines3 face of the batched environment: :class:`BatchedPoolVecEnv`.

:class:`metaal.envs.batched.BatchedPoolEnv` steps ``N`` Pool-v0 episodes on one batched learner
and knows no agent library; this thin wrapper gives it SB3's
:class:`~stable_baselines3.common.vec_env.VecEnv` API: ``reset() -> obs``, ``step_async`` /
``step_wait -> (obs, rewards, dones, infos)`` with ``infos[i]["terminal_observation"]`` and
``"TimeLimit.truncated"`` as SB3 expects, ``seed``/``set_options``, attribute access and
``action_masks()`` for sb3-contrib's MaskablePPO. Attributes it does not define itself (``states``,
``tasks``, ``dataset``, ``rngs``, ``reward_accuracy``, ...) are read from the wrapped environment.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from metaal.envs.batched import BatchedPoolEnv
from metaal.envs.pool import pool_spaces


class BatchedPoolVecEnv(VecEnv):
    """``num_envs`` Pool-v0 episodes in lockstep on a batched torch logistic regression, as an SB3
    vector environment; every argument goes to :class:`~metaal.envs.batched.BatchedPoolEnv`."""

    def __init__(self, num_envs: int = 8, **kwargs: Any) -> None:
        self.env = BatchedPoolEnv(num_envs=num_envs, **kwargs)
        self.render_mode = None
        super().__init__(num_envs, *pool_spaces(self.env.k))
        self._actions: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self) -> dict[str, np.ndarray]:
        """Start a new round for every episode (seeds given by :meth:`seed` apply here)."""
        obs, self.reset_infos = self.env.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("call reset() before step()")
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        for i in np.flatnonzero(terminated | truncated):
            infos[i]["terminal_observation"] = infos[i].pop("final_observation")
            if truncated[i]:
                infos[i]["TimeLimit.truncated"] = True
        return obs, rewards, terminated | truncated, infos

    def action_masks(self) -> np.ndarray:
        """Valid candidates of every episode, ``(N, K)`` bool."""
        return self.env.action_masks()

    def close(self) -> None:
        self.env.close()

    # -- attribute access (SB3) -----------------------------------------------------------------
    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, (int, np.integer)):
            return [int(indices)]
        return [int(i) for i in indices]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        idx = self._indices(indices)
        if attr_name == "action_masks":
            return [(lambda i=i: self.action_masks()[i]) for i in idx]
        per_episode = {"state": "states", "task": "tasks", "reward_split": "splits"}
        if attr_name in per_episode:
            src = getattr(self.env, per_episode[attr_name])
            return [src[i] if src else None for i in idx]
        if not hasattr(self, attr_name):
            raise AttributeError(f"BatchedPoolVecEnv has no attribute {attr_name!r}")
        return [getattr(self, attr_name) for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in idx]
        fn = getattr(self, method_name, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"BatchedPoolVecEnv has no method {method_name!r}")
        out = fn(*method_args, **method_kwargs)
        return [out for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
