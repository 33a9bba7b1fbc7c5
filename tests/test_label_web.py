"""The labeling web app: headless Chromium clicks through a session, the server is killed and
restarted, and nothing is lost. Plus the JSON API (images as PNG, errors) without a browser."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
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


def start_server(store: Path, port: int, extra: tuple[str, ...] = (), ready: str = "/api/progress") -> subprocess.Popen:
    """``metaal label --data sklearn:wine --store STORE --port PORT EXTRA...``, once ``ready`` answers."""
    cmd = [sys.executable, "-m", "metaal.label_cli", "--data", "sklearn:wine", "--store", str(store),
           "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as r:
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


# ----------------------------------------------------------------------------------------------
# the page as a person uses it: progress, skips, export, keys, the estimate, "no curve yet"


def test_class_keys_digit_names_and_button_order(wine):
    """Class names that are all digits are their own keys ("0" labels class "0"); other names get
    1-9 then 0 in button order, and no key after the tenth class. /api/state sends them."""
    from fastapi.testclient import TestClient

    from metaal.data import load_dataset
    from metaal.label_cli import class_keys, create_app
    from metaal.loop import ActiveLearner

    assert class_keys([str(d) for d in range(10)]) == [str(d) for d in range(10)]
    assert class_keys(["3", "5", "7"]) == ["3", "5", "7"]  # ratings, digit classes with gaps
    assert class_keys(["ham", "spam"]) == ["1", "2"]
    assert class_keys([f"c{i}" for i in range(12)]) == [str(d) for d in range(1, 10)] + ["0", None, None]
    assert class_keys([str(d) for d in range(1, 11)])[-1] == "0"  # "10" is not one digit: button order

    digits = load_dataset("sklearn:digits")
    st = TestClient(create_app(ActiveLearner(digits, "margin", seed=0))).get("/api/state").json()
    assert st["classes"] == [str(d) for d in range(10)] and st["keys"] == st["classes"]
    st = TestClient(create_app(ActiveLearner(wine, "margin", seed=0))).get("/api/state").json()
    assert st["classes"] == ["class_0", "class_1", "class_2"] and st["keys"] == ["1", "2", "3"]


def test_api_export_zip(wine):
    """GET /api/export (the page's export button) downloads ActiveLearner.export's files as a zip:
    labels.csv holds the answers given through the page, report.json the progress."""
    import csv
    import io
    import json
    import zipfile

    from fastapi.testclient import TestClient

    from metaal.label_cli import create_app
    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine, "margin", seed=0)
    client = TestClient(create_app(al))
    assert 'id="export"' in client.get("/").text and 'href="/api/export"' in client.get("/").text
    st = client.get("/api/state").json()
    given = []
    for _ in range(3):
        item = st["item"]["id"]
        given.append((item, str(wine.classes[wine.y[item]])))
        st = client.post("/api/label", json={"id": item, "label": given[-1][1]}).json()
    r = client.get("/api/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="wine_labels.zip"'  # the dataset's name
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(zf.namelist()) == ["labels.csv", "labels.jsonl", "model.joblib", "report.json", "report.png"]
    rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode("utf-8"))))
    assert [(int(row["id"]), row["class"]) for row in rows] == given
    assert json.loads(zf.read("report.json"))["n_labeled"] == 3
    assert zf.read("report.png")[:4] == b"\x89PNG"


needs_browser = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the page tests of this module."""
    pytest.importorskip("selenium")
    driver = make_driver(tmp_path_factory.mktemp("profile"))
    yield driver
    driver.quit()


@contextmanager
def serving(al):
    """The labeling app of ``al`` on a free local port, served by uvicorn in a thread of this
    process (so the test sees the session's state directly); yields the page's URL."""
    import uvicorn

    from metaal.label_cli import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(al), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the labeling app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def page(driver, url: str):
    """Open ``url`` and wait until the page rendered its first state; returns ``(text, wait)``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)

    def text(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    driver.get(url)
    wait.until(lambda d: text("#session") != "")
    return text, wait


@needs_browser
@pytest.mark.slow
def test_page_progress_of_pool_skips_and_budget(browser, wine):
    """The page shows labeled of pool size ("x of N"), the skip count and the budget used."""
    from selenium.webdriver.common.by import By

    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine, "margin", seed=0, initial=3, budget=5)
    n = al.progress()["n_pool"]
    with serving(al) as url:
        text, wait = page(browser, url)
        assert text("#progress") == f"0 of {n} labeled · 0 skipped"
        assert text("#budget") == "budget: 0 of 5 labels after the initial set"
        for i in range(4):  # the initial set of 3, then one label the budget counts
            item = int(text("#item-id"))
            browser.find_element(By.ID, f"class-{wine.y[item]}").click()
            wait.until(lambda d, k=i + 1: text("#count") == str(k))
        skipped = int(text("#item-id"))
        browser.find_element(By.ID, "skip").click()
        wait.until(lambda d: text("#skipped") == "1")
        assert text("#progress") == f"4 of {n} labeled · 1 skipped"
        assert text("#budget") == "budget: 1 of 5 labels after the initial set"
    assert al.store.skipped() == [skipped] and al.n_labeled == 4


@needs_browser
@pytest.mark.slow
def test_page_export_button_downloads_the_zip(browser, wine):
    """The export button links to /api/export, and following it from the page gets the zip."""
    from selenium.webdriver.common.by import By

    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine, "margin", seed=0)
    with serving(al) as url:
        text, _ = page(browser, url)
        button = browser.find_element(By.ID, "export")
        assert button.text == "Export labels (zip)" and button.get_attribute("href") == url + "api/export"
        got = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(document.getElementById('export').href).then(async r => done("
            "[r.status, r.headers.get('content-type'), new Uint8Array(await r.arrayBuffer()).slice(0, 2).join(',')]))"
        )
    assert got == [200, "application/zip", "80,75"]  # "PK": a zip


@needs_browser
@pytest.mark.slow
def test_page_digit_keys_pick_the_class_of_that_name(browser, wine):
    """With digit class names (sklearn:digits) pressing 0 labels class "0" and 7 class "7", and
    the buttons show those keys; with other names 1-9 follow the button order (2: the second)."""
    from selenium.webdriver.common.by import By

    from metaal.data import load_dataset
    from metaal.loop import ActiveLearner

    al = ActiveLearner(load_dataset("sklearn:digits"), "margin", seed=0)
    with serving(al) as url:
        text, wait = page(browser, url)
        kbd = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#buttons kbd")]
        assert kbd == [str(d) for d in range(10)]
        assert text("#keys-help") == "Keys: 0 1 2 3 4 5 6 7 8 9 label the class of that name, s skip, u undo."
        assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#buttons button")][0] == "0 0"
        asked = []
        for i, key in enumerate(["0", "7"]):
            asked.append(int(text("#item-id")))
            browser.find_element(By.TAG_NAME, "body").send_keys(key)
            wait.until(lambda d, k=i + 1: text("#count") == str(k))
    assert [(i, lab) for _, i, lab, _ in al.store.labels()] == [(asked[0], 0), (asked[1], 7)]

    al = ActiveLearner(wine, "margin", seed=0)
    with serving(al) as url:
        text, wait = page(browser, url)
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#buttons kbd")] == ["1", "2", "3"]
        assert text("#keys-help") == "Keys: 1 2 3 label the classes in button order, s skip, u undo."
        item = int(text("#item-id"))
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        wait.until(lambda d: text("#count") == "1")
    assert [(i, lab) for _, i, lab, _ in al.store.labels()] == [(item, 1)]


@needs_browser
@pytest.mark.slow
def test_page_cv_estimate_without_held_out_set(browser, wine):
    """Without a held-out set the page shows the cross-validated estimate, named as such (and
    what it waits for before two classes have two labels each), and no learning curve."""
    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine.X, classes=[str(c) for c in wine.classes], seed=0)  # unlabeled data
    with serving(al) as url:
        text, wait = page(browser, url)
        assert "needs two labels in each of two classes" in text("#quality")
        assert "No held-out labels" in text("#curve")
        ids = [int(i) for c in range(3) for i in np.flatnonzero(wine.y == c)[:4]]
        al.teach(ids, [int(wine.y[i]) for i in ids])
        est = al.estimate()
        assert est["cv_folds"] == 4 and est["cv_accuracy"] is not None
        browser.refresh()
        wait.until(lambda d: text("#count") == "12")
        assert text("#quality").startswith(
            f"accuracy {100 * est['cv_accuracy']:.1f}% (estimate, 4-fold CV on the labels)"
        )
        assert f"mean confidence on the unlabeled items: {100 * est['mean_confidence']:.1f}%" in text("#quality")


@needs_browser
@pytest.mark.slow
def test_page_no_curve_yet_with_held_out_labels(browser, wine):
    """With a held-out set and no curve point yet the page says "No curve yet" (not "No held-out
    labels"); the first label draws the first point."""
    from selenium.webdriver.common.by import By

    from metaal.loop import ActiveLearner

    al = ActiveLearner(wine, "margin", seed=0)
    n_test = al.progress()["n_test"]
    with serving(al) as url:
        text, wait = page(browser, url)
        assert text("#curve") == f"No curve yet: each label adds a point, the accuracy on the {n_test} held-out items."
        assert text("#quality") == f"held-out accuracy - ({n_test} held-out items)"
        item = int(text("#item-id"))
        browser.find_element(By.ID, f"class-{wine.y[item]}").click()
        wait.until(lambda d: text("#count") == "1")
        assert browser.find_elements(By.CSS_SELECTOR, "#curve svg circle")
        acc = al.progress()["accuracy"]
        assert text("#quality") == f"held-out accuracy {100 * acc:.1f}% ({n_test} held-out items)"
