"""Steps per second of the vector environments: scikit-learn Pool-v0 envs vs the batched torch env.

    python scripts/bench_vec.py [--dataset waveform] [--steps 10] [--device auto]

Every configuration runs the same dataset (default: the shared 5,000-row ``waveform``, found along
``METAAL_DATA``) with the same episode settings and uniformly random valid actions (so
``margin_gain``'s counterfactual fit is needed at almost every step). Timed: ``--steps`` steps in
the middle of the episodes (the budget is larger than warm-up + timed steps, so no reset falls
inside the timed window); the time of ``reset()`` is reported separately.

Configurations (one run, so the ratios compare like with like):

* ``sklearn-dummy``: N Pool-v0 envs (scikit-learn LogisticRegression, ``warm_start=True`` unless
  ``--cold``) in a DummyVecEnv (1 and 8);
* ``sklearn-subproc``: 64 Pool-v0 envs in a SubprocVecEnv (one process each, ``fork``);
* ``torch-batched``: :class:`metaal.envs.vec_pool.BatchedPoolVecEnv` with 1, 8, 64, 256 episodes.

Measured on the 2-core development machine (CPU only, shared with other jobs: load average 10 to
20; one run of ``python scripts/bench_vec.py``: 10 timed steps, random valid actions, 3,000-row
pools, Pool-v0 warm-started):

    | env             |   N | reset s | env-steps/s | vs sklearn-subproc 64 | vs best sklearn |
    |-----------------|----:|--------:|------------:|----------------------:|----------------:|
    | sklearn-dummy   |   1 |    0.06 |       178.7 |                  2.2x |            1.0x |
    | sklearn-dummy   |   8 |    0.41 |       181.5 |                  2.3x |            1.0x |
    | sklearn-subproc |  64 |    9.27 |        80.1 |                  1.0x |            0.4x |
    | torch-batched   |   1 |    0.11 |       284.2 |                  3.6x |            1.6x |
    | torch-batched   |   8 |    0.59 |       990.8 |                 12.4x |            5.5x |
    | torch-batched   |  64 |    4.89 |      1178.7 |                 14.7x |            6.5x |
    | torch-batched   | 256 |   19.31 |      1166.0 |                 14.6x |            6.4x |

The batched figures are stable across runs (950 to 1,240 env-steps/s at N=64); the 64-process
SubprocVecEnv is not (80 to 125 env-steps/s on the busy machine, 270 in one run that found it
idle, where the ratio at N=64 fell to 4.4x: the SubprocVecEnv then has both cores, the batched env
one). Resets are not free: a new round (splits, the observer's pool geometry, initial and
whole-pool headroom fits) takes ~5 s for 64 episodes on 3,000-row pools, so with 50-label
episodes the batched env runs ~3,200 env-steps in ~7.5 s per round including the reset.

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
    p.add_argument("--threads", type=int, default=1, help="torch threads of the batched env")
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

    def record(kind: str, n: int, t_reset: float, sps: float) -> None:
        rows.append({"env": kind, "n_envs": n, "reset_s": t_reset, "steps_per_s": sps})
        print(f"  {kind:<16} N={n:<4} reset {t_reset:7.2f} s   {sps:9.1f} env-steps/s", flush=True)

    dev = resolve_device(args.device)
    print(f"dataset {args.dataset}, {args.steps} timed steps, torch {torch.__version__} on {dev}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}", flush=True)
    for n in sizes(args.sklearn):
        venv = DummyVecEnv([_make_pool_env(pool_kwargs, args.seed + i) for i in range(n)])
        record("sklearn-dummy", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()
    for n in sizes(args.subproc):
        venv = SubprocVecEnv([_make_pool_env(pool_kwargs, args.seed + i) for i in range(n)], start_method=args.start_method)
        record("sklearn-subproc", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()
    for n in sizes(args.batched):
        venv = BatchedPoolVecEnv(num_envs=n, device=args.device, seed=args.seed, threads=args.threads, **kwargs)
        record("torch-batched", n, *time_vec_env(venv, args.steps, args.warmup, args.seed))
        venv.close()

    base = {r["n_envs"]: r["steps_per_s"] for r in rows if r["env"] == "sklearn-subproc"}
    ref = base.get(64) or (max(base.values()) if base else None)
    best = max((r["steps_per_s"] for r in rows if r["env"].startswith("sklearn")), default=None)
    print("\n| env | N | reset s | env-steps/s | vs sklearn-subproc 64 | vs best sklearn |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['steps_per_s'] / ref:.1f}x" if ref else "-"
        ratio_best = f"{r['steps_per_s'] / best:.1f}x" if best else "-"
        print(f"| {r['env']} | {r['n_envs']} | {r['reset_s']:.2f} | {r['steps_per_s']:.1f} | {ratio} | {ratio_best} |")
    return rows


if __name__ == "__main__":
    main()
