"""Gymnasium environments (installed as ``metaal.envs``; never import ``envs``).

Importing this package registers:

* ``metaal/Pool-v0``       one label per step among ``K`` candidates (:mod:`metaal.envs.pool`)
* ``metaal/PoolBatch-v0``  ``b`` labels per step, chosen by a score per candidate
  (:mod:`metaal.envs.pool_batch`)
* ``metaal/Stream-v0``     items arrive one by one: predict a class or pay for the label
  (:mod:`metaal.envs.stream`; baselines and the two-way view in :mod:`metaal.envs.stream_policies`)
* ``metaal/Heuristic-v0``  choose which heuristic labels next (ALBL as RL, :mod:`metaal.envs.heuristic`)

Heuristics act as policies through :class:`metaal.envs.policies.HeuristicPolicy`;
:func:`metaal.envs.policies.evaluate_policy` evaluates heuristics and trained agents alike.
In a subprocess (``SubprocVecEnv``) use the id ``"metaal.envs:metaal/Pool-v0"`` so that gymnasium
imports this package (and registers the ids) first.

``gymnasium.make("metaal/Pool-v0", datasets=[...], budget=50)``; see ``docs/environments.md``.
:class:`metaal.envs.batched.BatchedPoolEnv` steps N Pool-v0 episodes on one batched torch learner
(torch is imported when it is first built, not by this package); its SB3
``VecEnv`` face and the process sharding live in the agents layer (:mod:`metaal.agents.vec_env`,
:mod:`metaal.agents.vec_shard`): this package imports no agent library.
"""
from __future__ import annotations

import gymnasium

from metaal.envs.batched import BatchedPoolEnv
from metaal.envs.collection import DEFAULT_DATASETS, DatasetCollection, sample_task
from metaal.envs.heuristic import HeuristicEnv
from metaal.envs.policies import HeuristicPolicy, PolicyCurve, evaluate_policy
from metaal.envs.pool import PoolEnv, PoolEnvBase
from metaal.envs.pool_batch import PoolBatchEnv
from metaal.envs.rewards import REWARD_MODES, RewardSplit, step_reward
from metaal.envs.stream import StreamEnv, ThresholdStreamPolicy
from metaal.envs.stream_policies import SplitStreamPolicy, StreamDecisionEnv, VariableUncertaintyStreamPolicy

#: The registered environment ids (versioned).
ENV_IDS: tuple[str, ...] = ("metaal/Pool-v0", "metaal/PoolBatch-v0", "metaal/Stream-v0", "metaal/Heuristic-v0")


def _register() -> None:
    specs = {
        "metaal/Pool-v0": "metaal.envs.pool:PoolEnv",
        "metaal/PoolBatch-v0": "metaal.envs.pool_batch:PoolBatchEnv",
        "metaal/Stream-v0": "metaal.envs.stream:StreamEnv",
        "metaal/Heuristic-v0": "metaal.envs.heuristic:HeuristicEnv",
    }
    for env_id, entry in specs.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry)


_register()

__all__ = [
    "BatchedPoolEnv",
    "DEFAULT_DATASETS",
    "DatasetCollection",
    "ENV_IDS",
    "HeuristicEnv",
    "HeuristicPolicy",
    "PolicyCurve",
    "PoolBatchEnv",
    "SplitStreamPolicy",
    "StreamDecisionEnv",
    "StreamEnv",
    "ThresholdStreamPolicy",
    "VariableUncertaintyStreamPolicy",
    "evaluate_policy",
    "PoolEnv",
    "PoolEnvBase",
    "REWARD_MODES",
    "RewardSplit",
    "sample_task",
    "step_reward",
]
