#!/usr/bin/env python
"""Learned policies against margin and the protocol's best fixed heuristic, per protocol.

Reads the ``curves.csv`` of ``metaal evaluate`` runs (one folder per protocol, or several runs of
one protocol over the same datasets and seeds: a new policy evaluated alone is compared with
the heuristics of an earlier, larger run; the runs' splits are the same for the same seeds) and
prints, per protocol and learner, one Markdown table: for each learned policy, margin, the best
fixed heuristic (by mean headline AULC; never the oracle or a policy), random and the oracle,
the mean headline AULC (macro-F1 for ``imbalanced``), the mean and median ``norm_aulc``
(``(AULC - random) / (oracle - random)`` per dataset), W/T/L against margin and against the
best heuristic (paired Wilcoxon over seeds, p < 0.05), datasets above random, the worst dataset
against margin and how often a guard deferred to margin. Only (dataset, seed) pairs present for
every strategy shown are used.

    python scripts/policy_table.py runs/proto_cold runs/v2_cold runs/proto_batch runs/v2_batch
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from metaal.experiments.evaluate import paired_test


def read_run(folder: Path) -> tuple[dict, dict[tuple[str, str, int], float], dict[str, float]]:
    """``(results.json, {(dataset, strategy, seed): headline AULC}, {strategy: guard picks mean})``
    of one evaluate folder, at its largest budget (a run over several budgets has a subfolder each)."""
    res = json.loads((folder / "results.json").read_text())
    metric = res.get("metric", "accuracy")
    col = "macro_f1" if metric == "macro_f1" else "accuracy"
    points: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    guard: dict[str, list[float]] = defaultdict(list)
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / "curves.csv").is_file()]
    budget = {p: int(m.group(1)) if (m := re.search(r"_b(\d+)$", p.name)) else 0 for p in subs}
    top = max(budget.values(), default=0)
    for sub in sorted(p for p in subs if budget[p] == top):  # the largest budget's curves only
        with open(sub / "curves.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                points[(row["dataset"], row["strategy"], int(row["seed"]))].append(float(row[col]))
        summary = sub / "summary.csv"
        if summary.is_file():
            with open(summary, newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("guard_picks_mean") not in (None, ""):
                        guard[row["strategy"]].append(float(row["guard_picks_mean"]))
    return res, {k: float(np.mean(v)) for k, v in points.items()}, {s: float(np.mean(v)) for s, v in guard.items()}


def table(key: tuple[str, str], runs: list[tuple[dict, dict, dict]]) -> list[str]:
    proto, learner = key
    aulc: dict[tuple[str, str, int], float] = {}
    guard: dict[str, float] = {}
    res0 = runs[0][0]
    for _res, a, g in runs:
        aulc.update(a)
        guard.update(g)
    strategies = sorted({s for _d, s, _k in aulc})
    policies = [s for s in strategies if s.startswith("policy:")]
    fixed = [s for s in strategies if not s.startswith("policy:") and s not in ("oracle", "random")]
    datasets = sorted({d for d, _s, _k in aulc})
    seeds = sorted({k for _d, _s, k in aulc})

    def cells(s: str) -> dict[str, np.ndarray]:
        return {d: np.array([aulc.get((d, s, k), np.nan) for k in seeds]) for d in datasets}

    per = {s: cells(s) for s in strategies}
    ok = {d: np.all([~np.isnan(per[s][d]) for s in policies + ["margin"]], axis=0) for d in datasets}

    def mean(s: str) -> float:
        return float(np.mean([per[s][d][ok[d]].mean() for d in datasets if ok[d].any()]))

    best = max(fixed, key=mean)
    show = policies + ["margin"] + ([best] if best != "margin" else []) + [s for s in ("random", "oracle") if s in per]
    what = "macro-F1 AULC" if res0.get("metric") == "macro_f1" else "AULC"
    n_seeds = int(min(ok[d].sum() for d in datasets))
    lines = [f"### `{proto}`, learner `{learner}`: {len(datasets)} datasets, {n_seeds} seeds; best fixed heuristic "
             f"**{best}**", "",
             f"| strategy | mean {what} | mean / median norm AULC | vs margin W/T/L | vs {best} W/T/L | above random "
             "| worst vs margin | guard picks / run |", "|---|---|---|---|---|---|---|---|"]
    for s in show:
        norms = []
        if "random" in per and "oracle" in per:
            for d in datasets:
                m = ok[d]
                r, o = per["random"][d][m].mean(), per["oracle"][d][m].mean()
                if o > r:
                    norms.append((per[s][d][m].mean() - r) / (o - r))
        nrm = f"{np.mean(norms):.3f} / {statistics.median(norms):.3f}" if norms else "-"

        def wtl(ref: str, s: str = s) -> str:
            if s == ref:
                return "-"
            out = [paired_test(per[s][d][ok[d]], per[ref][d][ok[d]])[0] for d in datasets]
            return f"{out.count('win')}/{out.count('tie')}/{out.count('loss')}"

        above = "-"
        if "random" in per and s != "random":
            above = f"{sum(per[s][d][ok[d]].mean() > per['random'][d][ok[d]].mean() for d in datasets)}/{len(datasets)}"
        worst = "-"
        if s != "margin" and s != "oracle":
            diffs = {d: per[s][d][ok[d]].mean() - per["margin"][d][ok[d]].mean() for d in datasets}
            w = min(diffs, key=lambda d: diffs[d])
            worst = f"{w} {diffs[w]:+.3f}"
        g = f"{guard[s]:.1f}" if s in guard and s.startswith("policy:") else "-"
        lines.append(f"| {s} | {mean(s):.4f} | {nrm} | {wtl('margin')} | {wtl(best)} | {above} | {worst} | {g} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="metaal evaluate output folders (results.json + curves.csv)")
    args = ap.parse_args(argv)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for f in args.folders:
        folder = Path(f)
        if not (folder / "results.json").is_file():
            print(f"policy_table: {folder} holds no results.json (not a metaal evaluate folder)", file=sys.stderr)
            return 2
        run = read_run(folder)
        groups[(run[0].get("protocol", "standard"), run[0]["learner"])].append(run)
    out: list[str] = []
    for key, runs in groups.items():
        out += table(key, runs)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
