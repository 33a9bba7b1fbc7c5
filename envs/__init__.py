"""Gymnasium environments (installed as ``metaal.envs``; never import ``envs``).

Importing this package registers:

* ``metaal/Pool-v0``       one label per step among ``K`` candidates (:mod:`metaal.envs.pool`)
* ``metaal/PoolBatch-v0``  ``b`` labels per step, chosen by a score per candidate
  (:mod:`metaal.envs.batch`)
* ``metaal/Stream-v0``     items arrive one by one: predict a class or pay for the label
  (:mod:`metaal.envs.stream`)
* ``metaal/Heuristic-v0``  choose which heuristic labels next (ALBL as RL, :mod:`metaal.envs.heuristic`)

Heuristics act as policies through :class:`metaal.envs.policies.HeuristicPolicy`;
:func:`metaal.envs.policies.evaluate_policy` evaluates heuristics and trained agents alike.
In a subprocess (``SubprocVecEnv``) use the id ``"metaal.envs:metaal/Pool-v0"`` so that gymnasium
imports this package (and registers the ids) first.

``gymnasium.make("metaal/Pool-v0", datasets=[...], budget=50)``; see ``docs/environments.md``.
``metaal.envs.BatchedPoolVecEnv`` (N Pool-v0 episodes on one batched torch learner, an SB3 VecEnv)
is imported lazily, on first access, so that importing this package does not import SB3 or torch.
"""
from __future__ import annotations

import gymnasium

from metaal.envs.collection import DEFAULT_DATASETS, DatasetCollection, sample_task
from metaal.envs.pool import PoolEnv, PoolEnvBase
from metaal.envs.rewards import REWARD_MODES, RewardSplit, step_reward
from metaal.envs.batch import PoolBatchEnv
from metaal.envs.heuristic import HeuristicEnv
from metaal.envs.stream import StreamEnv, ThresholdStreamPolicy
from metaal.envs.policies import HeuristicPolicy, PolicyCurve, evaluate_policy

#: The registered environment ids (versioned).
ENV_IDS: tuple[str, ...] = ("metaal/Pool-v0", "metaal/PoolBatch-v0", "metaal/Stream-v0", "metaal/Heuristic-v0")


def _register() -> None:
    specs = {
        "metaal/Pool-v0": "metaal.envs.pool:PoolEnv",
        "metaal/PoolBatch-v0": "metaal.envs.batch:PoolBatchEnv",
        "metaal/Stream-v0": "metaal.envs.stream:StreamEnv",
        "metaal/Heuristic-v0": "metaal.envs.heuristic:HeuristicEnv",
    }
    for env_id, entry in specs.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry)


_register()

_LAZY = {
    "BatchedPoolVecEnv": "metaal.envs.vec_pool",
    "BatchedObserver": "metaal.envs.vec_pool",
    "ShardedVecEnv": "metaal.envs.vec_shard",
    "make_batched_vec_env": "metaal.envs.vec_shard",
}


def __getattr__(name: str):  # PEP 562: the batched vector env needs SB3 and torch, imported on use only
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchedObserver",
    "BatchedPoolVecEnv",
    "DEFAULT_DATASETS",
    "DatasetCollection",
    "ENV_IDS",
    "HeuristicEnv",
    "HeuristicPolicy",
    "PolicyCurve",
    "PoolBatchEnv",
    "StreamEnv",
    "ThresholdStreamPolicy",
    "evaluate_policy",
    "PoolEnv",
    "PoolEnvBase",
    "REWARD_MODES",
    "RewardSplit",
    "sample_task",
    "step_reward",
]
