"""``metaal label``: label data in the browser (or with an oracle), with a durable store.

Examples::

    metaal label --data woodknots_resnet18 --store knots.sqlite            # browser, port 8765
    metaal label --data woodknots_resnet18 --store knots.sqlite --oracle y --n 30
    metaal label --store knots.sqlite --export knots_out/                  # CSV, JSONL, model, report
    metaal label --data notes_feats.npz --classes ham,spam --store notes.sqlite   # unlabeled data (no y)

Stream mode (``--stream``): the items arrive in file order (``--shuffle``: a seeded shuffle, cut to
``--length``); for each, a stream policy (``--stream-policy``, default ``policy:stream-default``, the
shipped learned one; or ``threshold``, ``vu:B``, ``split:B``) either predicts the class or asks for
the label, given the costs ``--request-cost`` and ``--wrong-penalty``. The page
(``metaal/web/stream.html``) shows the item asked about with the model's guess and the items
predicted since the last question; ``--oracle y`` answers from the labels and reports the accuracy
on the predicted items and the reward (:class:`metaal.loop.stream_session.StreamLearner`)::

    metaal label --stream --data sms_spam --store spam_stream.sqlite --wrong-penalty 5
    metaal label --stream --data usps --shuffle --length 300 --oracle y

Unlabeled data (an ``.npz`` without ``y``, as ``metaal featurize`` writes for a ``.txt``, a CSV text
column or a folder of images) needs ``--classes`` unless the file names its classes; every row is
in the pool and, with no held-out set, progress shows the label counts and the model's own estimate
(cross-validated accuracy on the labels, mean confidence on the unlabeled items).

The web app (FastAPI + uvicorn on 127.0.0.1) serves one page from ``metaal/web/index.html``: the
next queried item (its text, the image as PNG, or a summary of its features), the model's guess and
confidence, one button per class with its key (:func:`class_keys`), skip and undo, the progress
through the pool (labeled of pool size, skips, the budget), the held-out accuracy and learning curve
(without a held-out set, the cross-validated estimate), the label counts, and an export button
(``GET /api/export``: a zip of :meth:`ActiveLearner.export`'s files). Every answer is written to the
store before the page moves on, so stopping the server (or a crash) loses nothing; running the same
command again resumes.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaal.errors import ConfigError, DataError, LabelError, MetaalError
from metaal.loop.session import ActiveLearner, run_oracle
from metaal.loop.stream_session import DEFAULT_STREAM_POLICY, StreamLearner, run_stream_oracle
from metaal.protocols import PROTOCOLS, get_protocol
from metaal.store import Store

WEB_DIR = Path(__file__).parent / "web"


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, unless the help already says its default or the
    default is None (an option that is simply absent)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action) or text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="dataset with features (name, .npz, .csv, sklearn:NAME, synth:KIND?n=..&d=..); "
        "optional when --store exists",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names (a,b,c); required for data without labels, "
        "must match the file's classes otherwise",
    )
    p.add_argument("--strategy", default="margin", help="query strategy (margin, entropy, random, policy:PATH, ...)")
    p.add_argument("--store", default=None, help="session file PATH.sqlite (resumed if it exists); default: in memory")
    p.add_argument("--learner", default="logreg", help="learner: logreg, torch_logreg, svm, rf, knn, gb")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initial set and the strategy")
    p.add_argument(
        "--initial",
        type=int,
        default=None,
        help="initial labels before the strategy takes over (and until 2 classes); with labeled data the "
        "initial set of 'metaal compare --initial' for the same --seed; 0: the strategy picks from the first "
        "label (a model-based one lets random pick until 2 classes are labeled) (default: the protocol's, "
        "the store's, else 2)",
    )
    p.add_argument(
        "--protocol",
        default=None,
        metavar="NAME",
        help=f"set --initial and --budget from a protocol ({', '.join(PROTOCOLS)}); 'imbalanced' also "
        "subsamples the data's minority classes (NAME?imbalance=0.05); explicit flags win",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="labels to ask after the initial set; the session stops there and a learned policy sees "
        "budget_used as in training (default: the store's, else open-ended)",
    )
    p.add_argument(
        "--test-size", type=float, default=0.3, help="share of a labeled dataset held out to measure accuracy"
    )
    p.add_argument("--host", default="127.0.0.1", help="address the web app listens on")
    p.add_argument("--port", type=int, default=8765, help="port of the web app (1-65535)")
    p.add_argument(
        "--oracle",
        default=None,
        help="answer automatically from known labels: labels.npy (one per row) or 'y' (the dataset's labels)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="with --oracle: stop when this many items are labeled (default: 30 without --budget)",
    )
    p.add_argument("--delay", type=float, default=0.0, help="with --oracle: seconds before each answer")
    p.add_argument(
        "--prefetch",
        action="store_true",
        help="choose the next item with the model before the answer while the refit runs: an answer costs "
        "the choice alone at any pool size, but the items differ from 'metaal compare' by one model version "
        "(kept in the store)",
    )
    p.add_argument(
        "--export", default=None, metavar="DIR", help="write labels (CSV, JSONL), model.joblib and report.png to DIR"
    )
    s = p.add_argument_group("stream mode (--stream)")
    s.add_argument("--stream", action="store_true",
                   help="items arrive one by one; the stream policy predicts each or asks for its label")
    s.add_argument("--stream-policy", default=DEFAULT_STREAM_POLICY, metavar="NAME",
                   help="policy:PATH, threshold, threshold:T, vu:BUDGET or split:BUDGET; default: "
                   "policy:stream-default, the shipped learned policy")
    s.add_argument("--request-cost", type=float, default=0.05, help="cost of one label request")
    s.add_argument("--wrong-penalty", type=float, default=1.0, 
                   help="penalty of a wrong prediction (a right one earns 1)")
    s.add_argument("--shuffle", action="store_true", help="arrival order: a shuffle of the rows seeded by --seed "
                   "(default: file order)")
    s.add_argument("--length", type=int, default=None, help="items in the stream (default: every row)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "label",
        help="label data in the browser (or with --oracle), resumable",
        description="Active labeling with a local web app (127.0.0.1) or an automatic oracle; "
        "answers are kept in a SQLite store and a restart resumes.",
        formatter_class=DefaultsFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def make_learner_from_args(args: argparse.Namespace) -> Any:
    data = args.data
    classes = parse_classes(args.classes)
    store = None
    if args.store is not None:
        store = Store(args.store)
        if data is None:
            if store.is_new:
                raise ConfigError(f"store {args.store} is new: give --data")
            data = store.meta["dataset"]
    if data is None:
        raise ConfigError("give --data (and --store PATH.sqlite to keep the answers)")
    if getattr(args, "protocol", None) is not None:  # metaal labelstudio shares this set-up, without it
        proto = get_protocol(args.protocol)
        args.initial = proto.initial if args.initial is None else args.initial
        args.budget = proto.budget if args.budget is None else args.budget
        if proto.imbalance and "imbalance=" not in str(data) and not str(data).startswith("synth:"):
            data = f"{data}?imbalance={proto.imbalance:g}"
    if store is not None and not store.is_new:
        # a resumed session keeps its own settings unless they are given explicitly
        m = store.meta
        if args.strategy == "margin" and m.get("strategy") != "margin":
            args.strategy = m["strategy"]
        if args.learner == "logreg" and m.get("learner") != "logreg":
            args.learner = m["learner"]
        if args.seed == 0 and m.get("seed", 0) != 0:
            args.seed = m["seed"]
        if classes is None and m.get("classes"):
            classes = [str(c) for c in m["classes"]]
    return ActiveLearner(
        data,
        strategy=args.strategy,
        learner=args.learner,
        store=store,
        seed=args.seed,
        initial=args.initial,
        test_size=args.test_size,
        classes=classes,
        budget=args.budget,
        prefetch=bool(getattr(args, "prefetch", False)),  # metaal labelstudio: always exact
    )


def parse_classes(spec: str | None) -> list[str] | None:
    """``"a,b,c"`` -> ``["a", "b", "c"]`` (None stays None).

    :raises ConfigError: for fewer than two names, an empty name or a repeated one.
    """
    if spec is None:
        return None
    names = [c.strip() for c in spec.split(",")]
    if len(names) < 2 or any(not c for c in names) or len(set(names)) != len(names):
        raise ConfigError(f"--classes needs at least two distinct comma-separated names, got {spec!r}")
    return names


def oracle_labels(spec: str, learner: Any) -> np.ndarray:
    if spec in ("y", "dataset"):
        if learner.dataset is None or learner.dataset.y is None:
            raise ConfigError(
                "--oracle y needs a dataset with labels 'y' (this one has none: give --oracle labels.npy)"
            )
        return learner.dataset.y
    try:
        y = np.load(spec, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec}: cannot read oracle labels ({exc})") from None
    return np.asarray(y)


def quality(prog: dict[str, Any]) -> str:
    """``accuracy=0.812`` with a held-out set; otherwise the label counts and the model's own
    estimate: ``counts=ham:12,spam:8 cv_accuracy=0.850 confidence=0.903``."""
    if prog.get("estimate") is None:
        acc = prog["accuracy"]
        return f"accuracy={'-' if acc is None else f'{acc:.3f}'}"
    est = prog["estimate"]
    counts = ",".join(f"{c}:{v}" for c, v in prog["counts"].items())
    cv, conf = est["cv_accuracy"], est["mean_confidence"]
    return (
        f"counts={counts} cv_accuracy={'-' if cv is None else f'{cv:.3f}'} "
        f"confidence={'-' if conf is None else f'{conf:.3f}'}"
    )


def check_arguments(args: argparse.Namespace) -> None:
    """The numbers of ``metaal label``, checked before anything is opened or created.

    :raises ConfigError: naming the option.
    """
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535 (got {args.port})")
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be >= 1 (got {args.n})")
    for opt, val in (("--initial", args.initial), ("--budget", args.budget), ("--delay", args.delay)):
        if val is not None and val < 0:
            raise ConfigError(f"{opt} must be >= 0 (got {val})")
    if not 0.0 <= args.test_size < 1.0:
        raise ConfigError(f"--test-size must be in [0, 1) (got {args.test_size})")
    if getattr(args, "stream", False):
        if args.length is not None and args.length < 1:
            raise ConfigError(f"--length must be >= 1 (got {args.length})")
        for opt, val in (("--request-cost", args.request_cost), ("--wrong-penalty", args.wrong_penalty)):
            if not np.isfinite(val) or val < 0:
                raise ConfigError(f"{opt} must be a number >= 0 (got {val})")
        for opt in ("protocol", "initial", "budget", "n"):
            if getattr(args, opt) is not None:
                raise ConfigError(f"--{opt} is for pool sessions; a stream runs to its --length")
        if args.prefetch:
            raise ConfigError("--prefetch is for pool sessions")


def bind_port(host: str, port: int) -> Any:
    """A listening socket on ``host:port`` (taken now, handed to the server later), so that a port
    in use is found before the store is created.

    :raises ConfigError: when the port is in use or the host cannot be bound.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--host {host}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            reason = "is in use" if exc.errno == errno.EADDRINUSE else "needs privileges"
            raise ConfigError(f"port {port} on {host} {reason}: choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def lock_store(path: "str | Path") -> Any:
    """Take the store's lock file ``PATH.lock`` (``fcntl.flock``): returns the open lock file, to
    close when done (the system releases it anyway when the process ends, even after a crash).

    :raises ConfigError: when another ``metaal label`` holds it.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        return None
    lock = Path(str(path) + ".lock")
    fh = open(lock, "a+")  # noqa: SIM115  (held open for the life of the process)
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ConfigError(
            f"store {path} is in use by another metaal label (lock {lock}); stop it first"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    serving = args.oracle is None and args.export is None
    sock = bind_port(args.host, args.port) if serving else None
    lock = None
    try:
        if args.store is not None and (serving or args.oracle is not None):
            lock = lock_store(args.store)
        return _run(args, sock)
    finally:
        if lock is not None:
            lock.close()
        if sock is not None:
            sock.close()


def make_stream_learner_from_args(args: argparse.Namespace) -> StreamLearner:
    """The :class:`StreamLearner` of ``metaal label --stream`` (a resumed store keeps its data,
    policy and costs unless they are given)."""
    data, classes, store = args.data, parse_classes(args.classes), None
    if args.store is not None:
        store = Store(args.store)
        if not store.is_new:
            m = store.meta
            if m.get("mode") != "stream":
                raise ConfigError(
                    f"store {args.store} holds a pool labeling session: drop --stream or use a new --store")
            data = m["dataset"] if data is None else data
            if args.stream_policy == DEFAULT_STREAM_POLICY:
                args.stream_policy = m["policy"]
            if args.request_cost == 0.05:
                args.request_cost = m["request_cost"]
            if args.wrong_penalty == 1.0:
                args.wrong_penalty = m["wrong_penalty"]
            if args.learner == "logreg":
                args.learner = m["learner"]
            classes = classes or [str(c) for c in m["classes"]]
            order: Any = m["pool"]
        else:
            order = args.seed if args.shuffle else None
    else:
        order = args.seed if args.shuffle else None
    if data is None:
        raise ConfigError("give --data (and --store PATH.sqlite to keep the answers)")
    sl = StreamLearner(data, classes=classes, policy=args.stream_policy, request_cost=args.request_cost,
                       wrong_penalty=args.wrong_penalty, learner=args.learner, store=store, order=order,
                       length=args.length)
    if args.oracle is not None:  # a simulation: the predictions are checked against the labels too
        sl.truth = oracle_labels(args.oracle, sl)
    return sl


def stream_line(prog: dict[str, Any]) -> str:
    """``item 120/300 requests=31 (0.258) predicted=89 accuracy=0.921 reward=+70.45``."""
    acc, rew = prog["accuracy_predicted"], prog["reward"]
    return (f"item {prog['t']}/{prog['length']} requests={prog['n_requests']} ({prog['request_rate']:.3f}) "
            f"predicted={prog['n_predicted']}" + ("" if acc is None else f" accuracy={acc:.3f}")
            + ("" if rew is None else f" reward={rew:+.2f}"))


def _run_stream(args: argparse.Namespace, sock: Any = None) -> int:
    sl = make_stream_learner_from_args(args)
    if sl.resumed:
        print(f"resumed {sl.store.path}: {sl.episode.t} of {sl.length} items decided", flush=True)
    print(f"stream policy: {sl.policy_name}", flush=True)
    if args.oracle is not None:
        def show(item: Any, lab: int, prog: dict[str, Any]) -> None:
            print(f"asked t={item.t} id={item.id} class={sl.classes[lab]} guess={item.prediction_name} "
                  f"{stream_line(prog)}", flush=True)
            if args.delay:
                import time

                time.sleep(args.delay)

        prog = run_stream_oracle(sl, sl.truth if sl.truth is not None else [], callback=show)
        print(f"done: {stream_line(prog)}", flush=True)
    if args.export is not None:
        paths = sl.export(args.export)
        print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    if args.oracle is None and args.export is None:
        serve(sl, host=args.host, port=args.port, sock=sock, app=create_stream_app(sl))
    return 0


def _run(args: argparse.Namespace, sock: Any = None) -> int:
    if getattr(args, "stream", False):
        return _run_stream(args, sock)
    al = make_learner_from_args(args)
    if al.resumed:
        print(f"resumed {al.store.path}: {al.n_labeled} labels", flush=True)
    if args.oracle is not None:
        y = oracle_labels(args.oracle, al)

        def show(q: Any, lab: int, prog: dict[str, Any]) -> None:
            print(
                f"labeled {prog['n_labeled']} id={q.id} class={al.classes[lab]} reason={q.reason} {quality(prog)}",
                flush=True,
            )

        n = args.n if args.n is not None or al.budget is not None else 30
        prog = run_oracle(al, y, n, delay=args.delay, callback=show)
        end = f" (budget of {al.budget} reached)" if prog["budget_reached"] else ""
        print(f"done: {prog['n_labeled']} labels{end}, {quality(prog)}", flush=True)
    if args.export is not None:
        paths = al.export(args.export)
        print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    if args.oracle is None and args.export is None:
        serve(al, host=args.host, port=args.port, sock=sock)
    return 0


# ----------------------------------------------------------------------------------------------
# web app


def display(al: Any, item_id: int) -> dict[str, Any]:
    """What the page shows for an item: its text, an image URL, or a features summary."""
    ds = al.dataset
    if ds is not None and ds.text is not None:
        return {"kind": "text", "text": str(ds.text[item_id])}
    if ds is not None and ds.images is not None:
        return {"kind": "image", "url": f"/api/image/{item_id}.png"}
    x = al.X[item_id]
    pos = al.position(item_id)
    z = al.X_pool[pos] if pos is not None else np.zeros_like(x)
    names = ds.extras.get("feature_names") if ds is not None else None
    top = np.argsort(-np.abs(z), kind="stable")[:12]
    return {
        "kind": "features",
        "n_features": int(len(x)),
        "features": [
            {
                "name": str(names[j]) if names is not None and len(names) == len(x) else f"x{j}",
                "value": float(x[j]),
                "z": float(z[j]),
            }
            for j in top
        ],
    }


def class_keys(classes: Sequence[str]) -> list[str | None]:
    """The keyboard key of each class on the page, ``(C,)``, None for a class without one.

    When every class name is a single digit (``0``-``9``: digits data such as ``usps`` or
    ``sklearn:digits``, or ratings ``1``-``5``), the key is the name itself, so ``0`` labels class
    ``"0"``. Otherwise the keys follow the button order: ``1``-``9`` for the first nine classes,
    ``0`` for the tenth, none after it.
    """
    names = [str(c) for c in classes]
    if names and all(len(c) == 1 and c in "0123456789" for c in names) and len(set(names)) == len(names):
        return names
    return [str((i + 1) % 10) if i < 10 else None for i in range(len(names))]


def export_zip(al: Any) -> bytes:
    """The files of :meth:`ActiveLearner.export` (``labels.csv``, ``labels.jsonl``,
    ``model.joblib``, ``report.png``, ``report.json``), zipped at the archive's root."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="metaal-export-") as tmp:
        paths = al.export(tmp)
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in paths.values():
                zf.write(path, arcname=path.name)
    return buf.getvalue()


def export_filename(dataset: str) -> str:
    """``<dataset>_labels.zip``, the dataset's name with anything but letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``_``, without its folder and file extension (``sklearn:wine`` ->
    ``sklearn_wine_labels.zip``, ``/data/notes_feats.npz`` -> ``notes_feats_labels.zip``)."""
    base = re.sub(r"\.[A-Za-z]+$", "", Path(dataset).name) if dataset else ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "metaal"
    return f"{stem}_labels.zip"


def image_png(images: np.ndarray, item_id: int, min_size: int = 160) -> bytes:
    """PNG bytes of ``images[item_id]`` (``(H, W)`` or ``(H, W, C)``), upscaled (nearest) to at least
    ``min_size`` pixels on its short side."""
    from PIL import Image

    a = np.asarray(images[item_id])
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        a = np.zeros(f.shape, np.uint8) if hi <= lo else ((f - lo) / (hi - lo) * 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    s = max(1, int(np.ceil(min_size / max(1, min(a.shape[:2])))))
    a = np.repeat(np.repeat(a, s, axis=0), s, axis=1)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def add_shared_routes(app: Any, session: Any, zip_name: str) -> None:
    """The routes both pages share: ``GET /static/common.{css,js}``, ``GET /api/export`` (a zip of
    ``session.export``'s files, named ``zip_name``) and ``GET /api/image/ID.png``."""
    from fastapi.responses import JSONResponse, Response

    static = {"common.css": "text/css", "common.js": "text/javascript"}

    def error(exc: Exception, status: int) -> Any:
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/static/{name}")
    def get_static(name: str):  # noqa: ANN202
        if name not in static:
            return error(DataError(f"no file {name}"), 404)
        return Response((WEB_DIR / name).read_text(encoding="utf-8"), media_type=static[name])

    @app.get("/api/export")
    def get_export():  # noqa: ANN202
        try:
            data = export_zip(session)
        except (MetaalError, OSError) as exc:
            return error(exc, 500)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{zip_name}"'})

    @app.get("/api/image/{item_id}.png")
    def get_image(item_id: int):  # noqa: ANN202
        ds = session.dataset
        if ds is None or ds.images is None:
            return error(DataError("this dataset has no images"), 404)
        if not 0 <= item_id < ds.n:
            return error(DataError(f"no item {item_id}"), 404)
        return Response(image_png(ds.images, item_id), media_type="image/png")


def create_app(al: Any) -> Any:
    """The FastAPI app serving the labeling page and its JSON API for ActiveLearner ``al``."""
    try:
        from fastapi import Body, FastAPI
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise ConfigError("the labeling web app needs fastapi and uvicorn: pip install metaal") from None

    app = FastAPI(title="metaal label")
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    dataset_name = str(al.meta.get("dataset", ""))

    def state(wait: bool = True) -> dict[str, Any]:
        items = al.query_items(1)
        item = None
        if items:
            item = items[0].to_dict()
            item["display"] = display(al, item["id"])
        classes = [str(c) for c in al.classes]
        return {
            "dataset": Path(dataset_name).name,
            "classes": classes,
            "keys": class_keys(classes),
            "item": item,
            "progress": al.progress(wait=wait),  # wait=False: the answer's evaluation may still run
        }

    def error(exc: Exception, status: int = 400) -> Any:
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index():  # noqa: ANN202
        return page

    @app.get("/api/state")
    def get_state():  # noqa: ANN202
        return state()

    @app.get("/api/progress")
    def get_progress():  # noqa: ANN202
        return al.progress()

    @app.post("/api/label")
    def post_label(payload: dict = Body(...)):  # noqa: ANN202, B008
        try:
            if "id" not in payload or "label" not in payload:
                raise LabelError("send {'id': ITEM, 'label': CLASS}")
            al.teach([int(payload["id"])], [payload["label"]])
        except (MetaalError, ValueError, TypeError) as exc:
            return error(exc)
        return state(wait=False)  # the next item at once; the page asks /api/progress for the rest

    @app.post("/api/skip")
    def post_skip(payload: dict = Body(...)):  # noqa: ANN202, B008
        try:
            al.skip(int(payload["id"]))
        except (MetaalError, KeyError, ValueError, TypeError) as exc:
            return error(exc)
        return state()

    @app.post("/api/undo")
    def post_undo(payload: dict = Body(default={})):  # noqa: ANN202, B008
        al.undo()
        return state()

    add_shared_routes(app, al, export_filename(dataset_name))
    return app


def create_stream_app(sl: StreamLearner) -> Any:
    """The FastAPI app serving the stream page (``metaal/web/stream.html``) and its JSON API for
    :class:`StreamLearner` ``sl``: ``GET /api/stream`` (where the stream stands),
    ``POST /api/stream/next`` (decide items up to the next request: the predictions passed and the
    item asked about), ``POST /api/stream/label`` (``{"t": T, "label": CLASS}``, then on to the next
    request), ``GET /api/export`` and ``GET /api/image/ID.png``."""
    try:
        from fastapi import Body, FastAPI
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise ConfigError("the labeling web app needs fastapi and uvicorn: pip install metaal") from None

    app = FastAPI(title="metaal label --stream")
    page = (WEB_DIR / "stream.html").read_text(encoding="utf-8")
    dataset_name = str(sl.meta.get("dataset", ""))
    classes = [str(c) for c in sl.classes]

    def shown(item: Any) -> dict[str, Any]:
        d = item.to_dict()
        d["display"] = display(sl, item.id)
        return d

    def state(predicted: list[Any] | None = None, max_items: int = 0) -> dict[str, Any]:
        if max_items:
            predicted, _ = sl.advance(max_items)
        prog, pending = sl.progress(), sl.pending
        return {"dataset": Path(dataset_name).name, "classes": classes, "keys": class_keys(classes),
                "item": None if pending is None else shown(pending),
                "predicted": [shown(p) for p in (predicted or [])[-50:]],
                "n_passed": len(predicted or []), "progress": prog}

    def error(exc: Exception, status: int = 400) -> Any:
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index():  # noqa: ANN202
        return page

    @app.get("/api/stream")
    def get_stream():  # noqa: ANN202
        return state()

    @app.post("/api/stream/next")
    def post_next(payload: dict = Body(default={})):  # noqa: ANN202, B008
        return state(max_items=int(payload.get("max_items", 500)))

    @app.post("/api/stream/label")
    def post_label(payload: dict = Body(...)):  # noqa: ANN202, B008
        try:
            if "t" not in payload or "label" not in payload:
                raise LabelError("send {'t': POSITION, 'label': CLASS}")
            sl.teach(payload["label"], t=int(payload["t"]))
        except (MetaalError, ValueError, TypeError) as exc:
            return error(exc)
        return state(max_items=500)

    add_shared_routes(app, sl, export_filename(dataset_name).replace("_labels.zip", "_stream.zip"))
    return app


def serve(al: Any, host: str = "127.0.0.1", port: int = 8765, sock: Any = None, app: Any = None) -> None:
    """Serve the labeling page of ``al`` (or ``app``, another page's app) until interrupted (on
    ``sock``, a socket already listening on ``host:port`` (:func:`bind_port`), when given)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("the labeling web app needs uvicorn: pip install metaal") from None
    app = create_app(al) if app is None else app
    print(
        f"labeling {al.meta.get('dataset')} at http://{host}:{port}/  (Ctrl-C to stop; answers are saved)", flush=True
    )
    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """``python -m metaal.label_cli ...``: the ``label`` command on its own."""
    parser = argparse.ArgumentParser(prog="metaal label")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MetaalError as exc:
        print(f"metaal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; what was labeled is stored
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
