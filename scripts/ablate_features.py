#!/usr/bin/env python
"""Feature ablation of an ``obs-v2`` training run on the validation datasets, in every protocol.

For each feature group, behaviour cloning is rerun on the run's first demonstrations
(``demos_0.npz``) with the group's features set to 0, with the best behaviour-cloning variant's
settings; the policy is saved with those features dropped from its observer (it never sees them at
deployment either) and validated like the run's stages (``eval.protocols``, seeds, budget). The
table puts each ablation beside the full behaviour-cloning stage: a group whose removal does not
lower the mean over the protocols earns no place in the observation.

    python scripts/ablate_features.py --run runs/adaptive --out runs/adaptive_ablation
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import yaml

from metaal.agents.imitation import Demonstrations, bc_train
from metaal.agents.policy_file import read_metadata, save_policy
from metaal.agents.train import Validator, load_config, make_model, model_algo
from metaal.observe import feature_names

GROUPS = {
    "coverage": ["coverage_gain", "from_coverage", "coverage"],
    "batch": ["dist_batch", "log_batch", "batch_progress"],
    "cold_imbalance": ["no_model", "min_class_ratio"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="an obs-v2 training output folder (metaal train)")
    ap.add_argument("--out", required=True, help="folder for the ablated policies and their validation")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {', '.join(GROUPS)}")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    if not (run / "demos_0.npz").is_file() or not (run / "validation.json").is_file():
        print(f"ablate_features: {run} holds no finished imitation stage (demos_0.npz, validation.json)",
              file=sys.stderr)
        return 2
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        print(f"ablate_features: unknown groups {', '.join(bad)} (known: {', '.join(GROUPS)})", file=sys.stderr)
        return 2
    raw = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("train_names", "validation_names"):
        raw["datasets"].pop(key, None)
    cfg = load_config(raw)
    version = cfg["obs_version"]
    names_c, names_g = feature_names(version)
    results = json.loads((run / "validation.json").read_text())
    bc = [s for s in results if s.startswith("bc")]
    base = max(bc, key=lambda s: results[s]["aulc_policy"])
    var = read_metadata(results[base]["zip"]).get("variant") or {}
    im = {**cfg["imitation"], **{k: v for k, v in var.items() if k in cfg["imitation"]}}
    vcfg = copy.deepcopy(cfg)
    vcfg["network"].update({k: v for k, v in var.items() if k in vcfg["network"]})
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "val_baselines.json", out / "val_baselines.json")
    validator = Validator(cfg, out)
    demos = Demonstrations.load(str(run / "demos_0.npz"))
    rows = {base: results[base]}
    for g in groups:
        feats = GROUPS[g]
        d = copy.copy(demos)
        d.candidates = demos.candidates.copy()
        d.global_ = demos.global_.copy()
        d.candidates[..., [names_c.index(f) for f in feats if f in names_c]] = 0.0
        d.global_[:, [names_g.index(f) for f in feats if f in names_g]] = 0.0
        model = make_model(vcfg, algo="MaskablePPO")
        bc_train(model.policy, d, epochs=int(im["epochs"]), lr=float(im["lr"]), batch_size=int(im["batch_size"]),
                 tau=float(im["tau"]), seed=int(cfg["seed"]))
        zp = save_policy(model, out / f"without_{g}.zip", k=int(cfg["k"]), algo=model_algo(model),
                         datasets=list(cfg["datasets"]["train_names"]), config=vcfg, observer={"drop": feats},
                         obs_version=version, extra={"stage": f"without_{g}", "variant": var})
        rows[f"without {g}"] = validator.evaluate(f"without_{g}", zp)
    protos = list(rows[base].get("per_protocol", {"default": None}))
    print(f"| policy | {' | '.join(protos)} | mean |")
    print("|---|" + "---|" * (len(protos) + 1))
    for name, r in rows.items():
        per = r.get("per_protocol")
        cells = [f"{per[p]['policy']:.4f}" for p in protos] if per else [f"{r['aulc_policy']:.4f}"]
        print(f"| {name} | {' | '.join(cells)} | {r['aulc_policy']:.4f} |")
    (out / "ablation.json").write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_dataset"}
                                                   for k, v in rows.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
