#!/usr/bin/env python
"""Train a query policy from a YAML config and optionally install it as the shipped default.

    python scripts/train_policy.py --config configs/default.yaml --out runs/default [--install]

Same as ``metaal train --config ... --out ...``; ``--install`` then copies ``DIR/policy.zip`` and
``DIR/policy.json`` to ``metaal/policies/default.zip`` / ``default.json`` (the checksum in the
JSON covers the zip, so the pair stays valid).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--install", action="store_true", help="copy the result to metaal/policies/default.*")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from metaal.cli import main as cli

    argv2 = ["train", "--config", args.config, "--out", args.out] + (["--resume"] if args.resume else []) + (
        ["--no-progress"] if args.no_progress else [])
    rc = cli(argv2)
    if rc == 0 and args.install:
        import metaal

        dest = Path(metaal.__file__).resolve().parent / "policies"
        dest.mkdir(exist_ok=True)
        shutil.copyfile(Path(args.out) / "policy.zip", dest / "default.zip")
        shutil.copyfile(Path(args.out) / "policy.json", dest / "default.json")
        print(f"installed {dest / 'default.zip'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
