"""An answer is cheap at any pool size (issue 14, item 6): the work that does not decide the next
item (held-out evaluation, curve point, checkpoint, stopping rule) runs after the next item is
handed out, the labels and the items stay those of ``metaal compare``; the exact speed-ups of the
pool path give the same numbers bit for bit; the opt-in prefetch mode chooses with the model
before the answer while the refit runs. Behaviour only: no test here reads a clock."""
from __future__ import annotations

import shutil
import threading
from importlib import import_module

import numpy as np
import pytest

import metaal.loop.session as session_mod
from metaal import scores
from metaal.data import make_split
from metaal.experiments.runner import prepare_tasks, run_cell
from metaal.geometry import PoolGeometry, row_sq_norms, update_min_dist
from metaal.learners import Learner, make_learner
from metaal.loop import ActiveLearner
from metaal.loop.session import run_oracle
from metaal.state import Task
from metaal.strategies import top_k

INITIAL, BUDGET, SEED = 8, 12, 0
simulate_mod = import_module("metaal.loop.simulate")  # the module (metaal.loop.simulate is also a function)


def _answer_initial_set(al: ActiveLearner, y: np.ndarray) -> None:
    while al.cold_start:
        q = al.query_items(1)[0]
        al.teach([q.id], [int(y[q.id])])


def test_the_evaluation_runs_after_the_next_item_is_out_and_the_session_is_compare(wine, monkeypatch) -> None:
    """Every held-out evaluation after the initial set runs once the next item is recorded in the
    store (it is off the path from an answer to the next item), and the session still labels
    compare's items in compare's order with compare's accuracies and stopping kappas."""
    pending_at_evaluation: list[int] = []
    real = session_mod.evaluate

    def spy(learner, X, y, macro_f1=True):  # noqa: ANN001, ANN202
        pending_at_evaluation.append(len(al.store.pending()))
        return real(learner, X, y, macro_f1)

    monkeypatch.setattr(session_mod, "evaluate", spy)  # the cold start's evaluations
    monkeypatch.setattr(simulate_mod, "evaluate", spy)  # label_step_later's
    al = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL, budget=BUDGET)
    lines: list[tuple[int, float]] = []
    prog = run_oracle(al, wine.y, callback=lambda q, lab, p: lines.append((q.id, p["accuracy"])))
    monkeypatch.undo()
    assert prog["budget_reached"] and prog["n_labeled"] == INITIAL + BUDGET and not prog["evaluating"]
    # each answer's evaluation found the next item already recorded (the last answer has no next
    # item: the budget is reached)
    assert pending_at_evaluation == [1] * (INITIAL + BUDGET - 1) + [0]

    task = prepare_tasks([wine], [SEED], BUDGET, INITIAL)[(0, SEED)]
    sim = run_cell(task, "margin", BUDGET)
    assert [i for i, _ in lines[INITIAL:]] == [int(task.pool_ids[p]) for p in sim.queried]
    assert [a for _, a in lines[INITIAL - 1:]] == [float(a) for a in sim.accuracy]
    assert [a for _, a, _ in al.store.curve()][INITIAL - 1:] == [float(a) for a in sim.accuracy]
    assert al.stopping.kappas == sim.stop_kappa


def test_progress_answers_while_the_evaluation_runs(wine, monkeypatch) -> None:
    """The web page may read progress while an answer's evaluation runs in the background:
    ``progress(wait=False)`` answers at once (evaluating, no accuracy yet, the curve of the answer
    before), ``progress()`` waits for it."""
    al = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL)
    _answer_initial_set(al, wine.y)
    al.progress()  # the initial set's evaluation done
    release = threading.Event()
    started = threading.Event()
    real = session_mod.evaluate

    def slow(learner, X, y, macro_f1=True):  # noqa: ANN001, ANN202
        started.set()
        assert release.wait(30)
        return real(learner, X, y, macro_f1)

    monkeypatch.setattr(simulate_mod, "evaluate", slow)  # label_step_later's evaluation
    q = al.query_items(1)[0]
    al.teach([q.id], [int(wine.y[q.id])])
    assert al.evaluating and al.store.curve()[-1][0] == INITIAL  # pending until the next item is out
    nxt = al.query_items(1)[0]  # starts the evaluation in its thread
    assert started.wait(30)
    fast = al.progress(wait=False)
    assert fast["evaluating"] and fast["accuracy"] is None and fast["n_labeled"] == INITIAL + 1
    assert [p["n_labeled"] for p in fast["curve"]][-1] == INITIAL
    release.set()
    full = al.progress()
    assert not full["evaluating"] and full["accuracy"] is not None
    assert full["curve"][-1]["n_labeled"] == INITIAL + 1
    assert full["accuracy"] == session_mod.evaluate(al.model, al.X_test, al.y_test)[0]
    assert al.query_items(1)[0].id == nxt.id  # still the pending item


def test_a_crash_before_the_evaluation_loses_no_label(wine, tmp_path) -> None:
    """The answer is stored before teach returns; if the process dies before the evaluation ran
    (no query_items, no flush), a resumed session has every label, recomputes the lost curve point
    and kappa, and asks what the uninterrupted session asks."""
    path = tmp_path / "s.sqlite"
    al = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL, store=path)
    _answer_initial_set(al, wine.y)
    for _ in range(3):
        q = al.query_items(1)[0]
        al.teach([q.id], [int(wine.y[q.id])])
    assert al.evaluating  # the last answer's evaluation never ran: the process dies here
    crash = tmp_path / "crash.sqlite"  # the files as they are (committed transactions only)
    for suffix in ("", "-wal"):
        if (tmp_path / f"s.sqlite{suffix}").exists():
            shutil.copy(tmp_path / f"s.sqlite{suffix}", tmp_path / f"crash.sqlite{suffix}")
    again = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL, store=crash)
    assert again.n_labeled == INITIAL + 3
    al.flush()  # the uninterrupted session's numbers
    assert again.store.curve() == al.store.curve()
    assert again.stopping.kappas == al.stopping.kappas and len(al.stopping.kappas) == 3
    assert again.query_items(1)[0].id == al.query_items(1)[0].id


def test_teach_twice_without_a_query_evaluates_each_model(wine) -> None:
    """An answer's evaluation is of its own model even when the next teach comes before any
    query (the Python API): teach finishes the previous answer's work before it refits."""
    al = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL)
    _answer_initial_set(al, wine.y)
    split = make_split(wine, SEED, n_initial=INITIAL)
    task = Task.from_split(wine, split)
    picks = [int(i) for i in split.pool if int(i) not in set(split.initial.tolist())][:3]
    for item in picks:
        al.teach([item], [int(wine.y[item])])
    al.flush()
    curve = {n: a for n, a, _ in al.store.curve()}
    pos = [al.position(i) for i in picks]
    labeled = list(task.initial)
    for k in range(3):
        labeled.append(pos[k])
        rows = np.sort(labeled)  # the state fits its labels in pool order
        lrn = make_learner("logreg", task.n_classes, seed=SEED).fit(task.X_pool[rows], task.y_pool[rows])
        assert curve[INITIAL + 1 + k] == float(np.mean(lrn.predict(task.X_test) == task.y_test))


def test_prefetch_chooses_with_the_model_before_the_answer(wine, tmp_path) -> None:
    """Prefetch mode: after the initial set, teach returns with the next item chosen (and
    recorded) by the model before the answer, margin's pick among the items left; the refit on
    every label follows in the background; the mode is kept in the store and in progress."""
    path = tmp_path / "p.sqlite"
    al = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL, store=path, prefetch=True)
    _answer_initial_set(al, wine.y)
    q = al.query_items(1)[0]
    for _ in range(5):
        old = al.state.proba.copy()
        labeled = al.state.labeled_mask.copy()
        al.teach([q.id], [int(wine.y[q.id])])
        assert len(al.store.pending()) == 1  # recorded before teach returned
        nxt = al.query_items(1)[0]
        labeled[q.position] = True
        free = np.flatnonzero(~labeled)
        assert nxt.position == free[top_k(-scores.margin(old[free]), 1)[0]]
        al.flush()
        lab = al.state.labeled_mask
        ref = make_learner("logreg", 3, seed=SEED).fit(al.X_pool[lab], al.state.labels[lab])
        np.testing.assert_array_equal(al.state.proba, ref.predict_proba(al.X_pool))
        q = nxt
    assert al.store.meta["prefetch"] is True and al.progress()["prefetch"] is True
    assert al.progress()["curve"][-1]["n_labeled"] == INITIAL + 5
    again = ActiveLearner(wine, "margin", seed=SEED, initial=INITIAL, store=path)  # resumed, exact mode
    assert again.n_labeled == INITIAL + 5 and again.store.meta["prefetch"] is False
    assert again.query_items(1)[0].id == q.id  # the prefetched item is still pending


@pytest.mark.parametrize("n, d", [(40_000, 20), (3_001, 7), (20_000, 64)])
def test_kept_row_norms_give_the_same_distances(n: int, d: int) -> None:
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)
    a, b = np.full(n, np.inf), np.full(n, np.inf)
    geometry = PoolGeometry(X)
    np.testing.assert_array_equal(geometry.sq_norms, row_sq_norms(X))
    for new in (rng.choice(n, 1), rng.choice(n, 7), rng.choice(n, 100)):
        update_min_dist(a, X, new)
        update_min_dist(b, X, new, geometry.sq_norms)
        np.testing.assert_array_equal(a, b)


def test_two_class_probabilities_are_normalized_as_before() -> None:
    """Learner.predict_proba's two-class row sums are numpy's ``sum(axis=1)``, bit for bit, for
    scikit-learn's transposed two-column output and for a C-ordered one."""
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    for P in (np.vstack([1 - p, p]).T, np.ascontiguousarray(rng.dirichlet([0.3, 0.3], size=50_000))):
        P[rng.random(len(P)) < 0.01, 0] = 0.0
        out = np.maximum(P, 1e-12)
        np.testing.assert_array_equal(out / out.sum(axis=1, keepdims=True), out / (out[:, 0] + out[:, 1])[:, None])
    X = rng.normal(size=(2000, 5))
    lrn = Learner(make_learner("logreg", 2).estimator, 2).fit(X[:40], (X[:40, 0] > 0).astype(int))
    raw = np.maximum(lrn.estimator.predict_proba(X), 1e-12)
    np.testing.assert_array_equal(lrn.predict_proba(X), raw / raw.sum(axis=1, keepdims=True))


def test_margin_scores_and_the_single_pick_are_unchanged() -> None:
    """Margin and least-confident scores over the pool then the unlabeled rows equal the scores of
    the unlabeled rows; top_k(k=1) is the general rule's first pick (ties, NaN, infinities)."""
    rng = np.random.default_rng(1)
    for C in (2, 3, 9):
        for P in (rng.dirichlet([0.5] * C, size=5000), np.asfortranarray(rng.dirichlet([0.5] * C, size=5000))):
            unl = np.flatnonzero(rng.random(5000) > 0.3)
            for f in (scores.margin, scores.least_confident):
                np.testing.assert_array_equal(f(P)[unl], f(P[unl]))
    cases = [rng.integers(0, 4, 500).astype(float), np.array([np.nan, 1.0, 1.0]), np.array([-np.inf, -np.inf]),
             np.array([np.inf, 3.0, np.inf]), np.array([np.nan, np.nan]), np.array([-0.0, 0.0]),
             np.array([np.finfo(float).min, -np.inf]), np.array([-np.inf, np.finfo(float).min])]
    for s in cases:
        general = np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable")[0]
        assert top_k(s, 1).tolist() == [general]
