"""``BatchedPoolVecEnv``: ``N`` Pool-v0 episodes stepped in lockstep on one batched learner.

An SB3 :class:`~stable_baselines3.common.vec_env.VecEnv` with the observation and action spaces of
``metaal/Pool-v0`` (:class:`metaal.envs.pool.PoolEnv`: the same :class:`~metaal.observe.Observer`,
the same clipping, the same ``info`` keys, ``action_masks()`` for sb3-contrib's MaskablePPO).
Instead of ``N`` scikit-learn refits per step, the ``N`` learners are one
:class:`~metaal.torch_learners.BatchedLogReg` (scikit-learn's ``LogisticRegression(C=1)``
objective, warm-started), fitted on the GPU when there is one.

Rounds: the ``N`` episodes of a round share one dataset (drawn from the collection with the
environment's round generator) and one budget; each episode draws its own split, reward split and
initial set (:func:`metaal.envs.collection.sample_task`) and its random candidates from its own
generator. With equal budgets the episodes end together; then every environment is auto-reset into
the next round (``infos[i]["terminal_observation"]`` holds the last observation, as SB3 expects).
An episode that terminates early (``label_cost`` reaching its target) restarts on the same dataset
and is truncated (``infos[i]["TimeLimit.truncated"]``) when the round ends.

Rewards follow :mod:`metaal.envs.rewards` (same modes, headroom and floor): ``margin_gain``'s
counterfactual fits (one per episode whose action differs from margin's pick) run in the same
batched fit as the ``N`` real ones.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from metaal.errors import ConfigError, DataError
from metaal.learners import PROBA_FLOOR
from metaal.observe import N_CANDIDATE_FEATURES, N_GLOBAL_FEATURES, Observation, Observer, take_candidates
from metaal.state import ALState, Task

from metaal.envs.collection import DatasetCollection, sample_task
from metaal.envs.pool import _CAND_HIGH, _GLOB_HIGH, _budget_spec
from metaal.envs.rewards import HEADROOM_FLOOR, RewardSplit, check_mode


def pool_spaces(k: int) -> tuple[spaces.Dict, spaces.Discrete]:
    """The observation and action spaces of ``metaal/Pool-v0`` with ``K = k`` candidates."""
    obs = spaces.Dict(
        {
            "candidates": spaces.Box(
                low=0.0, high=np.tile(_CAND_HIGH, (k, 1)), shape=(k, N_CANDIDATE_FEATURES), dtype=np.float32
            ),
            "global": spaces.Box(low=0.0, high=_GLOB_HIGH, shape=(N_GLOBAL_FEATURES,), dtype=np.float32),
            "action_mask": spaces.MultiBinary(k),
        }
    )
    return obs, spaces.Discrete(k)


def _sorted_quantiles(a: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """``np.quantile(a, qs, axis=1).T`` (method "linear") of rows ``a`` ``(N, m)`` that are
    already sorted, ``(N, len(qs))``: numpy's virtual index and interpolation formulas, without
    its partition."""
    m = a.shape[1]
    out = np.empty((a.shape[0], len(qs)))
    for j, q in enumerate(qs):
        virt = (m - 1) * np.float64(q)  # numpy's virtual index for "linear"
        if virt >= m - 1:
            lo = hi = m - 1
        else:
            lo = int(np.floor(virt))
            hi = lo + 1
        g = virt - np.floor(virt)
        x0, x1 = a[:, lo], a[:, hi]
        diff = x1 - x0
        out[:, j] = (x1 - diff * (1 - g)) if g >= 0.5 else (x0 + diff * g)  # numpy's _lerp
    return out


class _SlotLearner:
    """The :class:`~metaal.learners.Learner` face of problem ``i`` of the batched model (so that
    ``state.learner.predict(X)`` works); fitting happens in the vector environment."""

    name = "torch_logreg_batched"

    def __init__(self, env: "BatchedPoolVecEnv", i: int, n_classes: int):
        self.env, self.i, self.n_classes = env, i, n_classes
        self.n_fits = 0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, C)`` probabilities of episode ``i``'s current model."""
        model = self.env._model
        W = model.coef_[self.i].to("cpu").double().numpy()  # type: ignore[union-attr]
        z = np.asarray(X, dtype=np.float64) @ W[:-1] + W[-1]
        present = model.present_[self.i].cpu().numpy()  # type: ignore[index]
        z = np.where(present[None, :], z, -np.inf)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p = np.maximum(p / p.sum(1, keepdims=True), PROBA_FLOOR)
        return p / p.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_SlotLearner":
        raise ConfigError("the learners of BatchedPoolVecEnv are fitted by the environment, not one by one")


class BatchedObserver:
    """:class:`~metaal.observe.Observer`'s observations for ``N`` episodes at once.

    Same features, candidates and random draws as ``Observer.observe(state, rng)`` called on every
    episode's state with its generator (the per-pool work -- margins, top-2 and argmax by a pass
    over the classes, the three heuristic orderings and the de-duplicated picks taken from them,
    ranks, quantiles of the sorted margins, global features -- is done on ``(N, n)`` arrays; only
    the random draws run per episode, with the very same ``rng.choice`` calls; episodes whose
    heuristic heads are too short, or ``K`` below the heuristics' picks, take the item-by-item
    path :meth:`_select_one`). Pool density and the distance scale are computed once per episode
    (:meth:`geometry`) and installed in the states' caches, so ``metaal.observe.pool_density``
    returns the same values. On the benchmark data the observations, rewards and accuracies are
    bit-identical to those of the episode-by-episode implementation this replaced.

    :param observer: the :class:`~metaal.observe.Observer` whose settings (K, mix) are used.
    """

    def __init__(self, observer: Observer):
        self.observer = observer

    @staticmethod
    def geometry(X: Any, n_ref: int = 1000, n_neighbours: int = 10, chunk: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Distance scale ``(N,)`` and pool density ``(N, n)`` of pools ``X`` ``(N, n, d)`` (a torch
        tensor), by the formulas of :meth:`ALState.distance_scale` and
        :func:`metaal.observe.pool_density` (same reference samples)."""
        import torch

        N, n, _ = X.shape
        scale = np.ones(N)
        dens = np.zeros((N, n))
        rng_s = np.random.default_rng(n)
        sel_s = torch.as_tensor(rng_s.choice(n, size=min(n, 1000), replace=False), device=X.device)
        rng_d = np.random.default_rng(n + 1)
        sel_d = torch.as_tensor(rng_d.choice(n, size=min(n, n_ref), replace=False), device=X.device)
        iu = torch.triu_indices(len(sel_s), len(sel_s), offset=1, device=X.device)
        nn = min(n_neighbours + 1, len(sel_d))

        M = iu.shape[1]
        iu_np = (iu[0].cpu().numpy(), iu[1].cpu().numpy())
        for s0 in range(0, N, chunk):
            Xc = X[s0 : s0 + chunk]
            if M:
                # median pairwise distance: squared distances by metaal.state.pairwise_dist's formula,
                # numpy's partition for the two middle values (much faster than torch.kthvalue);
                # sqrt only of those (monotone)
                S = Xc[:, sel_s]
                ss = (S * S).sum(-1)
                d2 = torch.baddbmm(ss[:, :, None] + ss[:, None, :], S, S.transpose(1, 2), alpha=-2.0)
                d2 = d2.clamp_(min=0.0).to("cpu", torch.float64).numpy()
                for j in range(d2.shape[0]):
                    v = d2[j][iu_np]
                    if M % 2:
                        med = float(np.sqrt(np.partition(v, M // 2)[M // 2]))
                    else:  # numpy's median: the mean of the two middle values
                        part = np.partition(v, [M // 2 - 1, M // 2])
                        med = float((np.sqrt(part[M // 2 - 1]) + np.sqrt(part[M // 2])) / 2)
                    scale[s0 + j] = med if med > 1e-12 else 1.0
            # density: the nn smallest of |r|^2 - 2 x.r (|x|^2 is the same along a row, so it is
            # added to the selected entries only), then clamp and sqrt as pairwise_dist does
            R = Xc[:, sel_d]
            sr = (R * R).sum(-1)[:, None, :]
            sx = (Xc * Xc).sum(-1)
            near = torch.empty(Xc.shape[0], n, nn, dtype=X.dtype, device=X.device)
            for r0 in range(0, n, 512):  # row blocks: the (rows, n_ref) scores stay in cache
                part = torch.baddbmm(sr, Xc[:, r0 : r0 + 512], R.transpose(1, 2), alpha=-2.0)
                near[:, r0 : r0 + 512] = torch.topk(part, nn, dim=-1, largest=False, sorted=True).values
            near = torch.sqrt((near + sx[..., None]).clamp_(min=0.0))  # ascending
            out = near[..., 1:].mean(-1) if nn > 1 else near[..., 0]
            dens[s0 : s0 + chunk] = 1.0 / (1.0 + out.to("cpu", torch.float64).numpy() / scale[s0 : s0 + chunk, None])
        return scale, dens

    def observe(
        self,
        states: "list[ALState]",
        rngs: "list[np.random.Generator]",
        min_dist: np.ndarray,
        dens: np.ndarray,
        scale: np.ndarray,
        P: np.ndarray | None = None,
        Pt: np.ndarray | None = None,
        P_prev: np.ndarray | None = None,
    ) -> list[Observation]:
        """Observations of ``states`` (all over pools of the same size ``n``).

        :param min_dist: distance of every pool item to the nearest labeled one ``(N, n)``.
        :param dens: pool density ``(N, n)``; ``scale``: distance scale ``(N,)``.
        :param P: the states' pool probabilities stacked ``(N, n, C)``, when at hand.
        :param Pt: the same class-major ``(N, C, n)``, when at hand (faster top-2 and argmax).
        :param P_prev: the states' previous probabilities stacked ``(N, n, C)``, when every state
            has them at hand.

        The predicted classes of the pool ``(N, n)`` are left in ``self.last_pred``.
        """
        from metaal.observe import N_CANDIDATE_FEATURES as F

        ob = self.observer
        N, n, C = len(states), states[0].n_pool, states[0].n_classes
        K = ob.k
        labeled = np.stack([s.labeled_mask for s in states])
        n_unl = n - labeled.sum(1)
        P = np.stack([s.proba for s in states]) if P is None else P
        has_prev = np.array([s.prev_proba is not None for s in states])
        if P_prev is None and has_prev.any():
            P_prev = np.stack([s.prev_proba if s.prev_proba is not None else s.proba for s in states])
        if C == 2:
            top_all = np.maximum(P[..., 0], P[..., 1])
            marg = top_all - np.minimum(P[..., 0], P[..., 1])  # (N, n), as metaal.observe.margins
            pred_all = (P[..., 1] > P[..., 0]).astype(np.int64)
        elif C <= 16:
            # top two and first argmax by a pass over the classes: the same numbers as
            # np.partition / np.argmax (no arithmetic), without numpy's slow short-axis kernels
            Pc = Pt.transpose(1, 0, 2) if Pt is not None else P.transpose(2, 0, 1)  # (C, N, n)
            top_all = Pc[0].copy()
            second = np.full_like(top_all, -np.inf)
            pred_all = np.zeros(top_all.shape, dtype=np.int64)
            for c in range(1, C):
                x = Pc[c]
                np.maximum(second, np.minimum(top_all, x), out=second)
                pred_all[x > top_all] = c
                np.maximum(top_all, x, out=top_all)
            marg = top_all - second
        else:
            part = np.partition(P, -2, axis=2)
            top_all = part[..., -1]
            marg = top_all - part[..., -2]
            pred_all = np.argmax(P, axis=2)
        self.last_pred = pred_all
        L = ob.n_margin + ob.n_density + ob.n_kcenter
        keys = (
            np.where(labeled, np.inf, marg),
            np.where(labeled, np.inf, -((1.0 - marg) * dens)),
            np.where(labeled, np.inf, -min_dist),
        )
        out: list[Observation] = []
        cand_idx = np.full((N, K), -1, dtype=np.int64)
        flags_all = np.zeros((N, K, 4), dtype=np.float32)
        m_all = np.zeros(N, dtype=np.int64)
        unlabeled = ~labeled
        local_of = np.cumsum(unlabeled, axis=1) - 1  # pool position -> position among unlabeled
        # the first L items of each ordering (stable: ties keep pool order), for all episodes at once
        l_eff = int(min(L, max(int(n_unl.min()), 1)))
        heads = []
        for key in keys:
            part_idx = np.argpartition(key, l_eff - 1, axis=1)[:, :l_eff]
            thr = np.take_along_axis(key, part_idx, axis=1).max(axis=1)
            heads.append((key <= thr[:, None]) & unlabeled)
        takes = (ob.n_margin, ob.n_density, ob.n_kcenter)
        rows1 = np.arange(N)
        # each ordering's head, sorted (stable: ties keep pool order), padded with -1: (N, H)
        orders, slow = [], n_unl == 0
        for key, head in zip(keys, heads):
            cnt = head.sum(1)
            r, c = np.nonzero(head)
            pos = np.arange(len(r)) - (np.cumsum(cnt) - cnt)[r]
            H = max(int(cnt.max()), 1)
            Pm = np.full((N, H), -1, dtype=np.int64)
            Kv = np.full((N, H), np.inf)
            Pm[r, pos], Kv[r, pos] = c, key[r, c]
            orders.append(np.take_along_axis(Pm, np.argsort(Kv, axis=1, kind="stable"), axis=1))
            slow |= cnt < np.minimum(L, n_unl)  # fewer unlabeled items here than in other episodes
        if L > K:  # the K limit could cut a heuristic's picks short: keep the episode-wise path
            slow[:] = True
        # the heuristics' picks, for all episodes at once: an item joins when it is new and its
        # ordering has not yet added its quota; items already chosen just gain the flag
        member = np.zeros((N, n), dtype=bool)
        bits = np.zeros((N, n), dtype=np.uint8)
        added_all = []
        for flag, (O, n_take) in enumerate(zip(orders, takes)):
            valid = O >= 0
            Os = np.maximum(O, 0)
            is_new = valid & ~member[rows1[:, None], Os]
            before = np.cumsum(is_new, axis=1) - is_new
            visited = valid & (before < n_take)
            added = visited & is_new
            rv, cv = np.nonzero(visited)
            bits[rv, O[rv, cv]] |= np.uint8(1 << flag)
            ra, ca = np.nonzero(added)
            member[ra, O[ra, ca]] = True
            added_all.append(added)
        Ocat = np.concatenate(orders, axis=1)
        Acat = np.concatenate(added_all, axis=1)
        m_h = Acat.sum(1)
        sel = np.take_along_axis(Ocat, np.argsort(~Acat, axis=1, kind="stable"), axis=1)
        n_free = n_unl - m_h
        shifts = np.arange(3, dtype=np.uint8)
        for i in range(N):
            if slow[i]:
                if n_unl[i] > 0:
                    m_all[i] = self._select_one(i, keys, heads, unlabeled, local_of, L, rngs[i], cand_idx, flags_all)
                continue
            mh = int(m_h[i])
            cand_idx[i, :mh] = sel[i, :mh]
            flags_all[i, :mh, :3] = (bits[i, sel[i, :mh], None] >> shifts) & 1  # the three heuristic flags
            n_rand = min(K - mh, int(n_free[i]))
            if n_rand > 0:
                # the unlabeled positions (0..nu-1 among them) not chosen yet, increasing: the
                # same array as Observer.propose's np.setdiff1d(np.arange(nu), chosen)
                rest = np.delete(np.arange(int(n_unl[i])), local_of[i, sel[i, :mh]])
                draw = rngs[i].choice(rest, size=n_rand, replace=False)
                # back to pool positions: the first position whose local index reaches j
                cand_idx[i, mh : mh + n_rand] = np.searchsorted(local_of[i], draw, side="left")
                flags_all[i, mh : mh + n_rand, 3] = 1.0
            m_all[i] = mh + max(n_rand, 0)
        # candidate features, batched (padding rows use position 0 and are zeroed below)
        rows = np.arange(N)[:, None]
        safe = np.maximum(cand_idx, 0)
        p = P[rows, safe]  # (N, K, C)
        p_sorted = np.sort(p, axis=2)
        top = p_sorted[..., -1]
        mc = top - p_sorted[..., -2]
        pc = np.clip(p, 1e-12, 1)
        ent = -(pc * np.log(pc)).sum(2) / np.log(C)
        dis = np.zeros((N, K))
        if P_prev is not None:
            dis = 0.5 * np.abs(p - P_prev[rows, safe]).sum(2) * has_prev[:, None]
        marg_unl_sorted = np.sort(np.where(labeled, np.inf, marg), axis=1)
        rank = np.stack([np.searchsorted(marg_unl_sorted[i, : n_unl[i]], mc[i], side="left") for i in range(N)])
        rank = rank / np.maximum(n_unl, 1)[:, None]
        dist = np.minimum(min_dist[rows, safe] / scale[:, None], 4.0)
        dist[~np.isfinite(dist)] = 4.0
        dc = dens[rows, safe]
        counts = np.stack([np.bincount(s.y_labeled, minlength=C) for s in states]).astype(float)
        share = counts[rows, np.argmax(p, axis=2)] / np.maximum(counts.sum(1), 1.0)[:, None]
        feats = np.stack([top, mc, ent, dis, rank, dist, dc, share], axis=2)
        # global features
        if (n_unl == n_unl[0]).all() and n_unl[0] > 0:
            qs = _sorted_quantiles(marg_unl_sorted[:, : n_unl[0]], (0.1, 0.5, 0.9))
        else:
            qs = np.stack([
                np.quantile(marg_unl_sorted[i, : n_unl[i]], [0.1, 0.5, 0.9]) if n_unl[i] else np.zeros(3)
                for i in range(N)
            ])
        est = top_all.mean(axis=1)
        # everything at once, then one Observation (views) per episode
        valid = np.arange(K)[None, :] < m_all[:, None]  # (N, K)
        cf = np.zeros((N, K, F), dtype=np.float32)
        cf[..., :8] = feats
        cf[..., 8:] = flags_all
        cf[~valid] = 0.0
        tot = counts.sum(1)
        q = counts / np.maximum(tot, 1.0)[:, None]
        lab_ent = np.where(tot > 0, -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(1) / np.log(C), 0.0)
        n_lab = np.array([st.n_labeled for st in states], dtype=float)
        budget_used = np.array([min(st.n_queried / st.budget, 1.0) if st.budget else 0.0 for st in states])
        flip = np.zeros(N)
        has_pp = np.array([st.prev_pred is not None for st in states])
        if has_pp.any():
            pp = np.stack([st.prev_pred if st.prev_pred is not None else pred_all[j] for j, st in enumerate(states)])
            flip = np.where(has_pp, (pp != pred_all).mean(1), 0.0)
        G = np.stack(
            [budget_used, np.log1p(n_lab) / np.log(1001.0), np.full(N, np.log(C) / np.log(100.0)), lab_ent,
             est, qs[:, 0], qs[:, 1], qs[:, 2], flip, n_lab / n], axis=1,
        ).astype(np.float32)
        for i in range(N):
            out.append(Observation(cf[i], G[i], valid[i].copy(), cand_idx[i].copy()))
        return out


    def _select_one(
        self, i: int, keys: tuple, heads: list, unlabeled: np.ndarray, local_of: np.ndarray, L: int,
        rng: np.random.Generator, cand_idx: np.ndarray, flags_all: np.ndarray,
    ) -> int:
        """Observer.propose for episode ``i``, item by item (episodes whose heads are too short,
        or ``K`` below the heuristics' picks); fills ``cand_idx[i]`` / ``flags_all[i]``, returns m."""
        ob = self.observer
        K = ob.k
        unl = np.flatnonzero(unlabeled[i])
        nu = len(unl)
        chosen: dict[int, np.ndarray] = {}
        for flag, (key, head, n_take) in enumerate(zip(keys, heads, (ob.n_margin, ob.n_density, ob.n_kcenter))):
            row = key[i]
            cand = np.flatnonzero(head[i])
            if len(cand) < min(L, nu):
                cand = unl
            order = local_of[i, cand[np.argsort(row[cand], kind="stable")]]
            take_candidates(chosen, order, n_take, flag, K)
        free = np.ones(nu, dtype=bool)
        free[np.fromiter(chosen, dtype=np.int64)] = False
        rest = np.flatnonzero(free)
        n_rand = min(K - len(chosen), len(rest))
        if n_rand > 0:
            for j in rng.choice(rest, size=n_rand, replace=False):
                chosen[int(j)] = np.array([0, 0, 0, 1], dtype=np.float32)
        local = np.fromiter(chosen, dtype=np.int64)
        m = len(local)
        cand_idx[i, :m] = unl[local]
        flags_all[i, :m] = np.stack([chosen[int(j)] for j in local])
        return m


class BatchedPoolVecEnv(VecEnv):
    """``num_envs`` Pool-v0 episodes in lockstep on a batched torch logistic regression.

    :param num_envs: ``N`` parallel episodes.
    :param datasets: a dataset collection, as for Pool-v0 (one dataset per round).
    :param budget: labels per episode (int, or a ``(low, high)`` range drawn once per round).
    :param initial, k, reward, reward_frac, reward_cap, max_pool, target_accuracy: as for
        :class:`metaal.envs.pool.PoolEnvBase`.
    :param C: inverse L2 strength of the logistic regression (scikit-learn's default 1.0).
    :param device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``.
    :param seed: seeds the round generator and the per-episode generators.
    :param exact_observer: use :class:`~metaal.observe.Observer` episode by episode instead of the
        batched :class:`BatchedObserver` (slower; the two agree up to float rounding).
    :param threads: torch CPU threads while stepping (see :func:`metaal.torch_learners.cpu_threads`).
    """

    def __init__(
        self,
        num_envs: int = 8,
        datasets: Any = None,
        budget: "int | Sequence[int]" = 50,
        initial: int = 10,
        k: int = 32,
        reward: str = "margin_gain",
        reward_frac: float = 0.25,
        reward_cap: int = 500,
        max_pool: int | None = 2000,
        target_accuracy: float | None = None,
        C: float = 1.0,
        device: str = "auto",
        seed: int | None = None,
        exact_observer: bool = False,
        threads: int | None = 1,
    ) -> None:
        from metaal.torch_learners import BatchedLogReg, resolve_device

        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1 (got {num_envs})")
        if initial < 2:
            raise ConfigError(f"initial must be >= 2 (got {initial})")
        if not 0 <= reward_frac < 1:
            raise ConfigError(f"reward_frac must be in [0, 1) (got {reward_frac})")
        if target_accuracy is not None and not 0 < target_accuracy <= 1:
            raise ConfigError(f"target_accuracy must be in (0, 1] (got {target_accuracy})")
        self.collection = datasets if isinstance(datasets, DatasetCollection) else DatasetCollection(datasets)
        self.budget_range = _budget_spec(budget)
        self.initial, self.k = int(initial), int(k)
        self.reward_mode = check_mode(reward)
        self.reward_frac, self.reward_cap, self.max_pool = float(reward_frac), int(reward_cap), max_pool
        self.target_accuracy_opt = target_accuracy
        self.C = float(C)
        self.exact_observer = bool(exact_observer)
        self.threads = threads
        self.device = resolve_device(device)
        self.render_mode = None
        self.observer = Observer(k=self.k)
        self.batched_observer = BatchedObserver(self.observer)
        self._BatchedLogReg = BatchedLogReg
        self._model: Any = None
        obs_space, act_space = pool_spaces(self.k)
        super().__init__(num_envs, obs_space, act_space)
        self._seed_all(seed)
        self._actions: np.ndarray | None = None
        self.states: list[ALState] = []
        self.tasks: list[Task] = []
        self.splits: list[RewardSplit] = []
        self._obs: list[Observation] = []

    # -- seeding --------------------------------------------------------------------------------
    def _seed_all(self, seed: int | None) -> None:
        ss = np.random.SeedSequence(seed)
        kids = ss.spawn(self.num_envs + 1)
        self.round_rng = np.random.default_rng(kids[0])
        self.rngs = [np.random.default_rng(s) for s in kids[1:]]

    # -- episodes -------------------------------------------------------------------------------
    def _new_round(self) -> None:
        rng = self.round_rng
        self.dataset = self.collection.sample(rng)
        lo, hi = self.budget_range
        self.round_budget = lo if lo == hi else int(rng.integers(lo, hi + 1))
        self.round_step = 0
        N = self.num_envs
        self.states, self.tasks, self.splits = [None] * N, [None] * N, [None] * N  # type: ignore[list-item]
        self._obs = [None] * N  # type: ignore[list-item]
        self.budgets = np.zeros(N, dtype=np.int64)
        self.headroom = np.ones(N)
        self.full_accuracy = np.full(N, np.nan)
        self.target_accuracy = np.full(N, np.nan)
        self.reward_accuracy = np.full(N, np.nan)
        self.test_accuracy = np.full(N, np.nan)
        self._X = self._Xr = self._Xt = None
        self._min_dist = None
        self._P = self._Pt = self._P_prev = None
        self._start(np.arange(N))

    def _start(self, idx: np.ndarray) -> None:
        """Draw new episodes (tasks, initial fits, headroom) for environments ``idx`` on the round's
        dataset."""
        import torch

        tasks, splits = [], []
        for i in idx:
            task, split = sample_task(
                self.dataset, self.rngs[i], self.initial, self.max_pool, self.reward_frac, self.reward_cap
            )
            free = task.n_pool - len(task.initial)
            if free < 1:
                raise DataError(f"{task.name}: no unlabeled pool items left after the initial set")
            tasks.append(task)
            splits.append(split)
        C = len(self.dataset.classes)
        dev, dt = self.device, (torch.float64 if self.device.type == "cpu" else torch.float32)

        def stack(arrs: list[np.ndarray]) -> "torch.Tensor":
            return torch.as_tensor(np.stack(arrs), device=dev, dtype=dt)

        Xn, Xrn, Xtn = stack([t.X_pool for t in tasks]), stack([s.X for s in splits]), stack([t.X_test for t in tasks])
        if self._X is None:
            N = self.num_envs
            self._X = torch.zeros((N, *Xn.shape[1:]), device=dev, dtype=dt)
            self._Xr = torch.zeros((N, *Xrn.shape[1:]), device=dev, dtype=dt)
            self._Xt = torch.zeros((N, *Xtn.shape[1:]), device=dev, dtype=dt)
            self._y = np.zeros((N, Xn.shape[1]), dtype=np.int64)
            self._yr = np.zeros((N, Xrn.shape[1]), dtype=np.int64)
            self._yt = np.zeros((N, Xtn.shape[1]), dtype=np.int64)
            self._model = self._BatchedLogReg(C, C=self.C, device=self.device)
            self._model.coef_ = torch.zeros((N, Xn.shape[2] + 1, C), device=dev, dtype=dt)
            self._model.present_ = torch.ones((N, C), device=dev, dtype=torch.bool)
            self._model.prior_ = torch.full((N, C), 1.0 / C, device=dev, dtype=dt)
            self._model.use_prior_ = torch.zeros(N, device=dev, dtype=torch.bool)
        ti = self._sel(idx)
        self._X[ti], self._Xr[ti], self._Xt[ti] = Xn, Xrn, Xtn
        # class-major scoring wants (N, d, n) matrices: keep contiguous transposed copies
        self._XT = self._X.transpose(1, 2).contiguous()
        self._XrT = self._Xr.transpose(1, 2).contiguous()
        self._XtT = self._Xt.transpose(1, 2).contiguous()
        for j, i in enumerate(idx):
            task, split = tasks[j], splits[j]
            self.tasks[i], self.splits[i] = task, split
            self._y[i], self._yr[i], self._yt[i] = task.y_pool, split.y, task.y_test
            budget = min(self.round_budget, task.n_pool - len(task.initial))
            st = ALState(task.X_pool, C, _SlotLearner(self, int(i), C), budget=budget, classes=task.classes)  # type: ignore[arg-type]
            st.add_labels(task.initial, task.y_pool[task.initial], refit=False, record=False)
            st.n_initial = st.n_labeled
            self.states[i] = st
            self.budgets[i] = budget
        masks = np.stack([self.states[i].labeled_mask for i in idx])
        self._fit(idx, masks, first=True)
        acc = self._accuracy(self._XrT, self._yr, idx, rows=self._sel(idx))
        self.reward_accuracy[idx] = acc
        self.test_accuracy[idx] = self._accuracy(self._XtT, self._yt, idx, rows=self._sel(idx))
        self.headroom[idx] = 1.0
        self.full_accuracy[idx] = np.nan
        need_full = self.reward_mode == "margin_gain" or (
            self.reward_mode == "label_cost" and self.target_accuracy_opt is None
        )
        if need_full and self._Xr.shape[1] > 0:
            full = self._BatchedLogReg(C, C=self.C, device=self.device)
            every_row = np.ones((len(idx), self._X.shape[1]), bool)
            full.fit(self._X[ti], torch.as_tensor(self._y[idx], device=dev), every_row, init=None)
            pred = full.predict_tensor(self._Xr[ti]).cpu().numpy()
            fa = (pred == self._yr[idx]).mean(1)
            self.full_accuracy[idx] = fa
            self.headroom[idx] = np.maximum(fa - acc, HEADROOM_FLOOR)
        elif need_full:
            self.headroom[idx] = HEADROOM_FLOOR
        self.target_accuracy[idx] = (
            self.target_accuracy_opt if self.target_accuracy_opt is not None else 0.98 * self.full_accuracy[idx]
        )
        # geometry of the new pools: distance scale, density, distances to the labeled sets
        Xi = self._X[ti]
        scale, dens = BatchedObserver.geometry(Xi)
        if self._min_dist is None:
            self._md = torch.zeros(self._X.shape[:2], device=dev, dtype=dt)  # distances to the labeled sets
            # the numpy face of self._md: a view on the CPU (float64), a copy refreshed per update otherwise
            self._md_view = dev.type == "cpu" and dt == torch.float64
            self._pred = np.zeros(self._X.shape[:2], dtype=np.int64)
            self._min_dist = self._md.numpy() if self._md_view else np.zeros(self._X.shape[:2])
            self._dens = np.zeros((self.num_envs, Xi.shape[1]))
            self._scale = np.ones(self.num_envs)
            self._sq = torch.zeros(self._X.shape[:2], device=dev, dtype=dt)
        self._sq[ti] = (Xi * Xi).sum(-1)
        self._dens[idx], self._scale[idx] = dens, scale
        self._md[ti] = float("inf")
        init = np.stack([self.tasks[i].initial for i in idx])  # same initial size for all
        for c in range(init.shape[1]):
            self._update_min_dist(idx, init[:, c])
        for j, i in enumerate(idx):
            self.states[i]._scale = float(scale[j])
            self.states[i].cache["density"] = self._dens[i]
        self._observe(idx)

    def _sel(self, idx: np.ndarray) -> Any:
        """A torch index for environments ``idx``: a plain slice (a view, no copy) for all."""
        import torch

        if len(idx) == self.num_envs and np.array_equal(idx, np.arange(self.num_envs)):
            return slice(None)
        return torch.as_tensor(idx, device=self.device)

    def _update_min_dist(self, idx: np.ndarray, pos: np.ndarray, dots: Any = None) -> None:
        """Fold the distances to newly labeled pool positions ``pos`` (one per environment of
        ``idx``) into the distance to the labeled set (same formula as ``ALState``); ``dots``:
        the products ``x . x_p`` of every pool row with its new labeled row ``(k, n)`` when
        already at hand (:meth:`_fit` computes them in the same pass over the pool as the
        probabilities)."""
        import torch

        ti = self._sel(idx)
        Xi = self._X[ti]
        xp = Xi[torch.arange(len(idx), device=self.device), torch.as_tensor(pos, device=self.device)]  # (k, d)
        # (|x|^2 + |x_p|^2) - 2 x.x_p, as metaal.state.pairwise_dist (the factor -2 is exact)
        base = self._sq[ti] + (xp * xp).sum(-1)[:, None]
        if dots is None:
            d2 = torch.baddbmm(base[..., None], Xi, xp[:, :, None], alpha=-2.0)[..., 0]
        else:
            d2 = base.add_(dots, alpha=-2.0)
        d = torch.sqrt_(torch.clamp_(d2, min=0.0))
        if isinstance(ti, slice):
            torch.minimum(self._md, d, out=self._md)
        else:
            self._md[ti] = torch.minimum(self._md[ti], d)
        if not self._md_view:
            self._min_dist[idx] = self._md[ti].to("cpu", torch.float64).numpy()

    def _observe(self, idx: np.ndarray) -> None:
        if self.exact_observer:
            for i in idx:
                self._obs[i] = self.observer.observe(self.states[i], self.rngs[i])
            return
        all_envs = len(idx) == self.num_envs
        bo = self.batched_observer
        obs = bo.observe(
            [self.states[i] for i in idx], [self.rngs[i] for i in idx],
            self._min_dist[idx], self._dens[idx], self._scale[idx],
            P=self._P if all_envs else None, Pt=self._Pt if all_envs else None,
            P_prev=self._P_prev if all_envs else None,
        )
        self._pred[idx] = bo.last_pred  # argmax of every state's proba (ALState.pred)
        for j, i in enumerate(idx):
            self._obs[i] = obs[j]

    def _fit(
        self, idx: np.ndarray, masks: np.ndarray, first: bool, cf: tuple[np.ndarray, np.ndarray] | None = None,
        picks: np.ndarray | None = None,
    ) -> Any:
        """One batched fit of environments ``idx`` on ``masks`` (len(idx), n), plus the
        counterfactual problems ``cf = (env indices, masks)``; installs pool probabilities.

        :param picks: pool positions ``(len(idx),)`` labeled by this step: their products with
            every pool row, ``(len(idx), n)``, come back, computed in the same pass over the pool
            as the logits (one matrix product instead of two)."""
        import torch

        from metaal.torch_learners import gather_padded

        dev = self.device
        model = self._model
        ti = self._sel(idx)
        y = torch.as_tensor(self._y, device=dev)
        Xp, yp, wp = gather_padded(
            self._X, y, torch.as_tensor(masks, device=dev), source=None if isinstance(ti, slice) else ti
        )
        init = torch.zeros_like(model.coef_[ti]) if first else model.coef_[ti]
        n_main = len(idx)
        if cf is not None and len(cf[0]):
            ci = torch.as_tensor(cf[0], device=dev)
            Xc, yc, wc = gather_padded(self._X, y, torch.as_tensor(cf[1], device=dev), source=ci)
            Xp, yp, wp = torch.cat([Xp, Xc]), torch.cat([yp, yc]), torch.cat([wp, wc])
            init = torch.cat([init, model.coef_[ci]])
        fit = self._BatchedLogReg(model.n_classes, C=self.C, device=dev)
        fit.fit_padded(Xp, yp, wp, init=init)
        # keep the real problems in the persistent model; the counterfactual ones in self._cf
        for name in ("coef_", "present_", "prior_", "use_prior_"):
            getattr(model, name)[ti] = getattr(fit, name)[:n_main]
        self._cf = fit if cf is not None else None
        dots = None
        with torch.no_grad():
            if picks is None:
                logits_t = model._logits_t(self._XT[ti], ti, transposed=True)
            else:  # [W | x_pick]^T X^T: the logits (N, C, n) and the products x . x_pick (N, n)
                C = model.n_classes
                Wt = model.coef_[ti].transpose(1, 2)  # (k, C, D)
                xp = self._X[ti][torch.arange(n_main, device=dev), torch.as_tensor(picks, device=dev)]
                Z = torch.bmm(torch.cat([Wt[:, :, :-1], xp[:, None, :]], dim=1), self._XT[ti])
                logits_t, dots = Z[:, :C] + Wt[:, :, -1:], Z[:, C]
            pt = model._finish_proba_t(logits_t, ti)
        proba_t = pt.to("cpu", torch.float64).numpy()  # (k, C, n) class-major
        proba = np.ascontiguousarray(proba_t.transpose(0, 2, 1))  # (k, n, C)
        all_envs = len(idx) == self.num_envs
        # the previous batch is every state's prev_proba after a step (not after a reset)
        self._P_prev = self._P if (all_envs and not first and self._P is not None) else None
        prev_pred = self._pred if self._P_prev is not None else None
        self._P, self._Pt = (proba, proba_t) if all_envs else (None, None)
        for j, i in enumerate(idx):
            st = self.states[i]
            if prev_pred is not None:  # ALState.set_proba, with the argmax already at hand
                st.prev_pred, st.prev_proba, st.proba = prev_pred[i].copy(), st.proba, proba[j]
                for key in [k for k in st.cache if k.startswith("fit:")]:
                    del st.cache[key]
            else:
                st.set_proba(proba[j], first=first)
            st.learner.n_fits += 1
        return dots

    def _accuracy(self, X: Any, y: np.ndarray, idx: np.ndarray, rows: Any, model: Any = None) -> np.ndarray:
        import torch

        model = model or self._model
        if X.shape[2] == 0:
            return np.full(len(idx), np.nan)
        ti = self._sel(idx)
        pred = model.predict_tensor(X[ti], rows=rows, transposed=True).cpu().numpy()
        return (pred == y[idx]).mean(1)

    # -- VecEnv API -----------------------------------------------------------------------------
    def _obs_batch(self) -> dict[str, np.ndarray]:
        cand = np.stack([np.clip(o.candidates, 0.0, _CAND_HIGH) for o in self._obs])
        glob = np.stack([np.clip(o.global_, 0.0, _GLOB_HIGH) for o in self._obs])
        mask = np.stack([o.mask.astype(np.int8) for o in self._obs])
        return {"candidates": cand, "global": glob, "action_mask": mask}

    def _obs_one(self, i: int) -> dict[str, np.ndarray]:
        o = self._obs[i]
        return {
            "candidates": np.clip(o.candidates, 0.0, _CAND_HIGH),
            "global": np.clip(o.global_, 0.0, _GLOB_HIGH),
            "action_mask": o.mask.astype(np.int8),
        }

    def _info(self, i: int, pool_index: int = -1, margin_index: int = -1, invalid: bool = False) -> dict[str, Any]:
        return {
            "test_accuracy": float(self.test_accuracy[i]),
            "reward_accuracy": float(self.reward_accuracy[i]),
            "n_labeled": self.states[i].n_labeled,
            "pool_index": int(pool_index),
            "margin_index": int(margin_index),
            "invalid_action": bool(invalid),
            "dataset": self.dataset.name,
            "budget": int(self.budgets[i]),
        }

    def reset(self) -> dict[str, np.ndarray]:
        """Start a new round for all environments (seeds given by :meth:`seed` apply here)."""
        if self._seeds[0] is not None:
            self._seed_all(self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        from metaal.torch_learners import cpu_threads

        with cpu_threads(self.device, self.threads):
            self._new_round()
        self.reset_infos = [self._info(i) for i in range(self.num_envs)]
        return self._obs_batch()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)[:, 0]

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if not self.states or self._actions is None:
            raise RuntimeError("call reset() before step()")
        from metaal.torch_learners import cpu_threads

        with cpu_threads(self.device, self.threads):
            return self._step()

    def _step(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        N, K = self.num_envs, self.k
        picks = np.zeros(N, dtype=np.int64)
        margin = np.zeros(N, dtype=np.int64)
        invalid = np.zeros(N, dtype=bool)
        for i in range(N):
            ob = self._obs[i]
            a = int(self._actions[i])
            invalid[i] = not (0 <= a < K and bool(ob.mask[a]))
            a = 0 if invalid[i] else a
            picks[i], margin[i] = ob.indices[a], ob.indices[0]
            self.states[i].add_labels(picks[i : i + 1], self._y[i, picks[i : i + 1]], refit=False)
        masks = np.stack([s.labeled_mask for s in self.states])
        has_split = self._Xr.shape[1] > 0
        cf = None
        if self.reward_mode == "margin_gain" and has_split:
            cf_idx = np.flatnonzero(picks != margin)
            cf_masks = masks[cf_idx].copy()
            cf_masks[np.arange(len(cf_idx)), picks[cf_idx]] = False
            cf_masks[np.arange(len(cf_idx)), margin[cf_idx]] = True
            cf = (cf_idx, cf_masks)
        all_idx = np.arange(N)
        dots = self._fit(all_idx, masks, first=False, cf=cf, picks=picks)
        self._update_min_dist(all_idx, picks, dots=dots)
        prev = self.reward_accuracy.copy()
        acc = self._accuracy(self._XrT, self._yr, all_idx, rows=None)
        rewards = np.zeros(N)
        reached = np.zeros(N, dtype=bool)
        if has_split:
            if self.reward_mode == "acc_gain":
                rewards = acc - prev
            elif self.reward_mode == "label_cost":
                rewards = -np.ones(N)
                reached = acc >= self.target_accuracy
            elif cf is not None and len(cf[0]):
                import torch

                ci = cf[0]
                cf_rows = torch.arange(N, N + len(ci), device=self.device)
                acc_m = self._accuracy(self._XrT, self._yr, ci, rows=cf_rows, model=self._cf)
                rewards[ci] = (acc[ci] - acc_m) / self.headroom[ci]
        self.reward_accuracy = acc
        self.test_accuracy = self._accuracy(self._XtT, self._yt, all_idx, rows=None)
        self.round_step += 1
        n_q = np.array([s.n_queried for s in self.states])
        n_unl = np.array([s.n_pool - s.n_labeled for s in self.states])
        terminated = (n_q >= self.budgets) | (n_unl == 0) | reached
        round_over = self.round_step >= self.round_budget or bool(terminated.all())
        truncated = np.full(N, round_over) & ~terminated
        infos = [self._info(i, picks[i], margin[i], invalid[i]) for i in range(N)]
        dones = terminated | truncated
        self._observe(all_idx)  # for ending episodes: the terminal observation
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = self._obs_one(i)
                if truncated[i]:
                    infos[i]["TimeLimit.truncated"] = True
            if round_over:
                self._new_round()
            else:
                self._start(np.flatnonzero(dones))
        return self._obs_batch(), rewards.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        """Valid candidates of every environment, ``(N, K)`` bool."""
        if not self._obs:
            return np.ones((self.num_envs, self.k), dtype=bool)
        return np.stack([o.mask for o in self._obs])

    def close(self) -> None:
        self.states, self._obs = [], []

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
        if attr_name in ("state", "task", "reward_split"):
            src = {"state": self.states, "task": self.tasks, "reward_split": self.splits}[attr_name]
            return [src[i] if src else None for i in idx]
        if not hasattr(self, attr_name):
            raise AttributeError(f"BatchedPoolVecEnv has no attribute {attr_name!r}")
        return [getattr(self, attr_name) for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

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
