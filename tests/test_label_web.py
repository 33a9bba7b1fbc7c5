"""The labeling web app: headless Chromium clicks through a session, the server is killed and
restarted, and nothing is lost. Plus the JSON API (images as PNG, errors) without a browser."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from metaal.store import Store

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, port: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "metaal.label_cli",
        "--data",
        "sklearn:wine",
        "--store",
        str(store),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/progress", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start within 60 s")


def make_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="needs Debian chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
@pytest.mark.slow
def test_click_labels_restart_nothing_lost(tmp_path, wine):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = tmp_path / "wine.sqlite"
    port = free_port()
    server = start_server(store, port)
    driver = make_driver(tmp_path / "profile")
    wait = WebDriverWait(driver, 30)

    def text(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    clicked: list[tuple[int, int]] = []
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: text("#item-id") not in ("", "-"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#buttons button")) == 3
        assert "features" in text("#item")  # tabular data: a features summary
        for i in range(5):
            item = int(text("#item-id"))
            label = int(wine.y[item])
            driver.find_element(By.ID, f"class-{label}").click()
            wait.until(lambda d, n=i + 1: text("#count") == str(n))
            clicked.append((item, label))
        shown_before_kill = int(text("#item-id"))
        assert text("#error") == ""
        assert driver.find_element(By.CSS_SELECTOR, "#curve svg polyline") is not None
        assert sum(int(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#counts .count")) == 5

        # kill the server without warning, check the store, start a new one on the same store
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        with Store(store) as s:
            assert [(i, lab) for _, i, lab, _ in s.labels()] == clicked
        port2 = free_port()
        server = start_server(store, port2)
        driver.get(f"http://127.0.0.1:{port2}/")
        wait.until(lambda d: text("#count") == "5")
        assert int(text("#item-id")) == shown_before_kill  # the unanswered query is offered again

        # skip, undo, relabel
        driver.find_element(By.ID, "skip").click()
        wait.until(lambda d: text("#item-id") not in ("", "-", str(shown_before_kill)))
        driver.find_element(By.ID, "undo").click()
        wait.until(lambda d: text("#count") == "4")
        assert int(text("#item-id")) == clicked[-1][0]  # the undone item comes back first
        driver.find_element(By.ID, f"class-{clicked[-1][1]}").click()
        wait.until(lambda d: text("#count") == "5")
    finally:
        driver.quit()
        server.kill()
        server.wait(timeout=30)
    with Store(store) as s:
        assert [(i, lab) for _, i, lab, _ in s.labels()] == clicked
        assert s.skipped() == [shown_before_kill]
        assert [i for i, _, _ in s.undone()] == [clicked[-1][0]]


def test_api_images_and_errors(shared):
    from fastapi.testclient import TestClient

    from metaal.featurize import hog_features, subsample
    from metaal.label_cli import create_app
    from metaal.loop import ActiveLearner

    usps = subsample(shared("usps"), 200, seed=0)
    usps.X = hog_features(usps.images, progress=False)
    al = ActiveLearner(usps, "margin", seed=0)
    client = TestClient(create_app(al))
    assert "metaal label" in client.get("/").text
    st = client.get("/api/state").json()
    item = st["item"]
    assert item["display"] == {"kind": "image", "url": f"/api/image/{item['id']}.png"}
    png = client.get(item["display"]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    import io

    from PIL import Image

    im = np.asarray(Image.open(io.BytesIO(png.content)))
    assert im.shape == (160, 160)  # 16x16 upscaled 10x, pixels preserved
    np.testing.assert_array_equal(im[::10, ::10], usps.images[item["id"]])
    r = client.post("/api/label", json={"id": item["id"], "label": str(usps.classes[usps.y[item["id"]]])})
    assert r.status_code == 200 and r.json()["progress"]["n_labeled"] == 1
    bad = client.post("/api/label", json={"id": item["id"], "label": "nonsense"})
    assert bad.status_code == 400 and "unknown class 'nonsense'" in bad.json()["error"]
    assert client.post("/api/label", json={"id": 10**6, "label": 0}).status_code == 400
    assert al.n_labeled == 1
    assert client.get("/api/image/999999.png").status_code == 404


def test_api_budget_reached(wine):
    """With a budget the page gets no item once it is reached, and the progress says so (the page
    then shows "Budget reached"); a label beyond it is refused."""
    from fastapi.testclient import TestClient

    from metaal.label_cli import create_app
    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine, "margin", seed=0, initial=3, budget=2)
    client = TestClient(create_app(al))
    st = client.get("/api/state").json()
    for _ in range(5):
        assert st["item"] is not None and not st["progress"]["budget_reached"]
        st = client.post("/api/label", json={"id": st["item"]["id"], "label": int(wine.y[st["item"]["id"]])}).json()
    assert st["item"] is None and st["progress"]["budget_reached"] and st["progress"]["budget"] == 2
    assert st["progress"]["n_labeled"] == 5 and st["progress"]["n_queried"] == 2
    free = next(int(r) for r in al.pool_ids if int(r) not in al.store.label_of())
    bad = client.post("/api/label", json={"id": free, "label": 0})
    assert bad.status_code == 400 and "budget of 2 labels" in bad.json()["error"]
    assert "budget-reached" in client.get("/").text
