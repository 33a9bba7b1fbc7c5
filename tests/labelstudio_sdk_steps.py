"""Label Studio steps through label-studio-sdk, for tests/test_labelstudio.py.

Runs under the Python that has ``label-studio-sdk`` (Label Studio's own virtual environment: the
SDK pins numpy below metaal's), as ``python labelstudio_sdk_steps.py URL API_KEY``. It reads one
JSON command per line on stdin and answers one JSON line on stdout:

* ``{"do": "setup", "tasks": PATH, "config": PATH, "backend": URL}`` -> ``{"project", "tasks":
  {metaal_id: task_id}, "ml_backend"}``: creates a project, imports the tasks, connects the backend.
* ``{"do": "annotate", "task": ID, "label": NAME, "from_name": .., "to_name": ..}`` -> ``{"annotation"}``.
* ``{"do": "refresh", "project": ID}`` -> ``{"model_version"}``: the data manager's "Delete
  predictions" then "Retrieve predictions" actions on all tasks, then the project shows the
  backend's current model version.
* ``{"do": "order", "project": ID}`` -> ``{"tasks": [{"id", "metaal_id", "score", "choice",
  "model_version", "annotated"}]}`` in the data manager's order by prediction score, descending.
"""
from __future__ import annotations

import json
import sys
import traceback


def main() -> None:
    from label_studio_sdk import LabelStudio

    url, key = sys.argv[1], sys.argv[2]
    ls = LabelStudio(base_url=url, api_key=key, timeout=120)

    def setup(cmd: dict) -> dict:
        with open(cmd["config"], encoding="utf-8") as fh:
            config = fh.read()
        with open(cmd["tasks"], encoding="utf-8") as fh:
            tasks = json.load(fh)
        project = ls.projects.create(title=cmd.get("title", "metaal"), label_config=config)
        ls.projects.import_tasks(id=project.id, request=tasks)
        ml = ls.ml.create(url=cmd["backend"], project=project.id, title="metaal", auto_update=True)
        ids = {}
        for t in ls.tasks.list(project=project.id, page_size=1000):
            ids[str(t.data["metaal_id"])] = t.id
        return {"project": project.id, "tasks": ids, "ml_backend": ml.id}

    def annotate(cmd: dict) -> dict:
        region = {
            "from_name": cmd.get("from_name", "label"),
            "to_name": cmd.get("to_name", "text"),
            "type": "choices",
            "value": {"choices": [cmd["label"]]},
        }
        ann = ls.annotations.create(id=cmd["task"], result=[region], was_cancelled=False)
        return {"annotation": ann.id}

    def refresh(cmd: dict) -> dict:
        pid = cmd["project"]
        everything = {"all": True, "excluded": []}
        ls.actions.create(id="delete_tasks_predictions", project=pid, selected_items=everything)
        ls.actions.create(id="retrieve_tasks_predictions", project=pid, selected_items=everything)
        backends = list(ls.ml.list(project=pid))
        version = backends[0].model_version if backends else None
        if version:
            ls.projects.update(id=pid, model_version=version)
        return {"model_version": version}

    def order(cmd: dict) -> dict:
        query = json.dumps({"ordering": ["-tasks:predictions_score"]})
        out = []
        for t in ls.tasks.list(project=cmd["project"], query=query, fields="all", page_size=1000):
            d = t.dict() if hasattr(t, "dict") else dict(t)
            preds = d.get("predictions") or []
            choice, version = None, None
            if preds:
                p = preds[-1]
                version = p.get("model_version")
                res = p.get("result") or []
                if res:
                    choice = res[0]["value"]["choices"][0]
            out.append({
                "id": d["id"],
                "metaal_id": d["data"]["metaal_id"],
                "score": d.get("predictions_score"),
                "choice": choice,
                "model_version": version,
                "annotated": bool(d.get("total_annotations") or d.get("annotations")),
            })
        return {"tasks": out}

    steps = {"setup": setup, "annotate": annotate, "refresh": refresh, "order": order}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            ans = steps[cmd["do"]](cmd)
        except Exception as exc:  # noqa: BLE001  (reported to the test, which fails with it)
            ans = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        print(json.dumps(ans), flush=True)


if __name__ == "__main__":
    main()
