"""Dataset-agnostic observations of an :class:`~metaal.state.ALState` (DESIGN.md, "Observations
that transfer across datasets").

A policy never sees raw features, so it works on any number of features and classes. Each step
offers ``K`` candidates drawn from the unlabeled pool (the top picks of margin, of
density-weighted uncertainty and of k-center, plus random ones; margin's best pick is always
candidate 0), each described by scale-free numbers, plus global features of the whole run.

Candidate features (``CANDIDATE_FEATURES``, one row per candidate, shape ``(K, F)``):

=====  =====================  ==========================================================  ========
index  name                   what and why                                                 range
=====  =====================  ==========================================================  ========
0      top_prob               max_c p(c|x): confidence of the current model                [1/C, 1]
1      margin                 p_1 - p_2: margin sampling's quantity (small = uncertain)      [0, 1]
2      entropy                H(p) / log C: normalized predictive entropy                    [0, 1]
3      disagreement           0.5 * ||p_t - p_{t-1}||_1: disagreement of the committee of    [0, 1]
                              the current and the previous model (query-by-committee
                              through time; cheap, no extra fits)
4      margin_rank            rank of its margin among all unlabeled items / n_unlabeled     [0, 1]
                              (0 = margin's best pick)
5      dist_labeled           distance to the nearest labeled item / median pairwise         [0, 4]
                              distance (k-center's quantity; clipped at 4)
6      density                1 / (1 + mean distance to its 10 nearest pool neighbours      (0, 1]
                              / median pairwise distance): high in dense regions
7      pred_class_share       share of the labels so far equal to its predicted class        [0, 1]
                              (favours under-represented classes when low)
8      from_margin            1 if proposed by margin                                      {0, 1}
9      from_density           1 if proposed by density-weighted uncertainty                {0, 1}
10     from_kcenter           1 if proposed by k-center                                    {0, 1}
11     from_random            1 if proposed at random                                      {0, 1}
=====  =====================  ==========================================================  ========

Global features (``GLOBAL_FEATURES``, shape ``(G,)``):

=====  =====================  ==========================================================  ========
0      budget_used            labels queried / budget (0 when no budget is set)             [0, 1]
1      log_labels             log(1 + labels so far) / log(1001)                           [0, ~1]
2      log_classes            log C / log(100)                                             [0, ~1]
3      label_entropy          entropy of the label counts / log C                            [0, 1]
4      est_quality            mean top probability over the pool: the model's own            [0, 1]
                              estimate of its accuracy (no test labels used)
5      margin_q10             10% quantile of the unlabeled margins                          [0, 1]
6      margin_q50             median of the unlabeled margins                                [0, 1]
7      margin_q90             90% quantile of the unlabeled margins                          [0, 1]
8      flip_rate              fraction of pool predictions that changed at the last refit     [0, 1]
9      frac_labeled           labels / pool size                                            [0, 1]
=====  =====================  ==========================================================  ========

**Version 2** (``obs-v2``, :data:`OBS_VERSIONS`; an :class:`Observer` built with
``version="obs-v2"``) is the observation of a policy that adapts to the protocol: cold start,
batches, imbalance. Its candidates add MaxHerding's next picks (the cold-start protocol's best
heuristic, always offered, flag ``from_coverage``; the caller's ``cover`` function supplies them)
and it can observe *within* a batch: the items already picked in the batch (``pending``) count
as labeled for the geometry and are no candidates. Candidate features: v1's indices 0-7, then

=====  =====================  ==========================================================  ========
8      coverage_gain          MaxHerding's gain of the candidate (how much kernel coverage   [0, 1]
                              of the pool it adds to the labels and the batch's picks) /
                              the largest gain among the candidates
9      dist_batch             distance to the nearest item picked earlier in this batch /    [0, 4]
                              median pairwise distance (4 when none): spreads a batch
10-14  from_margin, from_density, from_kcenter, from_coverage, from_random              {0, 1}
=====  =====================  ==========================================================  ========

Global features: v1's ten, then ``no_model`` (1 while fewer than two classes are labeled: the
model is only the label frequencies), ``log_batch`` (log of the batch size / log 100),
``batch_progress`` (picks made in this batch / batch size), ``min_class_ratio`` (smallest label
count / largest, over all classes: imbalance among the labels) and ``coverage`` (mean kernel
coverage of the pool by the labels and the batch's picks, MaxHerding's objective).

One implementation serves every caller: :func:`observe_batch` computes the observations of ``N``
episodes from arrays (``N = 1`` for :meth:`Observer.observe`, the single environments, a learned
policy in simulation and in the labeling session; ``N`` for the batched vector environment), so a
policy sees at deployment exactly the features it was trained on. Probability scores come from
:mod:`metaal.scores` and distances, density and the distance scale from :mod:`metaal.geometry`
(for pools beyond :data:`metaal.geometry.EXACT_DENSITY_MAX` items the density candidates are the
density-weighted top picks among the :data:`DENSITY_SHORTLIST` most uncertain items, and beyond
:data:`RANK_SAMPLE` unlabeled items the margin rank and quantiles are those of a fixed random
sample of that many, so that an observation costs about what margin sampling costs; training and
evaluation pools are far smaller, and exact). Observations are a pure function of the
arrays and the generators handed in: the same seed gives the same observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from metaal import scores
from metaal.geometry import PoolGeometry, gaussian_gain, pairwise_dist, update_min_dist
from metaal.state import ALState

#: Changes whenever the meaning, order or number of features changes; saved policies record it.
#: ``obs-v1`` stays what it was (the observation of ``policy:v1``); ``obs-v2`` is the adaptive
#: observation (module docstring).
OBS_VERSIONS = ("obs-v1", "obs-v2")
OBS_VERSION = OBS_VERSIONS[0]

CANDIDATE_FEATURES = (
    "top_prob",
    "margin",
    "entropy",
    "disagreement",
    "margin_rank",
    "dist_labeled",
    "density",
    "pred_class_share",
    "from_margin",
    "from_density",
    "from_kcenter",
    "from_random",
)
GLOBAL_FEATURES = (
    "budget_used",
    "log_labels",
    "log_classes",
    "label_entropy",
    "est_quality",
    "margin_q10",
    "margin_q50",
    "margin_q90",
    "flip_rate",
    "frac_labeled",
)
CANDIDATE_FEATURES_V2 = (
    *CANDIDATE_FEATURES[:8],
    "coverage_gain",
    "dist_batch",
    "from_margin",
    "from_density",
    "from_kcenter",
    "from_coverage",
    "from_random",
)
GLOBAL_FEATURES_V2 = (*GLOBAL_FEATURES, "no_model", "log_batch", "batch_progress", "min_class_ratio", "coverage")
N_CANDIDATE_FEATURES = len(CANDIDATE_FEATURES)
N_GLOBAL_FEATURES = len(GLOBAL_FEATURES)
#: MaxHerding's kernel bandwidth / the pool's distance scale (its default, the coverage features)
COVERAGE_BANDWIDTH = 0.5

DIST_CLIP = 4.0
#: upper bounds of the candidate / global features (the tables above); observations are clipped
#: to ``[0, high]`` wherever a policy sees them
CANDIDATE_HIGH = np.ones(N_CANDIDATE_FEATURES, dtype=np.float32)
CANDIDATE_HIGH[CANDIDATE_FEATURES.index("dist_labeled")] = DIST_CLIP
GLOBAL_HIGH = np.ones(N_GLOBAL_FEATURES, dtype=np.float32)
GLOBAL_HIGH[GLOBAL_FEATURES.index("log_labels")] = 10.0  # > 1 beyond 1000 labels (10 = 1e30 labels)
GLOBAL_HIGH[GLOBAL_FEATURES.index("log_classes")] = 10.0  # > 1 beyond 100 classes
CANDIDATE_HIGH_V2 = np.ones(len(CANDIDATE_FEATURES_V2), dtype=np.float32)
CANDIDATE_HIGH_V2[CANDIDATE_FEATURES_V2.index("dist_labeled")] = DIST_CLIP
CANDIDATE_HIGH_V2[CANDIDATE_FEATURES_V2.index("dist_batch")] = DIST_CLIP
GLOBAL_HIGH_V2 = np.concatenate([GLOBAL_HIGH, np.ones(5, dtype=np.float32)])
GLOBAL_HIGH_V2[GLOBAL_FEATURES_V2.index("log_batch")] = 10.0  # > 1 beyond batches of 100
#: large pools: the density candidates are taken among this many most uncertain items
DENSITY_SHORTLIST = 32
#: large pools: margin ranks and quantiles are those of a fixed sample of this many unlabeled items
RANK_SAMPLE = 20_000
_QUANTILES = (0.1, 0.5, 0.9)


def check_obs_version(version: str) -> str:
    """``version`` if it is one of :data:`OBS_VERSIONS`, else ValueError naming the known ones."""
    if version not in OBS_VERSIONS:
        raise ValueError(f"unknown observation version {version!r} (known: {', '.join(OBS_VERSIONS)})")
    return version


def feature_names(version: str = OBS_VERSION) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(candidate feature names, global feature names)`` of an observation version."""
    if check_obs_version(version) == OBS_VERSION:
        return CANDIDATE_FEATURES, GLOBAL_FEATURES
    return CANDIDATE_FEATURES_V2, GLOBAL_FEATURES_V2


def feature_high(version: str = OBS_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """``(candidate upper bounds (F,), global upper bounds (G,))`` of an observation version: a
    policy sees every feature clipped to ``[0, high]``."""
    if check_obs_version(version) == OBS_VERSION:
        return CANDIDATE_HIGH, GLOBAL_HIGH
    return CANDIDATE_HIGH_V2, GLOBAL_HIGH_V2


@dataclass
class Observation:
    """What a policy sees at one step.

    :param candidates: ``(K, F)`` float32 candidate features (zeros for padding rows).
    :param global_: ``(G,)`` float32 global features.
    :param mask: ``(K,)`` bool, False for padding rows (fewer than ``K`` unlabeled items).
    :param indices: ``(K,)`` int64 pool positions of the candidates (-1 for padding).
    :param version: the observation version (:data:`OBS_VERSIONS`).
    """

    candidates: np.ndarray
    global_: np.ndarray
    mask: np.ndarray
    indices: np.ndarray
    version: str = OBS_VERSION

    def as_dict(self) -> dict[str, np.ndarray]:
        """The Gymnasium ``Dict`` observation (``candidates``, ``global``, ``action_mask``),
        clipped to the observation space's bounds."""
        c_high, g_high = feature_high(self.version)
        return {
            "candidates": np.clip(self.candidates, 0.0, c_high),
            "global": np.clip(self.global_, 0.0, g_high),
            "action_mask": self.mask.astype(np.int8),
        }


@dataclass
class BatchObservation:
    """The observations of ``N`` episodes: ``candidates`` ``(N, K, F)``, ``global_`` ``(N, G)``,
    ``mask`` ``(N, K)``, ``indices`` ``(N, K)`` (as :class:`Observation`), and ``pred``
    ``(N, n)``, the predicted class of every pool item (kept for the next step's flip rate)."""

    candidates: np.ndarray
    global_: np.ndarray
    mask: np.ndarray
    indices: np.ndarray
    pred: np.ndarray
    version: str = OBS_VERSION

    def __getitem__(self, i: int) -> Observation:
        return Observation(self.candidates[i], self.global_[i], self.mask[i], self.indices[i], self.version)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The stacked Gymnasium observations, clipped like :meth:`Observation.as_dict` (whose
        clipping broadcasts over the episode axis)."""
        return Observation(self.candidates, self.global_, self.mask, self.indices, self.version).as_dict()


@dataclass
class V2Inputs:
    """What an ``obs-v2`` observation needs beyond v1's arrays, per episode: ``pending`` the items
    picked earlier in this batch (already in the ``labeled`` mask and ``min_dist`` handed to
    :func:`observe_batch`), ``batch_sizes`` ``(N,)``, ``forced`` the coverage heuristic's picks
    (offered as candidates), ``model_ready`` ``(N,)`` bool."""

    pending: Sequence[np.ndarray]
    batch_sizes: np.ndarray
    forced: Sequence[np.ndarray]
    model_ready: np.ndarray


def sorted_quantiles(a: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """``np.quantile(a, qs, axis=1).T`` (method "linear") of rows ``a`` ``(N, m)`` that are already
    sorted, ``(N, len(qs))``: numpy's virtual index and interpolation formulas, without its
    partition (the same numbers)."""
    m = a.shape[1]
    out = np.empty((a.shape[0], len(qs)))
    for j, q in enumerate(qs):
        virt = (m - 1) * np.float64(q)
        lo = hi = m - 1
        if virt < m - 1:
            lo = int(np.floor(virt))
            hi = lo + 1
        g = virt - np.floor(virt)
        x0, x1 = a[:, lo], a[:, hi]
        diff = x1 - x0
        out[:, j] = (x1 - diff * (1 - g)) if g >= 0.5 else (x0 + diff * g)  # numpy's _lerp
    return out


def take_candidates(chosen: dict[int, np.ndarray], order: np.ndarray, n: int, flag: int, k: int) -> None:
    """Add up to ``n`` new items from ``order`` (best first) to ``chosen`` (item -> source flags
    ``(4,)``), never more than ``k`` in all; items already chosen get source ``flag`` set too."""
    added = 0
    for j in order:
        if added >= n or len(chosen) >= k:
            break
        j = int(j)
        if j not in chosen:
            chosen[j] = np.zeros(4, dtype=np.float32)
            added += 1
        chosen[j][flag] = 1.0


class Observer:
    """Builds observations of active-learning states (:func:`observe_batch` over ``N`` episodes).

    :param k: number of candidates ``K`` offered per step.
    :param n_margin: candidates taken from margin's top picks (margin's best is always first).
    :param n_density: candidates from density-weighted uncertainty's top picks.
    :param n_kcenter: candidates farthest from the labeled set.
    :param version: the observation version (:data:`OBS_VERSIONS`).
    :param n_coverage: ``obs-v2``: MaxHerding's next picks offered as candidates (they replace
        random ones).
    :param drop: feature names (candidate or global) always observed as 0: a policy trained
        without them (a feature ablation) keeps not seeing them; saved in the policy's metadata.
    :param cover: ``obs-v2``: ``cover(state, n, pending) -> (m,)`` pool positions, the coverage
        heuristic's next ``n`` picks after the batch's ``pending`` ones (the strategies layer
        supplies MaxHerding's, :func:`metaal.strategies.make_observer`); ``[]`` where the pool is
        too large for it. None: no coverage candidates.
    The rest (at least ``k - n_margin - n_density - n_kcenter``) are uniformly random.
    """

    version = OBS_VERSION

    def __init__(
        self,
        k: int = 32,
        n_margin: int = 10,
        n_density: int = 6,
        n_kcenter: int = 6,
        version: str = OBS_VERSION,
        n_coverage: int = 4,
        cover: "Callable[[ALState, int, np.ndarray], np.ndarray] | None" = None,
        drop: Sequence[str] = (),
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1 (got {k})")
        self.k = int(k)
        self.n_margin = min(n_margin, self.k)
        self.n_density = n_density
        self.n_kcenter = n_kcenter
        self.version = check_obs_version(version)
        self.n_coverage = int(n_coverage)
        self.cover = cover
        names_c, names_g = feature_names(self.version)
        unknown = [f for f in drop if f not in names_c and f not in names_g]
        if unknown:
            raise ValueError(f"drop: unknown features {', '.join(unknown)} of {self.version}")
        self.drop = tuple(drop)
        self.drop_c = [names_c.index(f) for f in drop if f in names_c]
        self.drop_g = [names_g.index(f) for f in drop if f in names_g]

    @property
    def v2(self) -> bool:
        return self.version != OBS_VERSION

    @property
    def n_candidate_features(self) -> int:
        return len(feature_names(self.version)[0])

    @property
    def n_global_features(self) -> int:
        return len(feature_names(self.version)[1])

    def observe(
        self, state: ALState, rng: np.random.Generator, pending: np.ndarray | None = None, batch_size: int = 1
    ) -> Observation:
        """The observation of one state; random candidates are drawn from ``rng``. ``obs-v2``:
        ``pending`` ``(m,)`` are the items picked earlier in this batch of ``batch_size``."""
        return self.observe_states([state], [rng], None if pending is None else [pending], [batch_size])[0]

    def observe_states(
        self,
        states: Sequence[ALState],
        rngs: Sequence[np.random.Generator],
        pending: Sequence[np.ndarray] | None = None,
        batch_sizes: Sequence[int] | None = None,
    ) -> BatchObservation:
        """The observations of states over pools of the same size and class count (``pending``,
        ``batch_sizes``: per state, as in :meth:`observe`; ``obs-v2`` only)."""
        has_prev = np.array([s.prev_proba is not None for s in states])
        P_prev = prev_pred = None
        if has_prev.any():  # rows of states without a previous model are ignored (has_prev)
            P_prev = _stack([s.proba if s.prev_proba is None else s.prev_proba for s in states])
            prev_pred = _stack([s.pred if s.prev_pred is None else s.prev_pred for s in states])
        labeled = _stack([s.labeled_mask for s in states])
        min_dist = _stack([s.min_dist_labeled() for s in states])
        extra = None
        if self.v2:
            pend = ([np.asarray(p, np.int64).reshape(-1) for p in pending] if pending is not None
                    else [np.zeros(0, np.int64)] * len(states))
            if any(len(p) for p in pend):  # the batch's picks count as labeled for the geometry
                labeled, min_dist = labeled.copy(), min_dist.copy()
                for i, (s, p) in enumerate(zip(states, pend)):
                    if len(p):
                        labeled[i, p] = True
                        update_min_dist(min_dist[i], s.X_pool, p, s.geometry.sq_norms)
            forced = [np.zeros(0, np.int64) if self.cover is None or self.n_coverage < 1 else
                      np.asarray(self.cover(s, self.n_coverage, p), np.int64) for s, p in zip(states, pend)]
            extra = V2Inputs(
                pending=pend,
                batch_sizes=np.asarray(batch_sizes if batch_sizes is not None else [1] * len(states), dtype=float),
                forced=forced,
                model_ready=np.array([s.model_ready for s in states]),
            )
        return observe_batch(
            self,
            labeled=labeled,
            P=_stack([s.proba for s in states]),
            P_prev=P_prev,
            has_prev=has_prev,
            min_dist=min_dist,
            geometries=[s.geometry for s in states],
            labels=[s.y_labeled for s in states],
            n_queried=np.array([s.n_queried for s in states]),
            budgets=np.array([s.budget or 0 for s in states]),
            rngs=rngs,
            prev_pred=prev_pred,
            v2=extra,
        )

    @staticmethod
    def global_features(state: ALState) -> np.ndarray:
        """The global features ``(G,)`` of one state (no candidates drawn)."""
        unl = state.unlabeled_idx
        marg_unl = np.sort(scores.margin(state.proba[unl]))[None, :]
        prev = None if state.prev_pred is None else state.prev_pred[None, :]
        return global_batch(
            state.proba[None],
            state.pred[None],
            prev,
            marg_unl,
            np.array([len(unl)]),
            np.bincount(state.y_labeled, minlength=state.n_classes)[None],
            np.array([state.n_queried]),
            np.array([state.budget or 0]),
        )[0]


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)``; for one array a view with a leading axis (no copy of a large pool)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def global_batch(
    P: np.ndarray,
    pred: np.ndarray,
    prev_pred: np.ndarray | None,
    marg_unl_sorted: np.ndarray,
    n_unl: np.ndarray,
    counts: np.ndarray,
    n_queried: np.ndarray,
    budgets: np.ndarray,
    top: np.ndarray | None = None,
) -> np.ndarray:
    """Global features ``(N, G)`` float32 of ``N`` episodes (the table above).

    :param P: pool probabilities ``(N, n, C)``; ``pred``: their argmax ``(N, n)``;
        ``prev_pred``: the argmax before the last refit ``(N, n)``, or None (no refit yet; rows
        equal to ``pred`` for episodes without one).
    :param marg_unl_sorted: every episode's unlabeled margins (or those of its rank sample) sorted
        ascending, padded with ``inf`` to ``(N, m)``; ``n_unl`` ``(N,)`` how many are real.
    :param counts: each episode's label counts per class ``(N, C)``; ``n_queried`` / ``budgets``
        ``(N,)`` (budget 0: none); ``top``: the top probability of every pool item ``(N, n)`` when at hand.
    """
    N, n, C = P.shape
    if top is None:
        top = P.max(axis=2)
    G = np.zeros((N, N_GLOBAL_FEATURES))
    if len(n_unl) and (n_unl == n_unl[0]).all() and n_unl[0] > 0:
        qs = sorted_quantiles(marg_unl_sorted[:, : n_unl[0]], _QUANTILES)
    else:
        qs = np.stack(
            [np.quantile(marg_unl_sorted[i, : n_unl[i]], _QUANTILES) if n_unl[i] else np.zeros(3) for i in range(N)]
        )
    counts = np.asarray(counts, dtype=float)
    n_lab = counts.sum(1)
    lab_ent = np.zeros(N)
    for i in np.flatnonzero(n_lab > 0):  # over the classes present only (the same sums as ever)
        q = counts[i][counts[i] > 0] / n_lab[i]
        lab_ent[i] = -(q * np.log(q)).sum() / np.log(C)
    G[:, 0] = np.where(budgets > 0, np.minimum(n_queried / np.maximum(budgets, 1), 1.0), 0.0)
    G[:, 1] = np.log1p(n_lab) / np.log(1001.0)
    G[:, 2] = np.log(C) / np.log(100.0)
    G[:, 3] = lab_ent
    G[:, 4] = top.mean(axis=1)
    G[:, 5:8] = qs
    if prev_pred is not None:
        G[:, 8] = (prev_pred != pred).mean(axis=1)
    G[:, 9] = n_lab / n
    return G.astype(np.float32)


def observe_batch(
    observer: Observer,
    labeled: np.ndarray,
    P: np.ndarray,
    P_prev: np.ndarray | None,
    has_prev: np.ndarray,
    min_dist: np.ndarray,
    geometries: Sequence[PoolGeometry],
    labels: Sequence[np.ndarray],
    n_queried: np.ndarray,
    budgets: np.ndarray,
    rngs: Sequence[np.random.Generator],
    prev_pred: np.ndarray | None = None,
    dens: np.ndarray | None = None,
    P_class_major: np.ndarray | None = None,
    v2: V2Inputs | None = None,
) -> BatchObservation:
    """The observations of ``N`` episodes over pools of ``n`` items and ``C`` classes.

    :param observer: the candidate mix (``K`` and the heuristics' shares).
    :param labeled: labeled mask ``(N, n)``.
    :param P: pool probabilities ``(N, n, C)``; ``P_prev``: the probabilities before the last
        refit ``(N, n, C)`` or None; ``has_prev`` ``(N,)``: which episodes have them.
    :param min_dist: distance of every pool item to the nearest labeled one ``(N, n)``.
    :param geometries: each episode's :class:`~metaal.geometry.PoolGeometry`.
    :param labels: each episode's labels so far.
    :param n_queried: labels queried after the initial set ``(N,)``; ``budgets`` ``(N,)`` (0: none).
    :param rngs: each episode's generator (the random candidates).
    :param prev_pred: the argmax of ``P_prev`` ``(N, n)`` when at hand.
    :param dens: every pool item's density ``(N, n)`` when at hand (pools of exact geometry).
    :param P_class_major: ``P`` as ``(N, C, n)`` when at hand (contiguous class planes: faster).
    :param v2: the extra inputs of an ``obs-v2`` observation (None: ``obs-v1``).
    """
    ob = observer
    N, n, C = P.shape
    K = ob.k
    unlabeled = ~labeled
    n_unl = unlabeled.sum(1)
    src, axis = (P, -1) if P_class_major is None else (P_class_major, 1)
    top_all, second = scores.top_two(src, axis=axis)
    marg = top_all - second
    pred_all = scores.predicted_class(src, axis=axis)
    scale = np.array([g.scale for g in geometries])
    key_margin = np.where(labeled, np.inf, marg)
    if dens is not None:
        key_density = np.where(labeled, np.inf, -((1.0 - marg) * dens))
    else:
        key_density = np.full((N, n), np.inf)
        for i, g in enumerate(geometries):
            if g.exact:
                key_density[i] = np.where(labeled[i], np.inf, -((1.0 - marg[i]) * g.knn_density()))
            elif n_unl[i]:  # large pool: the density-weighted picks among the most uncertain items
                m = min(DENSITY_SHORTLIST, int(n_unl[i]))
                short = np.argpartition(key_margin[i], m - 1)[:m]
                key_density[i, short] = -((1.0 - marg[i, short]) * g.knn_density(short))
    keys = (key_margin, key_density, np.where(labeled, np.inf, -min_dist))
    takes = (ob.n_margin, ob.n_density, ob.n_kcenter)
    universe = None
    if N == 1 and n_unl[0] > RANK_SAMPLE:  # one large pool: read the orderings' heads only
        universe = _universe(keys, min(sum(takes), int(n_unl[0])))
    if v2 is None:
        cand_idx, flags, m_all = _propose(keys, takes, K, unlabeled, n_unl, rngs, universe)
    else:  # rows kept free for the coverage candidates
        n_free = min(max((len(f) for f in v2.forced), default=0), K - 1)
        cand_idx, flags, m_all = _propose(keys, takes, K - n_free, unlabeled, n_unl, rngs, universe)
        cand_idx, flags = _offer_forced(cand_idx, flags, m_all, v2.forced, K)
    # candidate features (padding rows use position 0 and are zeroed below)
    rows = np.arange(N)[:, None]
    safe = np.maximum(cand_idx, 0)
    p = P[rows, safe]  # (N, K, C)
    top, sec = scores.top_two(p)
    mc = top - sec
    ent = scores.entropy(p, normalized=True)
    dis = np.zeros((N, K))
    if P_prev is not None:
        dis = scores.disagreement(p, P_prev[rows, safe]) * has_prev[:, None]
    # margin ranks and quantiles: over every unlabeled item (sorted once for all episodes), or over
    # the pool's fixed rank sample when an episode has more than RANK_SAMPLE unlabeled items
    if N == 0 or n_unl.max() <= RANK_SAMPLE:
        n_ref = n_unl
        marg_sorted = np.sort(np.where(labeled, np.inf, marg), axis=1)
    else:
        refs = []
        for i in range(N):
            ref = geometries[i].rank_sample(RANK_SAMPLE) if n_unl[i] > RANK_SAMPLE else np.arange(n)
            refs.append(np.sort(marg[i, ref[unlabeled[i, ref]]][:RANK_SAMPLE]))
        n_ref = np.array([len(r) for r in refs])
        marg_sorted = np.full((N, int(n_ref.max())), np.inf)
        for i, r in enumerate(refs):
            marg_sorted[i, : len(r)] = r
    rank = np.stack([np.searchsorted(marg_sorted[i, : n_ref[i]], mc[i], side="left") for i in range(N)])
    rank = rank / np.maximum(n_ref, 1)[:, None]
    dist = np.minimum(min_dist[rows, safe] / scale[:, None], DIST_CLIP)
    dist[~np.isfinite(dist)] = DIST_CLIP
    dc = dens[rows, safe] if dens is not None else np.stack([g.knn_density(safe[i]) for i, g in enumerate(geometries)])
    counts = np.stack([np.bincount(lab, minlength=C) for lab in labels]).astype(float)  # (N, C)
    share = counts[rows, scores.predicted_class(p)] / np.maximum(counts.sum(1), 1.0)[:, None]
    valid = np.arange(K)[None, :] < m_all[:, None]
    cand = np.zeros((N, K, len(feature_names(ob.version)[0])), dtype=np.float32)
    cand[..., :8] = np.stack([top, mc, ent, dis, rank, dist, dc, share], axis=2)
    extra_glob = None
    if v2 is None:
        cand[..., 8:] = flags
    else:
        cand[..., 8:10], extra_glob = _v2_features(v2, safe, valid, min_dist, geometries, counts)
        cand[..., 10:] = flags
    cand[~valid] = 0.0
    if prev_pred is None and P_prev is not None:
        prev_pred = scores.predicted_class(P_prev)
    if prev_pred is not None:  # episodes without a previous model: no flips
        prev_pred = np.where(has_prev[:, None], prev_pred, pred_all)
    glob = global_batch(P, pred_all, prev_pred, marg_sorted, n_ref, counts, n_queried, budgets, top=top_all)
    if extra_glob is not None:
        glob = np.concatenate([glob, extra_glob.astype(np.float32)], axis=1)
    drop_c, drop_g = ob.drop_c, ob.drop_g
    if drop_c:
        cand[..., drop_c] = 0.0
    if drop_g:
        glob[:, drop_g] = 0.0
    return BatchObservation(cand, glob, valid, cand_idx, pred_all, ob.version)


def _offer_forced(
    cand_idx: np.ndarray, flags: np.ndarray, m_all: np.ndarray, forced: Sequence[np.ndarray], K: int
) -> tuple[np.ndarray, np.ndarray]:
    """``obs-v2``: offer each episode's ``forced`` items (the coverage heuristic's picks, in order)
    after its ``K'`` proposed candidates (``cand_idx`` ``(N, K')``, ``flags`` ``(N, K', 4)``): one
    already offered gains the ``from_coverage`` flag, another takes the next free row. Updates
    ``m_all`` in place; returns the candidates ``(N, K)`` and the five-column flags ``(N, K, 5)``
    (margin, density, k-center, coverage, random)."""
    N, Kp, _ = flags.shape
    idx = np.full((N, K), -1, dtype=np.int64)
    idx[:, :Kp] = cand_idx
    out = np.zeros((N, K, 5), dtype=np.float32)
    out[:, :Kp, :3] = flags[..., :3]
    out[:, :Kp, 4] = flags[..., 3]
    for i in range(N):
        for item in forced[i]:
            hit = np.flatnonzero(idx[i, : m_all[i]] == item)
            if len(hit):
                out[i, hit[0], 3] = 1.0
            elif m_all[i] < K:
                idx[i, m_all[i]] = int(item)
                out[i, m_all[i], 3] = 1.0
                m_all[i] += 1
    return idx, out


def _v2_features(
    v2: V2Inputs,
    safe: np.ndarray,
    valid: np.ndarray,
    min_dist: np.ndarray,
    geometries: Sequence[PoolGeometry],
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``obs-v2``'s ``coverage_gain`` and ``dist_batch`` of the candidates ``(N, K, 2)`` and its
    extra global features ``(N, 5)`` (module docstring). Large pools (beyond
    :data:`metaal.geometry.EXACT_DENSITY_MAX` items) measure the coverage on their fixed rank sample
    of :data:`RANK_SAMPLE` items."""
    N, K = safe.shape
    feats = np.zeros((N, K, 2))
    feats[..., 1] = DIST_CLIP
    glob = np.zeros((N, 5))
    for i, g in enumerate(geometries):
        sigma = COVERAGE_BANDWIDTH * g.scale
        gamma = 1.0 / (2.0 * sigma * sigma)
        ref = None if g.exact else g.rank_sample(RANK_SAMPLE)[:RANK_SAMPLE]
        md = min_dist[i] if ref is None else min_dist[i, ref]
        kmax = np.exp(-gamma * md * md)  # 0 where nothing is labeled (inf distance)
        sq = g.sq_norms if ref is None else g.sq_norms[ref]
        rows = safe[i, valid[i]]
        if len(rows):
            gain = gaussian_gain(g.X, rows, kmax, gamma, sq, ref)
            top = float(gain.max())
            feats[i, valid[i], 0] = gain / top if top > 0 else 0.0
            pend = v2.pending[i]
            if len(pend):
                d = pairwise_dist(g.X[rows], g.X[pend]).min(axis=1) / g.scale
                feats[i, valid[i], 1] = np.minimum(d, DIST_CLIP)
        glob[i, 4] = float(kmax.mean())
    bs = np.maximum(v2.batch_sizes, 1.0)
    glob[:, 0] = ~np.asarray(v2.model_ready, dtype=bool)
    glob[:, 1] = np.log(bs) / np.log(100.0)
    glob[:, 2] = np.array([len(p) for p in v2.pending]) / bs
    glob[:, 3] = counts.min(axis=1) / np.maximum(counts.max(axis=1), 1.0)
    return feats, glob


def _propose(
    keys: tuple[np.ndarray, ...],
    takes: tuple[int, ...],
    K: int,
    unlabeled: np.ndarray,
    n_unl: np.ndarray,
    rngs: Sequence[np.random.Generator],
    universe: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of ``N`` episodes: pool positions ``(N, K)`` (-1 padding), source flags
    ``(N, K, 4)`` and counts ``(N,)``.

    Definition (episode by episode): each heuristic ordering (``keys``: ``(N, n)``, smaller =
    better, ``inf`` for labeled items; stable, ties keep pool order) adds its next ``takes[f]``
    items not yet chosen, in turn (margin, density, k-center), never more than ``K`` in all; items
    already chosen gain the flag of every ordering that reaches them first. Then uniformly random
    unlabeled items (``rng.choice`` over the unchosen ones, in pool order) fill up to ``K``.
    Only the first ``L = sum(takes)`` items of an ordering can be reached, so they are found by
    partition for all episodes at once; episodes with fewer than ``L`` unlabeled items than
    others, or ``L > K``, follow the definition item by item (:func:`_propose_one`).
    ``universe`` (one episode): increasing pool positions that hold each ordering's first ``L``
    items and every tie of the last (:func:`_universe`): the orderings are read there only.
    """
    N, n = unlabeled.shape
    L = sum(takes)
    cand_idx = np.full((N, K), -1, dtype=np.int64)
    flags = np.zeros((N, K, 4), dtype=np.float32)
    m_all = np.zeros(N, dtype=np.int64)
    if N == 0:
        return cand_idx, flags, m_all
    if universe is not None:  # one large pool: the definition, read within the universe
        if n_unl[0] > 0:
            m_all[0] = _propose_one(keys, takes, K, 0, unlabeled[0], rngs[0], cand_idx, flags, universe)
        return cand_idx, flags, m_all
    l_eff = int(min(L, max(int(n_unl.min()), 1)))
    rows1 = np.arange(N)
    heads, orders = [], []
    slow = n_unl == 0
    for key in keys:
        part_idx = np.argpartition(key, l_eff - 1, axis=1)[:, :l_eff]
        thr = np.take_along_axis(key, part_idx, axis=1).max(axis=1)
        head = (key <= thr[:, None]) & unlabeled  # the first l_eff items and every tie of the last
        heads.append(head)
        cnt = head.sum(1)
        r, c = np.nonzero(head)
        pos = np.arange(len(r)) - (np.cumsum(cnt) - cnt)[r]
        H = max(int(cnt.max()), 1)
        Pm = np.full((N, H), -1, dtype=np.int64)
        Kv = np.full((N, H), np.inf)
        Pm[r, pos], Kv[r, pos] = c, key[r, c]
        orders.append(np.take_along_axis(Pm, np.argsort(Kv, axis=1, kind="stable"), axis=1))
        slow |= cnt < np.minimum(L, n_unl)  # an ordering with inf keys (no density known) or a short head
    if L > K:
        slow[:] = True
    member = np.zeros((N, n), dtype=bool)
    bits = np.zeros((N, n), dtype=np.uint8)
    added_all = []
    for flag, (order, n_take) in enumerate(zip(orders, takes)):
        valid = order >= 0
        Os = np.maximum(order, 0)
        is_new = valid & ~member[rows1[:, None], Os]
        before = np.cumsum(is_new, axis=1) - is_new
        visited = valid & (before < n_take)
        added = visited & is_new
        rv, cv = np.nonzero(visited)
        bits[rv, order[rv, cv]] |= np.uint8(1 << flag)
        ra, ca = np.nonzero(added)
        member[ra, order[ra, ca]] = True
        added_all.append(added)
    Ocat = np.concatenate(orders, axis=1)
    Acat = np.concatenate(added_all, axis=1)
    m_h = Acat.sum(1)
    sel = np.take_along_axis(Ocat, np.argsort(~Acat, axis=1, kind="stable"), axis=1)
    shifts = np.arange(3, dtype=np.uint8)
    for i in range(N):
        if slow[i]:
            if n_unl[i] > 0:
                m_all[i] = _propose_one(keys, takes, K, i, unlabeled[i], rngs[i], cand_idx, flags)
            continue
        mh = int(m_h[i])
        flags[i, :mh, :3] = (bits[i, sel[i, :mh], None] >> shifts) & 1
        cand_idx[i, :mh] = sel[i, :mh]
        n_rand = min(K - mh, int(n_unl[i]) - mh)
        if n_rand > 0:
            cand_idx[i, mh : mh + n_rand] = _random_fill(unlabeled[i], cand_idx[i, :mh], n_rand, rngs[i])
            flags[i, mh : mh + n_rand, 3] = 1.0
        m_all[i] = mh + max(n_rand, 0)
    return cand_idx, flags, m_all


def _universe(keys: tuple[np.ndarray, ...], L: int) -> np.ndarray | None:
    """For one large pool (keys ``(1, n)``): the increasing positions of every ordering's first
    ``L`` items and of every tie of the last, where :func:`_propose` can read all it needs; None
    when a tie is too large to be worth it."""
    parts = []
    for key in keys:
        row = key[0]
        thr = np.partition(row, L - 1)[L - 1]
        part = np.flatnonzero(row <= thr) if np.isfinite(thr) else np.flatnonzero(np.isfinite(row))
        if len(part) > 64 * L:  # a large tie (equal probabilities, say): no gain
            return None
        parts.append(part)
    return np.unique(np.concatenate(parts))


def _skip_taken(draw: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """The ``draw``-th smallest numbers ``(m,)`` of ``0, 1, 2, ...`` without the sorted ``taken``
    ones: ``np.delete(np.arange(N), taken)[draw]`` without building that array."""
    out = np.asarray(draw, dtype=np.int64).copy()
    for t in taken:  # ascending: every taken number at or below the running value shifts it up
        out += out >= t
    return out


def _propose_one(
    keys: tuple[np.ndarray, ...],
    takes: tuple[int, ...],
    K: int,
    i: int,
    unlabeled: np.ndarray,
    rng: np.random.Generator,
    cand_idx: np.ndarray,
    flags: np.ndarray,
    universe: np.ndarray | None = None,
) -> int:
    """:func:`_propose`'s definition for episode ``i``, item by item, over its unlabeled items or
    a ``universe`` of them (:func:`_universe`); fills ``cand_idx[i]`` and ``flags[i]``, returns
    the number of candidates."""
    cols = np.flatnonzero(unlabeled) if universe is None else universe
    chosen: dict[int, np.ndarray] = {}
    for flag, (key, n_take) in enumerate(zip(keys, takes)):
        row = key[i, cols]
        order = np.argsort(row, kind="stable")
        order = order[row[order] < np.inf]  # a large pool's items of unknown density
        take_candidates(chosen, order, n_take, flag, K)
    picks = cols[np.fromiter(chosen, dtype=np.int64)]
    m = len(picks)
    if m:
        cand_idx[i, :m] = picks
        flags[i, :m] = np.stack(list(chosen.values()))
    n_rand = min(K - m, int(unlabeled.sum()) - m)
    if n_rand > 0:
        cand_idx[i, m : m + n_rand] = _random_fill(unlabeled, picks, n_rand, rng)
        flags[i, m : m + n_rand, 3] = 1.0
    return m + max(n_rand, 0)


def _random_fill(unlabeled: np.ndarray, picks: np.ndarray, n_rand: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rand`` pool positions drawn uniformly without replacement among the unlabeled items
    (``unlabeled`` ``(n,)``) not in ``picks``: ``rng.choice`` over them in pool order."""
    unl = np.flatnonzero(unlabeled)
    taken = np.sort(np.searchsorted(unl, picks))  # the picks' numbers among the unlabeled
    draw = rng.choice(len(unl) - len(picks), size=n_rand, replace=False)
    return unl[_skip_taken(draw, taken)]
