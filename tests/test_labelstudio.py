"""``metaal labelstudio``: the ML backend's protocol in-process, and end to end against a real Label
Studio started on 127.0.0.1 with its own SQLite database (skipped, with the reason, when Label Studio
is not installed or cannot start).

Label Studio pins numpy below metaal's, so it lives in its own virtual environment (``.ci/run``
creates ``.venv-ls``): the test finds its ``label-studio`` executable through ``METAAL_LABEL_STUDIO``,
``.venv-ls/bin/label-studio`` or PATH, and drives it with label-studio-sdk from that environment's
Python (tests/labelstudio_sdk_steps.py).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from metaal import scores
from metaal.data import find_dataset
from metaal.labelstudio import LabelStudioBackend, create_app, export_tasks, label_config
from metaal.loop.session import ActiveLearner

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef0123456789abcdef01234567"
STEPS = Path(__file__).with_name("labelstudio_sdk_steps.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sms_tasks(path: Path, n_per_class: int = 12) -> Path:
    """A small real text-classification set: the first ``n_per_class`` ham and spam messages of
    sms_spam, with TF-IDF + SVD features (16-d; fast, no encoder)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    src = find_dataset("sms_spam")
    if src is None:
        pytest.skip(f"dataset 'sms_spam' not found along METAAL_DATA={os.environ.get('METAAL_DATA', '')!r}")
    z = np.load(src, allow_pickle=False)
    y, text = z["y"], z["text"]
    rows = np.sort(np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in (0, 1)]))
    tfidf = TfidfVectorizer(min_df=1).fit_transform(text[rows])
    X = TruncatedSVD(16, random_state=0).fit_transform(tfidf).astype(np.float32)
    np.savez(path, X=X, y=y[rows], classes=z["classes"], text=text[rows])
    return path


def expected_order(al: ActiveLearner) -> list[int]:
    """Unlabeled item ids by margin, most uncertain first (ties in pool order)."""
    unl = np.asarray(al.state.unlabeled_idx)
    m = scores.margin(al.state.proba[unl])
    return [int(al.pool_ids[p]) for p in unl[np.argsort(m, kind="stable")]]


# ----------------------------------------------------------------------------------------------
# the protocol, in-process


def test_protocol_in_process(tmp_path, wine):
    al = ActiveLearner(wine, strategy="margin", store=tmp_path / "s.sqlite", test_size=0.0, initial=4)
    backend = LabelStudioBackend(al)
    client = TestClient(create_app(backend))
    assert client.get("/health").json()["status"] == "UP"
    cfg = label_config(al)
    assert client.post("/setup", json={"schema": cfg}).json() == {"model_version": "metaal-margin-0"}
    tasks = [{"id": 100 + i, **t} for i, t in enumerate(export_tasks(al, "http://x"))]
    assert len(tasks) == wine.n and tasks[5]["data"]["metaal_id"] == 5 and "text" in tasks[5]["data"]
    # the cold start: the session's random pick first
    res = client.post("/predict", json={"tasks": tasks, "label_config": cfg}).json()
    assert len(res["results"]) == wine.n
    top = max(range(wine.n), key=lambda i: res["results"][i]["score"])
    assert res["results"][top]["score"] == 1.0
    assert sum(r["score"] > 0 for r in res["results"]) == 1
    # annotations through the webhook, one per class and the top item
    y = wine.y
    ids = [top] + [int(np.flatnonzero(y == c)[0]) for c in range(3) if np.flatnonzero(y == c)[0] != top][:3]
    for k, i in enumerate(ids):
        region = {"type": "choices", "value": {"choices": [str(wine.classes[y[i]])]}}
        ev = {"action": "ANNOTATION_CREATED", "annotation": {"id": 900 + k, "result": [region]}, "task": tasks[i]}
        r = client.post("/webhook", json=ev)
        assert r.status_code == 201, r.text
    assert al.n_labeled == len(ids) and not al.cold_start
    res = client.post("/predict", json={"tasks": tasks, "label_config": cfg}).json()
    got = sorted((i for i in range(wine.n) if i not in ids), key=lambda i: -res["results"][i]["score"])
    assert got == expected_order(al)
    assert res["model_version"] == f"metaal-margin-{len(ids)}"
    guess = al.state.proba.argmax(axis=1)
    assert [r["result"][0]["value"]["choices"][0] for r in res["results"]] == [str(wine.classes[g]) for g in guess]
    # a changed label of an older annotation cannot be taken back: 409, nothing changes
    ev = {"action": "ANNOTATION_UPDATED", "annotation": {"id": 900, "result": [
        {"type": "choices", "value": {"choices": [str(wine.classes[(y[ids[0]] + 1) % 3])]}}]}, "task": tasks[ids[0]]}
    assert client.post("/webhook", json=ev).status_code == 409
    # deleting the latest annotation undoes it
    r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 900 + len(ids) - 1}]})
    assert r.status_code == 201 and r.json()["items"] == [ids[-1]] and al.n_labeled == len(ids) - 1
    # a bulk creation (lists of annotations and tasks) teaches each
    extra = [i for i in range(wine.n) if i not in ids][:2]
    bulk = {"action": "ANNOTATIONS_CREATED", "task": [tasks[i] for i in extra], "annotation": [
        {"id": 950 + j, "task": tasks[i]["id"], "result": [{"type": "choices", "value": {
            "choices": [str(wine.classes[y[i]])]}}]} for j, i in enumerate(extra)]}
    r = client.post("/webhook", json=bulk)
    assert r.status_code == 201 and r.json()["items"] == extra and al.n_labeled == len(ids) + 1
    assert [al.store.label_of()[i] for i in extra] == [int(y[i]) for i in extra]
    # a task without metaal_id gets an empty prediction, not an error
    assert client.post("/predict", json={"tasks": [{"id": 1, "data": {}}]}).json()["results"][0]["result"] == []


def test_image_tasks_and_pictures(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.arange(60)
    path = tmp_path / "digits.npz"
    np.savez(path, X=d.data[rows].astype(np.float32), y=d.target[rows], images=d.images[rows],
             classes=np.array([str(c) for c in range(10)]))
    al = ActiveLearner(str(path), strategy="entropy", test_size=0.0)
    cfg = label_config(al)
    assert '<Image name="image" value="$image"/>' in cfg and cfg.count("<Choice ") == 10
    tasks = export_tasks(al, "http://127.0.0.1:9999/")
    assert tasks[3]["data"] == {"metaal_id": 3, "image": "http://127.0.0.1:9999/data/image/3.png"}
    client = TestClient(create_app(LabelStudioBackend(al)))
    r = client.get("/data/image/3.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/data/image/60.png").status_code == 404


def test_cli_export_and_bad_input(tmp_path, capsys):
    from metaal.cli import main

    out = tmp_path / "tasks.json"
    assert main(["labelstudio", "--data", "sklearn:wine", "--test-size", "0.3", "--export-tasks", str(out)]) == 0
    tasks = json.loads(out.read_text())
    assert len(tasks) == 124 and all(set(t["data"]) == {"metaal_id", "text"} for t in tasks)  # the pool only
    assert tasks[0]["data"]["text"].startswith(f"row {tasks[0]['data']['metaal_id']}: ")
    capsys.readouterr()
    for argv, msg in ((["--queue", "0"], "--queue must be >= 1"), (["--port", "0"], "--port must be between"),
                      (["--test-size", "1"], "--test-size must be in")):
        assert main(["labelstudio", "--data", "sklearn:wine", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("metaal: error: ") and msg in err and "\n" not in err


# ----------------------------------------------------------------------------------------------
# end to end against a real Label Studio


def label_studio() -> Path | None:
    """The ``label-studio`` executable: ``METAAL_LABEL_STUDIO``, ``.venv-ls/bin``, or PATH."""
    for cand in (os.environ.get("METAAL_LABEL_STUDIO"), ROOT / ".venv-ls" / "bin" / "label-studio",
                 shutil.which("label-studio")):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def ls_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        DJANGO_DB="sqlite",
        LABEL_STUDIO_USERNAME="test@metaal.local",
        LABEL_STUDIO_PASSWORD="metaal-test-password",
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        USE_DEFAULT_BANNED_SUBNETS="false",  # the backend is on 127.0.0.1, a reserved address
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
    )
    env.pop("HOST", None)
    return env


def wait_http(url: str, proc: subprocess.Popen, seconds: float) -> str | None:
    """None once ``url`` answers 200, else why not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return None
        except OSError:
            time.sleep(0.5)
    return f"no answer from {url} within {seconds:.0f} s"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def start_backend(data: Path, store: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metaal.cli", "labelstudio", "--data", str(data), "--store", str(store),
           "--port", str(port), "--strategy", "margin"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=open(log, "a"), stderr=subprocess.STDOUT)
    why = wait_http(f"http://127.0.0.1:{port}/health", proc, 120)
    assert why is None, f"backend {why}: {log.read_text()[-2000:]}"
    return proc


class Steps:
    """tests/labelstudio_sdk_steps.py under Label Studio's Python: one JSON command, one answer."""

    def __init__(self, python: Path, url: str) -> None:
        self.proc = subprocess.Popen([str(python), str(STEPS), url, TOKEN], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __call__(self, **cmd) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ans = json.loads(self.proc.stdout.readline())
        assert "error" not in ans, ans.get("trace", ans["error"])
        return ans

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_label_studio_end_to_end(tmp_path):
    exe = label_studio()
    if exe is None:
        pytest.skip("Label Studio is not installed: set METAAL_LABEL_STUDIO to its label-studio executable "
                    "(.ci/run installs it in .venv-ls)")
    python = exe.parent / "python"
    probe = subprocess.run([str(python), "-c", "import label_studio_sdk"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"label-studio-sdk is not importable beside {exe}: {probe.stderr.strip()[-300:]}")
    data = sms_tasks(tmp_path / "sms.npz")
    y = np.load(data)["y"]
    classes = [str(c) for c in np.load(data)["classes"]]

    # Label Studio's database: a copy of the migrated template (.ci/run makes it; else this run does)
    template = Path(os.environ.get("METAAL_LABEL_STUDIO_TEMPLATE", exe.parent.parent / "metaal-ls-template"))
    data_dir = tmp_path / "ls-data"
    if (template / "label_studio.sqlite3").is_file():
        shutil.copytree(template, data_dir)
    ls_port, port = free_port(), free_port()
    ls_log = tmp_path / "label-studio.log"
    ls = subprocess.Popen([str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(ls_port),
                           "--data-dir", str(data_dir)], env=ls_env(data_dir), cwd=str(tmp_path),
                          stdout=open(ls_log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    backend = steps = None
    try:
        why = wait_http(f"http://127.0.0.1:{ls_port}/health", ls, 600)
        if why is not None:
            pytest.skip(f"Label Studio did not start ({why}): {ls_log.read_text()[-500:]}")
        url = f"http://127.0.0.1:{port}"
        store = tmp_path / "sms.sqlite"
        for opt, out in (("--export-tasks", "tasks.json"), ("--export-config", "config.xml")):
            subprocess.run([sys.executable, "-m", "metaal.cli", "labelstudio", "--data", str(data), opt,
                            str(tmp_path / out)], cwd=str(ROOT), check=True)
        blog = tmp_path / "backend.log"
        backend = start_backend(data, store, port, blog)
        steps = Steps(python, f"http://127.0.0.1:{ls_port}")
        setup = steps(do="setup", tasks=str(tmp_path / "tasks.json"), config=str(tmp_path / "config.xml"),
                      backend=url)
        project, task_of = setup["project"], {int(k): v for k, v in setup["tasks"].items()}
        assert sorted(task_of) == list(range(len(y)))

        def ranked() -> list[dict]:
            steps(do="refresh", project=project)
            return steps(do="order", project=project)["tasks"]

        def annotate(item: int) -> None:
            steps(do="annotate", task=task_of[item], label=classes[y[item]])

        def wait_labels(n: int) -> None:
            deadline = time.monotonic() + 60
            while get_json(f"{url}/health")["n_labeled"] != n:
                assert time.monotonic() < deadline, f"the backend did not get label {n}: {blog.read_text()[-2000:]}"
                time.sleep(0.3)

        # cold start: the session's first (random) pick heads the list
        order = ranked()
        mirror = ActiveLearner(str(data), strategy="margin", test_size=0.0)
        first = mirror.query_items(1)[0].id
        assert order[0]["metaal_id"] == first and order[0]["score"] == 1.0
        assert all(t["score"] == 0.0 for t in order[1:])
        # annotate it, then two of each class (webhook -> teach)
        taught = [first]
        taught += [int(i) for i in np.flatnonzero(y == 0) if i != first][:2]
        taught += [int(i) for i in np.flatnonzero(y == 1) if i != first][:2]
        for i in taught:
            annotate(i)
            mirror.teach([i], [int(y[i])])
        wait_labels(len(taught))

        def check(order: list[dict]) -> None:
            open_tasks = [t for t in order if not t["annotated"]]
            assert [t["metaal_id"] for t in open_tasks] == expected_order(mirror)
            guess = mirror.state.proba.argmax(axis=1)
            assert all(t["choice"] == classes[guess[mirror.position(t["metaal_id"])]] for t in order)
            assert {t["model_version"] for t in order} == {f"metaal-margin-{mirror.n_labeled}"}
            scores_ = [t["score"] for t in open_tasks]
            assert scores_ == sorted(scores_, reverse=True) and scores_[0] == 1.0

        order = ranked()
        check(order)
        top = order[0]["metaal_id"]
        assert top == mirror.query_items(1)[0].id

        # restart the backend on its store: nothing is lost, the ranking goes on from there
        backend.terminate()
        backend.wait(timeout=30)
        backend = start_backend(data, store, port, blog)
        assert get_json(f"{url}/health")["n_labeled"] == len(taught)
        annotate(top)
        mirror.teach([top], [int(y[top])])
        wait_labels(len(taught) + 1)
        check(ranked())
    finally:
        if steps is not None:
            steps.close()
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=30)
        ls.terminate()
        try:
            ls.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ls.kill()
