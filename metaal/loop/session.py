"""The labeling session: :class:`ActiveLearner` asks a person (or an oracle) for labels, retrains,
and keeps every answer in a durable :class:`~metaal.store.Store` so that a session survives a crash.

It runs on the same split, set-up and step code as :func:`metaal.loop.simulate` (``metaal
compare``): :func:`metaal.data.make_split`, :meth:`metaal.state.Task.from_split`,
:func:`~metaal.loop.simulate.new_state`, :func:`~metaal.loop.simulate.strategy_rng` and
:func:`~metaal.loop.simulate.evaluate`, so a strategy (a heuristic or a learned ``policy:...``)
sees at labeling time exactly what it sees in simulation: with an oracle, ``metaal label --oracle
y`` and ``metaal compare`` label the same items in the same order with the same accuracies.

Protocol:

* **Pool, held-out set and initial set.** When the data carry labels (a
  :class:`~metaal.data.Dataset`) and ``test_size > 0``, the pool, the held-out set (in their
  order) and the initial set are those of ``make_split(dataset, seed, n_initial=initial,
  test_size=test_size)``, features are standardized with the pool's statistics
  (:meth:`~metaal.state.Task.from_split`). The held-out set is never offered for labeling and
  measures accuracy after every answer. The split's initial items are asked first, in the split's
  order (reason ``random (cold start)``, ``fallback=True``). Otherwise (unlabeled data: a bare
  feature matrix or an ``.npz`` without ``y``, see :class:`metaal.featurize.RawData`; or
  ``test_size=0``) every row is in the pool in row order, no accuracy is reported
  (:meth:`ActiveLearner.progress` gives the model's own estimate instead: cross-validated accuracy
  on the labels so far and its mean confidence on the unlabeled pool), and the initial items are
  random pool items (query number ``q`` draws with ``default_rng([seed, 0x5EED, q])``).
* **Initial set.** The cold start lasts until ``initial`` labels exist and at least two classes
  are labeled (after the split's initial items, random ones if the answers hold a single class).
  When it ends, the labels so far are the initial set: the state is rebuilt as
  :func:`~metaal.loop.simulate.new_state` builds it (one fit on a fresh learner) and the strategy
  is reset on it with the generator ``strategy_rng(seed)``, which it then gets for every ``select``
  (one stream, as in :func:`~metaal.loop.simulate.simulate`).
* **Budget.** With ``budget=B`` the session asks ``B`` labels after the initial set and then stops
  (:meth:`ActiveLearner.query` returns nothing, :attr:`ActiveLearner.budget_reached`); the state
  carries ``budget=B`` so a learned policy's ``budget_used`` rises from 0 to 1 as in training.
  Without a budget (an open-ended session) the state's budget is None and a policy sees
  ``budget_used = 0`` throughout.
* **Query order.** Each query is recorded before it is shown. Queried items that have no answer yet
  are offered again first (after a crash, a restart or a reload of the web page).
* **Resume.** Creating an :class:`ActiveLearner` on an existing store replays every label (the
  initial set as one fit, the strategy reset on it, then a refit on all but the last answer's, then
  on all, so the previous predictions that a learned policy observes are restored too) and
  continues; the store refuses a session with other features, classes, pool, seed, initial size,
  strategy or learner.
* **Strategy state.** A strategy that learns across queries (ALBL's bandit) exposes its state with
  :meth:`~metaal.strategies.Strategy.get_state`; it is saved in the same transaction as each query
  it chose, with the state of the strategy's generator (it only changes while choosing, never when
  a label arrives, so no acknowledged label can be paired with a stale state), and restored on
  resume (:meth:`~metaal.strategies.Strategy.set_state`), so a resumed session asks exactly what
  an uninterrupted one would have asked. A store written before strategy states were saved resumes
  with a fresh strategy state and a logged warning. :meth:`ActiveLearner.undo` keeps the strategy
  state and the generator.
* **Stopping rule.** After the initial set, every answer's refit adds Cohen's kappa between the
  predictions of the new and the previous model on the session's stop set
  (:func:`~metaal.stopping.draw_stop_set` ``(n_pool, seed)``, the stop set ``metaal compare``
  draws for the same pool and seed) to :class:`~metaal.stopping.StabilizingPredictions`;
  :meth:`ActiveLearner.progress` ``["stopping"]`` and :attr:`ActiveLearner.stabilized` report it.
  The kappas are kept in the store (meta ``stop_kappa``: ``[[labels, kappa], ...]``), so a resumed
  session reports the same stop; the last one, if a crash lost it, is recomputed from the replay
  (which restores the previous model's predictions). An undo drops the kappas of the labels it
  removes; an undo back into the cold start drops them all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from metaal import scores
from metaal.data import Dataset, load_dataset, make_split
from metaal.errors import ConfigError, DataError, LabelError
from metaal.featurize import RawData, load_npz_any
from metaal.learners import Learner, blas_limit, make_learner
from metaal.loop.simulate import evaluate, label_step_later, new_state, strategy_rng
from metaal.state import ALState, Task, standardize
from metaal.stopping import DEFAULT_THRESHOLD, DEFAULT_WINDOW, StabilizingPredictions, draw_stop_set, prediction_kappa
from metaal.store import Store
from metaal.strategies import FunctionStrategy, Strategy, get, reads_truth, with_cold_start
from metaal.strategies.base import select_scored

COLD_START_REASON = "random (cold start)"

log = logging.getLogger(__name__)


@dataclass
class QueryItem:
    """One item to label.

    :param id: the item's row in the dataset (the id used by :meth:`ActiveLearner.teach`).
    :param position: its position in the pool.
    :param reason: why it was chosen: the strategy's name, ``random (cold start)``, or the name
        followed by ``(fallback: margin)`` when a learned policy could not run and its fallback
        heuristic chose (``LearnedStrategy.is_fallback``).
    :param fallback: True when the item was not chosen by the requested strategy itself.
    :param score: the strategy's score of the item when it has one (higher = more informative).
    :param guess: the current model's predicted class name; ``guess_index`` its index.
    :param confidence: the model's probability of ``guess``.
    :param query_id: the id of the recorded query in the store.
    """

    id: int
    position: int
    reason: str
    strategy: str
    fallback: bool
    score: float | None
    guess: str
    guess_index: int
    confidence: float
    query_id: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_classes(file_classes: "Sequence[str] | None", given: "Sequence[str] | None", where: str) -> np.ndarray:
    """The class names of a session: ``given`` (``--classes``) or the file's, which must agree.

    :raises ConfigError: when neither names the classes, ``given`` has fewer than two distinct
        non-empty names, or ``given`` disagrees with the file's classes.
    """
    if given is not None:
        names = [str(c).strip() for c in given]
        if len(names) < 2 or any(not c for c in names) or len(set(names)) != len(names):
            raise ConfigError(f"classes must be at least two distinct non-empty names, got {','.join(names)!r}")
        if file_classes is not None and names != [str(c) for c in file_classes]:
            theirs = ",".join(str(c) for c in file_classes)
            raise ConfigError(f"--classes {','.join(names)} disagrees with the classes of {where}: {theirs}")
        return np.asarray(names)
    if file_classes is None:
        raise ConfigError(
            f"{where} has no labels (no 'y') and no class names: give --classes a,b,c (classes=[...] in Python)"
        )
    return np.asarray([str(c) for c in file_classes])


def load_session_data(
    data: "Dataset | RawData | np.ndarray | str | os.PathLike", classes: Sequence[str] | None
) -> "tuple[Dataset | RawData | None, np.ndarray, np.ndarray, np.ndarray | None, str | None]":
    """The data of a labeling session: ``(dataset, X (n, d), classes (C,), y (n,) or None, source)``.

    ``data`` is a :class:`~metaal.data.Dataset` or :class:`~metaal.featurize.RawData`, a dataset
    spec (path, name along ``METAAL_DATA``, ``sklearn:wine``; an ``.npz`` without ``y`` is
    unlabeled), or a bare feature matrix (then ``classes`` is required). ``source`` is the spec as
    resolved (an absolute path for a file), None for objects.
    """
    if isinstance(data, np.ndarray):
        if classes is None or len(classes) < 2:
            raise ConfigError("a bare feature matrix needs classes= (at least two class names)")
        X = np.asarray(data, dtype=np.float32)
        if X.ndim != 2 or not np.all(np.isfinite(X)):
            raise DataError(f"features must be a finite 2-D array (n, d), got shape {X.shape}")
        return None, X, resolve_classes(None, classes, "the feature matrix"), None, None
    source = None
    if isinstance(data, (Dataset, RawData)):
        dataset = data
    else:
        source = str(Path(data).resolve()) if Path(str(data)).is_file() else str(data)
        if Path(str(data)).is_file() and Path(str(data)).suffix.lower() == ".npz":
            dataset = load_npz_any(data)  # with y: a Dataset; without: RawData
        else:
            dataset = load_dataset(data)
    X = dataset.require_features()
    return dataset, X, resolve_classes(dataset.classes, classes, source or dataset.name), dataset.y, source


def class_index(classes: Sequence[Any], label: Any) -> int:
    """The index in ``classes`` of ``label``: a class name, a digit string or an index.

    :raises LabelError: for an unknown name or an index out of range.
    """
    if isinstance(label, (str, np.str_)):
        names = [str(c) for c in classes]
        if str(label) in names:
            return names.index(str(label))
        if str(label).lstrip("-").isdigit():
            label = int(label)
        else:
            raise LabelError(f"unknown class {label!r} (classes: {', '.join(names)})")
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise LabelError(f"a label must be a class index or a class name, got {label!r}")
    if not 0 <= int(label) < len(classes):
        raise LabelError(f"unknown class index {int(label)} (classes are 0..{len(classes) - 1})")
    return int(label)


def features_checksum(X: np.ndarray) -> str:
    """SHA-256 of the float32 features (shape included), to tie a store to its data."""
    a = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


class ActiveLearner:
    """Query, teach, retrain, resume.

    :param data: a :class:`~metaal.data.Dataset`, a dataset spec for
        :func:`metaal.data.load_dataset` (path, name along ``METAAL_DATA``, ``sklearn:wine``), an
        ``.npz`` without ``y`` or a :class:`~metaal.featurize.RawData` (unlabeled: ``classes`` is
        required unless the file names them), or a bare feature matrix ``(n, d)`` (then ``classes``
        is required). Unlabeled data report no accuracy.
    :param strategy: a :class:`~metaal.strategies.Strategy` or a name for
        :func:`metaal.strategies.get` (``margin``, ``entropy``, ``policy:PATH``, ...).
    :param learner: a learner name (``logreg``, ``svm``, ...) or a scikit-learn estimator.
    :param store: None (an in-memory store), a path to a ``.sqlite`` file (created or resumed),
        or a :class:`~metaal.store.Store`.
    :param seed: seeds the split (as ``metaal compare``'s seed), the learner, the cold-start draws
        and the strategy's generator.
    :param initial: size of the initial set: labels asked before the strategy takes over (and
        until two classes are labeled); with labeled data, the initial set of
        :func:`~metaal.data.make_split` (at least 2). None: the store's, else 2.
    :param classes: class names ``(C,)``; required for unlabeled data without class names; for
        data with classes it must equal them.
    :param test_size: share of a labeled dataset held out to measure accuracy (0 for none).
    :param checkpoint_every: save the model in the store every this many labels (0: never).
    :param budget: labels to ask after the initial set; the session stops there. None: the
        store's budget (an open-ended session for a new store); a different number on resume
        replaces the store's.
    :param stop_window: window of the stopping rule (:class:`~metaal.stopping.StabilizingPredictions`).
    :param stop_threshold: its threshold on the mean kappa (the rule only reports; asking goes on).
    :param blas_threads: BLAS threads while refitting and choosing (default 1, as ``metaal
        compare`` runs its cells: small fits are fastest single-threaded; None leaves BLAS alone).
    :param prefetch: after the initial set, choose the next item as soon as an answer is stored,
        with the model from before that answer, and refit in a background thread meanwhile
        (:meth:`teach`). An answer then costs the choice alone, whatever the pool size, but every
        item is chosen by a model one answer older than ``metaal compare``'s, so the items differ
        from compare's (the default, False, is exact). The mode is kept in the store (meta
        ``prefetch``) and in :meth:`progress` (so in the export's ``report.json``).
    """

    def __init__(
        self,
        data: "Dataset | np.ndarray | str | os.PathLike | None" = None,
        strategy: "Strategy | str | Callable[[Any, np.ndarray], Any]" = "margin",
        learner: "str | Any" = "logreg",
        store: "Store | str | os.PathLike | None" = None,
        seed: int = 0,
        initial: int | None = None,
        classes: Sequence[str] | None = None,
        test_size: float = 0.3,
        checkpoint_every: int = 10,
        budget: int | None = None,
        *,
        estimator: Any = None,
        X_pool: Any = None,
        random_state: int | None = None,
        stop_window: int = DEFAULT_WINDOW,
        stop_threshold: float = DEFAULT_THRESHOLD,
        blas_threads: int | None = 1,
        prefetch: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        #: True: the next item is chosen by the model before the answer while the refit runs
        #: (opt-in; departs from ``metaal compare``'s order by one model version)
        self.prefetch = bool(prefetch)
        self._prefetched: list[QueryItem] = []  # the item chosen at the last answer (prefetch mode)
        #: BLAS threads while refitting and choosing (:func:`metaal.learners.blas_limit`; None: as is)
        self.blas_threads = blas_threads
        # the work an answer leaves for after the next item is handed out (see :meth:`flush`)
        self._after: Callable[[], None] | None = None
        self._after_thread: threading.Thread | None = None
        self._after_error: BaseException | None = None
        self._after_lock = threading.Lock()
        StabilizingPredictions(stop_window, stop_threshold)  # a bad window or threshold raises here
        self.stop_window, self.stop_threshold = int(stop_window), float(stop_threshold)
        #: True when built with ``X_pool=`` (modAL's habits: :meth:`query` returns pool indices)
        self.api = X_pool is not None
        if self.api and data is not None:
            raise ConfigError("give data= (a dataset) or X_pool= (a feature matrix), not both")
        if data is None and not self.api:
            raise ConfigError("give data= (a dataset) or X_pool= (a feature matrix or a pandas DataFrame)")
        if estimator is not None:
            if not (isinstance(learner, str) and learner == "logreg"):
                raise ConfigError("give estimator= or learner=, not both")
            learner = estimator
        if random_state is not None:
            if int(seed) not in (0, int(random_state)):
                raise ConfigError(f"random_state={random_state} and seed={seed} disagree: give one of them")
            seed = int(random_state)
        if callable(strategy) and not isinstance(strategy, (Strategy, str)):
            strategy = FunctionStrategy(strategy)
        self.seed = int(seed)
        self.checkpoint_every = int(checkpoint_every)
        self.store = store if isinstance(store, Store) else Store(":memory:" if store is None else store)
        self.resumed = not self.store.is_new
        stored = self.store.meta if self.resumed else {}
        if stored.get("mode") == "stream":
            raise ConfigError(
                f"store {self.store.path} holds a stream session (metaal label --stream): use a new --store file"
            )
        if initial is None:
            initial = stored.get("initial", 2)
        if budget is None:
            budget = stored.get("budget")
        self.initial = int(initial)
        if self.initial < 0:
            raise ConfigError(f"initial must be >= 0 (got {self.initial})")
        self.budget = None if budget is None else int(budget)
        source = None
        self.dataset: Dataset | RawData | None
        #: True when the class list grows with the labels taught (``X_pool=`` without ``classes=``)
        self.grow_classes = False
        #: the classes as the caller gives them (the API's ``predict`` returns these)
        self.class_values: list[Any] = []
        if self.api:
            X = as_features(X_pool, "X_pool")
            self.dataset = None
            y = None
            test_size = 0.0
            if learner is not None and not isinstance(learner, (str, Learner)):
                learner = _seeded(learner, self.seed)
            if classes is None:
                if self.initial == 0:
                    raise ConfigError(
                        "initial=0 (the strategy picks from the first label) needs the class names up "
                        "front: give classes=[...]"
                    )
                self.grow_classes = True
                self.class_values = [_plain(v) for v in stored.get("class_values", stored.get("classes", []))]
                self.classes = np.asarray([str(c) for c in stored.get("classes", [])], dtype=str)
            else:
                self.class_values = [_plain(v) for v in classes]
                self.classes = resolve_classes(None, [str(c) for c in self.class_values], "X_pool")
        else:
            self.dataset, X, self.classes, y, source = load_session_data(data, classes)
        if not self.api:
            self.class_values = [str(c) for c in self.classes]
        self.X = X
        n = X.shape[0]
        name = source or (self.dataset.name if self.dataset is not None else "array")
        if y is not None and test_size > 0:
            assert isinstance(self.dataset, Dataset)
            # the split, standardization and initial set of ``metaal compare`` (one code path)
            split = make_split(self.dataset, self.seed, n_initial=self.initial, test_size=test_size)
            self.task = Task.from_split(self.dataset, split)
            self.test_ids = np.asarray(split.test, dtype=np.int64)
            self.y_test: np.ndarray | None = self.task.y_test
            self.initial_ids: np.ndarray | None = np.asarray(split.initial, dtype=np.int64)
            if self.budget is not None:
                self.task.check_budget(self.budget)
        else:
            (X_pool,) = standardize(X)
            self.task = Task(
                X_pool=X_pool,
                y_pool=np.full(n, -1, dtype=np.int64),  # unknown until answered
                X_test=np.zeros((0, X.shape[1])),
                y_test=np.zeros(0, dtype=np.int64),
                initial=np.zeros(0, dtype=np.int64),
                classes=self.classes,
                name=str(name),
                pool_ids=np.arange(n, dtype=np.int64),
                seed=self.seed,
            )
            self.test_ids = np.zeros(0, dtype=np.int64)
            self.y_test = None
            self.initial_ids = None
            if self.budget is not None:
                self.task.check_budget(self.budget, n_initial=self.initial and max(self.initial, 2))
        assert self.task.pool_ids is not None
        self.pool_ids = np.asarray(self.task.pool_ids, dtype=np.int64)
        self._pos = {int(r): i for i, r in enumerate(self.pool_ids)}
        self.X_pool, self.X_test = self.task.X_pool, self.task.X_test
        self._strategy_spec = strategy
        strat = get(strategy) if isinstance(strategy, str) else strategy
        if reads_truth(strat):
            raise ConfigError(
                f"strategy {getattr(strat, 'name', strat)!r} reads the test labels: it is a reference for simulations "
                "(metaal compare / evaluate), not a way to choose what a person labels"
            )
        self.strategy = strat
        # from zero initial labels, a strategy that needs a model lets a model-free one pick first
        self._picker = with_cold_start(strat)
        self.strategy_name = (
            strategy if isinstance(strategy, str) else getattr(strategy, "name", type(strategy).__name__)
        )
        self.learner_spec = learner
        learner_name = learner if isinstance(learner, str) else type(learner).__name__

        meta = {
            "dataset": name,
            "strategy": self.strategy_name,
            "learner": learner_name,
            "classes": [str(c) for c in self.classes],
            "seed": self.seed,
            "initial": self.initial,
            "budget": self.budget,
            "features_sha256": features_checksum(X),
            "n_items": int(n),
            "pool": [int(i) for i in self.pool_ids],
            "test_size": float(test_size) if y is not None else 0.0,
            "split": "make_split" if self.initial_ids is not None else "none",
        }
        if self.api:
            meta["api"] = True
            meta["class_values"] = list(self.class_values)
            meta["grow_classes"] = self.grow_classes
        if self.resumed and self.initial_ids is not None and stored.get("split") != "make_split":
            raise ConfigError(
                f"store {self.store.path} was written by an older metaal that drew its own split (a sorted "
                "pool, not metaal compare's): its labels cannot continue on this one (use a new --store file)"
            )
        self.meta = self.store.init_session(
            meta, check=("features_sha256", "classes", "pool", "seed", "initial", "strategy", "learner")
        )
        if self.resumed and stored.get("budget") != self.budget:
            self.store.set_meta("budget", self.budget)
            self.meta = self.store.meta
        if bool(self.meta.get("prefetch", False)) != self.prefetch:
            self.store.set_meta("prefetch", self.prefetch)
            self.meta = self.store.meta
        self._estimates: dict[bytes, dict[str, Any]] = {}
        self._stats: tuple[np.ndarray, np.ndarray] | None = None
        if self.api:
            self._keep_for_load(X)
        self._rng = strategy_rng(self.seed)
        self._stop_set = draw_stop_set(self.task.n_pool, self.seed)
        self._stop_entries: list[list[float]] = [list(e) for e in stored.get("stop_kappa", [])]
        with blas_limit(self.blas_threads):
            self._rebuild()
        self._restore_strategy_state()

    def position(self, item: int) -> int | None:
        """The pool position of dataset row ``item``, or None when it is not in the pool."""
        return self._pos.get(int(item))

    def _restore_strategy_state(self) -> None:
        """Install the strategy state and the generator state saved with the latest query (after
        :meth:`Strategy.reset`); nothing to do during the cold start (the strategy is reset when it
        ends).

        A store without one (a new session, or one written before strategy states were saved)
        leaves the fresh state; for a stateful strategy that already chose queries, a warning is
        logged since its query order then differs from an uninterrupted session's.
        """
        if self.cold_start:
            return
        saved = self.store.strategy_state()
        if saved is not None:
            try:
                self.strategy.set_state(saved[0])
            except ConfigError as exc:
                raise ConfigError(
                    f"store {self.store.path}: cannot restore the state of strategy {self.strategy_name!r}: {exc}"
                ) from None
            rng = self.store.rng_state()
            if rng is not None:
                self._rng.bit_generator.state = rng
            return
        if self.strategy.get_state() and any(q["reason"] != COLD_START_REASON for q in self.store.queries()):
            log.warning(
                "store %s holds no saved state for strategy %r (written by an older metaal): the strategy "
                "starts fresh, so the queries from now on may differ from an uninterrupted session",
                self.store.path,
                self.strategy_name,
            )

    # -- state ------------------------------------------------------------------------------------
    def _cold_state(self) -> ALState:
        """The state during the cold start (labels added one answer at a time)."""
        n_cls = max(len(self.classes), 1)  # a growing class list may be empty before the first label
        lrn = make_learner(self.learner_spec, n_cls, seed=self.seed)
        names = self.classes if len(self.classes) else None
        self._started = False
        return ALState(self.X_pool, n_cls, lrn, budget=self.budget, classes=names)

    def _is_initial_set(self, labels: np.ndarray) -> bool:
        """True when ``labels`` complete the initial set: ``initial`` labels of two classes, or
        none at all for ``initial = 0`` (the strategy picks from the first label)."""
        return self.initial == 0 or (len(labels) >= self.initial and len(np.unique(labels)) >= 2)

    def _start(self, pos: np.ndarray, labels: np.ndarray) -> None:
        """The cold start is over: the state :func:`new_state` builds with these initial labels
        (one fit on a fresh learner, ``budget`` counted from here) and the strategy reset on it
        with a fresh ``strategy_rng(seed)``, as :func:`~metaal.loop.simulate.simulate` does."""
        order = np.argsort(pos, kind="stable")  # pool order, as Task.initial
        self._started = True
        self.state = new_state(
            self.task, self.learner_spec, budget=self.budget, seed=self.seed, initial=pos[order], labels=labels[order]
        )
        self._rng = strategy_rng(self.seed)
        self._picker.reset(self.state, self._rng)

    def _rebuild(self) -> None:
        """(Re)build the ALState from the labels in the store, as an uninterrupted session built
        it: the cold-start answers, the initial set as one fit (and the strategy reset on it),
        then a refit on every later label but the last answer's, then one with it, so that the
        previous predictions (``prev_proba``, ``prev_pred``: observation features of learned
        policies) are those of an uninterrupted session. An answer is the batch written in one
        transaction (one timestamp)."""
        rows = self.store.labels()
        for _, item, _, _ in rows:
            if item not in self._pos:
                raise DataError(f"store {self.store.path}: labeled item {item} is not in this pool")
        pos = np.array([self._pos[i] for _, i, _, _ in rows], dtype=np.int64)
        labs = np.array([lab for _, _, lab, _ in rows], dtype=np.int64)
        times = np.array([t for _, _, _, t in rows])
        ends = [int(j) + 1 for j in np.flatnonzero(times[1:] != times[:-1])] + ([len(rows)] if rows else [])
        start = next((e for e in [0, *ends] if self._is_initial_set(labs[:e])), None)
        if start is None:  # still in the cold start
            self.state = self._cold_state()
            done = 0
        else:
            self._start(pos[:start], labs[:start])
            done = start
        if done < len(rows):
            cut = max([e for e in ends if e < len(rows)] + [done])  # rows before the last answer
            if cut > done:
                self.state.add_labels(pos[done:cut], labs[done:cut], refit=True, record=False)
            self.state.add_labels(pos[cut:], labs[cut:], refit=True, record=False)
            bounds = [done] + [e for e in ends if e > done]
            self.state.history = [pos[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self._sync_stopping(self._stop_snapshot())
        n = self.state.n_labeled
        if rows and not any(p[0] == n for p in self.store.curve()):
            # the curve point of the last answer, if a crash lost it (it is written after the
            # next item is handed out): the same model, the same numbers
            self._checkpoint(*self._evaluate(self.model), n=n, model=self.model)

    def _stop_snapshot(self) -> tuple[int, bool, np.ndarray | None, np.ndarray | None]:
        """What the stopping rule needs from the current state, taken when the refit is done:
        ``(n_labeled, cold_start, previous predictions (n_stop,), current predictions (n_stop,))``
        on the stop set; the predictions None when this refit adds no kappa (the cold start, the
        first fit after it)."""
        st = self.state
        n = st.n_labeled
        cold = self.cold_start
        if cold or n <= st.n_initial or (st.prev_proba is None and st.prev_pred is None) or not st.prev_model_ready:
            # the cold start, the first fit after it, or a previous model of label frequencies only
            return n, cold, None, None
        stop = self._stop_set  # the stop set's rows only: no argmax over the pool
        prev = scores.predicted_class(st.prev_proba[stop]) if st.prev_proba is not None else st.prev_pred[stop]
        return n, cold, prev, scores.predicted_class(st.proba[stop])

    def _sync_stopping(self, snap: tuple[int, bool, np.ndarray | None, np.ndarray | None]) -> None:
        """Bring the stopping rule up to the state of :meth:`_stop_snapshot` ``snap``: keep the
        stored kappas of the labels that are still there (none during the cold start), add the
        kappa of the last refit when it is missing (a new answer, or one a crash did not record),
        store them when they changed, and replay them into a fresh
        :class:`~metaal.stopping.StabilizingPredictions`. Runs after an answer's next item is
        handed out (possibly in the after-answer thread), so it publishes by swapping whole
        objects (``_stop_entries``, ``stopping``): a concurrent :meth:`progress` sees the old rule
        or the new one, never half of one."""
        n, cold, prev, cur = snap
        entries = [] if cold else [e for e in self._stop_entries if int(e[0]) <= n]
        if prev is not None and cur is not None and (not entries or int(entries[-1][0]) < n):
            entries.append([n, prediction_kappa(prev, cur)])
        if entries != self._stop_entries:
            self.store.set_meta("stop_kappa", entries)
            self._stop_entries = entries
        rule = StabilizingPredictions(self.stop_window, self.stop_threshold)
        for labels, kappa in entries:
            rule.add_kappa(kappa, int(labels))
        self.stopping = rule

    @property
    def stabilized(self) -> bool:
        """True once the stopping rule has fired (:attr:`stopping`: the kappas and the stop)."""
        return self.stopping.stopped

    @property
    def model(self) -> Learner:
        """The learner fitted on every label so far (in prefetch mode, while a refit runs in the
        background, the one before: :meth:`flush` first)."""
        return self.state.learner

    @property
    def n_labeled(self) -> int:
        return self.state.n_labeled

    @property
    def cold_start(self) -> bool:
        """True while the initial set is being labeled: fewer than ``initial`` labels or fewer than
        two classes (never for ``initial = 0``)."""
        return not self._started

    @property
    def n_queried(self) -> int:
        """Labels after the initial set (what the budget counts; 0 during the cold start)."""
        return 0 if self.cold_start else self.state.n_queried

    @property
    def budget_reached(self) -> bool:
        """True when a budget is set and that many labels follow the initial set."""
        return self.budget is not None and not self.cold_start and self.state.n_queried >= self.budget

    def class_index(self, label: Any) -> int:
        """A class index from an index or a class name (:func:`class_index`)."""
        return class_index(self.classes, label)

    # -- the loop ---------------------------------------------------------------------------------
    def _item(self, pos: int, reason: str, fallback: bool, score: float | None, query_id: int) -> QueryItem:
        p = self.state.proba[pos]
        g = int(np.argmax(p))
        return QueryItem(
            id=int(self.pool_ids[pos]),
            position=int(pos),
            reason=reason,
            strategy=self.strategy_name,
            fallback=fallback,
            score=None if score is None else float(score),
            guess=str(self.classes[g]) if g < len(self.classes) else "",
            guess_index=g,
            confidence=float(p[g]),
            query_id=int(query_id),
        )

    def query(self, k: int = 1) -> "list[QueryItem] | np.ndarray":
        """The next ``k`` items to label.

        Built with ``X_pool=`` (modAL's habits), the pool indices (rows of ``X_pool``), best first,
        as an ``np.ndarray`` of ints (:meth:`query_idx`); built with ``data=`` (``metaal label``),
        :class:`QueryItem` objects (:meth:`query_items`). Both record the queries in the store.
        """
        return self.query_idx(k) if self.api else self.query_items(k)

    def query_idx(self, n: int = 1) -> np.ndarray:
        """:meth:`query_items`' ids only: rows of the data (of ``X_pool``), best first, ``(m,)``
        ints with ``m <= n`` (see :meth:`query_items` for when fewer come back)."""
        return np.asarray([it.id for it in self.query_items(n)], dtype=np.int64)

    def query_items(self, k: int = 1) -> list[QueryItem]:
        """The next ``k`` items to label: unanswered earlier queries first, then new picks: the
        initial set's items during the cold start (random ones for unlabeled data), the
        strategy's afterwards. New picks are recorded in the store.

        :returns: up to ``k`` items; fewer when the pool runs out, when the budget allows fewer,
            and at the end of the cold start (the strategy picks once the initial set is fitted);
            none once the budget is reached.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1 (got {k})")
        with self._lock:
            if k == 1 and self._prefetched:  # prefetch mode: chosen at the answer, the refit may still run
                return list(self._prefetched)
            self._join_running()  # a second call while the last answer's evaluation runs waits for it
            try:
                with blas_limit(self.blas_threads):
                    return self._query_items(k)
            finally:
                self._start_after()  # the next item is out: now the last answer's evaluation

    def _query_items(self, k: int) -> list[QueryItem]:
        """:meth:`query_items` under the session's lock and the BLAS limit."""
        st = self.state
        out: list[QueryItem] = []
        pending = self.store.pending()
        for item, qid, reason, score in pending:
            if len(out) == k:
                break
            pos = self._pos[item]
            if not st.labeled_mask[pos]:
                out.append(self._item(pos, reason, reason.endswith(")"), score, qid))
        m = k - len(out)
        if m == 0:
            return out
        if self.budget is not None and not self.cold_start:
            # pending items (asked, not answered) count against the budget too
            m = min(m, self.budget - st.n_queried - len(pending))
            if m <= 0:
                return out
        # skipped and pending items are not offered again (a mask: no pool-size Python loop)
        excluded = np.unique(np.array(
            [self._pos[i] for i in self.store.skipped()] + [self._pos[p[0]] for p in pending], dtype=np.int64))
        free_mask = ~st.labeled_mask
        n_excluded_unlabeled = int(free_mask[excluded].sum()) if excluded.size else 0
        free_mask[excluded] = False
        n_free = int(free_mask.sum())
        if n_free == 0:
            return out
        m = min(m, n_free)
        sc: list[float | None] = [None] * m
        rng_state = None
        if self.cold_start:
            reason, fallback = COLD_START_REASON, True
            free = np.flatnonzero(free_mask)
            todo = np.zeros(0, dtype=np.int64)
            if self.initial_ids is not None:  # the split's initial items, in the split's order
                todo = np.array(
                    [p for p in (self._pos[int(r)] for r in self.initial_ids) if free_mask[p]], dtype=np.int64
                )
            if todo.size:
                picks = todo[:m]
            else:  # unlabeled data, or answers that hold a single class so far: random items
                picks = np.random.default_rng([self.seed, 0x5EED, self.store.n_queries]).permutation(free)[:m]
            strategy_state = None
        else:
            ask = min(st.n_pool - st.n_labeled, m + n_excluded_unlabeled)
            # the one generator stream of the run, as in simulate (saved with the query below)
            chosen, chosen_scores = select_scored(self._picker, st, ask, self._rng)
            keep = np.flatnonzero(free_mask[chosen])[:m]
            picks = chosen[keep]
            if chosen_scores is not None:
                sc = [float(v) for v in chosen_scores[keep]]
            fallback = bool(getattr(self._picker, "is_fallback", False))
            fb_name = getattr(self._picker, "fallback_name", "heuristic")
            reason = f"{self.strategy_name} (fallback: {fb_name})" if fallback else self.strategy_name
            strategy_state = self.strategy.get_state()
            rng_state = self._rng.bit_generator.state
        sc = sc[: len(picks)]
        # the strategy's state after this choice, in the query's transaction (restored on resume)
        qid = self.store.add_query(
            [int(self.pool_ids[p]) for p in picks], reason, sc, strategy_state=strategy_state, rng_state=rng_state
        )
        out.extend(self._item(int(p), reason, fallback, s, qid) for p, s in zip(picks, sc))
        return out

    def teach(self, ids: "int | Sequence[int]", labels: "Any | Sequence[Any]") -> int:
        """Record answers and retrain; the answer that completes the initial set starts the
        strategy's part of the session (see the module's protocol).

        :param ids: item ids (dataset rows) as returned by :meth:`query`; one or a sequence.
        :param labels: class indices or class names, one per id. Built with ``X_pool=``: a label
            equal to a class as given (``classes=`` or an earlier label) is that class, else a
            class name (its ``str``), else (classes given up front) an integer is a class index;
            without ``classes=`` a new label appends a class (see :meth:`label_indices`).
        :returns: the number of new labels (repeating an identical answer adds none).
        :raises LabelError: unknown class, id not in the pool, an id already labeled differently,
            or more new labels than the budget has left; nothing is stored or learned then.
        """
        ids_l = [int(i) for i in np.atleast_1d(np.asarray(ids)).tolist()]
        labs_in = [labels] if np.ndim(labels) == 0 else list(labels)
        labs, grown = self.label_indices(labs_in, grow=True)
        if len(ids_l) != len(labs):
            raise LabelError(f"{len(ids_l)} ids but {len(labs)} labels")
        with self._lock:
            self.flush()  # the previous answer's evaluation first: the refit below changes the model
            self._prefetched = []
            try:
                with blas_limit(self.blas_threads):
                    return self._teach(ids_l, labs, grown)
            finally:
                if self._prefetched:  # prefetch mode: the next item is out, refit now
                    self._start_after()

    def _teach(self, ids_l: list[int], labs: list[int], grown: list[Any] | None) -> int:
        """:meth:`teach` under the session's lock, the previous answer's work done: store the
        answers (synchronously: an acknowledged label survives ``kill -9``), refit, and leave the
        held-out evaluation, the curve point, the checkpoint and the stopping rule for
        after the next item is handed out (:meth:`flush`)."""
        if grown is not None:  # new classes: check the answers first, then grow and rebuild
            self.store.validate(ids_l, labs, n_classes=len(grown))  # raises before any change
            self._extend_classes(grown)
        if self.budget is not None and not self.cold_start:
            known = self.store.label_of()
            n_new = len({i for i in ids_l if i not in known})
            if self.state.n_queried + n_new > self.budget:
                raise LabelError(
                    f"the budget of {self.budget} labels after the initial set is reached "
                    f"({self.state.n_queried} given): start a session with a larger --budget"
                )
        qids = {item: qid for item, qid, _, _ in self.store.pending()}
        qid = qids.get(ids_l[0]) if ids_l else None
        new = self.store.add_labels(ids_l, labs, query_id=qid)
        if not new:
            return 0
        pos = np.array([self._pos[i] for i, _ in new], dtype=np.int64)
        lab = np.array([lab for _, lab in new], dtype=np.int64)
        if self.cold_start:
            all_pos = np.concatenate([self.state.labeled_idx, pos])
            all_lab = np.concatenate([self.state.labels[self.state.labeled_idx], lab])
            if self._is_initial_set(all_lab):
                self._start(all_pos, all_lab)
            else:
                self.state.add_labels(pos, lab)
            model = self.model

            def evaluation() -> tuple[float | None, float | None]:
                return self._evaluate(model)
        elif self.prefetch:  # the next item from the model before this answer, the refit later
            self.state.add_labels(pos, lab, refit=False)
            self._after = self._refit_after_answer()  # first: the refit happens even if choosing fails
            self._prefetched = self._query_items(1)
            return len(new)
        else:  # the one labeling step of simulate and the environments (its evaluation later)
            evaluation = label_step_later(self.state, pos, lab, self.X_test, self._held_out_y())
        self._after = self._after_answer(evaluation)
        return len(new)

    # -- labels as the caller gives them (the Python API) -------------------------------------------
    def label_indices(self, labels: Sequence[Any], grow: bool = False) -> tuple[list[int], list[Any] | None]:
        """Class indices of ``labels``, and the grown list of class values when new classes appear
        (None if none do; the class names are their ``str``).

        Built with ``data=``: :meth:`class_index` (an index or a class name). Built with
        ``X_pool=``: a label equal to a class value (as given in ``classes=`` or first taught) is
        that class; else a label whose ``str`` is a class name is that class; else, with classes
        given up front, an integer is a class index. Without ``classes=`` (``grow=True``) any other
        label appends a new class, in the order labels are first taught, so class indices never
        change; with classes given up front it is an unknown class.

        :raises LabelError: an unknown class (classes given up front, or ``grow=False``).
        """
        if not self.api:
            return [self.class_index(v) for v in labels], None
        values = list(self.class_values)
        names = [str(c) for c in self.classes]
        out: list[int] = []
        for v in labels:
            pv = _plain(v)
            if isinstance(pv, (list, dict, tuple)) or pv is None:
                raise LabelError(f"a label must be a class name or a number, got {v!r}")
            j = next((i for i, cv in enumerate(values) if type(cv) is type(pv) and cv == pv), None)
            if j is None and str(pv) in names:
                j = names.index(str(pv))
            if j is None and not self.grow_classes and isinstance(pv, int) and not isinstance(pv, bool):
                if not 0 <= pv < len(names):
                    raise LabelError(f"unknown class index {pv} (classes are 0..{len(names) - 1}: {', '.join(names)})")
                j = pv
            if j is None:
                if not (grow and self.grow_classes):
                    known = ", ".join(names) or "none yet"
                    raise LabelError(f"unknown class {v!r} (classes: {known})")
                values.append(pv)
                names.append(str(pv))
                j = len(names) - 1
            out.append(j)
        return out, (values if len(values) > len(self.classes) else None)

    def _extend_classes(self, values: list[Any]) -> None:
        """Grow the class list to ``values`` (stored first), then rebuild the state on it as a
        resumed session would, keeping the strategy's state and generator (as :meth:`undo` does)."""
        names = [str(v) for v in values]
        self.store.extend_classes(names, values)
        self.class_values = values
        self.classes = np.asarray(names, dtype=str)
        self.task.classes = self.classes
        self.meta = self.store.meta
        self._estimates = {}
        kept, rng = self.strategy.get_state(), self._rng.bit_generator.state
        was_cold = self.cold_start
        self._rebuild()
        if not self.cold_start and not was_cold:
            self.strategy.set_state(kept)
            self._rng.bit_generator.state = rng

    def _held_out_y(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64) if self.y_test is None else self.y_test

    def _checkpoint(self, acc: float | None, f1: float | None, n: int, model: Learner) -> None:
        """Record the curve point of ``n`` labels (None / nan without a held-out set) and save
        ``model`` (fitted on them) every ``checkpoint_every`` labels."""
        acc, f1 = (None, None) if acc is None or np.isnan(acc) else (acc, f1)
        self.store.add_curve_point(n, acc, f1)
        if self.checkpoint_every > 0 and n % self.checkpoint_every == 0:
            self.store.save_checkpoint(model, n)

    def evaluate(self) -> tuple[float | None, float | None]:
        """Accuracy and macro-F1 of the current model on the held-out set (None without one)."""
        with self._lock:
            self.flush()
            return self._evaluate(self.model)

    def _evaluate(self, model: Learner) -> tuple[float | None, float | None]:
        if self.y_test is None or len(self.y_test) == 0:
            return None, None
        return evaluate(model, self.X_test, self.y_test)

    # -- the work an answer leaves for later ------------------------------------------------------
    def _after_answer(self, evaluation: Callable[[], tuple[float | None, float | None]]) -> Callable[[], None]:
        """The work of the answer just refitted that does not decide the next item: the held-out
        ``evaluation``, the curve point, the checkpoint and the stopping rule's kappa (its inputs,
        the predictions on the stop set, are taken now). It runs after the next item is handed
        out (:meth:`query_items` starts it in a thread) or at the latest in :meth:`flush`."""
        n, model, snap = self.state.n_labeled, self.model, self._stop_snapshot()

        def work() -> None:
            with blas_limit(self.blas_threads):  # the session's thread waits for this one: no race
                acc, f1 = evaluation()
            self._checkpoint(acc, f1, n=n, model=model)
            self._sync_stopping(snap)

        return work

    def _refit_after_answer(self) -> Callable[[], None]:
        """Prefetch mode: the refit on every label (the answer is stored and the next item chosen
        already), then the work of :meth:`_after_answer`."""

        def work() -> None:
            with blas_limit(self.blas_threads):  # the session's thread waits for this one: no race
                self.state.refit()
                model = self.model
                self._after_answer(lambda: self._evaluate(model))()

        return work

    def _run_after(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # kept for flush(), which raises it in the caller's thread
            log.error("the work after an answer failed: %s: %s", type(exc).__name__, exc)
            self._after_error = exc

    def _start_after(self) -> None:
        """Start the pending after-answer work in a background thread (the next item is out)."""
        with self._after_lock:
            if self._after is not None and self._after_thread is None:
                t = threading.Thread(target=self._run_after, args=(self._after,), name="metaal-after-answer")
                self._after_thread = t
                t.start()

    def _join_running(self) -> None:
        """Wait for after-answer work that already runs (not for work still pending)."""
        with self._after_lock:
            if self._after_thread is not None:
                self._finish_after()

    def _finish_after(self) -> None:
        # under _after_lock: join or run the pending work, then raise what it raised
        if self._after_thread is not None:
            self._after_thread.join()
        elif self._after is not None:
            self._run_after(self._after)
        self._after = self._after_thread = None
        err, self._after_error = self._after_error, None
        if err is not None:
            raise err

    def flush(self) -> None:
        """Finish the work the last answer left for later: the held-out evaluation, the curve
        point, the model checkpoint and the stopping rule's kappa (all computed on the model of
        that answer). :meth:`teach` keeps them off the path between an answer and the next item;
        they run in a background thread once :meth:`query_items` has handed the next item out,
        and at the latest here. :meth:`teach`, :meth:`undo`, :meth:`progress`, :meth:`save` and
        :meth:`export` call it; the answers themselves are always stored before :meth:`teach`
        returns."""
        with self._after_lock:
            self._finish_after()

    @property
    def evaluating(self) -> bool:
        """True while the last answer's evaluation (curve point, stopping rule) is not done."""
        return self._after is not None

    def skip(self, item: int) -> None:
        """Never offer ``item`` again (recorded in the store)."""
        with self._lock:
            self._prefetched = []
            self.store.skip(item)

    def undo(self) -> tuple[int, str] | None:
        """Remove the last label and retrain; returns ``(item id, class name)`` removed, or None.

        The strategy keeps its state (an ALBL bandit is not restarted) and its generator, as a
        resumed session would; an undo back into the cold start resets both when it ends again.
        """
        with self._lock:
            self.flush()
            self._prefetched = []
            gone = self.store.undo()
            if gone is None:
                return None
            kept, rng = self.strategy.get_state(), self._rng.bit_generator.state
            was_cold = self.cold_start
            with blas_limit(self.blas_threads):
                self._rebuild()
            if not self.cold_start and not was_cold:  # still after the initial set: keep both
                self.strategy.set_state(kept)
                self._rng.bit_generator.state = rng
            return gone[0], str(self.classes[gone[1]])

    def estimate(self, max_folds: int = 5) -> dict[str, Any]:
        """The model's own estimate of its quality, for sessions without a held-out set.

        ``cv_accuracy``: stratified ``k``-fold cross-validated accuracy on the labels so far
        (``k = min(max_folds, smallest class count)``, folds shuffled with the session seed; None
        until two classes have two labels each); ``mean_confidence``: the model's mean top-class
        probability on the unlabeled pool (None when nothing is unlabeled). Cached per label set.
        """
        from sklearn.model_selection import StratifiedKFold

        with self._lock:
            self._join_running()  # prefetch mode: a refit may be running
            st = self.state
            pos, y = st.labeled_idx, st.y_labeled
            key = pos.tobytes() + b"|" + y.tobytes()
            if key in self._estimates:
                return self._estimates[key]
            unl = st.unlabeled_idx
            conf = float(st.proba[unl].max(axis=1).mean()) if len(unl) else None
            counts = np.bincount(y, minlength=len(self.classes))
            present = counts[counts > 0]
            cv, k = None, 0
            if len(present) >= 2 and present.min() >= 2:
                k = int(min(max_folds, present.min()))
                skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
                hits = 0
                for tr, te in skf.split(pos, y):
                    lrn = make_learner(self.learner_spec, len(self.classes), seed=self.seed)
                    lrn.fit(self.X_pool[pos[tr]], y[tr])
                    hits += int((lrn.predict(self.X_pool[pos[te]]) == y[te]).sum())
                cv = hits / len(y)
            out = {"cv_accuracy": cv, "cv_folds": k, "mean_confidence": conf}
            self._estimates = {key: out}
            return out

    def progress(self, wait: bool = True) -> dict[str, Any]:
        """Number labeled, label counts per class, the latest held-out accuracy and the curve, the
        budget (``budget``, ``n_queried``: labels after the initial set, ``budget_reached``);
        without a held-out set, ``estimate`` holds :meth:`estimate` (else None); ``stopping`` the
        stopping rule (:meth:`StabilizingPredictions.to_dict`: ``stable``, ``labels_at_stop``,
        ``kappa``, ``window``, ``threshold``, ...).

        :param wait: finish the last answer's evaluation first (:meth:`flush`). ``wait=False``
            answers at once (the web page, right after an answer): while that evaluation runs,
            ``evaluating`` is True, ``accuracy`` and ``macro_f1`` are None and the curve and the
            stopping rule stop at the answer before.
        """
        if wait:
            self.flush()
        with self._lock:
            counts = np.bincount(self.state.y_labeled, minlength=len(self.classes))
            curve = [{"n_labeled": n, "accuracy": a, "macro_f1": f} for n, a, f in self.store.curve()]
            last = curve[-1] if curve and curve[-1]["n_labeled"] == self.state.n_labeled else None
            return {
                "n_labeled": self.state.n_labeled,
                "n_pool": self.state.n_pool,
                "n_unlabeled": self.state.n_pool - self.state.n_labeled,
                "n_skipped": len(self.store.skipped()),
                "n_test": int(len(self.test_ids)),
                "counts": {str(c): int(v) for c, v in zip(self.classes, counts)},
                "accuracy": None if last is None else last["accuracy"],
                "macro_f1": None if last is None else last["macro_f1"],
                "curve": curve,
                "strategy": self.strategy_name,
                "cold_start": self.cold_start,
                "budget": self.budget,
                "n_queried": self.n_queried,
                "budget_reached": self.budget_reached,
                "estimate": self.estimate() if len(self.test_ids) == 0 else None,
                "stopping": self.stopping.to_dict(),
                "evaluating": self.evaluating,
                "prefetch": self.prefetch,
            }

    # -- the fitted model, modAL's habits ---------------------------------------------------------
    @property
    def estimator(self) -> Any:
        """The scikit-learn estimator fitted on every label so far (unfitted while fewer than two
        classes are labeled; :meth:`predict_proba` then gives the smoothed label frequencies)."""
        return self.model.estimator

    def _features(self, X: Any) -> np.ndarray:
        """Rows ``X`` (array or DataFrame, raw features like the data's) standardized with the
        pool's statistics, as the model saw the pool."""
        A = as_features(X, "X").astype(np.float64)
        d = self.X.shape[1]
        if A.shape[1] != d:
            raise DataError(f"X has {A.shape[1]} features; the pool has {d}")
        if self._stats is None:
            P = np.asarray(self.X, dtype=np.float64)[self.pool_ids]
            sd = P.std(axis=0)
            sd[sd < 1e-12] = 1.0
            self._stats = (P.mean(axis=0), sd)
        mu, sd = self._stats
        return (A - mu) / sd

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of rows ``X`` (raw features, an array or a DataFrame), ``(n, C)``,
        columns in the order of :attr:`classes`."""
        with self._lock:
            self._join_running()  # prefetch mode: a refit may be running
            return self.model.predict_proba(self._features(X))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of each row of ``X``, as the classes were given (the values of
        ``classes=`` or of the labels taught; class names for a session built with ``data=``)."""
        with self._lock:
            self._join_running()
            idx = self.model.predict(self._features(X))
            vals = np.asarray(self.class_values if self.class_values else list(self.classes))
            return vals[idx]

    def score(self, X: Any, y: Sequence[Any]) -> float:
        """Accuracy on rows ``X`` with labels ``y`` (class values, names or indices, as for
        :meth:`teach`; a label of no known class counts as wrong)."""
        y_l = [y] if np.ndim(y) == 0 else list(y)
        with self._lock:
            self._join_running()
            pred = self.model.predict(self._features(X))
            if len(y_l) != len(pred):
                raise DataError(f"X has {len(pred)} rows but y has {len(y_l)} labels")
            truth = []
            for v in y_l:
                try:
                    truth.append(self.label_indices([v])[0][0])
                except LabelError:
                    truth.append(-1)
            return float(np.mean(pred == np.asarray(truth))) if len(truth) else float("nan")

    def _keep_for_load(self, X: np.ndarray) -> None:
        """Keep what :meth:`load` needs in the store: the features, the estimator and a strategy
        that is not a name (when it pickles; else ``load`` asks for ``strategy=`` again)."""
        import pickle

        if self.store.get_blob("X_pool") is None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(X, dtype=np.float32), allow_pickle=False)
            self.store.put_blob("X_pool", buf.getvalue())
        if self.store.get_blob("estimator") is None:
            self.store.put_blob("estimator", pickle.dumps(self.learner_spec))
        if not isinstance(self._strategy_spec, str) and self.store.get_blob("strategy") is None:
            try:
                self.store.put_blob("strategy", pickle.dumps(self._strategy_spec))
            except Exception as exc:  # a lambda, a closure, an open resource: load asks for it again
                log.info("strategy %r cannot be pickled (%s): ActiveLearner.load needs strategy=",
                         self.strategy_name, exc)

    def save(self, path: "str | os.PathLike") -> Path:
        """Write the whole session (labels, queries, strategy state, model checkpoints; with
        ``X_pool=`` also the features, the estimator and the strategy) to the SQLite file
        ``path`` (replaced if it exists); :meth:`load` resumes it. This object keeps its own
        store. A session whose store is ``path`` is saved already (every answer is written)."""
        with self._lock:
            self.flush()
            return self.store.backup(path)

    @classmethod
    def load(
        cls,
        path: "str | os.PathLike",
        X_pool: Any = None,
        estimator: Any = None,
        strategy: Any = None,
        **kwargs: Any,
    ) -> "ActiveLearner":
        """Resume a session from its store ``path`` (:meth:`save`, or any ``--store`` file).

        A session built with ``X_pool=`` comes back with its features, estimator and strategy
        from the store, and answers :meth:`query` with pool indices; ``X_pool=``, ``estimator=``
        and ``strategy=`` replace them (the store checks they match). A strategy that could not be
        pickled (a lambda) must be given again as ``strategy=``. A ``metaal label`` session
        reloads its dataset by the name kept in the store. The session continues on ``path``.

        :raises ConfigError: ``path`` is no metaal store, or the strategy must be given again.
        """
        import pickle

        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such store file")
        store = Store(path)
        if store.is_new:
            store.close()
            raise ConfigError(f"{path} holds no metaal session")
        m = store.meta
        common = dict(store=store, seed=m.get("seed", 0), initial=m.get("initial"), budget=m.get("budget"))
        common.update(kwargs)
        if strategy is None:
            blob = store.get_blob("strategy")
            if blob is not None:
                strategy = pickle.loads(blob)
            elif str(m.get("strategy", "")).startswith("function:"):
                store.close()
                raise ConfigError(
                    f"{path}: its strategy {m['strategy']!r} is a function that could not be saved "
                    "(a lambda or a closure): give it again, ActiveLearner.load(path, strategy=f)"
                )
            else:
                strategy = m["strategy"]
        if not m.get("api"):
            return cls(m["dataset"], strategy=strategy, learner=estimator or m["learner"],
                       classes=m.get("classes"), test_size=m.get("test_size", 0.3), **common)
        if X_pool is None:
            blob = store.get_blob("X_pool")
            if blob is None:
                store.close()
                raise ConfigError(f"{path} keeps no features: give them again, ActiveLearner.load(path, X_pool=X)")
            X_pool = np.load(io.BytesIO(blob), allow_pickle=False)
        if estimator is None:
            blob = store.get_blob("estimator")
            estimator = pickle.loads(blob) if blob is not None else m["learner"]
        classes = None if m.get("grow_classes", True) else m.get("class_values", m["classes"])
        if isinstance(estimator, str):
            return cls(X_pool=X_pool, learner=estimator, strategy=strategy, classes=classes, **common)
        return cls(X_pool=X_pool, estimator=estimator, strategy=strategy, classes=classes, **common)

    # -- export -----------------------------------------------------------------------------------
    def export(self, out: str | os.PathLike) -> dict[str, Path]:
        """Write the labeled data and the model to folder ``out``.

        Files: ``labels.csv`` and ``labels.jsonl`` (id, label, class, time in ISO 8601 (UTC), the
        row of the source file (``source_row``) when the featurized file records it, and the text
        when the dataset has text), ``model.joblib`` (the fitted :class:`~metaal.learners.Learner`),
        ``report.png`` (learning curve and class balance) and ``report.json`` (:meth:`progress`).
        """
        import joblib

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.flush()
            rows = self.store.labels()
            text = self.dataset.text if self.dataset is not None else None
            extras = self.dataset.extras if self.dataset is not None else {}
            source = extras.get("source_row") if extras else None
            if source is not None and len(source) != len(self.X):
                source = None
            records = []
            for seq, item, lab, t in rows:
                r: dict[str, Any] = {"seq": seq, "id": item, "label": lab, "class": str(self.classes[lab]),
                                     "time": iso_time(t)}
                if source is not None:
                    r["source_row"] = int(source[item])
                if text is not None:
                    r["text"] = str(text[item])
                records.append(r)
            paths = {
                "csv": out / "labels.csv",
                "jsonl": out / "labels.jsonl",
                "model": out / "model.joblib",
                "report_png": out / "report.png",
                "report_json": out / "report.json",
            }
            fields = ["seq", "id", "label", "class", "time"] + (["source_row"] if source is not None else [])
            fields += ["text"] if text is not None else []
            with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                w.writerows(records)
            with open(paths["jsonl"], "w", encoding="utf-8") as fh:
                for r in records:
                    fh.write(json.dumps(r) + "\n")
            joblib.dump(self.model, paths["model"])
            prog = self.progress()
            paths["report_json"].write_text(json.dumps(prog, indent=2))
            _report_png(prog, paths["report_png"], title=str(self.meta.get("dataset", "")))
        return paths


def as_features(X: Any, what: str = "X_pool") -> np.ndarray:
    """A finite float32 matrix ``(n, d)`` from a numpy array or a pandas DataFrame (numeric or
    boolean columns only).

    :raises DataError: a non-numeric column (named), another shape, NaN or infinite values.
    """
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame, without importing pandas
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        bad = [str(c) for c, dt in X.dtypes.items() if not (is_numeric_dtype(dt) or is_bool_dtype(dt))]
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(
                f"{what}: column(s) {', '.join(repr(c) for c in bad[:5])}{more} are not numeric; encode them "
                "first (pandas.get_dummies, or text through metaal featurize)"
            )
        X = X.to_numpy(dtype=np.float64)
    try:
        A = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numeric features (n, d): {exc}") from None
    if A.ndim != 2 or A.shape[0] == 0 or not np.all(np.isfinite(A)):
        raise DataError(f"{what} must be a finite, non-empty 2-D array (n, d), got shape {A.shape}")
    return A


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value (JSON-able); anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v


def _seeded(estimator: Any, seed: int) -> Any:
    """A clone of ``estimator`` with ``random_state=seed`` when it has that parameter unset
    (None), so that a session and its resumed copy fit the same models; else the estimator."""
    from sklearn.base import clone

    try:
        params = estimator.get_params(deep=False)
    except AttributeError:
        return estimator
    if "random_state" in params and params["random_state"] is None:
        return clone(estimator).set_params(random_state=seed)
    return estimator


def iso_time(t: float) -> str:
    """A store time (seconds since the epoch) as ISO 8601 in UTC, to the millisecond."""
    import datetime as dt

    return dt.datetime.fromtimestamp(float(t), dt.timezone.utc).isoformat(timespec="milliseconds")


def _report_png(prog: dict[str, Any], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    pts = [(p["n_labeled"], p["accuracy"]) for p in prog["curve"] if p["accuracy"] is not None]
    if pts:
        a1.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        a1.set_ylabel("held-out accuracy")
    else:
        est = prog.get("estimate") or {}
        msg = "no held-out labels"
        if est.get("cv_accuracy") is not None:
            msg += f"\ncross-validated accuracy on the labels: {est['cv_accuracy']:.3f}"
        if est.get("mean_confidence") is not None:
            msg += f"\nmean confidence on unlabeled items: {est['mean_confidence']:.3f}"
        a1.text(0.5, 0.5, msg, ha="center", va="center", transform=a1.transAxes)
    a1.set_xlabel("labels")
    a1.set_title("learning curve")
    names = list(prog["counts"])
    a2.bar(range(len(names)), [prog["counts"][c] for c in names])
    a2.set_xticks(range(len(names)), names, rotation=30, ha="right")
    a2.set_title("class balance of the labels")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_oracle(
    learner: ActiveLearner,
    oracle: np.ndarray,
    n: int | None = None,
    delay: float = 0.0,
    callback: Callable[[QueryItem, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Answer queries from known labels until ``n`` items are labeled (earlier labels of a resumed
    session count), the session's budget is reached or the pool runs out.

    :param oracle: labels of every dataset row, shape ``(n_items,)``, class indices.
    :param n: stop at this many labels (None: only the budget or the pool stops).
    :param delay: seconds to wait before each answer (a simulated annotator).
    :param callback: called after each answer with ``(item, label, progress)``.
    """
    oracle = np.asarray(oracle)
    if oracle.ndim != 1 or len(oracle) != learner.X.shape[0]:
        raise DataError(f"oracle labels must have shape ({learner.X.shape[0]},), got {oracle.shape}")
    while n is None or learner.n_labeled < n:
        items = learner.query_items(1)
        if not items:
            break
        q = items[0]
        if delay > 0:
            time.sleep(delay)
        lab = learner.class_index(int(oracle[q.id]))
        learner.teach([q.id], [lab])
        if n is None or learner.n_labeled < n:
            learner.query_items(1)  # the next item first (recorded; the loop's next query returns it)
        if callback is not None:
            callback(q, lab, learner.progress())  # then the evaluation of this answer (progress waits)
    return learner.progress()
