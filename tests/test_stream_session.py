"""The stream labeling session (``metaal label --stream``, :class:`StreamLearner`): one core with
``Stream-v0`` (the same decisions and rewards on the same stream), resume after SIGKILL with
nothing lost, the Python loop, the page's API and bad input."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from metaal.data import load_dataset
from metaal.envs import StreamEnv
from metaal.errors import ConfigError, LabelError
from metaal.label_cli import create_stream_app
from metaal.label_cli import main as label_main
from metaal.loop.session import ActiveLearner
from metaal.loop.stream_session import StreamLearner, run_stream_oracle
from metaal.store import Store
from metaal.strategies.stream import get_stream_policy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wine():
    return load_dataset("sklearn:wine")


def _env_episode(policy_name: str, seed: int, penalty: float, length: int):
    env = StreamEnv(datasets=["sklearn:wine"], max_classes=3, episode_length=length, cost_features=True,
                    wrong_penalty=penalty)
    pol = get_stream_policy(policy_name)
    obs, info = env.reset(seed=seed)
    requests, done = [], False
    while not done:
        a = pol(obs, env)
        requests.append(a == env.request_action)
        obs, _, done, _, info = env.step(a)
    return env, requests, info


@pytest.mark.parametrize("policy", ["policy:stream-default", "threshold", "vu:0.3", "split:0.3"])
def test_session_with_an_oracle_decides_as_the_env(policy, wine, tmp_path) -> None:
    """The session drives the env's core: on the env's stream, with the true labels, it asks for the
    same items and earns the same reward."""
    env, requests, info = _env_episode(policy, seed=3, penalty=2.0, length=80)
    sl = StreamLearner(wine, policy=policy, order=env.rows, truth=wine.y, wrong_penalty=2.0,
                       store=tmp_path / "s.sqlite")
    prog = run_stream_oracle(sl, wine.y)
    events = sl.store.stream_events()
    assert [e[1] for e in events] == [int(r) for r in env.rows]
    assert [e[2] == "request" for e in events] == requests
    assert prog["n_requests"] == info["n_requests"] and 0 < prog["n_requests"] < 80
    assert prog["reward"] == pytest.approx(env.unwrapped.episode.total_reward)
    assert prog["accuracy_predicted"] == pytest.approx(info["accuracy_predicted"])
    assert prog["done"] and sl.next_item() is None


@pytest.mark.parametrize("policy", ["vu:0.3", "policy:stream-default"])
def test_resume_mid_stream_takes_the_same_decisions(policy, wine, tmp_path) -> None:
    """A session reopened on its store (the budget manager's state rebuilt by the replay) goes on
    exactly as one that never stopped, with a pending request asked again."""
    ref = StreamLearner(wine, policy=policy, order=7, length=90, store=tmp_path / "ref.sqlite")
    run_stream_oracle(ref, wine.y)
    path = tmp_path / "cut.sqlite"
    sl = StreamLearner(wine, policy=policy, order=7, length=90, store=path)
    asked = 0
    for item in sl:
        if item.request:
            if asked == 4:
                break  # the process "dies" with this request pending
            sl.teach(int(wine.y[item.id]))
            asked += 1
    pending = sl.pending
    assert pending is not None
    sl.store.close()
    again = StreamLearner(wine, policy=policy, order=7, length=90, store=path)
    assert again.resumed and again.episode.t == pending.t and again.n_replay_mismatches == 0
    assert again.next_item() == pending
    run_stream_oracle(again, wine.y)
    strip = [e[:5] for e in again.store.stream_events()]
    assert strip == [e[:5] for e in ref.store.stream_events()]
    assert again.progress()["n_requests"] == ref.progress()["n_requests"]


def test_python_loop_and_its_errors(wine) -> None:
    sl = StreamLearner(wine.X, classes=[str(c) for c in wine.classes], policy="threshold", order=1, length=40)
    seen = []
    for item in sl:
        seen.append(item.t)
        if item.request:
            sl.teach(str(wine.classes[wine.y[item.id]]))  # a class name works as well as an index
    assert seen == list(range(40))
    prog = sl.progress()
    assert prog["accuracy_predicted"] is None and prog["reward"] is None  # nobody checked the predictions
    assert prog["n_requests"] + prog["n_predicted"] == 40 and sum(prog["counts"].values()) == prog["n_requests"]

    sl = StreamLearner(wine.X, classes=[str(c) for c in wine.classes], policy="threshold", length=10)
    with pytest.raises(LabelError, match="call teach"):
        for _ in sl:  # the first item is always asked about (no model yet); not teaching it is an error
            pass
    with pytest.raises(LabelError, match="unknown class"):
        sl.teach("merlot")
    with pytest.raises(LabelError, match="not the one waiting"):
        sl.teach(0, t=5)
    with pytest.raises(ConfigError, match="unknown stream policy"):
        StreamLearner(wine, policy="margin")
    with pytest.raises(ConfigError, match="distinct rows"):
        StreamLearner(wine, order=[0, 0, 1])


def test_bad_costs_write_no_store(wine, tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    with pytest.raises(ConfigError, match="wrong_penalty must be finite and >= 0"):
        StreamLearner(wine, policy="threshold", wrong_penalty=-1.0, store=path)
    assert Store(path).is_new


def test_stores_of_the_other_mode_are_refused(wine, tmp_path) -> None:
    pool = tmp_path / "pool.sqlite"
    ActiveLearner(wine, "margin", store=pool).store.close()
    with pytest.raises(ConfigError, match="holds a pool labeling session"):
        StreamLearner(wine, store=pool)
    stream = tmp_path / "stream.sqlite"
    StreamLearner(wine, policy="threshold", store=stream).store.close()
    with pytest.raises(ConfigError, match="holds a stream session"):
        ActiveLearner(wine, "margin", store=stream)
    with pytest.raises(ConfigError, match="its wrong_penalty is"):
        StreamLearner(wine, policy="threshold", wrong_penalty=5.0, store=stream)


def test_corrupt_stream_policy_falls_back_loudly_and_says_so(wine, tmp_path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sl = StreamLearner(wine, policy=f"policy:{bad}", order=0, length=30)
    assert any("falling back" in str(x.message) for x in w)
    prog = run_stream_oracle(sl, wine.y)
    assert prog["fallback"] and "fallback=threshold" in prog["policy"]


def test_page_api_asks_predicts_and_exports(wine, tmp_path) -> None:
    from fastapi.testclient import TestClient

    sl = StreamLearner(wine, policy="threshold", order=2, length=60, store=tmp_path / "p.sqlite")
    client = TestClient(create_stream_app(sl))
    assert "metaal label --stream" in client.get("/").text
    st = client.post("/api/stream/next", json={}).json()
    assert st["item"]["t"] == 0 and st["item"]["request"] and st["item"]["display"]["kind"] == "features"
    assert client.post("/api/stream/label", json={"t": 5, "label": 0}).status_code == 400  # a stale page
    n_answers = 0
    while st["item"] is not None:
        it = st["item"]
        st = client.post("/api/stream/label", json={"t": it["t"], "label": int(wine.y[it["id"]])}).json()
        n_answers += 1
        for q in st["predicted"]:
            assert not q["request"] and q["t"] > it["t"]
    assert st["progress"]["done"] and st["progress"]["n_requests"] == n_answers
    assert st["progress"]["n_predicted"] == 60 - n_answers > 0
    z = client.get("/api/export")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    lines = (sl.export(tmp_path / "out")["csv"]).read_text().splitlines()
    assert lines[0].startswith("t,id,action,prediction,label,time") and len(lines) == 61


def test_cli_bad_input_is_one_line(capsys) -> None:
    for argv, msg in (
        (["--stream", "--data", "sklearn:wine", "--stream-policy", "nope", "--oracle", "y"], "unknown stream policy"),
        (["--stream", "--data", "sklearn:wine", "--wrong-penalty", "-1", "--oracle", "y"], "--wrong-penalty"),
        (["--stream", "--data", "sklearn:wine", "--budget", "10", "--oracle", "y"], "--budget is for pool"),
    ):
        assert label_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def _stream_cmd(store: Path, delay: float) -> list[str]:
    return [sys.executable, "-m", "metaal.label_cli", "--stream", "--data", "sklearn:wine", "--store", str(store),
            "--stream-policy", "vu:0.4", "--shuffle", "--seed", "3", "--length", "100", "--oracle", "y",
            "--delay", str(delay)]


@pytest.mark.slow
def test_sigkill_mid_stream_then_resume(wine, tmp_path) -> None:
    """``metaal label --stream`` killed with SIGKILL after some answers: every acknowledged label is
    in the store, and the same command finishes the stream as an uninterrupted run does."""
    ref = StreamLearner(wine, policy="vu:0.4", order=3, length=100, truth=wine.y)
    ref_prog = run_stream_oracle(ref, wine.y)
    path = tmp_path / "killed.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_stream_cmd(path, 0.3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT), env=env)
    acked: list[int] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("asked "):
                acked.append(int(line.split("t=")[1].split()[0]))
                if len(acked) == 8:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # type: ignore[union-attr]
    s = Store(path)
    requested = [t for t, _, a, _, _, _ in s.stream_events() if a == "request"]
    assert requested[: len(acked)] == acked and s.n_stream_events < 100
    s.close()
    out = subprocess.run(_stream_cmd(path, 0.0), capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"resumed {path}:")
    s = Store(path)
    assert [e[:5] for e in s.stream_events()] == [e[:5] for e in ref.store.stream_events()]
    assert f"reward={ref_prog['reward']:+.2f}" in out.stdout.strip().splitlines()[-1]


def test_readme_stream_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    """The README's stream block, executed as written; run again it resumes (every item decided)."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-example:stream -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its <!-- readme-example:stream --> block"
    monkeypatch.chdir(tmp_path)
    exec(compile(m.group(1), "README.md", "exec"), {"__name__": "readme_stream"})
    last = capsys.readouterr().out.strip().splitlines()[-1]
    n_asked = int(last.split()[0])
    assert last.endswith("labels asked of 178") and 0 < n_asked < 178
    s = Store(tmp_path / "stream.sqlite")
    assert s.n_stream_events == 178 and sum(a == "request" for _, _, a, *_ in s.stream_events()) == n_asked
    s.close()


@pytest.mark.slow
def test_stream_page_in_a_browser_survives_a_kill(wine, tmp_path) -> None:
    """Headless Chromium on ``metaal label --stream``: answer the questions by clicking, see the
    predicted items listed, kill the server with SIGKILL, restart it: the same question is asked
    and every answer is in the store."""
    from test_label_web import CHROMEDRIVER, CHROMIUM, free_port, make_driver, start_server

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = tmp_path / "stream.sqlite"
    extra = ("--stream", "--stream-policy", "threshold", "--shuffle", "--seed", "2", "--length", "80")
    server = start_server(store, free_port(), extra, ready="/api/stream")
    port = int(server.args[server.args.index("--port") + 1])
    driver = make_driver(tmp_path / "profile")
    wait = WebDriverWait(driver, 30)

    def text(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    answered: list[tuple[int, int]] = []
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: text("#item-t") not in ("", "-"))
        for _ in range(8):
            t, item = int(text("#item-t")), int(text("#item-id"))
            driver.find_element(By.ID, f"class-{int(wine.y[item])}").click()
            wait.until(lambda d, t=t: text("#item-t") != str(t))
            answered.append((t, int(wine.y[item])))
        assert text("#error") == "" and int(text("#requests")) == 8
        assert int(text("#predicted")) > 0 and driver.find_elements(By.CSS_SELECTOR, "tr.passed-row")
        asked_before_kill = text("#item-t")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        with Store(store) as s:
            assert [(t, lab) for t, _, a, _, lab, _ in s.stream_events() if a == "request"] == answered
        server = start_server(store, free_port(), ("--stream",), ready="/api/stream")
        port = int(server.args[server.args.index("--port") + 1])
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: text("#item-t") not in ("", "-"))
        assert text("#item-t") == asked_before_kill and text("#requests") == "8"
    finally:
        driver.quit()
        server.kill()
        server.wait(timeout=30)
