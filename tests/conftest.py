"""Shared fixtures: datasets are found through METAAL_DATA; tests that need a shared dataset skip
with a clear reason when it is not there."""
from __future__ import annotations

import os

import pytest

from metaal.data import Dataset, find_dataset, load_dataset


def shared_dataset(name: str) -> Dataset:
    if find_dataset(name) is None:
        pytest.skip(f"dataset {name!r} not found along METAAL_DATA={os.environ.get('METAAL_DATA', '')!r}")
    return load_dataset(name)


@pytest.fixture
def shared():
    """``shared("banknote")`` loads a dataset from METAAL_DATA or skips the test."""
    return shared_dataset


@pytest.fixture
def wine() -> Dataset:
    return load_dataset("sklearn:wine")


@pytest.fixture
def bc() -> Dataset:
    return load_dataset("sklearn:breast_cancer")
