"""Synthetic task generators (metaal.synthetic) and their ``synth:`` specs."""
from __future__ import annotations

import numpy as np
import pytest

from metaal.data import Dataset, load_dataset, make_split
from metaal.errors import DataError
from metaal.synthetic import blobs, checkerboard, from_spec, mixture, random_task_spec, xor


def test_spec_builds_requested_shape_and_is_reproducible() -> None:
    a = load_dataset("synth:blobs?n=500&d=5&c=3&sep=1.5&seed=3")
    b = from_spec("synth:blobs?n=500&d=5&c=3&sep=1.5&seed=3")
    assert isinstance(a, Dataset)
    assert a.X.shape == (500, 5) and a.X.dtype == np.float32
    assert a.n_classes == 3 and set(np.unique(a.y)) == {0, 1, 2}
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    c = from_spec("synth:blobs?n=500&d=5&c=3&sep=1.5&seed=4")
    assert not np.array_equal(a.X, c.X)


def _cv_accuracy(ds: Dataset) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(LogisticRegression(max_iter=1000), ds.X, ds.y, cv=3).mean())


def test_separation_controls_difficulty() -> None:
    easy = blobs(n=400, d=5, sep=6.0, seed=0)
    hard = blobs(n=400, d=5, sep=0.3, seed=0)
    assert _cv_accuracy(easy) > 0.95
    assert _cv_accuracy(hard) < 0.75


def test_imbalance_and_label_noise() -> None:
    ds = blobs(n=1000, c=2, imbalance=5.0, seed=1)
    counts = np.bincount(ds.y)
    assert 4.0 < counts.max() / counts.min() < 6.0
    clean = blobs(n=2000, d=2, sep=3.0, seed=2)
    noisy = blobs(n=2000, d=2, sep=3.0, noise=0.2, seed=2)
    # same points, about 20% of the labels flipped
    assert np.allclose(clean.X, noisy.X)
    assert 0.15 < np.mean(clean.y != noisy.y) < 0.25


def test_xor_and_checkerboard_are_not_linearly_separable() -> None:
    x = xor(n=600, d=2, seed=0)
    cell = (np.floor(x.X[:, 0]) + np.floor(x.X[:, 1])) % 2
    assert np.array_equal(cell.astype(int), x.y)
    assert _cv_accuracy(x) < 0.7
    cb = checkerboard(n=600, d=3, g=4, seed=0)
    assert cb.X.shape == (600, 3) and cb.n_classes == 2
    m = mixture(n=300, d=4, c=3, m=3, seed=0)
    assert m.X.shape == (300, 4) and m.n_classes == 3


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("synth:spiral?n=100", "unknown synthetic kind"),
        ("synth:blobs?n=100&colour=3", "unknown parameter"),
        ("synth:blobs?n=abc", "not a number"),
        ("synth:blobs?n=100&imbalance=0.5", "imbalance"),
        ("synth:blobs?n=2&c=3", "n >= 4"),
    ],
)
def test_bad_specs_raise_clear_errors(spec: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_dataset(spec)


def test_random_task_specs_load_and_vary() -> None:
    rng = np.random.default_rng(0)
    specs = [random_task_spec(rng) for _ in range(12)]
    assert len(set(specs)) == 12
    kinds = {s.split(":")[1].split("?")[0] for s in specs}
    assert len(kinds) >= 3
    for s in specs[:6]:
        ds = load_dataset(s)
        make_split(ds, 0)  # usable with the default protocol
    assert random_task_spec(np.random.default_rng(5)) == random_task_spec(np.random.default_rng(5))
