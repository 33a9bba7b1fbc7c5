"""``metaal/Heuristic-v0``: choose *which heuristic* labels next (active learning by learning,
ALBL (Hsu & Lin, AAAI 2015), cast as RL instead of a bandit).

* action: ``Discrete(H)``, the index of a heuristic in ``env.heuristics``; that heuristic's
  ``select(state, 1)`` picks the item;
* observation: ``Box((G + H,))``: the global features of :mod:`metaal.observe` followed by a one-hot
  of the previous action (zeros at the first step) -- per-item features are not needed because
  the heuristics look at the items;
* reward and info: as ``metaal/Pool-v0`` (the default reward is the gain over margin's pick at the
  same step, so an agent that always chooses ``margin`` earns 0); ``info["heuristic"]`` names the
  chosen arm.

Every heuristic keeps its own generator, seeded from the environment's ``np_random`` at reset,
so the same seed gives the same trajectory.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium import spaces

from metaal.envs.pool import PoolEnvBase
from metaal.errors import ConfigError
from metaal.observe import GLOBAL_HIGH, N_GLOBAL_FEATURES, Observer
from metaal.strategies import get, names, reads_truth, with_cold_start
from metaal.strategies.uncertainty import margin_score

#: Default arms: cheap heuristics from distinct families.
DEFAULT_HEURISTICS: tuple[str, ...] = ("random", "margin", "entropy", "density", "coreset", "qbc_vote")


class HeuristicEnv(PoolEnvBase):
    """``metaal/Heuristic-v0``. Options of ``metaal/Pool-v0`` (``k`` unused) plus ``heuristics``: a
    sequence of registry names, ``"all"`` (:func:`metaal.strategies.names`), or None for
    :data:`DEFAULT_HEURISTICS` (those registered)."""

    action_kind = "heuristic"

    def __init__(self, heuristics: "Sequence[str] | str | None" = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        known = names()
        if heuristics is None:
            hs = [h for h in DEFAULT_HEURISTICS if h in known]
        elif heuristics == "all":  # every heuristic; the oracle reads test labels (simulation only)
            hs = [h for h in known if not reads_truth(get(h))]
        elif isinstance(heuristics, str):
            hs = [h.strip() for h in heuristics.split(",") if h.strip()]
        else:
            hs = list(heuristics)
        if not hs:
            raise ConfigError("heuristics is empty: give at least one heuristic name")
        for h in hs:
            if reads_truth(get(h)):  # get raises ConfigError for an unknown name
                raise ConfigError(f"{h!r} reads the test labels: it is no arm of Heuristic-v0 (simulation only)")
        self.heuristics = hs
        self._strategies = [with_cold_start(get(h)) for h in hs]  # random picks before two classes
        H = len(hs)
        high = np.concatenate([GLOBAL_HIGH, np.ones(H, dtype=np.float32)])
        self.observation_space = spaces.Box(low=0.0, high=high, shape=(N_GLOBAL_FEATURES + H,), dtype=np.float32)
        self.action_space = spaces.Discrete(H)
        self._rngs: list[np.random.Generator] = []
        self._last = -1

    def _obs(self) -> np.ndarray:
        assert self.state is not None
        g = np.clip(Observer.global_features(self.state), 0.0, GLOBAL_HIGH)
        onehot = np.zeros(len(self.heuristics), dtype=np.float32)
        if self._last >= 0:
            onehot[self._last] = 1.0
        return np.concatenate([g, onehot]).astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """Every arm is always valid: ``(H,)`` True."""
        return np.ones(len(self.heuristics), dtype=bool)

    def _first_observation(self) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = self.np_random.integers(0, 2**31 - 1, size=len(self._strategies))
        self._rngs = [np.random.default_rng(int(s)) for s in seeds]
        for strat, rng in zip(self._strategies, self._rngs):
            strat.reset(self.state, rng)
        self._last = -1
        info = self._info()
        info["heuristic"] = ""
        return self._obs(), info

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        state = self.state
        assert state is not None
        try:
            a = int(np.asarray(action).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            a = -1
        invalid = not 0 <= a < len(self.heuristics)
        unl = state.unlabeled_idx
        margin_idx = unl[[int(np.argmax(margin_score(state.proba[unl])))]]
        if invalid:
            idx = margin_idx.copy()
        else:
            idx = np.asarray(self._strategies[a].select(state, 1, self._rngs[a]), dtype=np.int64).reshape(-1)
        reward, terminated = self._label(idx, margin_idx)
        self._last = a if not invalid else -1
        info = self._info(int(idx[0]), int(margin_idx[0]), invalid)
        info["heuristic"] = self.heuristics[a] if not invalid else "margin"
        return self._obs(), reward, terminated, False, info
