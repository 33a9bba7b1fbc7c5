"""RL agents and learned query policies (installed as ``metaal.agents``; never import ``agents``).

The ``policy:PATH`` strategies are registered by this layer: ``pyproject.toml`` declares
:func:`metaal.agents.learned.policy_factory` in the ``metaal.strategies`` entry point group, which
:func:`metaal.strategies.get` consults for a prefix it does not know, so
``metaal.strategies.get("policy:default")`` returns a :class:`LearnedStrategy` without the
strategies layer naming this one. Importing this package also registers the factory directly
(for a source tree that is not installed).

* :mod:`metaal.agents.networks`     set-equivariant SB3 policies (MaskablePPO / PPO) and a Q-network
* :mod:`metaal.agents.policy_file`  the policy file format (save, load, check the metadata)
* :mod:`metaal.agents.learned`      :class:`LearnedStrategy`, the ``policy:PATH`` factory
* :mod:`metaal.agents.imitation`    one-step lookahead expert, behaviour cloning, DAgger
* :mod:`metaal.agents.train`        meta-training from a YAML config (``metaal train``)
* :mod:`metaal.agents.stream_policy` the learned stream policy (``policy:stream-default``):
  :class:`StreamPolicy`, training on ``metaal/Stream-v0``
"""
from metaal.agents.learned import LearnedStrategy, policy_factory, policy_logits
from metaal.agents.policy_file import load_model, read_metadata, resolve_policy_path, save_policy
from metaal.agents.stream_policy import StreamPolicy
from metaal.strategies import register_factory

register_factory("policy", policy_factory)

__all__ = ["LearnedStrategy", "load_model", "policy_factory", "policy_logits", "read_metadata",
           "resolve_policy_path", "save_policy", "StreamPolicy"]
