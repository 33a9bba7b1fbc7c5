#!/usr/bin/env python
"""The protocol table: one ``metaal evaluate --protocol NAME`` run per protocol, side by side.

Reads the ``results.json`` of each evaluation folder given and prints a Markdown section per
protocol: for every strategy the mean AULC (macro-F1 AULC for ``imbalanced``), the mean and the
median over datasets of ``norm_aulc`` (where ``random`` and ``oracle`` ran; the median is not
swayed by a dataset where the oracle is barely above random and the ratio explodes), the mean
rank, W/T/L against margin (paired Wilcoxon over the seeds, p < 0.05) and seconds per query;
then one line naming the best strategy that does not read test labels (by mean AULC) and the
dataset where the policy is furthest below margin.

    python scripts/protocol_table.py runs/eval_cold runs/eval_batch runs/eval_imbalanced > table.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def section(res: dict) -> list[str]:
    proto, metric = res.get("protocol", "standard"), res.get("metric", "accuracy")
    what = "macro-F1 AULC" if metric == "macro_f1" else "AULC"
    (budget, r), *_ = res["budgets"].items()
    agg, per = r["aggregate"], r["per_dataset"]
    lines = [f"### `{proto}`: budget {budget}, batch {res.get('batch_size', 1)}, initial {res['initial']}, "
             f"{res['seeds']} seeds, {len(res['datasets'])} datasets, learner `{res['learner']}`", "",
             f"| strategy | mean {what} | mean norm AULC | median norm AULC | mean rank | vs margin W/T/L | s/query |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(agg, key=lambda s: -agg[s]["mean_aulc"])
    for s in order:
        a = agg[s]
        nrm = f"{a['mean_norm_aulc']:.3f}" if "mean_norm_aulc" in a else "-"
        norms = [per[d][s]["norm_aulc"] for d in per if per[d].get(s, {}).get("norm_aulc") is not None]
        med = f"{statistics.median(norms):.3f}" if norms else "-"
        wtl = "-" if s == "margin" else f"{a['wins']}/{a['ties']}/{a['losses']}"
        lines.append(f"| {s} | {a['mean_aulc']:.4f} | {nrm} | {med} | {a['mean_rank']:.2f} | {wtl} | "
                     f"{a.get('query_seconds', float('nan')):.4f} |")
    fair = [s for s in order if s != "oracle"]
    best = fair[0]
    lines += ["", f"Best strategy that does not read test labels: **{best}** (mean {what} {agg[best]['mean_aulc']:.4f}"
              + (f", margin {agg['margin']['mean_aulc']:.4f}" if "margin" in agg and best != "margin" else "") + ")."]
    pol = res["policy"]
    if pol in agg and "margin" in agg:
        worst = min(per, key=lambda n: per[n][pol]["aulc"] - per[n]["margin"]["aulc"])
        d = per[worst][pol]["aulc"] - per[worst]["margin"]["aulc"]
        lines.append(f"The policy's worst dataset against margin: {worst} ({d:+.4f}).")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="metaal evaluate output folders (each with results.json)")
    args = ap.parse_args(argv)
    out: list[str] = []
    for folder in args.folders:
        path = Path(folder) / "results.json"
        if not path.is_file():
            print(f"protocol_table: error: {path} not found (run metaal evaluate --protocol ... --out {folder})",
                  file=sys.stderr)
            return 2
        out += section(json.loads(path.read_text()))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
