"""The ``metaal`` command.

Each sub-command lives in its own module that defines ``register(subparsers)`` (adding its parser
and setting ``func``); heavy imports happen inside the command functions. A :class:`MetaalError`
is printed as one line ``metaal: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from metaal import __version__
from metaal.errors import MetaalError

COMMAND_MODULES = [
    "metaal.experiments.train",
    "metaal.experiments.evaluate",
    "metaal.experiments.compare",
    "metaal.featurize_cli",
    "metaal.label_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaal", description="Learn how to choose what to label.")
    parser.add_argument("--version", action="version", version=f"metaal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MetaalError as exc:
        print(f"metaal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
