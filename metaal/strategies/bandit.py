"""Active learning by learning (ALBL): an EXP4.P bandit that learns which heuristic to follow."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from metaal.errors import ConfigError
from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, get, register

DEFAULT_EXPERTS = ("margin", "coreset", "density", "random")


@register("albl")
class ActiveLearningByLearning(Strategy):
    """Active learning by learning: EXP4.P over heuristics with an importance-weighted reward.

    Each *expert* (a heuristic; default ``margin``, ``coreset``, ``density``, ``random``) recommends
    one unlabeled item, ``xi_i`` a one-hot vector over the ``K`` unlabeled items (the arms). The
    query distribution mixes the experts by their weights ``w`` with a uniform floor
    ``p_min = gamma / K`` (``gamma`` default 0.1)::

        p(j) = (1 - K p_min) * sum_i w_i xi_i(j) / sum_i w_i + p_min

    and the item is drawn from ``p``. Once its label is in and the model refitted, the reward is
    IW-ACC, the importance-weighted accuracy of the current model on all items this bandit
    queried: ``r = sum_t W_t 1[f(x_t) = y_t] / sum_t K_t`` with ``W_t = 1 / p_t(x_t)``, an
    unbiased estimate of the model's accuracy on the unlabeled pool (clipped to [0, 1]; the paper
    divides by ``n T`` because it samples the whole pool, labeled items included). EXP4.P then
    updates, for the queried arm ``a``::

        yhat_i = r xi_i(a) / p(a),   vhat_i = sum_j xi_i(j) / p(j)
        w_i <- w_i exp(K p_min / 2 * yhat_i + p_min / 2 * vhat_i sqrt(ln(N / delta) / (K T)))

    EXP4.P multiplies the reward term by ``p_min / 2`` too, which vanishes on pools of thousands
    of items (the weights would never move within a budget of 100); the factor ``K`` (so
    ``gamma / 2``) keeps the step size independent of the pool size, while the exploration bonus
    keeps EXP4.P's scale. ``T`` is ``state.budget`` (or 100).

    Only unlabeled items are arms, so ALBL never re-picks a labeled item (the paper's version
    samples the whole pool and takes known labels for free; here that is impossible by design).
    For ``k > 1`` the draw is repeated ``k`` times without replacement: each expert's batch of
    ``k`` recommendations is ranked and, at each draw, it recommends its first item not yet
    drawn. :meth:`reset` clears the weights and the history (called by ``simulate`` at the
    start of a run, and automatically when ``select`` sees a different state).

    The bandit's state (weights, query history, importance weights, pending update) is exposed by
    :meth:`get_state` / :meth:`set_state`, which :class:`~metaal.loop.ActiveLearner` saves with
    every query so that a resumed labeling session continues the same query order. ALBL owns no
    random generator: every draw uses the ``rng`` passed to :meth:`select`.

    Reference: Hsu & Lin, "Active learning by learning", AAAI 2015; EXP4.P: Beygelzimer,
    Langford, Li, Reyzin & Schapire, "Contextual bandit algorithms with supervised learning
    guarantees", AISTATS 2011.
    """

    name = "albl"
    has_score = False

    def __init__(self, experts: Sequence[str] = DEFAULT_EXPERTS, gamma: float = 0.1, delta: float = 0.1) -> None:
        experts = list(experts)
        if len(experts) < 2:
            raise ConfigError(f"albl needs at least 2 experts (got {experts})")
        if "albl" in experts:
            raise ConfigError("albl cannot be its own expert")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"albl: gamma (uniform exploration share) must be in (0, 1] (got {gamma})")
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"albl: delta must be in (0, 1) (got {delta})")
        self.expert_names = experts
        self.experts = [get(e) for e in experts]
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self, state: ALState | None = None, rng: np.random.Generator | None = None) -> None:
        """Clear the expert weights, the query history and the pending update."""
        self.weights = np.ones(len(self.experts))
        self._queried: list[int] = []  # pool positions queried by this bandit
        self._iw: list[float] = []  # their importance weights 1 / p
        self._arms_total = 0.0  # sum of K_t over the draws
        self._pending: list[tuple[np.ndarray, float, np.ndarray, int]] = []  # (xi[:, a], p_a, vhat, K)
        self._state_id: int | None = None if state is None else id(state)
        for e in self.experts:
            e.reset(state, rng)

    #: version of the dict written by :meth:`get_state`
    STATE_VERSION = 1

    def get_state(self) -> dict[str, Any]:
        """The bandit's mutable state as a JSON-serializable dict (arrays as lists of floats):
        ``weights`` ``(N,)``, ``queried`` (pool positions drawn by this bandit), ``iw`` (their
        importance weights), ``arms_total``, ``pending`` (the EXP4.P updates waiting for the
        labels of the last draws) and ``experts`` (each expert's own :meth:`get_state`)."""
        return {
            "version": self.STATE_VERSION,
            "expert_names": list(self.expert_names),
            "weights": [float(w) for w in self.weights],
            "queried": [int(i) for i in self._queried],
            "iw": [float(w) for w in self._iw],
            "arms_total": float(self._arms_total),
            "pending": [
                {"xi_a": [float(v) for v in xi_a], "p_a": float(p_a), "vhat": [float(v) for v in vhat], "K": int(K)}
                for xi_a, p_a, vhat, K in self._pending
            ],
            "experts": [e.get_state() for e in self.experts],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (after :meth:`reset`; the tie to the current
        ALState set by ``reset`` is kept).

        :raises ConfigError: a state of another version or other experts, or a malformed one;
            the bandit is left unchanged then.
        """
        if not isinstance(state, Mapping):
            raise ConfigError(f"albl: a state must be a dict, got {type(state).__name__}")
        if state.get("version") != self.STATE_VERSION:
            raise ConfigError(
                f"albl: cannot restore a state of version {state.get('version')!r} (expected {self.STATE_VERSION})"
            )
        if list(state.get("expert_names", [])) != list(self.expert_names):
            raise ConfigError(f"albl: the state is for experts {state.get('expert_names')}, not {self.expert_names}")
        n = len(self.experts)
        try:
            weights = np.asarray(state["weights"], dtype=np.float64)
            queried = [int(i) for i in state["queried"]]
            iw = [float(w) for w in state["iw"]]
            arms_total = float(state["arms_total"])
            pending = [
                (
                    np.asarray(p["xi_a"], dtype=np.float64),
                    float(p["p_a"]),
                    np.asarray(p["vhat"], dtype=np.float64),
                    int(p["K"]),
                )
                for p in state["pending"]
            ]
            experts = list(state["experts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"albl: malformed state ({type(exc).__name__}: {exc})") from None
        if weights.shape != (n,) or len(iw) != len(queried) or len(experts) != n:
            raise ConfigError(
                f"albl: malformed state (weights {weights.shape}, {len(queried)} queried, {len(iw)} iw, "
                f"{len(experts)} expert states; expected {n} experts)"
            )
        if any(xi.shape != (n,) or vh.shape != (n,) for xi, _, vh, _ in pending):
            raise ConfigError(f"albl: malformed state (a pending update does not have {n} experts)")
        for e, st in zip(self.experts, experts):
            e.set_state(st)
        self.weights = weights
        self._queried = queried
        self._iw = iw
        self._arms_total = arms_total
        self._pending = pending

    @property
    def expert_probabilities(self) -> np.ndarray:
        """Current normalized expert weights ``(N,)``."""
        return self.weights / self.weights.sum()

    def _reward(self, state: ALState) -> float:
        if not self._queried:
            return 0.0
        q = np.asarray(self._queried)
        correct = (state.pred[q] == state.labels[q]).astype(float)
        r = float(np.dot(np.asarray(self._iw), correct) / max(self._arms_total, 1.0))
        return min(max(r, 0.0), 1.0)

    def _update(self, state: ALState) -> None:
        """Apply EXP4.P's update for the draws of the previous ``select`` (their labels are in)."""
        if not self._pending:
            return
        keep = state.labeled_mask[np.asarray(self._queried)]
        if not keep.all():  # the caller did not label some of our picks: drop them
            self._queried = [i for i, ok in zip(self._queried, keep) if ok]
            self._iw = [w for w, ok in zip(self._iw, keep) if ok]
        r = self._reward(state)
        T = state.budget if state.budget else 100
        for xi_a, p_a, vhat, K in self._pending:
            bonus = np.sqrt(np.log(len(self.experts) / self.delta) / (K * T))
            yhat = r * xi_a / p_a
            p_min = self.gamma / K
            self.weights = self.weights * np.exp((K * p_min / 2.0) * yhat + (p_min / 2.0) * vhat * bonus)
            self.weights /= self.weights.max()  # rescale (the distribution is scale-free)
        self._pending = []

    # -- selection ----------------------------------------------------------------------------
    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        if self._state_id is not None and self._state_id != id(state):
            self.reset(state, rng)
        self._state_id = id(state)
        self._update(state)
        recs = [np.asarray(e.select(state, k, rng), dtype=np.int64).reshape(-1) for e in self.experts]
        pos = np.full(state.n_pool, -1, dtype=np.int64)
        free = unl.copy()
        chosen: list[int] = []
        for _ in range(k):
            K = len(free)
            pos[free] = np.arange(K)
            picks = np.array([next(int(i) for i in r if i not in chosen) for r in recs])
            xi = np.zeros((len(self.experts), K))
            xi[np.arange(len(self.experts)), pos[picks]] = 1.0
            p_min = self.gamma / K
            w = self.weights / self.weights.sum()
            p = (1.0 - K * p_min) * (w @ xi) + p_min
            p = p / p.sum()
            a = int(rng.choice(K, p=p))
            item = int(free[a])
            vhat = (xi / p[None, :]).sum(axis=1)
            self._pending.append((xi[:, a].copy(), float(p[a]), vhat, K))
            self._queried.append(item)
            self._iw.append(1.0 / float(p[a]))
            self._arms_total += K
            chosen.append(item)
            pos[free] = -1
            free = free[free != item]
        return np.asarray(chosen, dtype=np.int64)

    def __repr__(self) -> str:
        return f"ActiveLearningByLearning(experts={self.expert_names}, gamma={self.gamma})"
