"""The template every query strategy passes (scikit-activeml's habit of template tests), shared by
tests/test_strategies.py and the tests of each strategy family."""
from __future__ import annotations

import numpy as np
import pytest

from metaal import strategies
from metaal.errors import ConfigError
from metaal.loop.simulate import new_state
from metaal.state import Task


def check_select_contract(name: str, task: Task, scored: bool = False, end_of_pool: bool = True) -> None:
    """For ``k`` = 1 and 5: distinct unlabeled pool positions, the same with the same seed; with
    ``scored``, a finite score per unlabeled item whose top is the pick of ``k = 1``. With
    ``end_of_pool``: labeling batch after batch never offers a labeled item, with exactly ``k``
    left all of them are picked, and ``k`` larger than the pool is refused."""
    for k in (1, 5):
        picks = []
        for _ in range(2):  # same seed, fresh strategy and state -> same picks
            state = new_state(task, budget=20)
            strat = strategies.get(name)
            strat.reset(state, np.random.default_rng(3))
            idx = np.asarray(strat.select(state, k, np.random.default_rng(3)))
            assert idx.shape == (k,) and idx.dtype.kind == "i"
            assert len(np.unique(idx)) == k
            assert (idx >= 0).all() and (idx < task.n_pool).all()
            assert not state.labeled_mask[idx].any()
            if scored:
                s = strat.score(state)
                assert s.shape == (len(state.unlabeled_idx),) and np.isfinite(s).all()
                if k == 1:  # the top score is the pick
                    assert state.unlabeled_idx[int(np.argmax(s))] == idx[0]
            picks.append(idx)
        np.testing.assert_array_equal(picks[0], picks[1])
    if not end_of_pool:
        return
    state = new_state(task, budget=None)
    strat = strategies.get(name)
    rng = np.random.default_rng(1)
    strat.reset(state, rng)
    for _ in range(3):
        idx = strat.select(state, 5, rng)
        assert not state.labeled_mask[idx].any() and len(np.unique(idx)) == 5
        state.add_labels(idx, task.y_pool[idx])
    rest = state.unlabeled_idx[5:]
    state.add_labels(rest, task.y_pool[rest], refit=True)
    left = state.unlabeled_idx
    assert len(left) == 5
    assert set(strat.select(state, 5, rng).tolist()) == set(left.tolist())
    with pytest.raises(ConfigError):
        strat.select(state, 6, rng)
