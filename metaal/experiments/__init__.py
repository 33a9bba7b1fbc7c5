"""Runners over the lower layers: ``metaal compare`` (:mod:`~metaal.experiments.compare`, cells
in :mod:`~metaal.experiments.runner`, outputs in :mod:`~metaal.experiments.report`),
``metaal train`` (:mod:`~metaal.experiments.train`) and ``metaal evaluate``
(:mod:`~metaal.experiments.evaluate`).

The public functions are importable from here (``from metaal.experiments import run_cells``); they
are loaded on first use, so that a joblib worker that unpickles a cell of
:mod:`~metaal.experiments.runner` does not import the training code.
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "run_cells": "metaal.experiments.runner",
    "summarize": "metaal.experiments.runner",
    "write_report": "metaal.experiments.report",
    "evaluate_policy": "metaal.experiments.evaluate",
    "merge_results": "metaal.experiments.evaluate",
    "results_markdown": "metaal.experiments.evaluate",
    "paired_test": "metaal.experiments.evaluate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'metaal.experiments' has no attribute {name!r}")
