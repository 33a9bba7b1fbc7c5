"""Protocols where margin is weak: cold start, batch mode, class imbalance, and the oracle.

End to end through ``metaal compare`` / ``metaal evaluate`` / ``metaal label`` on small real
datasets, plus the pieces: the imbalance transform, the cold-start fallback in every loop (simulate,
the labeling session, the environments) and the oracle's contract.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metaal.envs  # noqa: F401  (registers the environments)
from metaal.cli import main
from metaal.data import imbalance, load_dataset, make_split
from metaal.envs.batched import BatchedPoolEnv
from metaal.errors import ConfigError, DataError
from metaal.loop import simulate
from metaal.loop.session import ActiveLearner, run_oracle
from metaal.protocols import PROTOCOLS, get_protocol, resolve
from metaal.state import Task
from metaal.strategies import ColdStart, get, with_cold_start


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def _curves(out: Path) -> list[dict[str, str]]:
    with open(out / "curves.csv") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------------------------
# protocols and the imbalance transform


def test_protocol_presets_and_overrides() -> None:
    assert [(p.initial, p.budget, p.batch_size, p.imbalance, p.metric) for p in PROTOCOLS.values()] == [
        (10, 100, 1, None, "accuracy"),
        (0, 30, 1, None, "accuracy"),
        (10, 200, 20, None, "accuracy"),
        (10, 100, 1, 0.05, "macro_f1"),
    ]
    p = resolve("batch", budget=40, initial=None)
    assert (p.initial, p.budget, p.batch_size) == (10, 40, 20)
    assert resolve(None).name == "standard"
    with pytest.raises(ConfigError, match="unknown protocol 'warm' \\(known: standard, cold, batch, imbalanced\\)"):
        get_protocol("warm")


def test_imbalance_keeps_the_largest_class_and_shrinks_the_others_to_the_share(tmp_path: Path) -> None:
    ds = load_dataset("sklearn:wine")  # 59 / 71 / 48
    sub = imbalance(ds, 0.05, seed=0)
    counts = np.bincount(sub.y)
    assert counts[1] == 71  # the largest class whole
    assert counts[0] == counts[2] == round(0.05 * 71 / (1 - 2 * 0.05))  # 4 each: 5% of the result
    assert counts[0] / counts.sum() == pytest.approx(0.05, abs=0.01)
    # rows are a subset in their order, features follow; seeded
    assert np.array_equal(sub.y, imbalance(ds, 0.05, seed=0).y)
    assert not np.array_equal(sub.X, imbalance(ds, 0.05, seed=1).X)
    rows = [np.flatnonzero((ds.X == x).all(1))[0] for x in sub.X]
    assert rows == sorted(rows) and np.array_equal(ds.y[rows], sub.y)
    # names and file paths alike, with the spec in the name
    assert load_dataset("sklearn:wine?imbalance=0.05").name == "wine?imbalance=0.05"
    path = tmp_path / "w.npz"
    np.savez(path, X=ds.X, y=ds.y)
    named = load_dataset(f"{path}?imbalance=0.1&seed=2")
    assert named.name == "w?imbalance=0.1&seed=2" and np.array_equal(named.y, imbalance(ds, 0.1, seed=2).y)
    # text follows its rows
    txt = load_dataset("sklearn:wine")
    txt.text = np.array([f"doc {i}" for i in range(txt.n)])
    t = imbalance(txt, 0.05)
    assert [int(s.split()[1]) for s in t.text] == [np.flatnonzero((ds.X == x).all(1))[0] for x in t.X]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sklearn:wine?imbalance=0", "imbalance ratio must be in \\(0, 1\\) \\(got 0.0\\)"),
        ("sklearn:wine?imbalance=1.5", "imbalance ratio must be in \\(0, 1\\)"),
        ("sklearn:wine?imbalance=0.5", "too large for 3 classes"),
        ("sklearn:wine?imbalance=x", "imbalance must be a number"),
        ("sklearn:wine?ratio=0.1", "unknown dataset transform 'ratio'"),
        ("sklearn:wine?seed=1", "needs imbalance=R"),
    ],
)
def test_imbalance_bad_input_is_one_message(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


# ----------------------------------------------------------------------------------------------
# the cold start in every loop


def test_cold_start_simulation_lets_random_pick_until_two_classes() -> None:
    ds = load_dataset("sklearn:wine")
    task = Task.from_split(ds, make_split(ds, 0, n_initial=0))
    assert len(task.initial) == 0
    c = simulate(task, "margin", 12, seed=0)
    assert c.n_labeled.tolist() == list(range(13))
    y = task.y_pool[c.queried]
    first_two = next(i for i in range(1, len(y) + 1) if len(np.unique(y[:i])) == 2)
    assert c.cold_picks == first_two and c.cold_fallback == "random"  # random until two classes
    # before two classes the learner predicts the one labeled class (or class 0 without labels)
    assert c.accuracy[0] == pytest.approx(np.mean(task.y_test == 0))
    assert c.accuracy[1] == pytest.approx(np.mean(task.y_test == y[0]))
    # a model-free strategy needs no fallback; the same seed gives the same curve
    k = simulate(task, "coreset", 12, seed=0)
    assert k.cold_picks == 0 and k.cold_fallback == ""
    assert np.array_equal(simulate(task, "margin", 12, seed=0).accuracy, c.accuracy)
    # in the standard protocol nothing changes: no fallback pick
    warm = Task.from_split(ds, make_split(ds, 0, n_initial=10))
    assert simulate(warm, "margin", 5, seed=0).cold_picks == 0
    assert isinstance(with_cold_start(get("margin")), ColdStart)
    assert not isinstance(with_cold_start(get("random")), ColdStart)


def test_cold_start_stopping_rule_counts_real_models_only() -> None:
    ds = load_dataset("sklearn:wine")
    task = Task.from_split(ds, make_split(ds, 0, n_initial=0))
    c = simulate(task, "margin", 12, seed=0, stop_window=2, stop_threshold=0.5)
    # kappas start at the second model fitted on two classes, never on the label-frequency phase
    assert len(c.stop_kappa) == 12 - c.cold_picks


def test_cold_start_session_asks_what_compare_labels_and_resumes(tmp_path: Path) -> None:
    ds = load_dataset("sklearn:wine")
    task = Task.from_split(ds, make_split(ds, 1, n_initial=0))
    store = tmp_path / "s.sqlite"
    al = ActiveLearner(ds, strategy="margin", seed=1, initial=0, budget=8, store=store)
    assert not al.cold_start and al.n_labeled == 0
    run_oracle(al, ds.y)
    reasons = [q["reason"] for q in al.store.queries()]
    assert reasons[0] == "margin (fallback: random)" and reasons[-1] == "margin"
    al2 = ActiveLearner(ds, strategy="margin", seed=1, initial=0, budget=14, store=store)  # resumed, larger budget
    prog = run_oracle(al2, ds.y)
    c = simulate(task, "margin", 14, seed=1)
    assert [al2.position(r[1]) for r in al2.store.labels()] == c.queried
    assert prog["accuracy"] == pytest.approx(c.accuracy[-1])
    with pytest.raises(ConfigError, match="needs the class names up front"):
        ActiveLearner(X_pool=ds.X, initial=0)


def test_envs_accept_a_cold_start() -> None:
    env = gym.make("metaal/Pool-v0", datasets=["sklearn:wine"], initial=0, budget=6)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        obs, r, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        assert np.isfinite(r) and all(np.isfinite(v).all() for v in obs.values())
    assert term
    venv = BatchedPoolEnv(2, ["sklearn:wine", "sklearn:iris"], initial=0, budget=5, seed=0)
    obs, _ = venv.reset()
    assert all(len(t.initial) == 0 for t in venv.tasks)
    for _ in range(5):
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in obs["action_mask"]])
        obs, r, done, _, _ = venv.step(acts)
        assert np.isfinite(r).all() and all(np.isfinite(v).all() for v in obs.values())
    assert done.all()


# ----------------------------------------------------------------------------------------------
# the oracle


def test_oracle_reads_test_labels_in_simulation_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = load_dataset("sklearn:wine")
    task = Task.from_split(ds, make_split(ds, 0, n_initial=0))
    oracle = get("oracle")
    from metaal.loop.simulate import new_state

    with pytest.raises(ConfigError, match="runs only in simulation"):
        oracle.select(new_state(task), 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="reads the test labels"):
        ActiveLearner(ds, strategy="oracle")
    assert main(["label", "--data", "sklearn:wine", "--strategy", "oracle", "--oracle", "y", "--n", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reads the test labels" in err[0]


def test_oracle_is_above_every_strategy_from_a_cold_start() -> None:
    ds = load_dataset("sklearn:wine")
    aulc: dict[str, list[float]] = {}
    for seed in range(2):
        task = Task.from_split(ds, make_split(ds, seed, n_initial=0))
        for s in ("random", "margin", "coreset", "oracle"):
            aulc.setdefault(s, []).append(simulate(task, s, 10, seed=seed).aulc)
    means = {s: float(np.mean(v)) for s, v in aulc.items()}
    assert means["oracle"] > max(v for s, v in means.items() if s != "oracle") + 0.03, means


# ----------------------------------------------------------------------------------------------
# the protocols end to end


def test_compare_cold_protocol_with_norm_aulc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cold"
    code = main(["compare", "--protocol", "cold", "--budget", "8", "--data", "sklearn:wine", "--strategies",
                 "random,margin,oracle", "--seeds", "2", "--jobs", "1", "--no-progress", "--no-plot",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean norm AULC (0 = random, 1 = oracle): oracle 1.000" in printed
    rows = {r["strategy"]: r for r in _summary(out)}
    assert float(rows["random"]["norm_aulc"]) == 0.0 and float(rows["oracle"]["norm_aulc"]) == 1.0
    m = rows["margin"]
    expect = (float(m["aulc_mean"]) - float(rows["random"]["aulc_mean"])) / (
        float(rows["oracle"]["aulc_mean"]) - float(rows["random"]["aulc_mean"]))
    assert float(m["norm_aulc"]) == pytest.approx(expect)
    assert float(m["cold_picks_mean"]) >= 2 and float(rows["oracle"]["cold_picks_mean"]) == 0
    assert {int(r["n_labeled"]) for r in _curves(out)} == set(range(9))  # from zero labels
    args = json.loads((out / "summary.json").read_text())["arguments"]
    assert (args["protocol"], args["initial"], args["budget"], args["batch_size"]) == ("cold", 0, 8, 1)


def test_compare_batch_protocol_steps_in_batches(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    assert main(["compare", "--protocol", "batch", "--budget", "40", "--data", "sklearn:breast_cancer",
                 "--strategies", "random,margin,coreset", "--seeds", "1", "--jobs", "1", "--no-progress", "--no-plot",
                 "--out", str(out)]) == 0
    for s in ("random", "margin", "coreset"):
        assert [int(r["n_labeled"]) for r in _curves(out) if r["strategy"] == s] == [10, 30, 50]


def test_compare_imbalanced_protocol_ranks_by_macro_f1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "imb"
    assert main(["compare", "--protocol", "imbalanced", "--budget", "10", "--data", "sklearn:breast_cancer",
                 "--strategies", "random,margin", "--seeds", "2", "--jobs", "1", "--no-progress", "--no-plot",
                 "--out", str(out)]) == 0
    assert "headline metric: macro-F1" in capsys.readouterr().out
    rows = _summary(out)
    assert {r["dataset"] for r in rows} == {"breast_cancer?imbalance=0.05"}
    curves = _curves(out)
    for r in rows:
        f1 = [np.mean([float(c["macro_f1"]) for c in curves if c["strategy"] == r["strategy"] and c["seed"] == s])
              for s in ("0", "1")]
        assert float(r["aulc_f1_mean"]) == pytest.approx(np.mean(f1))
    # ranks follow macro-F1 AULC: the better macro-F1 has the lower mean rank
    a, b = rows
    if float(a["aulc_f1_mean"]) != float(b["aulc_f1_mean"]):
        better = min(rows, key=lambda r: -float(r["aulc_f1_mean"]))
        assert float(better["mean_rank"]) <= 1.5


@pytest.mark.slow
def test_evaluate_cold_protocol_reports_norm_aulc_and_seconds(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", "--protocol", "cold", "--budgets", "6", "--data", "sklearn:wine", "--strategies",
                 "random,margin,oracle", "--seeds", "3", "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (res["protocol"], res["initial"], res["metric"]) == ("cold", 0, "accuracy")
    agg = res["budgets"]["6"]["aggregate"]
    assert agg["oracle"]["mean_norm_aulc"] == 1.0 and agg["random"]["mean_norm_aulc"] == 0.0
    assert agg["oracle"]["query_seconds"] > agg["margin"]["query_seconds"] > 0
    assert (out / "cold_logreg_b6" / "summary.csv").is_file()
