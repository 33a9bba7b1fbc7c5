"""Dataset collections and per-episode task sampling for the environments.

A *collection* is what the environments' ``datasets`` option accepts: one item or a sequence of
items, each a path, a name found along ``METAAL_DATA``, ``sklearn:NAME``, a ``synth:...`` spec, a
:class:`~metaal.data.Dataset`, or a generator callable ``f(rng: np.random.Generator) -> Dataset``
(or returning any of the other forms). Each episode draws one item uniformly.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, Union

import numpy as np

from metaal.data import Dataset, Split, choose_initial, load_dataset, pool_test_split
from metaal.envs.rewards import RewardSplit
from metaal.errors import ConfigError, DataError
from metaal.state import Task, standardize


class RenderModeError(ConfigError, TypeError):
    """An unsupported ``render_mode`` (also a ``TypeError``, so that SB3's ``make_vec_env``, which
    tries ``render_mode="rgb_array"`` first, falls back to no render mode)."""


DatasetItem = Union[str, "os.PathLike[str]", Dataset, Callable[[np.random.Generator], Any]]

#: Used when ``datasets`` is not given: works without ``METAAL_DATA`` (scikit-learn's bundled sets
#: and synthetic tasks), small enough for fast steps.
DEFAULT_DATASETS: tuple[str, ...] = (
    "sklearn:wine",
    "sklearn:breast_cancer",
    "sklearn:iris",
    "synth:blobs?n=400&d=5&c=3&sep=2.0&seed=1",
    "synth:mixture?n=400&d=8&c=2&m=3&sep=3.0&imbalance=3&seed=2",
    "synth:xor?n=400&d=3&noise=0.05&seed=3",
)


class DatasetCollection:
    """Items to draw one dataset per episode from; loaded lazily and cached.

    :param datasets: one item or a sequence of items (see the module docstring); None for
        :data:`DEFAULT_DATASETS`.
    """

    def __init__(self, datasets: "DatasetItem | Sequence[DatasetItem] | None" = None) -> None:
        if datasets is None:
            items: list[Any] = list(DEFAULT_DATASETS)
        elif isinstance(datasets, (str, os.PathLike, Dataset)) or callable(datasets):
            items = [datasets]
        else:
            try:
                items = list(datasets)
            except TypeError:
                raise ConfigError(
                    f"datasets must be a dataset or a collection of them, got {type(datasets).__name__}"
                ) from None
        if not items:
            raise ConfigError("datasets is empty: give at least one dataset")
        for it in items:
            if not (isinstance(it, (str, os.PathLike, Dataset)) or callable(it)):
                raise ConfigError(f"datasets item {it!r} is not a path, a name, a Dataset or a generator callable")
        self.items = items
        self._cache: dict[int, Dataset] = {}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int, rng: np.random.Generator | None = None) -> Dataset:
        """Dataset ``i`` (generators are called with ``rng``, fresh each time)."""
        it = self.items[i]
        if callable(it) and not isinstance(it, Dataset):
            out = it(rng if rng is not None else np.random.default_rng())
            ds = load_dataset(out)
            if not isinstance(ds, Dataset):
                raise DataError(f"dataset generator {it!r} returned {type(out).__name__}, not a Dataset")
            return ds
        if i not in self._cache:
            self._cache[i] = load_dataset(it)
        return self._cache[i]

    def sample(self, rng: np.random.Generator) -> Dataset:
        """One dataset drawn uniformly with ``rng``."""
        return self.get(int(rng.integers(len(self.items))), rng)


def sample_task(
    dataset: Dataset,
    rng: np.random.Generator,
    initial: int = 10,
    max_pool: int | None = 2000,
    reward_frac: float = 0.25,
    reward_cap: int = 500,
    test_size: float = 0.3,
) -> tuple[Task, RewardSplit]:
    """A task and its reward split for one episode, all drawn from ``rng``.

    The default protocol (:func:`metaal.data.make_split`: a stratified pool/test split with a seed
    drawn from ``rng``), then the pool is subsampled to ``max_pool`` rows, then
    ``min(round(reward_frac * n_pool), reward_cap)`` pool rows are carved out as the reward split,
    then the initial set (at least two classes) is drawn from what is left. Features are
    standardized with statistics of the remaining pool; the reward split uses the same ones.
    """
    X = dataset.require_features()
    seed = int(rng.integers(0, 2**31 - 1))
    pool, test = pool_test_split(dataset, seed, test_size)
    if max_pool is not None and len(pool) > max_pool:
        pool = pool[np.sort(rng.choice(len(pool), size=int(max_pool), replace=False))]
    n_r = min(int(round(reward_frac * len(pool))), int(reward_cap)) if reward_frac > 0 else 0
    reward_rows = np.zeros(0, dtype=np.int64)
    if n_r > 0:
        perm = rng.permutation(len(pool))
        reward_rows = pool[perm[:n_r]]
        pool = pool[np.sort(perm[n_r:])]
    init = pool[choose_initial(dataset.y[pool], initial, rng)]
    task = Task.from_split(dataset, Split(pool=pool, test=np.asarray(test), initial=init, seed=seed))
    _, X_r = standardize(X[pool], X[reward_rows])
    return task, RewardSplit(X_r, dataset.y[reward_rows].copy())


def carve_reward_split(
    task: Task, rng: np.random.Generator, reward_frac: float, reward_cap: int = 500
) -> tuple[Task, RewardSplit]:
    """Split a given (pinned) task's pool into a query pool and a reward split; the initial set
    stays in the query pool. With ``reward_frac == 0`` the task is returned unchanged with an empty
    reward split."""
    d = task.X_pool.shape[1]
    if reward_frac <= 0:
        return task, RewardSplit(np.zeros((0, d)), np.zeros(0, dtype=np.int64))
    free = np.setdiff1d(np.arange(task.n_pool), task.initial)
    n_r = min(int(round(reward_frac * task.n_pool)), int(reward_cap), len(free))
    chosen = np.sort(rng.choice(free, size=n_r, replace=False))
    keep = np.setdiff1d(np.arange(task.n_pool), chosen)
    pos = np.full(task.n_pool, -1, dtype=np.int64)
    pos[keep] = np.arange(len(keep))
    new = Task(
        X_pool=task.X_pool[keep],
        y_pool=task.y_pool[keep],
        X_test=task.X_test,
        y_test=task.y_test,
        initial=pos[task.initial],
        classes=task.classes,
        name=task.name,
        pool_ids=None if task.pool_ids is None else task.pool_ids[keep],
        seed=task.seed,
        meta=dict(task.meta),
    )
    return new, RewardSplit(task.X_pool[chosen], task.y_pool[chosen].copy())
