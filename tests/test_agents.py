"""metaal.agents: set-equivariant networks, policy files, LearnedStrategy, imitation, training."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metaal.data import load_dataset, make_split
from metaal.errors import ConfigError, PolicyError
from metaal.loop.simulate import new_state, simulate
from metaal.observe import Observer
from metaal.state import Task
from metaal.strategies import get


def _task(name: str = "sklearn:wine", seed: int = 0) -> Task:
    ds = load_dataset(name)
    return Task.from_split(ds, make_split(ds, seed, 10))


def _cfg(**over):
    from metaal.agents.train import load_config

    raw = {"k": 8, "network": {"embed_dim": 16, "head": 16},
           "datasets": {"train": ["sklearn:breast_cancer"], "validation": ["sklearn:iris"]},
           "imitation": {"enabled": True}, "eval": {"seeds": 1, "budget": 6, "jobs": 1}, "jobs": 1}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(raw)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    """A small untrained (random-weights) MaskablePPO set policy saved as a policy file."""
    from metaal.agents.train import _save, make_model

    cfg = _cfg()
    model = make_model(cfg)
    # make the logits non-trivial (the last layer starts near zero)
    with torch.no_grad():
        for p in model.policy.action_net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    path = _save(model, tmp_path_factory.mktemp("pol") / "p.zip", cfg)
    return path, model


# ----------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("context", ["deepsets", "attention"])
def test_permutation_equivariance_and_any_k(context):
    import gymnasium as gym

    from metaal.agents.networks import SetMaskablePolicy, obs_space

    torch.manual_seed(0)
    pol8 = SetMaskablePolicy(obs_space(8), gym.spaces.Discrete(8), lambda _: 1e-3,
                             features_extractor_kwargs={"context": context, "embed_dim": 16})
    with torch.no_grad():
        for p in pol8.action_net.parameters():
            p.add_(torch.randn_like(p))
    obs = {"candidates": torch.rand(3, 8, 12), "global": torch.rand(3, 10), "action_mask": torch.ones(3, 8)}
    obs["action_mask"][1, 5:] = 0
    logits = pol8.candidate_logits(obs)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    obs_p = {"candidates": obs["candidates"][:, perm], "global": obs["global"], "action_mask": obs["action_mask"][:, perm]}
    assert torch.allclose(pol8.candidate_logits(obs_p), logits[:, perm], atol=1e-5)
    assert (logits[1, 5:] < -1e7).all() and (logits[1, :5] > -1e7).all()
    v = pol8.predict_values(obs)
    assert torch.allclose(pol8.predict_values(obs_p), v, atol=1e-5)  # value is invariant
    assert logits.std() > 0
    # the same weights on K = 16: the first 8 candidates alone give the same logits as before
    pol16 = SetMaskablePolicy(obs_space(16), gym.spaces.Discrete(16), lambda _: 1e-3,
                              features_extractor_kwargs={"context": context, "embed_dim": 16})
    pol16.load_state_dict(pol8.state_dict())
    pad = {"candidates": torch.cat([obs["candidates"], torch.zeros(3, 8, 12)], 1), "global": obs["global"],
           "action_mask": torch.cat([obs["action_mask"], torch.zeros(3, 8)], 1)}
    l16 = pol16.candidate_logits(pad)
    assert l16.shape == (3, 16)
    assert torch.allclose(l16[:, :8], logits, atol=1e-5)
    assert (l16[:, 8:] < -1e7).all()
    # the per-candidate Q-network is equivariant too
    from metaal.agents.networks import SetQNetwork

    qnet = SetQNetwork(obs_space(8), embed_dim=16, context=context)
    q = qnet(obs)
    assert q.shape == (3, 8) and torch.allclose(qnet(obs_p), q[:, perm], atol=1e-5)


# ----------------------------------------------------------------------------------------------
# policy files and LearnedStrategy


def test_saved_policy_reloads_and_acts_identically(policy_file):
    from metaal.agents import LearnedStrategy
    from metaal.agents.strategy import policy_logits, read_metadata

    path, model = policy_file
    meta = read_metadata(path)
    assert meta["k"] == 8 and meta["obs_version"] == Observer.version and len(meta["sha256"]) == 64
    strat = LearnedStrategy(path, strict=True)
    assert strat.name == f"policy:{path}" and not strat.is_fallback
    state = new_state(_task(), "logreg", budget=20)
    obs = Observer(k=8).observe(state, np.random.default_rng(3))
    ref = policy_logits(model.policy, obs.as_dict())
    got = policy_logits(strat.model.policy, obs.as_dict())
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    pick = strat.select(state, 1, np.random.default_rng(3))
    assert pick.tolist() == [int(obs.indices[np.argmax(ref)])]
    top3 = strat.select(state, 3, np.random.default_rng(3))
    assert top3.tolist() == obs.indices[np.argsort(-ref, kind="stable")[:3]].tolist()
    # more picks than candidates: completed in margin's order, all distinct and unlabeled
    many = strat.select(state, 12, np.random.default_rng(3))
    assert len(set(many.tolist())) == 12 and not state.labeled_mask[many].any()
    # a whole simulated run is reproducible
    c1 = simulate(_task(), strat, 8, seed=1)
    c2 = simulate(_task(), LearnedStrategy(path), 8, seed=1)
    assert c1.queried == c2.queried


def test_corrupt_policy_strict_error_and_fallback(policy_file, tmp_path, caplog):
    from metaal.agents import LearnedStrategy

    path, _ = policy_file
    bad = tmp_path / "bad.zip"
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.json").write_text(Path(path).with_suffix(".json").read_text())
    with pytest.raises(PolicyError, match="corrupt"):
        LearnedStrategy(bad, strict=True)
    with pytest.raises(PolicyError, match="not found"):
        LearnedStrategy(tmp_path / "missing.zip", strict=True)
    with caplog.at_level(logging.WARNING, logger="metaal.agents"):
        with pytest.warns(RuntimeWarning, match="falling back to the 'margin' heuristic"):
            strat = LearnedStrategy(bad)
    assert "corrupt" in caplog.text
    assert strat.is_fallback and strat.name == f"policy:{bad}(fallback=margin)"
    state = new_state(_task(), "logreg", budget=5)
    assert strat.select(state, 2).tolist() == get("margin").select(state, 2).tolist()
    # through the registry too, with another fallback
    with pytest.warns(RuntimeWarning):
        s2 = get(f"policy:{bad}", fallback="entropy")
    assert s2.name.endswith("(fallback=entropy)")


def test_wrong_observation_version_falls_back(policy_file, tmp_path):
    from metaal.agents import LearnedStrategy

    path, _ = policy_file
    z = tmp_path / "old.zip"
    z.write_bytes(Path(path).read_bytes())
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    meta["obs_version"] = "obs-v0"
    (tmp_path / "old.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="observation version 'obs-v0'"):
        LearnedStrategy(z, strict=True)
    with pytest.warns(RuntimeWarning, match="obs-v0"):
        s = LearnedStrategy(z, fallback="random")
    assert s.is_fallback and "fallback=random" in s.name


def test_policy_default_via_compare_cli(tmp_path):
    from metaal.agents.strategy import resolve_policy_path
    from metaal.cli import main

    if not resolve_policy_path("default").is_file():
        pytest.skip("the shipped default policy is not built yet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the shipped policy must load, no fallback
        s = get("policy:default", strict=True)
    assert s.name == "policy:default"
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", "sklearn:wine", "--strategies", "random,margin,policy:default",
               "--budget", "6", "--seeds", "2", "--jobs", "1", "--no-progress", "--no-plot", "--out", str(out)])
    assert rc == 0
    text = (out / "summary.csv").read_text()
    assert "policy:default" in text and "margin" in text


# ----------------------------------------------------------------------------------------------
# imitation and training


def test_expert_gains_and_behaviour_cloning(wine):
    from metaal.agents.imitation import TaskSampler, agreement, bc_train, collect, lookahead_gains, soft_targets
    from metaal.agents.train import make_model

    task = _task()
    state = new_state(task, "logreg", budget=10)
    obs = Observer(k=8).observe(state, np.random.default_rng(0))
    g = lookahead_gains(state, task, obs.indices, obs.mask, ll_weight=0.0)
    # the expert's gain is exactly the reward-split accuracy after labeling that candidate
    j = int(np.argmax(g))
    c = int(obs.indices[j])
    lrn = state.learner.clone().fit(np.concatenate([state.X_pool[state.labeled_idx], state.X_pool[[c]]]),
                                    np.concatenate([state.y_labeled, task.y_pool[[c]]]))
    base = np.mean(state.learner.predict(task.X_test) == task.y_test)
    assert g[j] == pytest.approx(np.mean(lrn.predict(task.X_test) == task.y_test) - base, abs=1e-9)
    t = soft_targets(g[None], obs.mask[None], tau=0.0)
    assert t.sum() == pytest.approx(1.0) and t[0, j] > 0
    demos = collect(TaskSampler(["sklearn:breast_cancer"], initial=6), 24, k=8, budget_range=(6, 12),
                    record_prob=0.5, seed=0)
    demos2 = collect(TaskSampler(["sklearn:breast_cancer"], initial=6), 24, k=8, budget_range=(6, 12),
                     record_prob=0.5, seed=0)
    assert len(demos) >= 10 and np.array_equal(demos.gains, demos2.gains)  # reproducible
    assert np.isfinite(demos.gains[demos.mask]).all() and np.isinf(demos.gains[~demos.mask]).all()
    model = make_model(_cfg())
    before = agreement(model.policy, demos)
    stats = bc_train(model.policy, demos, epochs=150, lr=5e-3, tau=0.0, seed=0)
    # it learns from its demonstrations: lower cross-entropy, more agreement with the expert
    assert stats["loss"] < 0.95 * stats["loss_first_epoch"]
    assert stats["agreement"] > before


def test_config_refuses_meta_test():
    from metaal.agents.train import load_config

    with pytest.raises(ConfigError, match="meta-test"):
        load_config({"datasets": {"train": ["wine", "adult_a1a"]}})
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config({"epochs": 3})


def test_tiny_training_run_writes_policy_tb_and_resumes(tmp_path):
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.strategy import read_metadata
    from metaal.agents.train import train

    rl = {"enabled": True, "init": "scratch", "total_timesteps": 64, "n_envs": 1,
          "env_kwargs": {"max_pool": 120, "reward_cap": 60},
          "hyper": {"n_steps": 32, "batch_size": 32, "n_epochs": 1}}
    cfg = _cfg(imitation={"enabled": False}, rl=rl, budget_range=[4, 8],
               eval={"every_steps": 64}, checkpoint_every=32)
    out = tmp_path / "run"
    s1 = train(cfg, out, progress=False)
    assert (out / "policy.zip").is_file() and read_metadata(out / "policy.zip")["k"] == 8
    assert list((out / "tb").rglob("events.out.tfevents*"))
    assert (out / "checkpoints" / "rl_model_64_steps.zip").is_file()
    assert (out / "config.yaml").is_file() and s1["stage"] == "rl_64"
    # "interrupted" run resumed with a longer budget: continues from step 64, not from 0
    cfg2 = _cfg(imitation={"enabled": False}, rl={**rl, "total_timesteps": 96}, budget_range=[4, 8],
                eval={"every_steps": 64}, checkpoint_every=32)
    s2 = train(cfg2, out, resume=True, progress=False)
    assert (out / "checkpoints" / "rl_model_96_steps.zip").is_file()
    assert set(s2["stages"]) == {"rl_64", "rl_96"}
    with pytest.raises(ConfigError, match="another training run"):
        train(_cfg(seed=5, imitation={"enabled": False}, rl=rl), out, progress=False)


def test_rl_starts_from_a_stage_with_another_network(tmp_path):
    """PPO fine-tuning from a policy file whose network differs from the config's (a variant)."""
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.strategy import load_model
    from metaal.agents.train import _save, make_model, train

    src_cfg = _cfg(network={"context": "attention"})
    src = make_model(src_cfg)
    init = _save(src, tmp_path / "init.zip", src_cfg)
    rl = {"enabled": True, "init": str(init), "total_timesteps": 32, "n_envs": 1,
          "env_kwargs": {"max_pool": 120, "reward_cap": 60}, "hyper": {"n_steps": 32, "batch_size": 32, "n_epochs": 1}}
    cfg = _cfg(imitation={"enabled": False}, rl=rl, budget_range=[4, 8], eval={"every_steps": 32})
    assert cfg["network"]["context"] == "deepsets"
    train(cfg, tmp_path / "run", progress=False)
    model, meta = load_model(tmp_path / "run" / "policy.zip")
    assert meta["config"]["network"]["context"] == "attention"
    assert hasattr(model.policy.features_extractor, "attn")
