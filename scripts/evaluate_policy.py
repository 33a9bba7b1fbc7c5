#!/usr/bin/env python
"""Evaluate a learned policy against heuristics on the meta-test datasets.

    python scripts/evaluate_policy.py --policy default --budgets 50 200 --seeds 20 \
        --learner logreg --strategies random,margin,entropy,least_confident --jobs 2 --out runs/eval_logreg

Same as ``metaal evaluate``; writes ``DIR/results.json``, ``DIR/results.md`` and per budget
``DIR/<learner>_b<B>/`` (curves.csv, summary.csv, curves.png, TensorBoard).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from metaal.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
