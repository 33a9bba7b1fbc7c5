"""``oracle``: a simulation-only reference that reads the test labels.

It measures the headroom a query strategy could capture: at every pick it tries candidates and
keeps the one whose true label most raises the test score after the refit (the greedy one-step
oracle of Lu et al. 2023 and of the CDALBench benchmark, 2024). With ``random`` and ``oracle`` in
one comparison, ``norm_aulc = (AULC - random's) / (oracle's - random's)`` places every strategy on
a scale where random is 0 and the oracle 1.

It reads labels that no real labeling loop has (the pool's and the test set's), so it runs only
where :func:`metaal.loop.simulate` hands it the task (:meth:`GreedyOracle.bind_truth`); the
labeling session refuses it and ``--strategies all`` leaves it out.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from metaal import scores
from metaal.errors import ConfigError
from metaal.learners import Learner, make_learner
from metaal.state import ALState, Task
from metaal.strategies.base import Strategy, check_k, register

#: candidates tried per pick (a fixed-size random sample of the unlabeled pool)
ORACLE_SAMPLE = 20


def oracle_key(proba: np.ndarray, y: np.ndarray, metric: str = "accuracy") -> tuple[float, float]:
    """``(score, -log loss)`` of probabilities ``(n, C)`` against labels ``(n,)``: the oracle's key
    (the log loss breaks ties between candidates with the same accuracy or macro-F1)."""
    from sklearn.metrics import f1_score

    pred = scores.predicted_class(proba)
    if metric == "macro_f1":
        s = float(f1_score(y, pred, average="macro", zero_division=0))
    else:
        s = float(np.mean(pred == y))
    nll = float(-np.mean(np.log(proba[np.arange(len(y)), y])))
    return s, -nll


@register("oracle")
class GreedyOracle(Strategy):
    """Greedy one-step oracle (reads the test labels; simulation only).

    Each pick draws ``sample`` random unlabeled candidates (from the run's generator), refits a
    fresh copy of the run's learner on the labels so far plus each candidate with its true label,
    and keeps the candidate with the best test score (accuracy, or macro-F1 with
    ``metric="macro_f1"``), ties broken by the test log loss, then by sample order. A batch of
    ``k > 1`` scores each candidate of one sample of ``max(sample, 2k)`` alone and takes the best
    ``k`` (cheaper than a sequential greedy batch, and weaker: the picks may be redundant). Cost:
    ``sample`` refits and test predictions per pick, ``max(sample, 2k)`` per batch; logistic
    regression refits warm-start from the current model.

    :param sample: candidates tried per pick.
    :param metric: the test score to maximize (``accuracy`` or ``macro_f1``); :meth:`bind_truth`
        may set it from the protocol.
    """

    name = "oracle"
    has_score = False
    needs_model = False
    reads_truth = True

    def __init__(self, sample: int = ORACLE_SAMPLE, metric: str = "accuracy") -> None:
        if sample < 1:
            raise ConfigError(f"oracle sample must be >= 1 (got {sample})")
        self.sample = int(sample)
        self.metric = metric
        self._task: Task | None = None
        self._learner: Any = "logreg"

    def bind_truth(self, task: Task, learner: Any = "logreg", metric: str | None = None) -> None:
        """Give the oracle the task's pool and test labels and the run's learner (by
        :func:`metaal.loop.simulate`)."""
        self._task = task
        self._learner = learner
        if metric is not None:
            self.metric = metric

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        task = self._task
        if task is None or task.n_pool != state.n_pool:
            raise ConfigError(
                "oracle reads the test labels and runs only in simulation (metaal compare / evaluate, "
                "metaal.loop.simulate), which hands it the task"
            )
        k = check_k(k, state.n_pool - state.n_labeled)
        rng = rng if rng is not None else np.random.default_rng()
        labeled = state.labeled_mask.copy()
        if k > 1:  # a batch: every candidate of one larger sample scored alone, the best k taken
            unl = np.flatnonzero(~labeled)
            cand = rng.choice(unl, size=min(max(self.sample, 2 * k), len(unl)), replace=False)
            keys = [self._key(state, np.flatnonzero(labeled), int(c)) for c in cand]
            order = sorted(range(len(cand)), key=lambda i: keys[i], reverse=True)  # stable: sample order
            return np.asarray([int(cand[i]) for i in order[:k]], dtype=np.int64)
        unl = np.flatnonzero(~labeled)
        cand = rng.choice(unl, size=min(self.sample, len(unl)), replace=False)
        base = np.flatnonzero(labeled)
        best, best_key = int(cand[0]), (-np.inf, -np.inf)
        for c in cand:
            key = self._key(state, base, int(c))
            if key > best_key:
                best, best_key = int(c), key
        return np.asarray([best], dtype=np.int64)

    def _key(self, state: ALState, base: np.ndarray, c: int) -> tuple[float, float]:
        """The test score of the learner refitted on ``base`` plus candidate ``c`` with its true
        label. A learner that supports warm starts (logistic regression) starts from the current
        model when the candidate's class is already labeled (same classes: same solution up to the
        solver's tolerance, a few iterations instead of a full fit)."""
        task = self._task
        assert task is not None
        idx = np.append(base, c)
        cur = state.learner
        warm = (state.model_ready and hasattr(cur.estimator, "warm_start")
                and int(task.y_pool[c]) in set(cur.classes_.tolist()))
        if warm:
            lrn = Learner(copy.deepcopy(cur.estimator), task.n_classes, cur.name, warm_start=True)
            lrn.classes_ = cur.classes_.copy()
        else:
            lrn = make_learner(self._learner, task.n_classes, seed=int(task.seed))
        lrn.fit(task.X_pool[idx], task.y_pool[idx])
        return oracle_key(lrn.predict_proba(task.X_test), task.y_test, self.metric)

    def __repr__(self) -> str:
        return f"GreedyOracle(sample={self.sample}, metric={self.metric!r})"


__all__ = ["ORACLE_SAMPLE", "GreedyOracle", "oracle_key"]
