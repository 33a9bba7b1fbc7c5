"""ActiveLearner: the wood-knot flow with an oracle, cold start, teach by name, undo, skip, resume."""
from __future__ import annotations

import numpy as np
import pytest

from metaal.errors import ConfigError, LabelError
from metaal.loop import ActiveLearner
from metaal.loop.session import COLD_START_REASON, run_oracle


def test_woodknots_oracle_30_labels_accuracy_rises(shared, tmp_path):
    knots = shared("woodknots_resnet18")
    al = ActiveLearner(knots, "margin", store=tmp_path / "knots.sqlite", seed=0)
    assert al.n_labeled == 0 and al.cold_start
    reasons = []
    prog = run_oracle(al, knots.y, 30, callback=lambda q, lab, p: reasons.append(q.reason))
    assert prog["n_labeled"] == 30 and sum(prog["counts"].values()) == 30
    curve = [(p["n_labeled"], p["accuracy"]) for p in prog["curve"]]
    assert [n for n, _ in curve] == list(range(1, 31))
    accs = np.array([a for _, a in curve])
    majority = np.bincount(knots.y).max() / knots.n
    # accuracy rises: the last five points beat the first five and the majority class clearly
    assert accs[-5:].mean() > accs[:5].mean() + 0.1
    assert accs[-1] > majority + 0.1
    # cold start then the strategy
    assert reasons[0] == COLD_START_REASON and reasons[-1] == "margin"
    assert prog["accuracy"] == pytest.approx(accs[-1])
    assert len(al.store.curve()) == 30 and al.store.load_checkpoint()[1] == 30


def test_cold_start_is_random_until_two_classes(wine):
    al = ActiveLearner(wine, "margin", seed=1, initial=2)
    # label every cold-start pick with class 0 (as if the annotator saw only class 0): stays cold
    for _ in range(3):
        q = al.query(1)[0]
        assert q.reason == COLD_START_REASON and q.fallback
        al.teach([q.id], [0])
    assert al.cold_start
    other = next(int(r) for r in al.pool_ids if wine.y[r] == 1 and r not in al.store.label_of())
    al.teach(other, "class_1")  # by class name
    assert not al.cold_start
    q = al.query(1)[0]
    assert q.reason == "margin" and not q.fallback and q.score is not None
    assert q.guess in set(wine.classes) and 0 < q.confidence <= 1


def test_teach_validation_writes_nothing(wine):
    al = ActiveLearner(wine, "entropy", seed=0)
    q = al.query(2)
    al.teach([q[0].id], [int(wine.y[q[0].id])])
    test_id = int(al.test_ids[0])
    for ids, labs, msg in [
        ([q[1].id], ["no_such_class"], "unknown class 'no_such_class'"),
        ([q[1].id], [7], "unknown class index 7"),
        ([test_id], [0], "not in the pool"),
        ([q[0].id], [(int(wine.y[q[0].id]) + 1) % 3], "already labeled"),
        ([q[1].id], [True], "class index or a class name"),
    ]:
        with pytest.raises(LabelError, match=msg):
            al.teach(ids, labs)
    assert al.n_labeled == 1 and al.store.n_labels == 1
    assert al.teach([q[0].id], [int(wine.y[q[0].id])]) == 0  # same answer again: idempotent


def test_undo_and_skip(wine):
    al = ActiveLearner(wine, "margin", seed=0)
    run_oracle(al, wine.y, 6)
    last = al.store.labels()[-1][1]
    before = al.model.predict_proba(al.X_pool).copy()
    assert al.undo() == (last, str(wine.classes[wine.y[last]]))
    assert al.n_labeled == 5 and not al.state.labeled_mask[al.position(last)]
    assert not np.allclose(before, al.model.predict_proba(al.X_pool))
    # the undone item is offered again first
    assert al.query(1)[0].id == last
    al.skip(last)
    nxt = al.query(3)
    assert last not in [q.id for q in nxt] and len({q.id for q in nxt}) == 3


def test_resume_replays_labels_and_reoffers_pending(wine, tmp_path):
    knots = wine
    path = tmp_path / "s.sqlite"
    al = ActiveLearner(knots, "margin", store=path, seed=3)
    run_oracle(al, knots.y, 8)
    asked = [q.id for q in al.query(2)]  # recorded, never answered
    model_before = al.model.predict_proba(al.X_pool)
    curve_before = al.progress()["curve"]
    al.store.close()

    again = ActiveLearner(knots, "margin", store=path, seed=3)
    assert again.resumed and again.n_labeled == 8
    np.testing.assert_array_equal(again.model.predict_proba(again.X_pool), model_before)
    assert [q.id for q in again.query(2)] == asked
    assert again.progress()["curve"] == curve_before and len(curve_before) == 8


def test_resume_restores_the_previous_predictions(wine, tmp_path):
    """After a resume the state holds the predictions from before the last answer (prev_proba,
    prev_pred: features of a learned policy's observation), as in the uninterrupted session; a
    batch answer counts as one step."""
    path = tmp_path / "s.sqlite"
    al = ActiveLearner(wine, "margin", store=path, seed=4)
    run_oracle(al, wine.y, 6)
    q = al.query(2)
    al.teach([x.id for x in q], [int(wine.y[x.id]) for x in q])  # one answer with two labels
    assert al.state.prev_proba is not None
    again = ActiveLearner(wine, "margin", store=path, seed=4)
    assert again.n_labeled == 8
    np.testing.assert_array_equal(again.state.proba, al.state.proba)
    np.testing.assert_array_equal(again.state.prev_proba, al.state.prev_proba)
    np.testing.assert_array_equal(again.state.prev_pred, al.state.prev_pred)
    # a learned policy then sees the same observation, and asks the same
    from metaal.observe import Observer

    a = Observer().observe(al.state, np.random.default_rng(0))
    b = Observer().observe(again.state, np.random.default_rng(0))
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.global_, b.global_)


def test_albl_resume_continues_the_bandit(wine, tmp_path):
    """ALBL's bandit state is saved with each query: a session abandoned twice (once with a query on
    screen, once without closing the store) and resumed asks exactly what an uninterrupted one asks."""
    n_total = 30
    ref = ActiveLearner(wine, "albl", seed=5)
    run_oracle(ref, wine.y, n_total)
    ref_order = [item for _, item, _, _ in ref.store.labels()]
    assert len(ref_order) == n_total and not np.allclose(ref.strategy.weights, 1.0)  # the bandit learned

    path = tmp_path / "albl.sqlite"
    al = ActiveLearner(wine, "albl", store=path, seed=5)
    run_oracle(al, wine.y, 12)
    shown = al.query(1)[0].id  # on screen when the session is abandoned
    bandit = al.strategy.get_state()
    al.store.close()

    al = ActiveLearner(wine, "albl", store=path, seed=5)
    assert al.resumed and al.n_labeled == 12 and al.strategy.get_state() == bandit
    assert al.query(1)[0].id == shown
    run_oracle(al, wine.y, 21)
    abandoned = al  # dropped without closing its store
    al = ActiveLearner(wine, "albl", store=path, seed=5)
    assert al.strategy.get_state() == abandoned.strategy.get_state()
    run_oracle(al, wine.y, n_total)
    assert [item for _, item, _, _ in al.store.labels()] == ref_order
    np.testing.assert_array_equal(al.strategy.weights, ref.strategy.weights)
    abandoned.store.close()


def test_undo_keeps_the_strategy_state(wine, tmp_path):
    """An undo does not restart ALBL's bandit, so a session resumed right after an undo continues
    as the uninterrupted one."""
    orders = []
    for path in (None, tmp_path / "u.sqlite"):
        al = ActiveLearner(wine, "albl", store=path, seed=0)
        run_oracle(al, wine.y, 10)
        al.query(1)
        bandit = al.strategy.get_state()
        old_state = al.state  # kept alive so that the rebuilt ALState cannot reuse its id()
        assert al.undo() is not None and al.state is not old_state
        assert al.strategy.get_state() == bandit
        if path is not None:  # abandoned right after the undo, then resumed
            al.store.close()
            al = ActiveLearner(wine, "albl", store=path, seed=0)
            assert al.strategy.get_state() == bandit
        run_oracle(al, wine.y, 20)
        orders.append([item for _, item, _, _ in al.store.labels()])
    assert orders[0] == orders[1]


def test_bare_features_without_labels(wine):
    al = ActiveLearner(wine.X, "least_confident", classes=list(wine.classes), seed=0)
    assert len(al.test_ids) == 0 and al.n_labeled == 0
    run_oracle(al, wine.y, 6)
    p = al.progress()
    assert p["n_labeled"] == 6 and p["accuracy"] is None and p["n_test"] == 0
    with pytest.raises(ConfigError, match="classes="):
        ActiveLearner(wine.X, "margin")
    with pytest.raises(ConfigError, match="unknown strategy"):
        ActiveLearner(wine, "nonsense")


def test_export(wine, tmp_path):
    al = ActiveLearner(wine, "margin", seed=0)
    run_oracle(al, wine.y, 5)
    paths = al.export(tmp_path / "out")
    import json

    import joblib

    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "seq,id,label,class,time" and len(lines) == 6
    recs = [json.loads(x) for x in paths["jsonl"].read_text().splitlines()]
    assert [r["id"] for r in recs] == [i for _, i, _, _ in al.store.labels()]
    assert all(r["class"] == wine.classes[wine.y[r["id"]]] for r in recs)
    model = joblib.load(paths["model"])
    np.testing.assert_array_equal(model.predict(al.X_test), al.model.predict(al.X_test))
    assert paths["report_png"].read_bytes()[:4] == b"\x89PNG"


def test_policy_fallback_is_reported(wine):
    pytest.importorskip("metaal.agents")
    with pytest.warns(RuntimeWarning, match="falling back"):
        al = ActiveLearner(wine, "policy:/no/such/policy.zip", seed=0)
    run_oracle(al, wine.y, 4)
    q = al.query(1)[0]
    assert q.fallback and q.reason == "policy:/no/such/policy.zip (fallback: margin)"
