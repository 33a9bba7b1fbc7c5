"""The one-loop identity (DESIGN.md "Command line and files", issue 11): ``metaal label --oracle y``
and ``metaal compare`` on the same dataset, seed, initial set, strategy and budget label the same
items in the same order with the same accuracies; and the session's budget."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaal.data import find_dataset, load_dataset, make_split
from metaal.errors import DataError, LabelError
from metaal.experiments.runner import prepare_tasks, run_cell
from metaal.loop import ActiveLearner
from metaal.loop.session import COLD_START_REASON, run_oracle

ROOT = Path(__file__).resolve().parents[1]
INITIAL, BUDGET, SEED = 10, 20, 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metaal.cli", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["margin", "policy:default"])
@pytest.mark.parametrize("data", ["sklearn:wine", "banknote"])
def test_label_with_oracle_is_compare(data: str, strategy: str, tmp_path: Path) -> None:
    if not data.startswith("sklearn:") and find_dataset(data) is None:
        pytest.skip(f"dataset {data!r} not found along METAAL_DATA={os.environ.get('METAAL_DATA', '')!r}")
    lab = _cli("label", "--data", data, "--oracle", "y", "--strategy", strategy, "--initial", str(INITIAL),
               "--budget", str(BUDGET), "--seed", str(SEED))
    assert lab.returncode == 0, lab.stderr
    lines = [ln.split() for ln in lab.stdout.splitlines() if ln.startswith("labeled ")]
    assert len(lines) == INITIAL + BUDGET  # the session stops at the budget
    ids = [int(w[2].removeprefix("id=")) for w in lines]
    assert all(w[4] == f"reason={strategy}" for w in lines[INITIAL:])  # the strategy itself, no fallback
    accs = {int(w[1]): w[-1].removeprefix("accuracy=") for w in lines}
    assert lab.stdout.splitlines()[-1].startswith(f"done: {INITIAL + BUDGET} labels (budget of {BUDGET} reached)")

    out = tmp_path / "cmp"
    cmp = _cli("compare", "--data", data, "--strategies", strategy, "--initial", str(INITIAL), "--budget",
               str(BUDGET), "--seeds", "1", "--out", str(out), "--no-progress")
    assert cmp.returncode == 0, cmp.stderr
    with open(out / "curves.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["seed"]) == SEED and r["strategy"] == strategy]
    curve = {int(r["n_labeled"]): f"{float(r['accuracy']):.3f}" for r in rows}
    assert sorted(curve) == list(range(INITIAL, INITIAL + BUDGET + 1))
    # the same accuracies (3 decimals) from the initial set to the budget
    assert {n: accs[n] for n in curve} == curve

    # the same items in the same order: the split's initial set first, then compare's queries
    # (curves.csv holds no items: the very cell compare runs, in process)
    ds = load_dataset(data)
    split = make_split(ds, SEED, n_initial=INITIAL)
    assert ids[:INITIAL] == [int(i) for i in split.initial]
    task = prepare_tasks([ds], [SEED], BUDGET, INITIAL)[(0, SEED)]
    sim = run_cell(task, strategy, BUDGET)
    assert ids[INITIAL:] == [int(task.pool_ids[p]) for p in sim.queried]
    assert [f"{a:.3f}" for a in sim.accuracy] == [curve[n] for n in sorted(curve)]


def test_session_split_is_make_split(wine) -> None:
    """Pool (in its order), test set, initial set and standardized features of make_split, and
    after the initial set the model of new_state (the same fit)."""
    from metaal.loop.simulate import new_state
    from metaal.state import Task

    al = ActiveLearner(wine, "margin", seed=3, initial=8)
    split = make_split(wine, 3, n_initial=8)
    task = Task.from_split(wine, split)
    np.testing.assert_array_equal(al.pool_ids, split.pool)
    np.testing.assert_array_equal(al.test_ids, split.test)
    np.testing.assert_array_equal(al.X_pool, task.X_pool)
    np.testing.assert_array_equal(al.X_test, task.X_test)
    asked = []
    for _ in range(8):
        q = al.query(1)[0]
        assert q.reason == COLD_START_REASON
        asked.append(q.id)
        al.teach(q.id, int(wine.y[q.id]))
    assert asked == [int(i) for i in split.initial] and not al.cold_start
    ref = new_state(task, "logreg", seed=3)
    np.testing.assert_array_equal(al.state.proba, ref.proba)
    assert al.state.prev_proba is None and al.state.n_initial == 8 and al.state.n_queried == 0


def test_budget_stops_the_session_and_a_policy_sees_budget_used(wine, tmp_path) -> None:
    seen: list[tuple[int | None, int, float]] = []

    class Spy:
        """margin, recording the state's budget and budget_used at every select."""

        name = "spy"
        has_score = False

        def __init__(self) -> None:
            from metaal.strategies import get

            self.inner = get("margin")

        def reset(self, state, rng=None):  # noqa: ANN001, ANN201
            self.inner.reset(state, rng)

        def select(self, state, k=1, rng=None):  # noqa: ANN001, ANN201
            from metaal.observe import GLOBAL_FEATURES, Observer

            obs = Observer().observe(state, np.random.default_rng(0))
            seen.append((state.budget, state.n_queried, float(obs.global_[GLOBAL_FEATURES.index("budget_used")])))
            return self.inner.select(state, k, rng)

        def get_state(self):  # noqa: ANN201
            return {}

        def set_state(self, s):  # noqa: ANN001, ANN201
            pass

    path = tmp_path / "b.sqlite"
    al = ActiveLearner(wine, Spy(), seed=0, initial=4, budget=5, store=path)
    prog = run_oracle(al, wine.y)  # no n: the budget stops it
    assert prog["n_labeled"] == 9 and prog["budget_reached"] and prog["n_queried"] == 5
    assert al.query(3) == [] and al.budget_reached
    assert [(b, q) for b, q, _ in seen] == [(5, q) for q in range(5)]
    assert [u for _, _, u in seen] == pytest.approx([q / 5 for q in range(5)])
    free = next(int(r) for r in al.pool_ids if int(r) not in al.store.label_of())
    with pytest.raises(LabelError, match="budget of 5 labels"):
        al.teach(free, int(wine.y[free]))
    assert al.undo() is not None and not al.budget_reached and len(al.query(2)) == 1
    al.store.close()
    # the budget is kept in the store: a resumed session without budget= has it
    again = ActiveLearner(wine, Spy(), seed=0, store=path)
    assert again.budget == 5 and again.initial == 4 and again.state.budget == 5


def test_open_ended_session_sees_no_budget(wine) -> None:
    al = ActiveLearner(wine, "margin", seed=0, initial=4)
    run_oracle(al, wine.y, 8)
    assert al.budget is None and al.state.budget is None and not al.budget_reached
    assert al.progress()["n_queried"] == 4


def test_bad_budgets(wine, capsys) -> None:
    from metaal.cli import main

    with pytest.raises(DataError, match="budget must be >= 0"):
        ActiveLearner(wine, "margin", budget=-1)
    n_pool = len(make_split(wine, 0, n_initial=2).pool)
    with pytest.raises(DataError, match="larger than the unlabeled pool"):
        ActiveLearner(wine, "margin", budget=n_pool - 1)
    with pytest.raises(DataError, match="larger than the unlabeled pool"):
        ActiveLearner(wine.X, "margin", classes=list(wine.classes), budget=wine.n - 1)
    for bad, msg in [("-3", "budget must be >= 0"), ("1000", "larger than the unlabeled pool")]:
        assert main(["label", "--data", "sklearn:wine", "--oracle", "y", "--budget", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("metaal: error: ") and msg in err[0]


def test_loop_package_does_not_load_the_session() -> None:
    code = "import metaal.loop, sys; print('metaal.store' in sys.modules, 'metaal.loop.session' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
    from metaal import ActiveLearner as top
    from metaal.loop.session import ActiveLearner as direct

    assert top is direct is ActiveLearner


def test_resumed_random_session_continues_the_generator_stream(wine, tmp_path) -> None:
    """``random`` draws from the strategy's generator at every query: a session resumed twice
    asks exactly what an uninterrupted one asks, which is what simulate asks (one stream)."""
    from metaal.loop.simulate import simulate
    from metaal.state import Task

    ref = ActiveLearner(wine, "random", seed=2, initial=4)
    run_oracle(ref, wine.y, 16)
    ref_order = [item for _, item, _, _ in ref.store.labels()]
    path = tmp_path / "r.sqlite"
    for n in (7, 11, 16):
        al = ActiveLearner(wine, "random", seed=2, initial=4, store=path)
        run_oracle(al, wine.y, n)
        al.query(1)  # shown, never answered: offered again after the resume
        al.store.close()
    final = ActiveLearner(wine, "random", seed=2, initial=4, store=path)
    assert [item for _, item, _, _ in final.store.labels()] == ref_order
    task = Task.from_split(wine, make_split(wine, 2, n_initial=4))
    sim = simulate(task, "random", 12, seed=2)
    assert ref_order[4:] == [int(task.pool_ids[p]) for p in sim.queried]
    final.store.close()
