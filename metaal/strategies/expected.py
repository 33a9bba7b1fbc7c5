"""Decision-theoretic strategies that estimate what a label would change: Monte-Carlo expected
error reduction (``eer``) and probabilistic active learning with kernel frequency estimates
(``xpal``).

Both need a model fitted on at least two classes (``needs_model = True``); with fewer, the
learner predicts the smoothed label frequencies and the scores are flat (the loop's fallback
decides what is asked then). Both take the ``k`` best items for a batch (top-k: neither paper
defines a batch variant).
"""
from __future__ import annotations

import copy

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

from metaal import scores
from metaal.errors import ConfigError
from metaal.geometry import pairwise_sq
from metaal.learners import Learner
from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, register, top_k
from metaal.strategies.diversity import pool_similarity

# ----------------------------------------------------------------------------------------------
# expected error reduction


def expected_loss(proba: np.ndarray, loss: str) -> float:
    """The model's own estimate of its total loss on rows of ``proba`` ``(m, C)``: ``zero_one``
    ``sum_x (1 - max_c p(c|x))`` (Roy and McCallum's 0/1 loss) or ``log`` ``sum_x H[p(.|x)]``
    (their log loss, the entropy in nats)."""
    if loss == "zero_one":
        return float(scores.least_confident(proba).sum())
    if loss == "log":
        return float(scores.entropy(proba).sum())
    raise ConfigError(f"eer: unknown loss {loss!r} (known: zero_one, log)")


def _warm_copy(learner: Learner) -> Learner:
    """A copy of the fitted ``learner`` that starts its next fit from the current solution when
    the estimator supports it (LogisticRegression's ``warm_start``) and the labeled classes do
    not change; other estimators refit from scratch."""
    twin = Learner(copy.deepcopy(learner.estimator), learner.n_classes, learner.name, warm_start=True)
    twin.classes_ = learner.classes_.copy()
    twin.prior = None if learner.prior is None else learner.prior.copy()
    twin.n_fits = learner.n_fits
    return twin


def logreg_c(learner: Learner) -> float | None:
    """``C`` of the learner's fitted scikit-learn ``LogisticRegression`` when its refits can be
    solved by :class:`metaal.torch_learners.BatchedLogReg` (the same objective: L2 penalty,
    intercept, no class weights); None for any other estimator or setting."""
    est = learner.estimator
    if type(est) is not LogisticRegression or learner.prior is not None or not hasattr(est, "coef_"):
        return None
    p = est.get_params()
    l2 = p.get("penalty", "l2") in ("l2", "deprecated") and p.get("l1_ratio") in (None, 0, 0.0)
    if l2 and p["fit_intercept"] and p["class_weight"] is None:
        return float(p["C"])
    return None


def _logreg_init(learner: Learner, d: int) -> np.ndarray:
    """The fitted LogisticRegression's weights as one ``(d + 1, C)`` matrix (last row: the
    intercepts; BatchedLogReg's layout), the binary weight vector split symmetrically."""
    est = learner.estimator
    W = np.zeros((d + 1, learner.n_classes))
    cls = np.asarray(est.classes_, dtype=np.int64)
    coef = np.vstack([est.coef_.T, est.intercept_[None, :]])  # (d + 1, K)
    if coef.shape[1] == 1:
        W[:, cls[1]] = coef[:, 0] / 2.0
        W[:, cls[0]] = -coef[:, 0] / 2.0
    else:
        W[:, cls] = coef
    return W


#: elements of the padded training matrices of one batch of EER refits (bounded memory)
EER_BATCH_ELEMENTS = 4_000_000
#: iterations of the batched warm-started refits (Newton converges in a few; L-BFGS on large
#: problems is stopped there: one added label moves the optimum little)
EER_MAX_ITER = 30


def _batched_losses(
    state: ALState, cand: np.ndarray, cls: np.ndarray, evaluation: np.ndarray, loss: str, C_reg: float
) -> np.ndarray:
    """The expected loss on ``evaluation`` of the refit on the labels plus ``(cand[i], cls[i])``,
    for every pair ``i``; ``(N,)``. All refits are solved together by
    :class:`~metaal.torch_learners.BatchedLogReg` (float64 on the CPU, warm-started from the
    current weights), in batches of about :data:`EER_BATCH_ELEMENTS` padded elements."""
    import torch  # heavy: only this fast path of EER needs it

    from metaal.torch_learners import BatchedLogReg

    lab = state.labeled_idx
    X_lab, y_lab = state.X_pool[lab], state.labels[lab]
    L, d = X_lab.shape
    X_eval = state.X_pool[evaluation]
    W0 = _logreg_init(state.learner, d)
    step = max(1, EER_BATCH_ELEMENTS // ((L + 1) * (d + 1)))
    out = np.empty(len(cand))
    for s in range(0, len(cand), step):
        c, y = cand[s:s + step], cls[s:s + step]
        N = len(c)
        Xp = np.empty((N, L + 1, d))
        Xp[:, :L] = X_lab
        Xp[:, L] = state.X_pool[c]
        yp = np.empty((N, L + 1), dtype=np.int64)
        yp[:, :L] = y_lab
        yp[:, L] = y
        model = BatchedLogReg(state.n_classes, C=C_reg, device="cpu", dtype=torch.float64, tol=1e-6,
                              max_iter=EER_MAX_ITER)
        model.fit_padded(Xp, yp, np.ones((N, L + 1)), init=np.repeat(W0[None], N, axis=0))
        P = model.predict_proba(X_eval)  # (N, e, C)
        out[s:s + N] = (scores.least_confident(P) if loss == "zero_one" else scores.entropy(P)).sum(axis=1)
    return out


def eer_future_loss(
    state: ALState, candidates: np.ndarray, evaluation: np.ndarray, loss: str = "zero_one",
    min_proba: float = 0.0,
) -> np.ndarray:
    """Expected loss after labeling each candidate, shape ``(m,)`` for ``candidates`` ``(m,)``.

    ``E_y[loss(f^{L + (x, y)}, X_eval)] = sum_y p(y|x) * expected_loss(f^{L+(x,y)}(X_eval))``
    with ``p(y|x)`` the current model's probabilities (``state.proba``) and ``f^{L+(x,y)}`` the
    state's learner refitted on the labels plus ``(x, y)`` (the state's learner is not touched).
    ``min_proba`` > 0 skips the classes with ``p(y|x) < min_proba`` and renormalizes over the rest
    (0: every class, as the paper).

    A scikit-learn ``LogisticRegression`` learner (the default) is refitted for all pairs at once
    by :class:`~metaal.torch_learners.BatchedLogReg`, which minimizes the same objective; any
    other learner is copied and refitted pair by pair (warm-started when it supports it).

    :param evaluation: pool positions ``(e,)`` on which the loss is estimated (Monte Carlo).
    """
    P = state.proba[candidates]
    keep = P >= min_proba if min_proba > 0 else np.ones_like(P, dtype=bool)
    keep[np.arange(len(candidates)), np.argmax(P, axis=1)] = True
    pair_c, pair_y = np.nonzero(keep)  # (candidate row, class) pairs, candidate-major
    C_reg = logreg_c(state.learner)
    if C_reg is not None:
        losses = _batched_losses(state, candidates[pair_c], pair_y, evaluation, loss, C_reg)
    else:
        losses = np.empty(len(pair_c))
        lab = state.labeled_idx
        X_fit = np.concatenate([state.X_pool[lab], state.X_pool[lab[:1]]], axis=0)  # last row: the candidate
        y_fit = np.concatenate([state.labels[lab], state.labels[lab[:1]]])
        X_eval = state.X_pool[evaluation]
        # the inputs are the state's own finite arrays: skip scikit-learn's checks
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            for i, (r, y) in enumerate(zip(pair_c, pair_y)):
                X_fit[-1] = state.X_pool[candidates[r]]
                y_fit[-1] = y
                model = _warm_copy(state.learner)
                model.fit(X_fit, y_fit)
                losses[i] = expected_loss(model.predict_proba(X_eval), loss)
    w = np.where(keep, P, 0.0)
    total = np.zeros(len(candidates))
    np.add.at(total, pair_c, w[pair_c, pair_y] * losses)
    return total / w.sum(axis=1)


@register("eer")
class ExpectedErrorReduction(Strategy):
    """Expected error reduction, estimated by Monte Carlo (Roy and McCallum 2001).

    For each candidate ``x`` and each class ``y``, refit the learner on the labels plus
    ``(x, y)`` and estimate the resulting error on an evaluation sample of the pool with the
    refitted model's own probabilities (0/1 loss: ``sum_{x'} 1 - max_c p'(c|x')``; ``loss="log"``:
    the entropy); the score is minus the expectation over ``y ~ p(y|x)`` of the current model.
    This is scikit-activeml's ``MonteCarloEER`` (misclassification loss, evaluation on the pool,
    labeled items included), with its ``SubSamplingWrapper`` for the candidates.

    Cost control (``n_candidates * C`` refits per query; each refit is warm-started from the
    current solution, which for LogisticRegression takes a few L-BFGS iterations):

    * ``n_candidates`` (default 100): ``select`` scores a uniform random sample of that many
      unlabeled items (drawn from the run's generator) and takes the best ``k``; ``None``: all.
    * ``n_eval`` (default 500): the loss is estimated on a fixed random sample of that many pool
      items (drawn once per pool with ``default_rng(n_pool + 13)``); ``None``: the whole pool.
    * ``min_proba`` (default 0.01): classes with ``p(y|x)`` below it are not simulated (their
      weight in the expectation is below 1 %; the rest is renormalized); 0 simulates every class,
      as the paper and scikit-activeml. On 10 classes this saves most refits.

    Batch variant: the ``k`` best candidates (top-k, as scikit-activeml; the paper has none).
    ``score`` computes the exact utility of every unlabeled item (no candidate sampling) and is
    expensive, hence ``has_score = False``. Before two classes are labeled the refits see at most
    two classes and the scores are nearly flat: the loop's fallback takes over (``needs_model``).

    Reference: Roy & McCallum, "Toward optimal active learning through Monte Carlo estimation of
    error reduction", ICML 2001.
    """

    name = "eer"
    has_score = False
    needs_model = True

    def __init__(
        self, n_candidates: int | None = 100, n_eval: int | None = 500, loss: str = "zero_one",
        min_proba: float = 0.01,
    ) -> None:
        for what, v in (("n_candidates", n_candidates), ("n_eval", n_eval)):
            if v is not None and int(v) < 1:
                raise ConfigError(f"eer: {what} must be >= 1 or None (got {v})")
        if not 0.0 <= float(min_proba) < 1.0:
            raise ConfigError(f"eer: min_proba must be in [0, 1) (got {min_proba})")
        expected_loss(np.full((1, 2), 0.5), loss)  # validates the name
        self.n_candidates = None if n_candidates is None else int(n_candidates)
        self.n_eval = None if n_eval is None else int(n_eval)
        self.loss = loss
        self.min_proba = float(min_proba)

    def evaluation_sample(self, state: ALState) -> np.ndarray:
        """Pool positions ``(min(n_eval, n_pool),)`` on which the loss is estimated (sorted; the
        same for every query of a pool, cached in ``state.cache``)."""
        n = state.n_pool
        if self.n_eval is None or self.n_eval >= n:
            return np.arange(n)
        key = f"eer_eval:{self.n_eval}"
        if key not in state.cache:
            rng = np.random.default_rng(n + 13)
            state.cache[key] = np.sort(rng.choice(n, size=self.n_eval, replace=False))
        return state.cache[key]

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        return -eer_future_loss(state, unl, self.evaluation_sample(state), self.loss, self.min_proba)

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng(0)
        m = len(unl) if self.n_candidates is None else max(min(self.n_candidates, len(unl)), k)
        cand = unl if m == len(unl) else np.sort(rng.choice(unl, size=m, replace=False))
        s = -eer_future_loss(state, cand, self.evaluation_sample(state), self.loss, self.min_proba)
        return cand[top_k(s, k)]


# ----------------------------------------------------------------------------------------------
# probabilistic active learning (kernel frequency estimates)

#: the ``delta`` of the mean bandwidth criterion
BANDWIDTH_DELTA = np.sqrt(2.0) * 1e-6


def mean_bandwidth_gamma(total_var: float, n_labeled: int, n_features: int,
                         delta: float = BANDWIDTH_DELTA) -> float:
    """The RBF kernel's ``gamma`` (``k(x, x') = exp(-gamma ||x - x'||^2)``) by the mean criterion
    of Chaudhuri et al. (2017), as scikit-activeml's ``ParzenWindowClassifier`` with
    ``gamma="mean"``: ``gamma = (N - 1) log((N - 1) / delta^2) / (4 N total_var)`` with
    ``N = max(2, n_labeled)`` and ``total_var`` the sum of the pool's column variances (``d`` for
    a standardized pool of ``d`` non-constant columns); ``1 / n_features`` if it is 0."""
    N = max(2, int(n_labeled))
    if total_var <= 0:
        return 1.0 / n_features
    return float((N - 1) * np.log((N - 1) / delta**2) / (4.0 * N * total_var))


def probabilistic_gain(k: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """McPAL's expected gain in accuracy of one more label, shape ``(n,)``, for kernel frequency
    estimates ``k`` ``(n, C)`` (``m_max = 1``, 0/1 cost).

    The true posterior at ``x`` is ``p ~ Dir(alpha)`` with ``alpha = k + prior``; the decision
    with labels ``l`` is ``argmax(k + l)`` (first on ties). With ``A = sum_c alpha_c``:
    risk now ``1 - alpha_{yhat} / A`` (``yhat = argmax k``); risk after one label ``y ~ Dir``
    ``sum_j alpha_j / A * (1 - (alpha_{yhat_j} + [j = yhat_j]) / (A + 1))`` with
    ``yhat_j = argmax(k + e_j)``. The gain is the difference (the closed form of
    scikit-activeml's ``cost_reduction`` for ``m_max = 1``).
    """
    k = np.asarray(k, dtype=np.float64)
    n, C = k.shape
    alpha = k + float(prior)
    A = alpha.sum(axis=1)
    now = 1.0 - alpha[np.arange(n), np.argmax(k, axis=1)] / A
    after = np.zeros(n)
    rows = np.arange(n)
    for j in range(C):
        kj = k.copy()
        kj[:, j] += 1.0
        yh = np.argmax(kj, axis=1)
        hit = alpha[rows, yh] + (yh == j)
        after += alpha[:, j] / A * (1.0 - hit / (A + 1.0))
    return now - after


def _labeled_sq_dist(state: ALState) -> np.ndarray:
    """Squared distances of every pool item to every labeled item, ``(n_pool, n_labeled)``,
    columns in ``state.labeled_idx`` order; kept in ``state.cache`` and extended by the new labels
    only (recomputed whole if a label disappeared)."""
    lab = state.labeled_idx
    cached = state.cache.get("xpal:sqdist")
    if cached is not None and np.isin(cached[0], lab).all():
        have, D = cached
        new = np.setdiff1d(lab, have)
        if len(new):
            D = np.concatenate([D, _sq(state.X_pool, new)], axis=1)
            have = np.concatenate([have, new])
    else:
        have, D = lab.copy(), _sq(state.X_pool, lab)
    state.cache["xpal:sqdist"] = (have, D)
    order = np.argsort(have, kind="stable")  # labeled_idx is sorted
    return D[:, order]


def _sq(X: np.ndarray, cols: np.ndarray, block: int = 4096) -> np.ndarray:
    """``||X_i - X_c||^2`` for every row and ``c`` in ``cols``, ``(n, len(cols))``, in blocks of
    rows, clipped at 0."""
    B = X[cols]
    sb = (B * B).sum(1)
    out = np.empty((X.shape[0], len(cols)))
    for s in range(0, X.shape[0], block):
        out[s:s + block] = pairwise_sq(X[s:s + block], B, sb)
    return np.maximum(out, 0.0, out=out)


def kernel_frequency(state: ALState, rows: np.ndarray, gamma: float) -> np.ndarray:
    """``n(x) = sum_{l in L} exp(-gamma ||x - x_l||^2)``, the number of labels "near" each pool
    row ``rows`` ``(m,)`` (a Parzen window count); shape ``(m,)``."""
    if state.n_labeled == 0:
        return np.zeros(len(rows))
    D = _labeled_sq_dist(state)[rows]
    return np.exp(-gamma * D).sum(axis=1)


@register("xpal")
class ProbabilisticAL(Strategy):
    """Probabilistic active learning with kernel frequency estimates (scikit-activeml's
    ``ProbabilisticAL`` with ``metric="rbf"``: multi-class probabilistic active learning, McPAL,
    the local one-label form of the xPAL family).

    At every unlabeled ``x``, the label statistics are ``k(x) = n(x) * p(.|x)``: the kernel
    frequency ``n(x) = sum_{l in L} exp(-gamma ||x - x_l||^2)`` (how many labels are near ``x``)
    times the learner's probabilities. The score is the expected gain in accuracy of one more
    label at ``x`` when the true posterior is ``Dir(k(x) + prior)``
    (:func:`probabilistic_gain`): high where the model is uncertain *and* few labels are near
    (an uncertain decision backed by many labels gains little), optionally weighted by the
    pool density (``density=True``, :func:`metaal.strategies.diversity.pool_similarity`; the
    paper weights by density, scikit-activeml does not by default).

    Bandwidth: ``gamma`` from the mean criterion (:func:`mean_bandwidth_gamma`, Chaudhuri et al.
    2017) with ``N`` the number of labels, recomputed every query; ``gamma`` fixes it instead.
    (scikit-activeml 1.0.1 counts ``N`` as the pool rows whose label is not class 1, unlabeled
    ones included, which gives a narrower kernel: 25 to 30 % larger ``gamma`` on our pools.)

    Cost: the squared distances of the pool to the labeled items are cached and extended by the
    new labels, so a query costs ``O(n * n_labeled)`` plus ``O(n * C^2)``. Batch variant: top-k
    (scikit-activeml's ``simple_batch``). Before two classes are labeled, ``p`` is the label
    frequency and the score is a pure distance-to-labels term (``needs_model``).

    Reference: Kottke, Krempl, Lang, Teschner & Spiliopoulou, "Multi-class probabilistic active
    learning", ECAI 2016; Kottke, Herde, Sandrock, Huseljic, Krempl & Sick, "Toward optimal
    probabilistic active learning using a Bayesian approach", Machine Learning 110, 2021.
    """

    name = "xpal"
    needs_model = True

    def __init__(self, prior: float = 1.0, gamma: float | None = None, density: bool = False) -> None:
        if not float(prior) > 0:
            raise ConfigError(f"xpal: prior must be > 0 (got {prior})")
        if gamma is not None and not float(gamma) > 0:
            raise ConfigError(f"xpal: gamma must be > 0 or None (got {gamma})")
        self.prior = float(prior)
        self.gamma = None if gamma is None else float(gamma)
        self.density = bool(density)

    def bandwidth(self, state: ALState) -> float:
        """The kernel's ``gamma`` for this query."""
        if self.gamma is not None:
            return self.gamma
        key = "xpal:total_var"
        if key not in state.cache:  # depends on the pool only
            state.cache[key] = float(np.var(state.X_pool, axis=0).sum())
        return mean_bandwidth_gamma(state.cache[key], state.n_labeled, state.X_pool.shape[1])

    def score(self, state: ALState) -> np.ndarray:
        unl = state.unlabeled_idx
        n = kernel_frequency(state, unl, self.bandwidth(state))
        gain = probabilistic_gain(n[:, None] * state.proba[unl], self.prior)
        if self.density:
            gain = gain * pool_similarity(state)[unl]
        return gain
