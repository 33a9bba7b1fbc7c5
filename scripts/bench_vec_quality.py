"""Same policy quality from the batched vector env as from scikit-learn Pool-v0 envs?

    python scripts/bench_vec_quality.py [--timesteps 16384] [--seeds 10]

Trains the same MaskablePPO (sb3-contrib, ``"MultiInputPolicy"``, same hyper-parameters, same
seed, same number of timesteps) on

(a) ``--n-envs`` scikit-learn ``metaal/Pool-v0`` envs in a ``DummyVecEnv`` and
(b) one :class:`metaal.agents.vec_env.BatchedPoolVecEnv` with ``--n-envs`` episodes,

both on the same training datasets (meta_train sets of ``configs/meta_split.yaml``, pools
subsampled to ``--max-pool`` rows), then evaluates both policies -- and the margin and random
heuristics as references -- with :func:`metaal.envs.policies.evaluate_policy` on the
``validation`` datasets of ``configs/meta_split.yaml`` (scikit-learn Pool-v0, the deployment
setting), ``--seeds`` episodes each. Prints the mean AULC +- std (over datasets x seeds) of every
policy, the paired difference (a) - (b) with its standard error, and whether the two trained
policies are within noise (|diff| <= 2 standard errors of the paired difference).

Needs ``METAAL_DATA`` (the shared datasets). Runtime about 5 minutes on the 2-core machine.

One run (defaults: 16,384 timesteps, 16 envs, budget 20, pools <= 600, training seeds 0 and 1,
validation cmc / oil_spill / libras / balance_scale x 10 episodes; load average ~5)::

    | policy            | mean AULC |    std |  n | margin's pick |
    |-------------------|----------:|-------:|---:|--------------:|
    | ppo/sklearn-dummy |    0.6344 | 0.2672 | 80 |            0% |
    | ppo/torch-batched |    0.6332 | 0.2625 | 80 |           50% |
    | margin            |    0.6378 | 0.2593 | 80 |             - |
    | random            |    0.6376 | 0.2575 | 80 |             - |

    paired difference sklearn - batched: +0.0012 +- 0.0040 (s.e.); within noise

Training: ~83 s per policy on the scikit-learn envs, ~15 s on the batched env. The batched
policy of seed 0 always picks candidate 0 (margin's pick), that of seed 1 never does, like both
scikit-learn policies: which of the two a 16k-step policy settles on depends on the seed.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("waveform", "magic", "breast_cancer", "checkerboard2x2")


def _split(name: str) -> list[str]:
    import yaml

    with open(ROOT / "configs" / "meta_split.yaml") as fh:
        return list(yaml.safe_load(fh)[name])


def _ppo(env: Any, args: argparse.Namespace) -> Any:
    from sb3_contrib import MaskablePPO

    return MaskablePPO(
        "MultiInputPolicy", env, n_steps=args.n_steps, batch_size=64, n_epochs=4, learning_rate=3e-4,
        gamma=0.99, seed=args.seed, device="cpu", verbose=0,
    )


class _Recorder:
    """A trained model as a callable policy ``f(obs, env)`` (deterministic, with the action
    masks) that counts how often it picks candidate 0, margin's own pick."""

    def __init__(self, model: Any):
        self.model, self.n, self.n_margin = model, 0, 0

    def __call__(self, obs: Any, env: Any) -> int:
        masks = np.asarray(obs["action_mask"], dtype=bool)
        a = int(np.asarray(self.model.predict(obs, action_masks=masks, deterministic=True)[0]).reshape(-1)[0])
        self.n += 1
        self.n_margin += int(a == 0)
        return a


def _evaluate(policy: Any, datasets: list[str], args: argparse.Namespace) -> tuple[np.ndarray, float]:
    """AULC per (dataset, seed), shape ``(len(datasets) * seeds,)``, and the share of margin's
    pick among the policy's actions (nan for heuristics)."""
    import gymnasium

    import metaal.envs  # noqa: F401  (registers the ids)
    from metaal.envs.policies import HeuristicPolicy, evaluate_policy

    out = []
    pol = HeuristicPolicy(policy) if isinstance(policy, str) else _Recorder(policy)
    for ds in datasets:
        env = gymnasium.make("metaal/Pool-v0", datasets=[ds], budget=args.budget, max_pool=args.max_pool,
                             reward="margin_gain", warm_start=True)
        curves = evaluate_policy(env, pol, n_episodes=args.seeds, seed=1000)
        out.extend(c.aulc for c in curves)
        env.close()
    share = pol.n_margin / max(pol.n, 1) if isinstance(pol, _Recorder) else float("nan")
    return np.asarray(out, dtype=float), share


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timesteps", type=int, default=16384)
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--n-steps", type=int, default=64, help="PPO rollout length per env")
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--max-pool", type=int, default=600)
    p.add_argument("--seeds", type=int, default=10, help="evaluation episodes per validation dataset")
    p.add_argument("--train", default=",".join(TRAIN), help="training datasets (meta_train)")
    p.add_argument("--seeds-train", default="0,1", help="training seeds (one pair of policies each)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="The number of unique classes")

    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metaal.agents.vec_env import BatchedPoolVecEnv

    torch.set_num_threads(1)
    train = [s.strip() for s in args.train.split(",") if s.strip()]
    meta_train = set(_split("meta_train"))
    bad = [t for t in train if t not in meta_train]
    if bad:
        raise SystemExit(f"training datasets must come from meta_train: {bad}")
    val = _split("validation")
    env_kw = dict(datasets=train, budget=args.budget, initial=10, k=32, reward="margin_gain", max_pool=args.max_pool)
    print(f"train {train}, validation {val}, {args.timesteps} timesteps, {args.n_envs} envs, "
          f"budget {args.budget}, pools <= {args.max_pool}, {args.seeds} seeds; load {os.getloadavg()[0]:.1f}",
          flush=True)

    def make(i: int, seed: int) -> Any:
        def thunk() -> Any:
            import gymnasium

            import metaal.envs  # noqa: F401

            env = gymnasium.make("metaal/Pool-v0", warm_start=True, **env_kw)
            env.reset(seed=seed * 1000 + i)
            return env

        return thunk

    seeds = [int(x) for x in args.seeds_train.split(",") if x.strip()]
    res: dict[str, list[np.ndarray]] = {k: [] for k in ("ppo/sklearn-dummy", "ppo/torch-batched", "margin", "random")}
    share: dict[str, list[float]] = {"ppo/sklearn-dummy": [], "ppo/torch-batched": []}
    for seed in seeds:
        args.seed = seed
        for kind in ("sklearn-dummy", "torch-batched"):
            t0 = time.perf_counter()
            if kind == "sklearn-dummy":
                venv = DummyVecEnv([make(i, seed) for i in range(args.n_envs)])
            else:
                venv = BatchedPoolVecEnv(num_envs=args.n_envs, seed=seed, device="cpu", **env_kw)
            model = _ppo(venv, args)
            model.learn(total_timesteps=args.timesteps)
            venv.close()
            t_train = time.perf_counter() - t0
            aulc, sh = _evaluate(model, val, args)
            res["ppo/" + kind].append(aulc)
            share["ppo/" + kind].append(sh)
            print(f"  seed {seed}: trained on {kind:<14} {model.num_timesteps} steps in {t_train:6.1f} s; "
                  f"validation AULC {aulc.mean():.4f}, margin's pick in {100 * sh:.0f}% of its actions", flush=True)
    for h in ("margin", "random"):  # the evaluation episodes do not depend on the training seed
        aulc, _ = _evaluate(h, val, args)
        res[h] = [aulc] * len(seeds)

    print(f"\n| policy | mean AULC | std | n | margin's pick |   (validation: {', '.join(val)}; "
          f"{args.seeds} episodes each; training seeds {seeds})")
    print("|---|---:|---:|---:|---:|")
    flat = {k: np.concatenate(v) for k, v in res.items()}
    for name, v in flat.items():
        sh = f"{100 * np.mean(share[name]):.0f}%" if name in share else "-"
        print(f"| {name} | {v.mean():.4f} | {v.std(ddof=1):.4f} | {len(v)} | {sh} |")
    diff = flat["ppo/sklearn-dummy"] - flat["ppo/torch-batched"]
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    within = abs(diff.mean()) <= 2 * se
    print(f"\npaired difference sklearn - batched: {diff.mean():+.4f} +- {se:.4f} (s.e.); "
          f"{'within noise' if within else 'NOT within noise'} (|diff| <= 2 s.e.)")
    return {"results": {k: v.tolist() for k, v in flat.items()}, "diff": float(diff.mean()), "se": float(se),
            "within_noise": bool(within)}


if __name__ == "__main__":
    main()
