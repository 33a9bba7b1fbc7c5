"""Meta-training of query policies from a YAML configuration (``metaal train``).

Stages (each writes its output into ``DIR`` and is skipped on ``--resume`` when it is there):

1. ``config.yaml``: the resolved configuration (datasets, seeds, K, budget range, algorithm,
   hyper-parameters), so the run can be reproduced from ``DIR`` alone.
2. ``val_baselines.json``: random and margin on the validation datasets (same protocol as
   :mod:`metaal.experiments.runner`: default splits, seeds ``0..S-1``).
3. Imitation (``imitation.enabled``): expert demonstrations over the meta-train datasets
   (``demos_0.npz``), behaviour cloning (``stages/bc.zip``; with ``imitation.variants``, a list
   of overrides such as ``{tau: 0.0}`` or ``{context: attention}``, one ``stages/bc_vI.zip`` per
   variant), then ``dagger_rounds`` DAgger rounds (``demos_R.npz``, ``stages/dagger_R.zip``)
   that roll in with the best stage so far and retrain the best variant on all demonstrations.
   Every stage is evaluated on the validation datasets.
4. RL (``rl.enabled``): MaskablePPO (or PPO, or DQN: ``MaskedDQN`` + ``SetDQNPolicy``) with the
   set-equivariant policy on the ``metaal/Pool-v0`` environment over the meta-train datasets,
   started from the best imitation stage (``rl.init: imitation``), from scratch (``scratch``) or
   from a policy file (a path); SB3 vector environments; checkpoints under
   ``DIR/checkpoints`` every ``checkpoint_every`` steps; a validation evaluation every
   ``eval.every_steps`` steps logged as ``eval/aulc_policy``, ``eval/aulc_margin``,
   ``eval/aulc_random`` in the same TensorBoard run as the PPO scalars; ``--resume`` continues
   from the latest checkpoint with the step count kept.
5. ``policy.zip`` + ``policy.json``: the stage with the best mean validation AULC (model
   selection on validation only; meta-test datasets are refused everywhere in the config), and
   ``validation.json`` with every stage's numbers.

TensorBoard: ``DIR/tb/train`` (``bc/loss``, ``bc/agreement``, ``eval/*``, ``rollout/*``,
``train/*``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import yaml

import metaal.envs  # noqa: F401  (registers metaal/Pool-v0)
from metaal.agents.imitation import Demonstrations, ProtocolMix, TaskSampler, bc_train, collect
from metaal.agents.policy_file import load_model, read_metadata, resolve_policy_path, save_policy
from metaal.data import load_dataset, make_split
from metaal.errors import ConfigError
from metaal.loop.simulate import simulate
from metaal.observe import OBS_VERSION, OBS_VERSIONS, feature_names
from metaal.protocols import PROTOCOLS, get_protocol
from metaal.state import Task
from metaal.strategies import get
from metaal.synthetic import random_task_spec

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger("metaal.agents")

#: the shipped split (``configs/meta_split.yaml`` in a checkout, ``metaal.configs`` when installed)
SPLIT_FILE = "configs/meta_split.yaml"

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "k": 32,
    "obs_version": OBS_VERSION,
    "protocols": {},
    "learner": "logreg",
    "initial": 10,
    "max_rows": 2000,
    "budget_range": [20, 150],
    "datasets": {"split_file": "configs/meta_split.yaml", "train": "meta_train", "validation": "validation",
                 "synthetic": 0.0},
    "network": {"embed_dim": 64, "context": "deepsets", "head": 64},
    "imitation": {"enabled": True, "n_states": 3000, "record_prob": 0.3, "tau": 0.5, "epochs": 40,
                  "lr": 0.001, "batch_size": 256, "ll_weight": 0.01, "dagger_rounds": 0,
                  "dagger_states": 1000, "dagger_beta": 0.0, "variants": [], "beam_width": 1, "beam_depth": 1},
    "rl": {"enabled": False, "algo": "MaskablePPO", "init": "imitation", "total_timesteps": 20000,
           "n_envs": 2, "vec_env": "dummy", "workers": 1, "device": "auto", "env_id": "metaal/Pool-v0",
           "env_kwargs": {},
           "hyper": {"learning_rate": 0.0001, "n_steps": 256, "batch_size": 128, "n_epochs": 4,
                     "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.005, "clip_range": 0.1}},
    "eval": {"seeds": 3, "budget": 80, "every_steps": 5000, "jobs": 2},
    "checkpoint_every": 5000,
    "jobs": 2,
}

#: ``rl.hyper`` defaults for ``rl.algo: DQN`` (the PPO ones above do not apply to it); wiring
#: defaults, not tuned
DQN_HYPER: dict[str, Any] = {"learning_rate": 0.0001, "buffer_size": 20000, "learning_starts": 500, "batch_size": 64,
                             "gamma": 0.99, "train_freq": 4, "gradient_steps": 1, "target_update_interval": 1000,
                             "exploration_fraction": 0.3, "exploration_initial_eps": 1.0,
                             "exploration_final_eps": 0.05}
ALGOS = ("MaskablePPO", "PPO", "DQN")
VEC_ENVS = ("dummy", "subproc", "batched")  # rl.vec_env, see make_vec_env


# ----------------------------------------------------------------------------------------------
# configuration


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_path(spec: "str | os.PathLike", what: str = "config") -> "Path | Traversable":
    """The YAML file that ``spec`` names: an existing path as it is; otherwise a file shipped in
    :mod:`metaal.configs` (the repository's ``configs/``, installed with the package), found by
    its name with or without ``.yaml`` and with or without a leading ``configs/``
    (``default``, ``default.yaml``, ``configs/default.yaml``).

    :raises ConfigError: if neither exists; the message lists the shipped configs.
    """
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    shipped = resources.files("metaal.configs")
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    if p.parent in (Path("."), Path("configs")) and shipped.joinpath(name).is_file():
        return shipped.joinpath(name)
    known = sorted(f.name[: -len(".yaml")] for f in shipped.iterdir() if f.name.endswith(".yaml"))
    raise ConfigError(f"{what} {p} not found (not a file, not a shipped config: {', '.join(known)})")


def read_split(path: "str | os.PathLike | None" = None) -> dict[str, list[str]]:
    """The fixed meta-train / validation / meta-test split (``configs/meta_split.yaml``, resolved
    as :func:`config_path` does)."""
    p = config_path(path or SPLIT_FILE, "split file")
    data = yaml.safe_load(p.read_text()) or {}
    return {k: list(v or []) for k, v in data.items()}


def _names(spec: Any, split: dict[str, list[str]], what: str) -> list[str]:
    if isinstance(spec, str):
        if spec not in split:
            raise ConfigError(f"{what}: unknown split group {spec!r} (known: {', '.join(split)})")
        return list(split[spec])
    if isinstance(spec, list) and spec:
        return [str(s) for s in spec]
    raise ConfigError(f"{what} must be a split group name or a non-empty list of datasets")


def load_config(path: "str | os.PathLike | dict[str, Any]") -> dict[str, Any]:
    """Read a training YAML, fill in defaults and resolve the dataset lists.

    :raises ConfigError: for a missing file, a bad value, or any meta-test dataset used for
        training or validation.
    """
    if isinstance(path, dict):
        raw = path
    else:
        p = config_path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {p} is not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {p} must be a mapping")
    unknown = set(raw) - set(DEFAULTS) - {"name", "description"}
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))} (known: {', '.join(DEFAULTS)})")
    cfg = _merge(DEFAULTS, raw)
    split = read_split(cfg["datasets"].get("split_file"))
    train = _names(cfg["datasets"]["train"], split, "datasets.train")
    val = _names(cfg["datasets"]["validation"], split, "datasets.validation")
    test = set(split.get("meta_test", []))
    bad = sorted((set(train) | set(val)) & test)
    if bad:
        raise ConfigError(f"meta-test datasets must never be used for training or validation: {', '.join(bad)}")
    cfg["datasets"]["train_names"] = train
    cfg["datasets"]["validation_names"] = val
    lo, hi = cfg["budget_range"]
    if not (1 <= int(lo) <= int(hi)):
        raise ConfigError(f"budget_range must be [lo, hi] with 1 <= lo <= hi (got {cfg['budget_range']})")
    if int(cfg["k"]) < 2:
        raise ConfigError(f"k must be >= 2 (got {cfg['k']})")
    for key in ("beam_width", "beam_depth"):
        v = cfg["imitation"][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"imitation.{key} must be an integer >= 1 (got {v!r})")
    if cfg["rl"]["algo"] not in ALGOS:
        raise ConfigError(f"rl.algo must be one of {', '.join(ALGOS)} (got {cfg['rl']['algo']!r})")
    if cfg["rl"]["algo"] == "DQN":  # DQN's own defaults, overridden by the config's rl.hyper only
        cfg["rl"]["hyper"] = {**DQN_HYPER, **dict(((raw.get("rl") or {}).get("hyper")) or {})}
        _check_dqn_hyper(cfg["rl"]["hyper"])
    rl = cfg["rl"]
    if rl.get("vec_env", "dummy") not in VEC_ENVS:
        raise ConfigError(f"rl.vec_env must be one of {', '.join(VEC_ENVS)} (got {rl['vec_env']!r})")
    if rl.get("vec_env") == "batched":
        if cfg["learner"] != "logreg":
            raise ConfigError(f"rl.vec_env: batched trains on a batched logistic regression and needs learner: "
                              f"logreg (got {cfg['learner']!r}; use vec_env: dummy or subproc for other learners)")
        if rl.get("env_id", "metaal/Pool-v0") != "metaal/Pool-v0":
            raise ConfigError(f"rl.vec_env: batched is the batched metaal/Pool-v0 (rl.env_id is {rl['env_id']!r})")
    if cfg["obs_version"] not in OBS_VERSIONS:
        raise ConfigError(f"obs_version must be one of {', '.join(OBS_VERSIONS)} (got {cfg['obs_version']!r})")
    mix = ProtocolMix.from_config(cfg["protocols"])
    if mix is not None and max(mix.batch_sizes) > 1 and cfg["obs_version"] == OBS_VERSION:
        raise ConfigError("protocols.batch_sizes above 1 need obs_version: obs-v2 (an obs-v1 policy takes a "
                          "batch as the top k of one scoring)")
    if cfg["obs_version"] != OBS_VERSION and cfg["rl"]["enabled"]:
        raise ConfigError(f"rl: the environments observe obs-v1 only; train an {cfg['obs_version']} policy "
                          "with imitation (rl.enabled: false)")
    bad = [p for p in (cfg["eval"].get("protocols") or []) if p not in PROTOCOLS]
    if bad:
        raise ConfigError(f"eval.protocols: unknown {', '.join(map(str, bad))} (known: {', '.join(PROTOCOLS)})")
    if not cfg["imitation"]["enabled"] and not cfg["rl"]["enabled"]:
        raise ConfigError("enable imitation, rl, or both")
    return cfg


def _check_dqn_hyper(hyper: dict[str, Any]) -> None:
    import inspect

    from stable_baselines3 import DQN

    allowed = set(inspect.signature(DQN.__init__).parameters) - {"self", "policy", "env", "policy_kwargs", "seed",
                                                                   "device", "verbose", "tensorboard_log",
                                                                   "_init_setup_model"}
    bad = sorted(set(hyper) - allowed)
    if bad:
        raise ConfigError(f"rl.hyper: DQN does not take {', '.join(bad)} "
                          f"(rl.algo: DQN; known: {', '.join(sorted(allowed))})")


def train_specs(cfg: dict[str, Any]) -> list[str]:
    """Training dataset specs; a ``datasets.synthetic`` share ``s`` in (0, 1) adds ``synth:random``
    entries so that about ``s`` of the episodes are synthetic."""
    names = list(cfg["datasets"]["train_names"])
    s = float(cfg["datasets"].get("synthetic", 0.0) or 0.0)
    if s > 0:
        n_syn = max(1, int(round(s * len(names) / max(1e-9, 1 - s))))
        names += ["synth:random"] * n_syn
    return names


# ----------------------------------------------------------------------------------------------
# models


class _SpaceEnv:
    """A never-stepped Gymnasium env that only carries the spaces (to build a model without the
    training environment, e.g. for behaviour cloning)."""

    def __new__(cls, k: int, obs_version: str = OBS_VERSION) -> Any:
        import gymnasium as gym

        from metaal.agents.networks import obs_space  # torch and SB3: heavy, only when a model is built

        F, G = (len(f) for f in feature_names(obs_version))

        class SpaceEnv(gym.Env):
            def __init__(self) -> None:
                self.observation_space = obs_space(k, F, G)
                self.action_space = gym.spaces.Discrete(k)

            def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
                super().reset(seed=seed)
                return {key: np.zeros(sp.shape, sp.dtype) for key, sp in self.observation_space.spaces.items()}, {}

            def step(self, action: int) -> Any:
                raise RuntimeError("the space-only env cannot be stepped")

            def action_masks(self) -> np.ndarray:
                return np.ones(k, dtype=bool)

        return SpaceEnv()


def policy_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    net = cfg["network"]
    return {
        "features_extractor_kwargs": {"embed_dim": int(net["embed_dim"]), "context": str(net["context"])},
        "net_arch": {"head": int(net.get("head", 64))},
    }


def make_model(cfg: dict[str, Any], env: Any = None, tb: str | None = None, algo: str | None = None) -> Any:
    """A MaskablePPO / PPO / DQN model with the set policy (on ``env``, or on a space-only env).

    :param algo: overrides ``rl.algo`` (behaviour cloning builds MaskablePPO for a DQN config);
        ``rl.hyper`` is only used for ``rl.algo`` itself, another algorithm gets the defaults.
    """
    import torch as th
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metaal.agents import networks  # torch and SB3: heavy, only when a model is built

    th.manual_seed(int(cfg["seed"]))
    if env is None:
        k, version = int(cfg["k"]), str(cfg.get("obs_version", OBS_VERSION))
        env = DummyVecEnv([lambda: _SpaceEnv(k, version)])
    algo = algo or cfg["rl"]["algo"]
    hyper = dict(cfg["rl"]["hyper"] if algo == cfg["rl"]["algo"] else DEFAULTS["rl"]["hyper"])
    if algo == "DQN":
        return networks.MaskedDQN(networks.SetDQNPolicy, env, policy_kwargs=policy_kwargs(cfg), seed=int(cfg["seed"]),
                                  device="cpu", verbose=0, tensorboard_log=tb, **hyper)
    if algo == "MaskablePPO":
        from sb3_contrib import MaskablePPO

        return MaskablePPO(networks.SetMaskablePolicy, env, policy_kwargs=policy_kwargs(cfg), seed=int(cfg["seed"]),
                           device="cpu", verbose=0, tensorboard_log=tb, **hyper)
    from stable_baselines3 import PPO

    return PPO(networks.SetActorCriticPolicy, env, policy_kwargs=policy_kwargs(cfg), seed=int(cfg["seed"]),
               device="cpu", verbose=0, tensorboard_log=tb, **hyper)


def model_algo(model: Any) -> str:
    """The ``algo`` name of a model for the policy metadata: ``MaskablePPO``, ``PPO`` or ``DQN``."""
    from stable_baselines3 import DQN

    return "DQN" if isinstance(model, DQN) else type(model).__name__


def init_weights(model: Any, src: Any) -> None:
    """Start ``model`` from the weights of a loaded policy file's model ``src``.

    The same kind of policy loads the whole state dict. A DQN model started from an actor-critic
    (the imitation stages) copies the shared set encoder and the candidate scorer into both
    ``q_net`` and ``q_net_target``: the Q-values then start as the behaviour-cloned logits (same
    ranking of candidates, arbitrary scale; the TD updates rescale them). An actor-critic cannot
    start from a DQN file (it has no value head).

    :raises ConfigError: for a DQN policy file used to start (Maskable)PPO.
    """
    from stable_baselines3 import DQN

    if isinstance(model, DQN) == isinstance(src, DQN):
        model.policy.load_state_dict(src.policy.state_dict())
        return
    if isinstance(src, DQN):
        raise ConfigError("rl.init: a DQN policy file can only start a DQN model (rl.algo: DQN)")
    for q in (model.policy.q_net, model.policy.q_net_target):
        q.features_extractor.load_state_dict(src.policy.features_extractor.state_dict())
        q.q_net.load_state_dict(src.policy.action_net.state_dict())


def _save(model: Any, path: Path, cfg: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    public = {k: v for k, v in cfg.items()}
    return save_policy(model, path, k=int(cfg["k"]), algo=model_algo(model),
                       datasets=list(cfg["datasets"]["train_names"]), config=public, extra=extra,
                       obs_version=str(cfg.get("obs_version", OBS_VERSION)))


# ----------------------------------------------------------------------------------------------
# validation


def _cell(task: Any, strategy: str, budget: int, learner: str, batch_size: int = 1, metric: str = "accuracy") -> float:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        c = simulate(task, get(strategy), budget, learner=learner, seed=int(task.seed), batch_size=batch_size)
        return c.aulc_f1 if metric == "macro_f1" else c.aulc


def evaluate_strategies(strategies: list[str], datasets: list[str], seeds: int, budget: int, learner: str,
                        initial: int, jobs: int, progress: bool = False, protocol: str | None = None
                        ) -> dict[str, dict[str, float]]:
    """Mean AULC per (strategy, dataset) on the default protocol (seeds ``0..S-1``, the same
    splits as ``metaal compare``); the budget is capped at each dataset's unlabeled pool.
    ``protocol``: a :data:`metaal.protocols.PROTOCOLS` name instead (its initial set, budget,
    batch size, imbalance and headline metric: macro-F1 AULC for ``imbalanced``).
    Returns ``{strategy: {dataset: aulc}}``."""
    from joblib import Parallel, delayed

    batch_size, metric = 1, "accuracy"
    proto = get_protocol(protocol) if protocol else None
    if proto is not None:
        initial, budget, batch_size, metric = proto.initial, proto.budget, proto.batch_size, proto.metric
    cells = []
    for name in datasets:
        ds = load_dataset(name)
        if proto is not None:
            ds = proto.apply([ds])[0]
        for seed in range(int(seeds)):
            task = Task.from_split(ds, make_split(ds, seed, initial))
            b = int(min(budget, task.n_pool - len(task.initial)))
            cells += [(s, name, task, b) for s in strategies]
    from tqdm.auto import tqdm

    gen = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_cell)(task, s, b, learner, batch_size, metric) for s, _n, task, b in cells)
    vals = list(tqdm(gen, total=len(cells), disable=not progress, desc="validation runs", leave=False))
    acc: dict[str, dict[str, list[float]]] = {s: {} for s in strategies}
    for (s, name, _t, _b), v in zip(cells, vals):
        acc[s].setdefault(name, []).append(float(v))
    return {s: {n: float(np.mean(v)) for n, v in d.items()} for s, d in acc.items()}


class Validator:
    """Evaluates policy files on the validation datasets and keeps the numbers per stage.

    With ``eval.protocols`` (names of :data:`metaal.protocols.PROTOCOLS`) every stage runs in each
    protocol and its score is the mean over the protocols of its mean headline AULC (so the stage
    kept is the best across protocols); without, the config's initial set and ``eval.budget``.
    """

    def __init__(self, cfg: dict[str, Any], out: Path, progress: bool = False):
        self.cfg, self.out = cfg, out
        e = cfg["eval"]
        self.kw = dict(datasets=cfg["datasets"]["validation_names"], seeds=int(e["seeds"]), budget=int(e["budget"]),
                       learner=cfg["learner"], initial=int(cfg["initial"]), jobs=int(e.get("jobs", cfg["jobs"])),
                       progress=progress)
        self.protocols: list[str | None] = list(e.get("protocols") or [None])
        self.path = out / "validation.json"
        self.results: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        bp = out / "val_baselines.json"
        keys = [str(p) for p in self.protocols]
        saved = json.loads(bp.read_text()) if bp.is_file() else {}
        if sorted(saved) == sorted(keys):
            self.baselines_by = saved
        else:
            self.baselines_by = {str(p): evaluate_strategies(["random", "margin"], **self.kw, protocol=p)
                                 for p in self.protocols}
            bp.write_text(json.dumps(self.baselines_by, indent=2))

    def mean(self, name: str) -> float:
        """A baseline's score: its mean AULC, averaged over the protocols."""
        return float(np.mean([np.mean(list(b[name].values())) for b in self.baselines_by.values()]))

    def evaluate(self, stage: str, zip_path: Path) -> dict[str, Any]:
        if stage in self.results:
            return self.results[stage]
        key = f"policy:{zip_path}"
        per_protocol = {str(p): evaluate_strategies([key], **self.kw, protocol=p)[key] for p in self.protocols}
        scores = [float(np.mean(list(per.values()))) for per in per_protocol.values()]
        wins = sum(int(sum(per[d] > self.baselines_by[p]["margin"][d] + 1e-12 for d in per))
                   for p, per in per_protocol.items())
        res = {
            "zip": str(zip_path),
            "aulc_policy": float(np.mean(scores)),
            "aulc_margin": self.mean("margin"),
            "aulc_random": self.mean("random"),
            "per_dataset": per_protocol[str(self.protocols[0])] if len(self.protocols) == 1 else per_protocol,
            "wins_vs_margin": wins,
        }
        if len(self.protocols) > 1:
            res["per_protocol"] = {
                p: {"policy": sc, "margin": float(np.mean(list(self.baselines_by[p]["margin"].values()))),
                    "random": float(np.mean(list(self.baselines_by[p]["random"].values())))}
                for p, sc in zip(per_protocol, scores)}
        self.results[stage] = res
        self.path.write_text(json.dumps(self.results, indent=2))
        log.info("validation %s: policy %.4f margin %.4f random %.4f", stage, res["aulc_policy"],
                 res["aulc_margin"], res["aulc_random"])
        return res

    def best(self) -> tuple[str, dict[str, Any]]:
        if not self.results:
            raise ConfigError("no stage was evaluated")
        stage = max(self.results, key=lambda s: (self.results[s]["aulc_policy"], -list(self.results).index(s)))
        return stage, self.results[stage]


# ----------------------------------------------------------------------------------------------
# RL


def make_vec_env(cfg: dict[str, Any]) -> Any:
    """SB3 vector env of ``rl.n_envs`` episodes over the training datasets.

    ``rl.vec_env``: ``dummy`` / ``subproc`` hold ``n_envs`` copies of ``rl.env_id`` (one
    scikit-learn learner each; ``subproc``: one process each); ``batched`` steps all ``n_envs``
    episodes on one batched torch logistic regression
    (:func:`metaal.agents.vec_shard.make_batched_vec_env`: ``rl.workers`` processes, ``rl.device``
    ``auto`` = the GPU when present), same observations and rewards as ``metaal/Pool-v0``, for
    ``learner: logreg`` only. ``rl.env_kwargs`` go to every environment. ``cfg`` comes from
    :func:`load_config`, which checks these settings.
    """
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    rl = cfg["rl"]
    kind = rl.get("vec_env", "dummy")
    kwargs = dict(rl.get("env_kwargs") or {})
    specs: list[Any] = [random_task_spec if s == "synth:random" else s for s in train_specs(cfg)]
    kwargs.setdefault("datasets", specs)
    kwargs.setdefault("k", int(cfg["k"]))
    kwargs.setdefault("budget", tuple(int(b) for b in cfg["budget_range"]))
    kwargs.setdefault("initial", int(cfg["initial"]))
    kwargs.setdefault("max_pool", int(cfg["max_rows"]))
    seed = int(cfg["seed"])
    n_envs = int(rl["n_envs"])
    if kind == "batched":
        from metaal.agents.vec_shard import make_batched_vec_env  # SB3 and torch: heavy, only for this env

        kwargs.pop("learner", None)
        venv = make_batched_vec_env(n_envs, workers=int(rl.get("workers", 1)), seed=seed * 1000,
                                    device=str(rl.get("device", "auto")), **kwargs)
        return VecMonitor(venv)
    kwargs.setdefault("learner", cfg["learner"])

    def factory(rank: int) -> Any:
        def _make() -> Any:
            env = gym.make(rl["env_id"], **kwargs)
            env.reset(seed=seed * 1000 + rank)
            return Monitor(env)

        return _make

    fns = [factory(r) for r in range(n_envs)]
    if kind == "subproc" and len(fns) > 1:
        return SubprocVecEnv(fns, start_method="fork")
    return DummyVecEnv(fns)


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    best, best_n = None, -1
    for p in ckpt_dir.glob("rl_model_*_steps.zip"):
        try:
            n = int(p.stem.split("_")[-2])
        except ValueError:
            continue
        if n > best_n:
            best, best_n = p, n
    return best


def _eval_callback(cfg: dict[str, Any], out: Path, validator: Validator) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    every = int(cfg["eval"]["every_steps"])

    class ValidationCallback(BaseCallback):
        """Every ``eval.every_steps`` steps: save the policy, evaluate it on the validation
        datasets and log ``eval/aulc_policy|margin|random`` into the PPO TensorBoard run."""

        def __init__(self) -> None:
            super().__init__()
            self.last = -1

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if every > 0 and n // every > self.last // every and n > 0:
                self.last = n
                self.evaluate(n)
            return True

        def evaluate(self, n: int) -> None:
            zp = _save(self.model, out / "stages" / f"rl_{n}.zip", cfg)
            res = validator.evaluate(f"rl_{n}", zp)
            for key in ("aulc_policy", "aulc_margin", "aulc_random"):
                self.logger.record(f"eval/{key}", res[key])
            self.logger.record("eval/wins_vs_margin", res["wins_vs_margin"])
            self.logger.dump(n)

    return ValidationCallback()


def _progress_callback(total: int) -> Any:
    """A tqdm bar over the RL timesteps (with the time left), started at the step count a resumed
    run continues from."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class TqdmCallback(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, initial=int(self.model.num_timesteps), desc="RL timesteps", unit="step")

        def _on_step(self) -> bool:
            self.bar.update(max(0, int(self.num_timesteps) - self.bar.n))
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return TqdmCallback()


def run_rl(cfg: dict[str, Any], out: Path, validator: Validator, logger: Any, init_zip: Path | None,
           resume: bool, progress: bool) -> None:
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

    rl = cfg["rl"]
    total = int(rl["total_timesteps"])
    if init_zip is not None:  # the starting stage may be a variant with another network
        cfg = copy.deepcopy(cfg)
        cfg["network"] = dict(read_metadata(init_zip, obs_version=str(cfg["obs_version"])).get("config", {})
                              .get("network") or cfg["network"])
    env = make_vec_env(cfg)
    ckpt_dir = out / "checkpoints"
    latest = _latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        if rl["algo"] == "MaskablePPO":
            from sb3_contrib import MaskablePPO as cls
        elif rl["algo"] == "DQN":
            from metaal.agents.networks import MaskedDQN as cls  # torch and SB3: heavy
        else:
            from stable_baselines3 import PPO as cls
        model = cls.load(str(latest), env=env, device="cpu")
        log.info("resuming from %s at step %d", latest, model.num_timesteps)
    else:
        model = make_model(cfg, env)
        if init_zip is not None:
            src, _ = load_model(init_zip)
            init_weights(model, src)
    model.set_logger(logger)
    remaining = total - int(model.num_timesteps)
    if remaining <= 0:
        env.close()
        return model
    n_envs = int(rl["n_envs"])
    ckpt = CheckpointCallback(save_freq=max(1, int(cfg["checkpoint_every"]) // n_envs), save_path=str(ckpt_dir),
                              name_prefix="rl_model")
    evalcb = _eval_callback(cfg, out, validator)
    evalcb.last = int(model.num_timesteps)
    cbs = [ckpt, evalcb] + ([_progress_callback(total)] if progress else [])
    model.learn(remaining, callback=CallbackList(cbs), reset_num_timesteps=latest is None)
    model.save(str(ckpt_dir / f"rl_model_{model.num_timesteps}_steps.zip"))
    if f"rl_{model.num_timesteps}" not in validator.results:
        evalcb.evaluate(int(model.num_timesteps))
    env.close()
    return model


# ----------------------------------------------------------------------------------------------
# the whole pipeline


#: what a run writes into its folder (``--force`` removes these and nothing else)
RUN_FILES = ("config.yaml", "val_baselines.json", "validation.json", "summary.json", "policy.zip", "policy.json",
             "demos_*.npz", "demos_*.npz.tmp.npz", "stages", "tb", "checkpoints")


def run_files(out: Path) -> list[Path]:
    """The files and folders of a training run (finished or started) in ``out``."""
    if not out.is_dir():
        return []
    return sorted({p for pat in RUN_FILES for p in out.glob(pat)})


def stage_plan(cfg: dict[str, Any]) -> list[str]:
    """The names of the stages :func:`train` runs for ``cfg``, in order (``metaal train`` prints
    ``stage i/n: NAME ...`` as each starts)."""
    names = ["validation baselines (random, margin)"]
    im = cfg["imitation"]
    if im["enabled"]:
        n_var = max(1, len(im.get("variants") or []))
        names.append("imitation (behaviour cloning" + (f", {n_var} variants)" if n_var > 1 else ")"))
        names += [f"imitation (dagger round {r})" for r in range(1, int(im["dagger_rounds"]) + 1)]
    if cfg["rl"]["enabled"]:
        names.append(f"rl ({cfg['rl']['algo']}, {int(cfg['rl']['total_timesteps'])} timesteps)")
    return names


def train(config: "str | os.PathLike | dict[str, Any]", out: "str | os.PathLike", resume: bool = False,
          progress: bool = True, force: bool = False, say: "Callable[[str], None] | None" = None) -> dict[str, Any]:
    """Run the configured stages into ``out`` and write ``out/policy.zip`` + ``policy.json``.

    :param resume: keep what an interrupted run left in ``out`` (demonstrations, stages,
        evaluations, the latest RL checkpoint) and continue; the configuration must be the same
        (only ``rl.total_timesteps`` may change).
    :param force: remove a previous run's files from ``out`` (:data:`RUN_FILES`) and start over.
        Without ``resume`` or ``force``, a folder that holds a run (finished or started) is refused.
    :param progress: tqdm bars with the time left for the long loops (demonstration episodes,
        validation runs, RL timesteps).
    :param say: called with one line as each stage starts (``stage 2/4: imitation ...``);
        default: the ``metaal.agents`` log.
    :returns: a summary dict (chosen stage, validation numbers, seconds).
    """
    from stable_baselines3.common.logger import configure

    t0 = time.time()
    cfg = load_config(config)
    out = Path(out)
    if resume and force:
        raise ConfigError("use either --resume or --force, not both")
    used = run_files(out)
    if used and not resume:
        if not force:
            state = "finished" if (out / "policy.zip").is_file() else "started"
            raise ConfigError(f"{out} already holds a {state} training run; "
                              "use --resume to continue or --force to overwrite")
        for p in used:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    plan = stage_plan(cfg)
    emit = say or log.info

    def announce(name: str) -> None:
        emit(f"stage {plan.index(name) + 1}/{len(plan)}: {name} ...")

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    text = yaml.safe_dump(cfg, sort_keys=False)
    if cfg_path.is_file() and cfg_path.read_text() != text:
        old = yaml.safe_load(cfg_path.read_text())
        # resuming may only extend the RL step budget
        a, b = _merge(DEFAULTS, old), _merge(DEFAULTS, cfg)  # keys added to DEFAULTS since: their defaults
        a["rl"].pop("total_timesteps", None)
        b["rl"].pop("total_timesteps", None)
        if a != b:
            raise ConfigError(f"--resume: {cfg_path} differs from the given configuration "
                              "(only rl.total_timesteps may change)")
    cfg_path.write_text(text)
    (out / "stages").mkdir(exist_ok=True)
    logger = configure(str(out / "tb" / "train"), ["tensorboard", "csv"])
    announce(plan[0])
    validator = Validator(cfg, out, progress=progress)
    for key in ("aulc_margin", "aulc_random"):
        logger.record(f"eval/{key}", validator.mean(key.split("_")[1]))
    logger.dump(0)
    seed = int(cfg["seed"])
    init_zip: Path | None = None
    im = cfg["imitation"]
    if im["enabled"]:
        sampler = TaskSampler(train_specs(cfg), max_rows=int(cfg["max_rows"]), initial=int(cfg["initial"]))
        common = dict(k=int(cfg["k"]), budget_range=tuple(cfg["budget_range"]), record_prob=float(im["record_prob"]),
                      jobs=int(cfg["jobs"]), learner=cfg["learner"], ll_weight=float(im["ll_weight"]),
                      beam_width=int(im["beam_width"]), beam_depth=int(im["beam_depth"]), progress=progress,
                      obs_version=str(cfg["obs_version"]), mix=ProtocolMix.from_config(cfg["protocols"]))
        parts: list[Demonstrations] = []
        step = 0
        variants = [dict(v or {}) for v in (im.get("variants") or [{}])]
        best_v = 0
        roll_stage = "bc"
        for r in range(int(im["dagger_rounds"]) + 1):
            announce(plan[1 + r])
            dp = out / f"demos_{r}.npz"
            if dp.is_file():
                demos = Demonstrations.load(str(dp))
            else:
                if r == 0:
                    demos = collect(sampler, int(im["n_states"]), seed=seed, rollin="mix", **common)
                else:  # DAgger: roll in with the best stage so far, the expert labels the visited states
                    prev, _ = load_model(out / "stages" / f"{roll_stage}.zip")
                    demos = collect(sampler, int(im["dagger_states"]), seed=seed, rollin="policy",
                                    policy=prev.policy, beta=float(im["dagger_beta"]), episode_offset=100000 * r,
                                    **common)
                demos.save(str(dp))
            parts.append(demos)
            data = Demonstrations.concat(parts)
            todo = list(enumerate(variants)) if r == 0 else [(best_v, variants[best_v])]
            for i, var in todo:
                name = ("bc" if r == 0 else f"dagger_{r}") + (f"_v{i}" if len(variants) > 1 else "")
                zp = out / "stages" / f"{name}.zip"
                p = {**im, **{k: v for k, v in var.items() if k in im}}
                vcfg = copy.deepcopy(cfg)
                vcfg["network"].update({k: v for k, v in var.items() if k in vcfg["network"]})
                if not zp.is_file():
                    model = make_model(vcfg, algo=None if cfg["rl"]["algo"] != "DQN" else "MaskablePPO")

                    def log_fn(ep: int, loss: float, _s: str = name, _base: int = step) -> None:
                        logger.record(f"bc/loss_{_s}", loss)
                        logger.dump(_base + ep)

                    stats = bc_train(model.policy, data, epochs=int(p["epochs"]), lr=float(p["lr"]),
                                     batch_size=int(p["batch_size"]), tau=float(p["tau"]), seed=seed, log_fn=log_fn)
                    logger.record(f"bc/agreement_{name}", stats["agreement"])
                    logger.record("bc/n_states", len(data))
                    logger.dump(step + int(p["epochs"]))
                    _save(model, zp, vcfg, extra={"stage": name, "bc": stats, "n_states": len(data), "variant": var})
                step += int(p["epochs"])
                res = validator.evaluate(name, zp)
                for key in ("aulc_policy", "aulc_margin", "aulc_random"):
                    logger.record(f"eval/{key}", res[key])
                logger.dump(step)
            roll_stage = validator.best()[0]
            if r == 0 and len(variants) > 1:
                scores = [validator.results[f"bc_v{i}"]["aulc_policy"] for i in range(len(variants))]
                best_v = int(np.argmax(scores))
        init_zip = out / "stages" / (validator.best()[0] + ".zip")
    if cfg["rl"]["enabled"]:
        how = str(cfg["rl"].get("init") or "scratch")
        if how == "imitation":
            init = init_zip
        elif how == "scratch":
            init = None
        else:  # a policy file to start from
            init = resolve_policy_path(how)
        announce(plan[-1])
        run_rl(cfg, out, validator, logger, init, resume, progress)
    stage, res = validator.best()
    src = Path(res["zip"])
    final = out / "policy.zip"
    model, meta = load_model(src)
    cfg = {**cfg, "network": dict((meta.get("config") or {}).get("network") or cfg["network"])}
    extra = {"stage": stage, "validation": {k: v for k, v in res.items() if k != "zip"},
             "all_stages": {s: r["aulc_policy"] for s, r in validator.results.items()}}
    _save(model, final, cfg, extra=extra)
    summary = {"policy": str(final), "stage": stage, "validation": res, "seconds": round(time.time() - t0, 1),
               "stages": {s: r["aulc_policy"] for s, r in validator.results.items()},
               "aulc_margin": validator.mean("margin"), "aulc_random": validator.mean("random")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.close()
    return summary
