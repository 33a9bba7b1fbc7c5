"""Steps per second of the vector environments: scikit-learn Pool-v0 envs vs the batched torch env.

    python scripts/bench_vec.py [--dataset waveform] [--steps 10] [--device auto]

Every configuration runs the same dataset (default: the shared 5,000-row ``waveform``, found along
``METAAL_DATA``) with the same episode settings and uniformly random valid actions (so
``margin_gain``'s counterfactual fit is needed at almost every step). Timed: ``--steps`` steps in
the middle of the episodes (the budget is larger than warm-up + timed steps, so no reset falls
inside the timed window) -- "steps only" -- and, separately, ``reset()`` of all N episodes. Resets
are counted fairly in "incl. reset": the env-steps per second over a whole round of
``--round-budget`` (50, Pool-v0's default budget) steps, i.e. ``50 N / (reset + 50 N / steps-only
rate)``, for every configuration alike.

Configurations (one run, so the ratios compare like with like; the machine, its load average and
the thread settings are printed before and after, and the load after each row):

* ``sklearn-dummy``: N Pool-v0 envs (scikit-learn LogisticRegression, ``warm_start=True`` unless
  ``--cold``) in a DummyVecEnv (``--sklearn``, default 1 and 8);
* ``sklearn-subproc``: 64 Pool-v0 envs in a SubprocVecEnv (one process each, ``fork``);
* ``torch-batched``: :class:`metaal.envs.vec_pool.BatchedPoolVecEnv` with 1, 8, 64, 256 episodes
  (``--threads 1,2`` adds rows with two torch threads).

One run of ``python scripts/bench_vec.py`` on the 2-core development machine (CPU only, shared with
another engineer's policy training: load average 4.6 at the start, 15-19 while the 64 subprocesses
ran; 10 timed steps, random valid actions, 3,000-row pools, Pool-v0 warm-started, one torch /
BLAS thread):

    | env             |   N | reset s | env-steps/s (steps only) | incl. reset | vs subproc-64 | incl. reset |
    |-----------------|----:|--------:|-------------------------:|------------:|--------------:|------------:|
    | sklearn-dummy   |   1 |    0.07 |                    174.6 |       139.1 |          1.7x |        1.8x |
    | sklearn-dummy   |   8 |    0.43 |                    181.1 |       151.7 |          1.8x |        2.0x |
    | sklearn-subproc |  64 |   10.15 |                    101.4 |        76.7 |          1.0x |        1.0x |
    | torch-batched   |   1 |    0.09 |                    324.9 |       205.5 |          3.2x |        2.7x |
    | torch-batched   |   8 |    0.44 |                   1156.7 |       507.6 |         11.4x |        6.6x |
    | torch-batched   |  64 |    3.03 |                   1229.5 |       568.0 |         12.1x |        7.4x |
    | torch-batched   | 256 |   13.06 |                   1334.1 |       565.0 |         13.2x |        7.4x |

The batched env is CPU-bound on one core and steady (wall time = CPU time within 2%: 1,280 to
1,400 env-steps/s at N=64 in A/B runs; 1,150 to 1,200 before the optimisations of this version,
whose reset took 4.8 s instead of 3.0 s). The 64-process SubprocVecEnv is not steady (80 to 125
env-steps/s on the busy machine; 270 in one earlier run that found the machine idle, where it has
both cores and the batched env one: there the ratio would be ~5x). Two torch threads were 4.7x
slower at N=64 on the busy machine (spinning OpenMP workers), hence ``threads=1``.

Each process is pinned to one BLAS / torch thread (``OMP_NUM_THREADS=1``, set before numpy is
imported) so the SubprocVecEnv uses every core through its processes while the batched env uses
one core: the comparison is conservative for the batched env on a CPU-only machine.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        datasets=[args.dataset], budget=args.warmup + args.steps + 5, initial=10, k=32,
        reward="margin_gain", max_pool=args.max_pool,
    )


def _make_pool_env(kwargs: dict[str, Any], seed: int) -> Callable[[], Any]:
    def thunk() -> Any:
        import gymnasium

        import metaal.envs  # noqa: F401  (registers metaal/Pool-v0)

        env = gymnasium.make("metaal/Pool-v0", **kwargs)
        env.reset(seed=seed)
        return env

    return thunk


def _random_actions(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random valid action per row of ``masks`` (N, K)."""
    masks = np.asarray(masks, dtype=bool)
    u = rng.random(masks.shape) * masks
    return np.argmax(u, axis=1)


def time_vec_env(venv: Any, n_steps: int, warmup: int, seed: int) -> tuple[float, float]:
    """(reset seconds, steps per second: env-steps, i.e. N per vector step)."""
    from sb3_contrib.common.maskable.utils import get_action_masks

    rng = np.random.default_rng(seed)
    venv.seed(seed)
    t0 = time.perf_counter()
    venv.reset()
    t_reset = time.perf_counter() - t0
    for _ in range(warmup):
        venv.step(_random_actions(get_action_masks(venv), rng))
    t0 = time.perf_counter()
    for _ in range(n_steps):
        _, _, dones, _ = venv.step(_random_actions(get_action_masks(venv), rng))
        if dones.any():
            raise RuntimeError("an episode ended inside the timed window; raise the budget")
    dt = time.perf_counter() - t0
    return t_reset, n_steps * venv.num_envs / dt


def _machine() -> str:
    import platform

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="waveform")
    p.add_argument("--steps", type=int, default=10, help="timed vector steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-pool", type=int, default=None, help="subsample pools (default: whole pool)")
    p.add_argument("--device", default="auto", help="device of the batched env (auto: GPU when present)")
    p.add_argument("--sklearn", default="1,8", help="DummyVecEnv sizes for scikit-learn envs")
    p.add_argument("--subproc", default="64", help="SubprocVecEnv sizes for scikit-learn envs ('' to skip)")
    p.add_argument("--batched", default="1,8,64,256", help="BatchedPoolVecEnv sizes")
    p.add_argument("--start-method", default="fork", choices=["fork", "forkserver", "spawn"])
    p.add_argument("--threads", default="1", help="torch threads of the batched env (comma list: one row each)")
    p.add_argument("--round-budget", type=int, default=50,
                   help="episode length used for the 'incl. reset' figures (Pool-v0's default budget)")
    p.add_argument("--cold", action="store_true",
                   help="Pool-v0 without warm_start (default: warm-started, its fastest setting)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from metaal.envs.vec_pool import BatchedPoolVecEnv
    from metaal.torch_learners import resolve_device

    kwargs = _env_kwargs(args)
    pool_kwargs = dict(kwargs, warm_start=not args.cold)  # the batched env always warm-starts
    sizes = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    rows: list[dict[str, Any]] = []
    B = args.round_budget

    def record(kind: str, n: int, t_reset: float, sps: float, threads: int | None = None) -> None:
        # a whole round: one reset of the N episodes, then B steps of all N
        incl = B * n / (t_reset + B * n / sps)
        rows.append({"env": kind, "n_envs": n, "threads": threads, "reset_s": t_reset, "steps_per_s": sps,
                     "incl_reset_per_s": incl, "load": os.getloadavg()[0]})
        print(f"  {kind:<16} N={n:<4} reset {t_reset:7.2f} s   {sps:9.1f} env-steps/s   "
              f"{incl:9.1f} incl. reset   (load {os.getloadavg()[0]:.2f})", flush=True)

    dev = resolve_device(args.device)
    print(f"dataset {args.dataset}, {args.steps} timed steps after {args.warmup} warm-up steps, batched env on {dev}",
          flush=True)
    print(f"machine: {_machine()}", flush=True)
    for n in sizes(args.sklearn):
        venv = DummyVecEnv([_make_pool_env(pool_kwargs, args.seed + i) for i in range(n)])
        record("sklearn-dummy", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()
    for n in sizes(args.subproc):
        venv = SubprocVecEnv([_make_pool_env(pool_kwargs, args.seed + i) for i in range(n)], start_method=args.start_method)
        record("sklearn-subproc", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()
    for th in sizes(args.threads):
        for n in sizes(args.batched):
            venv = BatchedPoolVecEnv(num_envs=n, device=args.device, seed=args.seed, threads=th, **kwargs)
            record("torch-batched", n, *time_vec_env(venv, args.steps, args.warmup, args.seed), threads=th)
            venv.close()

    sub = {r["n_envs"]: r for r in rows if r["env"] == "sklearn-subproc"}
    ref = sub.get(64) or (sub[max(sub)] if sub else None)
    print(f"\nmachine at the end: {_machine()}")
    print(f"\n| env | N | torch threads | reset s | env-steps/s (steps only) | env-steps/s incl. reset "
          f"(round of {B}) | vs subproc-{ref['n_envs'] if ref else '-'} steps only | incl. reset |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ra = f"{r['steps_per_s'] / ref['steps_per_s']:.1f}x" if ref else "-"
        rb = f"{r['incl_reset_per_s'] / ref['incl_reset_per_s']:.1f}x" if ref else "-"
        th = r["threads"] if r["threads"] is not None else "-"
        print(f"| {r['env']} | {r['n_envs']} | {th} | {r['reset_s']:.2f} | {r['steps_per_s']:.1f} | "
              f"{r['incl_reset_per_s']:.1f} | {ra} | {rb} |")
    b64 = [r for r in rows if r["env"] == "torch-batched" and r["n_envs"] == 64]
    if ref is not None and ref["n_envs"] == 64 and b64:
        for r in b64:
            print(f"\nbatched-64 ({r['threads']} torch thread(s)) vs SubprocVecEnv-64: "
                  f"{r['steps_per_s'] / ref['steps_per_s']:.1f}x steps only, "
                  f"{r['incl_reset_per_s'] / ref['incl_reset_per_s']:.1f}x incl. resets "
                  f"(acceptance: >= 10x steps only)")
    return rows


if __name__ == "__main__":
    main()
