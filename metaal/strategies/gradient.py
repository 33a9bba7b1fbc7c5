"""Gradient-based strategies: expected gradient length (EGL) and BADGE.

Both use the gradient of the log loss of a multinomial logistic (softmax) layer on the pool
features with a bias, ``z = [x, 1]`` of length ``d + 1``. For class ``c`` and probabilities ``p``
``(C,)`` the gradient with respect to the weight matrix ``W`` ``(C, d+1)`` is the outer product
``(p - e_c) z^T``, so its Euclidean (Frobenius) norm is ``||p - e_c|| * ||z||``.

* For the ``logreg`` learner this is the exact gradient of the model being trained (scikit-learn's
  binary logistic regression has one weight vector instead of two; its gradient norm is the
  multinomial one divided by ``sqrt(2)`` for every item, so rankings are identical).
* For any other learner (random forest, SVM, ...) the same formula is applied to the pool
  features and the learner's probabilities: the gradient of a softmax head on the raw features.
  It is a documented proxy, not an error; no learner is refused.

Probabilities come from ``state.proba`` (cached at the last refit); nothing is predicted again.
"""
from __future__ import annotations

import numpy as np

from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, register, top_k


def _augmented_norm2(X: np.ndarray) -> np.ndarray:
    """``||[x, 1]||^2`` per row of ``X`` ``(n, d)``; shape ``(n,)``."""
    return (X * X).sum(axis=1) + 1.0


def egl_score(proba: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Expected gradient length ``sum_c p_c ||p - e_c|| ||[x, 1]||`` for probabilities ``proba``
    ``(n, C)`` and features ``X`` ``(n, d)``; shape ``(n,)``.

    ``||p - e_c||^2 = ||p||^2 - 2 p_c + 1``, so no ``(n, C, C)`` array is built.
    """
    sq = (proba * proba).sum(axis=1, keepdims=True)
    norms = np.sqrt(np.maximum(sq - 2.0 * proba + 1.0, 0.0))  # (n, C): ||p - e_c||
    return (proba * norms).sum(axis=1) * np.sqrt(_augmented_norm2(X))


@register("egl")
class ExpectedGradientLength(Strategy):
    """Expected gradient length for a multinomial logistic model.

    ``score(x) = sum_c p(c|x) * ||grad_W loss(x, c)|| = sum_c p(c|x) ||p - e_c|| ||[x, 1]||``,
    the expected norm of the training gradient if ``x`` were labeled, under the model's own
    predictive distribution. Exact for ``logreg``; for other learners the same formula on the pool
    features (see the module docstring).

    Reference: Settles, Craven & Ray, "Multiple-instance active learning", NIPS 2008; Settles &
    Craven, "An analysis of active learning strategies for sequence labeling tasks", EMNLP 2008.
    """

    name = "egl"

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        return egl_score(state.proba[unl], state.X_pool[unl])


def badge_embedding_parts(proba: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two factors of BADGE's gradient embedding ``g = a outer z``.

    :param proba: ``(n, C)`` probabilities; :param X: ``(n, d)`` features.
    :returns: ``a = p - e_yhat`` ``(n, C)`` (``yhat = argmax p``) and ``z = [x, 1]`` ``(n, d+1)``.
        The embedding ``g_i = a_i z_i^T`` (``C * (d+1)`` numbers) is never built: inner products
        factorize, ``<g_i, g_j> = <a_i, a_j> <z_i, z_j>``.
    """
    a = proba.copy()
    a[np.arange(len(a)), proba.argmax(axis=1)] -= 1.0
    z = np.hstack([X, np.ones((len(X), 1))])
    return a, z


def kmeanspp_outer(a: np.ndarray, z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on embeddings ``g_i = a_i outer z_i``; ``k`` distinct positions ``(k,)``.

    The first seed is the embedding of largest norm (as in the BADGE reference implementation);
    each next one is drawn with probability proportional to its squared distance to the nearest
    chosen seed (items at distance 0 are never drawn unless all are, then uniformly among the
    unchosen). Memory ``O(n (C + d))``; time ``O(k n (C + d))``.
    """
    n = len(a)
    na = (a * a).sum(axis=1)
    nz = (z * z).sum(axis=1)
    norm2 = na * nz
    first = int(np.argmax(norm2))
    chosen = [first]
    taken = np.zeros(n, dtype=bool)
    taken[first] = True

    def sqdist(j: int) -> np.ndarray:
        return np.maximum(norm2 + norm2[j] - 2.0 * (a @ a[j]) * (z @ z[j]), 0.0)

    d2 = sqdist(first)
    while len(chosen) < k:
        w = np.where(taken, 0.0, d2)
        total = w.sum()
        if total > 0 and np.isfinite(total):
            j = int(rng.choice(n, p=w / total))
        else:
            free = np.flatnonzero(~taken)
            j = int(free[rng.integers(0, len(free))])
        chosen.append(j)
        taken[j] = True
        np.minimum(d2, sqdist(j), out=d2)
    return np.asarray(chosen, dtype=np.int64)


@register("badge")
class BADGE(Strategy):
    """Batch active learning by diverse gradient embeddings.

    Each unlabeled ``x`` is embedded as the last-layer gradient of the loss for its hypothesised
    label ``yhat = argmax_c p(c|x)``: ``g_x = (p - e_yhat) outer [x, 1]`` (for logreg the exact
    gradient; for other learners the softmax-head proxy of the module docstring). k-means++
    seeding on the ``g_x`` picks the batch: uncertain items have long embeddings, diverse ones
    are far apart. The first pick is the embedding of largest norm, as in the authors' code, so
    for ``k = 1`` BADGE returns the largest-norm embedding (deterministic). Memory stays
    ``O(n (C + d))`` because ``<g_i, g_j> = <p_i - e_i, p_j - e_j> <z_i, z_j>``.

    ``score`` is the embedding norm ``||p - e_yhat|| ||[x, 1]||``.

    Reference: Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep batch active learning by
    diverse, uncertain gradient lower bounds", ICLR 2020.
    """

    name = "badge"

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        a, z = badge_embedding_parts(state.proba[unl], state.X_pool[unl])
        return np.sqrt((a * a).sum(axis=1) * (z * z).sum(axis=1))

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        if k == 1:
            return unl[top_k(self.score(state), 1)]
        a, z = badge_embedding_parts(state.proba[unl], state.X_pool[unl])
        return unl[kmeanspp_outer(a, z, k, rng)]
