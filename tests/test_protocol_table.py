"""scripts/protocol_table.py on a real (small) evaluation: one row per strategy, W/T/L against
margin, the median norm AULC, the best strategy that does not read test labels."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from metaal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _table_module():
    spec = importlib.util.spec_from_file_location("protocol_table", ROOT / "scripts" / "protocol_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_protocol_table_from_a_cold_evaluation(tmp_path, capsys) -> None:
    out = tmp_path / "cold"
    assert main(["evaluate", "--protocol", "cold", "--budget", "8", "--data", "sklearn:wine", "sklearn:iris",
                 "--strategies", "random,margin,typiclust,oracle", "--seeds", "2", "--jobs", "1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    table = _table_module()
    assert table.main([str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert {"random", "margin", "typiclust", "oracle", "policy:default"} <= set(rows)
    (budget, r), = res["budgets"].items()
    per = r["per_dataset"]
    med = sorted(per[d]["typiclust"]["norm_aulc"] for d in per)
    assert f"| {sum(med) / 2:.3f} |" in rows["typiclust"]  # two datasets: the median is the mean
    assert rows["random"].split("|")[4].strip() == "0.000" and rows["oracle"].split("|")[4].strip() == "1.000"
    fair = max((s for s in r["aggregate"] if s != "oracle"), key=lambda s: r["aggregate"][s]["mean_aulc"])
    assert f"Best strategy that does not read test labels: **{fair}**" in text
    assert table.main([str(tmp_path / "missing")]) == 2
    # scripts/policy_table.py: a policy evaluated alone, set beside the heuristics of the run above
    # (same datasets and seeds, hence the same splits); a policy guarded into margin ties margin
    out2 = tmp_path / "cold_guard"
    assert main(["evaluate", "--protocol", "cold", "--budget", "8", "--data", "sklearn:wine", "sklearn:iris",
                 "--policy", "default?guard=0.999", "--strategies", "margin", "--seeds", "2", "--jobs", "1",
                 "--out", str(out2),
                 "--no-progress"]) == 0
    capsys.readouterr()
    spec = importlib.util.spec_from_file_location("policy_table", ROOT / "scripts" / "policy_table.py")
    ptab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ptab)
    assert ptab.main([str(out), str(out2)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert {"policy:default", "policy:default?guard=0.999", "margin", "random", "oracle"} <= set(rows)
    guarded = rows["policy:default?guard=0.999"]
    assert guarded[1] == rows["margin"][1] and guarded[3] == "0/2/0"  # the same AULC as margin, two ties
    assert guarded[6].endswith("+0.000") and float(guarded[7]) > 0  # worst dataset: no loss; the guard fired
    assert rows["oracle"][2].startswith("1.000") and rows["random"][2].startswith("0.000")
    assert ptab.main([str(tmp_path / "missing")]) == 2
