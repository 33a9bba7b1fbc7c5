"""BatchedPoolVecEnv: the SB3 VecEnv API, Pool-v0's observations and rewards on a batched learner,
reproducibility, and MaskablePPO training on it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from metaal.agents.vec_env import BatchedPoolVecEnv  # noqa: E402
from metaal.envs.pool import pool_spaces  # noqa: E402
from metaal.envs.rewards import headroom, step_reward  # noqa: E402
from metaal.errors import ConfigError  # noqa: E402
from metaal.geometry import PoolGeometry  # noqa: E402
from metaal.learners import Learner  # noqa: E402
from metaal.state import ALState  # noqa: E402
from metaal.torch_learners import TorchLogRegEstimator  # noqa: E402


def TorchLogReg(n_classes: int, device: str = "cpu") -> Learner:  # noqa: N802
    """The ``torch_logreg`` learner on ``device``."""
    return Learner(TorchLogRegEstimator(device=device), n_classes, "torch_logreg")


SMALL = ["sklearn:wine", "sklearn:breast_cancer"]


def _assert_matches_observer(env, i: int, rng_before) -> None:
    """Episode ``i``'s batched observation equals the single-episode Observer's on an untouched
    copy of its state (no cached geometry) with the generator as it was before the step."""
    st = copy.deepcopy(env.states[i])
    st.cache.clear()
    st.share_geometry(PoolGeometry(st.X_pool))  # recomputed, not the environment's
    ref = env.observer.observe(st, rng_before)
    np.testing.assert_array_equal(ref.indices, env._obs[i].indices)
    np.testing.assert_allclose(ref.candidates, env._obs[i].candidates, atol=1e-6)
    np.testing.assert_allclose(ref.global_, env._obs[i].global_, atol=1e-6)


def _random_actions(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.argmax(rng.random(masks.shape) * masks, axis=1)


def _env(**kw):
    args = dict(num_envs=4, datasets=SMALL, budget=4, seed=3, device="cpu")
    args.update(kw)
    return BatchedPoolVecEnv(**args)


def test_api_shapes_masks_and_auto_reset():
    env = _env()
    obs = env.reset()
    space, act = pool_spaces(32)
    assert env.observation_space == space and env.action_space == act
    assert obs["candidates"].shape == (4, 32, 12) and obs["global"].shape == (4, 10)
    assert obs["action_mask"].shape == (4, 32)
    for i in range(4):
        assert env.observation_space.contains({k: v[i] for k, v in obs.items()})
    masks = env.action_masks()
    assert masks.shape == (4, 32) and masks.dtype == bool
    np.testing.assert_array_equal(masks, obs["action_mask"].astype(bool))
    # sb3-contrib finds the masks through env_method / has_attr
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    assert is_masking_supported(env)
    np.testing.assert_array_equal(get_action_masks(env), masks)
    rng = np.random.default_rng(0)
    first = env.dataset.name
    for t in range(4):
        obs, rew, dones, infos = env.step(_random_actions(env.action_masks(), rng))
        assert rew.shape == (4,) and dones.shape == (4,) and len(infos) == 4
        assert np.isfinite(rew).all()
        if t < 3:
            assert not dones.any()
            assert [inf["n_labeled"] for inf in infos] == [11 + t] * 4
    # equal budgets: all episodes end together, auto-reset into a new round
    assert dones.all()
    for inf in infos:
        term = inf["terminal_observation"]
        assert env.observation_space.contains(term)
        assert inf["n_labeled"] == 14 and inf["dataset"] == first
    assert all(s.n_labeled == 10 for s in env.states)
    assert obs["global"][:, 0].max() == 0.0  # budget_used of the fresh episodes
    # invalid (masked) actions fall back to margin's pick, as in Pool-v0
    obs, _, _, infos = env.step(np.full(4, 31 + 100))
    assert all(inf["invalid_action"] and inf["pool_index"] == inf["margin_index"] for inf in infos)
    with pytest.raises(ConfigError):
        BatchedPoolVecEnv(num_envs=0)
    with pytest.raises(ConfigError):
        BatchedPoolVecEnv(num_envs=2, reward="nope")


def test_reproducible_with_seed_and_seed_method():
    def run(env):
        env.seed(11)
        out = [env.reset()]
        rng = np.random.default_rng(1)
        rews = []
        for _ in range(6):
            o, r, d, _ = env.step(_random_actions(env.action_masks(), rng))
            out.append(o)
            rews.append(r)
        return out, np.stack(rews)

    o1, r1 = run(_env(seed=None))
    o2, r2 = run(_env(seed=5))
    np.testing.assert_array_equal(r1, r2)
    for a, b in zip(o1, o2):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # different episodes of a round differ (own split and generator)
    assert not np.array_equal(o1[0]["candidates"][0], o1[0]["candidates"][1])


def test_batched_observer_matches_observer_and_rewards_match_pool_rewards():
    env = _env(num_envs=3, budget=20, datasets=["sklearn:wine"])
    env.reset()
    rng = np.random.default_rng(2)
    n_checked = 0
    for _ in range(5):
        prev_acc = env.reward_accuracy.copy()
        obs_before = list(env._obs)
        rngs_before = copy.deepcopy(env.rngs)  # a step draws from them only for its observation
        a = _random_actions(env.action_masks(), rng)
        a[0] = 0  # margin's own pick: reward exactly 0
        _, rew, _, infos = env.step(a)
        assert rew[0] == 0.0
        for i in range(env.num_envs):
            _assert_matches_observer(env, i, rngs_before[i])
            # the reward of metaal.envs.rewards with the single-problem torch learner
            task, split = env.tasks[i], env.splits[i]
            lrn = TorchLogReg(task.n_classes, device="cpu")
            s2 = ALState(task.X_pool, task.n_classes, lrn, budget=20)
            s2.add_labels(env.states[i].labeled_idx, env.states[i].y_labeled, refit=True, record=False)
            pick, marg = infos[i]["pool_index"], infos[i]["margin_index"]
            assert pick == obs_before[i].indices[a[i]]
            sr = step_reward(
                "margin_gain",
                s2,
                split,
                np.array([pick]),
                np.array([marg]),
                task.y_pool[[marg]],
                prev_acc[i],
                env.headroom[i],
            )
            assert rew[i] == pytest.approx(sr.reward, abs=1e-6)
            assert infos[i]["reward_accuracy"] == pytest.approx(sr.accuracy)
            n_checked += 1
    assert n_checked == 15
    # headroom as in Pool-v0
    i = 1
    task, split = env.tasks[i], env.splits[i]
    s0 = ALState(task.X_pool, task.n_classes, TorchLogReg(task.n_classes, device="cpu"))
    s0.add_labels(task.initial, task.y_pool[task.initial])
    h, _ = headroom(task.X_pool, task.y_pool, s0.learner, split, split.accuracy(s0.learner))
    assert env.headroom[i] == pytest.approx(h)


def test_label_cost_restarts_early_and_truncates_at_round_end():
    env = _env(num_envs=3, budget=6, reward="label_cost", target_accuracy=1.0, datasets=["sklearn:breast_cancer"])
    env.reset()
    env.target_accuracy[0] = 0.0  # episode 0 reaches its target at the first step
    rng = np.random.default_rng(0)
    done_log, trunc_log = [], []
    for _ in range(6):
        _, rew, dones, infos = env.step(_random_actions(env.action_masks(), rng))
        assert (rew == -1).all()
        for i in np.flatnonzero(dones):
            assert "terminal_observation" in infos[i]
        done_log.append(dones.copy())
        trunc_log.append([bool(inf.get("TimeLimit.truncated", False)) for inf in infos])
    done_log, trunc_log = np.array(done_log), np.array(trunc_log)
    # episode 0 ended early and restarted on the same dataset, with its own fresh state ...
    np.testing.assert_array_equal(done_log[0], [True, False, False])
    assert not trunc_log[0].any()
    # ... and its second episode (target 1.0) is truncated when the round ends at the budget
    np.testing.assert_array_equal(done_log[-1], [True, True, True])
    np.testing.assert_array_equal(trunc_log[-1], [True, False, False])
    assert not done_log[1:-1].any()
    assert env.round_step == 0 and all(s.n_labeled == 10 for s in env.states)  # a new round began


@pytest.mark.slow
def test_maskable_ppo_learns_on_it():
    sb3c = pytest.importorskip("sb3_contrib")
    env = _env(num_envs=4, budget=5)
    model = sb3c.MaskablePPO("MultiInputPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64
    obs = env.reset()
    act, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert act.shape == (4,) and env.action_masks()[np.arange(4), act].all()


def _tie_dataset():
    """600 rows, 4 classes, every row present twice (exact ties in the k-center and density
    orderings) -- the batched candidate selection must break ties as Observer does."""
    from metaal.data import Dataset

    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0).astype(np.int64)
    return Dataset(
        X=np.concatenate([X, X]), y=np.concatenate([y, y]), classes=np.array(["a", "b", "c", "d"]), name="ties"
    )


def test_batched_selection_matches_observer_on_ties_and_four_classes():
    env = _env(num_envs=5, budget=12, datasets=[_tie_dataset()], max_pool=None, seed=4)
    env.reset()
    rng = np.random.default_rng(5)
    for _ in range(4):
        rngs_before = copy.deepcopy(env.rngs)
        env.step(_random_actions(env.action_masks(), rng))
        for i in range(env.num_envs):
            _assert_matches_observer(env, i, rngs_before[i])
            assert np.array_equal(env.states[i].prev_pred, np.argmax(env.states[i].prev_proba, axis=1))


def test_pool_geometry_rows_on_demand_equal_the_whole_pool(monkeypatch):
    import metaal.geometry as geo

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 6))  # > 1,000 rows: sampled references
    full = geo.PoolGeometry(X).knn_density()
    monkeypatch.setattr(geo, "EXACT_DENSITY_MAX", 1000)  # the large-pool path: rows on demand
    lazy = geo.PoolGeometry(X)
    assert not lazy.exact
    rows = rng.choice(1500, size=300, replace=False)
    np.testing.assert_allclose(lazy.knn_density(rows), full[rows], rtol=0, atol=1e-12)
    assert np.isnan(lazy.known_density()).sum() == 1200  # nothing else computed
    assert lazy.scale == geo.PoolGeometry(X).scale == ALState(X, 2, None).distance_scale()  # type: ignore[arg-type]


@pytest.mark.slow
def test_envs_package_imports_no_torch_and_no_agent_library():
    import subprocess
    import sys

    code = (
        "import sys, metaal.envs as e; assert 'torch' not in sys.modules, 'torch'; "
        "assert 'stable_baselines3' not in sys.modules, 'sb3'; assert e.BatchedPoolEnv.__name__ == 'BatchedPoolEnv'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- ShardedVecEnv: the batched env in several worker processes ------------------------------------


def _run(env, n_steps: int, seed: int = 0) -> list:
    """Observations, rewards and dones of ``n_steps`` random valid steps (episodes end inside)."""
    rng = np.random.default_rng(seed)
    out = [env.reset()]
    for _ in range(n_steps):
        obs, rew, done, infos = env.step(_random_actions(env.action_masks(), rng))
        out.append((obs, rew, done, [i.get("terminal_observation") is not None for i in infos]))
    return out


def test_sharded_env_equals_its_shards_stepped_alone():
    from sb3_contrib.common.maskable.utils import is_masking_supported

    from metaal.agents.vec_shard import ShardedVecEnv, make_batched_vec_env

    kw = dict(datasets=SMALL, budget=3, device="cpu")
    env = make_batched_vec_env(5, workers=2, seed=3, **kw)
    # shard w alone: a BatchedPoolVecEnv with its episodes and the seed seed + offset[w]
    alone = [BatchedPoolVecEnv(num_envs=3, seed=3, **kw), BatchedPoolVecEnv(num_envs=2, seed=6, **kw)]
    keys = ("candidates", "global", "action_mask")
    try:
        assert isinstance(env, ShardedVecEnv) and env.sizes == [3, 2] and env.num_envs == 5
        assert (env.observation_space, env.action_space) == pool_spaces(32)
        assert is_masking_supported(env)
        obs = env.reset()
        ref = [a.reset() for a in alone]
        for key in keys:
            np.testing.assert_array_equal(obs[key], np.concatenate([r[key] for r in ref]))
        rng, n_done = np.random.default_rng(0), 0
        for _ in range(7):  # budget 3: two auto-resets inside
            act = _random_actions(env.action_masks(), rng)
            obs, rew, done, infos = env.step(act)
            ref = [alone[0].step(act[:3]), alone[1].step(act[3:])]
            for key in keys:
                np.testing.assert_array_equal(obs[key], np.concatenate([r[0][key] for r in ref]))
            np.testing.assert_array_equal(rew, np.concatenate([r[1] for r in ref]))
            np.testing.assert_array_equal(done, np.concatenate([r[2] for r in ref]))
            for i, info in enumerate(infos[:3] + infos[3:]):
                want = (ref[0][3] + ref[1][3])[i]
                assert info["pool_index"] == want["pool_index"] and info["dataset"] == want["dataset"]
                assert ("terminal_observation" in info) == ("terminal_observation" in want)
            n_done += int(done.sum())
        assert n_done >= 10  # episodes ended and restarted in both shards
        assert [d.name for d in env.get_attr("dataset", [4, 0])] == [alone[1].dataset.name, alone[0].dataset.name]
        assert len(env.env_method("action_masks")) == 5
        with pytest.raises(AttributeError, match="no attribute"):
            env.get_attr("no_such_attribute")
        # the error left no unread answer in a shard's pipe: the next requests get their own answers
        assert [d.name for d in env.get_attr("dataset", [4, 0])] == [alone[1].dataset.name, alone[0].dataset.name]
        assert env.has_attr("dataset") and not env.has_attr("no_such_attribute")
        assert env.has_attr("dataset")
    finally:
        env.close()


@pytest.mark.slow
def test_sharded_env_seed_method_reproduces_and_maskable_ppo_trains():
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecMonitor

    from metaal.agents.vec_shard import make_batched_vec_env

    env = VecMonitor(make_batched_vec_env(4, workers=2, seed=None, datasets=SMALL, budget=4, device="cpu"))
    try:
        env.seed(11)
        first = _run(env, 3, seed=1)
        env.seed(11)
        again = _run(env, 3, seed=1)
        for key in ("candidates", "global"):
            np.testing.assert_array_equal(first[-1][0][key], again[-1][0][key])
        np.testing.assert_array_equal(first[-1][1], again[-1][1])
        model = MaskablePPO("MultiInputPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
        model.learn(32)
        assert model.num_timesteps >= 32 and len(model.ep_info_buffer) > 0  # VecMonitor saw episodes end
    finally:
        env.close()


def test_make_batched_vec_env_refuses_bad_worker_counts():
    from metaal.agents.vec_shard import make_batched_vec_env

    with pytest.raises(ConfigError, match="workers"):
        make_batched_vec_env(4, workers=0, datasets=SMALL)
    with pytest.raises(ConfigError, match="num_envs"):
        make_batched_vec_env(2, workers=3, datasets=SMALL)
    assert isinstance(make_batched_vec_env(2, workers=1, seed=0, datasets=SMALL, device="cpu"), BatchedPoolVecEnv)


def test_a_failing_shard_reports_its_error():
    from metaal.agents.vec_shard import ShardError, make_batched_vec_env

    with pytest.raises(ShardError, match="no_such_dataset"):
        env = make_batched_vec_env(2, workers=2, datasets=["no_such_dataset"], device="cpu")
        try:
            env.reset()
        finally:
            env.close()


@pytest.mark.slow
@pytest.mark.parametrize("vec_env,workers", [("dummy", 1), ("batched", 2)])
def test_training_run_reproduces_its_policy(tmp_path, vec_env, workers):
    """`metaal train` twice from one config gives the same network, bit for bit, whether PPO runs
    on scikit-learn Pool-v0 envs or on the batched env in two worker processes."""
    import torch

    from metaal.agents.policy_file import load_model
    from metaal.agents.train import load_config, train

    raw = {
        "k": 8,
        "network": {"embed_dim": 16, "head": 16},
        "budget_range": [4, 8],
        "jobs": 1,
        "datasets": {"train": ["sklearn:breast_cancer", "sklearn:wine"], "validation": ["sklearn:iris"]},
        "imitation": {"enabled": False},
        "eval": {"seeds": 1, "budget": 6, "jobs": 1, "every_steps": 64},
        "checkpoint_every": 64,
        "rl": {
            "enabled": True,
            "init": "scratch",
            "total_timesteps": 128,
            "n_envs": 4,
            "vec_env": vec_env,
            "workers": workers,
            "device": "cpu",
            "env_kwargs": {"max_pool": 120, "reward_cap": 60},
            "hyper": {"n_steps": 16, "batch_size": 32, "n_epochs": 1},
        },
    }
    params = []
    for run in ("a", "b"):
        summary = train(load_config(raw), tmp_path / run, progress=False)
        assert summary["stage"] in ("rl_64", "rl_128")
        for name in ("policy.zip", "stages/rl_128.zip"):
            model, _ = load_model(tmp_path / run / name)
            params.append(model.policy.state_dict())
    params = [params[1], params[3], params[0], params[2]]  # rl_128 of both runs, then the chosen policies
    # the policy files are byte-identical too (same sha256), not only the weights
    from metaal.agents.policy_file import read_metadata

    assert (
        read_metadata(tmp_path / "a" / "policy.zip")["sha256"] == read_metadata(tmp_path / "b" / "policy.zip")["sha256"]
    )
    assert (tmp_path / "a" / "stages" / "rl_128.zip").read_bytes() == (
        tmp_path / "b" / "stages" / "rl_128.zip"
    ).read_bytes()
    for a, b in (params[:2], params[2:]):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # and training moved the weights away from their (seeded) start (a stage holds the weights
    # evaluated when its last step was collected, before that rollout's update: SB3's callback
    # timing; so rl_128 has had one update)
    from metaal.agents.train import make_model

    start = make_model(load_config(raw)).policy.state_dict()
    assert any(not torch.equal(start[k], params[0][k]) for k in start)


def test_batched_vec_env_config_needs_logreg():
    from metaal.agents.train import load_config

    with pytest.raises(ConfigError, match="logreg"):
        load_config({"learner": "svm", "rl": {"enabled": True, "vec_env": "batched"}})
    with pytest.raises(ConfigError, match="vec_env"):
        load_config({"rl": {"enabled": True, "vec_env": "threads"}})
