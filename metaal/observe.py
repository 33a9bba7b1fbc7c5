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

Distances to the labeled set are updated incrementally by :class:`ALState` per new label; the
local density is computed once per pool against a fixed reference sample. Observations are a pure
function of the state and the generator handed in, so the same seed gives the same observation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaal.state import ALState, pairwise_dist

#: Changes whenever the meaning, order or number of features changes; saved policies record it.
OBS_VERSION = "obs-v1"

CANDIDATE_FEATURES = (
    "top_prob", "margin", "entropy", "disagreement", "margin_rank", "dist_labeled", "density",
    "pred_class_share", "from_margin", "from_density", "from_kcenter", "from_random",
)
GLOBAL_FEATURES = (
    "budget_used", "log_labels", "log_classes", "label_entropy", "est_quality",
    "margin_q10", "margin_q50", "margin_q90", "flip_rate", "frac_labeled",
)
N_CANDIDATE_FEATURES = len(CANDIDATE_FEATURES)
N_GLOBAL_FEATURES = len(GLOBAL_FEATURES)

_DENSITY_NEIGHBOURS = 10
_DENSITY_REFERENCE = 1000
_DIST_CLIP = 4.0


@dataclass
class Observation:
    """What a policy sees at one step.

    :param candidates: ``(K, F)`` float32 candidate features (zeros for padding rows).
    :param global_: ``(G,)`` float32 global features.
    :param mask: ``(K,)`` bool, False for padding rows (fewer than ``K`` unlabeled items).
    :param indices: ``(K,)`` int64 pool positions of the candidates (-1 for padding).
    """

    candidates: np.ndarray
    global_: np.ndarray
    mask: np.ndarray
    indices: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        """The Gymnasium ``Dict`` observation: ``candidates``, ``global``, ``action_mask``."""
        return {
            "candidates": self.candidates,
            "global": self.global_,
            "action_mask": self.mask.astype(np.int8),
        }


def margins(proba: np.ndarray) -> np.ndarray:
    """``p_1 - p_2`` per row of ``proba`` ``(n, C)``; shape ``(n,)``."""
    part = np.partition(proba, -2, axis=1)
    return part[:, -1] - part[:, -2]


def pool_density(state: ALState) -> np.ndarray:
    """Local density of every pool item, shape ``(n_pool,)``, cached in ``state.cache``."""
    d = state.cache.get("density")
    if d is None:
        n = state.n_pool
        rng = np.random.default_rng(n + 1)
        ref = state.X_pool[rng.choice(n, size=min(n, _DENSITY_REFERENCE), replace=False)]
        nn = min(_DENSITY_NEIGHBOURS + 1, len(ref))
        out = np.empty(n)
        for s in range(0, n, 2048):  # bounded memory
            dist = pairwise_dist(state.X_pool[s : s + 2048], ref)
            near = np.partition(dist, nn - 1, axis=1)[:, :nn]
            # drop the zero distance to itself when the item is in the reference sample
            out[s : s + 2048] = np.sort(near, axis=1)[:, 1:].mean(axis=1) if nn > 1 else near[:, 0]
        d = 1.0 / (1.0 + out / state.distance_scale())
        state.cache["density"] = d
    return d


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
    """Builds :class:`Observation` objects from an :class:`ALState`.

    :param k: number of candidates ``K`` offered per step.
    :param n_margin: candidates taken from margin's top picks (margin's best is always first).
    :param n_density: candidates from density-weighted uncertainty's top picks.
    :param n_kcenter: candidates farthest from the labeled set.
    The rest (at least ``k - n_margin - n_density - n_kcenter``) are uniformly random.
    """

    version = OBS_VERSION

    def __init__(self, k: int = 32, n_margin: int = 10, n_density: int = 6, n_kcenter: int = 6) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1 (got {k})")
        self.k = int(k)
        self.n_margin = min(n_margin, self.k)
        self.n_density = n_density
        self.n_kcenter = n_kcenter

    @property
    def n_candidate_features(self) -> int:
        return N_CANDIDATE_FEATURES

    @property
    def n_global_features(self) -> int:
        return N_GLOBAL_FEATURES

    def propose(self, state: ALState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pool positions ``(m,)`` with m <= K and their source flags ``(m, 4)``."""
        unl = state.unlabeled_idx
        if len(unl) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32)
        proba = state.proba[unl]
        marg = margins(proba)
        order_margin = np.argsort(marg, kind="stable")
        dens = pool_density(state)[unl]
        order_density = np.argsort(-((1.0 - marg) * dens), kind="stable")
        order_kcenter = np.argsort(-state.min_dist_labeled()[unl], kind="stable")
        chosen: dict[int, np.ndarray] = {}
        take_candidates(chosen, order_margin, self.n_margin, 0, self.k)
        take_candidates(chosen, order_density, self.n_density, 1, self.k)
        take_candidates(chosen, order_kcenter, self.n_kcenter, 2, self.k)
        rest = np.setdiff1d(np.arange(len(unl)), np.fromiter(chosen, dtype=np.int64), assume_unique=True)
        n_rand = min(self.k - len(chosen), len(rest))
        if n_rand > 0:
            for j in rng.choice(rest, size=n_rand, replace=False):
                chosen[int(j)] = np.array([0, 0, 0, 1], dtype=np.float32)
        local = np.fromiter(chosen, dtype=np.int64)
        flags = np.stack([chosen[int(j)] for j in local])
        return unl[local], flags

    def observe(self, state: ALState, rng: np.random.Generator) -> Observation:
        """The observation of ``state``; random candidates are drawn from ``rng``."""
        idx, flags = self.propose(state, rng)
        K, m = self.k, len(idx)
        C = state.n_classes
        cand = np.zeros((K, N_CANDIDATE_FEATURES), dtype=np.float32)
        mask = np.zeros(K, dtype=bool)
        indices = np.full(K, -1, dtype=np.int64)
        unl = state.unlabeled_idx
        marg_unl = margins(state.proba[unl]) if len(unl) else np.zeros(0)
        if m:
            p = state.proba[idx]
            p_sorted = np.sort(p, axis=1)
            top = p_sorted[:, -1]
            marg = top - p_sorted[:, -2]
            ent = -(np.clip(p, 1e-12, 1) * np.log(np.clip(p, 1e-12, 1))).sum(1) / np.log(C)
            if state.prev_proba is not None:
                dis = 0.5 * np.abs(p - state.prev_proba[idx]).sum(1)
            else:
                dis = np.zeros(m)
            rank = np.searchsorted(np.sort(marg_unl), marg, side="left") / max(len(unl), 1)
            scale = state.distance_scale()
            dist = np.minimum(state.min_dist_labeled()[idx] / scale, _DIST_CLIP)
            dist[~np.isfinite(dist)] = _DIST_CLIP
            dens = pool_density(state)[idx]
            counts = np.bincount(state.y_labeled, minlength=C).astype(float)
            share = counts[np.argmax(p, axis=1)] / max(counts.sum(), 1.0)
            cand[:m, :8] = np.stack([top, marg, ent, dis, rank, dist, dens, share], axis=1)
            cand[:m, 8:] = flags
            mask[:m] = True
            indices[:m] = idx
        glob = self.global_features(state, marg_unl)
        return Observation(cand, glob, mask, indices)

    @staticmethod
    def global_features(state: ALState, marg_unl: np.ndarray) -> np.ndarray:
        C = state.n_classes
        counts = np.bincount(state.y_labeled, minlength=C).astype(float)
        tot = counts.sum()
        if tot > 0:
            q = counts[counts > 0] / tot
            lab_ent = float(-(q * np.log(q)).sum() / np.log(C))
        else:
            lab_ent = 0.0
        budget_used = 0.0
        if state.budget:
            budget_used = min(state.n_queried / state.budget, 1.0)
        qs = np.quantile(marg_unl, [0.1, 0.5, 0.9]) if len(marg_unl) else np.zeros(3)
        flip = 0.0
        if state.prev_pred is not None:
            flip = float(np.mean(state.prev_pred != state.pred))
        g = [
            budget_used,
            np.log1p(state.n_labeled) / np.log(1001.0),
            np.log(C) / np.log(100.0),
            lab_ent,
            float(state.proba.max(axis=1).mean()),
            qs[0],
            qs[1],
            qs[2],
            flip,
            state.n_labeled / state.n_pool,
        ]
        return np.asarray(g, dtype=np.float32)
