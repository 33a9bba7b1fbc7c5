"""Answer-to-next-item time of the labeling session (``metaal label``) at growing pool sizes.

For each size ``n`` and strategy a session (:class:`metaal.loop.ActiveLearner`, a SQLite store in
a temporary folder, seed 0, 10 initial labels, the default protocol's split of
``synth:blobs?n=N&d=20&sep=1.0&seed=1``) is answered from the dataset's labels, as ``metaal label
--oracle y`` answers it: the cold start, ``--warmup`` answers, then ``--answers`` measured ones.
Measured per answer: the time from the answer (:meth:`ActiveLearner.teach`) to the next item
(:meth:`ActiveLearner.query_items` returns it), what a person waits; and, where the session has
it, the work the answer left for later (held-out evaluation, curve point, checkpoint, stopping
rule: :meth:`ActiveLearner.flush` right after the next item, i.e. a person who answers at once;
one who thinks for longer than that never waits for it). Printed: median and 90th percentile.

It measures whatever ``metaal`` it imports, so the code before a change can be measured with the
same script (``PYTHONPATH=/path/to/old/checkout python scripts/bench_label_latency.py``).

    python scripts/bench_label_latency.py --sizes 20000,200000,1000000 --answers 30
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from metaal.data import load_dataset
from metaal.loop import ActiveLearner


def bench_one(data: object, strategy: str, answers: int, warmup: int, initial: int, store: Path,
              **session: object) -> dict:
    """Answer one session; returns the per-answer latencies and after-answer times (ms)."""
    al = ActiveLearner(data, strategy=strategy, seed=0, initial=initial, budget=answers + warmup + 1,
                       store=store, **session)
    y = al.dataset.y
    flush = getattr(al, "flush", None)  # absent before the after-answer work existed
    item = al.query_items(1)[0]
    while al.cold_start:
        al.teach([item.id], [int(y[item.id])])
        if flush is not None:
            flush()
        item = al.query_items(1)[0]
    lat, after = [], []
    for i in range(warmup + answers):
        t0 = time.perf_counter()
        al.teach([item.id], [int(y[item.id])])
        items = al.query_items(1)
        t1 = time.perf_counter()
        if flush is not None:
            flush()
        t2 = time.perf_counter()
        if i >= warmup:
            lat.append((t1 - t0) * 1e3)
            after.append((t2 - t1) * 1e3)
        if not items:
            break
        item = items[0]
    al.store.close()
    return {"pool": al.state.n_pool, "latency_ms": lat, "after_ms": after if flush is not None else []}


def summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{np.median(xs):7.1f} / {np.percentile(xs, 90):7.1f}"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20000,200000,1000000",
                   help="dataset rows n (comma list; 70%% of them in the pool)")
    p.add_argument("--strategies", default="margin,policy:default")
    p.add_argument("--answers", type=int, default=30, help="measured answers per session")
    p.add_argument("--warmup", type=int, default=3, help="answers after the cold start not measured")
    p.add_argument("--initial", type=int, default=10)
    p.add_argument("--session", default="{}", help='extra ActiveLearner arguments as JSON, e.g. \'{"prefetch": true}\'')
    p.add_argument("--label", default="", help="a name for this run in the table (e.g. before, after)")
    p.add_argument("--json", default=None, help="write the rows (every measurement) to this file")
    args = p.parse_args(argv)
    session = json.loads(args.session)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"session {session or 'default'}", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        t0 = time.perf_counter()
        data = load_dataset(f"synth:blobs?n={n}&d=20&sep=1.0&seed=1")
        print(f"n={n}: data in {time.perf_counter() - t0:.1f} s", flush=True)
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                r = bench_one(data, name, args.answers, args.warmup, args.initial, Path(tmp) / "s.sqlite", **session)
            r.update(n=n, strategy=name, label=args.label, session=session, load=os.getloadavg()[0])
            rows.append(r)
            print(f"  {name:<16} answer->next item {summary(r['latency_ms'])} ms (median / p90), "
                  f"after-answer work {summary(r['after_ms'])} ms; session {time.perf_counter() - t0:.0f} s",
                  flush=True)
    print(f"\n| rows (pool) | strategy | {args.label + ': ' if args.label else ''}answer -> next item, "
          "median / p90 ms | after-answer work, median / p90 ms |")
    print("|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} ({r['pool']:,}) | {r['strategy']} | {summary(r['latency_ms']).strip()} | "
              f"{summary(r['after_ms']).strip()} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
