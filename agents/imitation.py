"""Imitation warm start: a lookahead expert (greedy one-step, or a beam search), behaviour cloning
and DAgger.

The expert sees what no deployed policy can: the labels of the pool (the simulation oracle) and a
held-out *reward split*. For every candidate of an observation it labels that candidate, refits
the learner and measures the reward-split accuracy (plus ``ll_weight`` times the mean
log-probability of the true class, a tie-breaker: accuracy on a few hundred items moves in steps
of ``1/n``, so most candidates tie on accuracy alone). The gain over the current model is the
candidate's score; the expert picks the best one (greedy one-step lookahead, as in "expected error
reduction" with the true labels). With ``beam_depth > 1`` it looks further: a beam search over
sequences of candidates, scoring a candidate by the best sequence that starts with it
(:func:`lookahead_gains`).

Episodes never touch a meta-test dataset: a :class:`TaskSampler` draws a dataset from the given
(meta-train) names, subsamples it to ``max_rows`` rows, makes the default-protocol split with a
fresh seed and uses the split's held-out 30% as the reward split (these datasets are never used to
report results). Behaviour cloning (:func:`bc_train`) minimises the cross-entropy between the
policy's candidate distribution and a soft target ``softmax(z / tau)`` of the per-state
standardized gains ``z`` (``tau -> 0`` is the expert's hard choice). :func:`dagger` rolls in with
the current policy, asks the expert on the states it visits, aggregates and retrains.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import f1_score

from metaal.agents.learned import policy_logits
from metaal.data import imbalance, load_dataset, make_split
from metaal.errors import ConfigError, DataError
from metaal.loop.simulate import new_state
from metaal.observe import OBS_VERSION, feature_names
from metaal.state import ALState, Task
from metaal.strategies import make_observer
from metaal.synthetic import random_task_spec

log = logging.getLogger("metaal.agents")


# ----------------------------------------------------------------------------------------------
# episodes over meta-train datasets


@dataclass
class TaskSampler:
    """Draws training tasks from named datasets (``METAAL_DATA`` names, ``sklearn:``, ``synth:``).

    :param datasets: dataset specs (meta-train only); ``synth:random`` draws a new random
        synthetic task (:func:`metaal.synthetic.random_task_spec`) each time.
    :param max_rows: datasets larger than this are subsampled (uniformly, per task) first.
    :param initial: size of the initial labeled set.
    """

    datasets: Sequence[str]
    max_rows: int = 2000
    initial: int = 10
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def load(self, spec: str) -> Any:
        if spec not in self._cache:
            ds = load_dataset(spec)
            ds.require_features()
            self._cache[spec] = ds
        return self._cache[spec]

    def sample(self, rng: np.random.Generator, initial: int | None = None,
               imbalance_ratio: float | None = None) -> tuple[Task, str]:
        """A random task ``(Task, dataset spec)``; its ``X_test``/``y_test`` is the reward split.

        :param initial: the initial set's size (default :attr:`initial`).
        :param imbalance_ratio: make the dataset class-imbalanced first (:func:`metaal.data.imbalance`:
            each smaller class a share ``ratio`` of the rows, capped where the classes are many).
        """
        spec = self.datasets[int(rng.integers(len(self.datasets)))]
        if spec == "synth:random":  # a fresh random synthetic task (metaal.synthetic)
            spec = random_task_spec(rng)
            ds = self.load(spec)
            self._cache.pop(spec, None)
        else:
            ds = self.load(spec)
        seed = int(rng.integers(2**31 - 1))
        if ds.n > self.max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(ds.n, size=self.max_rows, replace=False))
            sub = ds.subset(rows)
            if len(np.unique(sub.y)) >= 2:
                ds = sub
        n_init = self.initial if initial is None else int(initial)
        task = None
        if imbalance_ratio is not None:
            K = len(np.unique(ds.y))
            ratio = min(float(imbalance_ratio), 0.5 / max(K - 1, 1))
            try:
                sub = imbalance(ds, ratio, seed)
                if len(np.unique(sub.y)) >= 2 and sub.n >= 20:
                    task = Task.from_split(sub, make_split(sub, seed, n_init))
                    spec = f"{spec}?imbalance={ratio:.3g}"
            except DataError:
                task = None  # too few rows per class for the transform or a stratified split: as it is
        if task is None:
            task = Task.from_split(ds, make_split(ds, seed, n_init))
        task.name = str(spec)
        return task, str(spec)


@dataclass
class ProtocolMix:
    """The protocol of each training episode, drawn at random (training across protocols).

    :param initial: ``[lo, hi]``: initial labels, uniform (0 is the cold start; 1 counts as 2).
    :param batch_sizes: queries per step, drawn uniformly from this list (``obs-v2`` only: a batch
        is picked one item at a time, each observation seeing the batch's earlier picks).
    :param imbalance_prob: share of episodes on a class-imbalanced version of the dataset.
    :param imbalance_ratio: ``[lo, hi]``: the smaller classes' share there, uniform.
    :param learners: learners drawn uniformly (empty: the config's ``learner``); the policy sees
        only learner-agnostic features, so one policy serves them all.
    :param imbalance_metric: what the expert maximises on imbalanced episodes: ``accuracy`` or
        ``macro_f1`` (the imbalanced protocol's headline).
    :param cold_expert: the expert of states without a model (fewer than two classes labeled):
        ``lookahead`` (the one-step expert, whose model is then only the label frequencies) or
        ``coverage`` (imitate the cold-start protocol's best heuristic: the candidates'
        MaxHerding gains are the targets; ``obs-v2`` only).
    """

    initial: tuple[int, int] = (10, 10)
    batch_sizes: tuple[int, ...] = (1,)
    imbalance_prob: float = 0.0
    imbalance_ratio: tuple[float, float] = (0.05, 0.2)
    learners: tuple[str, ...] = ()
    imbalance_metric: str = "accuracy"
    cold_expert: str = "lookahead"

    @staticmethod
    def from_config(spec: "dict[str, Any] | None") -> "ProtocolMix | None":
        """The mix of a config's ``protocols`` mapping (None or empty: None, one protocol)."""
        if not spec:
            return None
        known = {"initial", "batch_sizes", "imbalance_prob", "imbalance_ratio", "learners", "imbalance_metric",
                 "cold_expert"}
        bad = set(spec) - known
        if bad:
            raise ConfigError(f"protocols: unknown keys {', '.join(sorted(bad))} (known: {', '.join(sorted(known))})")
        try:
            mix = ProtocolMix(
                initial=tuple(int(v) for v in spec.get("initial", (10, 10))),  # type: ignore[arg-type]
                batch_sizes=tuple(int(v) for v in spec.get("batch_sizes", (1,))),
                imbalance_prob=float(spec.get("imbalance_prob", 0.0)),
                imbalance_ratio=tuple(float(v) for v in spec.get("imbalance_ratio", (0.05, 0.2))),  # type: ignore[arg-type]
                learners=tuple(str(v) for v in spec.get("learners", ())),
                imbalance_metric=str(spec.get("imbalance_metric", "accuracy")),
                cold_expert=str(spec.get("cold_expert", "lookahead")),
            )
        except (TypeError, ValueError):
            raise ConfigError(f"protocols: bad value in {spec!r}") from None
        if len(mix.initial) != 2 or len(mix.imbalance_ratio) != 2:
            raise ConfigError(f"protocols.initial and protocols.imbalance_ratio must be [lo, hi] (got {spec!r})")
        lo, hi = mix.initial
        if not 0 <= lo <= hi:
            raise ConfigError(f"protocols.initial must be [lo, hi] with 0 <= lo <= hi (got {list(mix.initial)})")
        if not mix.batch_sizes or min(mix.batch_sizes) < 1:
            raise ConfigError(f"protocols.batch_sizes must be integers >= 1 (got {list(mix.batch_sizes)})")
        if not 0.0 <= mix.imbalance_prob <= 1.0:
            raise ConfigError(f"protocols.imbalance_prob must be in [0, 1] (got {mix.imbalance_prob})")
        if mix.imbalance_metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"protocols.imbalance_metric must be accuracy or macro_f1 (got {mix.imbalance_metric!r})")
        if mix.cold_expert not in ("lookahead", "coverage"):
            raise ConfigError(f"protocols.cold_expert must be lookahead or coverage (got {mix.cold_expert!r})")
        a, b = mix.imbalance_ratio
        if not 0.0 < a <= b < 1.0:
            raise ConfigError(f"protocols.imbalance_ratio must be [lo, hi] in (0, 1) (got {list(mix.imbalance_ratio)})")
        return mix

    def draw(self, rng: np.random.Generator, learner: str) -> dict[str, Any]:
        """One episode's ``initial``, ``batch``, ``imbalance`` (ratio or None) and ``learner``."""
        initial = int(rng.integers(self.initial[0], self.initial[1] + 1))
        initial = 2 if initial == 1 else initial  # an initial set is empty or holds two classes
        batch = int(self.batch_sizes[int(rng.integers(len(self.batch_sizes)))])
        ratio = None
        if rng.random() < self.imbalance_prob:
            ratio = float(rng.uniform(*self.imbalance_ratio))
        lrn = self.learners[int(rng.integers(len(self.learners)))] if self.learners else learner
        return {"initial": initial, "batch": batch, "imbalance": ratio, "learner": lrn}


# ----------------------------------------------------------------------------------------------
# the expert


def lookahead_gains(state: ALState, task: Task, indices: np.ndarray, mask: np.ndarray, ll_weight: float = 0.01,
                    beam_width: int = 1, beam_depth: int = 1, pending: "Sequence[int]" = (),
                    metric: str = "accuracy") -> np.ndarray:
    """Lookahead score of every candidate, shape ``(K,)`` (``-inf`` on padding rows).

    :param indices: ``(K,)`` pool positions of the candidates (``Observation.indices``).
    :param mask: ``(K,)`` valid candidates.
    :param beam_width: ``W``, sequences kept per level of the beam search (``beam_depth > 1``).
    :param beam_depth: ``D``, labels looked ahead; 1 is the greedy one-step expert.

    Score = reward-split accuracy gain + ``ll_weight`` * mean log-likelihood gain, relative to the
    current model, after labeling the candidate (a logistic regression refits warm-started from the
    current coefficients).

    With ``D > 1`` the expert runs a beam search over sequences of distinct candidates of this
    observation: level 1 scores every candidate, and each further level extends each of the ``W``
    best sequences of the level before by every other candidate and scores the whole sequence
    (labeled together, one refit; a set scored once is not refit again). A candidate's value is the
    best gain of a sequence that starts with it, at the deepest level such a sequence reached,
    divided by that depth (gain per label, so the scale stays that of one-step gains). The beam's
    order is kept: every candidate that starts a deeper sequence scores above every candidate
    whose sequences were pruned earlier (each level is shifted up just enough for that), so the
    expert's best candidate is the first label of the best ``D``-label sequence found. Cost:
    at most ``K + (D - 1) * W * (K - 1)`` refits instead of ``K``.

    ``pending``: items picked earlier in the same batch (not yet labeled): every candidate is
    scored together with them, relative to the model fitted on the labels and them (one more refit).
    ``metric="macro_f1"``: the reward-split macro-F1 instead of the accuracy (the headline of the
    imbalanced protocol).
    """
    if int(beam_width) < 1 or int(beam_depth) < 1:
        raise ValueError(f"beam_width and beam_depth must be >= 1 (got {beam_width}, {beam_depth})")
    Xr, yr = task.X_test, task.y_test
    lab = state.labeled_idx

    def score(p: np.ndarray) -> float:
        if metric == "macro_f1":
            pred = np.argmax(p, 1)
            acc = float(f1_score(yr, pred, labels=np.unique(yr), average="macro", zero_division=0))
        else:
            acc = float(np.mean(np.argmax(p, 1) == yr))
        ll = float(np.mean(np.log(np.clip(p[np.arange(len(yr)), yr], 1e-12, 1.0))))
        return acc + ll_weight * ll

    s0 = score(state.learner.predict_proba(Xr))
    est = state.learner.estimator
    warm_ok = hasattr(est, "coef_") and hasattr(est, "warm_start") and state.learner.prior is None
    known = set(state.learner.classes_.tolist())
    seen: dict[frozenset[int], float] = {}

    base = tuple(int(j) for j in pending)

    def gain(seq: tuple[int, ...]) -> float:
        key = frozenset(base + seq)
        if key not in seen:
            rows = np.asarray(sorted(key), dtype=np.int64)  # one order per set (a learner may depend on it)
            y_new = task.y_pool[rows].astype(np.int64)
            X = np.concatenate([state.X_pool[lab], state.X_pool[rows]])
            y = np.concatenate([state.labels[lab], y_new])
            if warm_ok and set(y_new.tolist()) <= known:
                lrn = copy.copy(state.learner)
                lrn.estimator = copy.deepcopy(est)
                lrn.estimator.set_params(warm_start=True)
                lrn.estimator.fit(X, y)
            else:
                lrn = state.learner.clone()
                lrn.fit(X, y)
            seen[key] = score(lrn.predict_proba(Xr)) - s0
        return seen[key]

    if base:  # gains relative to the labels and the batch's earlier picks
        s0 += gain(())
        seen.clear()
    valid = [int(j) for j in np.flatnonzero(mask)]
    pos = {int(indices[j]): j for j in valid}
    out = np.full(len(indices), -np.inf)
    level = [((int(indices[j]),), gain((int(indices[j]),))) for j in valid]
    for j, (_, g) in zip(valid, level):
        out[j] = g
    depth = min(int(beam_depth), len(valid))  # a sequence holds distinct candidates
    for d in range(2, depth + 1):
        level.sort(key=lambda sv: -sv[1])  # stable: ties keep the candidates' order
        beam = [sv[0] for sv in level[: int(beam_width)]]
        level = [(seq + (c,), gain(seq + (c,))) for seq in beam for c in pos if c not in seq]
        best: dict[int, float] = {}
        for seq, g in level:
            best[seq[0]] = max(best.get(seq[0], -np.inf), g)
        firsts = [pos[c] for c in best]
        vals = np.array([best[c] / d for c in best])
        others = np.setdiff1d(valid, firsts)
        floor = float(np.max(out[others])) if len(others) else -np.inf
        shift = max(0.0, floor - float(vals.min()) + 1e-9) if np.isfinite(floor) else 0.0
        out[firsts] = vals + shift
    return out


# ----------------------------------------------------------------------------------------------
# data collection


@dataclass
class Demonstrations:
    """Observations with the expert's per-candidate gains.

    ``candidates`` (N, K, F), ``global_`` (N, G), ``mask`` (N, K) bool, ``gains`` (N, K) with
    ``-inf`` on padding, ``dataset`` (N,) str.
    """

    candidates: np.ndarray
    global_: np.ndarray
    mask: np.ndarray
    gains: np.ndarray
    dataset: np.ndarray

    def __len__(self) -> int:
        return int(len(self.gains))

    @staticmethod
    def concat(parts: Sequence["Demonstrations"]) -> "Demonstrations":
        parts = [p for p in parts if len(p)]
        return Demonstrations(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                                ("candidates", "global_", "mask", "gains", "dataset")))

    def save(self, path: str) -> None:
        """Write ``path`` (``.npz``) atomically: a run interrupted while saving leaves no partial file."""
        tmp = f"{path}.tmp.npz"
        np.savez_compressed(tmp, candidates=self.candidates, global_=self.global_, mask=self.mask,
                            gains=self.gains, dataset=self.dataset)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str) -> "Demonstrations":
        z = np.load(path, allow_pickle=False)
        return Demonstrations(z["candidates"], z["global_"], z["mask"], z["gains"], z["dataset"])


def _episode(sampler: TaskSampler, seed: int, k: int, budget_range: tuple[int, int], record_prob: float,
             rollin: str, policy_state: Any, learner: str, ll_weight: float, beta: float,
             beam: tuple[int, int] = (1, 1), obs_version: str = OBS_VERSION,
             mix: "ProtocolMix | None" = None) -> Demonstrations:
    """One episode: roll in, record ``record_prob`` of the steps with the expert's gains. With a
    protocol ``mix`` the episode draws its initial set, batch size, imbalance and learner; a batch
    is picked one item at a time (``obs-v2``), the expert scoring each pick with the batch's earlier
    ones."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([seed, 7])
    proto = mix.draw(np.random.default_rng([seed, 13]), learner) if mix is not None else None
    if proto is None:
        task, spec = sampler.sample(rng)
    else:
        task, spec = sampler.sample(rng, initial=proto["initial"], imbalance_ratio=proto["imbalance"])
        learner = proto["learner"]
    v2 = obs_version != OBS_VERSION
    batch = proto["batch"] if proto is not None and v2 else 1
    metric = mix.imbalance_metric if mix is not None and proto is not None and proto["imbalance"] is not None \
        else "accuracy"
    free = task.n_pool - len(task.initial)
    B = int(min(rng.integers(budget_range[0], budget_range[1] + 1), free))
    obs_rng = np.random.default_rng([seed, 11])
    policy = None
    if rollin == "policy" and policy_state is not None:
        import torch as th

        th.set_num_threads(1)
        policy = policy_state
    cover_cold = mix is not None and mix.cold_expert == "coverage"
    i_gain = feature_names(obs_version)[0].index("coverage_gain") if v2 else -1
    cands, globs, masks, gains = [], [], [], []
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: tiny labeled sets, convergence
        state = new_state(task, learner, budget=B, seed=seed)
        observer = make_observer(k, obs_version)
        while state.n_queried < B:
            b = min(batch, B - state.n_queried)
            picks: list[int] = []
            for _ in range(b):
                if v2:
                    obs = observer.observe(state, obs_rng, pending=np.asarray(picks, dtype=np.int64), batch_size=b)
                else:
                    obs = observer.observe(state, obs_rng)
                valid = np.flatnonzero(obs.mask)
                if not len(valid):
                    break
                record = rng.random() < record_prob
                g = None
                if record:
                    if v2 and cover_cold and not state.model_ready:  # imitate MaxHerding where no model exists
                        g = np.where(obs.mask, obs.candidates[:, i_gain].astype(np.float64), -np.inf)
                    else:
                        g = lookahead_gains(state, task, obs.indices, obs.mask, ll_weight, beam_width=beam[0],
                                            beam_depth=beam[1], pending=picks, metric=metric)
                    cands.append(obs.candidates)
                    globs.append(obs.global_)
                    masks.append(obs.mask)
                    gains.append(g)
                if policy is not None and rng.random() >= beta:
                    a = int(np.argmax(policy_logits(policy, obs.as_dict())))
                elif g is not None:
                    a = int(np.argmax(g))
                elif not v2:  # cheap roll-in: margin's best pick or a random candidate
                    a = 0 if rng.random() < 0.5 else int(rng.choice(valid))
                else:  # margin's best, the coverage heuristic's best, or a random candidate
                    cov = np.flatnonzero(obs.candidates[:, feature_names(obs_version)[0].index("from_coverage")])
                    u = rng.random()
                    a = 0 if u < 1 / 3 else (int(cov[0]) if u < 2 / 3 and len(cov) else int(rng.choice(valid)))
                picks.append(int(obs.indices[a]))
            if not picks:
                break
            rows = np.asarray(picks, dtype=np.int64)
            state.add_labels(rows, task.y_pool[rows])
    n = len(gains)
    K = k
    if n == 0:
        F, G = (len(f) for f in feature_names(obs_version))
        return Demonstrations(
            np.zeros((0, K, F), np.float32),
            np.zeros((0, G), np.float32),
            np.zeros((0, K), bool),
            np.zeros((0, K)),
            np.zeros(0, dtype="<U64"),
        )
    return Demonstrations(np.stack(cands), np.stack(globs), np.stack(masks), np.stack(gains),
                          np.array([spec] * n, dtype="<U64"))


def collect(sampler: TaskSampler, n_states: int, k: int = 32, budget_range: tuple[int, int] = (20, 150),
            record_prob: float = 0.3, seed: int = 0, jobs: int = 1, rollin: str = "mix", policy: Any = None,
            beta: float = 0.0, learner: str = "logreg", ll_weight: float = 0.01, progress: bool = False,
            episode_offset: int = 0, beam_width: int = 1, beam_depth: int = 1, obs_version: str = OBS_VERSION,
            mix: ProtocolMix | None = None) -> Demonstrations:
    """Collect about ``n_states`` expert-labeled observations from whole episodes.

    :param rollin: ``"mix"`` (expert on recorded steps, else margin's pick or a random candidate) or
        ``"policy"`` (DAgger: ``policy`` acts, with probability ``beta`` the expert instead).
    :param seed: episode ``e`` uses seed ``(seed, episode_offset + e)``, whatever ``jobs`` is.
    :param beam_width: the expert's beam width, see :func:`lookahead_gains`.
    :param beam_depth: the expert's lookahead depth (1: greedy one-step).
    :param obs_version: the observation the demonstrations record (:data:`metaal.observe.OBS_VERSIONS`).
    :param mix: the protocol of each episode (:class:`ProtocolMix`; None: the sampler's).
    :returns: the demonstrations of ``ceil(n_states / expected per episode)`` episodes, in order.
    """
    from joblib import Parallel, delayed

    per_episode = max(1.0, record_prob * 0.5 * (budget_range[0] + budget_range[1]) * 0.8)
    n_episodes = max(1, int(np.ceil(n_states / per_episode)))
    seeds = [int(np.random.SeedSequence([seed, episode_offset + e]).generate_state(1)[0]) for e in range(n_episodes)]
    args = (k, budget_range, record_prob, rollin, policy, learner, ll_weight, beta, (int(beam_width), int(beam_depth)),
            obs_version, mix)
    from tqdm.auto import tqdm

    if jobs == 1:
        episodes: Any = (_episode(sampler, s, *args) for s in seeds)
    else:  # joblib's own lines off: the bar below shows the progress and the time left
        episodes = Parallel(n_jobs=jobs, verbose=0, return_as="generator")(
            delayed(_episode)(sampler, s, *args) for s in seeds)
    parts = list(tqdm(episodes, total=len(seeds), disable=not progress, desc="demonstration episodes",
                      unit="episode"))
    return Demonstrations.concat(parts)


# ----------------------------------------------------------------------------------------------
# behaviour cloning


def soft_targets(gains: np.ndarray, mask: np.ndarray, tau: float) -> np.ndarray:
    """Per-state target distributions ``(N, K)``: softmax of the standardized gains / ``tau``
    over valid candidates; ``tau <= 0`` puts all mass on the best (ties share it)."""
    g = np.where(mask, gains, np.nan)
    mu = np.nanmean(g, axis=1, keepdims=True)
    sd = np.nanstd(g, axis=1, keepdims=True)
    z = (g - mu) / np.where(sd > 1e-12, sd, 1.0)
    z = np.where(mask, z, -np.inf)
    if tau <= 0:
        best = z >= (np.max(z, axis=1, keepdims=True) - 1e-9)
        t = best.astype(np.float64)
    else:
        t = np.exp((z - np.max(z, axis=1, keepdims=True)) / tau)
        t[~mask] = 0.0
    return t / t.sum(axis=1, keepdims=True)


def bc_train(policy: Any, demos: Demonstrations, epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
             tau: float = 0.5, seed: int = 0, weight_decay: float = 1e-5, log_fn: Any = None) -> dict[str, float]:
    """Behaviour cloning of ``policy`` (a set policy from :mod:`metaal.agents.networks`) on ``demos``.

    :returns: final ``loss``, ``loss_first_epoch`` and ``agreement`` (share of states where the policy's best candidate
        is one of the expert's best).
    """
    import torch as th

    th.manual_seed(seed)
    rng = np.random.default_rng(seed)
    N = len(demos)
    target = th.as_tensor(soft_targets(demos.gains, demos.mask, tau), dtype=th.float32)
    cand = th.as_tensor(demos.candidates, dtype=th.float32)
    glob = th.as_tensor(demos.global_, dtype=th.float32)
    mask = th.as_tensor(demos.mask.astype(np.float32))
    params = list(policy.features_extractor.parameters()) + list(policy.action_net.parameters())
    opt = th.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    policy.set_training_mode(True)
    loss_v = float("nan")
    first = float("nan")
    for ep in range(epochs):
        perm = rng.permutation(N)
        tot, cnt = 0.0, 0
        for s in range(0, N, batch_size):
            b = th.as_tensor(perm[s : s + batch_size])
            logits = policy.candidate_logits({"candidates": cand[b], "global": glob[b], "action_mask": mask[b]})
            logp = th.log_softmax(logits, dim=-1)
            loss = -(target[b] * logp.clamp(min=-1e4)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
            cnt += len(b)
        loss_v = tot / max(cnt, 1)
        if ep == 0:
            first = loss_v
        if log_fn is not None:
            log_fn(ep, loss_v)
    policy.set_training_mode(False)
    return {"loss": loss_v, "loss_first_epoch": first, "agreement": agreement(policy, demos)}


def agreement(policy: Any, demos: Demonstrations) -> float:
    """Share of states whose highest-logit candidate is among the expert's best (ties count)."""
    import torch as th

    with th.no_grad():
        logits = policy.candidate_logits({
            "candidates": th.as_tensor(demos.candidates, dtype=th.float32),
            "global": th.as_tensor(demos.global_, dtype=th.float32),
            "action_mask": th.as_tensor(demos.mask.astype(np.float32)),
        }).numpy()
    a = logits.argmax(1)
    g = np.where(demos.mask, demos.gains, -np.inf)
    best = g >= g.max(1, keepdims=True) - 1e-12
    return float(best[np.arange(len(a)), a].mean())
