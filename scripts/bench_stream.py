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
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

PENALTIES = (1.0, 2.0, 5.0, 10.0, 20.0)
GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)


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


def run_episodes(ds, policy, seeds, length: int, request_cost: float) -> np.ndarray:
    """``(n_seeds, 3)``: right predictions, wrong predictions and requests per episode (these do
    not depend on the penalty for a fixed threshold)."""
    from metaal.envs import StreamEnv

    env = StreamEnv(datasets=[ds], max_classes=max(10, ds.n_classes), episode_length=length, request_cost=request_cost)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="usps")
    ap.add_argument("--pca", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--tune-episodes", type=int, default=5)
    ap.add_argument("--length", type=int, default=100, help="items per episode")
    ap.add_argument("--request-cost", type=float, default=0.05)
    args = ap.parse_args(argv)
    import scipy.optimize  # noqa: F401  (load every BLAS before limiting threads)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
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
