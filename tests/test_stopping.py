"""The stabilizing-predictions stopping rule (issue 14, item 3): the rule on hand-made prediction
sequences, the stop set, ``simulate``'s stop point on wine, ``compare``'s summary columns."""
from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest

from metaal.cli import main
from metaal.data import load_dataset, make_split
from metaal.errors import ConfigError
from metaal.loop.simulate import simulate
from metaal.state import Task
from metaal.stopping import StabilizingPredictions, draw_stop_set, prediction_kappa

A = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def _flip(pred: np.ndarray, k: int) -> np.ndarray:
    """``pred`` with its first ``k`` predictions moved to the next class."""
    out = pred.copy()
    out[:k] = (out[:k] + 1) % 3
    return out


def test_kappa_matches_sklearn_and_the_degenerate_case_is_one() -> None:
    from sklearn.metrics import cohen_kappa_score

    b = _flip(A, 3)
    assert prediction_kappa(A, b) == pytest.approx(cohen_kappa_score(A, b))
    assert prediction_kappa(A, A) == 1.0
    const = np.zeros(50, dtype=int)
    assert prediction_kappa(const, const) == 1.0  # undefined for sklearn (0/0): counted as 1
    assert prediction_kappa(const, const + 1) == 0.0
    with pytest.raises(ValueError):
        prediction_kappa(A, A[:5])


def test_rule_fires_exactly_when_the_window_mean_reaches_the_threshold() -> None:
    rule = StabilizingPredictions(window=3, threshold=0.99)
    assert not rule.update(A, 10)  # the first fit: no kappa yet
    assert rule.kappas == []
    seq = [_flip(A, 4)] * 4  # kappa < 1, then 1, 1, 1
    fired = [rule.update(p, n) for p, n in zip(seq, (11, 12, 13, 14))]
    # window means: after 13 labels (k1 + 1 + 1) / 3 < 0.99; after 14: (1 + 1 + 1) / 3 = 1
    assert fired == [False, False, False, True]
    assert rule.stopped and rule.stop_at == 14 and rule.stop_index == 3
    assert rule.kappas[1:] == [1.0, 1.0, 1.0] and rule.kappas[0] < 0.99
    # once fired it stays fired, at the same point
    assert rule.update(_flip(A, 5), 15) and rule.stop_at == 14
    d = rule.to_dict()
    assert d["stable"] is True and d["labels_at_stop"] == 14 and d["n_labels"] == [11, 12, 13, 14, 15]


def test_window_and_threshold_are_respected() -> None:
    k = prediction_kappa(A, _flip(A, 1))
    assert 0.8 < k < 0.99
    # window 1: fires on the first kappa >= threshold
    r1 = StabilizingPredictions(window=1, threshold=0.99)
    r1.update(A, 1)
    assert not r1.update(_flip(A, 1), 2) and r1.update(_flip(A, 1), 3) and r1.stop_at == 3
    # a lower threshold accepts kappa k; a higher one does not
    low = StabilizingPredictions(window=2, threshold=k - 1e-9)
    high = StabilizingPredictions(window=2, threshold=k + 1e-9)
    for rule in (low, high):
        for n, p in enumerate([A, _flip(A, 1), A, _flip(A, 1)]):
            rule.update(p, n)
    assert low.stop_at == 2 and not high.stopped  # kappas k, k, k: mean k
    # window 5 needs five kappas even when all are 1
    r5 = StabilizingPredictions(window=5, threshold=0.99)
    fired = [r5.update(A, n) for n in range(6)]
    assert fired == [False] * 5 + [True] and r5.stop_at == 5
    for bad in ({"window": 0}, {"threshold": 1.5}, {"threshold": -1.0}):
        with pytest.raises(ConfigError):
            StabilizingPredictions(**bad)


def test_stop_set_is_seeded_and_takes_no_strategy_stream() -> None:
    a, b = draw_stop_set(10_000, 3), draw_stop_set(10_000, 3)
    assert len(a) == 2000 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, draw_stop_set(10_000, 4))
    assert np.array_equal(draw_stop_set(120, 3), np.arange(120))
    assert len(draw_stop_set(500, 0, size=100)) == 100


@pytest.fixture(scope="module")
def wine_task() -> Task:
    ds = load_dataset("sklearn:wine")
    return Task.from_split(ds, make_split(ds, 0, 6))


def test_simulate_records_a_stop_point_on_wine(wine_task: Task) -> None:
    budget = 40
    c1 = simulate(wine_task, "margin", budget, seed=0)
    c2 = simulate(wine_task, "margin", budget, seed=0)
    assert c1.stop_labels is not None
    assert wine_task.initial.size < c1.stop_labels <= wine_task.initial.size + budget
    i = int(np.flatnonzero(c1.n_labeled == c1.stop_labels)[0])
    assert c1.stop_accuracy == c1.accuracy[i]
    assert len(c1.stop_kappa) == budget and all(-1.0 <= k <= 1.0 for k in c1.stop_kappa)
    # the stop is where the mean of the last 3 kappas first reaches 0.99
    means = np.convolve(c1.stop_kappa, np.ones(3) / 3, mode="valid")
    assert c1.n_labeled[int(np.flatnonzero(means >= 0.99)[0]) + 3] == c1.stop_labels
    # same seed, same values, bit for bit; the curve goes on to the budget
    assert (c2.stop_labels, c2.stop_accuracy, c2.stop_kappa) == (c1.stop_labels, c1.stop_accuracy, c1.stop_kappa)
    assert np.array_equal(c1.accuracy, c2.accuracy) and c1.queried == c2.queried
    assert c1.n_labeled[-1] == wine_task.initial.size + budget
    # a stricter rule stops later or never; the curve itself is the same
    strict = simulate(wine_task, "margin", budget, seed=0, stop_window=6, stop_threshold=1.0)
    assert strict.stop_labels is None or strict.stop_labels >= c1.stop_labels
    assert np.array_equal(strict.accuracy, c1.accuracy) and strict.queried == c1.queried


def test_compare_summary_has_the_stop_columns(tmp_path) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--data", "sklearn:wine", "--strategies", "random,margin", "--budget", "30",
            "--initial", "6", "--seeds", "2", "--jobs", "1", "--no-progress", "--no-plot",
            "--stop-window", "2", "--stop-threshold", "0.98", "--out", str(out)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        fired = int(r["stop_fired"])
        assert 0 <= fired <= 2
        if fired:
            assert 6 < float(r["stop_labels_mean"]) <= 36 and 0.3 < float(r["stop_accuracy_mean"]) <= 1.0
        else:
            assert r["stop_labels_mean"] == "nan" and r["stop_accuracy_mean"] == "nan"
        assert "final_accuracy" in r
    assert sum(int(r["stop_fired"]) for r in rows) > 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["arguments"]["stop_window"] == 2 and doc["arguments"]["stop_threshold"] == 0.98
    assert {"stop_labels_mean", "stop_accuracy_mean", "stop_fired"} <= set(doc["rows"][0])
    assert "stop at" in buf.getvalue()
    # the same simulate, the same stop: summary matches the curves of run_cells
    from metaal.experiments.runner import run_cells

    curves = run_cells(["sklearn:wine"], ["margin"], seeds=2, budget=30, initial=6, stop_window=2,
                       stop_threshold=0.98)
    stops = [c.stop_labels for c in curves if c.stop_labels is not None]
    row = next(r for r in rows if r["strategy"] == "margin")
    assert int(row["stop_fired"]) == len(stops)
    if stops:
        assert float(row["stop_labels_mean"]) == pytest.approx(np.mean(stops))


def test_compare_refuses_a_bad_stop_setting(tmp_path, capsys) -> None:
    code = main(["compare", "--data", "sklearn:wine", "--strategies", "random", "--stop-window", "0",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "window" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# -- the labeling session and the Python API ------------------------------------------------------


def _session(store, budget: int = 40):
    from metaal.loop.session import ActiveLearner

    return ActiveLearner(load_dataset("sklearn:wine"), "margin", store=store, seed=0, initial=6, budget=budget)


def test_session_reports_the_stop_of_compare_and_resumes_it(tmp_path, wine_task: Task) -> None:
    from metaal.loop.session import run_oracle

    wine = load_dataset("sklearn:wine")
    path = tmp_path / "s.sqlite"
    al = _session(path)
    assert al.progress()["stopping"] == {**al.stopping.to_dict(), "stable": False, "kappa": []}
    prog = run_oracle(al, wine.y)
    stop = prog["stopping"]
    sim = simulate(wine_task, "margin", 40, seed=0)
    # the session with an oracle is compare's run: the same kappas, the same stop
    assert stop["stable"] is True and al.stabilized
    assert stop["labels_at_stop"] == sim.stop_labels
    assert stop["kappa"] == sim.stop_kappa and stop["n_labels"] == [int(n) for n in sim.n_labeled[1:]]
    assert stop["window"] == 3 and stop["threshold"] == 0.99
    al.store.close()

    again = _session(path)  # resume: the same stop state
    assert again.progress()["stopping"] == stop and again.stabilized
    # a crash between the answer and the kappa's write: the replay recomputes the last kappa
    again.store.set_meta("stop_kappa", [list(e) for e in again._stop_entries[:-1]])
    again.store.close()
    third = _session(path)
    assert third.progress()["stopping"] == stop
    # undo drops the kappa of the label it removes; the same answer again restores it
    item, name = third.undo()
    assert third.progress()["stopping"]["kappa"] == stop["kappa"][:-1]
    third.teach([item], [name])
    assert third.progress()["stopping"] == stop
    third.store.close()


def test_session_rule_settings_and_an_undo_into_the_cold_start(tmp_path) -> None:
    from metaal.loop.session import ActiveLearner, run_oracle

    wine = load_dataset("sklearn:wine")
    strict = ActiveLearner(wine, "margin", seed=0, initial=6, budget=40, stop_window=40, stop_threshold=1.0)
    prog = run_oracle(strict, wine.y)
    assert not strict.stabilized and prog["stopping"]["labels_at_stop"] is None
    assert len(prog["stopping"]["kappa"]) == 40 and prog["stopping"]["window"] == 40
    with pytest.raises(ConfigError):
        ActiveLearner(wine, "margin", seed=0, initial=6, stop_window=0)
    al = ActiveLearner(wine, "margin", seed=0, initial=6)
    run_oracle(al, wine.y, n=9)
    assert len(al.progress()["stopping"]["kappa"]) == 3
    for _ in range(4):
        al.undo()
    assert al.cold_start and al.progress()["stopping"]["kappa"] == []
    assert al.store.meta["stop_kappa"] == []


def test_python_api_exposes_stabilized() -> None:
    from sklearn.linear_model import LogisticRegression

    from metaal import ActiveLearner

    wine = load_dataset("sklearn:wine")
    learner = ActiveLearner(estimator=LogisticRegression(max_iter=1000), X_pool=wine.X, random_state=0)
    assert learner.stabilized is False
    names = np.asarray(wine.classes)[wine.y]
    for _ in range(60):
        idx = learner.query(1)
        learner.teach(idx, names[idx])
        if learner.stabilized:
            break
    assert learner.stabilized
    stop = learner.progress()["stopping"]
    assert 6 <= stop["labels_at_stop"] <= learner.n_labeled <= 61
    assert np.mean(stop["kappa"][-3:]) >= 0.99
