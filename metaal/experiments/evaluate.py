"""``metaal evaluate``: evaluate a policy against the heuristics on held-out datasets.

::

    metaal evaluate [--policy default|PATH] [--data GROUP|NAME ...] [--strategies random,margin,...]
                    [--protocol standard|cold|batch|imbalanced] [--budgets 50 200] [--seeds 20]
                    [--learner logreg] [--jobs 2] --out DIR

``evaluate`` runs the policy and the heuristics with the default protocol (the same splits as
``metaal compare``) and writes, per budget, ``DIR/<learner>_b<B>/`` (curves.csv, summary.csv,
curves.png, TensorBoard) and ``DIR/results.json`` / ``DIR/results.md``: mean AULC, mean rank, and
per dataset a paired Wilcoxon signed-rank test over the seeds against ``margin`` (win / tie / loss
at p < 0.05) and against ``random``. The budget is capped at each dataset's unlabeled pool. The
heuristics do not look at the budget, so their curve for a smaller budget is the prefix of the
larger one: they run once at the largest budget and are cut (the policy sees ``budget_used`` and
runs once per budget). :func:`merge_results` joins evaluations run on disjoint groups of datasets.

``--protocol`` (:mod:`metaal.protocols`) sets the initial set, the budget (unless ``--budgets``
is given), the batch size, the class-imbalance transform and the headline metric (macro-F1 AULC
for ``imbalanced``: then every AULC, rank and test uses it). With ``random`` and ``oracle`` among
the strategies, each dataset's entries get ``norm_aulc`` (0 = random, 1 = the oracle) and the
aggregate its mean; every entry has its seconds per query.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import wilcoxon

from metaal.agents.policy_file import resolve_policy_path
from metaal.agents.train import read_split
from metaal.data import load_dataset, make_split
from metaal.errors import ConfigError, PolicyError
from metaal.experiments.compare import add_protocol_arguments, apply_protocol
from metaal.experiments.report import write_report
from metaal.experiments.runner import (
    check_size,
    check_strategies,
    headline_aulc,
    norm_aulc_means,
    resolve_jobs,
    run_cells,
)
from metaal.protocols import Protocol, resolve
from metaal.strategies import parse_list


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` parser to the ``metaal`` command."""
    e = subparsers.add_parser("evaluate", help="evaluate a learned policy against heuristics",
                              description="Evaluate a policy and heuristics on datasets (default: the meta_test "
                                          "group of configs/meta_split.yaml): AULC, ranks, Wilcoxon tests vs margin.")
    e.add_argument("--policy", default="default", help="policy file, training folder or 'default' (default)")
    e.add_argument("--data", nargs="+", default=["meta_test"], metavar="GROUP|NAME",
                   help="a split group (meta_test, validation, meta_train) or dataset names/paths (meta_test)")
    e.add_argument("--strategies", default="random,margin,entropy,least_confident",
                   help="comma-separated heuristics to compare with (random,margin,entropy,least_confident)")
    e.add_argument("--budgets", nargs="+", type=int, default=None,
                   help="budgets (the protocol's budget with --protocol, else 50 200)")
    e.add_argument("--seeds", type=int, default=20, help="seeds 0..S-1 per dataset (20)")
    add_protocol_arguments(e)
    e.add_argument("--learner", default="logreg", help="learner (logreg)")
    e.add_argument("--jobs", type=int, default=2, help="parallel workers, -1 for all cores (2)")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=run_evaluate)


def resolve_datasets(specs: Sequence[str]) -> list[str]:
    """Expand split group names (``meta_test``, ``validation``, ``meta_train``) into dataset names."""
    split = read_split()
    out: list[str] = []
    for s in specs:
        for name in split.get(s, [s]):
            if name not in out:
                out.append(name)
    return out


def _cut(curve: Any, budget: int) -> Any:
    """The prefix of a batch-size-1 curve up to ``budget`` queries."""
    c = copy.copy(curve)
    n = budget + 1
    frac = budget / max(len(curve.queried), 1)
    c.n_labeled, c.accuracy, c.macro_f1 = curve.n_labeled[:n], curve.accuracy[:n], curve.macro_f1[:n]
    c.queried = list(curve.queried[:budget])
    c.query_seconds = curve.query_seconds * frac
    return c


def paired_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> tuple[str, float]:
    """Wilcoxon signed-rank test of paired AULCs ``a`` vs ``b`` (seeds,): ``("win"|"tie"|"loss", p)``."""
    d = np.asarray(a) - np.asarray(b)
    if np.allclose(d, 0):
        return "tie", 1.0
    try:
        p = float(wilcoxon(a, b).pvalue)
    except ValueError:
        return "tie", 1.0
    if p < alpha:
        return ("win" if d.mean() > 0 else "loss"), p
    return "tie", p


def evaluate_policy(
    policy: str = "default",
    datasets: Sequence[str] = ("meta_test",),
    strategies: Sequence[str] = ("random", "margin", "entropy", "least_confident"),
    budgets: Sequence[int] = (50, 200),
    seeds: int = 20,
    initial: int = 10,
    learner: str = "logreg",
    jobs: int = 2,
    out: "str | Path" = "eval",
    progress: bool = True,
    plot: bool = True,
    protocol: "Protocol | str | None" = None,
    batch_size: int = 1,
    metric: str = "accuracy",
    cold_fallback: str = "random",
) -> dict[str, Any]:
    """Run the evaluation described in the module docstring; returns the ``results.json`` dict.

    :param protocol: a :class:`~metaal.protocols.Protocol` or a name: its imbalance transform
        applies to the datasets; ``initial``, ``batch_size`` and ``metric`` are taken as given (the
        command line fills them from the protocol).

    The policy is checked before anything runs: a missing file is an error; one that cannot be
    loaded runs its fallback heuristic under the name ``policy:PATH(fallback=margin)``.
    """
    pol = policy if policy.startswith("policy:") else f"policy:{policy}"
    heur = [s for s in strategies if s != pol and not s.startswith("policy:")]
    if "margin" not in heur:
        raise ConfigError("the evaluation compares against margin: include it in --strategies")
    check_size(len(datasets), len(strategies) + 1, seeds)
    jobs = resolve_jobs(jobs)
    zp = resolve_policy_path(pol.split(":", 1)[1].split("?", 1)[0])  # options (?guard=G) are not the path
    if not zp.is_file():
        raise PolicyError(f"policy file {zp} not found (--policy {policy}: a .zip, a training folder or 'default')")
    heur = check_strategies(heur)
    pol = check_strategies([pol])[0]  # a policy that cannot load: its fallback, named as such, warned once
    # other learned policies in --strategies (policy:v1, a guarded variant): run per budget like the policy
    others = [s for s in strategies if s.startswith("policy:")]
    others = [s for s in (check_strategies(others) if others else []) if s != pol]
    pols = [pol] + others
    out = Path(out)
    specs = resolve_datasets(datasets)
    check_size(len(specs), len(heur) + len(pols), seeds)
    out.mkdir(parents=True, exist_ok=True)
    proto = resolve(protocol if isinstance(protocol, str) or protocol is None else protocol.name,
                    initial=initial, batch_size=batch_size, metric=metric,
                    budget=max(budgets) if budgets else None)
    loaded = proto.apply([load_dataset(sp) for sp in specs])
    names = [ds.name for ds in loaded]  # what the curves are keyed by ("sklearn:wine" -> "wine")
    if len(set(names)) != len(names):
        raise ConfigError(f"two of the datasets have the same name: {', '.join(names)}")
    data_of = dict(zip(names, loaded))
    budgets = sorted(set(int(b) for b in budgets))
    caps: dict[str, int] = {}
    for n in names:
        sp = make_split(data_of[n], 0, initial)
        caps[n] = len(sp.pool) - len(sp.initial)
    eff = {(n, b): min(b, caps[n]) for n in names for b in budgets}
    curves: dict[int, list[Any]] = {b: [] for b in budgets}
    # heuristics: once at the largest effective budget per dataset, grouped by that budget
    groups: dict[int, list[str]] = {}
    for n in names:
        groups.setdefault(eff[(n, budgets[-1])], []).append(n)
    cell_kw = dict(initial=initial, learner=learner, jobs=jobs, progress=progress, batch_size=batch_size,
                   metric=metric, cold_fallback=cold_fallback)
    # a batch curve is cut only at whole batches: with batches the heuristics run once per budget too
    cut_ok = batch_size == 1
    for B, dsn in groups.items() if cut_ok else []:
        cs = run_cells([data_of[n] for n in dsn], heur, seeds=seeds, budget=B, **cell_kw)
        for b in budgets:
            for c in cs:
                curves[b].append(_cut(c, eff[(c.dataset, b)]))
    # the policy (and, with batches, the heuristics): once per (effective) budget
    for b in budgets:
        groups = {}
        for n in names:
            groups.setdefault(eff[(n, b)], []).append(n)
        for B, dsn in groups.items():
            curves[b] += run_cells([data_of[n] for n in dsn], pols if cut_ok else pols + heur, seeds=seeds,
                                   budget=B, **cell_kw)
    order = {s: i for i, s in enumerate(pols + heur)}
    results: dict[str, Any] = {"policy": pol, "learner": learner, "seeds": seeds, "initial": initial,
                               "datasets": names, "budgets": {}, "strategies": pols + heur,
                               "protocol": proto.name, "batch_size": batch_size, "metric": metric}
    prefix = "" if proto.name == "standard" else f"{proto.name}_"
    for b in budgets:
        cs = sorted(curves[b], key=lambda c: (names.index(c.dataset), order[c.strategy], c.seed))
        rep = write_report(cs, out / f"{prefix}{learner}_b{b}",
                           arguments={"budget": b, "learner": learner, "seeds": seeds, "protocol": proto.name,
                                      "initial": initial, "batch_size": batch_size, "metric": metric},
                           plot=plot, metric=metric)
        rows = rep["rows"]
        aulc = {(c.dataset, c.strategy, c.seed): headline_aulc(c, metric) for c in cs}
        key = "aulc_f1_mean" if metric == "macro_f1" else "aulc_mean"
        per_ds: dict[str, Any] = {}
        for n in names:
            entry: dict[str, Any] = {"budget": eff[(n, b)]}
            for s in pols + heur:
                r = next(r for r in rows if r["dataset"] == n and r["strategy"] == s)
                sd = float(np.std([aulc[(n, s, k)] for k in range(seeds)]))
                entry[s] = {"aulc": r[key], "aulc_std": sd, "rank": r["mean_rank"],
                            "norm_aulc": r["norm_aulc"], "query_seconds": r["query_seconds"]}
            m = np.array([aulc[(n, "margin", s)] for s in range(seeds)])
            for s in pols + heur:
                if s == "margin":
                    continue
                x = np.array([aulc[(n, s, k)] for k in range(seeds)])
                entry[s]["vs_margin"], entry[s]["p_margin"] = paired_test(x, m)
            if "random" in heur:
                rnd = np.array([aulc[(n, "random", k)] for k in range(seeds)])
                x = np.array([aulc[(n, pol, k)] for k in range(seeds)])
                entry[pol]["vs_random"], entry[pol]["p_random"] = paired_test(x, rnd)
            per_ds[n] = entry
        agg = aggregate(per_ds, pols + heur)
        results["budgets"][str(b)] = {
            "aggregate": agg,
            "per_dataset": per_ds,
            "plot": str(out / f"{prefix}{learner}_b{b}" / "curves.png"),
        }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    return results


def aggregate(per_ds: dict[str, dict[str, Any]], strategies: list[str]) -> dict[str, Any]:
    """The aggregate rows of an evaluation from its per-dataset entries (``strategies[0]`` is the
    policy): mean AULC, mean rank, W/T/L against margin, and for the policy the datasets where it
    beats random by mean AULC and significantly."""
    names, pol = list(per_ds), strategies[0]
    agg: dict[str, Any] = {}
    for s in strategies:
        wtl = [per_ds[n][s].get("vs_margin") for n in names]
        agg[s] = {"mean_aulc": float(np.mean([per_ds[n][s]["aulc"] for n in names])),
                  "mean_rank": float(np.mean([per_ds[n][s]["rank"] for n in names])),
                  "wins": wtl.count("win"), "ties": wtl.count("tie"), "losses": wtl.count("loss"),
                  "query_seconds": float(np.mean([per_ds[n][s].get("query_seconds", np.nan) for n in names]))}
    norm = norm_aulc_means([{"strategy": s, "norm_aulc": per_ds[n][s].get("norm_aulc", np.nan)}
                            for n in names for s in strategies])
    for s, v in norm.items():
        agg[s]["mean_norm_aulc"] = v
    if "random" in strategies:
        agg[pol]["beats_random_mean"] = int(sum(per_ds[n][pol]["aulc"] > per_ds[n]["random"]["aulc"] for n in names))
        agg[pol]["beats_random_sig"] = int(sum(per_ds[n][pol].get("vs_random") == "win" for n in names))
    return agg


_SAME = ("policy", "learner", "seeds", "initial", "strategies")


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict over the union of the inputs' datasets (see the module docstring)."""
    first = results[0]
    for r in results[1:]:
        for key in _SAME:
            if r[key] != first[key]:
                raise ConfigError(f"cannot merge: {key} differs ({r[key]!r} vs {first[key]!r})")
        if set(r["budgets"]) != set(first["budgets"]):
            raise ConfigError(f"cannot merge: budgets differ ({sorted(r['budgets'])} vs {sorted(first['budgets'])})")
    names: list[str] = []
    for r in results:
        dup = set(names) & set(r["datasets"])
        if dup:
            raise ConfigError(f"cannot merge: datasets evaluated twice: {', '.join(sorted(dup))}")
        names += r["datasets"]
    strategies = first["strategies"]
    out = {**{k: first[k] for k in _SAME}, "datasets": names, "budgets": {}}
    for b in first["budgets"]:
        per = {n: e for r in results for n, e in r["budgets"][b]["per_dataset"].items()}
        per = {n: per[n] for n in names}
        out["budgets"][b] = {"aggregate": aggregate(per, strategies), "per_dataset": per}
    return out


def results_markdown(res: dict[str, Any]) -> str:
    """Markdown tables of an evaluation (aggregate, then per dataset)."""
    pol = res["policy"]
    proto, metric = res.get("protocol", "standard"), res.get("metric", "accuracy")
    what = "macro-F1 AULC" if metric == "macro_f1" else "AULC"
    lines = [f"### protocol `{proto}`, learner `{res['learner']}`, {res['seeds']} seeds, "
             f"{len(res['datasets'])} datasets", ""]
    for b, r in res["budgets"].items():
        norm = any("mean_norm_aulc" in a for a in r["aggregate"].values())
        lines += [f"#### budget {b}", "",
                  f"| strategy | mean {what} |" + (" mean norm AULC |" if norm else "")
                  + " mean rank | vs margin W/T/L (Wilcoxon p<0.05) | beats random (mean AULC) | s/query |",
                  "|---|---|---|---|---|---|" + ("---|" if norm else "")]
        per = r["per_dataset"]
        for s, a in r["aggregate"].items():
            wtl = "-" if s == "margin" else f"{a['wins']}/{a['ties']}/{a['losses']}"
            beats = "-"
            if s != "random" and all("random" in e for e in per.values()):
                beats = f"{sum(e[s]['aulc'] > e['random']['aulc'] for e in per.values())}/{len(per)}"
            nrm = (f" {a['mean_norm_aulc']:.3f} |" if "mean_norm_aulc" in a else " - |") if norm else ""
            sec = a.get("query_seconds", float("nan"))
            lines.append(f"| {s} | {a['mean_aulc']:.4f} |{nrm} {a['mean_rank']:.2f} | {wtl} | {beats} | {sec:.4f} |")
        a = r["aggregate"][pol]
        if "beats_random_mean" in a:
            n = len(res["datasets"])
            lines += ["", f"{pol} beats random on {a['beats_random_mean']}/{n} datasets by mean AULC "
                          f"({a['beats_random_sig']}/{n} significantly, Wilcoxon p<0.05)."]
        strat = list(r["aggregate"])
        lines += ["", "| dataset | B | " + " | ".join(strat) + " | policy vs margin (p) |",
                  "|---|---|" + "---|" * len(strat) + "---|"]
        for n, e in r["per_dataset"].items():
            best = max(e[s]["aulc"] for s in strat)
            cells = [
                (f"**{e[s]['aulc']:.4f}**" if e[s]["aulc"] >= best - 1e-12 else f"{e[s]['aulc']:.4f}") for s in strat
            ]
            lines.append(
                f"| {n} | {e['budget']} | "
                + " | ".join(cells)
                + f" | {e[pol]['vs_margin']} ({e[pol]['p_margin']:.3f}) |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def run_evaluate(args: argparse.Namespace) -> int:
    budgets = args.budgets
    if budgets is not None:  # the protocol's budget is overridden by --budgets
        args.budget = max(budgets)
    named = args.protocol is not None
    proto = apply_protocol(args)
    if budgets is None:  # without --protocol, the budget sweep of the standard evaluation
        budgets = [proto.budget] if named else [50, 200]
    strategies = parse_list(args.strategies)
    res = evaluate_policy(args.policy, args.data, strategies, budgets, args.seeds, args.initial, args.learner,
                          args.jobs, args.out, progress=not args.no_progress, protocol=proto,
                          batch_size=proto.batch_size, metric=proto.metric, cold_fallback=args.cold_start)
    print(results_markdown(res))
    return 0
