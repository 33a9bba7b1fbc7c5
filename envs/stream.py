"""``metaal/Stream-v0``: stream-based active learning after Woodward & Finn, "Active One-shot
Learning" (NIPS 2016 Deep RL workshop).

Items arrive one at a time. For each, the agent either predicts its class (actions
``0..C-1``) or requests its label (action ``C``), where ``C = max_classes`` is fixed per
environment instance; datasets with fewer classes mask the extra class actions (a masked class
counts as a wrong prediction and sets ``info["invalid_action"]``). Rewards: ``+correct_reward``
for a right prediction, ``-wrong_penalty`` for a wrong one, ``-request_cost`` per request. The
learner (held in an :class:`~metaal.state.ALState` over the episode's items) is refitted on every
requested label; predicted items are never learned from (their label stays unknown).

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

from metaal import scores
from metaal.envs._threads import blas_limit
from metaal.envs.collection import DatasetCollection, RenderModeError
from metaal.errors import ConfigError, DataError
from metaal.learners import make_learner
from metaal.observe import DIST_CLIP
from metaal.state import ALState, standardize

#: Default stream datasets (no ``METAAL_DATA`` needed).
DEFAULT_STREAM_DATASETS: tuple[str, ...] = (
    "sklearn:digits",
    "sklearn:wine",
    "sklearn:iris",
    "synth:blobs?n=400&d=5&c=4&sep=3.0&seed=4",
)
STREAM_FEATURES = (
    "top_prob",
    "margin",
    "entropy",
    "dist_labeled",
    "log_requests",
    "request_rate",
    "position",
    "log_classes",
)
COST_FEATURES = ("smoothed_top", "log_request_cost", "log_wrong_penalty", "bayes_threshold")
_HIGH = np.array([1, 1, 1, 4, 10, 1, 1, 10], dtype=np.float32)
_HIGH_COST = np.concatenate([_HIGH, np.ones(len(COST_FEATURES), dtype=np.float32)])
#: Observation versions: ``stream-1`` (8 features), ``stream-2`` (``cost_features=True``, 12).
STREAM_OBS_VERSIONS = ("stream-1", "stream-2")


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
        if request_cost < 0 or wrong_penalty < 0:
            raise ConfigError("request_cost and wrong_penalty must be >= 0")
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
        high = _HIGH_COST if self.cost_features else _HIGH
        self._high = high
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
        self.state: ALState | None = None
        self.y: np.ndarray = np.zeros(0, dtype=np.int64)
        self.t = 0
        self.name = ""
        self.n_classes = 0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.n_requests = self.n_predicted = self.n_correct = 0
        self.total_reward = 0.0

    # -- helpers ---------------------------------------------------------------------------------
    def _mask(self) -> np.ndarray:
        m = np.zeros(self.max_classes + 1, dtype=bool)
        m[: self.n_classes] = True
        m[self.request_action] = True
        return m

    def action_masks(self) -> np.ndarray:
        """Valid actions ``(C + 1,)`` bool (for sb3-contrib's MaskablePPO)."""
        return self._mask()

    def _obs(self) -> dict[str, np.ndarray]:
        st = self.state
        assert st is not None
        t = min(self.t, len(self.y) - 1)
        p = st.proba[t]
        C = self.n_classes
        proba = np.zeros(self.max_classes, dtype=np.float32)
        proba[:C] = p
        top, second = scores.top_two(p)
        ent = float(scores.entropy(p, normalized=True))
        if st.n_labeled:
            dist = float(min(st.min_dist_labeled()[t] / st.distance_scale(), DIST_CLIP))
        else:
            dist = 4.0
        f = np.array(
            [
                top,
                top - second,
                ent,
                dist,
                np.log1p(self.n_requests) / np.log(1001.0),
                self.n_requests / max(self.t, 1),
                self.t / len(self.y),
                np.log(C) / np.log(100.0),
            ],
            dtype=np.float32,
        )
        if self.cost_features:
            n, c, pen = self.n_requests, self.request_cost, self.wrong_penalty
            extra = np.array(
                [
                    (n * top + 1.0) / (n + C),
                    np.log(max(c, 1e-3) / 1e-3) / np.log(1000.0),
                    np.log1p(pen) / np.log(101.0),
                    (pen - c) / (self.correct_reward + pen) if self.correct_reward + pen > 0 else 0.0,
                ],
                dtype=np.float32,
            )
            f = np.concatenate([f, extra])
        return {
            "proba": np.clip(proba, 0.0, 1.0),
            "features": np.clip(f, 0.0, self._high),
            "action_mask": self._mask().astype(np.int8),
        }

    def _info(self, **extra: Any) -> dict[str, Any]:
        info = {
            "t": self.t,
            "n_requests": self.n_requests,
            "n_predicted": self.n_predicted,
            "n_correct": self.n_correct,
            "accuracy_predicted": self.n_correct / self.n_predicted if self.n_predicted else float("nan"),
            "request_rate": self.n_requests / max(self.t, 1),
            "dataset": self.name,
            "request_cost": self.request_cost,
            "wrong_penalty": self.wrong_penalty,
        }
        info.update(extra)
        return info

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
        if cost < 0 or pen < 0:
            raise ConfigError("request_cost and wrong_penalty must be >= 0")
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
        (Xs,) = standardize(X)  # whole-dataset statistics, no labels used
        self.name, self.n_classes = ds.name, ds.n_classes
        self.y = ds.y[rows].copy()
        learner = make_learner(self.learner_spec, ds.n_classes, seed=0, warm_start=self.warm_start)
        self.state = ALState(Xs[rows], ds.n_classes, learner, classes=ds.classes)
        self.t = 0
        self._reset_counts()
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self.t >= len(self.y):
            raise gym.error.ResetNeeded("the episode is over; call reset()")
        with blas_limit(self.blas_threads):
            return self._step(action)

    def _step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        assert self.state is not None
        try:
            a = int(np.asarray(action).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            a = -1
        t, label = self.t, int(self.y[self.t])
        invalid = not (0 <= a < self.n_classes or a == self.request_action)
        if a == self.request_action:
            reward = -self.request_cost
            self.n_requests += 1
            self.state.add_labels([t], [label])
            correct = None
        else:
            self.n_predicted += 1
            correct = bool(a == label)
            self.n_correct += int(correct)
            reward = self.correct_reward if correct else -self.wrong_penalty
        self.t += 1
        self.total_reward += reward
        terminated = self.t >= len(self.y)
        info = self._info(label=label, requested=a == self.request_action, correct=correct, invalid_action=invalid)
        return self._obs(), float(reward), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.state is None:
            return None
        acc = self.n_correct / self.n_predicted if self.n_predicted else float("nan")
        return (
            f"{self.name}: item {self.t}/{len(self.y)}, {self.n_requests} requests, "
            f"{self.n_correct}/{self.n_predicted} right (acc {acc:.3f}), reward {self.total_reward:+.2f}\n"
        )


class ThresholdStreamPolicy:
    """The fixed-threshold heuristic for ``metaal/Stream-v0``: predict the most probable class, or
    request the label when the (smoothed) top probability ``q`` is below a threshold.

    The learner's raw probabilities are over-confident after a handful of labels (a class never
    seen gets probability ~0), so by default the top probability ``p`` is shrunk towards uniform
    with the number ``n`` of labels requested so far: ``q = (n * p + 1) / (n + C)``
    (``smoothing=False``: ``q = p``).

    With ``threshold=None`` the threshold maximizes the expected reward under ``q``: predicting
    earns ``q * correct_reward - (1 - q) * wrong_penalty`` in expectation, requesting
    ``-request_cost``, so request iff
    ``q < (wrong_penalty - request_cost) / (correct_reward + wrong_penalty)``.
    """

    def __init__(self, threshold: float | None = None, smoothing: bool = True) -> None:
        self.threshold = threshold
        self.smoothing = bool(smoothing)
        self.name = "threshold" if threshold is None else f"threshold{threshold:g}"

    @staticmethod
    def _base(env: gym.Env) -> "StreamEnv":
        return env.unwrapped if hasattr(env, "unwrapped") else env  # type: ignore[return-value]

    def threshold_for(self, env: gym.Env) -> float:
        """The threshold in use on ``env`` (the expected-reward one when none was given)."""
        base = self._base(env)
        if self.threshold is not None:
            return float(self.threshold)
        return (base.wrong_penalty - base.request_cost) / (base.correct_reward + base.wrong_penalty)

    def confidence(self, obs: dict[str, np.ndarray], env: gym.Env) -> float:
        """``q``: the (smoothed) top probability of the arriving item."""
        base = self._base(env)
        p = float(np.max(obs["proba"][: base.n_classes]))
        if not self.smoothing:
            return p
        n = base.n_requests
        return (n * p + 1.0) / (n + base.n_classes)

    def __call__(self, obs: dict[str, np.ndarray], env: gym.Env) -> int:
        base = self._base(env)
        if base.n_requests == 0 or self.confidence(obs, env) < self.threshold_for(env):
            return int(base.request_action)
        return int(np.argmax(obs["proba"][: base.n_classes]))
