"""The learned stream policy: train it, save it, load it (``policy:stream-default``).

The policy acts on :class:`metaal.envs.stream_policies.StreamDecisionEnv`: two actions (predict the
most probable class, request the label) from the 12 ``stream-2`` features of ``metaal/Stream-v0``
with ``cost_features=True`` (the request cost and the wrong penalty are inputs), so one policy serves
every class count, episode length and cost setting. It is saved in the policy file format of
:mod:`metaal.agents.policy_file` with ``obs_version`` ``stream-2`` and ``kind`` ``stream``.

:class:`StreamPolicy` runs a policy file on ``Stream-v0`` (``policy(obs, env) -> action``, like
:class:`metaal.envs.ThresholdStreamPolicy`); a missing, corrupt or mismatched file falls back, loudly
(``warnings.warn`` and ``logging``; ``strict=True`` raises), to the expected-reward threshold rule,
and the policy's ``name`` says so.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from metaal.agents.policy_file import load_model, read_metadata, resolve_policy_path, save_policy
from metaal.envs.stream import StreamEnv
from metaal.envs.stream_policies import REQUEST, StreamDecisionEnv
from metaal.errors import ConfigError, PolicyError
from metaal.strategies.stream import ThresholdStreamPolicy, argmax_class, episode_of
from metaal.stream import STREAM_OBS_VERSIONS

log = logging.getLogger("metaal.agents")

STREAM_OBS_VERSION = STREAM_OBS_VERSIONS[1]
STREAM_KIND = "stream"
#: Stream datasets have at most this many classes (the policy itself never sees ``C``).
MAX_CLASSES = 30


def load_stream_config(path: "str | os.PathLike") -> dict[str, Any]:
    """The training configuration at ``path`` with the ``train`` datasets of its split file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"stream config {p} not found")
    cfg = yaml.safe_load(p.read_text()) or {}
    split_path = Path(cfg.get("split_file", "configs/stream_split.yaml"))
    if not split_path.is_absolute() and not split_path.is_file():
        split_path = p.parent / split_path.name
    split = yaml.safe_load(split_path.read_text())
    cfg["datasets"] = list(split["train"])
    cfg["held_out"] = list(split["held_out"])
    overlap = set(cfg["datasets"]) & set(cfg["held_out"])
    if overlap:
        raise ConfigError(f"{split_path}: {sorted(overlap)} both in train and held_out")
    return cfg


def make_train_env(cfg: dict[str, Any], episode_length: int) -> StreamDecisionEnv:
    env = StreamEnv(datasets=cfg["datasets"], max_classes=MAX_CLASSES, episode_length=int(episode_length),
                    learner=cfg.get("learner", "logreg"), warm_start=bool(cfg.get("warm_start", False)),
                    cost_features=True, request_cost_range=tuple(cfg["request_cost_range"]),
                    wrong_penalty_range=tuple(cfg["wrong_penalty_range"]))
    return StreamDecisionEnv(env, normalize_reward=bool(cfg.get("normalize_reward", True)))


def train_stream_policy(cfg: dict[str, Any], out: "str | os.PathLike", progress: bool = False) -> Path:
    """Train with ``cfg`` (:func:`load_stream_config`) and save ``OUT/policy.zip`` + ``.json``."""
    import torch as th  # heavy: only when training
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    seed = int(cfg.get("seed", 0))
    th.manual_seed(seed)
    th.set_num_threads(1)
    lengths = list(cfg.get("episode_lengths", [100]))

    def factory(rank: int, length: int) -> Any:
        def _make() -> StreamDecisionEnv:
            env = make_train_env(cfg, length)
            env.reset(seed=seed * 1000 + rank)
            return env
        return _make

    venv = VecMonitor(DummyVecEnv([factory(i, n) for i, n in enumerate(lengths)]))
    venv.seed(seed * 1000)
    algo = cfg.get("algo", "MaskablePPO")
    if algo != "MaskablePPO":
        raise ConfigError(f"stream training supports MaskablePPO only (got {algo!r})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = MaskablePPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0,
                        policy_kwargs={"net_arch": list(cfg.get("net_arch", [64, 64]))},
                        tensorboard_log=str(out / "tb"), **dict(cfg.get("hyper") or {}))
    model.learn(total_timesteps=int(cfg["total_timesteps"]), progress_bar=progress)
    clean = {k: v for k, v in cfg.items() if k not in ("held_out",)}
    return save_policy(model, out / "policy.zip", k=1, algo="MaskablePPO", datasets=cfg["datasets"], config=clean,
                       extra={"obs_version": STREAM_OBS_VERSION, "kind": STREAM_KIND,
                              "held_out": cfg.get("held_out", [])})


def _stream_zip(spec: str) -> Path:
    s = str(spec)
    if s.startswith("policy:"):
        s = s[len("policy:"):]
    return resolve_policy_path("stream-default" if s in ("", "default") else s)


class StreamPolicy:
    """A learned stream policy on a :class:`metaal.stream.StreamEpisode` or ``metaal/Stream-v0``
    (any ``max_classes``, costs, length).

    ``policy(obs, source)`` reads the ``stream-2`` features of ``obs`` and returns the action on
    ``source`` (the episode, or an env around one): the request action, or the argmax class.

    :param path: ``stream-default`` (the shipped policy), ``policy:PATH``, a ``.zip`` or a folder.
    :param strict: raise :class:`PolicyError` instead of falling back to the expected-reward rule.
    """

    def __init__(self, path: "str | os.PathLike" = "stream-default", strict: bool = False) -> None:
        self.spec = str(path)
        self.zip_path = _stream_zip(self.spec)
        self.model: Any = None
        self.meta: dict[str, Any] = {}
        self.fallback: ThresholdStreamPolicy | None = None
        self.error: PolicyError | None = None
        try:
            meta = read_metadata(self.zip_path, obs_version=STREAM_OBS_VERSION)
            if meta.get("kind") != STREAM_KIND:
                raise PolicyError(f"policy {self.zip_path} is not a stream policy (kind {meta.get('kind')!r})")
            self.model, self.meta = load_model(self.zip_path, meta)
            n_in = int(np.prod(self.model.observation_space.shape))
            if n_in != 12:
                raise PolicyError(f"policy {self.zip_path} takes {n_in} features, stream-2 has 12")
        except PolicyError as exc:
            if strict:
                raise
            self.error = exc
            self.fallback = ThresholdStreamPolicy()
            msg = f"{exc}; falling back to the expected-reward threshold rule"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        name = self.spec if self.spec.startswith("policy:") else f"policy:{self.spec}"
        self.name = f"{name}(fallback=threshold)" if self.fallback is not None else name

    @property
    def is_fallback(self) -> bool:
        return self.fallback is not None

    @staticmethod
    def features(obs: dict[str, np.ndarray]) -> np.ndarray:
        """The ``(12,)`` ``stream-2`` features of ``obs``."""
        f = np.asarray(obs["features"], dtype=np.float32)
        if f.shape[0] != 12:
            raise ConfigError(
                "a learned stream policy needs the stream-2 observation (cost_features=True, 12 features)"
            )
        return f

    def request_probability(self, obs: dict[str, np.ndarray], source: Any) -> float:
        """The policy's probability of requesting (deterministic action: request iff > 0.5); 1
        before the first label (predicting is masked then)."""
        import torch as th  # heavy: only when a policy runs

        f = self.features(obs)
        if episode_of(source).n_requests == 0:
            return 1.0
        with th.no_grad():
            tens, _ = self.model.policy.obs_to_tensor(f)
            probs = self.model.policy.get_distribution(tens).distribution.probs.reshape(-1).cpu().numpy()
        return float(probs[REQUEST])

    def __call__(self, obs: dict[str, np.ndarray], source: Any) -> int:
        if self.fallback is not None:
            return self.fallback(obs, source)
        ep = episode_of(source)
        if ep.n_requests == 0 or self.request_probability(obs, ep) > 0.5:
            return int(ep.request_action)
        return argmax_class(obs, ep)

    def __repr__(self) -> str:
        return f"StreamPolicy({self.spec!r})"


def stream_policy_factory(arg: str, strict: bool = False) -> StreamPolicy:
    """``policy:ARG`` for :func:`metaal.strategies.stream.get_stream_policy` (entry point
    ``metaal.stream_policies``): ``stream-default`` or a policy file or folder."""
    return StreamPolicy(arg or "stream-default", strict=strict)
