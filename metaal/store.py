"""A durable SQLite store for a labeling session.

One file holds everything needed to resume a session after a crash: the session's meta data
(dataset path, strategy, classes, seed, a checksum of the features, the pool ids), every label with
its time and sequence number, every query (its items, the reason, the scores), skipped items and
model checkpoints. The database runs in WAL mode with ``synchronous=FULL`` and each answer is one
transaction, so an acknowledged label survives ``kill -9`` and a power cut.

The query strategy's state (:meth:`metaal.strategies.Strategy.get_state`, e.g. ALBL's bandit
weights) is written in the same transaction as the query it produced (:meth:`Store.add_query`);
only the latest one is kept (table ``strategy_state``), with the state of the strategy's generator
(column ``rng``, :meth:`Store.rng_state`). A store written before that table existed (schema 1)
still opens: the table is created empty and :meth:`Store.strategy_state` returns None; a store
without the ``rng`` column (schema 2) gets it, empty.

Table ``blobs`` holds named byte strings (:meth:`Store.put_blob`): the Python API
(``ActiveLearner(X_pool=...)``) keeps the pool's features, the estimator and the strategy there so
that ``ActiveLearner.load(path)`` needs nothing else; older stores get the table, empty. The class
list of such a session may grow as labels arrive (:meth:`Store.extend_classes`): existing class
indices never change, new names are appended.

A stream session (:class:`metaal.loop.stream_session.StreamLearner`) writes one row per item of
the stream into table ``stream`` (:meth:`Store.add_stream_events`): its position, its data row,
the decision (``request`` or ``predict``), the model's prediction, the label given (requests; a
prediction only when its true label is known) and the time. Each label is one transaction; the
predictions passed on the way to the next request are one more.

Labels are validated before anything is written: an unknown class, an id that is not in the pool or
an id already labeled with a different label raise :class:`~metaal.errors.LabelError` and leave the
database untouched. Labeling the same id with the same label again is a no-op. :meth:`Store.undo`
removes the most recent label; the removal is recorded (the row keeps its ``undone_at`` time).
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from metaal.errors import ConfigError, LabelError

SCHEMA_VERSION = 3  # 2: table strategy_state (a schema-1 store gets it, empty, when opened)
# 3: column strategy_state.rng, the strategy generator's state (added, empty, to older stores)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL,
    label INTEGER NOT NULL,
    time REAL NOT NULL,
    query_id INTEGER,
    undone_at REAL
);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item);
CREATE TABLE IF NOT EXISTS queries (
    query_id INTEGER PRIMARY KEY AUTOINCREMENT,
    items TEXT NOT NULL,
    reason TEXT NOT NULL,
    scores TEXT NOT NULL,
    n_labels INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS skips (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS curve (
    n_labels INTEGER PRIMARY KEY,
    accuracy REAL,
    macro_f1 REAL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    n_labels INTEGER NOT NULL,
    time REAL NOT NULL,
    blob BLOB,
    path TEXT
);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stream (
    t INTEGER PRIMARY KEY,
    item INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('request', 'predict')),
    prediction INTEGER NOT NULL,
    label INTEGER,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS strategy_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    query_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    time REAL NOT NULL,
    rng TEXT
);
"""


class Store:
    """A labeling session in one SQLite file.

    :param path: the ``.sqlite`` file (created if missing).

    The pool ids and classes used for validation come from the session meta
    (:meth:`init_session`). All methods are thread-safe (one connection guarded by a lock), so the
    web app may call them from its worker threads.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError(f"store {self.path}: folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(strategy_state)").fetchall()}
            if "rng" not in cols:  # a store written before schema 3
                self._db.execute("ALTER TABLE strategy_state ADD COLUMN rng TEXT")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"store {self.path}: not a metaal SQLite store ({exc})") from None
        self._lock = threading.RLock()
        self._pool: set[int] | None = None
        self._n_classes: int | None = None

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run ``statements`` in one transaction; returns the last row id of each."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for sql, params in statements:
                    cur.execute(sql, tuple(params))
                    ids.append(int(cur.lastrowid or 0))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return ids

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return list(self._db.execute(sql, tuple(params)).fetchall())

    # -- meta -------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """The session meta, values decoded from JSON."""
        return {k: json.loads(v) for k, v in self._read("SELECT key, value FROM meta")}

    @property
    def is_new(self) -> bool:
        return not self._read("SELECT 1 FROM meta WHERE key = 'schema'")

    def init_session(self, meta: dict[str, Any], check: Sequence[str] = ()) -> dict[str, Any]:
        """Write ``meta`` into a new store, or check it against an existing one.

        ``meta`` must hold ``classes`` (list of names) and ``pool`` (list of item ids). For an
        existing store, every key in ``check`` must have the same value as stored.

        :raises ConfigError: naming the first key that differs (another dataset, other classes, ...).
        """
        if "classes" not in meta or "pool" not in meta:
            raise ConfigError("session meta needs 'classes' and 'pool'")
        if self.is_new:
            full = {"schema": SCHEMA_VERSION, "created": time.time(), **meta}
            self._write(
                ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, json.dumps(v))) for k, v in full.items()
            )
        else:
            stored = self.meta
            for key in check:
                if key in meta and key in stored and stored[key] != meta[key]:
                    a, b = json.dumps(stored[key])[:80], json.dumps(meta[key])[:80]
                    raise ConfigError(
                        f"store {self.path} belongs to another session: its {key} is {a}, not {b} "
                        "(use a new --store file)"
                    )
        m = self.meta
        self._pool = {int(i) for i in m["pool"]}
        self._n_classes = len(m["classes"])
        return m

    def _require_session(self) -> None:
        if self._pool is None:
            m = self.meta
            if "pool" not in m:
                raise ConfigError(f"store {self.path} has no session yet (call init_session first)")
            self._pool = {int(i) for i in m["pool"]}
            self._n_classes = len(m["classes"])

    # -- labels -----------------------------------------------------------------------------------
    def labels(self) -> list[tuple[int, int, int, float]]:
        """Active labels in the order given: ``(seq, item, label, time)``."""
        return [
            (int(s), int(i), int(lab), float(t))
            for s, i, lab, t in self._read(
                "SELECT seq, item, label, time FROM labels WHERE undone_at IS NULL ORDER BY seq"
            )
        ]

    def label_of(self) -> dict[int, int]:
        """``{item: label}`` for every active label."""
        return {i: lab for _, i, lab, _ in self.labels()}

    @property
    def n_labels(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM labels WHERE undone_at IS NULL")[0][0])

    def validate(
        self, items: Sequence[int], labels: Sequence[int], n_classes: int | None = None
    ) -> list[tuple[int, int]]:
        """Check a batch of answers; returns the ``(item, label)`` pairs that are new (repeats of an
        existing identical label are dropped). ``n_classes`` checks against that many classes
        instead of the session's (before :meth:`extend_classes`).

        :raises LabelError: unknown class, id not in the pool, an id twice in the batch with
            different labels, or an id already labeled differently.
        """
        self._require_session()
        assert self._pool is not None and self._n_classes is not None
        n_cls = self._n_classes if n_classes is None else int(n_classes)
        items = [int(i) for i in np.atleast_1d(np.asarray(items, dtype=np.int64))]
        labels = [int(v) for v in np.atleast_1d(np.asarray(labels, dtype=np.int64))]
        if len(items) != len(labels):
            raise LabelError(f"{len(items)} ids but {len(labels)} labels")
        current = self.label_of()
        batch: dict[int, int] = {}
        for i, lab in zip(items, labels):
            if not 0 <= lab < n_cls:
                raise LabelError(f"item {i}: unknown class index {lab} (classes are 0..{n_cls - 1})")
            if i not in self._pool:
                raise LabelError(f"item {i} is not in the pool of this session")
            if i in batch and batch[i] != lab:
                raise LabelError(f"item {i} appears twice with different labels ({batch[i]} and {lab})")
            if i in current and current[i] != lab:
                raise LabelError(
                    f"item {i} is already labeled {current[i]}; undo that label before giving {lab}"
                )
            batch[i] = lab
        return [(i, lab) for i, lab in batch.items() if i not in current]

    def add_labels(
        self, items: Sequence[int], labels: Sequence[int], query_id: int | None = None
    ) -> list[tuple[int, int]]:
        """Validate and write a batch of answers in one transaction.

        :returns: the ``(item, label)`` pairs actually written (identical repeats are skipped).
        :raises LabelError: see :meth:`validate`; nothing is written then.
        """
        with self._lock:
            new = self.validate(items, labels)
            if new:
                now = time.time()
                self._write(
                    ("INSERT INTO labels (item, label, time, query_id) VALUES (?, ?, ?, ?)", (i, lab, now, query_id))
                    for i, lab in new
                )
            return new

    def undo(self) -> tuple[int, int] | None:
        """Remove the most recent active label (recorded with its ``undone_at`` time).

        :returns: ``(item, label)`` removed, or None if there is no label.
        """
        with self._lock:
            rows = self._read("SELECT seq, item, label FROM labels WHERE undone_at IS NULL ORDER BY seq DESC LIMIT 1")
            if not rows:
                return None
            seq, item, label = rows[0]
            n_after = self.n_labels - 1
            self._write(
                [
                    ("UPDATE labels SET undone_at = ? WHERE seq = ?", (time.time(), seq)),
                    ("DELETE FROM curve WHERE n_labels > ?", (n_after,)),
                ]
            )
            return int(item), int(label)

    def undone(self) -> list[tuple[int, int, float]]:
        """Removed labels: ``(item, label, undone_at)``."""
        return [
            (int(i), int(lab), float(t))
            for i, lab, t in self._read(
                "SELECT item, label, undone_at FROM labels WHERE undone_at IS NOT NULL ORDER BY seq"
            )
        ]

    # -- queries and skips -------------------------------------------------------------------------
    def add_query(
        self,
        items: Sequence[int],
        reason: str,
        scores: Sequence[float | None],
        strategy_state: dict[str, Any] | None = None,
        rng_state: dict[str, Any] | None = None,
    ) -> int:
        """Record a query (its items, the reason, the score of each item); returns its id.

        :param strategy_state: the strategy's state after choosing these items
            (:meth:`~metaal.strategies.Strategy.get_state`), written in the same transaction as the
            query and replacing the previous one; None leaves the saved state as it is.
        :param rng_state: with ``strategy_state``, the state of the strategy's generator after
            choosing (``Generator.bit_generator.state``), saved alongside it.
        :raises ConfigError: ``strategy_state`` is not JSON-serializable (nothing is written).
        """
        now = time.time()
        row = (
            json.dumps([int(i) for i in items]),
            str(reason),
            json.dumps([None if s is None or not np.isfinite(s) else float(s) for s in scores]),
            self.n_labels,
            now,
        )
        stmts: list[tuple[str, Sequence[Any]]] = [
            ("INSERT INTO queries (items, reason, scores, n_labels, time) VALUES (?, ?, ?, ?, ?)", row)
        ]
        if strategy_state is not None:
            try:
                blob = json.dumps(strategy_state)
                rng_blob = None if rng_state is None else json.dumps(rng_state)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"store {self.path}: the strategy state is not JSON-serializable ({exc})") from None
            stmts.append(
                (
                    "INSERT OR REPLACE INTO strategy_state (id, query_id, state, time, rng) "
                    "VALUES (1, last_insert_rowid(), ?, ?, ?)",
                    (blob, now, rng_blob),
                )
            )
        return self._write(stmts)[0]

    def strategy_state(self) -> tuple[dict[str, Any], int] | None:
        """The latest saved strategy state and the id of the query it was saved with, or None
        (no query saved one: a new session, or a store written before strategy states were
        saved)."""
        rows = self._read("SELECT state, query_id FROM strategy_state WHERE id = 1")
        if not rows:
            return None
        return json.loads(rows[0][0]), int(rows[0][1])

    def rng_state(self) -> dict[str, Any] | None:
        """The strategy generator's state saved with the latest strategy state, or None."""
        rows = self._read("SELECT rng FROM strategy_state WHERE id = 1")
        if not rows or rows[0][0] is None:
            return None
        return json.loads(rows[0][0])

    def extend_classes(self, names: Sequence[str], values: Sequence[Any] | None = None) -> None:
        """Grow the session's class list to ``names`` (the current list must be its prefix, so
        every stored label keeps its meaning); ``values`` (JSON values, one per name) are the
        labels as the caller gave them (meta ``class_values``).

        :raises ConfigError: when ``names`` does not extend the current classes.
        """
        self._require_session()
        with self._lock:
            old = [str(c) for c in self.meta["classes"]]
            names = [str(c) for c in names]
            if names[: len(old)] != old:
                raise ConfigError(f"store {self.path}: classes {names} do not extend {old}")
            rows = [("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", ("classes", json.dumps(names)))]
            if values is not None:
                rows.append(("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             ("class_values", json.dumps(list(values)))))
            self._write(rows)
            self._n_classes = len(names)

    def put_blob(self, name: str, data: bytes) -> None:
        """Keep ``data`` under ``name`` (replacing an earlier one)."""
        self._write([("INSERT OR REPLACE INTO blobs (name, data, time) VALUES (?, ?, ?)",
                      (name, sqlite3.Binary(bytes(data)), time.time()))])

    def get_blob(self, name: str) -> bytes | None:
        """The bytes kept under ``name``, or None."""
        rows = self._read("SELECT data FROM blobs WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def backup(self, path: str | os.PathLike) -> Path:
        """Write a consistent copy of the whole store to ``path`` (replaced if it exists; its
        folder must exist) with SQLite's online backup; the store itself stays in use."""
        dest = Path(path)
        if str(self.path) != ":memory:" and dest.exists() and dest.resolve() == self.path.resolve():
            return dest  # the store is that file already (every answer is written as it comes)
        if not dest.parent.exists():
            raise ConfigError(f"cannot save to {dest}: folder {dest.parent} does not exist")
        for extra in (dest, dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
            if extra.exists():
                extra.unlink()
        with self._lock:
            out = sqlite3.connect(str(dest))
            try:
                self._db.backup(out)
            finally:
                out.close()
        return dest

    def set_meta(self, key: str, value: Any) -> None:
        """Replace one meta value (e.g. a session's budget, extended on resume)."""
        self._write([("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))])

    def queries(self) -> list[dict[str, Any]]:
        """Every recorded query, oldest first."""
        return [
            {
                "query_id": int(q),
                "items": json.loads(it),
                "reason": r,
                "scores": json.loads(sc),
                "n_labels": int(n),
                "time": float(t),
            }
            for q, it, r, sc, n, t in self._read(
                "SELECT query_id, items, reason, scores, n_labels, time FROM queries ORDER BY query_id"
            )
        ]

    @property
    def n_queries(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM queries")[0][0])

    def pending(self) -> list[tuple[int, int, str, float | None]]:
        """Queried items with no label and not skipped, oldest query first:
        ``(item, query_id, reason, score)``."""
        labeled = set(self.label_of())
        skipped = set(self.skipped())
        out, seen = [], set()
        for q in self.queries():
            for i, s in zip(q["items"], q["scores"]):
                if i not in labeled and i not in skipped and i not in seen:
                    seen.add(i)
                    out.append((int(i), q["query_id"], q["reason"], s))
        return out

    def skip(self, item: int) -> None:
        """Record that ``item`` was skipped (it is not offered again)."""
        self._require_session()
        assert self._pool is not None
        if int(item) not in self._pool:
            raise LabelError(f"item {item} is not in the pool of this session")
        self._write([("INSERT INTO skips (item, time) VALUES (?, ?)", (int(item), time.time()))])

    def skipped(self) -> list[int]:
        return [int(i) for (i,) in self._read("SELECT DISTINCT item FROM skips ORDER BY item")]

    # -- stream sessions ---------------------------------------------------------------------------
    def add_stream_events(self, events: Sequence[tuple[int, int, str, int, int | None]]) -> None:
        """Record stream decisions ``(t, item, action, prediction, label)`` in one transaction;
        ``t`` must continue the stream without a gap.

        :raises LabelError: a gap or a repeated position, an unknown action or class.
        """
        if not events:
            return
        self._require_session()
        assert self._n_classes is not None
        nxt = self.n_stream_events
        for k, (t, _item, action, pred, label) in enumerate(events):
            if int(t) != nxt + k:
                raise LabelError(f"stream position {t} out of order (next is {nxt + k})")
            if action not in ("request", "predict"):
                raise LabelError(f"unknown stream action {action!r}")
            for v in (pred, label):
                if v is not None and not 0 <= int(v) < self._n_classes:
                    raise LabelError(f"class index {v} out of range 0..{self._n_classes - 1}")
        now = time.time()
        self._write(
            ("INSERT INTO stream (t, item, action, prediction, label, time) VALUES (?, ?, ?, ?, ?, ?)",
             (int(t), int(i), a, int(p), None if lab is None else int(lab), now))
            for t, i, a, p, lab in events
        )

    def stream_events(self) -> list[tuple[int, int, str, int, int | None, float]]:
        """``(t, item, action, prediction, label, time)`` per decided stream item, in order."""
        return [(int(t), int(i), a, int(p), None if lab is None else int(lab), float(tm))
                for t, i, a, p, lab, tm in self._read(
                    "SELECT t, item, action, prediction, label, time FROM stream ORDER BY t")]

    @property
    def n_stream_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM stream")[0][0])

    # -- learning curve ----------------------------------------------------------------------------
    def add_curve_point(self, n_labels: int, accuracy: float | None, macro_f1: float | None = None) -> None:
        def clean(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else float(v)

        self._write(
            [
                (
                    "INSERT OR REPLACE INTO curve (n_labels, accuracy, macro_f1, time) VALUES (?, ?, ?, ?)",
                    (int(n_labels), clean(accuracy), clean(macro_f1), time.time()),
                )
            ]
        )

    def curve(self) -> list[tuple[int, float | None, float | None]]:
        """``(n_labels, accuracy, macro_f1)`` per evaluation, by number of labels."""
        return [
            (int(n), a, f) for n, a, f in self._read("SELECT n_labels, accuracy, macro_f1 FROM curve ORDER BY n_labels")
        ]

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, model: Any, n_labels: int, path: str | os.PathLike | None = None) -> int:
        """Save a model: as a joblib blob inside the store, or to ``path`` (the store keeps the path)."""
        import joblib

        if path is not None:
            joblib.dump(model, str(path))
            row = (int(n_labels), time.time(), None, str(path))
        else:
            buf = io.BytesIO()
            joblib.dump(model, buf)
            row = (int(n_labels), time.time(), sqlite3.Binary(buf.getvalue()), None)
        return self._write([("INSERT INTO checkpoints (n_labels, time, blob, path) VALUES (?, ?, ?, ?)", row)])[0]

    def load_checkpoint(self) -> tuple[Any, int] | None:
        """The latest checkpoint ``(model, n_labels)``, or None."""
        import joblib

        rows = self._read("SELECT n_labels, blob, path FROM checkpoints ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        n, blob, path = rows[0]
        model = joblib.load(io.BytesIO(blob)) if blob is not None else joblib.load(path)
        return model, int(n)
