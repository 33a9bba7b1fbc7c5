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
* ``torch-batched``: :class:`metaal.agents.vec_env.BatchedPoolVecEnv` with 1, 8, 64, 256 episodes
  in this process (``--threads 1,2`` adds rows with two torch threads);
* ``torch-batched-Wp``: the same episodes over ``W`` worker processes
  (:func:`metaal.agents.vec_shard.make_batched_vec_env`, ``--workers``; default rows for 1 and 2).

The figures of the last run, with the machine and its load, are in ``docs/benchmarks.md``.

Each process is pinned to one BLAS / torch thread (``OMP_NUM_THREADS=1``, set before numpy is
imported): the SubprocVecEnv uses every core through its processes, the in-process batched env one
core, the ``W``-process batched env ``W`` cores.
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
    p.add_argument("--workers", default="1,2",
                   help="worker processes of the batched env (comma list: one row each; 1 = in this process, "
                        "W > 1 = metaal.agents.vec_shard.make_batched_vec_env with N/W episodes per process)")
    p.add_argument("--round-budget", type=int, default=50,
                   help="episode length used for the 'incl. reset' figures (Pool-v0's default budget)")
    p.add_argument("--cold", action="store_true",
                   help="Pool-v0 without warm_start (default: warm-started, its fastest setting)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from metaal.agents.vec_shard import make_batched_vec_env
    from metaal.torch_learners import resolve_device

    kwargs = _env_kwargs(args)
    pool_kwargs = dict(kwargs, warm_start=not args.cold)  # the batched env always warm-starts
    sizes = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    rows: list[dict[str, Any]] = []
    B = args.round_budget

    def record(kind: str, n: int, t_reset: float, sps: float, threads: int | None = None, workers: int = 1) -> None:
        # a whole round: one reset of the N episodes, then B steps of all N
        incl = B * n / (t_reset + B * n / sps)
        rows.append({"env": kind, "n_envs": n, "threads": threads, "workers": workers, "reset_s": t_reset,
                     "steps_per_s": sps, "incl_reset_per_s": incl, "load": os.getloadavg()[0]})
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
        venv = SubprocVecEnv(
            [_make_pool_env(pool_kwargs, args.seed + i) for i in range(n)], start_method=args.start_method
        )
        record("sklearn-subproc", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()
    for w in sizes(args.workers):
        for th in sizes(args.threads):
            for n in sizes(args.batched):
                if n < w:
                    continue
                venv = make_batched_vec_env(n, workers=w, device=args.device, seed=args.seed, threads=th, **kwargs)
                kind = "torch-batched" if w == 1 else f"torch-batched-{w}p"
                record(kind, n, *time_vec_env(venv, args.steps, args.warmup, args.seed), threads=th, workers=w)
                venv.close()

    sub = {r["n_envs"]: r for r in rows if r["env"] == "sklearn-subproc"}
    ref = sub.get(64) or (sub[max(sub)] if sub else None)
    print(f"\nmachine at the end: {_machine()}")
    print(f"\n| env | N | processes | torch threads | reset s | env-steps/s (steps only) | env-steps/s incl. reset "
          f"(round of {B}) | vs subproc-{ref['n_envs'] if ref else '-'} steps only | incl. reset |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ra = f"{r['steps_per_s'] / ref['steps_per_s']:.1f}x" if ref else "-"
        rb = f"{r['incl_reset_per_s'] / ref['incl_reset_per_s']:.1f}x" if ref else "-"
        th = r["threads"] if r["threads"] is not None else "-"
        procs = r["n_envs"] if r["env"] == "sklearn-subproc" else r["workers"]
        print(f"| {r['env']} | {r['n_envs']} | {procs} | {th} | {r['reset_s']:.2f} | {r['steps_per_s']:.1f} | "
              f"{r['incl_reset_per_s']:.1f} | {ra} | {rb} |")
    b64 = [r for r in rows if r["env"].startswith("torch-batched") and r["n_envs"] == 64]
    if ref is not None and ref["n_envs"] == 64 and b64:
        for r in b64:
            print(f"\nbatched-64 ({r['workers']} process(es), {r['threads']} torch thread(s)) vs SubprocVecEnv-64: "
                  f"{r['steps_per_s'] / ref['steps_per_s']:.1f}x steps only, "
                  f"{r['incl_reset_per_s'] / ref['incl_reset_per_s']:.1f}x incl. resets "
                  f"(acceptance: >= 10x steps only)")
    return rows


if __name__ == "__main__":
    main()
