"""metaal.agents: set-equivariant networks, policy files, LearnedStrategy, imitation, training."""
from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# ruff: noqa: E402  (imported after the torch check)
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
    obs_p = {
        "candidates": obs["candidates"][:, perm],
        "global": obs["global"],
        "action_mask": obs["action_mask"][:, perm],
    }
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
    from metaal.agents import LearnedStrategy, policy_logits, read_metadata

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
    # a stateful fallback (albl) keeps its state through the policy's get_state / set_state
    with pytest.warns(RuntimeWarning):
        s3 = get(f"policy:{bad}", fallback="albl")
    s3.reset(state, np.random.default_rng(0))
    s3.select(state, 1, np.random.default_rng(1))
    saved = s3.get_state()
    assert saved == s3.fallback.get_state() and saved["pending"]
    with pytest.warns(RuntimeWarning):
        s4 = get(f"policy:{bad}", fallback="albl")
    s4.reset(state, np.random.default_rng(0))
    s4.set_state(saved)
    assert s4.get_state() == saved
    assert LearnedStrategy(path).get_state() == {}  # a loaded policy keeps none
    with pytest.raises(ConfigError):
        LearnedStrategy(path).set_state({"weights": [1.0]})


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


@pytest.mark.slow
def test_policy_default_via_compare_cli(tmp_path):
    from metaal.agents.policy_file import resolve_policy_path
    from metaal.cli import main

    if not resolve_policy_path("default").is_file():
        pytest.skip("the shipped default policy is not built yet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the shipped policy must load, no fallback
        s = get("policy:default", strict=True)
        v1 = get("policy:v1", strict=True)  # the first shipped default, by its version name
    assert s.name == "policy:default" and v1.name == "policy:v1"
    assert resolve_policy_path("v1") == resolve_policy_path("default") and v1.meta["obs_version"] == "obs-v1"
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", "sklearn:wine", "--strategies", "random,margin,policy:default",
               "--budget", "6", "--seeds", "2", "--jobs", "1", "--no-progress", "--no-plot", "--out", str(out)])
    assert rc == 0
    text = (out / "summary.csv").read_text()
    assert "policy:default" in text and "margin" in text


@pytest.mark.slow
def test_evaluate_cli_tables_tests_and_budget_caps(tmp_path, capsys):
    """`metaal evaluate`: per-dataset Wilcoxon tests against margin, W/T/L that add up, budgets
    capped at the pool, heuristics run once (their smaller-budget curve is a prefix)."""
    from metaal.cli import main

    out = tmp_path / "ev"
    rc = main(["evaluate", "--policy", "default", "--data", "sklearn:wine", "sklearn:iris",
               "--strategies", "random,margin,entropy", "--budgets", "4", "95", "--seeds", "6",
               "--jobs", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["strategies"] == ["policy:default", "random", "margin", "entropy"]
    for b, r in res["budgets"].items():
        for s, a in r["aggregate"].items():
            if s != "margin":
                assert a["wins"] + a["ties"] + a["losses"] == 2
        for name, e in r["per_dataset"].items():
            assert e["budget"] == min(int(b), {"wine": 114, "iris": 95}[name])
            assert e["policy:default"]["vs_margin"] in ("win", "tie", "loss")
            assert 0.0 <= e["policy:default"]["p_margin"] <= 1.0
    # iris: 105 pool rows - 10 initial = 95 labels at most; wine: 124 - 10 = 114
    assert res["budgets"]["95"]["per_dataset"]["iris"]["budget"] == 95
    assert res["budgets"]["4"]["per_dataset"]["wine"]["budget"] == 4
    # the heuristics' budget-4 curves are the prefixes of their budget-95 ones
    c4 = (out / "logreg_b4" / "curves.csv").read_text().splitlines()
    c95 = (out / "logreg_b95" / "curves.csv").read_text().splitlines()
    assert len(c95) > len(c4)
    md = (out / "results.md").read_text()
    assert "beats random (mean AULC)" in md and "| margin |" in md
    assert "policy:default" in capsys.readouterr().out
    # two evaluations on disjoint datasets merge into the one over both (scripts/merge_evaluations.py)
    import copy

    from metaal.experiments.evaluate import merge_results

    parts = []
    for keep in (["wine"], ["iris"]):
        part = copy.deepcopy(res)
        part["datasets"] = keep
        for r in part["budgets"].values():
            r["per_dataset"] = {n: e for n, e in r["per_dataset"].items() if n in keep}
        parts.append(part)
    merged = merge_results(parts)
    for b, r in res["budgets"].items():
        assert merged["budgets"][b]["aggregate"] == r["aggregate"]
    with pytest.raises(ConfigError, match="evaluated twice"):
        merge_results([parts[0], parts[0]])


# ----------------------------------------------------------------------------------------------
# imitation and training


@pytest.mark.slow
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


def test_beam_expert_is_the_exhaustive_two_step_search_when_wide(wine):
    """Beam lookahead: depth 1 is the greedy expert; with a beam as wide as the candidate set the
    depth-2 score of a candidate is the best gain of a pair starting with it (per label), brute
    forced here; a narrow beam re-scores only its survivors and ranks them above the rest."""
    from metaal.agents.imitation import TaskSampler, collect, lookahead_gains

    task = _task()
    state = new_state(task, "svm", budget=10)  # cold refits: the brute force below is exact
    obs = Observer(k=6).observe(state, np.random.default_rng(0))
    idx, mask = obs.indices, obs.mask
    valid = np.flatnonzero(mask)
    assert len(valid) == 6
    g1 = lookahead_gains(state, task, idx, mask)
    assert np.array_equal(lookahead_gains(state, task, idx, mask, beam_width=4, beam_depth=1), g1)

    Xr, yr = task.X_test, task.y_test

    def score(lrn):
        p = lrn.predict_proba(Xr)
        return np.mean(np.argmax(p, 1) == yr) + 0.01 * np.mean(np.log(np.clip(p[np.arange(len(yr)), yr], 1e-12, 1)))

    s0 = score(state.learner)
    lab = state.labeled_idx

    def pair_gain(a, b):
        rows = np.array(sorted([a, b]))  # the expert fits a set in pool order
        lrn = state.learner.clone().fit(np.concatenate([state.X_pool[lab], state.X_pool[rows]]),
                                        np.concatenate([state.labels[lab], task.y_pool[rows]]))
        return score(lrn) - s0

    pairs = {(int(idx[a]), int(idx[b])): pair_gain(int(idx[a]), int(idx[b]))
             for a in valid for b in valid if a < b}
    best = {int(idx[a]): max(v for (x, y), v in pairs.items() if int(idx[a]) in (x, y)) for a in valid}
    g2 = lookahead_gains(state, task, idx, mask, beam_width=6, beam_depth=2)
    assert np.allclose(g2[valid], [best[int(idx[a])] / 2 for a in valid], atol=1e-12, rtol=0)
    assert not np.allclose(g2[valid], g1[valid])  # the second label changes the ranking's numbers
    # a beam of 2: its two survivors get their pair values, shifted above every other candidate,
    # whose one-step gains are unchanged; the expert's pick is the first label of the best pair found
    narrow = lookahead_gains(state, task, idx, mask, beam_width=2, beam_depth=2)
    top2 = valid[np.argsort(-g1[valid], kind="stable")[:2]]
    rest = np.setdiff1d(valid, top2)
    assert np.array_equal(narrow[rest], g1[rest])
    assert narrow[top2].min() > narrow[rest].max()
    firsts = {int(idx[a]): best[int(idx[a])] for a in top2}
    assert firsts[int(idx[np.argmax(narrow)])] == max(firsts.values())
    assert narrow[top2[0]] - narrow[top2[1]] == pytest.approx(
        (firsts[int(idx[top2[0]])] - firsts[int(idx[top2[1]])]) / 2, abs=1e-12
    )
    with pytest.raises(ValueError, match="beam_width"):
        lookahead_gains(state, task, idx, mask, beam_width=0, beam_depth=2)
    # end to end on a real dataset: episodes with the beam expert
    demos = collect(TaskSampler(["sklearn:breast_cancer"], initial=6), 8, k=6, budget_range=(6, 8),
                    record_prob=0.5, seed=0, beam_width=2, beam_depth=2)
    assert len(demos) > 0 and np.all(np.isfinite(demos.gains[demos.mask]))


def test_config_refuses_meta_test():
    from metaal.agents.train import load_config

    with pytest.raises(ConfigError, match="meta-test"):
        load_config({"datasets": {"train": ["wine", "adult_a1a"]}})
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config({"epochs": 3})
    with pytest.raises(ConfigError, match="imitation.beam_depth"):
        load_config({"imitation": {"beam_depth": 0}})


@pytest.mark.parametrize("name", ["default", "batched", "dqn", "gpu", "beam"])
def test_committed_training_configs_load(name):
    """Every committed training config passes load_config's checks (a typo'd key, an unknown
    algorithm or a meta-test dataset in it would be a ConfigError here, not after a long run)."""
    import yaml

    from metaal.agents.train import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(yaml.safe_load((root / f"{name}.yaml").read_text()))
    assert cfg["name"] == name
    assert cfg["datasets"]["train"] == "meta_train"


@pytest.mark.slow
def test_tiny_training_run_writes_policy_tb_and_resumes(tmp_path):
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.policy_file import read_metadata
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
    # a run folder written before imitation.beam_* existed still resumes (missing keys: defaults)
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["imitation"]["beam_width"], saved["imitation"]["beam_depth"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    # "interrupted" run resumed with a longer budget: continues from step 64, not from 0
    cfg2 = _cfg(imitation={"enabled": False}, rl={**rl, "total_timesteps": 96}, budget_range=[4, 8],
                eval={"every_steps": 64}, checkpoint_every=32)
    s2 = train(cfg2, out, resume=True, progress=False)
    assert (out / "checkpoints" / "rl_model_96_steps.zip").is_file()
    assert set(s2["stages"]) == {"rl_64", "rl_96"}
    with pytest.raises(ConfigError, match="already holds a finished training run"):
        train(_cfg(seed=5, imitation={"enabled": False}, rl=rl), out, progress=False)
    # --force starts over cleanly: the previous run's checkpoints and stages are gone
    s3 = train(_cfg(seed=5, imitation={"enabled": False}, rl=rl), out, progress=False, force=True)
    assert set(s3["stages"]) == {"rl_64"} and not (out / "checkpoints" / "rl_model_96_steps.zip").exists()
    assert not (out / "stages" / "rl_96.zip").exists()


@pytest.mark.parametrize("left", ["finished", "started"])
def test_train_refuses_a_used_folder_without_resume_or_force(tmp_path, capsys, left):
    """Re-running `metaal train` into a folder that holds a run is refused in one line (exit 2),
    before anything is trained or removed; --resume with --force is a usage error."""
    from metaal.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: tiny\n")
    (out / "demos_0.npz").write_bytes(b"x")
    if left == "finished":
        (out / "policy.zip").write_bytes(b"x")
    assert main(["train", "--config", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"metaal: error: {out} already holds a {left} training run; "
                   "use --resume to continue or --force to overwrite"]
    assert (out / "demos_0.npz").read_bytes() == b"x"  # untouched
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", "tiny", "--out", str(out), "--resume", "--force"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    # an empty or unrelated folder is fine (nothing of a run in it): the config error comes first here
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(other)]) == 2
    assert "not found" in capsys.readouterr().err


def test_stage_plan_names_every_stage():
    from metaal.agents.train import load_config, stage_plan

    assert stage_plan(load_config("default")) == [
        "validation baselines (random, margin)", "imitation (behaviour cloning, 3 variants)",
        "imitation (dagger round 1)", "rl (MaskablePPO, 1536 timesteps)"]


@pytest.mark.slow
def test_resume_after_imitation_loads_the_demonstrations(tmp_path, monkeypatch):
    """An interrupted run resumed after its demonstrations were collected trains on the saved
    demos_0.npz; the (expensive) collection is not run again. --force collects anew."""
    pytest.importorskip("metaal.envs.pool")
    import metaal.agents.train as tr

    cfg = _cfg(imitation={"n_states": 20, "epochs": 2}, budget_range=[4, 8])
    out = tmp_path / "run"
    tr.train(cfg, out, progress=False)
    demos = (out / "demos_0.npz").read_bytes()
    # "interrupted" just after the collection: only the config, baselines and demonstrations are left
    for p in tr.run_files(out):
        if p.name not in ("config.yaml", "val_baselines.json", "demos_0.npz"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def no_collect(*a, **kw):
        raise AssertionError("demonstrations collected again")

    monkeypatch.setattr(tr, "collect", no_collect)
    s = tr.train(cfg, out, resume=True, progress=False)
    assert s["stage"] == "bc" and (out / "policy.zip").is_file()
    assert (out / "demos_0.npz").read_bytes() == demos
    with pytest.raises(AssertionError, match="collected again"):
        tr.train(cfg, out, force=True, progress=False)


@pytest.mark.slow
def test_tiny_config_runs_end_to_end_and_names_its_stages(tmp_path, capsys):
    """configs/tiny.yaml, as a new user runs it: `metaal train --config tiny --out DIR`."""
    pytest.importorskip("metaal.envs.pool")
    from metaal.cli import main

    out = tmp_path / "tiny"
    assert main(["train", "--config", "tiny", "--out", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.startswith("stage ")] == [
        "stage 1/3: validation baselines (random, margin) ...", "stage 2/3: imitation (behaviour cloning) ...",
        "stage 3/3: rl (MaskablePPO, 128 timesteps) ..."]
    assert (out / "policy.zip").is_file() and any(ln.startswith("policy: ") for ln in lines)
    strat = get(f"policy:{out / 'policy.zip'}", strict=True)
    assert type(strat).__name__ == "LearnedStrategy"


@pytest.mark.slow
def test_rl_starts_from_a_stage_with_another_network(tmp_path):
    """PPO fine-tuning from a policy file whose network differs from the config's (a variant)."""
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.policy_file import load_model
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


# ----------------------------------------------------------------------------------------------
# DQN: per-candidate Q-values


_DQN_HYPER = {"learning_starts": 64, "buffer_size": 1000, "batch_size": 16, "train_freq": 4,
              "target_update_interval": 64, "exploration_fraction": 0.5}


def _small_pool_env(k: int = 16):
    """Pool-v0 on wine with a 30-row pool: about 12 unlabeled candidates for K = 16, so every
    observation has padding rows (invalid actions)."""
    import gymnasium as gym

    import metaal.envs  # noqa: F401

    return gym.make("metaal/Pool-v0", datasets=["sklearn:wine"], k=k, budget=(4, 8), initial=10, max_pool=30,
                    reward_cap=60)


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
    """A MaskedDQN + SetDQNPolicy trained for 256 steps on Pool-v0, saved as a policy file."""
    pytest.importorskip("metaal.envs.pool")
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metaal.agents.train import _save, make_model

    cfg = _cfg(k=16, rl={"algo": "DQN", "hyper": _DQN_HYPER})
    seen = {"invalid": 0, "steps": 0, "padded": 0}

    class Watch(BaseCallback):
        def _on_step(self) -> bool:
            seen["steps"] += 1
            seen["invalid"] += sum(bool(i["invalid_action"]) for i in self.locals["infos"])
            seen["padded"] += int((self.locals["new_obs"]["action_mask"] == 0).any())
            return True

    model = make_model(cfg, DummyVecEnv([_small_pool_env]))
    init = {k: v.clone() for k, v in model.policy.q_net.state_dict().items()}
    model.learn(256, callback=Watch())
    path = _save(model, tmp_path_factory.mktemp("dqn") / "q.zip", cfg)
    return path, model, cfg, init, seen


@pytest.mark.slow
def test_dqn_trains_on_pool_env_with_valid_actions_only(dqn_run):
    from metaal.agents.networks import MaskedDQN, SetDQNPolicy

    _, model, _, init, seen = dqn_run
    assert isinstance(model, MaskedDQN) and isinstance(model.policy, SetDQNPolicy)
    assert model.num_timesteps == 256 and model._n_updates > 0
    after = model.policy.q_net.state_dict()
    assert any(not torch.equal(init[k], after[k]) for k in init)  # the TD updates changed the weights
    # padding rows were offered all along, yet neither warm-up, exploration nor greedy picked one
    assert seen["steps"] == 256 and seen["padded"] > 200
    assert seen["invalid"] == 0


@pytest.mark.parametrize("context", ["deepsets", "attention"])
def test_dqn_q_values_equivariant_any_k_and_greedy_valid(context):
    import gymnasium as gym

    from metaal.agents.networks import SetDQNPolicy, obs_space

    torch.manual_seed(0)
    kw = {"features_extractor_kwargs": {"context": context, "embed_dim": 16}, "net_arch": {"head": 16}}
    pol8 = SetDQNPolicy(obs_space(8), gym.spaces.Discrete(8), lambda _: 1e-3, **kw)
    obs = {"candidates": torch.rand(4, 8, 12), "global": torch.rand(4, 10), "action_mask": torch.ones(4, 8)}
    obs["action_mask"][1, 5:] = 0
    obs["action_mask"][2, :6] = 0  # only candidates 6 and 7 valid
    q = pol8.q_net(obs)
    assert q.shape == (4, 8) and q[obs["action_mask"] > 0].std() > 0
    assert (q[obs["action_mask"] == 0] < -1e7).all() and (q[obs["action_mask"] > 0] > -1e7).all()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    obs_p = {
        "candidates": obs["candidates"][:, perm],
        "global": obs["global"],
        "action_mask": obs["action_mask"][:, perm],
    }
    assert torch.allclose(pol8.q_net(obs_p), q[:, perm], atol=1e-5)
    assert torch.equal(pol8.candidate_logits(obs), q)
    # the target network is a separate copy with the same weights at the start
    assert pol8.q_net_target.q_net is not pol8.q_net.q_net
    assert torch.allclose(pol8.q_net_target(obs), q)
    # greedy actions: the argmax among the valid candidates only
    greedy = pol8._predict(obs, deterministic=True)
    ref = q.masked_fill(obs["action_mask"] == 0, -float("inf")).argmax(1)
    assert torch.equal(greedy, ref) and bool(obs["action_mask"][torch.arange(4), greedy].all())
    assert int(greedy[2]) in (6, 7)
    # the same weights on K = 16: the first 8 candidates alone give the same Q-values
    pol16 = SetDQNPolicy(obs_space(16), gym.spaces.Discrete(16), lambda _: 1e-3, **kw)
    pol16.load_state_dict(pol8.state_dict())
    pad = {"candidates": torch.cat([obs["candidates"], torch.rand(4, 8, 12)], 1), "global": obs["global"],
           "action_mask": torch.cat([obs["action_mask"], torch.zeros(4, 8)], 1)}
    q16 = pol16.q_net(pad)
    assert q16.shape == (4, 16) and torch.allclose(q16[:, :8], q, atol=1e-5) and (q16[:, 8:] < -1e7).all()
    assert torch.equal(pol16._predict(pad, deterministic=True), greedy)


@pytest.mark.slow
def test_masked_dqn_explores_among_valid_candidates_only(dqn_run):
    from stable_baselines3 import DQN

    _, model, _, _, _ = dqn_run
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 16), dtype=np.int8)
    mask[0, :12] = 1
    mask[1, [3, 9]] = 1
    mask[2, 15] = 1
    obs = {"candidates": rng.random((3, 16, 12), dtype=np.float32), "global": rng.random((3, 10), dtype=np.float32),
           "action_mask": mask}
    eps, model.exploration_rate = model.exploration_rate, 1.0  # every action is an exploration action
    try:
        np.random.seed(0)
        acts = np.stack([model.predict(obs, deterministic=False)[0] for _ in range(200)])
        assert mask[np.arange(3), acts].all()  # (200, 3): always a valid candidate
        assert set(acts[:, 0].tolist()) == set(range(12)) and set(acts[:, 1].tolist()) == {3, 9}
        assert (acts[:, 2] == 15).all()
        # SB3's own epsilon-greedy samples the whole Discrete(16): it does pick padding rows
        plain = np.stack([DQN.predict(model, obs, deterministic=False)[0] for _ in range(50)])
        assert not mask[np.arange(3), plain].all()
        # the warm-up phase (before learning_starts) samples valid candidates too
        last, model._last_obs = model._last_obs, {k: v[1:2] for k, v in obs.items()}
        try:
            warm = [int(model._sample_action(learning_starts=10**9, n_envs=1)[0][0]) for _ in range(40)]
        finally:
            model._last_obs = last
        assert set(warm) == {3, 9}
    finally:
        model.exploration_rate = eps
    # greedy (deterministic) actions ignore exploration_rate and respect the mask
    model.exploration_rate = 1.0
    try:
        greedy = model.predict(obs, deterministic=True)[0]
    finally:
        model.exploration_rate = eps
    assert mask[np.arange(3), greedy].all() and greedy[2] == 15


@pytest.mark.slow
def test_dqn_policy_file_reloads_acts_identically_and_simulates(dqn_run):
    from metaal.agents import LearnedStrategy, load_model, policy_logits, read_metadata
    from metaal.agents.networks import MaskedDQN

    path, model, _, _, _ = dqn_run
    meta = read_metadata(path)
    assert meta["algo"] == "DQN" and meta["k"] == 16
    loaded, _ = load_model(path)
    assert isinstance(loaded, MaskedDQN)
    state = new_state(_task(), "logreg", budget=20)
    obs = Observer(k=16).observe(state, np.random.default_rng(3))
    od = obs.as_dict()
    ref = policy_logits(model.policy, od)
    np.testing.assert_allclose(policy_logits(loaded.policy, od), ref, rtol=0, atol=1e-6)
    assert np.isfinite(ref[obs.mask]).all() and np.std(ref[obs.mask]) > 0
    # same observation -> same greedy action, from the trained model and from the file
    a_ref = int(model.predict(od, deterministic=True)[0])
    assert int(loaded.predict(od, deterministic=True)[0]) == a_ref == int(np.argmax(ref))
    strat = LearnedStrategy(path, strict=True)
    assert not strat.is_fallback and strat.name == f"policy:{path}"
    assert strat.select(state, 1, np.random.default_rng(3)).tolist() == [int(obs.indices[a_ref])]
    # plugs into the loop, reproducibly, and the registry builds it too
    c1 = simulate(_task(), strat, 8, seed=1)
    c2 = simulate(_task(), get(f"policy:{path}", strict=True), 8, seed=1)
    assert len(c1.queried) == 8 and c1.queried == c2.queried


@pytest.mark.slow
def test_dqn_config_and_init_from_imitation(policy_file, dqn_run):
    from metaal.agents.train import init_weights, load_config, make_model

    with pytest.raises(ConfigError, match="DQN does not take n_epochs"):
        load_config({"rl": {"algo": "DQN", "hyper": {"n_epochs": 4}}})
    with pytest.raises(ConfigError, match="rl.algo must be one of"):
        load_config({"rl": {"algo": "A2C"}})
    cfg = _cfg(rl={"algo": "DQN"})
    assert "clip_range" not in cfg["rl"]["hyper"] and cfg["rl"]["hyper"]["buffer_size"] > 0
    assert _cfg()["rl"]["hyper"]["clip_range"] == 0.1  # the default (MaskablePPO) config is unchanged
    # a DQN model started from a behaviour-cloning (MaskablePPO) policy: Q-values = its logits
    _, src = policy_file
    dqn = make_model(cfg)
    init_weights(dqn, src)
    obs = {"candidates": torch.rand(2, 8, 12), "global": torch.rand(2, 10), "action_mask": torch.ones(2, 8)}
    obs["action_mask"][0, 6:] = 0
    with torch.no_grad():
        want = src.policy.candidate_logits(obs)
        assert torch.allclose(dqn.policy.q_net(obs), want, atol=1e-6)
        assert torch.allclose(dqn.policy.q_net_target(obs), want, atol=1e-6)
    # ...but an actor-critic cannot start from a DQN file
    with pytest.raises(ConfigError, match="only start a DQN"):
        init_weights(make_model(_cfg()), dqn_run[1])


@pytest.mark.slow
def test_tiny_dqn_training_run_and_resume(tmp_path):
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.networks import MaskedDQN
    from metaal.agents.policy_file import load_model
    from metaal.agents.train import train

    rl = {"enabled": True, "algo": "DQN", "init": "scratch", "total_timesteps": 64, "n_envs": 1,
          "env_kwargs": {"max_pool": 120, "reward_cap": 60},
          "hyper": {"learning_starts": 16, "buffer_size": 500, "batch_size": 16, "target_update_interval": 32}}
    cfg = _cfg(imitation={"enabled": False}, rl=rl, budget_range=[4, 8], eval={"every_steps": 64}, checkpoint_every=32)
    out = tmp_path / "run"
    s1 = train(cfg, out, progress=False)
    assert s1["stage"] == "rl_64" and (out / "checkpoints" / "rl_model_64_steps.zip").is_file()
    model, meta = load_model(out / "policy.zip")
    assert meta["algo"] == "DQN" and isinstance(model, MaskedDQN)
    cfg2 = _cfg(imitation={"enabled": False}, rl={**rl, "total_timesteps": 96}, budget_range=[4, 8],
                eval={"every_steps": 64}, checkpoint_every=32)
    first = (out / "checkpoints" / "rl_model_32_steps.zip").stat().st_mtime_ns
    s2 = train(cfg2, out, resume=True, progress=False)  # resumes the DQN checkpoint at step 64
    assert (out / "checkpoints" / "rl_model_32_steps.zip").stat().st_mtime_ns == first  # not restarted from 0
    assert set(s2["stages"]) == {"rl_64", "rl_96"} and (out / "checkpoints" / "rl_model_96_steps.zip").is_file()


@pytest.mark.slow
def test_dqn_config_with_imitation_stages(tmp_path):
    """In a DQN config, behaviour cloning still trains a MaskablePPO policy; the DQN run starts
    from it, and each stage file records its own algorithm."""
    pytest.importorskip("metaal.envs.pool")
    from metaal.agents.policy_file import read_metadata
    from metaal.agents.train import train

    rl = {"enabled": True, "algo": "DQN", "init": "imitation", "total_timesteps": 32, "n_envs": 1,
          "env_kwargs": {"max_pool": 120, "reward_cap": 60}, "hyper": {"learning_starts": 16, "batch_size": 16}}
    cfg = _cfg(imitation={"n_states": 20, "epochs": 2}, rl=rl, budget_range=[4, 8], eval={"every_steps": 32})
    s = train(cfg, tmp_path / "run", progress=False)
    stages = tmp_path / "run" / "stages"
    assert set(s["stages"]) == {"bc", "rl_32"}
    assert read_metadata(stages / "bc.zip")["algo"] == "MaskablePPO"
    assert read_metadata(stages / "rl_32.zip")["algo"] == "DQN"
    assert read_metadata(tmp_path / "run" / "policy.zip")["algo"] == read_metadata(stages / f"{s['stage']}.zip")["algo"]
