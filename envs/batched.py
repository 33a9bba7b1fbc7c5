"""``BatchedPoolEnv``: ``N`` Pool-v0 episodes stepped in lockstep on one batched learner.

Gymnasium's functional environments in spirit: the observation is :func:`metaal.observe.observe_batch`
(the function every Pool-v0 episode, ``simulate`` and the labeling session call with ``N = 1``),
the rewards are :func:`metaal.envs.rewards.rewards_of`, the pool geometry is
:class:`metaal.geometry.PoolGeometry` and the tasks come from
:func:`metaal.envs.collection.sample_task`; this module only holds what is batched: ``N``
learners as one :class:`~metaal.torch_learners.BatchedLogReg` (scikit-learn's
``LogisticRegression(C=1)`` objective, warm-started, on the GPU when there is one) and the
distances to the labeled sets as one tensor.

No stable-baselines3 here (the envs layer knows no agent library): the SB3 ``VecEnv`` face is
:class:`metaal.agents.vec_env.BatchedPoolVecEnv`.

* **Action**: ``(N,)`` candidate indices, as Pool-v0's ``Discrete(K)``; a masked or padding
  action labels margin's pick (candidate 0) and sets ``info["invalid_action"]``.
* **Observation**: Pool-v0's ``Dict`` stacked over ``N`` (``candidates (N, K, F)``,
  ``global (N, G)``, ``action_mask (N, K)``).
* **Rewards**: Pool-v0's modes, headroom and floor; ``margin_gain``'s counterfactual fits (one per
  episode whose action differs from margin's pick) run in the same batched fit as the ``N`` real
  ones.
* **Starting state**: the ``N`` episodes of a round share one dataset and budget (round
  generator); each draws its split, reward split, initial set and random candidates from its own.
* **Episode end**: at the budget, all together (the next round starts; ``infos[i]["final_observation"]``
  holds the last observation); an episode that terminates early (``label_cost``) restarts on the
  same dataset and is truncated when the round ends.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from metaal.envs.collection import DatasetCollection, sample_task
from metaal.envs.pool import budget_spec
from metaal.envs.rewards import HEADROOM_FLOOR, RewardSplit, check_mode, headroom_of, rewards_of
from metaal.errors import ConfigError, DataError
from metaal.learners import PROBA_FLOOR
from metaal.observe import BatchObservation, Observer, observe_batch
from metaal.state import ALState, Task


class _SlotLearner:
    """The :class:`~metaal.learners.Learner` face of episode ``i`` of the batched model (so that
    ``state.learner.predict(X)`` works); fitting happens in the environment."""

    name = "torch_logreg_batched"

    def __init__(self, env: "BatchedPoolEnv", i: int, n_classes: int):
        self.env, self.i, self.n_classes = env, i, n_classes
        self.n_fits = 0

    @property
    def prior(self) -> np.ndarray | None:
        """The label frequencies ``(C,)`` episode ``i`` predicts while fewer than two classes are
        labeled (as :attr:`metaal.learners.Learner.prior`); None once its model is fitted."""
        model = self.env.model
        if model.use_prior_ is None or not bool(model.use_prior_[self.i]):
            return None
        return model.prior_[self.i].to("cpu").double().numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, C)`` probabilities of episode ``i``'s current model."""
        prior = self.prior
        if prior is not None:
            return np.tile(prior, (len(X), 1))
        model = self.env.model
        W = model.coef_[self.i].to("cpu").double().numpy()
        z = np.asarray(X, dtype=np.float64) @ W[:-1] + W[-1]
        z = np.where(model.present_[self.i].cpu().numpy()[None, :], z, -np.inf)
        p = np.exp(z - z.max(1, keepdims=True))
        p = np.maximum(p / p.sum(1, keepdims=True), PROBA_FLOOR)
        return p / p.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_SlotLearner":
        raise ConfigError("the learners of BatchedPoolEnv are fitted by the environment, not one by one")


class BatchedPoolEnv:
    """``num_envs`` Pool-v0 episodes in lockstep on a batched torch logistic regression.

    :param num_envs: ``N`` parallel episodes.
    :param datasets: a dataset collection, as for Pool-v0 (one dataset per round).
    :param budget: labels per episode (int, or a ``(low, high)`` range drawn once per round).
    :param initial, k, reward, reward_frac, reward_cap, max_pool, target_accuracy: as for
        :class:`metaal.envs.pool.PoolEnvBase`.
    :param C: inverse L2 strength of the logistic regression (scikit-learn's default 1.0).
    :param device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``.
    :param seed: seeds the round generator and the per-episode generators.
    :param threads: torch CPU threads while stepping (:func:`metaal.torch_learners.cpu_threads`).
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
        threads: int | None = 1,
    ) -> None:
        from metaal.torch_learners import resolve_device

        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1 (got {num_envs})")
        if initial != 0 and initial < 2:
            raise ConfigError(f"initial must be 0 (cold start) or >= 2 (got {initial})")
        if not 0 <= reward_frac < 1:
            raise ConfigError(f"reward_frac must be in [0, 1) (got {reward_frac})")
        if target_accuracy is not None and not 0 < target_accuracy <= 1:
            raise ConfigError(f"target_accuracy must be in (0, 1] (got {target_accuracy})")
        self.num_envs = int(num_envs)
        self.collection = datasets if isinstance(datasets, DatasetCollection) else DatasetCollection(datasets)
        self.budget_range = budget_spec(budget)
        self.initial, self.k = int(initial), int(k)
        self.reward_mode = check_mode(reward)
        self.reward_frac, self.reward_cap, self.max_pool = float(reward_frac), int(reward_cap), max_pool
        self.target_accuracy_opt = target_accuracy
        self.C = float(C)
        self.threads = threads
        self.device = resolve_device(device)
        self.observer = Observer(k=self.k)
        self.model: Any = None
        self.seed(seed)
        self.states: list[ALState] = []
        self.tasks: list[Task] = []
        self.splits: list[RewardSplit] = []
        self._obs: BatchObservation | None = None

    def seed(self, seed: int | None) -> None:
        """Seed the round generator and the ``N`` episode generators (children of one sequence)."""
        kids = np.random.SeedSequence(seed).spawn(self.num_envs + 1)
        self.round_rng = np.random.default_rng(kids[0])
        self.rngs = [np.random.default_rng(s) for s in kids[1:]]

    # -- episodes -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Start a new round for every episode; ``seed`` reseeds first (as :meth:`seed`)."""
        from metaal.torch_learners import cpu_threads

        if seed is not None:
            self.seed(seed)
        with cpu_threads(self.device, self.threads):
            self._new_round()
        return self._obs.as_dict(), [self._info(i) for i in range(self.num_envs)]

    def _new_round(self) -> None:
        rng = self.round_rng
        self.dataset = self.collection.sample(rng)
        lo, hi = self.budget_range
        self.round_budget = lo if lo == hi else int(rng.integers(lo, hi + 1))
        self.round_step = 0
        N = self.num_envs
        self.states, self.tasks, self.splits = [None] * N, [None] * N, [None] * N  # type: ignore[list-item]
        self.budgets, self.headroom = np.zeros(N, dtype=np.int64), np.ones(N)
        self.full_accuracy, self.target_accuracy = np.full(N, np.nan), np.full(N, np.nan)
        self.reward_accuracy, self.test_accuracy = np.full(N, np.nan), np.full(N, np.nan)
        self._X = None
        self._start(np.arange(N))

    def _start(self, idx: np.ndarray) -> None:
        """Draw new episodes (tasks, initial fits, headroom, geometry) for episodes ``idx`` on the
        round's dataset."""
        import torch

        from metaal.torch_learners import BatchedLogReg

        tasks, splits = [], []
        for i in idx:
            task, split = sample_task(self.dataset, self.rngs[i], self.initial, self.max_pool, self.reward_frac,
                                      self.reward_cap)
            if task.n_pool - len(task.initial) < 1:
                raise DataError(f"{task.name}: no unlabeled pool items left after the initial set")
            tasks.append(task)
            splits.append(split)
        C = len(self.dataset.classes)
        dev, dt = self.device, (torch.float64 if self.device.type == "cpu" else torch.float32)

        def stack(arrs: list[np.ndarray]) -> "torch.Tensor":
            return torch.as_tensor(np.stack(arrs), device=dev, dtype=dt)

        Xn, Xrn, Xtn = stack([t.X_pool for t in tasks]), stack([s.X for s in splits]), stack([t.X_test for t in tasks])
        if self._X is None:  # a new round: pool, reward split and test tensors of the round's sizes
            N, n = self.num_envs, Xn.shape[1]
            self._X = torch.zeros((N, *Xn.shape[1:]), device=dev, dtype=dt)
            self._Xr = torch.zeros((N, *Xrn.shape[1:]), device=dev, dtype=dt)
            self._Xt = torch.zeros((N, *Xtn.shape[1:]), device=dev, dtype=dt)
            self._y = np.zeros((N, n), dtype=np.int64)
            self._yr = np.zeros((N, Xrn.shape[1]), dtype=np.int64)
            self._yt = np.zeros((N, Xtn.shape[1]), dtype=np.int64)
            self.model = BatchedLogReg(C, C=self.C, device=dev)
            self.model.coef_ = torch.zeros((N, Xn.shape[2] + 1, C), device=dev, dtype=dt)
            self.model.present_ = torch.ones((N, C), device=dev, dtype=torch.bool)
            self.model.prior_ = torch.full((N, C), 1.0 / C, device=dev, dtype=dt)
            self.model.use_prior_ = torch.zeros(N, device=dev, dtype=torch.bool)
            self._md = torch.full((N, n), float("inf"), device=dev, dtype=dt)  # distances to the labels
            self._sq = torch.zeros((N, n), device=dev, dtype=dt)
            self._P = np.zeros((N, n, C))
            self._has_prev = np.zeros(N, dtype=bool)
            self._pred = np.zeros((N, n), dtype=np.int64)
            self._dens = np.zeros((N, n))
            self.geometries: list[Any] = [None] * N
        ti = self._sel(idx)
        self._X[ti], self._Xr[ti], self._Xt[ti] = Xn, Xrn, Xtn
        self._XT = self._X.transpose(1, 2).contiguous()  # class-major scoring wants (N, d, n)
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
            self.geometries[i] = st.geometry
            self._dens[i] = st.geometry.knn_density()
        self._has_prev[idx] = False
        self._fit(idx, np.stack([self.states[i].labeled_mask for i in idx]), first=True)
        acc = self._accuracy(self._XrT, self._yr, idx)
        self.reward_accuracy[idx] = acc
        self.test_accuracy[idx] = self._accuracy(self._XtT, self._yt, idx)
        self.headroom[idx], self.full_accuracy[idx] = 1.0, np.nan
        need_full = self.reward_mode == "margin_gain" or (
            self.reward_mode == "label_cost" and self.target_accuracy_opt is None
        )
        if need_full and self._Xr.shape[1] > 0:  # headroom: a model on the whole pool
            full = BatchedLogReg(C, C=self.C, device=dev)
            every_row = np.ones((len(idx), self._X.shape[1]), bool)
            full.fit(self._X[ti], torch.as_tensor(self._y[idx], device=dev), every_row, init=None)
            fa = (full.predict_tensor(self._Xr[ti]).cpu().numpy() == self._yr[idx]).mean(1)
            self.full_accuracy[idx] = fa
            self.headroom[idx] = headroom_of(fa, acc)
        elif need_full:
            self.headroom[idx] = HEADROOM_FLOOR  # no reward split
        self.target_accuracy[idx] = (
            self.target_accuracy_opt if self.target_accuracy_opt is not None else 0.98 * self.full_accuracy[idx]
        )
        self._sq[ti] = (Xn * Xn).sum(-1)
        self._md[ti] = float("inf")
        init = np.stack([self.tasks[i].initial for i in idx])  # the same initial size for all
        for c in range(init.shape[1]):
            self._update_min_dist(idx, init[:, c])
        self._observe(idx)

    def _sel(self, idx: np.ndarray) -> Any:
        """A torch index for episodes ``idx``: a plain slice (a view, no copy) for all."""
        import torch

        if len(idx) == self.num_envs and np.array_equal(idx, np.arange(self.num_envs)):
            return slice(None)
        return torch.as_tensor(idx, device=self.device)

    def _update_min_dist(self, idx: np.ndarray, pos: np.ndarray, dots: Any = None) -> None:
        """Fold the distances to newly labeled pool positions ``pos`` (one per episode of ``idx``)
        into the distances to the labeled sets (:func:`metaal.geometry.update_min_dist`'s formula);
        ``dots``: the products of every pool row with its new labeled row ``(k, n)`` when at hand
        (:meth:`_fit` computes them in the same pass over the pool as the probabilities)."""
        import torch

        ti = self._sel(idx)
        Xi = self._X[ti]
        xp = Xi[torch.arange(len(idx), device=self.device), torch.as_tensor(pos, device=self.device)]
        base = self._sq[ti] + (xp * xp).sum(-1)[:, None]  # (|x|^2 + |x_p|^2) - 2 x.x_p
        if dots is None:
            d2 = torch.baddbmm(base[..., None], Xi, xp[:, :, None], alpha=-2.0)[..., 0]
        else:
            d2 = base.add_(dots, alpha=-2.0)
        d = torch.sqrt_(torch.clamp_(d2, min=0.0))
        if isinstance(ti, slice):
            torch.minimum(self._md, d, out=self._md)
        else:
            self._md[ti] = torch.minimum(self._md[ti], d)

    def _observe(self, idx: np.ndarray) -> None:
        """Observe episodes ``idx`` (:func:`metaal.observe.observe_batch`)."""
        import torch

        ti = slice(None) if len(idx) == self.num_envs else idx  # numpy rows: a view for all
        states = [self.states[i] for i in idx]
        ob = observe_batch(
            self.observer,
            labeled=np.stack([s.labeled_mask for s in states]),
            P=self._P[ti],
            P_prev=self._P_prev[ti] if self._has_prev[idx].any() else None,
            has_prev=self._has_prev[idx],
            min_dist=self._md[self._sel(idx)].to("cpu", torch.float64).numpy(),
            geometries=[self.geometries[i] for i in idx],
            labels=[s.y_labeled for s in states],
            n_queried=np.array([s.n_queried for s in states]),
            budgets=self.budgets[idx],
            rngs=[self.rngs[i] for i in idx],
            prev_pred=self._prev_pred[ti] if self._has_prev[idx].any() else None,
            dens=self._dens[ti],
            P_class_major=self._Pt if len(idx) == self.num_envs else None,
        )
        if self._obs is None or len(idx) == self.num_envs:
            self._obs = ob
        else:
            for name in ("candidates", "global_", "mask", "indices", "pred"):
                getattr(self._obs, name)[idx] = getattr(ob, name)
        self._pred[idx] = ob.pred

    def _fit(self, idx: np.ndarray, masks: np.ndarray, first: bool, cf: tuple[np.ndarray, np.ndarray] | None = None,
             picks: np.ndarray | None = None) -> Any:
        """One batched fit of episodes ``idx`` on labeled masks ``(len(idx), n)``, plus the
        counterfactual problems ``cf = (episode indices, masks)``; installs the pool
        probabilities. ``picks`` ``(len(idx),)``: the positions labeled by this step, whose
        products with every pool row come back ``(len(idx), n)`` from the same pass over the pool
        as the logits (one matrix product instead of two)."""
        import torch

        from metaal.torch_learners import BatchedLogReg, gather_padded

        dev, model, ti = self.device, self.model, self._sel(idx)
        y = torch.as_tensor(self._y, device=dev)
        Xp, yp, wp = gather_padded(self._X, y, torch.as_tensor(masks, device=dev),
                                   source=None if isinstance(ti, slice) else ti)
        init = torch.zeros_like(model.coef_[ti]) if first else model.coef_[ti]
        n_main = len(idx)
        if cf is not None and len(cf[0]):
            ci = torch.as_tensor(cf[0], device=dev)
            Xc, yc, wc = gather_padded(self._X, y, torch.as_tensor(cf[1], device=dev), source=ci)
            Xp, yp, wp = torch.cat([Xp, Xc]), torch.cat([yp, yc]), torch.cat([wp, wc])
            init = torch.cat([init, model.coef_[ci]])
        fit = BatchedLogReg(model.n_classes, C=self.C, device=dev)
        fit.fit_padded(Xp, yp, wp, init=init)
        for name in ("coef_", "present_", "prior_", "use_prior_"):  # the real problems stay in the model
            getattr(model, name)[ti] = getattr(fit, name)[:n_main]
        self._cf = fit if cf is not None else None
        dots = None
        with torch.no_grad():
            if picks is None:
                logits_t = model.logits_t(self._XT[ti], ti, transposed=True)
            else:  # [W | x_pick]^T X^T: the logits (k, C, n) and the products x . x_pick (k, n)
                C = model.n_classes
                Wt = model.coef_[ti].transpose(1, 2)
                xp = self._X[ti][torch.arange(n_main, device=dev), torch.as_tensor(picks, device=dev)]
                Z = torch.bmm(torch.cat([Wt[:, :, :-1], xp[:, None, :]], dim=1), self._XT[ti])
                logits_t, dots = Z[:, :C] + Wt[:, :, -1:], Z[:, C]
            pt = model.finish_proba_t(logits_t, ti)
        proba_t = pt.to("cpu", torch.float64).numpy()  # (k, C, n): class-major
        proba = np.ascontiguousarray(proba_t.transpose(0, 2, 1))  # (k, n, C)
        if not first:  # the previous probabilities and predictions of every stepped episode
            self._P_prev, self._prev_pred, self._has_prev[idx] = self._P, self._pred.copy(), True
        if len(idx) < self.num_envs:  # some episodes restart: the others keep their probabilities
            proba_t, P = None, self._P.copy()
            P[idx], proba = proba, P
        self._P, self._Pt = proba, proba_t
        for i in idx:  # the episodes' ALStates see the same probabilities (predictions: the last observation's)
            self.states[i].set_proba(proba[i], first=first, pred=None if first else self._prev_pred[i])
            self.states[i].learner.n_fits += 1
        return dots

    def _accuracy(self, XT: Any, y: np.ndarray, idx: np.ndarray, rows: Any = None, model: Any = None) -> np.ndarray:
        """Accuracy ``(len(idx),)`` of the models (``rows`` of ``model``) on class-major ``XT``."""
        model = model or self.model
        if XT.shape[2] == 0:
            return np.full(len(idx), np.nan)
        ti = self._sel(idx)
        pred = model.predict_tensor(XT[ti], rows=ti if rows is None else rows, transposed=True).cpu().numpy()
        return (pred == y[idx]).mean(1)

    # -- the step -------------------------------------------------------------------------------
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

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list]:
        """Label every episode's chosen candidate, refit, reward, observe; returns ``(obs, rewards,
        terminated, truncated, infos)``; finished episodes restart (their last observation in
        ``infos[i]["final_observation"]``)."""
        from metaal.torch_learners import cpu_threads

        if not self.states or self._obs is None:
            raise RuntimeError("call reset() before step()")
        with cpu_threads(self.device, self.threads):
            return self._step(np.asarray(actions).reshape(self.num_envs, -1)[:, 0])

    def _step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list]:
        import torch

        N, K = self.num_envs, self.k
        ob = self._obs
        assert ob is not None
        a = actions.astype(np.int64)
        invalid = ~((a >= 0) & (a < K))
        invalid |= ~ob.mask[np.arange(N), np.where(invalid, 0, a)]
        a = np.where(invalid, 0, a)
        picks, margin = ob.indices[np.arange(N), a], ob.indices[:, 0].copy()
        for i in range(N):
            self.states[i].add_labels(picks[i : i + 1], self._y[i, picks[i : i + 1]], refit=False)
        masks = np.stack([s.labeled_mask for s in self.states])
        has_split = self._Xr.shape[1] > 0
        cf = None
        if self.reward_mode == "margin_gain" and has_split:  # margin's pick instead of the agent's
            cf_idx = np.flatnonzero(picks != margin)
            cf_masks = masks[cf_idx].copy()
            cf_masks[np.arange(len(cf_idx)), picks[cf_idx]] = False
            cf_masks[np.arange(len(cf_idx)), margin[cf_idx]] = True
            cf = (cf_idx, cf_masks)
        all_idx = np.arange(N)
        dots = self._fit(all_idx, masks, first=False, cf=cf, picks=picks)
        self._update_min_dist(all_idx, picks, dots=dots)
        acc = self._accuracy(self._XrT, self._yr, all_idx)
        rewards, reached = np.zeros(N), np.zeros(N, dtype=bool)
        if has_split:
            acc_m = acc.copy()
            if cf is not None and len(cf[0]):
                rows = torch.arange(N, N + len(cf[0]), device=self.device)
                acc_m[cf[0]] = self._accuracy(self._XrT, self._yr, cf[0], rows=rows, model=self._cf)
            rewards, reached = rewards_of(self.reward_mode, acc, self.reward_accuracy, acc_m, self.headroom,
                                          self.target_accuracy)
        self.reward_accuracy = acc
        self.test_accuracy = self._accuracy(self._XtT, self._yt, all_idx)
        self.round_step += 1
        n_q = np.array([s.n_queried for s in self.states])
        n_unl = np.array([s.n_pool - s.n_labeled for s in self.states])
        terminated = (n_q >= self.budgets) | (n_unl == 0) | reached
        round_over = self.round_step >= self.round_budget or bool(terminated.all())
        truncated = np.full(N, round_over) & ~terminated
        infos = [self._info(i, picks[i], margin[i], invalid[i]) for i in range(N)]
        self._observe(all_idx)  # for ending episodes: the final observation
        dones = terminated | truncated
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["final_observation"] = self._obs[i].as_dict()
            if round_over:
                self._new_round()
            else:
                self._start(np.flatnonzero(dones))
        return self._obs.as_dict(), rewards.astype(np.float32), terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        """Valid candidates of every episode, ``(N, K)`` bool."""
        if self._obs is None:
            return np.ones((self.num_envs, self.k), dtype=bool)
        return self._obs.mask.copy()

    def close(self) -> None:
        self.states, self._obs = [], None
