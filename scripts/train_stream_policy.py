#!/usr/bin/env python
"""Train the learned stream policy (see metaal.agents.stream_policy) from a config.

    python scripts/train_stream_policy.py --config configs/stream.yaml --out runs/stream [--ship]

``--ship`` copies the result to metaal/policies/stream-default.{zip,json}.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/stream.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timesteps", type=int, default=None, help="override total_timesteps")
    ap.add_argument("--ship", action="store_true", help="copy to metaal/policies/stream-default.*")
    args = ap.parse_args(argv)
    import scipy.optimize  # noqa: F401  (load every BLAS before limiting threads)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    from metaal.agents.stream_policy import load_stream_config, train_stream_policy
    from metaal.errors import MetaalError

    threadpool_limits(1)
    try:
        cfg = load_stream_config(args.config)
    except MetaalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.timesteps:
        cfg["total_timesteps"] = int(args.timesteps)
    t0 = time.perf_counter()
    zp = train_stream_policy(cfg, args.out)
    print(f"trained {cfg['total_timesteps']} steps in {time.perf_counter() - t0:.0f} s: {zp}")
    if args.ship:
        import metaal

        dst = Path(metaal.__file__).resolve().parent / "policies"
        shutil.copyfile(zp, dst / "stream-default.zip")
        shutil.copyfile(zp.with_suffix(".json"), dst / "stream-default.json")
        print(f"shipped to {dst}/stream-default.zip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
