"""A PNG of Label Studio's data manager, tasks sorted by metaal's prediction score (docs/labelstudio.png).

Needs a running Label Studio with a project connected to ``metaal labelstudio`` and predictions
retrieved (see docs/labeling.md), headless Chromium and selenium::

    python scripts/labelstudio_screenshot.py --url http://127.0.0.1:8080 --token TOKEN --project 1 \
        --email you@example.com --password PASSWORD --out docs/labelstudio.png
"""
from __future__ import annotations

import argparse
import json
import time
import urllib.request


def api(url: str, token: str, path: str, payload: dict | None = None, method: str = "GET") -> dict:
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=None if payload is None else json.dumps(payload).encode(),
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--out", default="docs/labelstudio.png")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = p.parse_args()

    # a data-manager tab ordered by prediction score, highest first
    hidden = [f"tasks:{c}" for c in (
        "inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators", "annotations_ids",
        "file_upload", "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time",
        "draft_exists", "comment_count", "unresolved_comment_count", "comment_authors", "predictions_model_versions",
        "annotations_results", "ground_truth", "reviewed", "reviewers", "agreement", "state")]
    for v in api(a.url, a.token, f"/api/dm/views/?project={a.project}"):  # an earlier run's tab
        if v.get("data", {}).get("title") == "metaal ranking":
            api(a.url, a.token, f"/api/dm/views/{v['id']}/", method="DELETE")
    api(a.url, a.token, "/api/dm/views/", {"project": a.project, "data": {
        "title": "metaal ranking", "ordering": ["-tasks:predictions_score"],
        "hiddenColumns": {"explore": hidden, "labeling": hidden}, "columnsDisplayType": {},
        "columnsWidth": {"tasks:predictions_results": 520, "tasks:data.text": 420},
        "filters": {"conjunction": "and", "items": []}}}, "POST")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,820", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
    try:
        driver.get(a.url.rstrip("/") + "/user/login/")
        driver.find_element(By.NAME, "email").send_keys(a.email)
        driver.find_element(By.NAME, "password").send_keys(a.password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        time.sleep(3)
        views = api(a.url, a.token, f"/api/dm/views/?project={a.project}")
        view = max(v["id"] for v in views) if isinstance(views, list) else ""
        driver.get(f"{a.url.rstrip('/')}/projects/{a.project}/data?tab={view}")
        time.sleep(8)
        driver.save_screenshot(a.out)
    finally:
        driver.quit()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
