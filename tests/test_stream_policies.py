"""Stream-v0 cost features, the Zliobaite baselines (checked against scikit-activeml), the two-way
decision view and the learned stream policy (policy:stream-default)."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from metaal.envs import StreamEnv, ThresholdStreamPolicy
from metaal.envs.stream_policies import (
    PREDICT,
    REQUEST,
    SplitStreamPolicy,
    StreamDecisionEnv,
    VariableUncertaintyStreamPolicy,
)
from metaal.errors import ConfigError, PolicyError


def _episode(env: StreamEnv, policy, seed: int, **options) -> tuple[list[int], dict]:
    obs, info = env.reset(seed=seed, options=options or None)
    actions, done = [], False
    while not done:
        a = policy(obs, env)
        actions.append(a)
        obs, _, done, _, info = env.step(a)
    return actions, info


def test_cost_features_are_optional_and_follow_the_episode_costs() -> None:
    env = StreamEnv(datasets=["sklearn:iris"], max_classes=5, episode_length=10)
    obs, _ = env.reset(seed=0)
    assert obs["features"].shape == (8,) and env.obs_version == "stream-1"
    env = StreamEnv(datasets=["sklearn:iris"], max_classes=5, episode_length=10, cost_features=True,
                    request_cost_range=(0.01, 0.3), wrong_penalty_range=(1.0, 20.0))
    pens = set()
    for s in range(5):
        obs, info = env.reset(seed=s)
        assert obs["features"].shape == (12,) and env.observation_space.contains(obs)
        assert 0.01 <= info["request_cost"] <= 0.3 and 1.0 <= info["wrong_penalty"] <= 20.0
        pens.add(round(info["wrong_penalty"], 6))
        bt = (info["wrong_penalty"] - info["request_cost"]) / (1 + info["wrong_penalty"])
        assert obs["features"][11] == pytest.approx(bt, abs=1e-6)
    assert len(pens) == 5
    obs, info = env.reset(seed=0, options={"wrong_penalty": 5.0, "request_cost": 0.05})
    assert info["wrong_penalty"] == 5.0 and obs["features"][11] == pytest.approx(4.95 / 6, abs=1e-6)
    with pytest.raises(ConfigError, match="request_cost_range"):
        StreamEnv(request_cost_range=(0.5, 0.1))


@pytest.mark.parametrize("budget", [0.1, 0.3, 1.0])
def test_variable_uncertainty_and_split_decide_as_scikit_activeml(budget: float) -> None:
    """On real streams, at every arriving item, our decision equals scikit-activeml's
    VariableUncertainty / Split budget manager fed the same top probability (their query strategy
    passes ``1 - max proba`` of the classifier as the utility)."""
    bm = pytest.importorskip("skactiveml.stream.budgetmanager")
    env = StreamEnv(datasets=["sklearn:digits"], max_classes=10, episode_length=120)
    for ours, theirs in (
        (VariableUncertaintyStreamPolicy(budget), bm.VariableUncertaintyBudgetManager(budget=budget)),
        (SplitStreamPolicy(budget, v=0.1, seed=3), bm.SplitBudgetManager(budget=budget, v=0.1, random_state=3)),
    ):
        obs, _ = env.reset(seed=7)
        done, n_req = False, 0
        while not done:
            conf = float(obs["proba"][: env.n_classes].max())
            a = ours(obs, env)
            idx = theirs.query_by_utility(np.array([1.0 - conf]))
            theirs.update(np.zeros((1, 1)), idx)
            assert (a == env.request_action) == (len(idx) == 1), (ours.name, env.t)
            n_req += a == env.request_action
            obs, _, done, _, _ = env.step(a)
        assert 0 < n_req <= 120
        if budget < 1.0:
            assert n_req < 120


def test_decision_env_masks_prediction_before_the_first_label() -> None:
    env = StreamDecisionEnv(StreamEnv(datasets=["sklearn:iris"], max_classes=5, episode_length=20,
                                      cost_features=True, wrong_penalty=4.0), normalize_reward=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (12,) and env.action_space.n == 2
    assert env.action_masks().tolist() == [False, True]
    _, r, *_ = env.step(REQUEST)
    assert r == pytest.approx(-0.05 / 5.0)
    assert env.action_masks().tolist() == [True, True]
    _, r, _, _, info = env.step(PREDICT)
    assert r in (pytest.approx(1 / 5), pytest.approx(-4 / 5)) and not info["requested"]


def test_shipped_stream_policy_acts_and_reloads_identically(tmp_path) -> None:
    pytest.importorskip("sb3_contrib")
    from metaal.agents.stream_policy import StreamPolicy

    pol = StreamPolicy("stream-default", strict=True)
    assert pol.name == "policy:stream-default" and pol.meta["obs_version"] == "stream-2"
    for f in ("stream-default.zip", "stream-default.json"):
        shutil.copyfile(pol.zip_path.with_name(f), tmp_path / f)
    again = StreamPolicy(str(tmp_path / "stream-default.zip"), strict=True)
    env = StreamEnv(datasets=["sklearn:wine"], max_classes=5, episode_length=40, cost_features=True)
    for pen in (1.0, 20.0):
        a1, info = _episode(env, pol, 3, wrong_penalty=pen)
        a2, _ = _episode(env, again, 3, wrong_penalty=pen)
        assert a1 == a2 and a1[0] == env.request_action
    with pytest.raises(ConfigError, match="cost_features"):
        _episode(StreamEnv(datasets=["sklearn:wine"], max_classes=5, episode_length=5), pol, 0)


def test_corrupt_stream_policy_falls_back_loudly_to_the_threshold(tmp_path) -> None:
    from metaal.agents.stream_policy import StreamPolicy

    bad = tmp_path / "p.zip"
    bad.write_bytes(b"not a zip")
    with pytest.warns(RuntimeWarning, match="falling back to the expected-reward threshold"):
        pol = StreamPolicy(str(bad))
    assert pol.is_fallback and pol.name.endswith("(fallback=threshold)")
    env = StreamEnv(datasets=["sklearn:wine"], max_classes=5, episode_length=30, cost_features=True)
    assert _episode(env, pol, 1)[0] == _episode(env, ThresholdStreamPolicy(), 1)[0]
    with pytest.raises(PolicyError, match="not a zip"):
        StreamPolicy(str(bad), strict=True)
    # the pool policy (policy:default) is not a stream policy: other observation version
    from metaal.agents.policy_file import resolve_policy_path

    with pytest.raises(PolicyError, match="observation version"):
        StreamPolicy(str(resolve_policy_path("default")), strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert StreamPolicy(str(resolve_policy_path("default"))).is_fallback


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_stream.py"
    spec = importlib.util.spec_from_file_location("bench_stream", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_stream_refuses_an_unknown_stream(tmp_path, capsys) -> None:
    assert _bench().main(["--data", "no_such_stream_xyz", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no_such_stream_xyz" in err and "\n" not in err


@pytest.mark.slow
def test_bench_stream_sweep_writes_every_method_and_the_verdict(tmp_path, capsys) -> None:
    import json

    rc = _bench().main(["--data", "sklearn:iris", "--out", str(tmp_path), "--episodes", "2", "--tune-episodes", "1",
                        "--length", "15", "--warm-start"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("learned policy beats the tuned threshold at ") and last.endswith(" of 5 penalties")
    rows = json.loads((tmp_path / "stream_sweep.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"learned", "tuned", "bayes", "vu", "split"} and len(rows) == 25
    assert all(0.0 <= r["request_rate"] <= 1.0 for r in rows)
    assert (tmp_path / "stream_sweep.png").stat().st_size > 1000 and (tmp_path / "stream_sweep.csv").is_file()


@pytest.mark.slow
def test_stream_training_is_reproducible_and_its_file_loads(tmp_path) -> None:
    """Two trainings with one seed give the same weights bit for bit; the file records the
    observation version, kind, datasets and config, and StreamPolicy loads it and acts."""
    pytest.importorskip("sb3_contrib")
    import torch as th

    from metaal.agents.stream_policy import StreamPolicy, train_stream_policy

    cfg = {"seed": 3, "datasets": ["sklearn:wine", "sklearn:iris"], "held_out": ["sklearn:digits"],
           "episode_lengths": [20, 30], "request_cost_range": [0.01, 0.3], "wrong_penalty_range": [0.5, 30.0],
           "total_timesteps": 128, "net_arch": [16], "warm_start": True,
           "hyper": {"n_steps": 64, "batch_size": 32, "n_epochs": 2}}
    paths = [train_stream_policy(dict(cfg), tmp_path / f"run{i}") for i in range(2)]
    weights = [StreamPolicy(str(p), strict=True).model.policy.state_dict() for p in paths]
    assert weights[0].keys() == weights[1].keys()
    assert all(th.equal(weights[0][k], weights[1][k]) for k in weights[0])
    pol = StreamPolicy(str(paths[0]), strict=True)
    assert pol.meta["obs_version"] == "stream-2" and pol.meta["kind"] == "stream"
    assert pol.meta["held_out"] == ["sklearn:digits"] and pol.meta["config"]["seed"] == 3
    env = StreamEnv(datasets=["sklearn:digits"], max_classes=10, episode_length=30, cost_features=True)
    actions, info = _episode(env, pol, 0)
    assert actions[0] == env.request_action and info["t"] == 30
    other = train_stream_policy({**cfg, "seed": 4}, tmp_path / "run_seed4")
    w4 = StreamPolicy(str(other), strict=True).model.policy.state_dict()
    assert not all(th.equal(weights[0][k], w4[k]) for k in w4)
