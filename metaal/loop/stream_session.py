"""The stream labeling session: :class:`StreamLearner` shows items in arrival order; for each, a
stream policy either predicts its class or asks a person (or an oracle) for the label, and every
decision and label is kept in a durable :class:`~metaal.store.Store`.

It drives the stream core :class:`metaal.stream.StreamEpisode`, the one that ``metaal/Stream-v0``
wraps, with the same stream policies (:func:`metaal.strategies.stream.get_stream_policy`:
``policy:stream-default``, ``threshold``, ``vu:B``, ``split:B``), so a learned stream policy sees
at labeling time the features it was trained on, and the session with an oracle takes the env's
decisions item for item (tests/test_stream_session.py).

Protocol:

* **Arrival order.** The data's rows in file order, a seeded shuffle (``order=SEED``) or the rows
  given (``order=[...]``), cut to ``length`` items. Features are standardized with the statistics
  of all the data's rows (no labels), as ``Stream-v0`` does.
* **Decisions.** :meth:`StreamLearner.next_item` decides the arriving item. A prediction is
  recorded and the stream moves on; a request waits for :meth:`StreamLearner.teach`, which records
  the label, refits the learner and moves on. :meth:`StreamLearner.advance` passes the predicted
  items up to the next request in one call (the web page uses it).
* **Costs.** ``request_cost``, ``wrong_penalty`` and ``correct_reward`` are the policy's inputs
  (observation ``stream-2``). The reward of a prediction is known only when its true label is
  (``truth=``, a simulation); :meth:`StreamLearner.progress` reports it then.
* **Resume.** On an existing store the session replays every recorded decision in order: the
  policy is called again on each item (so a policy with a state, the Zliobaite budget managers,
  gets it back) and the recorded decision and label are applied. The store refuses a session with
  other features, classes, order, policy, learner or costs, and a pool session's store.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from metaal.data import Dataset
from metaal.errors import ConfigError, LabelError
from metaal.featurize import RawData
from metaal.learners import blas_limit, make_learner
from metaal.loop.session import class_index, features_checksum, iso_time, load_session_data
from metaal.state import standardize
from metaal.store import Store
from metaal.strategies.stream import get_stream_policy
from metaal.stream import StreamEpisode, check_costs

log = logging.getLogger(__name__)

#: The stream policy of ``metaal label --stream`` and :class:`StreamLearner` by default.
DEFAULT_STREAM_POLICY = "policy:stream-default"


@dataclass
class StreamItem:
    """The decision on one arriving item.

    :param t: position in the stream (0 = first arrival).
    :param id: the item's row in the data.
    :param request: True: the policy asks for the label (call :meth:`StreamLearner.teach`).
    :param prediction: the model's most probable class (index into ``classes``).
    :param prediction_name: its name.
    :param confidence: the model's probability of that class.
    :param policy: the stream policy's name (``(fallback=threshold)`` when a learned one failed).
    """

    t: int
    id: int
    request: bool
    prediction: int
    prediction_name: str
    confidence: float
    policy: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamLearner:
    """Decide, ask, learn along a stream; resume after a crash.

    :param data: as :class:`~metaal.loop.session.ActiveLearner`'s ``data``: a dataset spec, a
        :class:`~metaal.data.Dataset` or :class:`~metaal.featurize.RawData`, or a feature matrix
        ``(n, d)`` (then ``classes`` is required).
    :param classes: class names ``(C,)``; required for data without class names.
    :param policy: a stream policy name (:func:`~metaal.strategies.stream.get_stream_policy`) or a
        callable ``policy(obs, episode) -> action``.
    :param request_cost: cost of one label request (the policy's input).
    :param wrong_penalty: penalty of a wrong prediction (the policy's input).
    :param correct_reward: reward of a right prediction.
    :param learner: learner name or scikit-learn estimator, refitted on every label.
    :param order: None (file order), an int (a seeded shuffle of the rows) or the rows in arrival
        order.
    :param length: stream items (None: every row of ``order``).
    :param truth: true classes per data row ``(n,)`` (a simulation): predictions are checked and
        their rewards counted.
    :param store: None (in memory), a ``.sqlite`` path (created or resumed) or a :class:`Store`.
    :param seed: the learner's seed.
    """

    def __init__(
        self,
        data: "Dataset | RawData | np.ndarray | str | os.PathLike",
        classes: Sequence[str] | None = None,
        *,
        policy: "str | Callable[[dict[str, np.ndarray], Any], int]" = DEFAULT_STREAM_POLICY,
        request_cost: float = 0.05,
        wrong_penalty: float = 1.0,
        correct_reward: float = 1.0,
        learner: "str | Any" = "logreg",
        order: "int | Sequence[int] | np.ndarray | None" = None,
        length: int | None = None,
        truth: "np.ndarray | Sequence[int] | None" = None,
        store: "Store | str | os.PathLike | None" = None,
        seed: int = 0,
    ) -> None:
        self._lock = threading.RLock()
        self.dataset, X, self.classes, _y, source = load_session_data(data, classes)
        n = X.shape[0]
        if order is None:
            rows = np.arange(n, dtype=np.int64)
        elif isinstance(order, (int, np.integer)):
            rows = np.random.default_rng(int(order)).permutation(n).astype(np.int64)
        else:
            rows = np.asarray(order, dtype=np.int64).reshape(-1)
            if rows.size == 0 or rows.min() < 0 or rows.max() >= n or np.unique(rows).size != rows.size:
                raise ConfigError(f"order must list distinct rows 0..{n - 1}")
        if length is not None:
            if length < 1:
                raise ConfigError(f"length must be >= 1 (got {length})")
            rows = rows[: int(length)]
        self.rows = rows
        self.X = X
        self.truth = truth
        check_costs(float(request_cost), float(wrong_penalty))  # before anything is written
        self.policy = get_stream_policy(policy) if isinstance(policy, str) else policy
        self.policy_name = str(
            getattr(self.policy, "name", policy if isinstance(policy, str) else type(policy).__name__))
        self.store = store if isinstance(store, Store) else Store(":memory:" if store is None else store)
        self.resumed = not self.store.is_new
        stored = self.store.meta if self.resumed else {}
        if self.resumed and stored.get("mode") != "stream":
            raise ConfigError(
                f"store {self.store.path} holds a pool labeling session (metaal label without --stream): "
                "use a new --store file"
            )
        learner_name = learner if isinstance(learner, str) else type(learner).__name__
        name = source or (self.dataset.name if self.dataset is not None else "array")
        meta = {
            "mode": "stream",
            "dataset": name,
            "policy": policy if isinstance(policy, str) else self.policy_name,
            "learner": learner_name,
            "classes": [str(c) for c in self.classes],
            "features_sha256": features_checksum(X),
            "pool": [int(r) for r in rows],
            "request_cost": float(request_cost),
            "wrong_penalty": float(wrong_penalty),
            "correct_reward": float(correct_reward),
            "n_items": int(n),
        }
        self.meta = self.store.init_session(meta, check=("features_sha256", "classes", "pool", "policy", "learner",
                                                         "request_cost", "wrong_penalty", "correct_reward"))
        (Xs,) = standardize(X)  # statistics of all the data's rows, no labels (as Stream-v0)
        C = len(self.classes)
        self.episode = StreamEpisode(
            Xs[rows], C, make_learner(learner, C, seed=int(seed)), classes=self.classes,
            request_cost=request_cost, wrong_penalty=wrong_penalty, correct_reward=correct_reward, cost_features=True,
        )
        #: standardized features in arrival order ``(length, d)`` (what the page shows as z-scores)
        self.X_pool = self.episode.state.X_pool
        self._pos = {int(r): t for t, r in enumerate(self.rows)}
        self._pending: StreamItem | None = None
        self.n_replay_mismatches = 0
        if self.resumed:
            self._replay()

    # -- state ------------------------------------------------------------------------------------
    @property
    def truth(self) -> np.ndarray | None:
        """True classes per data row ``(n,)`` (a simulation), or None."""
        return self._truth

    @truth.setter
    def truth(self, y: "np.ndarray | Sequence[int] | None") -> None:
        if y is None:
            self._truth = None
            return
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != self.X.shape[0]:
            raise ConfigError(f"truth has {y.shape[0]} labels for {self.X.shape[0]} rows")
        self._truth = np.asarray([self.class_index(v.item() if hasattr(v, "item") else v) for v in y], dtype=np.int64)

    @property
    def pending(self) -> StreamItem | None:
        """The item waiting for its label, or None."""
        return self._pending

    @property
    def length(self) -> int:
        return self.episode.length

    @property
    def done(self) -> bool:
        return self.episode.done

    @property
    def model(self) -> Any:
        """The learner fitted on the labels so far."""
        return self.episode.state.learner

    @property
    def is_fallback(self) -> bool:
        """True when a learned policy could not load and the expected-reward threshold decides."""
        return bool(getattr(self.policy, "is_fallback", False))

    def position(self, item: int) -> int | None:
        """The stream position of data row ``item``, or None when it is not in the stream."""
        return self._pos.get(int(item))

    def class_index(self, label: Any) -> int:
        """A class index from a class name or an index (:func:`~metaal.loop.session.class_index`)."""
        return class_index(self.classes, label)

    def _decide(self) -> tuple[StreamItem, int]:
        """The policy's decision on the arriving item, and the episode action."""
        ep = self.episode
        obs = ep.observation()
        action = int(self.policy(obs, ep))
        proba = ep.proba()
        pred = int(np.argmax(proba))
        request = action == ep.request_action
        if not request:
            if not 0 <= action < ep.n_classes:
                raise ConfigError(
                    f"stream policy {self.policy_name} returned action {action} (valid: 0..{ep.n_classes})")
            pred = action
        item = StreamItem(t=ep.t, id=int(self.rows[ep.t]), request=request, prediction=pred,
                          prediction_name=str(self.classes[pred]), confidence=float(proba[pred]),
                          policy=self.policy_name)
        return item, action

    def _replay(self) -> None:
        """Apply the recorded decisions and labels in order (the policy sees every item again)."""
        events = self.store.stream_events()
        ep = self.episode
        with blas_limit(1):
            for t, item, action, pred, label, _ in events:
                if t >= ep.length or item != int(self.rows[t]):
                    raise ConfigError(
                        f"store {self.store.path}: stream position {t} holds row {item}, not this stream's")
                decided, _ = self._decide()
                if decided.request != (action == "request"):
                    self.n_replay_mismatches += 1
                ep.step(ep.request_action if action == "request" else pred, label)
        if self.n_replay_mismatches:
            msg = (f"store {self.store.path}: the policy {self.policy_name} decides {self.n_replay_mismatches} of "
                   f"{len(events)} recorded items differently now; the recorded decisions and labels were kept")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)

    # -- the loop ---------------------------------------------------------------------------------
    def next_item(self) -> StreamItem | None:
        """The decision on the arriving item: a prediction is recorded and the stream moves on; a
        request stays pending (returned again) until :meth:`teach`. None at the end."""
        with self._lock:
            if self._pending is not None:
                return self._pending
            if self.episode.done:
                return None
            predicted, pending = self._advance(1)
            return pending if pending is not None else predicted[0]

    def advance(self, max_items: int | None = None) -> tuple[list[StreamItem], StreamItem | None]:
        """Decide items until one is requested, the stream ends or ``max_items`` were predicted:
        ``(predicted items, the pending request or None)``; the predictions in one transaction."""
        with self._lock:
            if self._pending is not None:
                return [], self._pending
            return self._advance(max_items)

    def _advance(self, max_items: int | None) -> tuple[list[StreamItem], StreamItem | None]:
        ep, out, events = self.episode, [], []
        try:
            with blas_limit(1):
                while not ep.done and (max_items is None or len(out) < max_items):
                    item, action = self._decide()
                    if item.request:
                        self._pending = item
                        break
                    label = None if self.truth is None else int(self.truth[item.id])
                    events.append((item.t, item.id, "predict", item.prediction, label))
                    ep.step(action, label)
                    out.append(item)
        finally:
            self.store.add_stream_events(events)
        return out, self._pending

    def teach(self, label: Any, t: int | None = None) -> StreamItem:
        """Label the pending request (a class name or index) and refit; ``t`` (optional) must be
        its position, so that a stale page cannot label another item.

        :raises LabelError: no pending request, another position, an unknown class.
        """
        with self._lock:
            item = self._pending
            if item is None:
                raise LabelError("no item is waiting for a label (call next_item() first)")
            if t is not None and int(t) != item.t:
                raise LabelError(f"stream item {t} is not the one waiting for a label ({item.t})")
            lab = self.class_index(label)
            self.store.add_stream_events([(item.t, item.id, "request", item.prediction, lab)])
            with blas_limit(1):
                self.episode.step(self.episode.request_action, lab)
            self._pending = None
            return item

    def __iter__(self) -> Iterator[StreamItem]:
        """Every arriving item in order; after a request, :meth:`teach` its label before the next."""
        while True:
            item = self.next_item()
            if item is None:
                return
            yield item
            if item.request and self._pending is item:
                raise LabelError(f"stream item {item.t} was requested: call teach(label) before the next item")

    # -- reports ----------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """Where the stream stands: position, requests, predictions, request rate, label counts,
        and (with ``truth``) accuracy on the predicted items and the total reward."""
        with self._lock:
            ep = self.episode
            labels = ep.state.y_labeled
            counts = np.bincount(labels, minlength=len(self.classes)) if labels.size else np.zeros(len(self.classes))
            checked = ep.n_checked == ep.n_predicted
            return {
                "mode": "stream",
                "dataset": self.meta.get("dataset"),
                "policy": self.policy_name,
                "fallback": self.is_fallback,
                "t": ep.t,
                "length": ep.length,
                "done": ep.done,
                "n_requests": ep.n_requests,
                "n_predicted": ep.n_predicted,
                "request_rate": ep.n_requests / max(ep.t, 1),
                "accuracy_predicted": ep.n_correct / ep.n_checked if ep.n_checked else None,
                "reward": ep.total_reward if checked else None,
                "request_cost": ep.request_cost,
                "wrong_penalty": ep.wrong_penalty,
                "counts": {str(c): int(v) for c, v in zip(self.classes, counts)},
                "pending": None if self._pending is None else self._pending.to_dict(),
            }

    def export(self, out: "str | os.PathLike") -> dict[str, Path]:
        """Write ``stream.csv`` (one row per decided item: t, id, action, prediction, label, time
        in ISO 8601, text when the dataset has it), ``model.joblib`` and ``report.json``."""
        import joblib

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with self._lock:
            text = getattr(self.dataset, "text", None)
            paths = {"csv": out / "stream.csv", "model": out / "model.joblib", "report_json": out / "report.json"}
            fields = ["t", "id", "action", "prediction", "label", "time"] + (["text"] if text is not None else [])
            with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                for t, item, action, pred, label, tm in self.store.stream_events():
                    r = {"t": t, "id": item, "action": action, "prediction": str(self.classes[pred]),
                         "label": "" if label is None else str(self.classes[label]), "time": iso_time(tm)}
                    if text is not None:
                        r["text"] = str(text[item])
                    w.writerow(r)
            joblib.dump(self.model, paths["model"])
            paths["report_json"].write_text(json.dumps(self.progress(), indent=2))
        return paths


def run_stream_oracle(
    sl: StreamLearner, y: "np.ndarray | Sequence[int]",
    callback: Callable[[StreamItem, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Answer every request of ``sl`` from ``y`` (true class per data row) to the stream's end;
    ``callback(item, label, progress)`` after each answer. Returns :meth:`StreamLearner.progress`."""
    y = np.asarray(y)
    while True:
        _, pending = sl.advance()
        if pending is None:
            return sl.progress()
        v = y[pending.id]
        lab = sl.class_index(v.item() if hasattr(v, "item") else v)
        sl.teach(lab, t=pending.t)
        if callback is not None:
            callback(pending, lab, sl.progress())
