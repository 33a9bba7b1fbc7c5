"""Rewards of the pool-based environments, written once: :func:`rewards_of` turns reward-split
accuracies into rewards for ``N`` steps at once (Pool-v0 and PoolBatch-v0 call it through
:func:`step_reward` with ``N = 1``, the batched environment with its ``N`` episodes).

Rewards use a **reward split** carved out of the pool, never the test split (DESIGN.md). Modes:

``margin_gain`` (default)
    ``(acc_r(S + a) - acc_r(S + m)) / headroom``: the gain in reward-split accuracy of labeling
    the agent's choice ``a`` over labeling margin's pick ``m`` at the same step. ``acc_r(S + a)``
    is the accuracy of the environment's refitted learner; ``acc_r(S + m)`` costs one extra
    (counterfactual) fit of a clone, skipped (reward exactly 0) when ``a == m``. ``headroom`` is
    the reward-split accuracy of a model trained on the whole query pool minus that of the initial
    model, floored at 0.05, so that rewards are comparable across datasets.
``acc_gain``
    ``acc_r(S + a) - acc_r(S)``: plain reward-split accuracy gain (not normalised).
``label_cost``
    ``-1`` per label until the reward-split accuracy reaches ``target_accuracy`` (as in LAL-RL,
    Konyushkova et al. 2018); the episode terminates when it does.

All functions take the :class:`~metaal.state.ALState` *after* the agent's labels were added.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from metaal.errors import ConfigError
from metaal.learners import Learner
from metaal.state import ALState

REWARD_MODES = ("margin_gain", "acc_gain", "label_cost")
HEADROOM_FLOOR = 0.05


@dataclass
class RewardSplit:
    """Held-out pool rows used only for rewards: ``X`` ``(n, d)`` standardized like the pool,
    ``y`` ``(n,)``. ``n`` may be 0 (no reward signal: every reward is 0)."""

    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return int(len(self.y))

    def accuracy(self, learner: Learner) -> float:
        """Accuracy of ``learner`` on the split (nan when empty)."""
        if self.n == 0:
            return float("nan")
        return float(np.mean(learner.predict(self.X) == self.y))


def check_mode(mode: str) -> str:
    if mode not in REWARD_MODES:
        raise ConfigError(f"unknown reward mode {mode!r} (known: {', '.join(REWARD_MODES)})")
    return mode


def counterfactual_accuracy(
    state: ALState, split: RewardSplit, remove: np.ndarray, add: np.ndarray, add_labels: np.ndarray
) -> float:
    """Reward-split accuracy of a clone of ``state.learner`` fitted on the labeled set with
    positions ``remove`` (m,) taken out and ``add`` (m',) labeled ``add_labels`` put in.

    With a warm-starting learner the clone starts from the current solution (one label away from
    the counterfactual one, so a few iterations suffice); otherwise it is fitted from scratch."""
    mask = state.labeled_mask.copy()
    mask[np.asarray(remove, dtype=np.int64)] = False
    idx = np.concatenate([np.flatnonzero(mask), np.asarray(add, dtype=np.int64)])
    y = np.concatenate([state.labels[mask], np.asarray(add_labels, dtype=np.int64)])
    lrn = copy.deepcopy(state.learner) if state.learner.warm_start else state.learner.clone()
    lrn.fit(state.X_pool[idx], y)
    return split.accuracy(lrn)


def headroom(
    X_pool: np.ndarray, y_pool: np.ndarray, learner: Learner, split: RewardSplit, initial_accuracy: float
) -> tuple[float, float]:
    """``(max(acc_r(full) - acc_r(initial), HEADROOM_FLOOR), acc_r(full))`` where ``full`` is a
    clone of ``learner`` fitted on the whole pool ``X_pool`` (n, d), ``y_pool`` (n,).
    Returns ``(HEADROOM_FLOOR, nan)`` for an empty split."""
    if split.n == 0:
        return HEADROOM_FLOOR, float("nan")
    lrn = learner.clone()
    lrn.fit(X_pool, y_pool)
    full = split.accuracy(lrn)
    return float(headroom_of(full, initial_accuracy)), full


def headroom_of(full_accuracy: "float | np.ndarray", initial_accuracy: "float | np.ndarray") -> np.ndarray:
    """``max(full - initial, HEADROOM_FLOOR)`` elementwise: the normaliser of ``margin_gain``."""
    return np.maximum(np.asarray(full_accuracy) - np.asarray(initial_accuracy), HEADROOM_FLOOR)


def rewards_of(
    mode: str,
    accuracy: np.ndarray,
    prev_accuracy: np.ndarray,
    margin_accuracy: np.ndarray,
    headroom_value: np.ndarray,
    target_accuracy: np.ndarray,
    n_labels: "int | np.ndarray" = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The rewards of ``N`` steps from reward-split accuracies (all arrays ``(N,)``): the one reward
    formula of every pool environment.

    :param accuracy: after the step; ``prev_accuracy``: before it.
    :param margin_accuracy: after labeling margin's picks instead (``margin_gain``; equal to
        ``accuracy`` where the agent took margin's picks).
    :param headroom_value: ``margin_gain``'s normaliser; ``target_accuracy``: ``label_cost``'s.
    :param n_labels: labels bought by the step (``label_cost``).
    :returns: ``(rewards, reached_target)``, each ``(N,)``.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    reached = np.zeros(acc.shape, dtype=bool)
    if mode == "acc_gain":
        return acc - prev_accuracy, reached
    if mode == "label_cost":
        return -1.0 * np.broadcast_to(n_labels, acc.shape).astype(np.float64), acc >= target_accuracy
    if mode == "margin_gain":
        return (acc - margin_accuracy) / headroom_value, reached
    raise ConfigError(f"unknown reward mode {mode!r} (known: {', '.join(REWARD_MODES)})")


@dataclass
class StepReward:
    """One step's reward and the reward-split accuracy after the step (nan without a split)."""

    reward: float
    accuracy: float
    reached_target: bool = False


def step_reward(
    mode: str,
    state: ALState,
    split: RewardSplit,
    action_idx: np.ndarray,
    margin_idx: np.ndarray,
    margin_labels: np.ndarray,
    prev_accuracy: float,
    headroom_value: float,
    target_accuracy: float | None = None,
) -> StepReward:
    """The reward of the step that just labeled pool positions ``action_idx`` (b,).

    :param state: the state after ``add_labels(action_idx, ...)`` and the refit.
    :param split: the reward split.
    :param margin_idx: margin's picks ``(b,)`` at the same step (before the labels were added).
    :param margin_labels: the oracle labels of ``margin_idx`` ``(b,)``.
    :param prev_accuracy: reward-split accuracy before the step.
    :param headroom_value: normaliser of ``margin_gain``.
    :param target_accuracy: ``label_cost``'s target.
    """
    action_idx = np.atleast_1d(np.asarray(action_idx, dtype=np.int64))
    margin_idx = np.atleast_1d(np.asarray(margin_idx, dtype=np.int64))
    if split.n == 0:
        return StepReward(0.0, float("nan"))
    acc = split.accuracy(state.learner)
    acc_m = acc
    if mode == "margin_gain" and set(action_idx.tolist()) != set(margin_idx.tolist()):
        acc_m = counterfactual_accuracy(state, split, action_idx, margin_idx, margin_labels)
    target = 1.0 if target_accuracy is None else target_accuracy
    r, reached = rewards_of(
        check_mode(mode), np.array([acc]), np.array([prev_accuracy]), np.array([acc_m]),
        np.array([headroom_value]), np.array([target]), len(action_idx),
    )
    return StepReward(float(r[0]), acc, bool(reached[0]))
