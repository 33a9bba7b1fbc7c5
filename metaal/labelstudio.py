"""``metaal labelstudio``: a Label Studio ML backend on metaal's labeling session.

Label Studio (https://labelstud.io) is the labeling tool; metaal is the model and the query
strategy behind it. The backend speaks Label Studio's ML-backend protocol:

* ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": "metaal", ...}``.
* ``POST /setup``: Label Studio connects a project (``{"project", "schema", "hostname",
  "access_token", ...}``); answers ``{"model_version": ...}``.
* ``POST /predict``: ``{"tasks": [task, ...], "label_config": ..., ...}`` -> ``{"results":
  [prediction, ...], "model_version": ...}``, one prediction per task.
* ``POST /webhook``: annotation events (``ANNOTATION_CREATED``, ``ANNOTATIONS_CREATED``,
  ``ANNOTATION_UPDATED``, ``ANNOTATIONS_DELETED``; ``START_TRAINING`` is acknowledged) -> :meth:`ActiveLearner.teach`
  (or ``skip`` for a cancelled annotation, ``undo`` for the deleted latest one).
* ``GET /data/image/{id}.png``: the pictures of an image dataset, for the tasks' ``image`` URLs.

**One loop.** Everything runs on one :class:`~metaal.loop.session.ActiveLearner` (the session of
``metaal label``): its store (``--store S.sqlite``) holds every annotation received and every query,
so a restarted backend resumes with the same model, the same ranking and the same next query.

**Tasks.** ``metaal labelstudio --data D --export-tasks tasks.json`` writes Label Studio's import
JSON: one task per pool item, ``data`` holding ``metaal_id`` (the row of ``D``, how the backend
finds the item) and ``text`` (the document; a feature summary for data without text) or ``image``
(a URL served by this backend). ``--export-config config.xml`` writes a labeling config with one
``<Choices>`` of the session's classes.

**What a prediction holds.** ``result``: one ``choices`` region holding the model's predicted class
(``from_name``/``to_name`` of the project's first ``<Choices>``). ``score``: the strategy's
priority, rank-based: the items the session asks next (:meth:`ActiveLearner.query_items`, the
first ``--queue``) come first in query order, then the other unlabeled items by the strategy's
score (for strategies that have one: margin, entropy, coreset, ...; ``random``, ``albl`` and
``policy:...`` rank only their ``--queue`` items), so sorting Label Studio's data manager
by prediction score (``tasks:predictions_score``, descending) lists the tasks in the strategy's
order. With ``n`` ranked items the item of rank ``r`` (0 = next) gets ``1 - r / n``; unranked,
labeled and held-out items get 0. ``model_version``: ``metaal-<strategy>-<labels>``, new after
every label. Label Studio asks ``/predict`` for the tasks it shows; the data manager's "Retrieve
predictions" action (or the SDK) refreshes the scores of all tasks after annotating.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from metaal.errors import ConfigError, DataError, LabelError, MetaalError
from metaal.label_cli import (
    DefaultsFormatter,
    bind_port,
    display,
    image_png,
    lock_store,
    make_learner_from_args,
)
from metaal.loop.session import ActiveLearner

log = logging.getLogger(__name__)

#: the task data field holding the metaal row id
ID_FIELD = "metaal_id"
#: store meta key: Label Studio annotation id -> metaal item id
ANNOTATIONS_META = "labelstudio_annotations"
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def data_kind(al: ActiveLearner) -> str:
    """``"image"`` for a dataset with images, else ``"text"`` (documents or a feature summary)."""
    ds = al.dataset
    return "image" if ds is not None and ds.text is None and ds.images is not None else "text"


def label_config(al: ActiveLearner) -> str:
    """A Label Studio labeling config (XML) for the session: the text or the image, and one
    ``<Choices name="label">`` with the session's classes."""
    kind = data_kind(al)
    obj = f'  <{kind.capitalize()} name="{kind}" value="${kind}"/>'
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in al.classes)
    return (
        f'<View>\n{obj}\n  <Choices name="label" toName="{kind}" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


def task_data(al: ActiveLearner, item: int, image_base: str) -> dict[str, Any]:
    """The ``data`` of item ``item``'s task: ``metaal_id`` and ``text`` or ``image`` (a URL under
    ``image_base``, this backend's address)."""
    out: dict[str, Any] = {ID_FIELD: int(item)}
    if data_kind(al) == "image":
        out["image"] = f"{image_base.rstrip('/')}/data/image/{int(item)}.png"
        return out
    shown = display(al, int(item))
    if shown["kind"] == "text":
        out["text"] = shown["text"]
    else:
        feats = ", ".join(f"{f['name']}={f['value']:.4g}" for f in shown["features"])
        out["text"] = f"row {int(item)}: {feats}"
    return out


def export_tasks(al: ActiveLearner, image_base: str) -> list[dict[str, Any]]:
    """Label Studio's import JSON: one task ``{"data": ...}`` (:func:`task_data`) per pool item,
    in pool order (held-out items, with ``--test-size > 0``, are not labeling tasks)."""
    return [{"data": task_data(al, int(i), image_base)} for i in al.pool_ids]


def choices_control(config: str | None) -> tuple[str, str] | None:
    """``(from_name, to_name)`` of the first ``<Choices>`` of a labeling config, or None.

    :raises ConfigError: when the config is not XML.
    """
    if not config:
        return None
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise ConfigError(f"the Label Studio labeling config is not XML ({exc})") from None
    for el in root.iter():
        if el.tag.lower() == "choices" and el.get("name") and el.get("toName"):
            return str(el.get("name")), str(el.get("toName"))
    return None


def annotation_choice(annotation: dict[str, Any]) -> str | None:
    """The chosen class of an annotation's ``choices`` region (None when it has none)."""
    for region in annotation.get("result") or []:
        value = region.get("value") or {}
        choices = value.get("choices")
        if region.get("type", "choices") == "choices" and choices:
            return str(choices[0])
    return None


class LabelStudioBackend:
    """The ML backend over one :class:`ActiveLearner` (thread-safe: one lock around the session).

    :param al: the session (its strategy ranks the tasks, its store keeps the answers).
    :param queue: how many of the session's next queries head the ranking (``query_items(queue)``).
    :param control: ``(from_name, to_name)`` of the project's ``<Choices>`` until Label Studio sends
        its labeling config.
    """

    def __init__(self, al: ActiveLearner, queue: int = 1, control: tuple[str, str] = ("label", "text")) -> None:
        if queue < 1:
            raise ConfigError(f"--queue must be >= 1 (got {queue})")
        self.al = al
        self.queue = int(queue)
        self.control = control
        self._lock = threading.RLock()
        self._ranking: dict[int, float] | None = None

    @property
    def model_version(self) -> str:
        """``metaal-<strategy>-<labels>``: changes with every label the model learns."""
        return f"metaal-{self.al.strategy_name}-{self.al.n_labeled}"

    def ranking(self) -> dict[int, float]:
        """Item id -> priority in (0, 1] for the ranked unlabeled items (see the module doc),
        cached until the next event changes the labels. Records the session's next query."""
        with self._lock:
            if self._ranking is not None:
                return self._ranking
            al = self.al
            order = [it.id for it in al.query_items(self.queue)]
            if not al.cold_start and getattr(al.strategy, "has_score", False):
                st = al.state
                unl = np.asarray(st.unlabeled_idx, dtype=np.int64)
                try:
                    s = np.asarray(al.strategy.score(st), dtype=np.float64)
                except (NotImplementedError, ValueError, TypeError):
                    s = None
                if s is not None and len(s) == len(unl):
                    skipped = set(al.store.skipped())
                    seen = set(order)
                    for p in unl[np.argsort(-s, kind="stable")]:
                        item = int(al.pool_ids[p])
                        if item not in seen and item not in skipped:
                            order.append(item)
            n = max(len(order), 1)
            self._ranking = {item: 1.0 - r / n for r, item in enumerate(order)}
            return self._ranking

    def _proba(self, item: int) -> np.ndarray:
        pos = self.al.position(item)
        if pos is not None:
            return np.asarray(self.al.state.proba[pos])
        return self.al.predict_proba(self.al.X[item : item + 1])[0]

    def predict_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """The prediction of one Label Studio task (``result``, ``score``, ``model_version``)."""
        version = self.model_version
        data = task.get("data") or {}
        raw = data.get(ID_FIELD)
        try:
            item = int(raw)
        except (TypeError, ValueError):
            item = -1
        if not 0 <= item < len(self.al.X):
            log.warning("task %s has no valid data.%s (%r): empty prediction", task.get("id"), ID_FIELD, raw)
            return {"result": [], "score": 0.0, "model_version": version}
        with self._lock:
            p = self._proba(item)
            guess = str(self.al.classes[int(np.argmax(p))])
            score = self.ranking().get(item, 0.0)
        from_name, to_name = self.control
        region = {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [guess]}}
        return {"result": [region], "score": float(score), "model_version": version}

    def predict(self, tasks: list[dict[str, Any]], label_config: str | None = None) -> dict[str, Any]:
        """``/predict``: one prediction per task, in order."""
        with self._lock:
            control = choices_control(label_config)
            if control is not None:
                self.control = control
            return {"results": [self.predict_task(t) for t in tasks], "model_version": self.model_version}

    def setup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/setup``: takes the project's ``<Choices>`` from its labeling config (``schema``)."""
        with self._lock:
            control = choices_control(payload.get("schema") or payload.get("label_config"))
            if control is not None:
                self.control = control
            return {"model_version": self.model_version}

    def _annotations(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (self.al.store.meta.get(ANNOTATIONS_META) or {}).items()}

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/webhook``: apply one Label Studio event to the session.

        :raises LabelError: an annotation without a known item or class, or a change metaal cannot
            apply (a changed or deleted annotation that is not the latest label).
        """
        action = str(payload.get("action", ""))
        with self._lock:
            if action in ANNOTATION_EVENTS:
                out = self._annotated(payload, updated=action == "ANNOTATION_UPDATED")
            elif action == "ANNOTATIONS_CREATED":  # bulk: lists of annotations and of their tasks
                tasks = {t.get("id"): t for t in payload.get("task") or []}
                done = [
                    self._annotated({"annotation": a, "task": tasks.get(a.get("task"), {})}, updated=False)
                    for a in payload.get("annotation") or []
                ]
                out = {"status": "taught", "items": [d["item"] for d in done]}
            elif action == "ANNOTATIONS_DELETED":
                out = self._deleted(payload.get("annotations") or [])
            else:  # START_TRAINING, project events...: the model learns on every annotation anyway
                return {"action": action, "status": "ignored", "model_version": self.model_version}
            self._ranking = None
            out.update(action=action, model_version=self.model_version, n_labeled=self.al.n_labeled)
            return out

    def _annotated(self, payload: dict[str, Any], updated: bool) -> dict[str, Any]:
        ann = payload.get("annotation") or {}
        task = payload.get("task") or {}
        raw = (task.get("data") or {}).get(ID_FIELD)
        try:
            item = int(raw)
        except (TypeError, ValueError):
            raise LabelError(f"the task of annotation {ann.get('id')} has no data.{ID_FIELD} (got {raw!r})") from None
        if ann.get("was_cancelled"):
            self.al.skip(item)
            return {"status": "skipped", "item": item}
        label = annotation_choice(ann)
        if label is None:
            raise LabelError(f"annotation {ann.get('id')} of item {item} holds no choice")
        known = self.al.store.label_of()
        if updated and item in known and known[item] != self.al.class_index(label):
            self._undo_latest(item, "changed")
        new = self.al.teach([item], [label])
        if ann.get("id") is not None:
            mapping = self._annotations()
            mapping[str(ann["id"])] = item
            self.al.store.set_meta(ANNOTATIONS_META, mapping)
        return {"status": "taught" if new else "unchanged", "item": item, "label": label}

    def _undo_latest(self, item: int, what: str) -> None:
        rows = self.al.store.labels()
        if not rows or rows[-1][1] != item:
            raise LabelError(
                f"the label of item {item} was {what} in Label Studio, but metaal can only take back the "
                "latest label; the model keeps the old one"
            )
        self.al.undo()

    def _deleted(self, annotations: list[dict[str, Any]]) -> dict[str, Any]:
        mapping = self._annotations()
        gone = []
        for ann in annotations:
            item = mapping.pop(str(ann.get("id")), None)
            if item is None or item not in self.al.store.label_of():
                continue
            self._undo_latest(item, "deleted")
            gone.append(item)
        self.al.store.set_meta(ANNOTATIONS_META, mapping)
        return {"status": "undone", "items": gone}


def create_app(backend: LabelStudioBackend) -> Any:
    """The FastAPI app serving Label Studio's ML-backend protocol for ``backend``."""
    try:
        from fastapi import Body, FastAPI
        from fastapi.responses import JSONResponse, Response
    except ImportError:
        raise ConfigError("the Label Studio backend needs fastapi and uvicorn: pip install metaal") from None

    app = FastAPI(title="metaal Label Studio ML backend")
    al = backend.al

    def error(exc: Exception, status: int = 400) -> Any:
        log.warning("%s", exc)
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/")
    @app.get("/health")
    def health():  # noqa: ANN202
        return {
            "status": "UP",
            "model_class": "metaal",
            "strategy": al.strategy_name,
            "n_labeled": al.n_labeled,
            "model_version": backend.model_version,
        }

    @app.post("/setup")
    def setup(payload: dict = Body(default={})):  # noqa: ANN202, B008
        try:
            return backend.setup(payload)
        except MetaalError as exc:
            return error(exc)

    @app.post("/predict")
    def predict(payload: dict = Body(...)):  # noqa: ANN202, B008
        try:
            return backend.predict(list(payload.get("tasks") or []), payload.get("label_config"))
        except MetaalError as exc:
            return error(exc)

    @app.post("/webhook")
    def webhook(payload: dict = Body(...)):  # noqa: ANN202, B008
        try:
            return JSONResponse(backend.event(payload), status_code=201)
        except MetaalError as exc:
            return error(exc, 409 if isinstance(exc, LabelError) else 400)

    @app.get("/progress")
    def progress():  # noqa: ANN202
        return al.progress()

    @app.get("/data/image/{item_id}.png")
    def image(item_id: int):  # noqa: ANN202
        ds = al.dataset
        if ds is None or ds.images is None:
            return error(DataError("this dataset has no images"), 404)
        if not 0 <= item_id < len(ds.images):
            return error(DataError(f"no item {item_id}"), 404)
        return Response(image_png(ds.images, item_id), media_type="image/png")

    return app


# ----------------------------------------------------------------------------------------------
# command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="featurized dataset (.npz with X and text or images, or any "
                   "metaal dataset); optional when --store exists")
    p.add_argument("--classes", default=None, help="comma-separated class names; required for data without labels "
                   "or class names")
    p.add_argument("--strategy", default="margin", help="query strategy ranking the tasks (margin, entropy, "
                   "policy:default, ...)")
    p.add_argument("--store", default=None, help="session file PATH.sqlite (resumed if it exists); default: in memory")
    p.add_argument("--learner", default="logreg", help="learner: logreg, svm, rf, knn, gb, torch_logreg")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial set and the strategy")
    p.add_argument("--initial", type=int, default=None, help="labels before the strategy takes over (and until "
                   "2 classes; default: the store's, else 2)")
    p.add_argument("--budget", type=int, default=None, help="labels after the initial set (default: open-ended)")
    p.add_argument("--test-size", type=float, default=0.0, help="share of a labeled dataset held out (never a task) "
                   "to measure accuracy")
    p.add_argument("--queue", type=int, default=1, help="the session's next queries that head the ranking")
    p.add_argument("--host", default="127.0.0.1", help="address the backend listens on")
    p.add_argument("--port", type=int, default=9090, help="port of the backend (1-65535)")
    p.add_argument("--public-url", default=None, help="the backend's address as Label Studio's browser sees it, for "
                   "image URLs in exported tasks (default: http://HOST:PORT)")
    p.add_argument("--export-tasks", default=None, metavar="JSON", help="write Label Studio's import JSON (one task "
                   "per pool item) and exit")
    p.add_argument("--export-config", default=None, metavar="XML", help="write a labeling config for the session's "
                   "classes and exit")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "labelstudio",
        help="serve a Label Studio ML backend (predictions ranked by a strategy), resumable",
        description="A Label Studio ML backend on metaal's labeling session: predictions with the strategy's "
        "priority as score, annotations taught through the webhook and kept in a SQLite store.",
        formatter_class=DefaultsFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    """:raises ConfigError: naming the option."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535 (got {args.port})")
    if args.queue < 1:
        raise ConfigError(f"--queue must be >= 1 (got {args.queue})")
    for opt, val in (("--initial", args.initial), ("--budget", args.budget)):
        if val is not None and val < 0:
            raise ConfigError(f"{opt} must be >= 0 (got {val})")
    if not 0.0 <= args.test_size < 1.0:
        raise ConfigError(f"--test-size must be in [0, 1) (got {args.test_size})")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    exporting = args.export_tasks is not None or args.export_config is not None
    sock = None if exporting else bind_port(args.host, args.port)
    lock = None
    try:
        if args.store is not None and not exporting:
            lock = lock_store(args.store)
        al = make_learner_from_args(args)
        if exporting:
            base = args.public_url or f"http://{args.host}:{args.port}"
            for path, text in (
                (args.export_tasks, lambda: json.dumps(export_tasks(al, base), indent=1)),
                (args.export_config, lambda: label_config(al)),
            ):
                if path is not None:
                    try:
                        Path(path).write_text(text(), encoding="utf-8")
                    except OSError as exc:
                        raise ConfigError(f"cannot write {path} ({exc.strerror or exc})") from None
                    print(f"wrote {path}", flush=True)
            return 0
        if al.resumed:
            print(f"resumed {al.store.path}: {al.n_labeled} labels", flush=True)
        serve(LabelStudioBackend(al, queue=args.queue), args.host, args.port, sock)
        return 0
    finally:
        if lock is not None:
            lock.close()
        if sock is not None:
            sock.close()


def serve(backend: LabelStudioBackend, host: str, port: int, sock: Any = None) -> None:
    """Serve the ML backend until interrupted (on ``sock`` when given, see
    :func:`metaal.label_cli.bind_port`)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the Label Studio backend needs uvicorn: pip install metaal") from None
    app = create_app(backend)
    print(
        f"Label Studio ML backend for {backend.al.meta.get('dataset')} ({backend.al.strategy_name}) at "
        f"http://{host}:{port}  (Ctrl-C to stop; annotations are saved)",
        flush=True,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    if sock is None:
        uvicorn.Server(config).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
