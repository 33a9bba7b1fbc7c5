"""The SQLite store: invalid labels leave it untouched, undo is recorded, and a labeling process
killed with SIGKILL resumes with every acknowledged label and the same query order."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaal.errors import ConfigError, LabelError
from metaal.loop.session import ActiveLearner, run_oracle
from metaal.store import Store

ROOT = Path(__file__).resolve().parents[1]


def raw_rows(path: Path, table: str) -> int:
    with sqlite3.connect(str(path)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    s.init_session({"classes": ["a", "b", "c"], "pool": [0, 1, 2, 5, 7], "dataset": "toy"})
    yield s
    s.close()


def test_pragmas_and_meta(store):
    assert store._read("PRAGMA journal_mode")[0][0] == "wal"
    assert store._read("PRAGMA synchronous")[0][0] == 2  # FULL
    m = store.meta
    assert m["classes"] == ["a", "b", "c"] and m["pool"] == [0, 1, 2, 5, 7] and m["dataset"] == "toy"


def test_invalid_labels_write_nothing(store):
    assert store.add_labels([0, 1], [0, 1]) == [(0, 0), (1, 1)]
    before = raw_rows(store.path, "labels")
    with pytest.raises(LabelError, match="unknown class index 3"):
        store.add_labels([2], [3])
    with pytest.raises(LabelError, match="item 4 is not in the pool"):
        store.add_labels([2, 4], [0, 0])  # first answer valid, second not: none written
    with pytest.raises(LabelError, match="item 1 is already labeled 1"):
        store.add_labels([5, 1], [2, 0])
    with pytest.raises(LabelError, match="twice with different labels"):
        store.add_labels([7, 7], [0, 1])
    assert raw_rows(store.path, "labels") == before == 2
    assert store.label_of() == {0: 0, 1: 1}
    # the same answer again is a no-op
    assert store.add_labels([1], [1]) == []
    assert raw_rows(store.path, "labels") == 2


def test_undo_is_recorded_and_allows_relabel(store):
    store.add_labels([0], [0])
    store.add_labels([2], [1])
    store.add_curve_point(2, 0.5)
    assert store.undo() == (2, 1)
    assert store.label_of() == {0: 0}
    assert [(i, lab) for i, lab, _ in store.undone()] == [(2, 1)]
    assert store.curve() == []  # the point measured with the removed label is gone
    store.add_labels([2], [2])  # a different label is fine after undo
    assert store.label_of() == {0: 0, 2: 2}
    assert raw_rows(store.path, "labels") == 3  # the undone row is kept
    assert store.undo() == (2, 2) and store.undo() == (0, 0) and store.undo() is None


def test_pending_queries_skips_and_checkpoints(store):
    q1 = store.add_query([5, 7], "margin", [0.3, float("nan")])
    store.add_labels([5], [0], query_id=q1)
    assert store.pending() == [(7, q1, "margin", None)]
    store.skip(7)
    assert store.pending() == [] and store.skipped() == [7]
    with pytest.raises(LabelError):
        store.skip(99)
    store.save_checkpoint({"w": np.arange(3)}, n_labels=1)
    model, n = store.load_checkpoint()
    assert n == 1 and list(model["w"]) == [0, 1, 2]


def test_store_refuses_another_session(tmp_path, wine):
    path = tmp_path / "w.sqlite"
    ActiveLearner(wine, "margin", store=path, seed=0).store.close()
    with pytest.raises(ConfigError, match="its strategy is"):
        ActiveLearner(wine, "entropy", store=path, seed=0)
    other = wine.subset(np.arange(wine.n))
    other.X = other.X * 2
    with pytest.raises(ConfigError, match="features_sha256"):
        ActiveLearner(other, "margin", store=path, seed=0)
    path2 = tmp_path / "junk.sqlite"
    path2.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="not a metaal SQLite store"):
        Store(path2)


def test_strategy_state_saved_with_its_query(store):
    q1 = store.add_query([0], "albl", [None], strategy_state={"w": [0.5, 1.0]})
    assert store.strategy_state() == ({"w": [0.5, 1.0]}, q1)
    q2 = store.add_query([1], "albl", [None])  # None: the saved state is kept
    assert store.strategy_state() == ({"w": [0.5, 1.0]}, q1)
    with pytest.raises(ConfigError, match="not JSON-serializable"):
        store.add_query([2], "albl", [None], strategy_state={"w": np.ones(2)})
    assert store.n_queries == 2 and store.strategy_state()[1] == q1 < q2  # nothing written
    store.add_query([2], "albl", [None], strategy_state={"w": [1.0, 1.0]})
    assert store.strategy_state() == ({"w": [1.0, 1.0]}, q2 + 1) and raw_rows(store.path, "strategy_state") == 1


def test_store_without_strategy_state_resumes_fresh(tmp_path, wine, caplog):
    """A store written before strategy states were saved (schema 1, no strategy_state table)
    still opens; a stateful strategy starts fresh with a logged warning, a stateless one silently."""
    for strategy in ("albl", "margin"):
        path = tmp_path / f"old_{strategy}.sqlite"
        al = ActiveLearner(wine, strategy, store=path, seed=0)
        run_oracle(al, wine.y, 6)
        al.store.close()
        db = sqlite3.connect(str(path))
        db.execute("DROP TABLE strategy_state")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        db.commit()
        db.close()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metaal.loop.session"):
            again = ActiveLearner(wine, strategy, store=path, seed=0)
        assert again.resumed and again.n_labeled == 6 and again.store.strategy_state() is None
        if strategy == "albl":
            assert "no saved state for strategy 'albl'" in caplog.text and "starts fresh" in caplog.text
            np.testing.assert_array_equal(again.strategy.weights, np.ones(4))
        else:
            assert caplog.text == ""
        run_oracle(again, wine.y, 8)  # continues, saving the state from now on
        assert again.store.strategy_state()[0] == again.strategy.get_state()
        again.store.close()


def _label_cmd(store: Path, n: int, delay: float) -> list[str]:
    return [sys.executable, "-m", "metaal.label_cli", "--data", "sklearn:wine", "--store", str(store),
            "--strategy", "margin", "--oracle", "y", "--n", str(n), "--delay", str(delay)]


@pytest.mark.slow
def test_sigkill_mid_session_then_resume(tmp_path, wine):
    n_total, n_before_kill = 16, 6
    # reference: the same session without interruption (in process)
    ref = ActiveLearner(wine, "margin", store=tmp_path / "ref.sqlite", seed=0)
    run_oracle(ref, wine.y, n_total)
    ref_order = [item for _, item, _, _ in ref.store.labels()]
    assert len(ref_order) == n_total

    path = tmp_path / "killed.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_label_cmd(path, n_total, 0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT), env=env)
    acked: list[int] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("labeled "):
                acked.append(int(line.split("id=")[1].split()[0]))
                if len(acked) == n_before_kill:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # type: ignore[union-attr]
    assert len(acked) == n_before_kill

    # every acknowledged label is in the store, in order; the session stopped mid-way
    s = Store(path)
    stored = [item for _, item, _, _ in s.labels()]
    assert stored[: len(acked)] == acked
    assert len(stored) < n_total
    assert all(lab == wine.y[item] for _, item, lab, _ in s.labels())
    pending = s.pending()  # the query shown when the process died (if it was recorded)
    assert len(pending) <= 1
    if pending:
        assert pending[0][0] == ref_order[len(stored)]
    s.close()

    # resume: the same command finishes the session, asking exactly what the reference asked
    out = subprocess.run(
        _label_cmd(path, n_total, 0.0), capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"resumed {path}: {len(stored)} labels")
    s = Store(path)
    final = [item for _, item, _, _ in s.labels()]
    assert final[: len(acked)] == acked
    assert final == ref_order
    assert [c[1] for c in s.curve()][-1] == pytest.approx(ref.progress()["accuracy"])
    s.close()


def test_schema_2_store_gets_the_rng_column(tmp_path):
    """A store written before the strategy generator's state was saved (schema 2) opens; the
    column is added, empty, and filled by the next strategy query."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(str(path)) as db:
        db.execute("CREATE TABLE strategy_state (id INTEGER PRIMARY KEY CHECK (id = 1), query_id INTEGER NOT NULL, "
                   "state TEXT NOT NULL, time REAL NOT NULL)")
        db.execute("INSERT INTO strategy_state VALUES (1, 1, '{}', 0.0)")
    s = Store(path)
    assert s.rng_state() is None and s.strategy_state() == ({}, 1)
    s.init_session({"classes": ["a", "b"], "pool": [0, 1, 2]})
    rng = np.random.default_rng(3)
    s.add_query([0], "margin", [None], strategy_state={}, rng_state=rng.bit_generator.state)
    assert s.rng_state() == rng.bit_generator.state
    s.close()
