"""Reports of a comparison: CSV tables, JSON summary, TensorBoard scalars, a plot, a text table.

Files (DESIGN.md, "Command line and files"):

* ``curves.csv``: one row per point of every curve, :data:`~metaal.experiments.runner.CURVE_COLUMNS`.
* ``summary.csv`` / ``summary.json``: one row per (dataset, strategy),
  :data:`~metaal.experiments.runner.SUMMARY_COLUMNS` (the JSON also records the run's arguments).
* ``tb/<strategy>/``: one TensorBoard run per strategy; tags ``accuracy/<dataset>`` and
  ``macro_f1/<dataset>`` hold the mean over seeds, step = number of labels.
* ``curves.png``: one subplot per dataset, mean curve and a +-std band per strategy.
"""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metaal.experiments.runner import CURVE_COLUMNS, SUMMARY_COLUMNS, mean_curves, norm_aulc_means, summarize
from metaal.loop.simulate import Curve


def safe_name(name: str) -> str:
    """A file-system-safe version of a strategy or dataset name (``policy:a/b.zip`` -> ``policy_a_b.zip``)."""
    s = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_.")
    return s or "run"


def write_curves_csv(curves: Sequence[Curve], path: str | Path) -> Path:
    """Write every point of every curve: dataset, strategy, seed, n_labeled, accuracy, macro_f1."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CURVE_COLUMNS)
        for c in curves:
            for n, a, f in zip(c.n_labeled, c.accuracy, c.macro_f1):
                w.writerow([c.dataset, c.strategy, int(c.seed), int(n), repr(float(a)), repr(float(f))])
    return path


def _cell(v: Any) -> str:
    """A summary cell: strings as they are, counts as integers, numbers with ``repr`` (``nan``
    where a mean has no value, e.g. the stopping rule fired on no seed)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return repr(float(v))


def _json_value(v: Any) -> Any:
    """JSON has no NaN: a mean without a value is null."""
    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
        return None
    return v


def write_summary(
    rows: Sequence[dict[str, Any]], csv_path: str | Path, json_path: str | Path | None = None,
    arguments: dict[str, Any] | None = None,
) -> Path:
    """Write the summary rows to CSV (:data:`SUMMARY_COLUMNS`) and, if asked, to JSON with the
    run's arguments: ``{"arguments": {...}, "columns": [...], "rows": [...]}``. A mean with no
    value (``stop_labels_mean`` when the stopping rule fired on no seed) is ``nan`` in the CSV and
    null in the JSON."""
    csv_path = Path(csv_path)
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY_COLUMNS)
        for r in rows:
            w.writerow([_cell(r[k]) for k in SUMMARY_COLUMNS])
    if json_path is not None:
        doc = {
            "arguments": arguments or {},
            "columns": SUMMARY_COLUMNS,
            "rows": [{k: _json_value(r[k]) for k in SUMMARY_COLUMNS} | {"n_seeds": r.get("n_seeds")} for r in rows],
        }
        Path(json_path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return csv_path


def write_tensorboard(curves: Sequence[Curve], logdir: str | Path) -> dict[str, Path]:
    """One TensorBoard run per strategy under ``logdir/<strategy>/`` with scalars
    ``accuracy/<dataset>`` and ``macro_f1/<dataset>`` (mean over seeds), step = labels so far.

    Uses TensorBoard's own event writer (no torch import needed).

    :returns: ``{strategy: run directory}``.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = Path(logdir)
    means = mean_curves(curves)
    runs: dict[str, Path] = {}
    strategies = list(dict.fromkeys(st for (_ds, st) in means))
    used: set[str] = set()
    for st in strategies:
        name = safe_name(st)
        while name in used:
            name += "_"
        used.add(name)
        run_dir = logdir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in run_dir.glob("events.out.tfevents.*"):  # a rerun replaces, never appends
            old.unlink()
        now = time.time()
        writer = EventFileWriter(str(run_dir))
        try:
            for (ds, st2), m in means.items():
                if st2 != st:
                    continue
                for metric in ("accuracy", "macro_f1"):
                    for step, value in zip(m["n_labeled"], m[metric]):
                        summ = Summary(value=[Summary.Value(tag=f"{metric}/{ds}", simple_value=float(value))])
                        writer.add_event(Event(step=int(step), summary=summ, wall_time=now))
        finally:
            writer.close()
        runs[st] = run_dir
    return runs


def plot_curves(curves: Sequence[Curve], path: str | Path, metric: str = "accuracy") -> Path:
    """Save a PNG with one subplot per dataset: the mean ``metric`` curve of every strategy over
    seeds and a +-std band, x = number of labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    means = mean_curves(curves)
    datasets = list(dict.fromkeys(ds for (ds, _st) in means))
    strategies = list(dict.fromkeys(st for (_ds, st) in means))
    cmap = plt.get_cmap("tab10" if len(strategies) <= 10 else "tab20")
    color = {st: cmap(i % cmap.N) for i, st in enumerate(strategies)}
    alpha = 0.15 if len(strategies) <= 6 else 0.07
    n = len(datasets)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols + 1.8, 3.8 * nrows), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        for (ds2, st), m in means.items():
            if ds2 != ds:
                continue
            x, y, sd = m["n_labeled"], m[metric], m[f"{metric}_std"]
            ax.plot(x, y, label=st, linewidth=1.5, color=color[st])
            ax.fill_between(x, y - sd, y + sd, color=color[st], alpha=alpha, linewidth=0)
        ax.set_title(ds)
        ax.set_xlabel("number of labels")
        ax.set_ylabel(f"test {metric.replace('_', '-')} (mean +- std)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=color[st], linewidth=2) for st in strategies]
    fig.legend(handles, strategies, loc="center right", fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (5 * ncols + 1.8), 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _stop_cell(r: dict[str, Any]) -> str:
    fired, n = int(r.get("stop_fired", 0)), r.get("n_seeds")
    if not fired:
        return "-"
    of = f" {fired}/{n}" if n is not None and fired != n else ""
    return f"{r['stop_labels_mean']:.1f} ({r['stop_accuracy_mean']:.4f}){of}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the summary rows (dataset, strategy, AULC mean +- std, macro-F1
    AULC, ``norm_aulc`` where random and oracle ran, final accuracy, the stopping rule's mean
    labels and accuracy at its stop with the seeds where it fired, mean rank, ms per query),
    then, with ``norm_aulc``, its mean per strategy. The headline metric (``rows[i]["metric"]``)
    is marked with ``*``."""
    f1_head = any(r.get("metric") == "macro_f1" for r in rows)
    has_norm = any(np.isfinite(r.get("norm_aulc", float("nan"))) for r in rows)
    head = ["dataset", "strategy", "AULC" + ("" if f1_head else "*"), "F1 AULC" + ("*" if f1_head else "")]
    head += ["norm AULC"] if has_norm else []
    head += ["final acc", "stop at (acc)", "mean rank", "ms/query"]
    body = [
        [
            str(r["dataset"]),
            str(r["strategy"]),
            f"{r['aulc_mean']:.4f} +- {r['aulc_std']:.4f}",
            f"{r['aulc_f1_mean']:.4f}",
            *([f"{r['norm_aulc']:.3f}" if np.isfinite(r["norm_aulc"]) else "-"] if has_norm else []),
            f"{r['final_accuracy']:.4f}",
            _stop_cell(r),
            f"{r['mean_rank']:.2f}",
            f"{1000 * r['query_seconds']:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    if has_norm:
        means = norm_aulc_means(rows)
        lines += ["", "mean norm AULC (0 = random, 1 = oracle): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(means.items(), key=lambda kv: -kv[1]))]
    lines += ["", f"* headline metric: {'macro-F1' if f1_head else 'accuracy'}"]
    return "\n".join(lines)


def write_report(
    curves: Sequence[Curve], out: str | Path, arguments: dict[str, Any] | None = None, plot: bool = True,
    metric: str = "accuracy",
) -> dict[str, Any]:
    """Write every report file of a comparison into ``out`` (created if needed).

    :returns: ``{"rows": summary rows, "curves_csv", "summary_csv", "summary_json", "tb",
        "plot": paths}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(curves, metric)
    paths: dict[str, Any] = {
        "rows": rows,
        "curves_csv": write_curves_csv(curves, out / "curves.csv"),
        "summary_csv": write_summary(rows, out / "summary.csv", out / "summary.json", arguments),
        "summary_json": out / "summary.json",
        "tb": out / "tb",
        "tb_runs": write_tensorboard(curves, out / "tb"),
        "plot": plot_curves(curves, out / "curves.png", metric=metric) if plot else None,
    }
    return paths
