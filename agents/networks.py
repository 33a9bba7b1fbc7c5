"""Set-equivariant policies for Stable-Baselines3 (PPO, DQN) and sb3-contrib (MaskablePPO).

The observation of one step is a set of ``K`` candidates, each a row of ``F`` scale-free features,
plus ``G`` global features and a validity mask (``metaal.observe``). The network scores every
candidate with the SAME weights, so it works for any ``K`` and permuting the candidates permutes
the logits (permutation equivariance); the value comes from a pooled summary of the set
(DeepSets), which is permutation invariant.

Data flow (``B`` observations, ``E`` = ``embed_dim``)::

    candidates (B, K, F) ++ global (B, G) broadcast  -> phi: shared MLP        -> (B, K, E)
    context = [masked mean, masked max] of phi  (or one self-attention layer)  -> (B, 2E)
    h_i = rho([phi_i, context])                                                -> (B, K, E)
    summary = [masked mean h, masked max h, global]                            -> (B, 2E + G)
    logits_i = score(h_i)  (-1e8 on padding rows)                              -> (B, K)
    value    = v(summary)                                                      -> (B, 1)

SB3 wants a flat "latent" between the features extractor and the heads, so
:class:`SetFeaturesExtractor` returns ``[h.flatten (K*E), mask (K), summary (2E+G)]`` and the
heads (:class:`CandidateScorer`, :class:`ValueHead`) cut it apart again; ``K`` is recovered from
the latent's width, so no parameter depends on ``K``.

DQN: :class:`SetDQNPolicy` fills SB3's ``q_net`` / ``q_net_target`` with :class:`SetQNet` (the
same extractor + the shared scorer), so the scores are per-candidate Q-values ``(B, K)``;
:class:`MaskedDQN` draws its random (warm-up and epsilon-greedy) actions among valid candidates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from metaal.observe import N_CANDIDATE_FEATURES, N_GLOBAL_FEATURES

NEG_INF = -1e8


def _mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_act or i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def masked_mean_max(h: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """``[mean, max]`` over the valid rows of ``h`` ``(B, K, E)`` with ``mask`` ``(B, K)`` in {0,1};
    shape ``(B, 2E)``. A set with no valid row gives zeros."""
    m = mask.unsqueeze(-1)
    n = m.sum(1).clamp(min=1.0)
    mean = (h * m).sum(1) / n
    mx = h.masked_fill(m < 0.5, NEG_INF).max(1).values
    mx = th.where(m.sum(1) > 0, mx, th.zeros_like(mx))
    return th.cat([mean, mx], dim=-1)


class SetFeaturesExtractor(BaseFeaturesExtractor):
    """Embeds each candidate with shared weights and adds a set context (DeepSets or attention).

    :param observation_space: ``Dict(candidates=Box(K, F), global=Box(G), action_mask=...)``.
    :param embed_dim: ``E``, the width of a candidate's embedding.
    :param context: ``"deepsets"`` (masked mean + max) or ``"attention"`` (one multi-head
        self-attention layer over the valid candidates).
    :param n_heads: attention heads (``context="attention"`` only).
    """

    def __init__(
        self, observation_space: spaces.Dict, embed_dim: int = 64, context: str = "deepsets", n_heads: int = 4
    ):
        K, F = observation_space["candidates"].shape
        G = observation_space["global"].shape[0]
        summary_dim = 2 * embed_dim + G
        super().__init__(observation_space, features_dim=K * embed_dim + K + summary_dim)
        if context not in ("deepsets", "attention"):
            raise ValueError(f"context must be 'deepsets' or 'attention' (got {context!r})")
        self.embed_dim = int(embed_dim)
        self.n_global = int(G)
        self.summary_dim = summary_dim
        self.context = context
        self.phi = _mlp([F + G, embed_dim, embed_dim])
        if context == "attention":
            self.attn = nn.MultiheadAttention(embed_dim, n_heads, batch_first=True)
            self.rho = _mlp([2 * embed_dim, embed_dim])
        else:
            self.rho = _mlp([3 * embed_dim, embed_dim])

    def encode(self, cand: th.Tensor, glob: th.Tensor, mask: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Candidate embeddings ``(B, K, E)`` and the set summary ``(B, 2E + G)``."""
        B, K, _ = cand.shape
        x = th.cat([cand, glob.unsqueeze(1).expand(B, K, glob.shape[-1])], dim=-1)
        phi = self.phi(x)
        if self.context == "attention":
            pad = mask < 0.5
            pad = pad & ~pad.all(1, keepdim=True)  # an all-padding set attends to everything
            ctx, _ = self.attn(phi, phi, phi, key_padding_mask=pad, need_weights=False)
            h = self.rho(th.cat([phi, ctx], dim=-1))
        else:
            ctx = masked_mean_max(phi, mask)
            h = self.rho(th.cat([phi, ctx.unsqueeze(1).expand(B, K, ctx.shape[-1])], dim=-1))
        summary = th.cat([masked_mean_max(h, mask), glob], dim=-1)
        return h, summary

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        cand = obs["candidates"].float()
        glob = obs["global"].float()
        mask = obs["action_mask"].float().reshape(cand.shape[0], cand.shape[1])
        h, summary = self.encode(cand, glob, mask)
        return th.cat([h.flatten(1), mask, summary], dim=-1)


def split_latent(latent: th.Tensor, embed_dim: int, summary_dim: int) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Cut the flat latent ``(B, K*E + K + S)`` into ``h (B, K, E)``, ``mask (B, K)``, ``summary (B, S)``."""
    B, D = latent.shape
    K = (D - summary_dim) // (embed_dim + 1)
    h = latent[:, : K * embed_dim].reshape(B, K, embed_dim)
    mask = latent[:, K * embed_dim : K * embed_dim + K]
    return h, mask, latent[:, K * embed_dim + K :]


class CandidateScorer(nn.Module):
    """Per-candidate logits from shared weights: ``(B, K*E + K + S) -> (B, K)``; padding rows get
    ``-1e8`` so even a plain (unmasked) PPO never picks them."""

    def __init__(self, embed_dim: int, summary_dim: int, hidden: int = 64):
        super().__init__()
        self.embed_dim, self.summary_dim = embed_dim, summary_dim
        self.net = _mlp([embed_dim, hidden, 1], last_act=False)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        h, mask, _ = split_latent(latent, self.embed_dim, self.summary_dim)
        logits = self.net(h).squeeze(-1)
        return logits.masked_fill(mask < 0.5, NEG_INF)


class ValueHead(nn.Module):
    """State value from the pooled summary: ``(B, K*E + K + S) -> (B, 1)`` (permutation invariant)."""

    def __init__(self, embed_dim: int, summary_dim: int, hidden: int = 64):
        super().__init__()
        self.embed_dim, self.summary_dim = embed_dim, summary_dim
        self.net = _mlp([summary_dim, hidden, 1], last_act=False)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        return self.net(latent[:, -self.summary_dim :])


class _PassThrough(nn.Module):
    """The ``mlp_extractor`` slot: hands the extractor's output to both heads unchanged."""

    def __init__(self, dim: int):
        super().__init__()
        self.latent_dim_pi = dim
        self.latent_dim_vf = dim

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return features, features

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return features

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return features


class _SetHeadsMixin:
    """Replaces SB3's ``mlp_extractor`` / ``action_net`` / ``value_net`` by the set heads."""

    def _build(self, lr_schedule: Any) -> None:  # type: ignore[override]
        fe = self.features_extractor  # type: ignore[attr-defined]
        if not isinstance(fe, SetFeaturesExtractor):
            raise TypeError("set policies need features_extractor_class=SetFeaturesExtractor")
        hidden = int((self.net_arch or {}).get("head", 64)) if isinstance(self.net_arch, dict) else 64  # type: ignore[attr-defined]
        self.mlp_extractor = _PassThrough(self.features_dim)  # type: ignore[attr-defined]
        self.action_net = CandidateScorer(fe.embed_dim, fe.summary_dim, hidden)
        self.value_net = ValueHead(fe.embed_dim, fe.summary_dim, hidden)
        if self.ortho_init:  # type: ignore[attr-defined]
            from functools import partial

            for module, gain in ((fe, np.sqrt(2)), (self.action_net, np.sqrt(2)), (self.value_net, np.sqrt(2))):
                module.apply(partial(self.init_weights, gain=gain))  # type: ignore[attr-defined]
            # small last layers, as SB3 does: near-uniform initial policy
            for last, gain in ((self.action_net.net[-1], 0.01), (self.value_net.net[-1], 1.0)):
                nn.init.orthogonal_(last.weight, gain=gain)
                nn.init.zeros_(last.bias)
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs  # type: ignore[attr-defined]
        )

    def candidate_logits(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Logits ``(B, K)`` of a batch of (already tensor) observations; padding rows ``-1e8``."""
        features = self.extract_features(obs)  # type: ignore[attr-defined]
        if isinstance(features, tuple):
            features = features[0]
        return self.action_net(features)


def _default_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("features_extractor_class", SetFeaturesExtractor)
    kwargs.setdefault("activation_fn", nn.ReLU)
    return kwargs


class SetActorCriticPolicy(_SetHeadsMixin, ActorCriticPolicy):
    """Set-equivariant actor-critic for plain :class:`stable_baselines3.PPO` (padding rows are
    masked inside the logits, from the observation's ``action_mask``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **_default_kwargs(kwargs))


try:  # sb3-contrib is a hard dependency; keep the import local to this module
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy as _MACP
except ImportError:  # pragma: no cover
    _MACP = None  # type: ignore[assignment,misc]

if _MACP is not None:

    class SetMaskablePolicy(_SetHeadsMixin, _MACP):  # type: ignore[misc,valid-type]
        """Set-equivariant actor-critic for :class:`sb3_contrib.MaskablePPO`."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **_default_kwargs(kwargs))


class SetQNetwork(nn.Module):
    """Per-candidate Q-values ``(B, K)`` from the same set encoder (for a DQN-style agent or a
    regression on the expert's gains); padding rows ``-1e8``."""

    def __init__(
        self, observation_space: spaces.Dict, embed_dim: int = 64, context: str = "deepsets", hidden: int = 64
    ):
        super().__init__()
        self.encoder = SetFeaturesExtractor(observation_space, embed_dim, context)
        self.q = _mlp([embed_dim, hidden, 1], last_act=False)

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        cand = obs["candidates"].float()
        mask = obs["action_mask"].float().reshape(cand.shape[0], cand.shape[1])
        h, _ = self.encoder.encode(cand, obs["global"].float(), mask)
        return self.q(h).squeeze(-1).masked_fill(mask < 0.5, NEG_INF)


# ----------------------------------------------------------------------------------------------
# DQN: per-candidate Q-values with shared weights


def _head_width(net_arch: Any) -> int:
    """The scorer's hidden width from ``net_arch`` (``{"head": H}`` as in the PPO policies)."""
    return int(net_arch.get("head", 64)) if isinstance(net_arch, dict) else 64


class SetQNet(QNetwork):
    """SB3's ``QNetwork`` slot filled by the set encoder: :class:`SetFeaturesExtractor` followed by
    the shared per-candidate scorer, so ``forward`` gives Q-values ``(B, K)`` (the same computation
    as :class:`SetQNetwork`; padding rows ``-1e8``, hence the greedy action is always a valid
    candidate) and no parameter depends on ``K``.

    :param net_arch: ``{"head": H}``, the scorer's hidden width (a list is accepted and ignored).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: Any = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        if not isinstance(features_extractor, SetFeaturesExtractor):
            raise TypeError("SetQNet needs features_extractor_class=SetFeaturesExtractor")
        # skip QNetwork.__init__: it would build an MLP with a K-wide output layer
        BasePolicy.__init__(self, observation_space, action_space, features_extractor=features_extractor,
                            normalize_images=normalize_images)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.q_net = CandidateScorer(
            features_extractor.embed_dim, features_extractor.summary_dim, _head_width(net_arch)
        )


class SetDQNPolicy(DQNPolicy):
    """Set-equivariant policy for :class:`stable_baselines3.DQN` (use :class:`MaskedDQN` to keep
    the epsilon-greedy exploration on valid candidates): ``q_net`` and ``q_net_target`` are two
    separate :class:`SetQNet`; acting is the greedy argmax of the Q-values, padding rows excluded."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("net_arch", {"head": 64})
        super().__init__(*args, **_default_kwargs(kwargs))

    def make_q_net(self) -> SetQNet:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return SetQNet(**net_args).to(self.device)

    def candidate_logits(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Q-values ``(B, K)`` of a batch of (already tensor) observations; padding rows ``-1e8``
        (the name matches the actor-critic policies, so :class:`LearnedStrategy` ranks by it)."""
        return self.q_net(obs)


def random_valid_actions(action_mask: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """One uniformly random valid candidate per row of ``action_mask`` ``(B, K)`` (or ``(K,)``);
    shape ``(B,)`` (or ``()``). A row with no valid candidate gives 0."""
    m = np.asarray(action_mask, dtype=bool)
    single = m.ndim == 1
    m = m.reshape(-1, m.shape[-1])
    u = rng.random(m.shape) if rng is not None else np.random.random(m.shape)  # SB3 seeds np.random
    act = np.where(m, u, -1.0).argmax(axis=1)  # argmax of uniform scores over the valid entries
    return act[0] if single else act


class MaskedDQN(DQN):
    """:class:`stable_baselines3.DQN` whose random actions (warm-up before ``learning_starts`` and
    the epsilon-greedy ones) are drawn uniformly among the VALID candidates of the observation's
    ``action_mask`` instead of the whole ``Discrete(K)`` space; everything else is SB3's DQN.
    Greedy actions come from :class:`SetDQNPolicy`, whose padding rows score ``-1e8``."""

    def _random_actions(self, observation: Any) -> np.ndarray:
        return random_valid_actions(np.asarray(observation["action_mask"]))

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not isinstance(observation, dict):  # no mask to respect: SB3's behaviour
            return super().predict(observation, state, episode_start, deterministic)
        if not deterministic and np.random.rand() < self.exploration_rate:
            return self._random_actions(observation), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts and isinstance(self._last_obs, dict):
            action = self._random_actions(self._last_obs).reshape(n_envs)
            return action, action
        return super()._sample_action(learning_starts, action_noise, n_envs)


def obs_space(k: int, n_candidate_features: int | None = None, n_global_features: int | None = None) -> spaces.Dict:
    """The Dict observation space of :mod:`metaal.observe` with ``k`` candidates (the same keys
    and shapes as ``metaal/Pool-v0``)."""
    F = n_candidate_features or N_CANDIDATE_FEATURES
    G = n_global_features or N_GLOBAL_FEATURES
    return spaces.Dict(
        {
            "candidates": spaces.Box(-np.inf, np.inf, shape=(k, F), dtype=np.float32),
            "global": spaces.Box(-np.inf, np.inf, shape=(G,), dtype=np.float32),
            "action_mask": spaces.MultiBinary(k),
        }
    )
