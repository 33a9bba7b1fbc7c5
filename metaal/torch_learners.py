"""Torch logistic regression: ``N`` small problems trained at once as one batched problem
(:class:`BatchedLogReg`), and the single-problem estimator behind the ``torch_logreg`` learner
(:class:`TorchLogRegEstimator`).

The vector environments fit one model per episode after every step. Fitting ``N`` scikit-learn
models one after the other costs ``N`` Python round trips; here the ``N`` problems are stacked and
solved together, on the GPU when there is one (``device="auto"``), on the CPU otherwise.

:class:`BatchedLogReg` minimizes, for every problem ``k`` independently, the objective of
scikit-learn's ``LogisticRegression(C=C)`` (lbfgs, multinomial)::

    sum_i w_ki * log_loss(y_ki, softmax(x_ki W_k + b_k)) + 1 / (2 C) * ||W_k||^2   (bias not penalized)

over the classes present in problem ``k``'s labels (absent classes get probability ~0, as the
:class:`~metaal.learners.Learner` wrapper does for scikit-learn). With exactly two present classes
scikit-learn fits one weight vector ``w = W_1 - W_0``; the symmetric two-column solution with a
doubled penalty is the same model, so that case is handled by the penalty scale. Problems with
fewer than two labeled classes predict the smoothed label frequencies ``(counts + 1) / sum``.

Solvers: batched Newton with a per-problem Armijo line search (exact Hessians of the ``P = (d + 1)
* C`` parameters of every problem, Cholesky-solved in one batch; problems that converged drop out
of the later iterations), used by ``solver="auto"`` up to ``P = 160``; beyond that
``torch.optim.LBFGS`` on the summed (separable) objective, each problem scaled by its total weight.
Both warm-start from the previous weights. float64 on the CPU (parity with scikit-learn: the
probabilities agree with a tightly converged ``LogisticRegression`` to ~1e-6), float32 on the GPU.
CPU work runs with one torch thread by default (:func:`cpu_threads`).

Problems are given either over one shared matrix ``X`` (n, d) with per-problem labeled masks
``(N, n)`` (the vector environment: every episode works on the same pool), over per-problem
matrices ``(N, n, d)``, or directly in padded form (:meth:`BatchedLogReg.fit_padded`).

:class:`TorchLogRegEstimator` is a scikit-learn-style estimator over :class:`BatchedLogReg` with
``N = 1``; :func:`torch_logreg_estimator` is the factory behind ``"torch_logreg"`` in
:data:`metaal.learners.LEARNERS` (wrapped in a :class:`~metaal.learners.Learner`, usable with
``simulate()``).

This module sits below :mod:`metaal.learners` (which imports it lazily, torch being heavy) and
imports nothing from it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from metaal.errors import ConfigError, DataError

try:  # torch is a dependency of the project, but keep the import error readable
    import torch
except ImportError as exc:  # pragma: no cover
    raise ImportError("metaal.torch_learners needs torch (pip install torch)") from exc

_NEG = -1e9  # logit of a class absent from a problem's labels
#: the probability floor of :data:`metaal.learners.PROBA_FLOOR`, kept here because the learners
#: module imports this one (lazily) and not the other way round; tests pin the two equal
PROBA_FLOOR = 1e-12


def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """``"auto"``: the GPU when one is present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available")
    return dev


@contextlib.contextmanager
def cpu_threads(device: torch.device, n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads when ``device`` is the CPU (``None``: leave
    torch's setting). Small batched problems gain nothing from more threads, and on a machine
    shared with vector-environment workers or joblib processes, spinning OpenMP threads slow
    everything down (by 10x on a busy 2-core machine), so the learners default to one thread."""
    if n is None or device.type != "cpu" or torch.get_num_threads() == n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def default_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU (parity with scikit-learn), float32 on accelerators."""
    return torch.float64 if device.type == "cpu" else torch.float32


# ----------------------------------------------------------------------------------------------
# padding helpers


def gather_padded(
    X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labeled rows of every problem, left-aligned and zero-padded.

    :param X: shared ``(n, d)`` or per-problem ``(N, n, d)`` features.
    :param y: shared ``(n,)`` or per-problem ``(N, n)`` labels (ignored where ``mask`` is False).
    :param mask: ``(N, n)`` bool, the training rows of each problem.
    :param weight: optional ``(N, n)`` or ``(n,)`` sample weights.
    :param source: optional ``(N,)`` index into the first axis of a per-problem ``X`` / ``y`` /
        ``weight``: problem ``k`` uses matrix ``source[k]`` (several problems on one matrix
        without copying it).
    :returns: ``Xp`` ``(N, m, d)``, ``yp`` ``(N, m)`` int64 (0 in padding), ``wp`` ``(N, m)``
        (0 in padding), with ``m`` the largest number of training rows.
    """
    N, n = mask.shape
    counts = mask.sum(1)
    m = max(int(counts.max().item()) if N else 0, 1)
    # labeled rows first, in pool order (what a stable argsort of ~mask gives, without the sort)
    r, c = torch.nonzero(mask, as_tuple=True)  # row-major: columns ascending within each row
    starts = torch.cumsum(counts, 0) - counts
    order = torch.zeros(N, m, dtype=torch.int64, device=mask.device)
    order[r, torch.arange(len(r), device=mask.device) - starts[r]] = c
    valid = torch.arange(m, device=mask.device)[None, :] < counts[:, None]
    rows = (torch.arange(N, device=mask.device) if source is None else source.to(mask.device))[:, None]
    Xp = X[order] if X.dim() == 2 else X[rows, order]
    yp = y[order] if y.dim() == 1 else y[rows, order]
    if weight is None:
        wp = valid.to(X.dtype)
    else:
        w = weight[order] if weight.dim() == 1 else weight[rows, order]
        wp = w.to(X.dtype) * valid
    yp = torch.where(valid, yp, torch.zeros_like(yp)).clamp_min(0)
    Xp = Xp * valid[..., None].to(X.dtype)
    return Xp, yp, wp


def argmax_classes(z: torch.Tensor) -> torch.Tensor:
    """``z.argmax(1)`` for class-major ``z`` ``(N, C, n)`` (first maximum on ties), without
    torch's slow reduction over a short strided axis."""
    if z.shape[1] == 2:
        return (z[:, 1] > z[:, 0]).long()
    return z.transpose(1, 2).contiguous().argmax(-1)


def _add_bias(X: torch.Tensor) -> torch.Tensor:
    return torch.cat([X, torch.ones(*X.shape[:-1], 1, dtype=X.dtype, device=X.device)], dim=-1)


# ----------------------------------------------------------------------------------------------
# batched multinomial logistic regression


class _BatchedBase:
    """Shared bookkeeping: devices, conversions, present classes, priors, probability output."""

    def __init__(self, n_classes: int, device: "str | torch.device" = "auto", dtype: torch.dtype | None = None,
                 threads: int | None = 1):
        if int(n_classes) < 2:
            raise ConfigError(f"n_classes must be >= 2 (got {n_classes})")
        self.n_classes = int(n_classes)
        self.threads = threads
        self.device = resolve_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.present_: torch.Tensor | None = None  # (N, C) bool
        self.prior_: torch.Tensor | None = None  # (N, C)
        self.use_prior_: torch.Tensor | None = None  # (N,) bool
        self.n_fits = 0

    def tensor(self, a: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``a`` as a tensor on this learner's device (default: its float dtype)."""
        dt = dtype or self.dtype
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=dt)
        return torch.as_tensor(np.asarray(a), device=self.device, dtype=dt)

    def _prepare(
        self, X: Any, y: Any, mask: Any = None, sample_weight: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        Xt = self.tensor(X)
        yt = self.tensor(y, torch.int64)
        if Xt.dim() not in (2, 3):
            raise DataError(f"X must be (n, d) or (N, n, d), got shape {tuple(Xt.shape)}")
        n = Xt.shape[-2]
        if mask is None:
            if yt.dim() != 2:
                raise DataError("without a mask, y must be (N, n) with -1 for rows left out")
            mt = yt >= 0
        else:
            mt = self.tensor(mask, torch.bool)
            if mt.dim() == 1:
                mt = mt[None, :]
        if mt.shape[-1] != n or yt.shape[-1] != n:
            raise DataError(f"mask {tuple(mt.shape)} / labels {tuple(yt.shape)} do not match X with {n} rows")
        if Xt.dim() == 3 and Xt.shape[0] != mt.shape[0]:
            raise DataError(f"X holds {Xt.shape[0]} problems but mask holds {mt.shape[0]}")
        full_y = yt if yt.dim() == 2 else yt[None, :].expand_as(mt)
        lab = torch.where(mt, full_y, torch.zeros_like(mt, dtype=torch.int64))
        if bool((mt & ((lab < 0) | (lab >= self.n_classes))).any()):
            raise DataError(f"labels of training rows must lie in 0..{self.n_classes - 1}")
        w = None if sample_weight is None else self.tensor(sample_weight)
        return gather_padded(Xt, yt, mt, w)

    def _set_classes(self, yp: torch.Tensor, wp: torch.Tensor) -> None:
        C = self.n_classes
        counts = torch.zeros(yp.shape[0], C, dtype=self.dtype, device=self.device)
        counts.scatter_add_(1, yp, (wp > 0).to(self.dtype))
        self.present_ = counts > 0
        self.use_prior_ = self.present_.sum(1) < 2
        self.prior_ = (counts + 1.0) / (counts + 1.0).sum(1, keepdim=True)

    def _finish_proba(self, logits: torch.Tensor, rows: Any = None) -> torch.Tensor:
        """Masked softmax ``(N, n, C)`` of logits ``(N, n, C)`` with the floor of
        :class:`~metaal.learners.Learner`; ``rows`` selects a subset of the fitted problems."""
        return self.finish_proba_t(logits.transpose(1, 2), rows).transpose(1, 2).contiguous()

    def finish_proba_t(self, logits_t: torch.Tensor, rows: Any = None) -> torch.Tensor:
        """The same on class-major logits ``(N, C, n)`` (softmax over a short last axis is slow in
        torch, over a strided one fast); returns ``(N, C, n)``."""
        assert self.present_ is not None and self.prior_ is not None and self.use_prior_ is not None
        present, prior, use_prior = self.present_, self.prior_, self.use_prior_
        if rows is not None:
            present, prior, use_prior = present[rows], prior[rows], use_prior[rows]
        # (the masks are skipped when they change nothing: the same numbers, fewer passes)
        z = (
            logits_t
            if bool(present.all())
            else torch.where(present[:, :, None], logits_t, torch.full_like(logits_t, _NEG))
        )
        p = torch.softmax(z, dim=1)
        if bool(use_prior.any()):
            p = torch.where(use_prior[:, None, None], prior[:, :, None].expand_as(p), p)
        p = p.clamp_min_(PROBA_FLOOR)
        return p.div_(p.sum(1, keepdim=True))

    def predict_tensor(self, X: Any, rows: Any = None, transposed: bool = False) -> torch.Tensor:
        """Predicted classes ``(N, n)`` (argmax of the probabilities, without computing them)."""
        assert self.present_ is not None and self.prior_ is not None and self.use_prior_ is not None
        present, prior, use_prior = self.present_, self.prior_, self.use_prior_
        if rows is not None:
            present, prior, use_prior = present[rows], prior[rows], use_prior[rows]
        z = self.logits_t(X, rows, transposed) if transposed else self.logits_t(X, rows)
        z = torch.where(present[:, :, None], z, torch.full_like(z, _NEG))
        pred = argmax_classes(z)
        return torch.where(use_prior[:, None], prior.argmax(1)[:, None].expand_as(pred), pred)

    def logits_t(self, X: Any, rows: Any = None, transposed: bool = False) -> torch.Tensor:
        if transposed:
            X = self.tensor(X).transpose(1, 2)
        return self.logits(X, rows).transpose(1, 2)

    def predict_proba(self, X: Any, rows: Any = None) -> np.ndarray:
        """Probabilities ``(N, n, C)`` float64 for shared ``X`` (n, d) or per-problem (N, n, d);
        ``rows`` (an index or slice) restricts to those problems."""
        with cpu_threads(self.device, self.threads):
            return self.proba_tensor(X, rows).to("cpu", torch.float64).numpy()

    def proba_tensor(self, X: Any, rows: Any = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class BatchedLogReg(_BatchedBase):
    """``N`` multinomial logistic regressions (scikit-learn's objective) solved together.

    :param n_classes: ``C``, the classes shared by all problems (labels ``0..C-1``).
    :param C: inverse L2 strength, as in scikit-learn (1.0 there by default).
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    :param dtype: float dtype; default float64 on the CPU, float32 on the GPU.
    :param solver: ``"newton"``, ``"lbfgs"`` or ``"auto"`` (Newton while the batched Hessians
        stay small, L-BFGS otherwise).
    :param max_iter: Newton / L-BFGS iterations per fit (warm starts need few).
    :param tol: stop when every problem's gradient, divided by its total sample weight, is below
        ``tol`` in max-norm.
    :param threads: torch CPU threads while fitting / predicting (:func:`cpu_threads`; None:
        torch's setting).

    After :meth:`fit`, ``coef_`` is a ``(N, d + 1, C)`` tensor (last row: intercepts).
    """

    def __init__(
        self,
        n_classes: int,
        C: float = 1.0,
        device: "str | torch.device" = "auto",
        dtype: torch.dtype | None = None,
        solver: str = "auto",
        max_iter: int = 100,
        tol: float = 1e-8,
        threads: int | None = 1,
    ) -> None:
        super().__init__(n_classes, device, dtype, threads)
        if C <= 0:
            raise ConfigError(f"C must be > 0 (got {C})")
        if solver not in ("auto", "newton", "lbfgs"):
            raise ConfigError(f"unknown solver {solver!r} (newton, lbfgs, auto)")
        self.C = float(C)
        self.solver = solver
        self.max_iter = int(max_iter)
        self.tol = float(tol) if self.dtype == torch.float64 else max(float(tol), 1e-5)
        self.coef_: torch.Tensor | None = None
        self.n_iter_ = 0

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, mask: Any = None, sample_weight: Any = None, init: Any = "warm") -> "BatchedLogReg":
        """Fit ``N`` problems.

        :param X: shared features ``(n, d)`` or per-problem ``(N, n, d)``.
        :param y: labels ``(n,)`` or ``(N, n)`` in ``0..C-1`` (anything where ``mask`` is False).
        :param mask: ``(N, n)`` bool training rows; ``None``: rows with ``y >= 0``.
        :param sample_weight: optional ``(N, n)`` or ``(n,)`` weights.
        :param init: ``"warm"`` (previous ``coef_`` when the shapes match), ``None`` (zeros) or a
            ``(N, d + 1, C)`` array.
        """
        with cpu_threads(self.device, self.threads):
            Xp, yp, wp = self._prepare(X, y, mask, sample_weight)
            return self._fit_padded(Xp, yp, wp, init)

    def fit_padded(self, Xp: Any, yp: Any, wp: Any, init: Any = "warm") -> "BatchedLogReg":
        """Fit from the padded form: ``Xp`` ``(N, m, d)``, ``yp`` ``(N, m)``, ``wp`` ``(N, m)``
        sample weights (0 on padding rows)."""
        with cpu_threads(self.device, self.threads):
            return self._fit_padded(Xp, yp, wp, init)

    def _fit_padded(self, Xp: Any, yp: Any, wp: Any, init: Any) -> "BatchedLogReg":
        Xp, yp, wp = self.tensor(Xp), self.tensor(yp, torch.int64), self.tensor(wp)
        N, m, d = Xp.shape
        C = self.n_classes
        self._set_classes(yp, wp)
        W0 = self._init(init, N, d + 1)
        Xb = _add_bias(Xp)
        Y = torch.zeros(N, m, C, dtype=self.dtype, device=self.device)
        Y.scatter_(2, yp[..., None], 1.0)
        assert self.present_ is not None
        n_present = self.present_.sum(1)
        lam = torch.where(n_present == 2, 2.0, 1.0).to(self.dtype) / self.C  # binary: see module doc
        solver = self.solver
        P = (d + 1) * C
        if solver == "auto":
            solver = "newton" if (P <= 160 and N * P * P <= 4e7) else "lbfgs"
        problem = _LogRegProblem(Xb, Y, wp, self.present_, lam)
        if solver == "newton":
            W, it = _newton(problem, W0, self.max_iter, self.tol)
        else:
            W, it = _lbfgs(problem, W0, self.max_iter, self.tol)
        W = W * self.present_[:, None, :].to(self.dtype)
        self.coef_ = W
        self.n_iter_ = it
        self.n_fits += 1
        return self

    def _init(self, init: Any, N: int, D: int) -> torch.Tensor:
        shape = (N, D, self.n_classes)
        if isinstance(init, str) and init == "warm":
            if self.coef_ is not None and tuple(self.coef_.shape) == shape:
                return self.coef_.clone()
            return torch.zeros(shape, dtype=self.dtype, device=self.device)
        if init is None:
            return torch.zeros(shape, dtype=self.dtype, device=self.device)
        W = self.tensor(init)
        if tuple(W.shape) != shape:
            raise DataError(f"init must have shape {shape}, got {tuple(W.shape)}")
        return W.clone()

    # -- prediction -----------------------------------------------------------------------------
    def logits(self, X: Any, rows: Any = None) -> torch.Tensor:
        """Raw logits ``(N, n, C)`` (of the problems ``rows`` when given)."""
        return self.logits_t(X, rows).transpose(1, 2)

    def logits_t(self, X: Any, rows: Any = None, transposed: bool = False) -> torch.Tensor:
        """Class-major logits ``(N, C, n)``; ``transposed``: ``X`` is given as ``(N, d, n)``
        (saves a copy per call when the same matrices are scored repeatedly)."""
        if self.coef_ is None:
            raise ConfigError("BatchedLogReg is not fitted yet")
        Xt = self.tensor(X)
        W = self.coef_ if rows is None else self.coef_[rows]
        Wt = W.transpose(1, 2)  # (N, C, D)
        if transposed:
            return torch.bmm(Wt[:, :, :-1], Xt) + Wt[:, :, -1:]
        if Xt.dim() == 2:
            return torch.matmul(Wt[:, :, :-1], Xt.T) + Wt[:, :, -1:]
        return torch.bmm(Wt[:, :, :-1], Xt.transpose(1, 2)) + Wt[:, :, -1:]

    def proba_tensor(self, X: Any, rows: Any = None, transposed: bool = False) -> torch.Tensor:
        """Probabilities ``(N, n, C)`` as a tensor on the device (``transposed``: ``X`` is
        ``(N, d, n)``)."""
        return self.finish_proba_t(self.logits_t(X, rows, transposed), rows).transpose(1, 2).contiguous()

    def predict_proba(self, X: Any, rows: Any = None, transposed: bool = False) -> np.ndarray:
        """Probabilities ``(N, n, C)`` float64 for shared ``X`` (n, d), per-problem (N, n, d) or,
        with ``transposed``, (N, d, n); ``rows`` restricts to those problems."""
        with cpu_threads(self.device, self.threads):
            return self.proba_tensor(X, rows, transposed).to("cpu", torch.float64).numpy()


class _LogRegProblem:
    """The batched objective: ``Xb`` (N, m, D) with a bias column, one-hot ``Y`` (N, m, C),
    weights ``w`` (N, m), ``present`` (N, C) bool, penalty scale ``lam`` (N,)."""

    def __init__(self, Xb: torch.Tensor, Y: torch.Tensor, w: torch.Tensor, present: torch.Tensor, lam: torch.Tensor):
        self.Xb, self.Y, self.w, self.present, self.lam = Xb, Y, w, present, lam
        D = Xb.shape[2]
        self.pen = torch.ones(D, dtype=Xb.dtype, device=Xb.device)
        self.pen[-1] = 0.0  # no penalty on the intercept
        self.pmask = present[:, None, :].to(Xb.dtype)  # (N, 1, C)
        self.wsum = w.sum(1).clamp_min(1.0)
        N, C = present.shape
        absent = (~present)[:, :, None].expand(N, C, D).reshape(N, C * D)
        self.any_absent = bool(absent.any())
        self.keep = (~absent).to(Xb.dtype)
        diag = (lam[:, None, None] * self.pen[None, None, :]).expand(N, C, D).reshape(N, C * D)
        ridge = 1e-8 * self.wsum[:, None] + diag  # tiny ridge: the intercepts' flat direction
        self.ridge = torch.where(absent, torch.ones_like(ridge), ridge)

    def logp(self, W: torch.Tensor) -> torch.Tensor:
        z = torch.bmm(self.Xb, W)
        z = torch.where(self.present[:, None, :], z, torch.full_like(z, _NEG))
        return torch.log_softmax(z, dim=-1)

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """Objective per problem, ``(N,)``."""
        nll = -(self.w * (self.Y * self.logp(W)).sum(-1)).sum(-1)
        Wp = W * self.pen[None, :, None] * self.pmask
        return nll + 0.5 * self.lam * (Wp * Wp).sum((1, 2))

    def loss_grad(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss ``(N,)``, gradient ``(N, D, C)`` and probabilities ``(N, m, C)``."""
        logp = self.logp(W)
        p = logp.exp()
        nll = -(self.w * (self.Y * logp).sum(-1)).sum(-1)
        Wp = W * self.pen[None, :, None] * self.pmask
        f = nll + 0.5 * self.lam * (Wp * Wp).sum((1, 2))
        R = self.w[..., None] * (p - self.Y)
        G = (torch.bmm(self.Xb.transpose(1, 2), R) + self.lam[:, None, None] * Wp) * self.pmask
        return f, G, p

    def hessian(self, p: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C*D, C*D)`` Hessian at probabilities ``p`` ``(N, m, C)``, parameters flattened
        class-major (index ``c * D + a``); ``rows``: only those problems (``p`` already
        restricted to them)."""
        Xb, w, keep, ridge = self.Xb, self.w, self.keep, self.ridge
        if rows is not None:
            Xb, w, keep, ridge = Xb[rows], w[rows], keep[rows], ridge[rows]
        N, m, C = p.shape
        D = Xb.shape[2]
        wp = w[..., None] * p  # (N, m, C)
        # block (c, e) = X^T diag(w (p_c delta_ce - p_c p_e)) X; symmetric, so e >= c only
        XbT = Xb.transpose(1, 2)
        if N * m * C * C * D <= 4_000_000:  # small problems (the env's steps): one batched product
            # all blocks at once: A[n, i, c, e] = w_i (p_ic delta_ce - p_ic p_ie)
            A = -wp[..., :, None] * p[..., None, :]  # (N, m, C, C)
            A.diagonal(dim1=2, dim2=3).add_(wp)
            XA = (Xb[:, :, None, None, :] * A[..., None]).reshape(N, m, C * C * D)
            H = torch.bmm(XbT, XA)  # (N, D, C*C*D): [a, (c, e, b)]
            H = H.reshape(N, D, C, C, D).permute(0, 2, 1, 3, 4).reshape(N, C * D, C * D)
        else:  # large ones: block by block, e >= c only (symmetric)
            H5 = torch.empty(N, C, D, C, D, dtype=p.dtype, device=p.device)
            for c in range(C):
                for e in range(c, C):
                    a = -wp[..., c] * p[..., e]
                    if e == c:
                        a = a + wp[..., c]
                    blk = torch.bmm(XbT, Xb * a[..., None])
                    H5[:, c, :, e, :] = blk
                    if e != c:
                        H5[:, e, :, c, :] = blk.transpose(1, 2)
            H = H5.reshape(N, C * D, C * D)
        if self.any_absent:
            H = H * keep[:, :, None] * keep[:, None, :]
        H.diagonal(dim1=1, dim2=2).add_(ridge)
        return H


def _newton(problem: _LogRegProblem, W: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    N, D, C = W.shape
    it = 0
    f, G, p = problem.loss_grad(W)
    for it in range(1, max_iter + 1):
        gmax = G.abs().amax((1, 2)) / problem.wsum
        active = gmax > tol
        if not bool(active.any()):
            it -= 1
            break
        # Newton directions, computed only for the problems not converged yet
        rows = torch.nonzero(active).squeeze(1) if not bool(active.all()) else None
        Ga = G if rows is None else G[rows]
        H = problem.hessian(p if rows is None else p[rows], rows)
        na = H.shape[0]
        g = Ga.transpose(1, 2).reshape(na, C * D, 1)
        L, info = torch.linalg.cholesky_ex(H)
        ok = info == 0
        if not bool(ok.all()):  # numerically indefinite: fall back to a scaled gradient step
            L = torch.where(ok[:, None, None], L, torch.diag_embed(torch.ones_like(g[..., 0])))
        step = torch.cholesky_solve(g, L)
        scale = (problem.wsum + problem.lam) if rows is None else (problem.wsum + problem.lam)[rows]
        step = torch.where(ok[:, None, None], step, g / scale[:, None, None])
        step = -step.reshape(na, C, D).transpose(1, 2)
        if rows is None:
            dW = step
        else:
            dW = torch.zeros_like(W)
            dW[rows] = step
        slope = (G * dW).sum((1, 2))
        # per-problem Armijo backtracking; the full step's loss comes with the next gradient
        Wn = W + dW
        fn, Gn, pn = problem.loss_grad(Wn)
        accepted = ~active | (fn <= f + 1e-4 * slope) | (slope >= 0)
        if bool(accepted.all()):
            W, f, G, p = Wn, fn, Gn, pn
            continue
        t = torch.ones(N, dtype=W.dtype, device=W.device)
        for _ in range(29):
            t = torch.where(accepted, t, t * 0.5)
            f_new = problem.loss(W + t[:, None, None] * dW)
            accepted = accepted | (f_new <= f + 1e-4 * t * slope) | (slope >= 0)
            if bool(accepted.all()):
                break
        t = torch.where(accepted, t, torch.zeros_like(t))
        W = W + t[:, None, None] * dW
        f, G, p = problem.loss_grad(W)
    return W, it


def _lbfgs(problem: _LogRegProblem, W: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    Wv = W.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [Wv], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=tol, tolerance_change=1e-14,
    )
    scale = problem.wsum

    def closure() -> torch.Tensor:
        opt.zero_grad()
        # each problem divided by its weight so that the shared tolerances mean the same for all
        loss = (problem.loss(Wv) / scale).sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[opt._params[0]]
    return Wv.detach(), int(state.get("n_iter", max_iter))


# ----------------------------------------------------------------------------------------------
# single-problem scikit-learn-style estimator


class TorchLogRegEstimator(BaseEstimator, ClassifierMixin):
    """A scikit-learn-style estimator (``fit`` / ``predict_proba`` / ``classes_`` / ``coef_``)
    backed by :class:`BatchedLogReg` with ``N = 1``; same objective as
    ``LogisticRegression(C=C)``. Supports ``warm_start`` like scikit-learn's lbfgs solver."""

    def __init__(self, C: float = 1.0, device: str = "auto", warm_start: bool = False, max_iter: int = 100):
        self.C = C
        self.device = device
        self.warm_start = warm_start
        self.max_iter = max_iter
        self._model: BatchedLogReg | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "TorchLogRegEstimator":
        """Fit on ``X`` (m, d) and labels ``y`` (m,) (at least two distinct values)."""
        y = np.asarray(y)
        classes, yi = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataError("TorchLogRegEstimator needs at least two classes in the labels")
        X = np.asarray(X, dtype=np.float64)
        prev = self._model
        model = BatchedLogReg(len(classes), C=self.C, device=self.device, max_iter=self.max_iter)
        init: Any = None
        if self.warm_start and prev is not None and prev.coef_ is not None and prev.n_classes == len(classes) \
                and prev.coef_.shape[1] == X.shape[1] + 1:
            init = prev.coef_
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[None, :]
        model.fit(X, yi, mask=np.ones((1, len(yi)), dtype=bool), sample_weight=w, init=init)
        self._model = model
        self.classes_ = classes
        W = model.coef_[0].to("cpu", torch.float64).numpy()  # type: ignore[index]
        if len(classes) == 2:  # scikit-learn's binary parameterization
            self.coef_ = (W[:-1, 1] - W[:-1, 0])[None, :]
            self.intercept_ = np.array([W[-1, 1] - W[-1, 0]])
        else:
            self.coef_ = W[:-1].T.copy()
            self.intercept_ = W[-1].copy()
        self.n_iter_ = np.array([model.n_iter_])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, K)`` probabilities over the fitted classes ``classes_``."""
        if self._model is None:
            raise ConfigError("TorchLogRegEstimator is not fitted yet")
        return self._model.predict_proba(np.asarray(X, dtype=np.float64))[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s


def torch_logreg_estimator(seed: int = 0) -> TorchLogRegEstimator:
    """The factory behind ``LEARNERS["torch_logreg"]`` (deterministic: ``seed`` is unused)."""
    return TorchLogRegEstimator()
