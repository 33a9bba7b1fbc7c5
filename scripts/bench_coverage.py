#!/usr/bin/env python
"""Cold start: the model-free strategies (typiclust, probcover, maxherding) against random from zero labels.

For every dataset and seed: the default protocol's stratified 70/30 pool/test split
(``make_split``), **no initial labels**, then ``--budget`` queries of ``--batch-size`` with
LogisticRegression(max_iter=1000) refitted after each (before two classes are labeled the learner
predicts the smoothed label frequencies). Prints per dataset and strategy the mean AULC over the
seeds with its standard error, the accuracy at the budget and the strategy's seconds per query
(selection only, the refit excluded). One BLAS thread.

    METAAL_DATA=../shared/data python scripts/bench_coverage.py --data woodknots_resnet18 sklearn:digits \\
        --budget 30 --seeds 10
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from threadpoolctl import threadpool_limits

from metaal.data import load_dataset, make_split
from metaal.loop import simulate
from metaal.state import Task

DATASETS = ["woodknots_resnet18", "wiki_detox_embed", "sklearn:digits"]
STRATEGIES = ["random", "typiclust", "probcover", "maxherding", "coreset"]


def cold_task(ds, seed: int) -> Task:
    """The default protocol's split for ``seed`` with an empty initial set."""
    task = Task.from_split(ds, make_split(ds, seed, n_initial=2))
    return dataclasses.replace(task, initial=np.zeros(0, dtype=np.int64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=DATASETS)
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=1)
    args = ap.parse_args()
    if args.seeds < 1 or args.budget < 1 or args.batch_size < 1:
        ap.error("--seeds, --budget and --batch-size must be >= 1")
    print(f"cold start (0 initial labels) budget={args.budget} batch_size={args.batch_size} seeds={args.seeds}")
    header = (
        f"{'dataset':<24} {'pool':>6} {'d':>5} {'C':>3} {'strategy':<12} "
        f"{'AULC':>7} {'+-se':>7} {'final':>7} {'s/query':>8}"
    )
    print(header)
    print("-" * len(header))
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        for name in args.data:
            ds = load_dataset(name)
            tasks = [cold_task(ds, s) for s in range(args.seeds)]
            t = tasks[0]
            for strat in args.strategies:
                curves = [
                    simulate(task, strat, args.budget, batch_size=args.batch_size, seed=task.seed) for task in tasks
                ]
                aulc = np.array([c.aulc for c in curves])
                final = np.mean([c.final_accuracy for c in curves])
                spq = np.mean([c.seconds_per_query for c in curves])
                se = aulc.std(ddof=1) / np.sqrt(len(aulc)) if len(aulc) > 1 else float("nan")
                print(
                    f"{ds.name:<24} {t.n_pool:>6} {t.X_pool.shape[1]:>5} {t.n_classes:>3} {strat:<12} "
                    f"{aulc.mean():>7.4f} {se:>7.4f} {final:>7.4f} {spq:>8.4f}",
                    flush=True,
                )
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
