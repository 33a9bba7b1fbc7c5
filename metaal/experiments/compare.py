"""``metaal compare``: run strategies on datasets over several seeds and report.

::

    metaal compare --data PATH.npz|NAME [PATH ...] --strategies random,margin,policy:default \\
        [--protocol standard|cold|batch|imbalanced] [--metric accuracy|macro_f1] [--cold-start random] \\
        [--splits SPLITS.json] [--budget 100] [--initial 10] [--seeds 5] [--learner logreg] \\
        [--batch-size 1] [--jobs 2] [--backend joblib|ray] [--stop-window 3] [--stop-threshold 0.99] \\
        --out DIR

Writes ``DIR/curves.csv``, ``DIR/summary.csv``, ``DIR/summary.json``, ``DIR/tb/<strategy>/`` and
``DIR/curves.png`` (see :mod:`metaal.experiments.report`), then prints a summary table. Every input
is checked before any cell runs; a mistake is one line ``metaal: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from metaal.data import load_splits
from metaal.errors import ConfigError
from metaal.experiments.report import format_table, write_report
from metaal.experiments.runner import (
    BACKENDS,
    check_cold_fallback,
    check_learner,
    check_size,
    check_strategies,
    load_datasets,
    prepare_tasks,
    resolve_jobs,
    run_cells,
)
from metaal.protocols import METRICS, PROTOCOLS, Protocol, resolve
from metaal.stopping import DEFAULT_THRESHOLD, DEFAULT_WINDOW, StabilizingPredictions
from metaal.strategies import COLD_FALLBACK, parse_list


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` parser to the ``metaal`` command."""
    p = subparsers.add_parser(
        "compare",
        help="compare query strategies on datasets (learning curves, AULC, ranks)",
        description=(
            "Run every strategy on every dataset for several seeds with a simulated oracle and "
            "write curves.csv, summary.csv/json, TensorBoard logs and curves.png into --out."
        ),
    )
    p.add_argument("--data", nargs="+", required=True, metavar="PATH|NAME",
                   help=".npz/.csv/.libsvm files, names found along METAAL_DATA, sklearn:NAME, or a synthetic "
                        "dataset synth:KIND?key=value&... (e.g. synth:blobs?n=500&d=5&sep=1.5&seed=3)")
    p.add_argument("--strategies", required=True, metavar="LIST",
                   help="comma-separated strategy names (random,margin,entropy,...,policy:PATH); "
                        "'all' = every registered heuristic")
    p.add_argument("--splits", metavar="SPLITS.json",
                   help="read pool/test/initial splits from JSON (one dataset only); "
                        "all its splits are used unless --seeds is given")
    add_protocol_arguments(p)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds 0..S-1 (5)")
    p.add_argument(
        "--learner",
        default="logreg",
        help="learner: logreg, torch_logreg (GPU when present), svm, rf, knn, gb (logreg)",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel workers, -1 for all cores (2)")
    p.add_argument("--backend", default="joblib", help="joblib (processes on this machine) or ray (joblib)")
    p.add_argument("--stop-window", type=int, default=DEFAULT_WINDOW,
                   help="stopping rule (stabilizing predictions): refits whose mean kappa is compared with "
                        f"--stop-threshold ({DEFAULT_WINDOW})")
    p.add_argument("--stop-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="stopping rule: the mean Cohen's kappa between successive models on the stop set at "
                        f"which it fires; summary.csv records the labels and accuracy there ({DEFAULT_THRESHOLD})")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip curves.png")
    p.set_defaults(func=run)
    return p


def add_protocol_arguments(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """``--protocol`` and the flags that override it (``metaal compare`` and ``metaal evaluate``)."""
    table = "; ".join(
        f"{q.name}: {q.initial} initial, budget {q.budget}, batch {q.batch_size}"
        + (f", imbalance {q.imbalance:g}" if q.imbalance else "") + f", {q.metric}"
        for q in PROTOCOLS.values()
    )
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help=f"a protocol by name ({table}); explicit flags override it (standard)")
    p.add_argument("--budget", type=int, default=None, help="labels to acquire after the initial set (protocol's: 100)")
    p.add_argument("--initial", type=int, default=None,
                   help="random initial labels holding two classes, or 0 for a cold start (protocol's: 10)")
    if batch:
        p.add_argument("--batch-size", type=int, default=None, help="labels per query step (protocol's: 1)")
    p.add_argument("--metric", default=None, metavar="METRIC",
                   help=f"{' or '.join(METRICS)}: headline metric for ranks and norm_aulc (protocol's: accuracy)")
    p.add_argument("--cold-start", default=COLD_FALLBACK, metavar="STRATEGY",
                   help="model-free strategy that picks for a model-based one until two classes are labeled "
                        f"(with --initial 0) ({COLD_FALLBACK})")


def apply_protocol(args: argparse.Namespace) -> Protocol:
    """Fill ``args.initial``, ``budget``, ``batch_size`` and ``metric`` from ``--protocol``
    where they were not given, check them, and return the protocol in force.

    :raises ConfigError: for an unknown protocol or a number out of range.
    """
    proto = resolve(args.protocol, args.initial, args.budget, getattr(args, "batch_size", None), args.metric)
    args.protocol = proto.name
    args.initial, args.budget, args.metric = proto.initial, proto.budget, proto.metric
    if hasattr(args, "batch_size"):
        args.batch_size = proto.batch_size
    for opt, val, low in (("--budget", args.budget, 1), ("--batch-size", proto.batch_size, 1)):
        if val < low:
            raise ConfigError(f"{opt} must be >= {low} (got {val})")
    if args.initial != 0 and args.initial < 2:
        raise ConfigError(f"--initial must be 0 (cold start) or >= 2 (got {args.initial})")
    check_cold_fallback(args.cold_start)
    return proto


def run(args: argparse.Namespace) -> int:
    """Validate everything, run the cells, write the reports and print the summary table."""
    # cheap checks first, so a typo never waits for a dataset to load
    if args.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {args.backend!r} (use {' or '.join(BACKENDS)})")
    proto = apply_protocol(args)
    args.jobs = resolve_jobs(args.jobs)
    StabilizingPredictions(args.stop_window, args.stop_threshold)  # a bad window or threshold: one line
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {args.seeds})")
    if args.seeds is not None:
        check_size(len(args.data), len(parse_list(args.strategies)), args.seeds)
    strategies = check_strategies(args.strategies)
    check_learner(args.learner)
    if args.splits and len(args.data) != 1:
        raise ConfigError(f"--splits works with exactly one dataset (got {len(args.data)}: {' '.join(args.data)})")

    datasets = proto.apply(load_datasets(args.data))
    splits = None
    seeds = args.seeds if args.seeds is not None else 5
    if args.splits:
        name, splits = load_splits(args.splits, datasets[0])
        if name and name != datasets[0].name:
            print(f"metaal: warning: {args.splits} was written for dataset {name!r}, "
                  f"using it with {datasets[0].name!r}", file=sys.stderr)
        if args.seeds is not None:
            if args.seeds > len(splits):
                raise ConfigError(f"--seeds {args.seeds} but {args.splits} holds {len(splits)} split(s)")
            splits = splits[: args.seeds]
    prepare_tasks(datasets, seeds, args.budget, args.initial, splits)  # budget / split checks, cheap

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    curves = run_cells(
        datasets, strategies, seeds=seeds, budget=args.budget, initial=args.initial,
        learner=args.learner, batch_size=args.batch_size, jobs=args.jobs, backend=args.backend,
        splits=splits, progress=not args.no_progress,
        stop_window=args.stop_window, stop_threshold=args.stop_threshold,
        cold_fallback=args.cold_start, metric=args.metric,
    )
    arguments = {k: v for k, v in vars(args).items() if k != "func"}
    arguments["strategies"] = strategies
    arguments["seeds"] = sorted({int(c.seed) for c in curves})
    rep = write_report(curves, out, arguments, plot=not args.no_plot, metric=args.metric)
    print(format_table(rep["rows"]))
    print()
    print(f"curves:      {rep['curves_csv']}")
    print(f"summary:     {rep['summary_csv']}")
    if rep["plot"] is not None:
        print(f"plot:        {rep['plot']}")
    print(f"tensorboard: tensorboard --logdir {rep['tb']}")
    return 0
