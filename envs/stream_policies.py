"""Stream policies beside :class:`metaal.envs.ThresholdStreamPolicy`, and the class-count-free
two-way view of ``metaal/Stream-v0`` that a learned stream policy acts on.

* :class:`VariableUncertaintyStreamPolicy` and :class:`SplitStreamPolicy`: the variable
  uncertainty and split strategies of Zliobaite, Bifet, Pfahringer and Holmes, "Active Learning
  With Drifting Streaming Data" (IEEE TNNLS 2014), with the estimated-budget manager of
  scikit-activeml's ``skactiveml.stream`` (1.0.1): the same decisions for the same sequence of
  top probabilities (tests/test_stream_policies.py checks it against scikit-activeml).
  ``budget`` is the fraction of items whose label may be requested, estimated over a sliding
  window of ``w`` items (``u_t = u_{t-1} (w - 1) / w + requested_t``; a request is allowed while
  ``u_t / w < budget``). Variable uncertainty requests iff the raw top probability is below a
  threshold ``theta`` (starting at 1) that shrinks by ``(1 - s)`` after a request and grows by
  ``(1 + s)`` after a prediction; split requests at random (with probability ``budget``) on a
  fraction ``v`` of the items and uses variable uncertainty on the others. When it does not
  request, the policy predicts the argmax class.
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

PREDICT, REQUEST = 0, 1


def _base(env: gym.Env) -> StreamEnv:
    return env.unwrapped if hasattr(env, "unwrapped") else env  # type: ignore[return-value]


class ZliobaiteBudget:
    """The estimated-budget state of Zliobaite et al. (2014) for one stream.

    :param budget: fraction of items that may be requested (``0 <= budget <= 1``).
    :param theta: initial threshold on the top probability.
    :param s: threshold step.
    :param w: window of the budget estimate.
    :param v: split only: fraction of items decided at random (``0``: variable uncertainty).
    :param seed: split only: seed of the ``RandomState`` (scikit-activeml's generator).
    """

    def __init__(self, budget: float, theta: float = 1.0, s: float = 0.01, w: int = 100, v: float = 0.0,
                 seed: int | None = 0) -> None:
        if not 0.0 <= budget <= 1.0:
            raise ConfigError(f"budget must be in [0, 1] (got {budget})")
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"v must be in [0, 1] (got {v})")
        self.budget, self.theta0, self.s, self.w, self.v, self.seed = float(budget), float(theta), float(s), int(w), \
            float(v), seed
        self.reset()

    def reset(self) -> None:
        self.theta = self.theta0
        self.u_t = 0.0
        self.rng = np.random.RandomState(self.seed)

    def decide(self, confidence: float) -> bool:
        """Whether to request the item whose top probability is ``confidence``; updates the state."""
        sample = False
        if self.u_t / self.w < self.budget:
            if self.v > 0.0 and self.v > self.rng.random_sample():
                sample = bool(self.rng.random_sample() <= self.budget)
            else:
                sample = bool(confidence < self.theta)
                self.theta *= (1.0 - self.s) if sample else (1.0 + self.s)
        self.u_t = self.u_t * ((self.w - 1) / self.w) + sample
        return sample


class _ZliobaiteStreamPolicy:
    """Request iff the budget state says so (on the raw top probability); else predict the argmax.
    The state restarts whenever the env is at the first item of an episode."""

    v = 0.0
    label = "vu"

    def __init__(self, budget: float, theta: float = 1.0, s: float = 0.01, w: int = 100, seed: int | None = 0) -> None:
        self.state = ZliobaiteBudget(budget, theta=theta, s=s, w=w, v=self.v, seed=seed)
        self.budget = float(budget)
        self.name = f"{self.label}{budget:g}"

    def __call__(self, obs: dict[str, np.ndarray], env: gym.Env) -> int:
        base = _base(env)
        if base.t == 0:
            self.state.reset()
        p = np.asarray(obs["proba"][: base.n_classes], dtype=np.float64)
        if self.state.decide(float(p.max())):
            return int(base.request_action)
        return int(np.argmax(p))


class VariableUncertaintyStreamPolicy(_ZliobaiteStreamPolicy):
    """Variable uncertainty (Zliobaite et al. 2014; scikit-activeml ``VariableUncertainty``)."""

    label = "vu"


class SplitStreamPolicy(_ZliobaiteStreamPolicy):
    """Split (Zliobaite et al. 2014; scikit-activeml ``Split`` with ``v``)."""

    label = "split"

    def __init__(self, budget: float, v: float = 0.1, theta: float = 1.0, s: float = 0.01, w: int = 100,
                 seed: int | None = 0) -> None:
        self.v = float(v)
        super().__init__(budget, theta=theta, s=s, w=w, seed=seed)


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
