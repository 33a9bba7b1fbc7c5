"""Pool geometry, written once: distances made scale-free, local density, distance to the labels.

A policy never sees raw distances (they depend on the dataset's units and dimension): every
distance is divided by the pool's **distance scale**, the median pairwise distance of a fixed
sample. :class:`PoolGeometry` holds one pool's scale and its **observation density** (the density
feature and candidate source of :mod:`metaal.observe`):

``knn_density(x) = 1 / (1 + mean distance of x to its 10 nearest items of a fixed reference sample
of at most 1,000 pool items / scale)``  (the nearest one dropped: the item itself when it is in
the sample), in (0, 1], high in dense regions.

It is not the ``density`` *strategy*'s information density (:mod:`metaal.strategies.diversity`:
mean similarity to the whole pool, Settles and Craven 2008), which weighs uncertainty differently.

Pools of up to :data:`EXACT_DENSITY_MAX` items get the density of every item at first use (one
pass over the pool). Larger pools compute it only for the rows asked for (candidates and the
shortlist of :mod:`metaal.observe`) and keep it, so that a query costs about what margin sampling
costs even with a million rows. Both give the same value for a row, up to the last bits of the
matrix products.

The samples are drawn from generators seeded by the pool size, so the geometry of a pool is the
same in training, in simulation and in a labeling session.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

#: pools up to this size get every item's density at first use (all training and evaluation pools)
EXACT_DENSITY_MAX = 20_000
#: items in the distance-scale sample / in the density reference sample
SCALE_SAMPLE = 1000
DENSITY_REFERENCE = 1000
DENSITY_NEIGHBOURS = 10
_CHUNK = 16  # rows per block: small temporaries (large ones are slow to allocate)
_BLOCK_ELEMENTS = 16_384  # elements of one block of distances


def pairwise_sq(
    A: np.ndarray, B: np.ndarray, sb: np.ndarray | None = None, sa: np.ndarray | None = None
) -> np.ndarray:
    """Squared Euclidean distances between rows of ``A`` (n, d) and ``B`` (m, d), ``(n, m)``,
    as ``(|a|^2 + |b|^2) - 2 a.b`` (may be slightly negative); ``sb``: ``|b|^2`` ``(m,)`` and
    ``sa``: ``|a|^2`` ``(n,)`` when at hand (:func:`row_sq_norms`: the same values). Two ``(n, m)``
    arrays are allocated, no more (large temporaries are slow to allocate)."""
    sa = (A * A).sum(1)[:, None] if sa is None else sa[:, None]
    sb = (B * B).sum(1)[None, :] if sb is None else sb[None, :]
    ab = A @ B.T
    ab *= 2.0  # exact
    out = sa + sb
    out -= ab
    return out


def pairwise_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of ``A`` (n, d) and ``B`` (m, d), shape ``(n, m)``."""
    d = pairwise_sq(A, B)
    np.maximum(d, 0.0, out=d)
    return np.sqrt(d, out=d)


def distance_scale(X: np.ndarray) -> float:
    """Median pairwise Euclidean distance of ``X`` (n, d) on a sample of at most
    :data:`SCALE_SAMPLE` rows drawn with ``default_rng(n)``; 1.0 for a degenerate pool."""
    n = X.shape[0]
    rng = np.random.default_rng(n)
    s = X[rng.choice(n, size=min(n, SCALE_SAMPLE), replace=False)]
    m = len(s)
    if m < 2:
        return 1.0
    sq = (s * s).sum(1)
    upper = []  # the upper triangle, row by row, computed in blocks of rows (small temporaries)
    for r0 in range(0, m, _CHUNK):
        block = pairwise_sq(s[r0 : r0 + _CHUNK], s, sq)
        upper.extend(block[j, r0 + j + 1 :] for j in range(len(block)))
    d2 = np.concatenate(upper)
    med = float(np.median(np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)))
    return med if med > 1e-12 else 1.0


class PoolGeometry:
    """The scale and the observation density of one pool ``X`` ``(n, d)`` (computed on first use).

    :param X: pool features (standardized), shape ``(n, d)``.
    """

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        self.n = int(X.shape[0])
        self._scale: float | None = None
        self._density = np.full(self.n, np.nan)
        self._ref: np.ndarray | None = None
        self._rank_sample: np.ndarray | None = None
        self._sq_norms: np.ndarray | None = None

    @property
    def scale(self) -> float:
        """:func:`distance_scale` of the pool."""
        if self._scale is None:
            self._scale = distance_scale(self.X)
        return self._scale

    @property
    def exact(self) -> bool:
        """True when every item's density is computed at first use (``n <= EXACT_DENSITY_MAX``)."""
        return self.n <= EXACT_DENSITY_MAX

    def knn_density(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The observation's k-nearest-neighbour density of pool rows ``rows`` (m,) (None: every
        row), shape ``(m,)``."""
        if self.exact:
            if np.isnan(self._density[0]):  # an exact pool is filled whole, at once
                self._fill(np.arange(self.n))
            return self._density if rows is None else self._density[rows]
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        missing = rows[np.isnan(self._density[rows])]
        if len(missing):
            self._fill(np.unique(missing))
        return self._density[rows]

    def rank_sample(self, size: int) -> np.ndarray:
        """A fixed random sample of pool positions, ``(min(n, 2 * size),)`` in random order (drawn
        once with ``default_rng(n + 2)``): large pools estimate margin ranks and quantiles on its
        first ``size`` unlabeled items."""
        if self._rank_sample is None or len(self._rank_sample) != min(self.n, 2 * size):
            rng = np.random.default_rng(self.n + 2)
            self._rank_sample = rng.choice(self.n, size=min(self.n, 2 * size), replace=False)
        return self._rank_sample

    @property
    def sq_norms(self) -> np.ndarray:
        """``|x|^2`` of every pool row ``(n,)`` (:func:`row_sq_norms`, computed once)."""
        if self._sq_norms is None:
            self._sq_norms = row_sq_norms(self.X)
        return self._sq_norms

    def known_density(self) -> np.ndarray:
        """The densities computed so far, ``(n,)``, NaN where not (yet) computed."""
        return self._density

    def _fill(self, rows: np.ndarray) -> None:
        if self._ref is None:
            rng = np.random.default_rng(self.n + 1)
            self._ref = self.X[rng.choice(self.n, size=min(self.n, DENSITY_REFERENCE), replace=False)]
            self._ref_sq = (self._ref * self._ref).sum(1)
        ref = self._ref
        nn = min(DENSITY_NEIGHBOURS + 1, len(ref))
        scale = self.scale
        for s in range(0, len(rows), _CHUNK):  # bounded memory
            r = rows[s : s + _CHUNK]
            block = self.X[int(r[0]) : int(r[-1]) + 1] if _is_range(r) else self.X[r]
            # the nn nearest by squared distance, then the distances of those only (sqrt is monotone:
            # the same values as partitioning pairwise_dist)
            d2 = np.partition(pairwise_sq(block, ref, self._ref_sq), nn - 1, axis=1)[:, :nn]
            near = np.sqrt(np.maximum(d2, 0.0))
            mean = np.sort(near, axis=1)[:, 1:].mean(axis=1) if nn > 1 else near[:, 0]
            self._density[r] = 1.0 / (1.0 + mean / scale)


def _is_range(r: np.ndarray) -> bool:
    """True when ``r`` is a run of consecutive rows (a slice of the pool, no copy)."""
    return len(r) > 0 and int(r[-1]) - int(r[0]) == len(r) - 1


def row_sq_norms(X: np.ndarray) -> np.ndarray:
    """``|x|^2`` of every row of ``X`` (n, d), ``(n,)``, in blocks of rows (small temporaries);
    the same values, bit for bit, as :func:`pairwise_sq` computes for any block of the rows (a
    row's sum does not depend on the rows around it)."""
    out = np.empty(X.shape[0])
    step = max(_BLOCK_ELEMENTS // max(X.shape[1], 1), 1)
    for s in range(0, X.shape[0], step):
        A = X[s : s + step]
        out[s : s + step] = (A * A).sum(1)
    return out


def update_min_dist(min_dist: np.ndarray, X: np.ndarray, new: np.ndarray, sq: np.ndarray | None = None) -> None:
    """Fold the distances of every pool row of ``X`` (n, d) to the rows ``new`` (m,) into
    ``min_dist`` ``(n,)`` (the distance to the nearest labeled item), in place, in blocks of rows
    (small temporaries). ``sq``: ``|x|^2`` of every row of ``X`` ``(n,)`` (:func:`row_sq_norms`,
    :attr:`PoolGeometry.sq_norms`) when at hand: a new label then costs one pass of products
    instead of also recomputing the pool's norms (the same distances, bit for bit)."""
    B = X[np.asarray(new, dtype=np.int64)]
    sb = (B * B).sum(1)
    step = max(_BLOCK_ELEMENTS // max(len(B), 1), 1)
    for s in range(0, X.shape[0], step):
        d = pairwise_sq(X[s : s + step], B, sb, None if sq is None else sq[s : s + step])
        np.maximum(d, 0.0, out=d)
        np.minimum(min_dist[s : s + step], np.sqrt(d, out=d).min(axis=1), out=min_dist[s : s + step])


#: elements of one block of candidate-by-pool distances (:func:`row_blocks`)
BLOCK_ELEMENTS = 1 << 20


def row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of ``range(n_rows)`` whose blocks of ``n_cols`` columns hold about
    :data:`BLOCK_ELEMENTS` elements."""
    step = max(BLOCK_ELEMENTS // max(n_cols, 1), 1)
    for s in range(0, n_rows, step):
        yield slice(s, min(s + step, n_rows))


def gaussian_gain(
    X: np.ndarray,
    cand: np.ndarray,
    kmax: np.ndarray,
    gamma: float,
    sq: np.ndarray | None = None,
    ref: np.ndarray | None = None,
) -> np.ndarray:
    """MaxHerding's gain of adding each pool row ``cand`` (m,) of ``X`` ``(n, d)``:
    ``mean_u max(k(u, x) - kmax(u), 0)`` with ``k(u, x) = exp(-gamma ||u - x||^2)`` and ``kmax``
    ``(n,)`` the current coverage of every pool item; shape ``(m,)``. ``sq``: the squared row
    norms ``(n,)`` when at hand. In blocks of candidates. ``ref``: pool positions ``(r,)`` to
    average over instead of the whole pool (a sample, for large pools; ``kmax`` and ``sq`` then
    hold those rows' values, ``(r,)``)."""
    U = X if ref is None else X[ref]
    n = U.shape[0]
    sq = (U * U).sum(1) if sq is None else sq
    out = np.empty(len(cand))
    for sl in row_blocks(len(cand), n):
        d2 = pairwise_sq(X[cand[sl]], U, sq)
        np.maximum(d2, 0.0, out=d2)
        d2 *= -gamma
        kern = np.exp(d2, out=d2)
        kern -= kmax[None, :]
        np.maximum(kern, 0.0, out=kern)
        out[sl] = kern.mean(axis=1)
    return out
