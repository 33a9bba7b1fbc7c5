"""Model-free strategies for small budgets and cold starts: typicality and coverage of the pool.

``typiclust`` (TypiClust), ``probcover`` (ProbCover) and ``maxherding`` (MaxHerding) look at the
pool's features only, never at a model: they work from zero labels (``needs_model = False``) and
pick whole batches with the batch variant of their paper. Distances are Euclidean on the
standardized pool features (:attr:`ALState.X_pool`); radii and kernel widths are given in units of
the pool's distance scale (:meth:`ALState.distance_scale`, the median pairwise distance), so one
default fits every dataset.

What depends on the pool only (ProbCover's radius and ball sizes, MaxHerding's first gains) is
kept in ``state.cache`` under keys without the ``fit:`` prefix, and updated incrementally as labels
arrive; a state whose labels went away (an undo) is recomputed from scratch. Clusterings are seeded
with the strategy's ``random_state`` (default 0), so the picks are a pure function of the pool and
the labeled set: a resumed labeling session asks what an uninterrupted one would have asked.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

from metaal.errors import ConfigError
from metaal.geometry import gaussian_gain, pairwise_sq, row_blocks
from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, register

# blocks of pairwise distances (metaal.geometry.row_blocks, 8 MB of float64): O(n^2) work in bounded memory


def pool_sq_norms(state: ALState) -> np.ndarray:
    """Squared norms ``|x|^2`` of the pool rows ``(n,)``, kept in ``state.cache``."""
    sq = state.cache.get("coverage:sq_norms")
    if sq is None:
        sq = (state.X_pool * state.X_pool).sum(1)
        state.cache["coverage:sq_norms"] = sq
    return sq


def _labeled_superset(state: ALState, mask: np.ndarray) -> bool:
    """True when every item labeled in ``mask`` ``(n,)`` is still labeled (no undo since)."""
    return mask.shape == state.labeled_mask.shape and not (mask & ~state.labeled_mask).any()


# ----------------------------------------------------------------------------------------------
# TypiClust


def typicality(X: np.ndarray, k: int) -> np.ndarray:
    """TypiClust's typicality of every row of ``X`` ``(m, d)`` within ``X``, shape ``(m,)``:
    ``1 / mean distance to its k nearest other rows`` (``k`` capped at ``m - 1``; a single row
    gets 1). Computed in blocks of rows, ``O(m^2 d)`` time."""
    m = X.shape[0]
    if m == 1:
        return np.ones(1)
    kk = min(int(k), m - 1)
    sq = (X * X).sum(1)
    out = np.empty(m)
    for sl in row_blocks(m, m):
        d2 = pairwise_sq(X[sl], X, sq)
        d2[np.arange(sl.stop - sl.start), np.arange(sl.start, sl.stop)] = np.inf  # not its own neighbour
        near = np.partition(d2, kk - 1, axis=1)[:, :kk]
        out[sl] = 1.0 / (np.sqrt(np.maximum(near, 0.0)).mean(axis=1) + 1e-12)
    return out


def cluster_pool(X: np.ndarray, n_clusters: int, random_state: int, minibatch_above: int = 50) -> np.ndarray:
    """Cluster labels ``(n,)`` of ``X`` ``(n, d)`` into ``n_clusters`` clusters: k-means
    (k-means++, one initialization, seeded by ``random_state``), mini-batch k-means above
    ``minibatch_above`` clusters as in TypiClust's code. With duplicate rows some clusters may
    stay empty (scikit-learn's warning about it is silenced)."""
    n_clusters = int(min(n_clusters, X.shape[0]))
    if n_clusters <= 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    if n_clusters <= minibatch_above:
        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=int(random_state))
    else:
        km = MiniBatchKMeans(n_clusters=n_clusters, n_init=1, batch_size=5000, random_state=int(random_state))
    with warnings.catch_warnings():  # duplicate rows: fewer distinct clusters, which callers handle
        warnings.simplefilter("ignore", ConvergenceWarning)
        return np.asarray(km.fit_predict(X), dtype=np.int64)


@register("typiclust")
class TypiClust(Strategy):
    """TypiClust: the most typical item of each of the largest uncovered clusters.

    For a batch of ``k``: cluster the whole pool (labeled and unlabeled) into ``min(|L| + k,
    max_clusters)`` clusters with k-means (``random_state``; mini-batch k-means above 50 clusters);
    a cluster holding a labeled item is *covered*. Then ``k`` times: take the cluster with the
    fewest labeled and already picked items, the largest first (ties: the lowest cluster id), and
    pick its unlabeled item of highest typicality ``1 / mean distance to its K nearest neighbours in
    the cluster`` (``K = k_neighbors``, 20 as in the paper, capped at the cluster size minus one).
    With ``|L| + k`` clusters at least ``k`` are uncovered, so a batch is one item from each of the
    ``k`` largest uncovered clusters; the fallback to covered clusters (fewest labels first) is the
    paper's code for degenerate clusterings (duplicates).

    Model-free: the same rule from zero labels (the first pick is the most typical item of the
    pool). ``score``: the ranking of ``select(state, 1)`` spread over every unlabeled item
    (``-rank of the item's cluster in that order + typicality / (1 + the cluster's largest
    typicality)``, so the top score is the pick). Cost per query: one k-means on the pool plus the
    typicality of the ``k`` chosen clusters (``O(m^2 d)`` for a cluster of ``m`` items: the whole
    pool at the very first query of a cold start).

    Reference: Hacohen, Dekel and Weinshall, "Active learning on a budget: opposite strategies
    suit high and low budgets", ICML 2022 (TypiClust); scikit-activeml's ``TypiClust``.
    """

    name = "typiclust"
    needs_model = False

    def __init__(self, k_neighbors: int = 20, max_clusters: int = 500, random_state: int = 0) -> None:
        if int(k_neighbors) < 1:
            raise ConfigError(f"typiclust: k_neighbors must be >= 1 (got {k_neighbors})")
        if int(max_clusters) < 1:
            raise ConfigError(f"typiclust: max_clusters must be >= 1 (got {max_clusters})")
        self.k_neighbors = int(k_neighbors)
        self.max_clusters = int(max_clusters)
        self.random_state = int(random_state)

    def _clusters(self, state: ALState, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster labels ``(n,)``, sizes ``(c,)`` and labeled counts ``(c,)`` for a batch of ``k``."""
        c = min(state.n_labeled + k, self.max_clusters, state.n_pool)
        labels = cluster_pool(state.X_pool, c, self.random_state)
        c = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=c)
        n_lab = np.bincount(labels[state.labeled_mask], minlength=c)
        return labels, sizes, n_lab

    @staticmethod
    def _order(count: np.ndarray, sizes: np.ndarray, open_: np.ndarray) -> np.ndarray:
        """Cluster ids with unlabeled items left, fewest labels first, then largest, then lowest id."""
        ids = np.flatnonzero(open_)
        return ids[np.lexsort((ids, -sizes[ids], count[ids]))]

    def _typicality(self, state: ALState, members: np.ndarray) -> np.ndarray:
        return typicality(state.X_pool[members], self.k_neighbors)

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        k = check_k(k, len(state.unlabeled_idx))
        labels, sizes, count = self._clusters(state, k)
        free = ~state.labeled_mask
        left = np.bincount(labels[free], minlength=len(sizes))  # unlabeled, unpicked members
        typ: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        out: list[int] = []
        for _ in range(k):
            cid = int(self._order(count, sizes, left > 0)[0])
            if cid not in typ:
                members = np.flatnonzero(labels == cid)
                typ[cid] = (members, self._typicality(state, members))
            members, t = typ[cid]
            t = np.where(free[members], t, -np.inf)
            j = int(members[int(np.argmax(t))])  # ties: the lowest position
            out.append(j)
            free[j] = False
            count[cid] += 1
            left[cid] -= 1
        return np.asarray(out, dtype=np.int64)

    def score(self, state: ALState) -> np.ndarray:
        labels, sizes, count = self._clusters(state, 1)
        unl = state.unlabeled_idx
        left = np.bincount(labels[unl], minlength=len(sizes))
        rank = np.zeros(len(sizes))
        order = self._order(count, sizes, left > 0)
        rank[order] = np.arange(len(order))
        s = np.empty(state.n_pool)
        for cid in order:
            members = np.flatnonzero(labels == cid)
            t = self._typicality(state, members)
            s[members] = -rank[cid] + t / (1.0 + t.max())
        return s[unl]


# ----------------------------------------------------------------------------------------------
# ProbCover

def distance_to_other_cluster(
    X: np.ndarray, clusters: np.ndarray, rows: np.ndarray | None = None, sq: np.ndarray | None = None
) -> np.ndarray:
    """Distance of rows ``rows`` (m,) of ``X`` ``(n, d)`` (None: every row) to their nearest row of
    another cluster (``clusters`` ``(n,)``), shape ``(m,)`` (inf with a single cluster); ``sq``:
    the squared row norms ``(n,)`` when at hand."""
    n = X.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    sq = (X * X).sum(1) if sq is None else sq
    out = np.empty(len(rows))
    for sl in row_blocks(len(rows), n):
        r = rows[sl]
        d2 = pairwise_sq(X[r], X, sq)
        d2[clusters[r][:, None] == clusters[None, :]] = np.inf
        out[sl] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def ball_counts(X: np.ndarray, centres: np.ndarray, delta: float, sq: np.ndarray | None = None) -> np.ndarray:
    """For every row of ``X`` ``(n, d)``: how many of the rows ``centres`` (m,) of ``X`` lie
    within distance ``delta`` (``<=``), shape ``(n,)`` int64. ``sq``: the squared row norms
    ``(n,)`` when at hand. In blocks of centres, ``O(n m d)``."""
    n = X.shape[0]
    centres = np.asarray(centres, dtype=np.int64)
    sq = (X * X).sum(1) if sq is None else sq
    out = np.zeros(n, dtype=np.int64)
    d2max = float(delta) ** 2
    for sl in row_blocks(len(centres), n):
        out += (pairwise_sq(X[centres[sl]], X, sq) <= d2max).sum(axis=0)
    return out


def purity_radius(d_other: np.ndarray, alpha: float, scale: float) -> float:
    """ProbCover's radius: the largest ``delta`` whose purity ``mean(d_other > delta)`` (the share
    of ``delta``-balls holding a single pseudo-class) is at least ``alpha``, i.e. just below the
    ``floor((1 - alpha) n) + 1``-th smallest ``d_other`` ``(n,)``; at most ``scale`` (the pool's
    median distance: a ball that large is no neighbourhood) and at least ``1e-6 x scale``."""
    d = np.sort(np.asarray(d_other, dtype=np.float64))
    m = int(np.floor((1.0 - float(alpha)) * len(d)))
    r = float(d[m]) * (1.0 - 1e-9) if m < len(d) else np.inf
    return float(min(max(r, 1e-6 * scale), scale))


#: rows whose ball purity estimates ProbCover's radius on large pools (``O(m n d)``)
PURITY_SAMPLE = 2000


def probcover_radius(X: np.ndarray, n_classes: int, alpha: float, random_state: int, scale: float) -> float:
    """ProbCover's radius on the pool ``X`` ``(n, d)``: :func:`purity_radius` with ``n_classes``
    k-means clusters (``random_state``) as pseudo-classes, the purity measured on a fixed sample of
    at most :data:`PURITY_SAMPLE` rows (drawn with ``default_rng(n + 3)``; every row of a smaller
    pool)."""
    n = X.shape[0]
    clusters = cluster_pool(X, max(int(n_classes), 2), random_state)
    rows = None if n <= PURITY_SAMPLE else np.sort(np.random.default_rng(n + 3).choice(n, PURITY_SAMPLE, replace=False))
    return purity_radius(distance_to_other_cluster(X, clusters, rows), alpha, scale)


@register("probcover")
class ProbCover(Strategy):
    """ProbCover: greedy maximum coverage of the pool by balls of radius ``delta``.

    The radius (``delta=None``, the paper's rule): cluster the pool into ``C`` (the number of
    classes) k-means clusters as pseudo-labels (``random_state``), and take the largest ``delta``
    whose *purity* (the share of items whose ``delta``-ball holds no item of another cluster) is at
    least ``alpha`` (0.95), exactly (:func:`purity_radius`; the paper and scikit-activeml search a
    grid), at most the pool's distance scale. ``delta=x`` fixes it at ``x`` distance scales.

    Items within ``delta`` of a labeled item are *covered*. Each pick (one at a time within a
    batch, the paper's batch variant) is the unlabeled item whose ball holds the most uncovered
    items (ties: the lowest position); its ball becomes covered. Once everything is covered, picks
    are uniformly random among the unlabeled items (as the paper's code). Model-free: from zero
    labels the first pick is the item with the most neighbours within ``delta``. ``score``: the
    number of uncovered items in each unlabeled item's ball.

    Cost: once per pool, the radius (one k-means, then the purity of at most 2,000 sampled balls,
    ``O(2000 n d)``) and every ball's size (``O(n^2 d)`` in blocks, no ``n x n`` matrix kept);
    then each new label costs ``O(n m d)`` for the ``m`` items its ball newly covers (``O(n^2 d)``
    over a whole run at most).

    Reference: Yehuda, Dekel, Hacohen and Weinshall, "Active learning through a covering lens",
    NeurIPS 2022 (ProbCover); scikit-activeml's ``ProbCover``.
    """

    name = "probcover"
    needs_model = False

    def __init__(self, delta: float | None = None, alpha: float = 0.95, random_state: int = 0) -> None:
        if delta is not None and not float(delta) > 0:
            raise ConfigError(f"probcover: delta must be > 0 (got {delta})")
        if not 0.0 < float(alpha) < 1.0:
            raise ConfigError(f"probcover: alpha must be in (0, 1) (got {alpha})")
        self.delta = None if delta is None else float(delta)
        self.alpha = float(alpha)
        self.random_state = int(random_state)

    def radius(self, state: ALState) -> float:
        """The ball radius in the pool's distance units (cached per pool)."""
        key = f"probcover:radius:{self.delta}:{self.alpha}:{self.random_state}"
        r = state.cache.get(key)
        if r is None:
            scale = state.distance_scale()
            if self.delta is not None:
                r = self.delta * scale
            else:
                r = probcover_radius(state.X_pool, state.n_classes, self.alpha, self.random_state, scale)
            state.cache[key] = r
        return float(r)

    def _coverage(self, state: ALState) -> tuple[np.ndarray, np.ndarray]:
        """``(covered (n,) bool, degree (n,) int)``: items within the radius of a labeled item, and
        the number of uncovered items in every item's ball; updated for the labels added since the
        last call."""
        r = self.radius(state)
        key = f"probcover:coverage:{r!r}"
        hit = state.cache.get(key)
        X, sq = state.X_pool, pool_sq_norms(state)
        covered_now = state.min_dist_labeled() <= r
        if hit is None or not _labeled_superset(state, hit["labeled"]):
            full = state.cache.get(f"probcover:full:{r!r}")
            if full is None:
                full = ball_counts(X, np.arange(state.n_pool), r, sq)
                state.cache[f"probcover:full:{r!r}"] = full
            degree = full - ball_counts(X, np.flatnonzero(covered_now), r, sq)
        else:
            new = np.flatnonzero(covered_now & ~hit["covered"])
            degree = hit["degree"] - ball_counts(X, new, r, sq) if len(new) else hit["degree"]
        state.cache[key] = {"labeled": state.labeled_mask.copy(), "covered": covered_now, "degree": degree}
        return covered_now, degree

    def score(self, state: ALState) -> np.ndarray:
        return self._coverage(state)[1][state.unlabeled_idx].astype(np.float64)

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        covered, degree = self._coverage(state)
        covered, degree = covered.copy(), degree.copy()
        r = self.radius(state)
        X, sq = state.X_pool, pool_sq_norms(state)
        free = ~state.labeled_mask
        out: list[int] = []
        for _ in range(k):
            cand = np.flatnonzero(free)
            d = degree[cand]
            if d.max() <= 0:  # everything covered: random among the rest (the paper's code)
                out.extend(int(i) for i in rng.choice(cand, size=k - len(out), replace=False))
                break
            j = int(cand[int(np.argmax(d))])
            out.append(j)
            free[j] = False
            if len(out) < k:
                ball = (pairwise_sq(X[j : j + 1], X, sq)[0] <= r * r) & ~covered
                covered |= ball
                degree -= ball_counts(X, np.flatnonzero(ball), r, sq)
        return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# MaxHerding


@register("maxherding")
class MaxHerding(Strategy):
    """MaxHerding: greedy maximization of the kernel (generalized) coverage of the pool.

    Coverage of a labeled set ``L``: ``C(L) = mean_{u in pool} max_{l in L} k(u, l)`` with the
    Gaussian kernel ``k(u, x) = exp(-||u - x||^2 / (2 sigma^2))``, ``sigma = bandwidth x`` the
    pool's distance scale (``bandwidth`` 0.5 by default). Each pick (one at a time within a
    batch, the paper's greedy algorithm) is the unlabeled ``x`` of largest gain ``mean_u max(k(u,
    x) - max_{l in L} k(u, l), 0)``, then ``x`` joins ``L`` (ties: the lowest position). The
    coverage of every item by the labels comes from :meth:`ALState.min_dist_labeled` (the kernel
    decreases with distance). From zero labels the gain is the kernel density, so the first pick is
    the pool's densest item.

    The coverage is monotone submodular, so gains only shrink as labels arrive: the gains are
    computed once per pool (``O(n^2 d)`` in blocks) and kept as upper bounds; each pick re-evaluates
    only the candidates whose bound is on top, 64 at a time (lazy greedy, the same picks as plain
    greedy), each in ``O(n d)``. ``score``: the exact gain of every unlabeled item (``O(n^2 d)``).

    Reference: Bae, Noh and Sutherland, "Generalized coverage for more robust low-budget active
    learning", ECCV 2024 (MaxHerding); scikit-activeml's ``MaxHerding``.
    """

    name = "maxherding"
    needs_model = False
    #: candidates re-evaluated together by the lazy greedy
    LAZY_BLOCK = 64

    def __init__(self, bandwidth: float = 0.5) -> None:
        if not float(bandwidth) > 0:
            raise ConfigError(f"maxherding: bandwidth must be > 0 (got {bandwidth})")
        self.bandwidth = float(bandwidth)

    def gamma(self, state: ALState) -> float:
        """``1 / (2 sigma^2)`` of the kernel on this pool."""
        sigma = self.bandwidth * state.distance_scale()
        return 1.0 / (2.0 * sigma * sigma)

    def _kmax(self, state: ALState) -> np.ndarray:
        md = state.min_dist_labeled()
        return np.exp(-self.gamma(state) * md * md)  # 0 where nothing is labeled (inf distance)

    def score(self, state: ALState) -> np.ndarray:
        return gaussian_gain(
            state.X_pool, state.unlabeled_idx, self._kmax(state), self.gamma(state), pool_sq_norms(state)
        )

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.select_after(state, np.zeros(0, dtype=np.int64), k)

    def select_after(self, state: ALState, pending: np.ndarray, k: int = 1) -> np.ndarray:
        """The next ``k`` greedy picks once the unlabeled items ``pending`` ``(m,)`` (picked
        earlier in the same batch by someone else, a learned policy say) have joined the labeled
        set: they cover the pool like labels and are not picked again. ``pending`` empty:
        :meth:`select`."""
        pending = np.asarray(pending, dtype=np.int64).reshape(-1)
        unl = state.unlabeled_idx
        k = check_k(k, len(unl) - len(pending))
        X, sq, gamma = state.X_pool, pool_sq_norms(state), self.gamma(state)
        kmax = self._kmax(state)
        key = f"maxherding:bounds:{self.bandwidth!r}"
        hit = state.cache.get(key)
        if hit is None or not _labeled_superset(state, hit["labeled"]):
            bound = np.full(state.n_pool, -np.inf)
            bound[unl] = gaussian_gain(X, unl, kmax, gamma, sq)
            exact = np.zeros(state.n_pool, dtype=bool)
            exact[unl] = True
            if len(pending):  # exact gains under the state's coverage: keep them for later queries
                state.cache[key] = {"labeled": state.labeled_mask.copy(), "bound": bound.copy()}
        else:
            bound = hit["bound"].copy()
            bound[state.labeled_mask] = -np.inf
            exact = np.zeros(state.n_pool, dtype=bool)
        for j in pending:  # bounds stay upper bounds: coverage only grows (submodular)
            bound[j] = -np.inf
            d2 = np.maximum(pairwise_sq(X[j : j + 1], X, sq)[0], 0.0)
            kmax = np.maximum(kmax, np.exp(-gamma * d2))
            exact[:] = False
        out: list[int] = []
        for b in range(k):
            j = self._lazy_pick(X, sq, kmax, gamma, bound, exact)
            if b == 0 and not len(pending):  # bounds under the state's own coverage: valid later
                state.cache[key] = {"labeled": state.labeled_mask.copy(), "bound": bound.copy()}
            out.append(j)
            bound[j] = -np.inf
            d2 = np.maximum(pairwise_sq(X[j : j + 1], X, sq)[0], 0.0)
            kmax = np.maximum(kmax, np.exp(-gamma * d2))
            exact[:] = False
        return np.asarray(out, dtype=np.int64)

    def _lazy_pick(
        self, X: np.ndarray, sq: np.ndarray, kmax: np.ndarray, gamma: float, bound: np.ndarray, exact: np.ndarray
    ) -> int:
        """The candidate of largest exact gain (ties: the lowest position), re-evaluating the
        upper bounds ``bound`` ``(n,)`` (``-inf`` for non-candidates; updated in place) from the
        top; ``exact`` ``(n,)`` marks the bounds that are exact gains under ``kmax``."""
        while True:
            order = np.lexsort((np.arange(len(bound)), -bound))
            head = order[0]
            if exact[head]:
                return int(head)
            top = order[: self.LAZY_BLOCK]
            top = top[~exact[top] & np.isfinite(bound[top])]
            bound[top] = gaussian_gain(X, top, kmax, gamma, sq)
            exact[top] = True


#: pools beyond this many items get no coverage candidates in an ``obs-v2`` observation
#: (MaxHerding's first gains cost ``O(n^2 d)`` once per pool)
COVER_MAX = 10_000


def coverage_candidates(state: ALState, n: int, pending: np.ndarray) -> np.ndarray:
    """MaxHerding's next ``n`` picks ``(m,)`` after the batch's ``pending`` items: the coverage
    candidates of an ``obs-v2`` observation (:class:`metaal.observe.Observer`'s ``cover``); none
    on pools of more than :data:`COVER_MAX` items."""
    left = len(state.unlabeled_idx) - len(pending)
    if state.n_pool > COVER_MAX or left < 1 or n < 1:
        return np.zeros(0, dtype=np.int64)
    return MaxHerding().select_after(state, pending, min(int(n), left))
