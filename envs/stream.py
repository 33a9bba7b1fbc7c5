"""``metaal/Stream-v0``: stream-based active learning after Woodward & Finn, "Active One-shot
Learning" (NIPS 2016 Deep RL workshop).

Items arrive one at a time. For each, the agent either predicts its class (actions
``0..C-1``) or requests its label (action ``C``), where ``C = max_classes`` is fixed per
environment instance; datasets with fewer classes mask the extra class actions (a masked class
counts as a wrong prediction and sets ``info["invalid_action"]``). Rewards: ``+correct_reward``
for a right prediction, ``-wrong_penalty`` for a wrong one, ``-request_cost`` per request. The
learner (held in an :class:`~metaal.state.ALState` over the episode's items) is refitted on every
requested label; predicted items are never learned from (their label stays unknown).

The env is a thin wrapper of :class:`metaal.stream.StreamEpisode` (``env.episode``), the stream
core that the stream labeling session drives too: state, observation, reward and step live there.
The heuristics (:class:`ThresholdStreamPolicy` and the Zliobaite baselines) live in
:mod:`metaal.strategies.stream` and are re-exported here.

Observation ``Dict``:

* ``proba`` ``Box(0, 1, (C,))``: the current model's class probabilities for the arriving item
  (zeros for padded classes; uniform before any label);
* ``features`` ``Box((8,))``: top probability, margin, entropy / log C, distance to the nearest
  requested item / median pairwise distance (4 when none, clipped at 4), log(1 + requests) /
  log(1001), request rate so far, position in the episode (t / length), log C / log 100;
* ``action_mask`` ``MultiBinary(C + 1)``: real classes and the request action.

With ``cost_features=True`` (observation version ``stream-2``) ``features`` has 12 entries: the 8
above, then the smoothed top probability ``q = (n p + 1) / (n + C)`` (``n`` labels so far), the
request cost ``log(c / 0.001) / log(1000)`` (clipped to ``[0, 1]``: ``c`` from 0.001 to 1), the
wrong penalty ``log(1 + penalty) / log(101)`` and the expected-reward threshold
``(penalty - c) / (correct_reward + penalty)`` (clipped to ``[0, 1]``). With
``request_cost_range`` / ``wrong_penalty_range`` each episode draws its cost and penalty
log-uniformly in the range (training one policy for every cost setting); ``reset`` options
``request_cost`` and ``wrong_penalty`` pin them for one episode.

Version History
---------------

* v0 (observation ``stream-1``): 8 features, fixed costs.
* v0, ``cost_features=True`` (observation ``stream-2``, backward compatible: off by default): 12
  features, costs drawn per episode or pinned per reset.

Each episode draws a dataset, then ``episode_length`` of its rows in random order; features are
standardized with statistics of the whole dataset (no labels used).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metaal.envs._threads import blas_limit
from metaal.envs.collection import DatasetCollection, RenderModeError
from metaal.errors import ConfigError, DataError
from metaal.learners import make_learner
from metaal.state import standardize
from metaal.strategies.stream import ThresholdStreamPolicy
from metaal.stream import COST_FEATURES, STREAM_FEATURES, STREAM_OBS_VERSIONS, StreamEpisode, check_costs, feature_high

#: Default stream datasets (no ``METAAL_DATA`` needed).
DEFAULT_STREAM_DATASETS: tuple[str, ...] = (
    "sklearn:digits",
    "sklearn:wine",
    "sklearn:iris",
    "synth:blobs?n=400&d=5&c=4&sep=3.0&seed=4",
)
__all__ = ["COST_FEATURES", "DEFAULT_STREAM_DATASETS", "STREAM_FEATURES", "STREAM_OBS_VERSIONS", "StreamEnv",
           "ThresholdStreamPolicy"]


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo


def _check_range(name: str, r: Any) -> tuple[float, float] | None:
    if r is None:
        return None
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (low, high) pair (got {r!r})") from None
    if not 0 < lo <= hi:
        raise ConfigError(f"{name} must satisfy 0 < low <= high (got {r!r})")
    return lo, hi


class StreamEnv(gym.Env):
    """``metaal/Stream-v0``.

    :param datasets: a dataset collection (see :mod:`metaal.envs.collection`); every dataset must
        have at most ``max_classes`` classes.
    :param max_classes: ``C``; the request action is ``C``.
    :param episode_length: items per episode (fewer when the dataset is smaller).
    :param request_cost: cost of one label request (W&F: 0.05).
    :param wrong_penalty: penalty of a wrong prediction (W&F: 1).
    :param correct_reward: reward of a right prediction (W&F: 1).
    :param learner: learner name or estimator, refitted per requested label.
    :param blas_threads: BLAS threads during reset/step (see :mod:`metaal.envs._threads`).
    :param render_mode: None or ``"ansi"``.
    :param cost_features: add the 4 cost features (observation ``stream-2``).
    :param request_cost_range: ``(low, high)``: draw each episode's request cost log-uniformly.
    :param wrong_penalty_range: ``(low, high)``: draw each episode's wrong penalty log-uniformly.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    action_kind = "stream"

    def __init__(
        self,
        datasets: Any = None,
        max_classes: int = 10,
        episode_length: int = 100,
        request_cost: float = 0.05,
        wrong_penalty: float = 1.0,
        correct_reward: float = 1.0,
        learner: Any = "logreg",
        warm_start: bool = False,
        blas_threads: int | None = 1,
        render_mode: str | None = None,
        cost_features: bool = False,
        request_cost_range: tuple[float, float] | None = None,
        wrong_penalty_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.collection = DatasetCollection(DEFAULT_STREAM_DATASETS if datasets is None else datasets)
        if max_classes < 2:
            raise ConfigError(f"max_classes must be >= 2 (got {max_classes})")
        if episode_length < 1:
            raise ConfigError(f"episode_length must be >= 1 (got {episode_length})")
        check_costs(request_cost, wrong_penalty)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise RenderModeError(f"render_mode must be None or 'ansi' (got {render_mode!r})")
        self.max_classes = int(max_classes)
        self.episode_length = int(episode_length)
        self.request_cost = float(request_cost)
        self.wrong_penalty = float(wrong_penalty)
        self.correct_reward = float(correct_reward)
        self.learner_spec = learner
        self.warm_start = bool(warm_start)
        self.blas_threads = blas_threads
        self.render_mode = render_mode
        self.cost_features = bool(cost_features)
        self.request_cost_range = _check_range("request_cost_range", request_cost_range)
        self.wrong_penalty_range = _check_range("wrong_penalty_range", wrong_penalty_range)
        self._base_costs = (self.request_cost, self.wrong_penalty)
        self.obs_version = STREAM_OBS_VERSIONS[1] if self.cost_features else STREAM_OBS_VERSIONS[0]
        high = feature_high(self.cost_features)
        C = self.max_classes
        self.request_action = C
        self.observation_space = spaces.Dict(
            {
                "proba": spaces.Box(0.0, 1.0, shape=(C,), dtype=np.float32),
                "features": spaces.Box(0.0, high, shape=(len(high),), dtype=np.float32),
                "action_mask": spaces.MultiBinary(C + 1),
            }
        )
        self.action_space = spaces.Discrete(C + 1)
        self.episode: StreamEpisode | None = None
        self.y: np.ndarray = np.zeros(0, dtype=np.int64)
        self.rows: np.ndarray = np.zeros(0, dtype=np.int64)
        self.name = ""
        self.n_classes = 0

    # -- the episode's counts, read by policies and wrappers ---------------------------------------
    @property
    def state(self) -> Any:
        return None if self.episode is None else self.episode.state

    @property
    def t(self) -> int:
        return 0 if self.episode is None else self.episode.t

    @property
    def n_requests(self) -> int:
        return 0 if self.episode is None else self.episode.n_requests

    @property
    def n_predicted(self) -> int:
        return 0 if self.episode is None else self.episode.n_predicted

    @property
    def n_correct(self) -> int:
        return 0 if self.episode is None else self.episode.n_correct

    @property
    def total_reward(self) -> float:
        return 0.0 if self.episode is None else self.episode.total_reward

    def action_masks(self) -> np.ndarray:
        """Valid actions ``(C + 1,)`` bool (for sb3-contrib's MaskablePPO)."""
        assert self.episode is not None, "call reset() first"
        return self.episode.mask()

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self.episode is not None
        return self.episode.info(dataset=self.name, **extra)

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``options={"dataset": spec}`` pins the dataset, ``request_cost`` and
        ``wrong_penalty`` pin the costs of this episode."""
        with blas_limit(self.blas_threads):
            return self._reset(seed, options)

    def _reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"dataset", "request_cost", "wrong_penalty"}
        if unknown:
            raise ConfigError(
                f"unknown reset option(s) {sorted(unknown)} (known: dataset, request_cost, wrong_penalty)"
            )
        rng = self.np_random
        cost, pen = self._base_costs
        if self.request_cost_range is not None:
            cost = _log_uniform(rng, self.request_cost_range)
        if self.wrong_penalty_range is not None:
            pen = _log_uniform(rng, self.wrong_penalty_range)
        cost = float(options.get("request_cost", cost))
        pen = float(options.get("wrong_penalty", pen))
        check_costs(cost, pen)
        self.request_cost, self.wrong_penalty = cost, pen
        ds = (
            DatasetCollection(options["dataset"]).get(0, rng)
            if options.get("dataset") is not None
            else self.collection.sample(rng)
        )
        X = ds.require_features()
        if ds.n_classes > self.max_classes:
            raise DataError(f"{ds.name}: {ds.n_classes} classes exceed max_classes={self.max_classes}")
        rows = rng.permutation(ds.n)[: self.episode_length]
        self.rows = rows  # the episode's data rows in arrival order
        (Xs,) = standardize(X)  # whole-dataset statistics, no labels used
        self.name, self.n_classes = ds.name, ds.n_classes
        self.y = ds.y[rows].copy()
        learner = make_learner(self.learner_spec, ds.n_classes, seed=0, warm_start=self.warm_start)
        self.episode = StreamEpisode(Xs[rows], ds.n_classes, learner, classes=ds.classes, max_classes=self.max_classes,
                                     request_cost=cost, wrong_penalty=pen, correct_reward=self.correct_reward,
                                     cost_features=self.cost_features)
        return self.episode.observation(), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.episode is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self.episode.done:
            raise gym.error.ResetNeeded("the episode is over; call reset()")
        with blas_limit(self.blas_threads):
            try:
                a = int(np.asarray(action).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                a = -1
            reward, info = self.episode.step(a, int(self.y[self.episode.t]))
            info["dataset"] = self.name
            return self.episode.observation(), float(reward), self.episode.done, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.episode is None:
            return None
        ep = self.episode
        acc = ep.n_correct / ep.n_predicted if ep.n_predicted else float("nan")
        return (
            f"{self.name}: item {ep.t}/{ep.length}, {ep.n_requests} requests, "
            f"{ep.n_correct}/{ep.n_predicted} right (acc {acc:.3f}), reward {ep.total_reward:+.2f}\n"
        )
