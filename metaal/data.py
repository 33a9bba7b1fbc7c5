"""Datasets, loaders and splits.

A :class:`Dataset` holds features ``X`` of shape ``(n, d)`` (float32), integer labels ``y`` of shape
``(n,)`` in ``0..K-1`` and the ``K`` class names. Raw ``text`` or ``images`` may ride along for
featurization and display. Loaders read ``.npz`` (the format of ``../shared/data``), CSV, LIBSVM and
scikit-learn's bundled datasets; :func:`load_dataset` also finds a dataset by name in the folders
listed in the ``METAAL_DATA`` environment variable (``:``-separated).

Splits follow the default protocol of ``DESIGN.md``: per seed, a stratified 70/30 pool/test split
(``train_test_split(..., test_size=0.3, stratify=y, random_state=seed)``) and an initial labeled set
of random pool items holding at least two classes. :func:`load_splits` reads the same splits from
JSON so that results can be compared with another library on identical splits.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qsl, urlencode

import numpy as np

from metaal.dataset import Dataset, check_features, data_arrays
from metaal.errors import DataError
from metaal.synthetic import from_spec

__all__ = [
    "DATA_ENV", "SKLEARN_DATASETS", "Dataset", "Split", "check_features", "check_initial", "choose_initial",
    "data_arrays", "data_dirs", "find_dataset", "load_csv", "load_dataset", "load_libsvm", "load_npz", "load_sklearn",
    "apply_transforms", "imbalance", "load_splits", "make_split", "pool_test_split", "save_splits",
    "split_transforms", "validate_split",
]

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits")
DATA_ENV = "METAAL_DATA"
_BUNDLED_DIR = Path(__file__).parent / "data"


def load_npz(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Load an ``.npz`` with ``y`` and ``X`` (or ``text`` / ``images``), optional ``classes``."""
    path = Path(path)
    name = name or path.stem
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc.__class__.__name__}: {exc})") from None
    if "y" not in arrays:
        raise DataError(f"{path}: no 'y' array (found {sorted(arrays)})")
    X = arrays.pop("X", None)
    y = arrays.pop("y")
    classes = arrays.pop("classes", None)
    if y.dtype.kind in "USO":  # class names as labels: mapped to 0..K-1 as a CSV's are
        classes, y = _map_labels(y, classes, where=str(path))
    text = arrays.pop("text", None)
    images = arrays.pop("images", None)
    if X is None and text is None and images is None:
        raise DataError(f"{path}: needs 'X' features, or raw 'text' / 'images' to featurize")
    return Dataset(X=X, y=y, classes=classes, name=name, text=text, images=images, extras=arrays)


def load_csv(path: str | os.PathLike, label: str | None = None, name: str | None = None) -> Dataset:
    """Load a CSV with a header; the label column is ``label`` or the last one.

    Label values may be any strings; they are mapped to ``0..K-1`` in sorted order. Every feature cell
    must be numeric: a text cell raises a :class:`DataError` that names its row and column.
    """
    path = Path(path)
    name = name or path.stem
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path}: CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    col = len(header) - 1 if label is None else (header.index(label) if label in header else None)
    if col is None:
        raise DataError(f"{path}: no label column named {label!r} (columns: {', '.join(header)})")
    feats = [i for i in range(len(header)) if i != col]
    X = np.empty((len(rows) - 1, len(feats)), dtype=np.float32)
    labels = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {r} has {len(row)} cells, header has {len(header)}")
        for j, i in enumerate(feats):
            try:
                X[r - 2, j] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{path}: line {r}, column {header[i]!r}: {row[i]!r} is not a number "
                    "(encode categorical features first)"
                ) from None
        labels.append(row[col].strip())
    classes, y = _map_labels(np.array(labels))
    return Dataset(X=X, y=y, classes=classes, name=name)


def _map_labels(
    labels: np.ndarray, classes: np.ndarray | None = None, where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Class names as labels -> ``(classes, y in 0..K-1)``: in the order of ``classes`` when given,
    else sorted (numeric names in numeric order).

    :raises DataError: for a label that ``classes`` does not hold.
    """
    labels = np.asarray([str(v).strip() for v in labels])
    if classes is not None:
        names = [str(c) for c in np.asarray(classes).ravel()]
        pos = {c: i for i, c in enumerate(names)}
        unknown = sorted(set(labels.tolist()) - set(pos))
        if unknown:
            raise DataError(f"{where}: labels {', '.join(map(repr, unknown[:5]))} are not in its classes {names}")
        return np.asarray(names), np.array([pos[v] for v in labels], dtype=np.int64)
    classes_, y = np.unique(labels, return_inverse=True)
    try:  # numeric labels keep numeric order
        order = np.argsort([float(c) for c in classes_], kind="stable")
        classes_ = classes_[order]
        y = np.argsort(order)[y]
    except ValueError:
        pass
    return classes_, y


def load_libsvm(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Load a LIBSVM/SVMlight file; labels are mapped to ``0..K-1`` in sorted order."""
    from sklearn.datasets import load_svmlight_file

    path = Path(path)
    try:
        X, raw = load_svmlight_file(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read LIBSVM file ({exc})") from None
    classes, y = np.unique(raw, return_inverse=True)
    names = np.array([str(int(c)) if float(c).is_integer() else str(c) for c in classes])
    return Dataset(X=np.asarray(X.todense(), dtype=np.float32), y=y, classes=names, name=name or path.stem)


def load_sklearn(name: str) -> Dataset:
    """Load one of scikit-learn's bundled datasets (``iris``, ``wine``, ``breast_cancer``, ``digits``)."""
    import sklearn.datasets as skd

    if name not in SKLEARN_DATASETS:
        raise DataError(f"unknown scikit-learn dataset {name!r} (bundled: {', '.join(SKLEARN_DATASETS)})")
    bunch = getattr(skd, f"load_{name}")()
    return Dataset(X=bunch.data, y=bunch.target, classes=np.asarray(bunch.target_names), name=name)


def data_dirs() -> list[Path]:
    """Folders searched for datasets by name: ``METAAL_DATA`` entries, then the bundled folder."""
    dirs = [Path(p) for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p]
    return dirs + [_BUNDLED_DIR]


def find_dataset(name: str) -> Path | None:
    """Path of ``NAME.npz`` (or ``.csv`` / ``.libsvm``) in :func:`data_dirs`, or None."""
    for d in data_dirs():
        for ext in (".npz", ".csv", ".libsvm", ".svm"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def load_dataset(spec: "str | os.PathLike | Dataset", **kwargs: Any) -> Dataset:
    """Load a dataset from a path, a name found along ``METAAL_DATA``, ``sklearn:NAME`` or a
    bare scikit-learn name, or ``synth:KIND?key=value`` for a synthetic task. A path or a name may
    end in transforms, ``NAME?imbalance=R[&seed=S]`` (:func:`imbalance`); the result is named by
    the whole spec.

    :raises DataError: if nothing matches; the message lists where it looked.
    """
    if isinstance(spec, Dataset):
        return spec
    s = str(spec)
    base, transforms = split_transforms(s)
    if transforms:
        return apply_transforms(load_dataset(base, **kwargs), transforms, spec=s)
    if s.startswith("sklearn:"):
        return load_sklearn(s.split(":", 1)[1])
    if s.startswith("synth:"):
        return from_spec(s)
    p = Path(s)
    if p.suffix and p.exists():
        suffix = p.suffix.lower()
        if suffix == ".npz":
            return load_npz(p)
        if suffix == ".csv":
            return load_csv(p, **kwargs)
        if suffix in (".libsvm", ".svm", ".svmlight", ".txt"):
            return load_libsvm(p)
        raise DataError(f"{p}: unknown dataset format {suffix!r} (use .npz, .csv or .libsvm)")
    if p.suffix in (".npz", ".csv", ".libsvm", ".svm"):
        raise DataError(f"{p}: no such file")
    found = find_dataset(s)
    if found is not None:
        return load_dataset(found, **kwargs)
    if s in SKLEARN_DATASETS:
        return load_sklearn(s)
    where = ", ".join(str(d) for d in data_dirs())
    raise DataError(
        f"dataset {s!r} not found: not a file, not in {DATA_ENV} folders ({where or 'none set'}), "
        f"not a scikit-learn dataset ({', '.join(SKLEARN_DATASETS)})"
    )


# ----------------------------------------------------------------------------------------------
# transforms

#: the transforms a dataset spec may end in (``NAME?key=value&...``) and their parameters
TRANSFORM_KEYS = ("imbalance", "seed")


def split_transforms(spec: str) -> tuple[str, dict[str, str]]:
    """``"NAME?imbalance=0.05&seed=1"`` -> ``("NAME", {"imbalance": "0.05", "seed": "1"})``;
    ``synth:`` specs keep their own query (generator parameters) and have no transforms; a path
    that exists as given is never split.

    :raises DataError: for an unknown key or a key given twice.
    """
    if spec.startswith("synth:") or "?" not in spec or Path(spec).exists():
        return spec, {}
    base, _, query = spec.rpartition("?")
    out: dict[str, str] = {}
    for key, val in parse_qsl(query, keep_blank_values=True):
        if key not in TRANSFORM_KEYS:
            raise DataError(f"unknown dataset transform {key!r} in {spec!r} (known: {', '.join(TRANSFORM_KEYS)})")
        if key in out:
            raise DataError(f"{key!r} given twice in {spec!r}")
        out[key] = val
    if "imbalance" not in out:
        raise DataError(f"{spec!r}: a dataset transform needs imbalance=R (seed=S only seeds it)")
    return base, out


def apply_transforms(dataset: Dataset, transforms: dict[str, str], spec: str) -> Dataset:
    """Apply :func:`split_transforms`'s transforms to ``dataset``; the result is named ``spec``'s
    tail on the dataset's name (``banknote?imbalance=0.05``).

    :raises DataError: for a value that is not a number or out of range.
    """
    try:
        ratio = float(transforms["imbalance"])
        seed = int(transforms.get("seed", 0))
    except ValueError:
        raise DataError(f"{spec!r}: imbalance must be a number in (0, 1) and seed an integer") from None
    out = imbalance(dataset, ratio, seed)
    out.name = f"{dataset.name}?{urlencode(transforms)}"
    return out


def imbalance(dataset: Dataset, ratio: float, seed: int = 0) -> Dataset:
    """A class-imbalanced subsample: the largest class is kept whole and every other class is
    subsampled (without replacement, ``default_rng(seed)``) so that it makes up a share
    ``ratio`` of the result: ``m = ratio * n_largest / (1 - (K - 1) * ratio)`` rows each, at
    least 2 (a stratified split needs two) and at most what the class has. Rows keep their order;
    text, images and extras follow them.

    :param ratio: the share of each minority class in the result, in ``(0, 1 / (K - 1))``.
    :raises DataError: for a ratio outside that range.
    """
    if not 0.0 < ratio < 1.0:
        raise DataError(f"imbalance ratio must be in (0, 1) (got {ratio})")
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    present = np.flatnonzero(counts)
    K = len(present)
    if (K - 1) * ratio >= 1.0:
        raise DataError(
            f"{dataset.name}: imbalance ratio {ratio} is too large for {K} classes "
            f"(each of the {K - 1} smaller classes would be {ratio:.0%} of the result; use < {1 / (K - 1):.3f})"
        )
    largest = int(present[np.argmax(counts[present])])
    n_l = int(counts[largest])
    m = int(round(ratio * n_l / (1.0 - (K - 1) * ratio)))
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(dataset.y == largest)]
    for c in present:
        if c == largest:
            continue
        rows = np.flatnonzero(dataset.y == c)
        take = int(min(len(rows), max(m, 2)))
        keep.append(rng.choice(rows, size=take, replace=False))
    return dataset.subset(np.sort(np.concatenate(keep)))


# ----------------------------------------------------------------------------------------------
# splits


@dataclass
class Split:
    """Indices into a dataset's rows: ``pool`` (to query from), ``test`` and ``initial`` (subset of
    ``pool``, labeled before the first query)."""

    pool: np.ndarray
    test: np.ndarray
    initial: np.ndarray
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": int(self.seed),
            "pool": [int(i) for i in self.pool],
            "test": [int(i) for i in self.test],
            "initial": [int(i) for i in self.initial],
        }


def check_initial(n_initial: int, option: str = "the initial labeled set") -> None:
    """``n_initial`` must be 0 (cold start) or at least 2 (an initial set holds two classes).

    :raises DataError: naming ``option`` otherwise.
    """
    if n_initial != 0 and n_initial < 2:
        raise DataError(f"{option} must be 0 (cold start) or >= 2 items holding two classes (got {n_initial})")


def choose_initial(y_pool: np.ndarray, n_initial: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into the pool) of ``n_initial`` random items holding at least two classes; none
    for ``n_initial = 0`` (the cold start: the strategy picks from the very first label).

    :param y_pool: labels of the pool, shape ``(n_pool,)``.
    :raises DataError: for ``n_initial`` 1 or negative (an initial set holds two classes), or
        larger than the pool.
    """
    n_pool = len(y_pool)
    check_initial(n_initial)
    if n_initial == 0:
        return np.zeros(0, dtype=np.int64)
    if n_initial > n_pool:
        raise DataError(f"initial set of {n_initial} is larger than the pool ({n_pool} items)")
    if len(np.unique(y_pool)) < 2:
        raise DataError("the pool holds a single class; active learning needs at least two")
    perm = rng.permutation(n_pool)
    chosen = perm[:n_initial]
    if len(np.unique(y_pool[chosen])) < 2:
        # swap the last pick for the first item (in random order) of another class
        other = perm[n_initial:][y_pool[perm[n_initial:]] != y_pool[chosen[0]]][0]
        chosen = np.concatenate([chosen[:-1], [other]])
    return np.sort(chosen)


def make_split(
    dataset: Dataset, seed: int, n_initial: int = 10, test_size: float = 0.3
) -> Split:
    """The default protocol: stratified pool/test split with ``random_state=seed`` and a random
    initial set (from ``numpy.random.default_rng(seed)``) holding at least two classes (empty for
    ``n_initial = 0``)."""
    pool, test = pool_test_split(dataset, seed, test_size)
    rng = np.random.default_rng(seed)
    initial = pool[choose_initial(dataset.y[pool], n_initial, rng)]
    return Split(pool=pool, test=test, initial=initial, seed=seed)


def pool_test_split(dataset: Dataset, seed: int, test_size: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(pool, test)`` of ``train_test_split(..., test_size, stratify=y,
    random_state=seed)`` (unstratified when a class has a single row)."""
    from sklearn.model_selection import train_test_split

    dataset.check_for_learning()
    idx = np.arange(dataset.n)
    counts = np.bincount(dataset.y)
    stratify = dataset.y if counts[counts > 0].min() >= 2 else None
    try:
        pool, test = train_test_split(idx, test_size=test_size, stratify=stratify, random_state=seed)
    except ValueError as exc:
        raise DataError(f"{dataset.name}: cannot split pool/test ({exc})") from None
    return np.asarray(pool), np.asarray(test)


def load_splits(path: str | os.PathLike, dataset: Dataset | None = None) -> tuple[str | None, list[Split]]:
    """Read ``{"dataset": NAME, "splits": [{"seed", "pool", "test", "initial"}, ...]}``.

    :returns: the dataset name in the file (or None) and the splits, validated against ``dataset``
        when given (indices in range, ``initial`` inside ``pool``, pool and test disjoint).
    """
    path = Path(path)
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read splits JSON ({exc})") from None
    if not isinstance(doc, dict) or "splits" not in doc:
        raise DataError(f"{path}: expected an object with a 'splits' list")
    splits = []
    for i, s in enumerate(doc["splits"]):
        try:
            sp = Split(
                pool=np.asarray(s["pool"], dtype=np.int64),
                test=np.asarray(s["test"], dtype=np.int64),
                initial=np.asarray(s["initial"], dtype=np.int64),
                seed=int(s.get("seed", i)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: split {i} is malformed ({exc})") from None
        if dataset is not None:
            validate_split(sp, dataset, where=f"{path}: split {i}")
        splits.append(sp)
    return doc.get("dataset"), splits


def save_splits(path: str | os.PathLike, dataset_name: str, splits: Sequence[Split]) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"dataset": dataset_name, "splits": [s.to_json() for s in splits]}))
    return path


def validate_split(split: Split, dataset: Dataset, where: str = "split") -> None:
    n = dataset.n
    for key in ("pool", "test", "initial"):
        a = getattr(split, key)
        if a.ndim != 1 or (a.size and (a.min() < 0 or a.max() >= n)):
            raise DataError(f"{where}: '{key}' indices must be in 0..{n - 1}")
    if np.intersect1d(split.pool, split.test).size:
        raise DataError(f"{where}: pool and test overlap")
    if not np.isin(split.initial, split.pool).all():
        raise DataError(f"{where}: 'initial' must be a subset of 'pool'")
    if split.initial.size and len(np.unique(dataset.y[split.initial])) < 2:
        raise DataError(f"{where}: the initial set must be empty (cold start) or hold at least two classes")
