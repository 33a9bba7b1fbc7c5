"""Query cost of a learned policy against margin sampling, side by side, at growing pool sizes.

For each size ``n`` one task (``synth:blobs?n=N&d=20&sep=1.0&seed=1``, the default protocol's
split with seed 0, 10 initial labels) is labeled for ``--budget`` queries by each strategy through
:func:`metaal.loop.simulate`, and the mean seconds per query (``Curve.seconds_per_query``: the
strategy's ``select`` only, as ``metaal compare`` reports it) are printed with their ratio. The
learned policy's first query includes its one-time pool geometry (distance scale, densities).

    python scripts/bench_query.py --sizes 2000,100000,1000000 --budget 30
"""
from __future__ import annotations

import argparse
import os
import platform
import time

from metaal.data import load_dataset, make_split
from metaal.loop import simulate
from metaal.state import Task


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000,100000,1000000", help="pool sizes n (comma list)")
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--strategies", default="margin,policy:default", help="first one is the reference")
    p.add_argument("--repeats", type=int, default=1, help="runs per strategy (the fastest is kept)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        t0 = time.perf_counter()
        data = load_dataset(f"synth:blobs?n={n}&d=20&sep=1.0&seed=1")
        task = Task.from_split(data, make_split(data, seed=0, n_initial=10))
        print(f"n={n}: task ready in {time.perf_counter() - t0:.1f} s (pool {task.n_pool})", flush=True)
        per = {}
        for name in names:
            best = min(
                simulate(task, name, budget=args.budget, seed=0).seconds_per_query for _ in range(args.repeats)
            )
            per[name] = best
            print(f"  {name:<16} {best * 1e3:9.2f} ms per query", flush=True)
        ref = per[names[0]]
        for name in names[1:]:
            rows.append({"n": n, "strategy": name, "ms": per[name] * 1e3, "ref_ms": ref * 1e3,
                         "ratio": per[name] / ref})
    print(f"\n| pool rows | {names[0]} ms/query | strategy | ms/query | ratio |")
    print("|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['ref_ms']:.2f} | {r['strategy']} | {r['ms']:.2f} | {r['ratio']:.1f}x |")
    return rows


if __name__ == "__main__":
    main()
