"""The adaptive policy's pieces (issue 13): observation v2 (coverage candidates and features,
observation within a batch), MaxHerding continued after a batch's picks, batch-aware and guarded
learned policies, imitation across protocols, validation across protocols."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# ruff: noqa: E402  (imported after the torch check)
from metaal.data import load_dataset, make_split
from metaal.errors import ConfigError
from metaal.geometry import pairwise_dist
from metaal.loop.simulate import new_state, simulate
from metaal.observe import CANDIDATE_FEATURES_V2, GLOBAL_FEATURES_V2, OBS_VERSIONS, Observer, feature_names
from metaal.state import Task
from metaal.strategies import get, make_observer
from metaal.strategies.coverage import MaxHerding

V2 = OBS_VERSIONS[1]
C = {n: i for i, n in enumerate(CANDIDATE_FEATURES_V2)}
G = {n: i for i, n in enumerate(GLOBAL_FEATURES_V2)}


def _task(name: str = "sklearn:wine", seed: int = 0, initial: int = 10) -> Task:
    ds = load_dataset(name)
    return Task.from_split(ds, make_split(ds, seed, initial))


def _cfg(**over):
    from metaal.agents.train import load_config

    raw = {"k": 8, "obs_version": V2, "network": {"embed_dim": 16, "head": 16},
           "datasets": {"train": ["sklearn:breast_cancer"], "validation": ["sklearn:iris"]},
           "imitation": {"enabled": True}, "rl": {"enabled": False}, "eval": {"seeds": 1, "budget": 6, "jobs": 1},
           "jobs": 1}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(raw)


@pytest.fixture(scope="module")
def v2_policy(tmp_path_factory):
    """A small untrained (random-weights) obs-v2 set policy saved as a policy file."""
    from metaal.agents.train import _save, make_model

    cfg = _cfg()
    model = make_model(cfg)
    with torch.no_grad():
        for p in model.policy.action_net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return _save(model, tmp_path_factory.mktemp("v2") / "p.zip", cfg)


# ----------------------------------------------------------------------------------------------
# MaxHerding after a batch's picks


def test_maxherding_select_after_continues_its_own_greedy():
    state = new_state(_task("sklearn:breast_cancer"), budget=20)
    mh = MaxHerding()
    five = mh.select(state, 5)
    assert mh.select_after(state, five[:2], 3).tolist() == five[2:].tolist()
    # other pending items: never picked again, and the greedy goes on from them
    other = np.setdiff1d(state.unlabeled_idx, five)[:3]
    after = mh.select_after(state, other, 4)
    assert not set(after.tolist()) & set(other.tolist()) and not state.labeled_mask[after].any()
    assert after.tolist() != five[:4].tolist()


# ----------------------------------------------------------------------------------------------
# observation v2


def test_obs_v2_offers_maxherding_picks_and_flags_the_cold_start():
    state = new_state(_task(initial=0), budget=30)
    assert not state.model_ready
    ob = make_observer(16, V2)
    obs = ob.observe(state, np.random.default_rng(0), batch_size=5)
    names_c, names_g = feature_names(V2)
    assert obs.candidates.shape == (16, len(names_c)) and obs.global_.shape == (len(names_g),)
    assert obs.as_dict()["candidates"].shape == (16, 15) and obs.version == V2
    cover = MaxHerding().select(state, ob.n_coverage)
    flagged = obs.indices[obs.candidates[:, C["from_coverage"]] == 1]
    assert sorted(flagged.tolist()) == sorted(cover.tolist())
    first = int(np.flatnonzero(obs.indices == cover[0])[0])
    assert obs.candidates[first, C["coverage_gain"]] == pytest.approx(1.0)  # the greedy's best gain
    assert (obs.candidates[obs.mask, C["coverage_gain"]] <= 1.0 + 1e-6).all()
    assert obs.global_[G["no_model"]] == 1.0 and obs.global_[G["batch_progress"]] == 0.0
    assert obs.global_[G["log_batch"]] == pytest.approx(np.log(5) / np.log(100))
    assert obs.global_[G["coverage"]] == 0.0  # nothing labeled covers nothing
    # the same generator gives the same observation; v1 is what it was (12 / 10 features)
    again = ob.observe(state, np.random.default_rng(0), batch_size=5)
    np.testing.assert_array_equal(obs.candidates, again.candidates)
    v1 = Observer(16).observe(state, np.random.default_rng(0))
    assert v1.candidates.shape == (16, 12) and v1.global_.shape == (10,)
    # an ablated observer never shows the dropped features, and changes nothing else
    drop = make_observer(16, V2, drop=["coverage_gain", "no_model"]).observe(
        state, np.random.default_rng(0), batch_size=5)
    assert (drop.candidates[:, C["coverage_gain"]] == 0).all() and drop.global_[G["no_model"]] == 0
    keep = [i for i in range(15) if i != C["coverage_gain"]]
    np.testing.assert_array_equal(drop.candidates[:, keep], obs.candidates[:, keep])
    with pytest.raises(ValueError, match="unknown features"):
        make_observer(16, V2, drop=["margn"])


def test_obs_v2_within_a_batch_sees_the_earlier_picks():
    state = new_state(_task(), budget=30)
    ob = make_observer(32, V2)
    first = ob.observe(state, np.random.default_rng(1), batch_size=4)
    assert (first.candidates[first.mask, C["dist_batch"]] == 4.0).all()  # no picks yet
    pending = first.indices[[0, 5]]
    obs = ob.observe(state, np.random.default_rng(1), pending=pending, batch_size=4)
    idx = obs.indices[obs.mask]
    assert not set(idx.tolist()) & set(pending.tolist())  # picked items are no candidates
    X = state.X_pool
    want = np.minimum(pairwise_dist(X[idx], X[pending]).min(1) / state.distance_scale(), 4.0)
    np.testing.assert_allclose(obs.candidates[obs.mask, C["dist_batch"]], want, rtol=1e-5)
    # the picks count as labeled for the distances to the labeled set
    assert (obs.candidates[obs.mask, C["dist_labeled"]] <= obs.candidates[obs.mask, C["dist_batch"]] + 1e-6).all()
    assert obs.global_[G["batch_progress"]] == pytest.approx(0.5)
    assert obs.global_[G["coverage"]] > first.global_[G["coverage"]]
    assert obs.global_[G["no_model"]] == 0.0
    # the state itself is untouched
    assert not state.labeled_mask[pending].any()


# ----------------------------------------------------------------------------------------------
# learned policies: batch-aware, cold start, guard, versions


def test_v2_policy_acts_from_zero_labels_and_picks_a_batch_one_at_a_time(v2_policy):
    from metaal.agents import LearnedStrategy, policy_logits, read_metadata

    assert read_metadata(v2_policy)["obs_version"] == V2
    strat = LearnedStrategy(v2_policy, strict=True)
    assert strat.version == V2 and not strat.needs_model
    c = simulate(_task(initial=0), strat, 12, seed=0, batch_size=4)
    assert c.cold_picks == 0 and len(c.queried) == 12 and len(set(c.queried)) == 12
    # a batch: each pick is the policy's best given the earlier ones
    state = new_state(_task(), budget=30)
    picks = strat.select(state, 3, np.random.default_rng(2))
    ob, rng, done = make_observer(8, V2), np.random.default_rng(2), []
    for p in picks:
        obs = ob.observe(state, rng, pending=np.array(done, dtype=np.int64), batch_size=3)
        logits = policy_logits(strat.model.policy, obs.as_dict())
        assert p == obs.indices[int(np.argmax(logits))]
        done.append(int(p))
    # ?cold=fallback: it waits behind the loop's cold-start heuristic until two classes are labeled
    waits = LearnedStrategy(f"{v2_policy}?cold=fallback")
    assert waits.needs_model and waits.name.endswith("?cold=fallback")
    w = simulate(_task(initial=0), waits, 12, seed=0, batch_size=1)
    assert w.cold_picks >= 2 and len(set(w.queried)) == 12
    # reloaded, it acts identically
    again = simulate(_task(initial=0), LearnedStrategy(v2_policy), 12, seed=0, batch_size=4)
    assert again.queried == c.queried and again.accuracy.tolist() == c.accuracy.tolist()


def test_v1_policy_files_still_load_and_an_unknown_version_falls_back(v2_policy, tmp_path):
    import shutil

    from metaal.agents import LearnedStrategy

    v1 = LearnedStrategy("v1", strict=True)
    assert v1.version == OBS_VERSIONS[0] and v1.needs_model
    for suffix in (".zip", ".json"):
        shutil.copy(v2_policy.with_suffix(suffix), tmp_path / f"p{suffix}")
    meta = json.loads((tmp_path / "p.json").read_text())
    meta["obs_version"] = "obs-v9"
    (tmp_path / "p.json").write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="obs-v9"):
        s = LearnedStrategy(tmp_path / "p.zip")
    assert s.is_fallback and s.name.endswith("(fallback=margin)")


def test_guard_defers_to_margin_and_is_counted():
    from metaal.agents import LearnedStrategy

    task = _task("sklearn:breast_cancer")
    margin = simulate(task, get("margin"), 15, seed=0)
    plain = simulate(task, LearnedStrategy("default"), 15, seed=0)
    assert plain.guard_picks == 0
    always = simulate(task, LearnedStrategy("default?guard=0.999"), 15, seed=0)
    assert always.strategy == "policy:default?guard=0.999"
    assert always.queried == margin.queried  # an unsure policy always takes margin's pick
    differs = sum(a != b for a, b in zip(plain.queried, margin.queried))
    assert differs > 0 and always.guard_picks >= 1
    assert LearnedStrategy("default?guard=0.1&cold=fallback").name == "policy:default?guard=0.1&cold=fallback"
    for bad in ("default?guard=1.5", "default?guard=x", "default?gaurd=0.1", "default?cold=never"):
        with pytest.raises(ConfigError):
            LearnedStrategy(bad)


# ----------------------------------------------------------------------------------------------
# imitation and training across protocols


def test_imitation_across_protocols_records_v2_states_of_every_kind():
    from metaal.agents.imitation import ProtocolMix, TaskSampler, collect

    mix = ProtocolMix.from_config({"initial": [0, 2], "batch_sizes": [1, 4], "imbalance_prob": 0.5,
                                   "learners": ["logreg", "svm"]})
    sampler = TaskSampler(["sklearn:breast_cancer", "sklearn:wine"], max_rows=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = collect(sampler, 40, k=12, budget_range=(8, 16), record_prob=1.0, seed=0, obs_version=V2, mix=mix)
    assert d.candidates.shape[1:] == (12, 15) and d.global_.shape[1] == 15
    assert (d.global_[:, G["no_model"]] == 1).any()  # cold starts
    assert (d.global_[:, G["batch_progress"]] > 0).any()  # states inside a batch
    assert any("imbalance=" in s for s in d.dataset)
    assert np.isfinite(d.gains[d.mask]).all()
    # cold_expert: coverage: states without a model take MaxHerding's gains as the targets
    cov = ProtocolMix.from_config({"initial": [0, 0], "cold_expert": "coverage"})
    c = collect(sampler, 20, k=12, budget_range=(8, 8), record_prob=1.0, seed=0, obs_version=V2, mix=cov)
    cold = c.global_[:, G["no_model"]] == 1
    assert cold.any() and (~cold).any()
    gains = c.candidates[cold][..., C["coverage_gain"]]
    np.testing.assert_array_equal(c.gains[cold][c.mask[cold]], gains[c.mask[cold]])
    again = collect(sampler, 40, k=12, budget_range=(8, 16), record_prob=1.0, seed=0, obs_version=V2, mix=mix)
    np.testing.assert_array_equal(d.gains, again.gains)


def test_expert_scores_macro_f1_when_asked():
    from sklearn.metrics import f1_score

    from metaal.agents.imitation import lookahead_gains

    task = _task("sklearn:wine")
    state = new_state(task, budget=20)
    obs = make_observer(8, V2).observe(state, np.random.default_rng(0))
    acc = lookahead_gains(state, task, obs.indices, obs.mask, ll_weight=0.0)
    f1 = lookahead_gains(state, task, obs.indices, obs.mask, ll_weight=0.0, metric="macro_f1")
    # candidate 0 by hand: label it, refit from scratch, macro-F1 on the reward split minus now's
    base = f1_score(task.y_test, state.learner.predict(task.X_test), average="macro")
    rows = np.concatenate([state.labeled_idx, obs.indices[:1]])
    lrn = state.learner.clone()
    lrn.fit(state.X_pool[rows], task.y_pool[rows])
    want = f1_score(task.y_test, lrn.predict(task.X_test), average="macro") - base
    assert f1[0] == pytest.approx(want, abs=2e-2)  # the expert warm-starts: nearly the same fit
    assert not np.allclose(acc[obs.mask], f1[obs.mask])


@pytest.mark.parametrize("over, match", [
    ({"protocols": {"batch_sizes": [1, 5]}, "obs_version": "obs-v1"}, "need obs_version"),
    ({"rl": {"enabled": True}}, "obs-v1 only"),
    ({"eval": {"protocols": ["standard", "warm"]}}, "eval.protocols"),
    ({"protocols": {"initial": [5, 2]}}, "protocols.initial"),
    ({"protocols": {"batch": [2]}}, "unknown keys"),
    ({"obs_version": "obs-v7"}, "obs_version"),
    ({"protocols": {"imbalance_metric": "auc"}}, "imbalance_metric"),
    ({"protocols": {"cold_expert": "typiclust"}}, "cold_expert"),
    ({"protocols": {"initial": [0, 5, 9]}}, r"\[lo, hi\]"),
])
def test_training_config_errors_are_one_line(over, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**over)


@pytest.mark.slow
def test_tiny_v2_training_validates_in_two_protocols(tmp_path):
    from metaal.agents import LearnedStrategy
    from metaal.agents.train import train

    cfg = _cfg(k=12, max_rows=300, budget_range=[8, 16],
               protocols={"initial": [0, 6], "batch_sizes": [1, 4], "learners": ["logreg", "svm"]},
               imitation={"n_states": 60, "epochs": 5, "batch_size": 32},
               eval={"seeds": 1, "protocols": ["cold", "batch"], "jobs": 1})
    summary = train(cfg, tmp_path / "run", progress=False)
    res = json.loads((tmp_path / "run" / "validation.json").read_text())["bc"]
    assert set(res["per_protocol"]) == {"cold", "batch"}
    want = np.mean([res["per_protocol"][p]["policy"] for p in ("cold", "batch")])
    assert res["aulc_policy"] == pytest.approx(want) and summary["stage"] == "bc"
    s = LearnedStrategy(tmp_path / "run", strict=True)
    assert s.version == V2 and s.meta["config"]["protocols"]["batch_sizes"] == [1, 4]
    # the feature ablation reruns behaviour cloning without a group and validates it the same way
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ablate_features", Path(__file__).resolve().parents[1] / "scripts" / "ablate_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "abl"), "--groups", "batch"]) == 0
    abl = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert set(abl) == {"bc", "without batch"} and set(abl["without batch"]["per_protocol"]) == {"cold", "batch"}
    dropped = LearnedStrategy(tmp_path / "abl" / "without_batch.zip", strict=True)
    assert dropped.observer.drop == ("dist_batch", "log_batch", "batch_progress")
