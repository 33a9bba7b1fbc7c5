"""Merge ``metaal evaluate`` results run on disjoint groups of datasets into one table.

    python scripts/merge_evaluations.py runs/eval_a/results.json runs/eval_b/results.json \
        [--out merged.json]

Every input must come from the same protocol (policy, learner, seeds, initial set, strategies,
budgets); the per-dataset entries (mean AULC, rank, Wilcoxon test against margin and, for the
policy, against random) are taken as they are, and the aggregate rows (mean AULC, mean rank,
wins/ties/losses against margin, datasets where the policy beats random) are recomputed over the
union, exactly as ``metaal evaluate`` computes them. Prints the Markdown of
:func:`metaal.experiments.evaluate.results_markdown` (the merge is
:func:`metaal.experiments.evaluate.merge_results`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metaal.experiments.evaluate import merge_results, results_markdown


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files of `metaal evaluate`")
    p.add_argument("--out", type=Path, help="write the merged results.json here")
    args = p.parse_args(argv)
    merged = merge_results([json.loads(f.read_text()) for f in args.results])
    if args.out:
        args.out.write_text(json.dumps(merged, indent=2))
    print(results_markdown(merged))
    return merged


if __name__ == "__main__":
    main()
