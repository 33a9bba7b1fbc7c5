"""Gymnasium environments (metaal.envs): API conformance, reproducibility, rewards, and the
equivalence of heuristic policies inside the environments with metaal.loop.simulate."""
from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest

from metaal import strategies
from metaal.data import Dataset, make_split
from metaal.envs import (
    ENV_IDS,
    HeuristicPolicy,
    PoolEnv,
    ThresholdStreamPolicy,
    evaluate_policy,
)
from metaal.errors import ConfigError, DataError
from metaal.loop import simulate
from metaal.state import Task
from metaal.synthetic import blobs


@pytest.fixture
def wine_task(wine: Dataset) -> Task:
    return Task.from_split(wine, make_split(wine, 0))


def _make(env_id: str, **kw):
    return gymnasium.make(env_id, **kw).unwrapped


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_envs_pass_gymnasium_and_sb3_checkers(env_id: str, monkeypatch) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    monkeypatch.delenv("METAAL_DATA", raising=False)  # defaults need no shared data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SB3: "unconventional shape" of (K, F)
        check_env(_make(env_id))
        sb3_check_env(_make(env_id))
    assert env_id in gymnasium.registry


def _rollout(env_id: str, seed: int, n: int = 5):
    env = _make(env_id, budget=8) if env_id != "metaal/Stream-v0" else _make(env_id, episode_length=20)
    act_rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards = []
    for _ in range(n):
        if isinstance(env.action_space, gymnasium.spaces.Discrete):
            a = int(act_rng.integers(env.action_space.n))
        else:
            a = act_rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        out.append(obs)
        rewards.append(r)
        if term:
            break
    return out, rewards


def _flat(obs) -> np.ndarray:
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k], dtype=np.float64).ravel() for k in sorted(obs)])
    return np.asarray(obs, dtype=np.float64).ravel()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_observations_and_rewards(env_id: str) -> None:
    o1, r1 = _rollout(env_id, seed=7)
    o2, r2 = _rollout(env_id, seed=7)
    o3, _ = _rollout(env_id, seed=8)
    assert len(o1) == len(o2)
    for a, b in zip(o1, o2):
        assert np.array_equal(_flat(a), _flat(b))
    assert r1 == r2
    assert not all(np.array_equal(_flat(a), _flat(b)) for a, b in zip(o1, o3))


@pytest.mark.parametrize("reward_frac", [0.0, 0.25])
def test_margin_policy_reproduces_simulate(wine_task: Task, reward_frac: float) -> None:
    env = gymnasium.make("metaal/Pool-v0", reward_frac=reward_frac)
    curve = evaluate_policy(env, HeuristicPolicy("margin"), 1, seed=0, options={"task": wine_task, "budget": 25})[0]
    task = env.unwrapped.task  # the pinned task, minus the reward split when there is one
    assert (task is wine_task) == (reward_frac == 0.0)
    ref = simulate(task, "margin", 25)
    assert np.array_equal(curve.n_labeled, ref.n_labeled)
    assert np.array_equal(curve.accuracy, ref.accuracy)
    assert curve.queried == ref.queried
    assert np.all(curve.rewards == 0.0)  # margin's own pick earns exactly 0 under margin_gain
    assert curve.accuracy[-1] > curve.accuracy[0]


def test_batch_env_margin_reproduces_batched_simulate(wine_task: Task) -> None:
    env = gymnasium.make("metaal/PoolBatch-v0", batch_size=4, reward_frac=0.0)
    curve = evaluate_policy(env, HeuristicPolicy("margin"), 1, seed=0, options={"task": wine_task, "budget": 18})[0]
    ref = simulate(wine_task, "margin", 18, batch_size=4)
    assert curve.n_labeled.tolist() == [10, 14, 18, 22, 26, 28]  # the last batch is smaller
    assert np.array_equal(curve.accuracy, ref.accuracy)
    assert sorted(curve.queried) == sorted(ref.queried)


def test_heuristic_env_margin_arm_reproduces_simulate(wine_task: Task) -> None:
    env = gymnasium.make("metaal/Heuristic-v0", reward_frac=0.0)
    curve = evaluate_policy(env, HeuristicPolicy("margin"), 1, seed=0, options={"task": wine_task, "budget": 12})[0]
    assert np.array_equal(curve.accuracy, simulate(wine_task, "margin", 12).accuracy)


def test_batch_env_labels_b_distinct_top_scored_items(wine_task: Task) -> None:
    env = _make("metaal/PoolBatch-v0", batch_size=3)
    obs, _ = env.reset(seed=0, options={"task": wine_task, "budget": 9})
    scores = np.linspace(-1, 1, env.k).astype(np.float32)  # prefers the last candidates
    ob = env.last_observation
    expected = ob.indices[np.argsort(-scores, kind="stable")[:3]]
    _, _, _, _, info = env.step(scores)
    assert sorted(info["pool_index"].tolist()) == sorted(expected.tolist())
    assert env.state.n_queried == 3
    _, _, _, _, info = env.step(np.full(env.k, np.nan, dtype=np.float32))
    assert info["invalid_action"] and sorted(info["pool_index"]) == sorted(info["margin_index"])


def test_invalid_and_padding_actions_fall_back_to_margin() -> None:
    tiny = blobs(n=40, d=3, sep=2.0, seed=0)  # pool 28 -> 21 after the reward split -> 11 unlabeled
    env = _make("metaal/Pool-v0", datasets=[tiny], budget=5)
    obs, _ = env.reset(seed=0)
    assert obs["action_mask"].sum() == 11 and not env.action_masks()[-1]
    for bad in (31, 99, -1):
        _, r, _, _, info = env.step(bad)
        assert info["invalid_action"] is True
        assert info["pool_index"] == info["margin_index"]
        assert r == 0.0
    _, _, _, _, info = env.step(1)
    assert info["invalid_action"] is False and info["pool_index"] != info["margin_index"]


def test_reward_modes(wine_task: Task) -> None:
    # acc_gain: the reward is the change of reward-split accuracy
    env = _make("metaal/Pool-v0", reward="acc_gain")
    _, info0 = env.reset(seed=1)
    prev = info0["reward_accuracy"]
    for a in (3, 5, 7):
        _, r, _, _, info = env.step(a)
        assert r == pytest.approx(info["reward_accuracy"] - prev)
        prev = info["reward_accuracy"]
    # margin_gain: normalised by the headroom, which is floored at 0.05
    env = _make("metaal/Pool-v0")
    env.reset(seed=1)
    assert env.headroom >= 0.05 and 0.0 < env.full_accuracy <= 1.0
    _, r, _, _, info = env.step(0)
    assert r == 0.0
    # label_cost: -1 per label, the episode ends when the target is reached
    env = _make("metaal/Pool-v0", reward="label_cost", target_accuracy=0.01, budget=30)
    env.reset(seed=1)
    _, r, term, _, _ = env.step(4)
    assert r == -1.0 and term
    env = _make("metaal/Pool-v0", reward="label_cost", target_accuracy=1.0, budget=3)
    env.reset(seed=1)
    rewards = [env.step(2)[1] for _ in range(3)]
    assert rewards == [-1.0, -1.0, -1.0]


def test_reward_split_comes_out_of_the_pool_not_the_test_split(wine: Dataset) -> None:
    env = _make("metaal/Pool-v0", datasets=[wine], reward_frac=0.25, max_pool=100)
    env.reset(seed=3)
    n_test = int(np.ceil(wine.n * 0.3))  # train_test_split's rounding
    assert len(env.task.y_test) == n_test
    assert env.task.n_pool + env.reward_split.n == min(wine.n - n_test, 100)
    assert env.reward_split.n == 25
    # the reward rows are pool rows: none of them is a test row (features standardized the same way)
    Xr, Xt = env.reward_split.X, env.task.X_test
    d = ((Xr[:, None, :] - Xt[None, :, :]) ** 2).sum(-1)
    assert d.min() > 1e-9


def test_every_heuristic_is_usable_as_a_policy(wine: Dataset) -> None:
    env = gymnasium.make("metaal/Pool-v0", datasets=[wine], budget=3)
    for name in strategies.names():
        if strategies.reads_truth(strategies.get(name)):  # the oracle: simulation only
            with pytest.raises(ConfigError, match="reads the test labels"):
                HeuristicPolicy(name)
            continue
        c = evaluate_policy(env, HeuristicPolicy(name), 1, seed=0)[0]
        assert c.n_labeled.tolist() == [10, 11, 12, 13], name
        assert c.invalid_actions == 0, name
        assert len(set(c.queried)) == 3, name


def test_evaluate_policy_accepts_an_sb3_maskable_model(wine: Dataset) -> None:
    from sb3_contrib import MaskablePPO

    env = gymnasium.make("metaal/Pool-v0", datasets=[wine], budget=4)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
    curves = evaluate_policy(env, model, 2, seed=0)
    assert len(curves) == 2 and all(len(c.accuracy) == 5 for c in curves)
    assert all(c.invalid_actions == 0 for c in curves)


def test_dataset_collections_and_options(wine: Dataset) -> None:
    calls = []

    def gen(rng: np.random.Generator) -> Dataset:
        calls.append(1)
        return blobs(n=120, d=4, seed=int(rng.integers(1000)))

    env = _make("metaal/Pool-v0", datasets=[gen, wine, "synth:xor?n=200&seed=1"], budget=(3, 6), render_mode="ansi")
    seen = set()
    for s in range(16):
        _, info = env.reset(seed=s)
        seen.add(info["dataset"].split("_")[0])
        assert 3 <= info["budget"] <= 6
    assert len(seen) == 3 and calls
    assert "labeled" in env.render()
    _, info = env.reset(seed=0, options={"dataset": "sklearn:iris", "budget": 2})
    assert info["dataset"] == "iris" and info["budget"] == 2
    with pytest.raises(ConfigError, match="empty"):
        PoolEnv(datasets=[])
    with pytest.raises(ConfigError, match="render_mode"):
        PoolEnv(render_mode="human")
    with pytest.raises(ConfigError, match="reward mode"):
        PoolEnv(reward="accuracy")
    with pytest.raises(ConfigError, match="unknown reset option"):
        env.reset(seed=0, options={"budgett": 3})
    with pytest.raises(DataError, match="not found"):
        _make("metaal/Pool-v0", datasets=["no_such_dataset_xyz"]).reset(seed=0)


def test_stream_env_rewards_and_learning() -> None:
    env = _make("metaal/Stream-v0", datasets=["sklearn:iris"], max_classes=5, episode_length=30,
                request_cost=0.1, wrong_penalty=3.0)
    obs, info = env.reset(seed=0)
    assert obs["action_mask"].tolist() == [1, 1, 1, 0, 0, 1]  # 3 real classes of 5, then "request"
    _, r, _, _, info = env.step(env.request_action)
    assert r == pytest.approx(-0.1) and info["n_requests"] == 1 and env.state.n_labeled == 1
    _, r, _, _, info = env.step(4)  # a masked class: counted as a wrong prediction
    assert info["invalid_action"] and r == -3.0 and info["n_predicted"] == 1
    _, r, _, _, info = env.step(0)
    assert r in (1.0, -3.0) and (r == 1.0) == info["correct"] == (info["label"] == 0)
    assert env.state.n_labeled == 1  # predicted items are never learned from


def test_pool_policies_refuse_the_stream_env() -> None:
    env = gymnasium.make("metaal/Stream-v0")
    with pytest.raises(ConfigError, match="Stream-v0"):
        evaluate_policy(env, HeuristicPolicy("margin"))


def test_stream_penalty_trades_accuracy_for_requests() -> None:
    """Woodward & Finn's trade-off: a higher wrong-prediction penalty makes the expected-reward
    threshold policy request more labels and predict more accurately."""
    rates, accs = [], []
    for pen in (1.0, 5.0):
        env = _make("metaal/Stream-v0", datasets=["sklearn:digits"], episode_length=60, wrong_penalty=pen)
        n_req = n_pred = n_ok = 0
        for s in range(3):
            obs, info = env.reset(seed=s)
            done = False
            pol = ThresholdStreamPolicy()
            while not done:
                obs, _, done, _, info = env.step(pol(obs, env))
            n_req, n_pred, n_ok = n_req + info["n_requests"], n_pred + info["n_predicted"], n_ok + info["n_correct"]
        rates.append(n_req / 180)
        accs.append(n_ok / max(n_pred, 1))
    assert rates[1] > rates[0] + 0.2
    assert accs[1] > accs[0]


@pytest.mark.slow
def test_subproc_vec_env_runs_two_envs() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env("metaal.envs:metaal/Pool-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        env_kwargs={"budget": 3})
    try:
        obs = venv.reset()
        assert obs["candidates"].shape == (2, 32, 12)
        dones_seen = 0
        for _ in range(4):
            masks = np.stack(venv.env_method("action_masks"))
            actions = np.array([np.flatnonzero(m)[-1] for m in masks])
            obs, rewards, dones, infos = venv.step(actions)
            assert rewards.shape == (2,) and all("test_accuracy" in i for i in infos)
            dones_seen += int(dones.sum())
        assert dones_seen == 2  # both episodes ended after 3 labels and were auto-reset
    finally:
        venv.close()
