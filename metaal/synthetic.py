"""Synthetic classification tasks for meta-training and tests.

Every generator returns a :class:`metaal.data.Dataset` and is reproducible from its ``seed``.
:func:`from_spec` builds one from a string such as ``"synth:blobs?n=500&d=5&sep=1.5&seed=3"``
(:func:`metaal.data.load_dataset` dispatches ``synth:`` specs here; this module imports only
:mod:`metaal.dataset`, never :mod:`metaal.data`), so synthetic tasks can be used
wherever a dataset collection is (``metaal compare --data``, the environments' ``datasets``).
:func:`random_task_spec` draws a random spec for meta-training.

Kinds and their parameters (all optional):

=============  ============================================================================
``blobs``      Gaussian blobs, one per class: ``n`` rows, ``d`` dims, ``c`` classes,
               ``sep`` (distance between class means in units of the within-class std),
               ``imbalance`` (ratio largest / smallest class, >= 1), ``noise`` (label-flip
               rate), ``seed``
``mixture``    each class a mixture of ``m`` Gaussian components (multi-modal classes); same
               parameters as ``blobs`` plus ``m``
``xor``        the XOR problem in the first two dims (extra dims are noise): ``n``, ``d``,
               ``noise``, ``seed``
``checker``    a ``g`` x ``g`` checkerboard in the first two dims: ``n``, ``d``, ``g``,
               ``noise``, ``seed``
=============  ============================================================================
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qsl

import numpy as np

from metaal.dataset import Dataset
from metaal.errors import DataError

__all__ = ["blobs", "mixture", "xor", "checkerboard", "from_spec", "random_task_spec", "KINDS"]


def _class_sizes(n: int, c: int, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Class sizes ``(c,)`` summing to ``n``, geometric from largest to smallest with ratio
    ``imbalance`` between the extremes; at least 2 rows per class."""
    if imbalance < 1:
        raise DataError(f"imbalance must be >= 1 (got {imbalance})")
    w = imbalance ** (-np.linspace(0.0, 1.0, c))
    w = w / w.sum()
    sizes = np.maximum(np.floor(w * n).astype(int), 2)
    sizes[0] += n - sizes.sum()
    if sizes[0] < 2:
        raise DataError(f"n={n} is too small for {c} classes")
    return sizes[rng.permutation(c)]


def _check_noise(noise: float) -> None:
    if not 0 <= noise < 1:
        raise DataError(f"label noise must be in [0, 1) (got {noise})")


def _finish(
    X: np.ndarray, y: np.ndarray, c: int, name: str, rng: np.random.Generator, noise: float, seed: int
) -> Dataset:
    """Shuffle the rows, then flip a ``noise`` share of the labels to another class (from a
    separate stream, so that the same seed gives the same points with and without noise)."""
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm].copy()
    if noise > 0:
        nrng = np.random.default_rng([int(seed), 0x4015E])
        hit = nrng.random(len(y)) < noise
        y[hit] = (y[hit] + nrng.integers(1, c, size=int(hit.sum()))) % c
    return Dataset(X=X.astype(np.float32), y=y, classes=np.array([f"c{i}" for i in range(c)]), name=name)


def _check(n: int, d: int, c: int) -> None:
    if n < 4 or d < 1 or c < 2:
        raise DataError(f"synthetic task needs n >= 4, d >= 1, c >= 2 (got n={n}, d={d}, c={c})")


def mixture(
    n: int = 500, d: int = 5, c: int = 2, m: int = 2, sep: float = 2.0, imbalance: float = 1.0,
    noise: float = 0.0, seed: int = 0, name: str | None = None,
) -> Dataset:
    """Each class a mixture of ``m`` unit-variance Gaussians whose means are drawn with spread
    ``sep``; ``X`` ``(n, d)``, ``y`` ``(n,)``."""
    _check(n, d, c)
    _check_noise(noise)
    if m < 1:
        raise DataError(f"m (components per class) must be >= 1 (got {m})")
    rng = np.random.default_rng(seed)
    sizes = _class_sizes(n, c, imbalance, rng)
    means = rng.normal(size=(c, m, d))
    # scale so that the typical distance between two means is about sep
    means *= sep / np.sqrt(2.0 * d)
    Xs, ys = [], []
    for k in range(c):
        comp = rng.integers(0, m, size=sizes[k])
        Xs.append(means[k, comp] + rng.normal(size=(sizes[k], d)))
        ys.append(np.full(sizes[k], k))
    return _finish(np.concatenate(Xs), np.concatenate(ys), c, name or f"mixture_s{seed}", rng, noise, seed)


def blobs(
    n: int = 500, d: int = 5, c: int = 2, sep: float = 2.0, imbalance: float = 1.0,
    noise: float = 0.0, seed: int = 0, name: str | None = None,
) -> Dataset:
    """One unit-variance Gaussian per class (``m=1`` mixture); ``X`` ``(n, d)``, ``y`` ``(n,)``."""
    return mixture(n, d, c, 1, sep, imbalance, noise, seed, name or f"blobs_s{seed}")


def checkerboard(
    n: int = 500, d: int = 2, g: int = 2, noise: float = 0.0, seed: int = 0, name: str | None = None
) -> Dataset:
    """Uniform points in ``[0, g)^2`` labeled by the parity of their cell (2 classes); dims beyond
    the first two are uniform noise. ``g=2`` is XOR."""
    _check(n, max(d, 2), 2)
    if d < 2 or g < 2:
        raise DataError(f"checkerboard needs d >= 2 and g >= 2 (got d={d}, g={g})")
    _check_noise(noise)
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, g, size=(n, d))
    y = ((np.floor(X[:, 0]) + np.floor(X[:, 1])) % 2).astype(np.int64)
    if len(np.unique(y)) < 2:
        y[0] = 1 - y[0]
    return _finish(X, y, 2, name or f"checker{g}_s{seed}", rng, noise, seed)


def xor(n: int = 500, d: int = 2, noise: float = 0.0, seed: int = 0, name: str | None = None) -> Dataset:
    """The XOR problem (a 2 x 2 checkerboard)."""
    return checkerboard(n, d, 2, noise, seed, name or f"xor_s{seed}")


KINDS: dict[str, Callable[..., Dataset]] = {
    "blobs": blobs,
    "mixture": mixture,
    "xor": xor,
    "checker": checkerboard,
    "checkerboard": checkerboard,
}
_INT_KEYS = {"n", "d", "c", "m", "g", "seed"}
_FLOAT_KEYS = {"sep", "imbalance", "noise"}


def from_spec(spec: str) -> Dataset:
    """Build a dataset from ``"synth:KIND?key=value&..."`` (the ``synth:`` prefix is optional).

    :raises DataError: for an unknown kind, key or malformed value.
    """
    s = spec[len("synth:"):] if spec.startswith("synth:") else spec
    kind, _, query = s.partition("?")
    if kind not in KINDS:
        raise DataError(f"unknown synthetic kind {kind!r} in {spec!r} (known: {', '.join(sorted(KINDS))})")
    kwargs: dict[str, Any] = {}
    for key, val in parse_qsl(query, keep_blank_values=True):
        if key not in _INT_KEYS and key not in _FLOAT_KEYS:
            raise DataError(
                f"unknown parameter {key!r} in {spec!r} (known: {', '.join(sorted(_INT_KEYS | _FLOAT_KEYS))})"
            )
        try:
            kwargs[key] = int(val) if key in _INT_KEYS else float(val)
        except ValueError:
            raise DataError(f"parameter {key}={val!r} in {spec!r} is not a number") from None
    try:
        ds = KINDS[kind](**kwargs, name=f"synth:{s}")
    except TypeError as exc:
        raise DataError(f"{spec!r}: {exc}") from None
    return ds


def random_task_spec(rng: np.random.Generator) -> str:
    """A random ``synth:`` spec for meta-training: blobs or mixtures with varying separation,
    imbalance, dimension and classes, XOR / checkerboards, and some label noise."""
    seed = int(rng.integers(0, 2**31 - 1))
    n = int(rng.choice([200, 300, 500, 800]))
    noise = float(rng.choice([0.0, 0.0, 0.05, 0.1]))
    kind = str(rng.choice(["blobs", "blobs", "mixture", "xor", "checker"]))
    if kind in ("blobs", "mixture"):
        d = int(rng.choice([2, 5, 10, 20]))
        c = int(rng.choice([2, 2, 3, 5]))
        sep = round(float(rng.uniform(0.5, 4.0)), 2)
        imb = round(float(rng.choice([1.0, 1.0, 2.0, 5.0])), 2)
        extra = f"&m={int(rng.integers(2, 4))}" if kind == "mixture" else ""
        return f"synth:{kind}?n={n}&d={d}&c={c}&sep={sep}&imbalance={imb}&noise={noise}{extra}&seed={seed}"
    d = int(rng.choice([2, 3, 5]))
    g = f"&g={int(rng.choice([3, 4]))}" if kind == "checker" else ""
    return f"synth:{kind}?n={n}&d={d}{g}&noise={noise}&seed={seed}"
