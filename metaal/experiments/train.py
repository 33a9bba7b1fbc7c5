"""``metaal train``: meta-train a query policy from a YAML config (:func:`metaal.agents.train.train`).

::

    metaal train --config configs/default.yaml --out DIR [--resume | --force] [--no-progress]

It prints one line as each stage starts (``stage 2/4: imitation (behaviour cloning) ...``) and a
tqdm bar with the time left for the long loops. A folder that already holds a run (finished or
started) is refused unless ``--resume`` (continue it) or ``--force`` (remove its files, start over).

``--config`` is a YAML path, or the name of a config shipped with metaal (``default``,
``configs/default.yaml``; see :func:`metaal.agents.train.config_path`). The evaluation of a trained
policy (``metaal evaluate``) is :mod:`metaal.experiments.evaluate`.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from metaal.agents.train import train


def register(subparsers: Any) -> None:
    """Add the ``train`` parser to the ``metaal`` command."""
    p = subparsers.add_parser("train", help="meta-train a query policy from a YAML config",
                              description="Meta-train a query policy (imitation and/or RL) as configured; "
                                          "writes DIR/policy.zip + policy.json, DIR/tb/, DIR/checkpoints/.")
    p.add_argument(
        "--config",
        required=True,
        metavar="YAML",
        help="training configuration: a YAML path or a shipped config name (default, configs/default.yaml)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run in DIR "
                       "(the demonstrations, stages and checkpoints already there are kept)")
    again.add_argument("--force", action="store_true", help="remove a previous run's files from DIR and start over")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = train(args.config, args.out, resume=args.resume, force=args.force, progress=not args.no_progress,
                    say=lambda line: print(line, flush=True))
    v = summary["validation"]
    print(f"policy: {summary['policy']} (stage {summary['stage']}, {summary['seconds']} s)")
    print(f"validation mean AULC: policy {v['aulc_policy']:.4f}  margin {v['aulc_margin']:.4f}  "
          f"random {v['aulc_random']:.4f}")
    return 0
