"""Batched torch learners: parity with scikit-learn's LogisticRegression, batching forms, priors,
the single-problem Learner used by simulate(), the MLP option."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from metaal.data import make_split  # noqa: E402
from metaal.errors import ConfigError, DataError  # noqa: E402
from metaal.learners import LEARNERS, make_learner  # noqa: E402
from metaal.loop.simulate import simulate  # noqa: E402
from metaal.state import Task  # noqa: E402
from metaal.torch_learners import BatchedLogReg, TorchLogRegEstimator, gather_padded  # noqa: E402


def _task(ds, seed=0):
    return Task.from_split(ds, make_split(ds, seed))


def _masks(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros((len(sizes), n), dtype=bool)
    for k, s in enumerate(sizes):
        m[k, rng.choice(n, size=s, replace=False)] = True
    return m


def _sk_proba(X, y, Xt, C):
    sk = LogisticRegression(max_iter=10000, tol=1e-10).fit(X, y)
    out = np.zeros((len(Xt), C))
    out[:, sk.classes_] = sk.predict_proba(Xt)
    return out


@pytest.mark.parametrize("name", ["sklearn:wine", "sklearn:breast_cancer", "vertebral_column", "glass", "dermatology"])
def test_parity_with_sklearn_on_same_labeled_sets(name, shared, wine, bc):
    ds = {"sklearn:wine": wine, "sklearn:breast_cancer": bc}.get(name) or shared(name)
    t = _task(ds)
    # labeled sets of several sizes, some missing classes (glass, small sets)
    masks = _masks(t.n_pool, [8, 15, 30, 60], seed=1)
    model = BatchedLogReg(t.n_classes, device="cpu").fit(t.X_pool, t.y_pool, masks)
    P = model.predict_proba(t.X_test)
    assert P.shape == (4, len(t.y_test), t.n_classes)
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-9)
    for k in range(4):
        X, y = t.X_pool[masks[k]], t.y_pool[masks[k]]
        if len(np.unique(y)) < 2:
            continue
        # the optimum of the same objective: probabilities agree closely with a tight sklearn fit
        np.testing.assert_allclose(P[k], _sk_proba(X, y, t.X_test, t.n_classes), atol=2e-4)
        # and accuracy is within one point of the default LogisticRegression learner
        lrn = make_learner("logreg", t.n_classes).fit(X, y)
        acc_sk = np.mean(lrn.predict(t.X_test) == t.y_test)
        acc_t = np.mean(P[k].argmax(1) == t.y_test)
        assert abs(acc_sk - acc_t) <= 0.01 + 1e-12, (name, k, acc_sk, acc_t)
        absent = np.setdiff1d(np.arange(t.n_classes), y)
        if len(absent):  # classes never labeled get ~0 probability, as with Learner
            assert P[k][:, absent].max() < 1e-9


def test_shared_per_problem_and_padded_forms_agree(wine):
    t = _task(wine)
    masks = _masks(t.n_pool, [12, 20, 40], seed=2)
    a = BatchedLogReg(3, device="cpu").fit(t.X_pool, t.y_pool, masks)
    Xs = np.repeat(t.X_pool[None], 3, axis=0)
    ys = np.repeat(t.y_pool[None], 3, axis=0)
    b = BatchedLogReg(3, device="cpu").fit(Xs, np.where(masks, ys, -1))  # mask from y >= 0
    Xp, yp, wp = gather_padded(torch.as_tensor(t.X_pool), torch.as_tensor(t.y_pool), torch.as_tensor(masks))
    assert Xp.shape == (3, 40, t.X_pool.shape[1]) and float(wp.sum()) == 72
    c = BatchedLogReg(3, device="cpu").fit_padded(Xp, yp, wp)
    pa, pb, pc = (m.predict_proba(t.X_test) for m in (a, b, c))
    np.testing.assert_allclose(pa, pb, atol=1e-10)
    np.testing.assert_allclose(pa, pc, atol=1e-10)
    # sample weights: weight 2 on a row == that row twice
    w = masks.astype(float)
    first = np.flatnonzero(masks[0])[0]
    w[0, first] = 2.0
    d = BatchedLogReg(3, device="cpu").fit(t.X_pool, t.y_pool, masks, sample_weight=w)
    X2 = np.vstack([t.X_pool[masks[0]], t.X_pool[first : first + 1]])
    y2 = np.concatenate([t.y_pool[masks[0]], t.y_pool[first : first + 1]])
    np.testing.assert_allclose(d.predict_proba(t.X_test)[0], _sk_proba(X2, y2, t.X_test, 3), atol=2e-4)


def test_warm_start_lbfgs_and_priors(bc):
    t = _task(bc)
    masks = _masks(t.n_pool, [20, 30], seed=3)
    cold = BatchedLogReg(2, device="cpu").fit(t.X_pool, t.y_pool, masks)
    m2 = masks.copy()
    m2[:, np.flatnonzero(~masks[0] & ~masks[1])[:2]] = True
    warm = BatchedLogReg(2, device="cpu")
    warm.coef_ = cold.coef_.clone()
    warm.fit(t.X_pool, t.y_pool, m2)  # init="warm" reuses coef_
    ref = BatchedLogReg(2, device="cpu").fit(t.X_pool, t.y_pool, m2, init=None)
    assert warm.n_iter_ <= ref.n_iter_
    np.testing.assert_allclose(warm.predict_proba(t.X_test), ref.predict_proba(t.X_test), atol=1e-6)
    lb = BatchedLogReg(2, device="cpu", solver="lbfgs").fit(t.X_pool, t.y_pool, m2)
    np.testing.assert_allclose(lb.predict_proba(t.X_test), ref.predict_proba(t.X_test), atol=5e-3)
    # one labeled class: the smoothed label frequencies, as metaal.learners.Learner
    one = np.zeros((1, t.n_pool), dtype=bool)
    one[0, np.flatnonzero(t.y_pool == 1)[:3]] = True
    p = BatchedLogReg(2, device="cpu").fit(t.X_pool, t.y_pool, one).predict_proba(t.X_test[:2])
    np.testing.assert_allclose(p[0], [[1 / 5, 4 / 5]] * 2)


def test_errors():
    with pytest.raises(ConfigError):
        BatchedLogReg(3, device="no-such-device")
    with pytest.raises(ConfigError):
        BatchedLogReg(3, solver="sgd")
    X = np.zeros((5, 2))
    with pytest.raises(DataError):
        BatchedLogReg(2, device="cpu").fit(X, np.array([0, 1, 2, 0, 1]), np.ones((1, 5), bool))
    with pytest.raises(ConfigError):
        BatchedLogReg(2, device="cpu").predict_proba(X)


def test_torch_logreg_learner_and_simulate_parity(wine, bc, shared):
    assert "torch_logreg" in LEARNERS
    lrn = make_learner("torch_logreg", 3)
    assert lrn.name == "torch_logreg"
    t = _task(wine)
    lrn.fit(t.X_pool[:20], t.y_pool[:20])
    c = lrn.clone()
    assert lrn.n_fits == 1 and c.n_fits == 0
    assert isinstance(c.estimator, TorchLogRegEstimator) and c.estimator is not lrn.estimator
    for ds in (wine, bc, shared("vertebral_column")):
        task = _task(ds, seed=1)
        a = simulate(task, "margin", budget=15, learner="logreg", seed=1)
        b = simulate(task, "margin", budget=15, learner="torch_logreg", seed=1)
        assert abs(a.aulc - b.aulc) <= 0.01, (ds.name, a.aulc, b.aulc)


def test_gather_padded_order_and_hessian_paths(wine):
    import torch

    from metaal.torch_learners import _LogRegProblem

    X = torch.as_tensor(np.asarray(wine.X, dtype=np.float64))
    y = torch.as_tensor(wine.y)
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((5, len(wine.y))) < np.array([0.0, 0.05, 0.2, 0.5, 1.0])[:, None])
    Xp, yp, wp = gather_padded(X, y, mask)
    for k in range(5):  # labeled rows first, in pool order, zero padding
        rows = np.flatnonzero(mask[k].numpy())
        m = len(rows)
        np.testing.assert_array_equal(Xp[k, :m].numpy(), X[rows].numpy())
        np.testing.assert_array_equal(yp[k, :m].numpy(), wine.y[rows])
        assert (wp[k, :m] == 1).all() and (wp[k, m:] == 0).all() and (Xp[k, m:] == 0).all()
    # the one-product Hessian (small problems) equals the block-by-block one (large problems)
    Xb = torch.cat([Xp, torch.ones(*Xp.shape[:2], 1, dtype=Xp.dtype)], -1)
    C = 3
    Y = torch.nn.functional.one_hot(yp, C).to(Xb.dtype)
    present = torch.ones(5, C, dtype=torch.bool)
    prob = _LogRegProblem(Xb, Y, wp, present, torch.ones(5, dtype=Xb.dtype))
    p = torch.softmax(torch.randn(*Xb.shape[:2], C, dtype=Xb.dtype, generator=torch.Generator().manual_seed(0)), -1)
    H_small = prob.hessian(p)
    big = Xb.shape[0] * Xb.shape[1] * C * C * Xb.shape[2] > 4_000_000
    assert not big
    Xbig = Xb.repeat(1, 40, 1)  # the same problems with every row 40 times: the block path
    prob_big = _LogRegProblem(Xbig, Y.repeat(1, 40, 1), wp.repeat(1, 40), present, torch.ones(5, dtype=Xb.dtype))
    H_big = prob_big.hessian(p.repeat(1, 40, 1))
    np.testing.assert_allclose(H_big.numpy() - torch.diag_embed(prob_big.ridge).numpy(),
                               40 * (H_small - torch.diag_embed(prob.ridge)).numpy(), rtol=1e-9, atol=1e-9)


def test_probability_floor_is_the_learners_floor():
    """torch_learners keeps its own copy (learners imports it, not the other way round)."""
    from metaal import learners, torch_learners

    assert torch_learners.PROBA_FLOOR == learners.PROBA_FLOOR
