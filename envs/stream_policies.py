"""The class-count-free two-way view of ``metaal/Stream-v0`` that a learned stream policy acts
on, and the stream baselines re-exported from :mod:`metaal.strategies.stream`.

* :class:`VariableUncertaintyStreamPolicy` and :class:`SplitStreamPolicy`: the variable
  uncertainty and split strategies of Zliobaite et al. (2014), as scikit-activeml's
  ``skactiveml.stream`` has them (defined in :mod:`metaal.strategies.stream`).
* :class:`StreamDecisionEnv`: a wrapper whose action is ``0`` (predict the most probable class) or
  ``1`` (request the label), whose observation is the ``features`` vector only (no per-class
  entry): a policy trained on it is free of the class count ``C`` and of any set size. The mask
  forbids predicting before the first label (the model is uniform then).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metaal.envs.stream import StreamEnv
from metaal.errors import ConfigError
from metaal.strategies.stream import (
    SplitStreamPolicy,
    VariableUncertaintyStreamPolicy,
    ZliobaiteBudget,
)

__all__ = ["PREDICT", "REQUEST", "SplitStreamPolicy", "StreamDecisionEnv", "VariableUncertaintyStreamPolicy",
           "ZliobaiteBudget"]

PREDICT, REQUEST = 0, 1


def _base(env: gym.Env) -> StreamEnv:
    return env.unwrapped if hasattr(env, "unwrapped") else env  # type: ignore[return-value]


class StreamDecisionEnv(gym.Wrapper):
    """``Stream-v0`` seen as a two-way decision: ``0`` predict the argmax class, ``1`` request.

    Observation: ``Box`` of the wrapped env's ``features`` (12 with ``cost_features=True``).
    :param normalize_reward: divide each reward by ``correct_reward + wrong_penalty`` of the
        episode (the best policy of an episode is unchanged; rewards of every penalty get one scale).
    """

    def __init__(self, env: gym.Env, normalize_reward: bool = False) -> None:
        super().__init__(env)
        base = _base(env)
        if not isinstance(base, StreamEnv):
            raise ConfigError("StreamDecisionEnv wraps metaal/Stream-v0")
        self.normalize_reward = bool(normalize_reward)
        self.observation_space = base.observation_space["features"]
        self.action_space = spaces.Discrete(2)
        self._obs: dict[str, np.ndarray] | None = None

    def action_masks(self) -> np.ndarray:
        """``(2,)`` bool: predicting is allowed once a label was requested."""
        return np.array([_base(self.env).n_requests > 0, True])

    def to_env_action(self, action: int, obs: dict[str, np.ndarray]) -> int:
        """The wrapped env's action for a two-way ``action`` on the full observation ``obs``."""
        base = _base(self.env)
        if int(action) == REQUEST:
            return int(base.request_action)
        return int(np.argmax(obs["proba"][: base.n_classes]))

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs["features"], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self._obs is not None, "call reset() first"
        a = int(np.asarray(action).reshape(-1)[0])
        base = _base(self.env)
        scale = (base.correct_reward + base.wrong_penalty) if self.normalize_reward else 1.0
        obs, r, term, trunc, info = self.env.step(self.to_env_action(a, self._obs))
        self._obs = obs
        return obs["features"], float(r) / max(scale, 1e-12), term, trunc, info
