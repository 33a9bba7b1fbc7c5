"""The stream core: one stream of items as state, observation, reward and step.

Items arrive one at a time. For each, the agent either predicts its class (actions ``0..C-1``) or
requests its label (action ``C``, ``C = max_classes``), after Woodward & Finn, "Active One-shot
Learning" (2016). The learner (an :class:`~metaal.state.ALState` over the stream's items) is
refitted on every requested label; predicted items are never learned from.

:class:`StreamEpisode` is the one implementation. ``metaal/Stream-v0`` (:mod:`metaal.envs.stream`)
wraps it as a Gymnasium env, the stream heuristics (:mod:`metaal.strategies.stream`) and the
learned stream policy read it, and the stream labeling session
(:class:`metaal.loop.stream_session.StreamLearner`) drives it with a person's answers, so a policy
sees at deployment the very features it was trained on.

Observation (:meth:`StreamEpisode.observation`), a dict:

* ``proba`` ``(C,)``: the model's class probabilities for the arriving item (zeros for padded
  classes; uniform before any label);
* ``features`` ``(8,)`` (observation ``stream-1``): top probability, margin, entropy / log C,
  distance to the nearest requested item / median pairwise distance (4 when none, clipped at 4),
  log(1 + requests) / log(1001), request rate so far, position in the stream (t / length),
  log C / log 100; with ``cost_features=True`` (observation ``stream-2``) 12 entries: the 8, then
  the smoothed top probability ``q = (n p + 1) / (n + C)`` (``n`` labels so far), the request cost
  ``log(c / 0.001) / log(1000)`` (clipped to ``[0, 1]``), the wrong penalty
  ``log(1 + penalty) / log(101)`` and the expected-reward threshold
  ``(penalty - c) / (correct_reward + penalty)`` (clipped to ``[0, 1]``);
* ``action_mask`` ``(C + 1,)``: the real classes and the request action.

Reward of a step: ``+correct_reward`` for a right prediction, ``-wrong_penalty`` for a wrong one,
``-request_cost`` per request; ``None`` for a prediction whose true label is unknown (a real
stream: nobody checks the items the policy predicted).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from metaal import scores
from metaal.errors import ConfigError, LabelError
from metaal.learners import Learner
from metaal.observe import DIST_CLIP
from metaal.state import ALState

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
#: Observation versions: ``stream-1`` (8 features), ``stream-2`` (``cost_features=True``, 12).
STREAM_OBS_VERSIONS = ("stream-1", "stream-2")
FEATURE_HIGH = np.array([1, 1, 1, 4, 10, 1, 1, 10], dtype=np.float32)
FEATURE_HIGH_COST = np.concatenate([FEATURE_HIGH, np.ones(len(COST_FEATURES), dtype=np.float32)])


def feature_high(cost_features: bool) -> np.ndarray:
    """Upper bounds of the ``features`` vector, ``(8,)`` or ``(12,)`` (lower bounds are 0)."""
    return FEATURE_HIGH_COST if cost_features else FEATURE_HIGH


def smoothed_top(top: float, n_requests: int, n_classes: int) -> float:
    """``q = (n p + 1) / (n + C)``: the top probability ``p`` shrunk towards uniform while few
    labels (``n``) exist (the ``smoothed_top`` feature; the threshold heuristic's confidence)."""
    return (n_requests * top + 1.0) / (n_requests + n_classes)


def bayes_threshold(request_cost: float, wrong_penalty: float, correct_reward: float) -> float:
    """The expected-reward threshold ``(penalty - cost) / (reward + penalty)``: predicting pays in
    expectation iff the confidence is above it."""
    return (wrong_penalty - request_cost) / (correct_reward + wrong_penalty)


def check_costs(request_cost: float, wrong_penalty: float) -> None:
    if not (np.isfinite(request_cost) and np.isfinite(wrong_penalty)) or request_cost < 0 or wrong_penalty < 0:
        raise ConfigError(
            f"request_cost and wrong_penalty must be finite and >= 0 (got {request_cost}, {wrong_penalty})"
        )


class StreamEpisode:
    """One stream: ``X`` ``(n, d)`` arrives row by row, ``t`` is the arriving row.

    :param X: the stream's features in arrival order, already standardized, ``(n, d)``.
    :param n_classes: ``C_real``, the dataset's classes (at most ``max_classes``).
    :param learner: a fresh :class:`~metaal.learners.Learner`, refitted on every request.
    :param classes: class names ``(C_real,)`` (optional).
    :param max_classes: ``C``: the request action is ``C``; classes above ``n_classes`` are masked.
    :param request_cost: cost of one label request.
    :param wrong_penalty: penalty of a wrong prediction.
    :param correct_reward: reward of a right prediction.
    :param cost_features: 12 features (``stream-2``) instead of 8 (``stream-1``).
    """

    def __init__(
        self,
        X: np.ndarray,
        n_classes: int,
        learner: Learner,
        classes: np.ndarray | None = None,
        *,
        max_classes: int | None = None,
        request_cost: float = 0.05,
        wrong_penalty: float = 1.0,
        correct_reward: float = 1.0,
        cost_features: bool = False,
    ) -> None:
        C = int(n_classes if max_classes is None else max_classes)
        if n_classes < 2 or n_classes > C:
            raise ConfigError(f"a stream needs 2 to max_classes={C} classes (got {n_classes})")
        check_costs(float(request_cost), float(wrong_penalty))
        self.state = ALState(X, int(n_classes), learner, classes=classes)
        self.length = self.state.n_pool
        self.n_classes = int(n_classes)
        self.max_classes = C
        self.request_action = C
        self.request_cost = float(request_cost)
        self.wrong_penalty = float(wrong_penalty)
        self.correct_reward = float(correct_reward)
        self.cost_features = bool(cost_features)
        self.obs_version = STREAM_OBS_VERSIONS[1] if self.cost_features else STREAM_OBS_VERSIONS[0]
        self.high = feature_high(self.cost_features)
        self.t = 0
        self.n_requests = self.n_predicted = self.n_correct = self.n_checked = 0
        self.total_reward = 0.0

    @property
    def done(self) -> bool:
        return self.t >= self.length

    def mask(self) -> np.ndarray:
        """Valid actions ``(C + 1,)`` bool: the real classes and the request action."""
        m = np.zeros(self.max_classes + 1, dtype=bool)
        m[: self.n_classes] = True
        m[self.request_action] = True
        return m

    def proba(self) -> np.ndarray:
        """The model's class probabilities ``(n_classes,)`` for the arriving item."""
        return self.state.proba[min(self.t, self.length - 1)]

    def prediction(self) -> int:
        """The model's most probable class for the arriving item."""
        return int(np.argmax(self.proba()))

    def features(self) -> np.ndarray:
        """The ``(8,)`` or ``(12,)`` features of the arriving item (module docstring)."""
        st, t, C = self.state, min(self.t, self.length - 1), self.n_classes
        p = st.proba[t]
        top, second = scores.top_two(p)
        dist = float(min(st.min_dist_labeled()[t] / st.distance_scale(), DIST_CLIP)) if st.n_labeled else DIST_CLIP
        f = [top, top - second, float(scores.entropy(p, normalized=True)), dist,
             np.log1p(self.n_requests) / np.log(1001.0), self.n_requests / max(self.t, 1), self.t / self.length,
             np.log(C) / np.log(100.0)]
        if self.cost_features:
            n, c, pen, win = self.n_requests, self.request_cost, self.wrong_penalty, self.correct_reward
            f += [smoothed_top(top, n, C), np.log(max(c, 1e-3) / 1e-3) / np.log(1000.0),
                  np.log1p(pen) / np.log(101.0), bayes_threshold(c, pen, win) if win + pen > 0 else 0.0]
        return np.clip(np.asarray(f, dtype=np.float32), 0.0, self.high)

    def observation(self) -> dict[str, np.ndarray]:
        """``{"proba": (C,), "features": (8|12,), "action_mask": (C + 1,) int8}`` of the arriving item."""
        proba = np.zeros(self.max_classes, dtype=np.float32)
        proba[: self.n_classes] = self.proba()
        return {"proba": np.clip(proba, 0.0, 1.0), "features": self.features(),
                "action_mask": self.mask().astype(np.int8)}

    def step(self, action: int, label: int | None) -> tuple[float | None, dict[str, Any]]:
        """Act on the arriving item and move to the next one.

        :param action: a class ``0..n_classes-1`` (predict) or ``request_action`` (request); any
            other value counts as a wrong prediction and sets ``info["invalid_action"]``.
        :param label: the item's true class; required for a request (it is learned from), ``None``
            for a prediction nobody checks (its reward is then ``None``).
        :returns: ``(reward, info)``.
        """
        if self.done:
            raise LabelError("the stream is over")
        t = self.t
        invalid = not (0 <= action < self.n_classes or action == self.request_action)
        correct: bool | None = None
        if action == self.request_action:
            if label is None:
                raise LabelError("a requested item needs its label")
            reward: float | None = -self.request_cost
            self.n_requests += 1
            self.state.add_labels([t], [int(label)])
        else:
            self.n_predicted += 1
            if label is None:
                reward = None
            else:
                self.n_checked += 1
                correct = bool(action == int(label))
                self.n_correct += int(correct)
                reward = self.correct_reward if correct else -self.wrong_penalty
        self.t += 1
        if reward is not None:
            self.total_reward += reward
        return reward, self.info(label=label, requested=action == self.request_action, correct=correct,
                                 invalid_action=invalid)

    def info(self, **extra: Any) -> dict[str, Any]:
        """Counts so far: ``t``, requests, predictions, right predictions (of the checked ones),
        accuracy on the checked predictions, request rate, costs."""
        info = {
            "t": self.t,
            "n_requests": self.n_requests,
            "n_predicted": self.n_predicted,
            "n_correct": self.n_correct,
            "accuracy_predicted": self.n_correct / self.n_checked if self.n_checked else float("nan"),
            "request_rate": self.n_requests / max(self.t, 1),
            "request_cost": self.request_cost,
            "wrong_penalty": self.wrong_penalty,
        }
        info.update(extra)
        return info
