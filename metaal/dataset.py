"""The :class:`Dataset` type and the checks of its arrays.

It sits below both :mod:`metaal.data` (loaders, splits) and :mod:`metaal.synthetic` (generated
tasks), so that the loaders can dispatch ``synth:`` specs to the generators without an import
cycle; :mod:`metaal.data` re-exports every name here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaal.errors import DataError

__all__ = ["Dataset", "as_labels", "check_features", "data_arrays"]


@dataclass
class Dataset:
    """A labeled classification dataset.

    :param X: features, shape ``(n, d)``, float32; ``None`` only for raw text/images awaiting
        featurization.
    :param y: labels, shape ``(n,)``, int64 in ``0..K-1``.
    :param classes: class names, shape ``(K,)``.
    :param name: a short name (file stem or registry name).
    :param text: optional raw documents, shape ``(n,)``.
    :param images: optional raw pixels, shape ``(n, H, W)`` or ``(n, H, W, C)``, uint8.
    :param extras: any other per-row arrays found in the file (``is_test``, ...).
    """

    X: np.ndarray | None
    y: np.ndarray
    classes: np.ndarray
    name: str = "dataset"
    text: np.ndarray | None = None
    images: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = as_labels(self.y, self.name)
        n = len(self.y)
        if self.classes is None or len(self.classes) == 0:
            self.classes = np.array([str(c) for c in range(int(self.y.max()) + 1)])
        self.classes = np.asarray([str(c) for c in self.classes])
        if self.X is not None:
            X = check_features(self.X, self.name)
            if X.shape[0] != n:
                raise DataError(
                    f"{self.name}: X has {X.shape[0]} rows but y has {n} labels (lengths must match)"
                )
            self.X = X
        for key, arr in (("text", self.text), ("images", self.images)):
            if arr is not None and len(arr) != n:
                raise DataError(f"{self.name}: {key} has {len(arr)} rows but y has {n} labels")
        if self.y.size and self.y.max() >= len(self.classes):
            raise DataError(
                f"{self.name}: label {int(self.y.max())} has no class name ({len(self.classes)} classes given)"
            )

    @property
    def n(self) -> int:
        return int(len(self.y))

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def has_features(self) -> bool:
        return self.X is not None

    def require_features(self) -> np.ndarray:
        """Return ``X`` or raise a clear error if the dataset only holds raw text or images."""
        if self.X is None:
            kind = "text" if self.text is not None else "images" if self.images is not None else "data"
            raise DataError(
                f"{self.name}: holds raw {kind} and no features X; run `metaal featurize` first"
            )
        return self.X

    def check_for_learning(self, min_per_class: int = 1) -> None:
        """Raise if the labels cannot support active learning (a single class, ...)."""
        present = np.unique(self.y)
        if len(present) < 2:
            raise DataError(
                f"{self.name}: only one class present ({self.classes[present[0]] if len(present) else 'none'}); "
                "active learning needs at least two"
            )

    def subset(self, idx: np.ndarray) -> "Dataset":
        idx = np.asarray(idx)
        return Dataset(
            X=None if self.X is None else self.X[idx],
            y=self.y[idx],
            classes=self.classes,
            name=self.name,
            text=None if self.text is None else self.text[idx],
            images=None if self.images is None else self.images[idx],
            extras={k: v[idx] for k, v in self.extras.items() if len(v) == self.n},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset as an ``.npz`` that :func:`load_npz` reads back."""
        path = Path(path)
        arrays: dict[str, Any] = {"y": self.y, "classes": self.classes}
        arrays.update(data_arrays(self.X, self.text, self.images))
        arrays.update(self.extras)
        np.savez_compressed(path, **arrays)
        return path


def data_arrays(X: np.ndarray | None, text: np.ndarray | None, images: np.ndarray | None) -> dict[str, Any]:
    """The ``X`` / ``text`` / ``images`` arrays that are present, as they are saved in an ``.npz``."""
    arrays: dict[str, Any] = {}
    if X is not None:
        arrays["X"] = X
    if text is not None:
        arrays["text"] = np.asarray(text, dtype=str)
    if images is not None:
        arrays["images"] = images
    return arrays


def check_features(X: Any, name: str) -> np.ndarray:
    """``X`` as a float32 ``(n, d)`` array, or a :class:`DataError` naming the problem (not 2-D,
    not numeric, NaN or inf with the first bad row)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"{name}: features X must be 2-D (n, d), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
        raise DataError(f"{name}: features X are not numeric (dtype {X.dtype})")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(
            f"{name}: features contain NaN or inf in {len(rows)} row(s) "
            f"(first: row {rows[0]}); impute or drop them first"
        )
    return X


def as_labels(y: Any, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name}: labels y must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise DataError(f"{name}: no rows")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{name}: labels y must be integers 0..K-1 (got dtype {y.dtype})")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{name}: labels must be 0..K-1, found {int(y.min())}")
    return y


# ----------------------------------------------------------------------------------------------
# loaders
