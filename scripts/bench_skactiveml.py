#!/usr/bin/env python
"""metaal vs scikit-activeml on identical splits: AULC per dataset and method.

For every dataset, method and seed: the default protocol split (``make_split``), the same
standardized features and LogisticRegression(max_iter=1000); metaal's ``simulate`` and
scikit-activeml's pool loop (:func:`metaal.experiments.skactiveml_ref.run_skactiveml`). Prints a
table: dataset, method, metaal AULC, skactiveml AULC (means over seeds), their difference and the
largest per-seed difference. ``random`` uses each library's own random stream, so only its mean
is comparable. ``--batch-size`` queries that many labels per step in both libraries (the batch
variants).

    METAAL_DATA=../shared/data python scripts/bench_skactiveml.py --seeds 20 --budget 50
    METAAL_DATA=../shared/data python scripts/bench_skactiveml.py --methods xpal eer falcun dropquery \
        --data sklearn:wine sklearn:breast_cancer vertebral_column --seeds 5 --budget 30
    METAAL_DATA=../shared/data python scripts/bench_skactiveml.py --methods typiclust probcover maxherding \
        --data sklearn:wine woodknots_resnet18 sklearn:digits --seeds 5 --budget 40
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from metaal import strategies
from metaal.data import load_dataset, make_split
from metaal.experiments.skactiveml_ref import run_skactiveml
from metaal.loop import simulate
from metaal.state import Task

DATASETS = ["sklearn:breast_cancer", "sklearn:wine", "banknote", "vote", "vertebral_column"]
METHODS = ["random", "least_confident", "margin", "entropy"]
#: rows that run a metaal strategy with arguments against a scikit-activeml method:
#: row name -> (metaal strategy, its arguments, scikit-activeml method of run_skactiveml)
VARIANTS: dict[str, tuple[str, dict, str]] = {
    "dropquery_sk": ("dropquery", {"n_dropout": 5, "rescale": False}, "dropquery"),  # skactiveml's defaults
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=DATASETS)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--initial", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1, help="labels per query in both libraries")
    args = ap.parse_args()
    if args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1 (got {args.batch_size})")
    header = (
        f"{'dataset':<22} {'method':<16} {'metaal AULC':>12} {'skactiveml AULC':>16} {'diff':>8} {'max |diff|':>11}"
    )
    print(
        f"seeds={args.seeds} budget={args.budget} initial={args.initial} batch={args.batch_size} "
        "learner=LogisticRegression(max_iter=1000)"
    )
    print(header)
    print("-" * len(header))
    t0 = time.perf_counter()
    for name in args.data:
        ds = load_dataset(name)
        tasks = [Task.from_split(ds, make_split(ds, s, n_initial=args.initial)) for s in range(args.seeds)]
        for method in args.methods:
            b = args.batch_size
            name, kwargs, sk_method = VARIANTS.get(method, (method, {}, method))
            ours = np.array([
                simulate(t, strategies.get(name, **kwargs), args.budget, seed=t.seed, batch_size=b).aulc
                for t in tasks
            ])
            ref = np.array([float(np.mean(run_skactiveml(t, sk_method, args.budget, t.seed, b))) for t in tasks])
            d = ours - ref
            print(
                f"{ds.name:<22} {method:<16} {ours.mean():>12.4f} {ref.mean():>16.4f} "
                f"{d.mean():>+8.4f} {np.abs(d).max():>11.4f}",
                flush=True,
            )
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
