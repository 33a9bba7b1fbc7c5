"""The ``metaal`` command.

Each sub-command lives in its own module that defines ``register(subparsers)`` (adding its parser
and setting ``func``); heavy optional imports (torch, SB3, encoders) happen inside the functions
that need them. A :class:`MetaalError`
is printed as one line ``metaal: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from metaal import __version__, featurize_cli, label_cli, labelstudio
from metaal.errors import MetaalError
from metaal.experiments import compare, evaluate, train

COMMAND_MODULES = [train, evaluate, compare, featurize_cli, label_cli, labelstudio]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaal", description="Learn how to choose what to label.")
    parser.add_argument("--version", action="version", version=f"metaal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A warning on the command line: one line ``metaal: warning: ...`` (no source line)."""
    print(f"metaal: warning: {message}", file=sys.stderr if file is None else file, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the sub-command's usage, not the top-level one
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        owner = sub.choices.get(args.command) if getattr(args, "command", None) else None
        (owner or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except MetaalError as exc:
        print(f"metaal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaal: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `metaal label ... | head`: the reader left; what was labeled is stored
        quiet_stdout()
        return 1


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again on a closed
    pipe (the recipe of the ``signal`` module's documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
