"""``metaal featurize``: raw text or images -> an ``.npz`` of features that every command reads.

Examples::

    metaal featurize --data sms_spam --kind text --limit 1000 --out sms_feats.npz
    metaal featurize --data usps --kind image --model hog --out usps_hog.npz
    metaal featurize --data ./photos --kind image --model encoder.pt --out photo_feats.npz
    metaal featurize --data notes.txt --out notes_feats.npz                 # unlabeled: one document per line
    metaal featurize --data tickets.csv --text-column body --out tickets_feats.npz

Unlabeled inputs (a ``.txt``, a CSV text column, a folder of images without class sub-folders, an
``.npz`` without ``y``) give an ``.npz`` with ``X`` and the raw text / images and **no** ``y``;
``metaal label --data OUT.npz --classes a,b,c`` labels it.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metaal.featurize import RawData, featurize_dataset, load_raw, subsample, subsample_rows
from metaal.label_cli import DefaultsFormatter


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "featurize",
        help="turn raw text or images into features (.npz)",
        description="Embed text (sentence-transformers, offline) or images (HOG, pixels, PCA, ResNet, "
        "a TorchScript file or module:callable) and write X, y, classes and the raw data to an .npz.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        help="dataset name / .npz with text or images (with or without y), a .txt (one document per line), "
        "a .csv (with --text-column), a folder CLASS/*.png, or a folder of unlabeled images",
    )
    p.add_argument("--text-column", default=None, help="the CSV column that holds the documents (for a .csv --data)")
    p.add_argument("--kind", default="auto", choices=["auto", "text", "image"],
                   help="what the data holds: text, images, or auto (from the file)")
    p.add_argument(
        "--model",
        default=None,
        help="text: 'minilm' (default, bundled offline) or a local sentence-transformers folder; "
        "image: hog (default), pixels, pca, resnet18, resnet50, FILE.pt (TorchScript) or module:callable",
    )
    p.add_argument("--weights", default=None, help="local weights file for resnet18/50 or a module:callable encoder")
    p.add_argument("--features", default=None, help="attach precomputed features (.npy or .npz with X) instead")
    p.add_argument("--limit", type=int, default=None, help="keep a stratified random subset of N rows")
    p.add_argument("--batch-size", type=int, default=64, help="items per encoder batch")
    p.add_argument("--components", type=int, default=50, help="PCA components (--model pca)")
    p.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE before a torch encoder")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit's subset and of the encoder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = load_raw(args.data, text_column=args.text_column)
    if args.limit is not None:
        data = (
            subsample_rows(data, args.limit, seed=args.seed)
            if isinstance(data, RawData)
            else subsample(data, args.limit, seed=args.seed)
        )
    kwargs: dict[str, Any] = {"batch_size": args.batch_size, "device": args.device, "progress": not args.no_progress}
    kind = args.kind
    if kind == "image" or (kind == "auto" and data.text is None):
        kwargs.update(weights=args.weights, n_components=args.components, size=args.size, seed=args.seed)
    out = featurize_dataset(data, kind=kind, model=args.model, features=args.features, **kwargs)
    path = Path(args.out)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    assert out.X is not None
    if isinstance(out, RawData):
        what = "unlabeled (no y)" + (f", classes {','.join(out.classes)}" if out.classes is not None else "")
    else:
        what = f"{out.n_classes} classes"
    print(f"wrote {path}: X {out.X.shape[0]} x {out.X.shape[1]} float32, {what}")
    return 0
