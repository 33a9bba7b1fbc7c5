"""Strategies that look at the geometry of the pool: information density, core-set (k-center
greedy) and DBAL's weighted k-means diverse batches."""
from __future__ import annotations

import numpy as np

from metaal.errors import ConfigError
from metaal.state import ALState, pairwise_dist
from metaal.strategies.base import Strategy, check_k, register, top_k
from metaal.strategies.uncertainty import entropy_score, least_confident_score, margin_score

#: size of the reference sample of the pool used by the density (O(n * m) time and memory)
DENSITY_REFERENCE = 1000


def uncertainty(proba: np.ndarray, measure: str) -> np.ndarray:
    """A non-negative uncertainty per row of ``proba`` ``(n, C)``: ``entropy`` (nats),
    ``least_confident`` (``1 - p_1``) or ``margin`` (``1 - (p_1 - p_2)``); shape ``(n,)``."""
    if measure == "entropy":
        return entropy_score(proba)
    if measure == "least_confident":
        return least_confident_score(proba)
    if measure == "margin":
        return 1.0 + margin_score(proba)
    raise ConfigError(f"unknown uncertainty measure {measure!r} (known: entropy, least_confident, margin)")


def pool_similarity(state: ALState, kind: str = "gaussian", reference: int = DENSITY_REFERENCE) -> np.ndarray:
    """Mean similarity of every pool item to the pool, shape ``(n_pool,)``, in ``[0, 1]``.

    ``kind="gaussian"``: ``exp(-||x - u||^2 / (2 s^2))`` with ``s`` the median pairwise distance
    (:meth:`ALState.distance_scale`); ``kind="cosine"``: ``(1 + cos(x, u)) / 2`` (shifted to be
    non-negative, since standardized features give cosines of both signs). The mean runs over a
    fixed sample of at most ``reference`` pool items (seeded by the pool size, so it is a pure
    function of the pool), which keeps the cost at ``O(n * m)``. The result depends on the pool
    only, so it is cached once per state in ``state.cache`` (a key without the ``fit:`` prefix,
    kept across refits).
    """
    if kind not in ("gaussian", "cosine"):
        raise ConfigError(f"unknown similarity {kind!r} (known: gaussian, cosine)")
    key = f"density_sim:{kind}:{int(reference)}"
    sim = state.cache.get(key)
    if sim is not None:
        return sim
    X = state.X_pool
    n = state.n_pool
    ref_rng = np.random.default_rng(n + 7)
    ref = X[np.sort(ref_rng.choice(n, size=min(n, int(reference)), replace=False))]
    sim = np.empty(n)
    if kind == "gaussian":
        s2 = 2.0 * state.distance_scale() ** 2
        for lo in range(0, n, 2048):
            d = pairwise_dist(X[lo:lo + 2048], ref)
            sim[lo:lo + 2048] = np.exp(-(d * d) / s2).mean(axis=1)
    else:
        def unit(A: np.ndarray) -> np.ndarray:
            nrm = np.linalg.norm(A, axis=1, keepdims=True)
            return A / np.where(nrm > 1e-12, nrm, 1.0)

        R = unit(ref)
        for lo in range(0, n, 2048):
            sim[lo:lo + 2048] = ((1.0 + unit(X[lo:lo + 2048]) @ R.T) / 2.0).mean(axis=1)
    state.cache[key] = sim
    return sim


@register("density")
class InformationDensity(Strategy):
    """Information density (density-weighted uncertainty).

    ``score(x) = phi(x) * (1/m sum_{u in U_ref} sim(x, u))^beta`` with ``phi`` an uncertainty
    measure (``measure``: ``entropy`` by default, ``least_confident`` or ``margin``), ``sim`` a
    Gaussian (default, bandwidth = median pairwise distance) or shifted cosine similarity, ``U_ref``
    a fixed sample of at most 1,000 pool items, and ``beta`` (default 1) the weight of density.
    Settles & Craven use cosine on text features; on standardized features the Gaussian kernel
    is the non-negative choice, hence the default.

    Reference: Settles & Craven, "An analysis of active learning strategies for sequence labeling
    tasks", EMNLP 2008; Settles 2009, sec. 5.1.
    """

    name = "density"

    def __init__(self, beta: float = 1.0, measure: str = "entropy", similarity: str = "gaussian") -> None:
        if beta < 0:
            raise ConfigError(f"density: beta must be >= 0 (got {beta})")
        uncertainty(np.full((1, 2), 0.5), measure)  # validates the name
        if similarity not in ("gaussian", "cosine"):
            raise ConfigError(f"density: unknown similarity {similarity!r} (known: gaussian, cosine)")
        self.beta = float(beta)
        self.measure = measure
        self.similarity = similarity

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        sim = pool_similarity(state, self.similarity)[unl]
        return uncertainty(state.proba[unl], self.measure) * np.power(np.maximum(sim, 0.0), self.beta)


def k_center_greedy(X: np.ndarray, min_dist: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center: repeatedly take the candidate farthest from the labeled set and the items
    already taken.

    :param X: pool features ``(n, d)``.
    :param min_dist: distance of every pool item to its nearest labeled item ``(n,)`` (not
        modified).
    :param candidates: positions that may be picked ``(m,)``.
    :returns: ``k`` distinct positions ``(k,)``; ties go to the lowest candidate position.
    """
    d = min_dist[candidates].astype(np.float64, copy=True)
    Xc = X[candidates]
    picked: list[int] = []
    for _ in range(k):
        j = int(np.argmax(d))
        picked.append(j)
        d[j] = -np.inf
        if len(picked) < k:
            np.minimum(d, pairwise_dist(Xc, Xc[j:j + 1])[:, 0], out=d)
            d[picked] = -np.inf
    return candidates[np.asarray(picked, dtype=np.int64)]


@register("coreset")
class CoreSet(Strategy):
    """Core-set selection by greedy k-center.

    ``x* = argmax_{x in U} min_{l in L} ||x - l||``; within a batch the picked item joins ``L``
    before the next pick. Distances to the labeled set come from
    :meth:`ALState.min_dist_labeled` (updated incrementally per label), so one pick costs
    ``O(n)`` and a batch of ``k`` costs ``O(k n d)``. ``score`` is the distance to the labeled set.

    Reference: Sener & Savarese, "Active learning for convolutional neural networks: a core-set
    approach", ICLR 2018 (Algorithm 1, k-center greedy).

    Needs no model: from zero labels every distance is infinite and the first pick is the first
    unlabeled pool item (the pool is in the split's random order), then the farthest-first
    traversal goes on.
    """

    name = "coreset"
    needs_model = False

    def score(self, state: ALState) -> np.ndarray:
        return state.min_dist_labeled()[state.unlabeled_idx].copy()

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        return k_center_greedy(state.X_pool, state.min_dist_labeled(), unl, k)


@register("dbal")
class DiverseMiniBatch(Strategy):
    """Diverse mini-batch active learning (DBAL).

    Prefilter the ``min(beta * k, n_unlabeled)`` items of smallest margin ``p_1 - p_2``
    (``beta`` default 10), cluster them into ``k`` clusters with k-means weighted by the
    informativeness ``w = 1 - (p_1 - p_2)``, and label the item nearest each cluster centre
    (distinct items; if k-means leaves a centre whose nearest items are all taken, the next
    nearest is used).

    For ``k = 1`` the single centre is the informativeness-weighted mean of the ``beta`` most
    uncertain items, so DBAL picks the most *central* of margin's top ``beta`` candidates, which
    is in general not margin's top pick.

    Reference: Zhdanov, "Diverse mini-batch active learning", arXiv:1901.05954, 2019.
    """

    name = "dbal"

    def __init__(self, beta: int = 10) -> None:
        if int(beta) < 1:
            raise ConfigError(f"dbal: beta must be >= 1 (got {beta})")
        self.beta = int(beta)

    def score(self, state: ALState) -> np.ndarray:
        return margin_score(state.proba[state.unlabeled_idx])

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        from sklearn.cluster import KMeans

        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        s = self.score(state)
        m = min(self.beta * k, len(unl))
        top = top_k(s, m)
        cand = unl[top]
        X = state.X_pool[cand]
        w = 1.0 + s[top]  # informativeness 1 - margin, in [0, 1]
        w = np.maximum(w, 1e-12)
        if k == 1:
            centres = (w[:, None] * X).sum(axis=0, keepdims=True) / w.sum()
        elif m == k:
            return cand.copy()
        else:
            km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(0, 2**31 - 1)))
            km.fit(X, sample_weight=w)
            centres = km.cluster_centers_
        d = pairwise_dist(centres, X)  # (k, m)
        taken = np.zeros(m, dtype=bool)
        out = []
        for c in range(len(centres)):
            order = np.argsort(d[c], kind="stable")
            j = int(order[~taken[order]][0])
            taken[j] = True
            out.append(int(cand[j]))
        return np.asarray(out, dtype=np.int64)
