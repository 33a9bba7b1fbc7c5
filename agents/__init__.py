"""RL agents and learned query policies (installed as ``metaal.agents``; never import ``agents``).

Importing this package registers the ``policy:PATH`` strategy factory, so
``metaal.strategies.get("policy:default")`` returns a :class:`LearnedStrategy`.

* :mod:`metaal.agents.networks`  set-equivariant SB3 policies (MaskablePPO / PPO) and a Q-network
* :mod:`metaal.agents.strategy`  :class:`LearnedStrategy` and the policy file format
* :mod:`metaal.agents.imitation` one-step lookahead expert, behaviour cloning, DAgger
* :mod:`metaal.agents.train`     meta-training from a YAML config (``metaal train``)
"""
from metaal.agents.strategy import LearnedStrategy, load_model, policy_factory, read_metadata, save_policy
from metaal.strategies import register_factory

register_factory("policy", policy_factory)

__all__ = ["LearnedStrategy", "load_model", "policy_factory", "read_metadata", "save_policy"]
