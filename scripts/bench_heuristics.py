#!/usr/bin/env python
"""Benchmark the uncertainty heuristics against random sampling with ``metaal compare``.

Runs ``metaal compare`` once over ~10 small shared tabular datasets (found along ``METAAL_DATA``)
with the default protocol (stratified 70/30 pool/test split, 10 random initial labels, logistic
regression, one query per step) and prints a table of mean AULC per dataset and strategy, the
mean over datasets, the mean rank and the number of datasets where each strategy beats random.

    METAAL_DATA=../shared/data python scripts/bench_heuristics.py --jobs 2 --out runs/bench_heuristics

The full run (10 datasets x 4 strategies x 5 seeds, budget 50) takes about 2-4 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATASETS = [
    "banknote",
    "breast_w",
    "vote",
    "saheart",
    "vertebral_column",
    "wheat_seeds",
    "ecoli",
    "glass",
    "balance_scale",
    "dermatology",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help="comma-separated dataset names")
    ap.add_argument("--strategies", default="random,margin,entropy,least_confident")
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--initial", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--learner", default="logreg")
    ap.add_argument("--out", default="runs/bench_heuristics")
    args = ap.parse_args(argv)

    datasets = [d for d in args.datasets.split(",") if d]
    cmd = [
        sys.executable, "-m", "metaal.cli", "compare",
        "--data", *datasets,
        "--strategies", args.strategies,
        "--budget", str(args.budget), "--initial", str(args.initial), "--seeds", str(args.seeds),
        "--learner", args.learner, "--jobs", str(args.jobs), "--out", args.out, "--no-progress",
    ]
    print("$ metaal " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"metaal compare failed with exit status {proc.returncode}", file=sys.stderr)
        return proc.returncode

    with open(Path(args.out) / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    aulc = {(r["dataset"], r["strategy"]): float(r["aulc_mean"]) for r in rows}
    rank = {(r["dataset"], r["strategy"]): float(r["mean_rank"]) for r in rows}

    w = max(12, *(len(n) for n in names))
    cw = max(10, *(len(s) for s in strategies))
    print(f"\nmean AULC over {args.seeds} seeds (budget {args.budget}, initial {args.initial}, {args.learner})")
    print("dataset".ljust(w) + "".join(s.rjust(cw + 2) for s in strategies))
    for ds in names:
        print(ds.ljust(w) + "".join(f"{aulc[(ds, s)]:.4f}".rjust(cw + 2) for s in strategies))
    print("-" * (w + (cw + 2) * len(strategies)))
    mean = {s: sum(aulc[(d, s)] for d in names) / len(names) for s in strategies}
    print("mean".ljust(w) + "".join(f"{mean[s]:.4f}".rjust(cw + 2) for s in strategies))
    mrank = {s: sum(rank[(d, s)] for d in names) / len(names) for s in strategies}
    print("mean rank".ljust(w) + "".join(f"{mrank[s]:.2f}".rjust(cw + 2) for s in strategies))
    if "random" in strategies:
        wins = {s: sum(aulc[(d, s)] > aulc[(d, "random")] for d in names) for s in strategies}
        print("beats random".ljust(w) + "".join(f"{wins[s]}/{len(names)}".rjust(cw + 2) for s in strategies))
        for s in strategies:
            if s != "random":
                verdict = "beats" if mean[s] > mean["random"] else "does NOT beat"
                print(f"{s} {verdict} random on mean AULC ({mean[s]:.4f} vs {mean['random']:.4f}, "
                      f"{mean[s] - mean['random']:+.4f})")
    print(f"\n{len(rows) * args.seeds} runs in {elapsed:.0f} s; files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
