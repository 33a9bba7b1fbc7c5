#!/usr/bin/env python
"""Accuracy-versus-requests trade-off of ``metaal/Stream-v0`` (after Woodward & Finn, "Active
One-shot Learning", 2016): a sweep over the wrong-prediction penalty with a fixed-threshold
heuristic.

For each penalty (rewards +1 right, -penalty wrong, -request_cost per request) two threshold rules
are run on the same evaluation episodes:

* ``bayes``: request iff the smoothed top probability is below
  ``(penalty - request_cost) / (1 + penalty)`` (the expected-reward rule of
  :class:`metaal.envs.ThresholdStreamPolicy`);
* ``tuned``: the threshold of a grid that earns the most reward on separate tuning episodes.

The table lists, per penalty and rule: the threshold, accuracy on the items the policy predicted,
the request rate and the mean episode reward. Data: the shared ``usps`` digits (raw 16x16 pixels /
255, reduced to ``--pca`` dims with a PCA fitted without labels), or scikit-learn's ``digits``
when ``usps`` is not found along ``METAAL_DATA``.

    METAAL_DATA=../shared/data python scripts/bench_stream.py [--episodes 20] [--length 100]

With ``--data SPEC ... --out DIR`` it runs the full sweep on the given streams (dataset names along
``METAAL_DATA``, files, ``sklearn:``/``synth:`` specs; image datasets such as ``usps`` go through
the same pixels + PCA as above): for every penalty, the learned policy (``--policy``, default
``policy:stream-default``), both thresholds, and the variable uncertainty and split strategies of
Zliobaite et al. (2014) with the budget (request fraction) of a grid that earns the most reward on
the tuning episodes. It writes ``DIR/stream_sweep.csv``, ``DIR/stream_sweep.json`` and
``DIR/stream_sweep.png`` (accuracy on predicted items against request rate per method) and prints,
as its last line, ``learned policy beats the tuned threshold at K of 5 penalties`` (mean episode
reward over the given streams).

    METAAL_DATA=../shared/data python scripts/bench_stream.py --data usps dermatology --out runs/stream_sweep
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

PENALTIES = (1.0, 2.0, 5.0, 10.0, 20.0)
GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)
BUDGETS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
METHODS = ("learned", "tuned", "bayes", "vu", "split")


def image_dataset(name: str, pca: int):
    """``name``'s images as features: pixels / 255 flattened, then a PCA to ``pca`` dims (0: none)."""
    from metaal.data import Dataset, find_dataset, load_dataset

    if find_dataset(name) is None:
        return load_dataset("sklearn:digits")
    ds = load_dataset(name)
    if ds.X is None:
        X = ds.images.reshape(ds.n, -1).astype(np.float32) / 255.0
        if pca:
            from sklearn.decomposition import PCA

            X = PCA(n_components=pca, random_state=0).fit_transform(X)
        ds = Dataset(X=X, y=ds.y, classes=ds.classes, name=ds.name)
    return ds


def run_episodes(ds, policy, seeds, length: int, request_cost: float, penalty: float = 1.0,
                 warm_start: bool = False) -> np.ndarray:
    """``(n_seeds, 3)``: right predictions, wrong predictions and requests per episode (these do
    not depend on the penalty for a fixed threshold or budget; a learned policy reads it)."""
    from metaal.envs import StreamEnv

    env = StreamEnv(datasets=[ds], max_classes=max(10, ds.n_classes), episode_length=length, request_cost=request_cost,
                    wrong_penalty=penalty, cost_features=True, warm_start=warm_start)
    out = []
    for s in seeds:
        obs, info = env.reset(seed=int(s))
        done = False
        while not done:
            obs, _, done, _, info = env.step(policy(obs, env))
        out.append((info["n_correct"], info["n_predicted"] - info["n_correct"], info["n_requests"]))
    return np.asarray(out, dtype=float)


def reward(counts: np.ndarray, penalty: float, request_cost: float) -> np.ndarray:
    return counts[:, 0] - penalty * counts[:, 1] - request_cost * counts[:, 2]


def load_stream(spec: str, pca: int):
    """A stream dataset: image datasets as pixels + PCA (:func:`image_dataset`), others as given."""
    from metaal.data import find_dataset, load_dataset

    if find_dataset(spec) is not None:
        ds = load_dataset(spec)
        if ds.X is None:
            return image_dataset(spec, pca)
        return ds
    return load_dataset(spec)


def summarize(cnt: np.ndarray, penalty: float, c: float, length: int) -> dict:
    pred = cnt[:, 0].sum() + cnt[:, 1].sum()
    rew = reward(cnt, penalty, c)
    return {"accuracy": float(cnt[:, 0].sum() / pred) if pred else float("nan"),
            "request_rate": float(cnt[:, 2].sum() / cnt.sum()),
            "reward": float(rew.mean()), "reward_std": float(rew.std())}


def sweep_dataset(ds, learned, args: argparse.Namespace) -> list[dict]:
    """The rows of one stream: every method at every penalty (baselines tuned on separate episodes)."""
    from metaal.envs import ThresholdStreamPolicy
    from metaal.envs.stream_policies import SplitStreamPolicy, VariableUncertaintyStreamPolicy

    c, L, ws = args.request_cost, args.length, args.warm_start
    eval_seeds = np.arange(args.episodes)
    tune_seeds = 10_000 + np.arange(args.tune_episodes)
    kinds = {"threshold": ThresholdStreamPolicy, "vu": VariableUncertaintyStreamPolicy, "split": SplitStreamPolicy}
    grids = {"threshold": GRID, "vu": BUDGETS, "split": BUDGETS}
    tune = {(k, p): run_episodes(ds, kinds[k](p), tune_seeds, L, c, 1.0, ws) for k in kinds for p in grids[k]}
    cache: dict = {}

    def fixed(kind: str, param: float) -> np.ndarray:
        key = (kind, round(param, 6))
        if key not in cache:
            cache[key] = run_episodes(ds, kinds[kind](param), eval_seeds, L, c, 1.0, ws)
        return cache[key]

    def best(kind: str, pen: float) -> float:
        return max(grids[kind], key=lambda p: reward(tune[(kind, p)], pen, c).mean())

    rows = []
    for pen in PENALTIES:
        params = {"bayes": (pen - c) / (1.0 + pen), "tuned": best("threshold", pen), "vu": best("vu", pen),
                  "split": best("split", pen)}
        cnts = {"learned": run_episodes(ds, learned, eval_seeds, L, c, pen, ws),
                "tuned": fixed("threshold", params["tuned"]), "bayes": fixed("threshold", params["bayes"]),
                "vu": fixed("vu", params["vu"]), "split": fixed("split", params["split"])}
        for m in METHODS:
            r = {"dataset": ds.name, "penalty": pen, "request_cost": c, "method": m,
                 "param": params.get(m, float("nan")), "episodes": args.episodes, "length": L,
                 **summarize(cnts[m], pen, c, L)}
            rows.append(r)
            print(f"{pen:>6g} {m:>8} {r['param']:>7.3f} acc {r['accuracy']:.3f} requests {r['request_rate']:.3f} "
                  f"reward {r['reward']:8.2f}", flush=True)
    return rows


def sweep(args: argparse.Namespace) -> int:
    """The full sweep on ``args.data`` (see the module docstring)."""
    from pathlib import Path

    from metaal.agents.stream_policy import StreamPolicy
    from metaal.errors import MetaalError

    try:
        streams = [load_stream(spec, args.pca) for spec in args.data]
    except MetaalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    learned = StreamPolicy(args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for ds in streams:
        print(f"dataset {ds.name} ({ds.n} rows, {ds.X.shape[1]} features, {ds.n_classes} classes), "
              f"{args.episodes} episodes of {args.length} items, request cost {args.request_cost}", flush=True)
        rows += sweep_dataset(ds, learned, args)
        write(rows, out, learned.name)  # after every stream: a long sweep keeps what it measured
    wins = 0
    for pen in PENALTIES:
        mean = {m: np.mean([r["reward"] for r in rows if r["penalty"] == pen and r["method"] == m]) for m in METHODS}
        wins += mean["learned"] > mean["tuned"]
        print(f"penalty {pen:g}: mean reward " + ", ".join(f"{m} {mean[m]:.2f}" for m in METHODS))
    print(f"wrote {out}/stream_sweep.csv, .json, .png")
    print(f"learned policy beats the tuned threshold at {wins} of {len(PENALTIES)} penalties")
    return 0


def write(rows: list[dict], out, policy: str) -> None:
    """``stream_sweep.csv``, ``.json`` and ``.png`` in ``out``."""
    import csv
    import json

    with open(out / "stream_sweep.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    (out / "stream_sweep.json").write_text(json.dumps({"policy": policy, "datasets": datasets, "rows": rows},
                                                      indent=1) + "\n")
    plot(rows, out / "stream_sweep.png")


def plot(rows: list[dict], path) -> None:
    """Accuracy on predicted items against request rate, one line per method over the penalties,
    one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for m in METHODS:
            pts = [(r["request_rate"], r["accuracy"]) for r in rows if r["dataset"] == name and r["method"] == m]
            ax.plot(*zip(*pts), marker="o", label=m)
        ax.set_title(name)
        ax.set_xlabel("request rate")
        ax.set_ylabel("accuracy on predicted items")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=None, help="streams for the full sweep (with --out)")
    ap.add_argument("--out", default=None, help="folder for the sweep's CSV, JSON and plot")
    ap.add_argument("--policy", default="stream-default", help="the learned stream policy")
    ap.add_argument("--warm-start", action="store_true", help="refit the learner from its last weights")
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--pca", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--tune-episodes", type=int, default=5)
    ap.add_argument("--length", type=int, default=100, help="items per episode")
    ap.add_argument("--request-cost", type=float, default=0.05)
    args = ap.parse_args(argv)
    if (args.data is None) != (args.out is None):
        ap.error("--data and --out go together")
    import scipy.optimize  # noqa: F401  (load every BLAS before limiting threads)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if args.data:
        return sweep(args)
    from metaal.envs import ThresholdStreamPolicy
    from metaal.errors import MetaalError

    try:
        ds = image_dataset(args.dataset, args.pca)
    except MetaalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    eval_seeds = np.arange(args.episodes)
    tune_seeds = 10_000 + np.arange(args.tune_episodes)
    c = args.request_cost
    # the tuned rule: one run per grid threshold serves every penalty
    tune = {t: run_episodes(ds, ThresholdStreamPolicy(t), tune_seeds, args.length, c) for t in GRID}
    evals: dict[float, np.ndarray] = {}
    print(f"dataset {ds.name} ({ds.n} rows, {ds.X.shape[1]} features, {ds.n_classes} classes), "
          f"{args.episodes} episodes of {args.length} items, request cost {c}")
    print(f"{'penalty':>8} {'rule':>6} {'threshold':>10} {'accuracy':>9} {'requests':>9} {'reward':>8}")
    for pen in PENALTIES:
        t_bayes = (pen - c) / (1.0 + pen)
        t_tuned = max(GRID, key=lambda t: reward(tune[t], pen, c).mean())
        for rule, t in (("bayes", t_bayes), ("tuned", t_tuned)):
            key = round(t, 6)
            if key not in evals:
                evals[key] = run_episodes(ds, ThresholdStreamPolicy(t), eval_seeds, args.length, c)
            cnt = evals[key]
            pred = cnt[:, 0].sum() + cnt[:, 1].sum()
            acc = cnt[:, 0].sum() / pred if pred else float("nan")
            rate = cnt[:, 2].sum() / (args.episodes * args.length)
            acc_s = f"{acc:.3f}" if pred else "-"  # "-": every item was requested
            print(f"{pen:>8g} {rule:>6} {t:>10.3f} {acc_s:>9} {rate:>9.3f} {reward(cnt, pen, c).mean():>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
