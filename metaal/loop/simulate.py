"""Simulated active learning: the oracle answers from known pool labels.

The same functions drive :func:`simulate`, the Gymnasium environments, imitation roll-outs and
the labeling session (:mod:`metaal.loop.session`): :func:`new_state` (an :class:`ALState` with its
initial labels fitted), :func:`strategy_rng` (the one generator a strategy gets for a whole run:
``reset`` and every ``select``), a strategy's ``select``, :func:`label_step` (label, refit,
evaluate; :func:`label_step_later` leaves the evaluation for later) and :func:`evaluate` on
held-out data; curves are :class:`Curve`. The batched environment (:mod:`metaal.envs.batched`)
fits ``N`` learners at once and so has its own refit, with the same state updates
(:meth:`ALState.add_labels`) and the same observation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from metaal import scores
from metaal.errors import ConfigError
from metaal.learners import Learner, make_learner
from metaal.state import ALState, Task
from metaal.stopping import DEFAULT_THRESHOLD, DEFAULT_WINDOW, StabilizingPredictions, draw_stop_set
from metaal.strategies import COLD_FALLBACK, Strategy, get, reads_truth, with_cold_start


def new_state(
    task: Task,
    learner: "str | Learner | Any" = "logreg",
    budget: int | None = None,
    seed: int = 0,
    initial: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> ALState:
    """An :class:`ALState` over ``task``'s pool with the initial set labeled and the learner fitted
    (one fit, on a fresh learner seeded with ``seed``).

    :param initial: pool positions of the initial set (default ``task.initial``).
    :param labels: their labels (default: the pool labels ``task.y_pool[initial]``); the labeling
        session passes the annotator's answers. With an explicit ``initial`` the caller checks the
        budget (:meth:`Task.check_budget`).
    """
    if initial is None:
        initial = task.initial
        if budget is not None:
            task.check_budget(budget)
    initial = np.asarray(initial, dtype=np.int64)
    labels = task.y_pool[initial] if labels is None else np.asarray(labels, dtype=np.int64)
    lrn = make_learner(learner, task.n_classes, seed=seed)
    state = ALState(task.X_pool, task.n_classes, lrn, budget=budget, classes=task.classes)
    state.initialize(initial, labels)
    return state


def evaluate(learner: Learner, X: np.ndarray, y: np.ndarray, macro_f1: bool = True) -> tuple[float, float]:
    """Accuracy and macro-F1 of ``learner`` on ``X`` (n, d), ``y`` (n,); nan without rows, and
    macro-F1 nan when not asked for (``macro_f1=False``: accuracy only, cheaper)."""
    from sklearn.metrics import f1_score

    if len(y) == 0:
        return float("nan"), float("nan")
    pred = learner.predict(X)
    acc = float(np.mean(pred == y))
    f1 = float(f1_score(y, pred, average="macro", zero_division=0)) if macro_f1 else float("nan")
    return acc, f1


def label_step(
    state: ALState, idx: np.ndarray, labels: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    macro_f1: bool = True,
) -> tuple[float, float]:
    """The one labeling step of every loop: label pool positions ``idx`` (b,) with ``labels``
    (b,), refit the learner, evaluate it on ``X_test``, ``y_test``; returns ``(accuracy,
    macro_f1)`` (:func:`evaluate`). Used by :func:`simulate`, the pool environments and the
    labeling session."""
    return label_step_later(state, idx, labels, X_test, y_test, macro_f1)()


def label_step_later(
    state: ALState, idx: np.ndarray, labels: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    macro_f1: bool = True,
) -> Callable[[], tuple[float, float]]:
    """:func:`label_step` with the evaluation left for later: label pool positions ``idx`` (b,)
    with ``labels`` (b,) and refit now; returns a function that evaluates the model just fitted
    on ``X_test``, ``y_test`` (:func:`evaluate`). The labeling session hands out the next item
    first, then evaluates; the caller must run the function before the learner is refitted again
    (it evaluates the learner object, which the next refit changes)."""
    state.add_labels(idx, labels)
    learner = state.learner

    def evaluation() -> tuple[float, float]:
        return evaluate(learner, X_test, y_test, macro_f1)

    return evaluation


class CurveMetrics:
    """AULC and final accuracy of anything with an ``accuracy`` array ``(steps + 1,)``."""

    accuracy: np.ndarray

    @property
    def aulc(self) -> float:
        """Area under the learning curve: mean test accuracy from the initial set to the budget."""
        return float(np.mean(self.accuracy))

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])


@dataclass
class Curve(CurveMetrics):
    """A learning curve, the one curve type of simulations and environment roll-outs: one point
    per labeling step, the initial set included.

    ``n_labeled``, ``accuracy`` and ``macro_f1`` have shape ``(steps + 1,)`` (``macro_f1`` nan
    where not measured); ``queried`` the pool positions labeled, in order. Environment roll-outs
    (:func:`metaal.envs.policies.evaluate_policy`) also fill ``reward_accuracy`` ``(steps + 1,)``,
    ``rewards`` ``(steps,)`` and ``invalid_actions``.

    A simulation also records the stabilizing-predictions stopping rule
    (:class:`~metaal.stopping.StabilizingPredictions`): ``stop_labels``, the number of labels at
    which it first fired (None if it never did within the budget), ``stop_accuracy``, the test
    accuracy there (nan if it never fired), and ``stop_kappa``, the kappa of every refit.

    From zero initial labels (the cold start) a strategy that needs a model lets a model-free one
    pick until two classes are labeled (:class:`~metaal.strategies.ColdStart`): ``cold_picks``
    counts those items and ``cold_fallback`` names that strategy ("" when it never picked).
    ``guard_picks``: the picks where a learned policy's deployment guard deferred to margin
    (:class:`metaal.agents.LearnedStrategy`; 0 for every other strategy).
    """

    dataset: str
    strategy: str
    seed: int
    n_labeled: np.ndarray
    accuracy: np.ndarray
    macro_f1: np.ndarray
    query_seconds: float = 0.0
    queried: list[int] = field(default_factory=list)
    reward_accuracy: np.ndarray | None = None
    rewards: np.ndarray | None = None
    invalid_actions: int = 0
    stop_labels: int | None = None
    stop_accuracy: float = float("nan")
    stop_kappa: list[float] = field(default_factory=list)
    cold_picks: int = 0
    cold_fallback: str = ""
    guard_picks: int = 0

    @property
    def aulc_f1(self) -> float:
        """Area under the macro-F1 curve (the headline of the imbalanced protocol)."""
        return float(np.mean(self.macro_f1))

    @property
    def total_reward(self) -> float:
        """Sum of the rewards of a roll-out (0 for a simulation)."""
        return 0.0 if self.rewards is None else float(np.sum(self.rewards))

    @property
    def seconds_per_query(self) -> float:
        n = max(len(self.queried), 1)
        return self.query_seconds / n


def strategy_rng(seed: int) -> np.random.Generator:
    """The generator handed to a strategy in run ``seed`` (independent of the split's stream)."""
    return np.random.default_rng([int(seed), 0x5EED])


def simulate(
    task: Task,
    strategy: "Strategy | str",
    budget: int,
    learner: "str | Learner | Any" = "logreg",
    batch_size: int = 1,
    seed: int = 0,
    callback: Callable[[ALState, float, float], None] | None = None,
    stop_window: int = DEFAULT_WINDOW,
    stop_threshold: float = DEFAULT_THRESHOLD,
    cold_fallback: "Strategy | str" = COLD_FALLBACK,
    metric: str = "accuracy",
) -> Curve:
    """Run one active-learning experiment with a simulated oracle.

    :param task: the problem (pool, test, initial set).
    :param strategy: a :class:`Strategy` or a registry name.
    :param budget: labels to acquire after the initial set.
    :param batch_size: labels per step; the last step may be smaller.
    :param seed: seeds the strategy's generator (same seed, same curve, bit for bit on CPU).
    :param callback: called after every evaluation with ``(state, accuracy, macro_f1)``.
    :param stop_window: window of the stopping rule (:class:`~metaal.stopping.StabilizingPredictions`),
        evaluated on the stop set :func:`~metaal.stopping.draw_stop_set` ``(n_pool, seed)`` after every
        fit; it only records (``Curve.stop_labels``, ``stop_accuracy``): the curve goes on to the budget.
    :param stop_threshold: its threshold on the mean kappa.
    :param cold_fallback: the model-free strategy that picks for a strategy that needs a model
        while fewer than two classes are labeled (:class:`~metaal.strategies.ColdStart`).
    :param metric: the headline metric (``accuracy`` or ``macro_f1``); only a reference that
        reads the test labels (``oracle``) uses it, to pick what maximizes it.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
    strat = get(strategy) if isinstance(strategy, str) else strategy
    if reads_truth(strat):  # a simulation-only reference (oracle): it reads the task's labels
        strat.bind_truth(task, learner, metric)
    strat = with_cold_start(strat, cold_fallback)
    state = new_state(task, learner, budget=budget, seed=seed)
    rng = strategy_rng(seed)
    strat.reset(state, rng)
    accs, f1s, ns = [], [], []
    rule = StabilizingPredictions(stop_window, stop_threshold)
    stop_set = draw_stop_set(state.n_pool, seed)  # its own generator: the strategy's stream is untouched
    stop_accuracy = float("nan")

    def record(a: float, f: float) -> None:
        nonlocal stop_accuracy
        accs.append(a)
        f1s.append(f)
        ns.append(state.n_labeled)
        was = rule.stopped
        # only real models count: from a cold start, the first model fitted on two classes begins
        if state.model_ready and rule.update(scores.predicted_class(state.proba[stop_set]), state.n_labeled) \
                and not was:
            stop_accuracy = float(a)
        if callback is not None:
            callback(state, a, f)

    record(*evaluate(state.learner, task.X_test, task.y_test))
    spent = 0.0
    queried: list[int] = []
    while state.n_queried < budget:
        k = min(batch_size, budget - state.n_queried)
        t0 = time.perf_counter()
        idx = np.asarray(strat.select(state, k, rng), dtype=np.int64).reshape(-1)
        spent += time.perf_counter() - t0
        if len(idx) != k or state.labeled_mask[idx].any():
            raise RuntimeError(f"strategy {strat.name} returned invalid items {idx.tolist()}")
        queried.extend(int(i) for i in idx)
        record(*label_step(state, idx, task.y_pool[idx], task.X_test, task.y_test))
    cold_picks = int(getattr(strat, "cold_picks", 0))  # a ColdStart's fallback picks (0 without one)
    return Curve(
        dataset=task.name,
        strategy=getattr(strat, "name", str(strategy)),
        seed=seed,
        n_labeled=np.asarray(ns),
        accuracy=np.asarray(accs),
        macro_f1=np.asarray(f1s),
        query_seconds=spent,
        queried=queried,
        stop_labels=rule.stop_at,
        stop_accuracy=stop_accuracy,
        stop_kappa=list(rule.kappas),
        cold_picks=cold_picks,
        cold_fallback=str(strat.fallback.name) if cold_picks else "",
        guard_picks=int(getattr(strat, "guard_picks", 0)),
    )
