#!/usr/bin/env python
"""Seconds per query of every registered heuristic on large pools.

For each dataset (default: shared ``waveform``, 5,000 rows x 21 features, 2 classes, and
``optdigits``, 5,620 x 62, 10 classes) one split with ``--test-size`` (default 0.1, so the pools
hold about 4,500 and 5,000 items), 10 initial labels, a logistic regression, and ``--budget``
(default 100) single-item queries. Prints the mean time of ``select`` per query (refits and
evaluations excluded) and the AULC of that one run.

    METAAL_DATA=../shared/data python scripts/bench_strategies.py
"""
from __future__ import annotations

import argparse

from metaal import strategies
from metaal.data import load_dataset, make_split
from metaal.loop import simulate
from metaal.state import Task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["waveform", "optdigits"])
    ap.add_argument("--strategies", default="all")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--test-size", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = strategies.parse_list(args.strategies)
    header = f"{'dataset':<12} {'pool':>6} {'C':>3} {'strategy':<16} {'s/query':>9} {'AULC':>7}"
    print(f"budget={args.budget} initial=10 learner=logreg seed={args.seed}")
    print(header)
    print("-" * len(header))
    for name in args.data:
        ds = load_dataset(name)
        task = Task.from_split(ds, make_split(ds, args.seed, n_initial=10, test_size=args.test_size))
        for s in names:
            c = simulate(task, s, args.budget, seed=args.seed)
            print(
                f"{ds.name:<12} {task.n_pool:>6} {task.n_classes:>3} {s:<16} "
                f"{c.seconds_per_query:>9.4f} {c.aulc:>7.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
