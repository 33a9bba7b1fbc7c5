"""``metaal compare`` end to end, the runner's metrics, the Ray backend and bad-input errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaal.cli import main
from metaal.data import load_dataset, load_splits, make_split, save_splits
from metaal.errors import ConfigError, MetaalError
from metaal.experiments.runner import (
    CURVE_COLUMNS,
    SUMMARY_COLUMNS,
    check_strategies,
    run_cells,
    summarize,
)
from metaal.loop.simulate import Curve

SMALL = ["--budget", "12", "--initial", "6", "--seeds", "2", "--no-progress"]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small comparison on wine with --jobs 1 (shared by several tests)."""
    out = tmp_path_factory.mktemp("cmp") / "j1"
    argv = ["compare", "--data", "sklearn:wine", "--strategies", "random,margin", *SMALL, "--jobs", "1",
            "--out", str(out)]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return {"code": code, "out": out, "stdout": buf.getvalue(), "argv": argv}


def test_compare_writes_every_file_with_the_exact_columns(wine_run: dict) -> None:
    assert wine_run["code"] == 0
    out: Path = wine_run["out"]
    cols, rows = _read_csv(out / "curves.csv")
    assert cols == CURVE_COLUMNS == ["dataset", "strategy", "seed", "n_labeled", "accuracy", "macro_f1"]
    # 2 strategies x 2 seeds x (initial + 12 queries) points, labels 6..18 per curve
    assert len(rows) == 2 * 2 * 13
    assert {r["dataset"] for r in rows} == {"wine"}
    assert sorted({r["strategy"] for r in rows}) == ["margin", "random"]
    for (st, seed) in [("random", "0"), ("margin", "1")]:
        ns = [int(r["n_labeled"]) for r in rows if r["strategy"] == st and r["seed"] == seed]
        assert ns == list(range(6, 19))
    acc = np.array([float(r["accuracy"]) for r in rows])
    f1 = np.array([float(r["macro_f1"]) for r in rows])
    assert ((acc > 0.3) & (acc <= 1.0)).all() and ((f1 > 0.0) & (f1 <= 1.0)).all()

    scols, srows = _read_csv(out / "summary.csv")
    assert scols == SUMMARY_COLUMNS == [
        "dataset", "strategy", "aulc_mean", "aulc_std", "aulc_f1_mean", "norm_aulc", "final_accuracy",
        "stop_labels_mean", "stop_accuracy_mean", "stop_fired", "mean_rank", "query_seconds", "cold_picks_mean",
        "guard_picks_mean",
    ]
    assert [r["strategy"] for r in srows] == ["random", "margin"]
    for r in srows:
        # AULC = mean test accuracy over the curve, averaged over seeds; recompute from curves.csv
        per_seed = [
            np.mean([float(x["accuracy"]) for x in rows if x["strategy"] == r["strategy"] and x["seed"] == s])
            for s in ("0", "1")
        ]
        assert float(r["aulc_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert float(r["aulc_std"]) == pytest.approx(np.std(per_seed), abs=1e-12)
        assert 0.7 < float(r["aulc_mean"]) <= 1.0  # logistic regression on wine learns fast
        assert 1.0 <= float(r["mean_rank"]) <= 2.0
        assert 0.0 <= float(r["query_seconds"]) < 1.0
    # ranks among 2 strategies sum to 3 on every seed
    assert sum(float(r["mean_rank"]) for r in srows) == pytest.approx(3.0)

    doc = json.loads((out / "summary.json").read_text())
    assert doc["columns"] == SUMMARY_COLUMNS
    assert doc["arguments"]["budget"] == 12 and doc["arguments"]["strategies"] == ["random", "margin"]
    assert doc["arguments"]["seeds"] == [0, 1]
    assert [row["aulc_mean"] for row in doc["rows"]] == pytest.approx([float(r["aulc_mean"]) for r in srows])

    stdout = wine_run["stdout"]
    assert "margin" in stdout and "AULC" in stdout
    assert f"tensorboard --logdir {out / 'tb'}" in stdout and str(out / "curves.png") in stdout


def test_plot_is_a_valid_png(wine_run: dict) -> None:
    import matplotlib.image as mpimg

    png = wine_run["out"] / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_tensorboard_has_one_run_per_strategy_with_mean_curves(wine_run: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = wine_run["out"] / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["margin", "random"]
    _, rows = _read_csv(wine_run["out"] / "curves.csv")
    for st in ("random", "margin"):
        assert list((tb / st).glob("events.out.tfevents.*"))
        acc = EventAccumulator(str(tb / st))
        acc.Reload()
        assert set(acc.Tags()["scalars"]) == {"accuracy/wine", "macro_f1/wine"}
        events = acc.Scalars("accuracy/wine")
        assert [e.step for e in events] == list(range(6, 19))
        for e in events:
            expect = np.mean([float(r["accuracy"]) for r in rows
                              if r["strategy"] == st and int(r["n_labeled"]) == e.step])
            assert e.value == pytest.approx(expect, abs=1e-6)


@pytest.mark.slow
def test_jobs_do_not_change_results(wine_run: dict, tmp_path: Path) -> None:
    out2 = tmp_path / "j2"
    argv = [a if a != str(wine_run["out"]) else str(out2) for a in wine_run["argv"]]
    argv[argv.index("--jobs") + 1] = "2"
    assert main(argv) == 0
    assert (out2 / "curves.csv").read_bytes() == (wine_run["out"] / "curves.csv").read_bytes()
    # summary differs at most in the timing column
    _, a = _read_csv(out2 / "summary.csv")
    _, b = _read_csv(wine_run["out"] / "summary.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "query_seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_splits_json_round_trip(wine_run: dict, tmp_path: Path) -> None:
    """Splits written from the default protocol reproduce the default run exactly; a custom
    split's initial set is honoured."""
    wine = load_dataset("sklearn:wine")
    path = save_splits(tmp_path / "splits.json", "wine", [make_split(wine, s, 6) for s in (0, 1)])
    out = tmp_path / "from_json"
    assert main(["compare", "--data", "sklearn:wine", "--strategies", "random,margin", "--splits", str(path),
                 "--budget", "12", "--jobs", "1", "--no-progress", "--no-plot", "--out", str(out)]) == 0
    assert (out / "curves.csv").read_bytes() == (wine_run["out"] / "curves.csv").read_bytes()

    sp = make_split(wine, 3, 6)
    y = wine.y  # a hand-made initial set of 4 items (classes 0, 1, 2, 2)
    sp.initial = np.array([sp.pool[y[sp.pool] == 0][0], sp.pool[y[sp.pool] == 1][0],
                           sp.pool[y[sp.pool] == 2][0], sp.pool[y[sp.pool] == 2][1]])
    sp.seed = 7
    path2 = save_splits(tmp_path / "custom.json", "wine", [sp])
    curves = run_cells(["sklearn:wine"], ["margin"], budget=5, splits=load_splits(path2, wine)[1])
    assert len(curves) == 1 and curves[0].seed == 7
    assert curves[0].n_labeled.tolist() == [4, 5, 6, 7, 8, 9]


def test_rank_ties_are_averaged() -> None:
    def curve(st: str, seed: int, acc: list[float]) -> Curve:
        a = np.array(acc)
        return Curve("d", st, seed, np.arange(len(a)) + 2, a, a, query_seconds=0.5, queried=[1, 2])

    curves = [curve("a", 0, [0.5, 0.9]), curve("b", 0, [0.7, 0.7]), curve("c", 0, [0.5, 0.6]),
              curve("a", 1, [0.5, 0.6]), curve("b", 1, [0.9, 0.9]), curve("c", 1, [0.8, 0.9])]
    rows = {r["strategy"]: r for r in summarize(curves)}
    # seed 0: a = b = 0.7 tie (1.5 each), c = 0.55 (3); seed 1: b 0.9 (1), c 0.85 (2), a 0.55 (3)
    assert rows["a"]["mean_rank"] == pytest.approx((1.5 + 3) / 2)
    assert rows["b"]["mean_rank"] == pytest.approx((1.5 + 1) / 2)
    assert rows["c"]["mean_rank"] == pytest.approx((3 + 2) / 2)
    assert rows["a"]["aulc_mean"] == pytest.approx(0.625) and rows["a"]["aulc_std"] == pytest.approx(0.075)
    assert rows["a"]["final_accuracy"] == pytest.approx(0.75)
    assert rows["a"]["query_seconds"] == pytest.approx(0.25)  # 0.5 s over 2 queries


def test_all_expands_to_every_registered_heuristic() -> None:
    from metaal.strategies import names

    # every heuristic; the oracle reads test labels, so only its name brings it in
    assert check_strategies("all") == [n for n in names() if n != "oracle"]
    assert {"random", "margin", "entropy"} <= set(check_strategies("all"))
    assert "oracle" in names() and "oracle" in check_strategies("all,oracle")
    assert check_strategies("margin,all")[0] == "margin"


# ----------------------------------------------------------------------------------------------
# Ray


@pytest.mark.slow
def test_ray_backend_equals_joblib() -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install metaal[ray]); Ray backend untested")
    args = dict(seeds=2, budget=8, initial=6, batch_size=2)
    local = run_cells(["sklearn:wine"], ["random", "margin"], jobs=1, **args)
    ray_ = run_cells(["sklearn:wine"], ["random", "margin"], jobs=2, backend="ray", **args)
    assert [(c.dataset, c.strategy, c.seed) for c in ray_] == [(c.dataset, c.strategy, c.seed) for c in local]
    assert [(c.strategy, c.seed) for c in local] == [("random", 0), ("random", 1), ("margin", 0), ("margin", 1)]
    for a, b in zip(local, ray_):
        assert np.array_equal(a.n_labeled, b.n_labeled) and a.n_labeled.tolist() == [6, 8, 10, 12, 14]
        assert np.array_equal(a.accuracy, b.accuracy) and np.array_equal(a.macro_f1, b.macro_f1)
        assert a.queried == b.queried


def test_ray_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MetaalError, match=r"pip install metaal\[ray\]"):
        run_cells(["sklearn:wine"], ["random"], seeds=1, budget=2, initial=4, backend="ray")


# ----------------------------------------------------------------------------------------------
# bad input: one line `metaal: error: ...`, exit status 2, never a traceback


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "text.csv").write_text("a,b,label\n1,2,x\n3,hello,y\n5,6,x\n")
    X = np.random.default_rng(0).random((30, 3))
    X[4, 2] = np.nan
    np.savez(tmp / "nan.npz", X=X, y=np.arange(30) % 2)
    np.savez(tmp / "one_class.npz", X=np.random.default_rng(1).random((30, 3)), y=np.zeros(30, dtype=int))
    np.savez(tmp / "docs.npz", text=np.array([f"doc {i}" for i in range(30)]), y=np.arange(30) % 2)
    np.savez(tmp / "pics.npz", images=np.zeros((30, 4, 4), dtype=np.uint8), y=np.arange(30) % 2)
    wine = load_dataset("sklearn:wine")
    splits = save_splits(tmp / "s.json", "wine", [make_split(wine, 0, 6)])
    return {
        "csv_text_cell": (["--data", str(tmp / "text.csv")], "'hello' is not a number"),
        "npz_nan": (["--data", str(tmp / "nan.npz")], "NaN"),
        "one_class": (["--data", str(tmp / "one_class.npz")], "only one class"),
        "budget_too_big": (
            ["--data", "sklearn:wine", "--budget", "500"],
            "budget 500 is larger than the unlabeled pool",
        ),
        "unknown_strategy": (
            ["--data", "sklearn:wine", "--strategies", "random,marginn"],
            "unknown strategy 'marginn'",
        ),
        "unknown_dataset": (["--data", "no_such_dataset_xyz"], "dataset 'no_such_dataset_xyz' not found"),
        "text_without_X": (["--data", str(tmp / "docs.npz")], "run `metaal featurize`"),
        "images_without_X": (["--data", str(tmp / "pics.npz")], "run `metaal featurize`"),
        "splits_two_datasets": (
            ["--data", "sklearn:wine", "sklearn:iris", "--splits", str(splits)],
            "--splits works with exactly one dataset",
        ),
        "unknown_learner": (["--data", "sklearn:wine", "--learner", "xgboost"], "unknown learner 'xgboost'"),
        "unknown_backend": (["--data", "sklearn:wine", "--backend", "dask"], "unknown backend 'dask'"),
        "initial_too_small": (["--data", "sklearn:wine", "--initial", "1"], "--initial must be 0 (cold start) or >= 2"),
        "unknown_protocol": (["--data", "sklearn:wine", "--protocol", "warm"], "unknown protocol 'warm'"),
        "imbalance_ratio_out_of_range": (["--data", "sklearn:wine?imbalance=1.5"], "imbalance ratio must be in (0, 1)"),
        "imbalance_too_large": (["--data", "sklearn:wine?imbalance=0.6"], "is too large for 3 classes"),
        "unknown_transform": (["--data", "sklearn:wine?imbalanse=0.1"], "unknown dataset transform 'imbalanse'"),
        "unknown_metric": (["--data", "sklearn:wine", "--metric", "auc"], "unknown metric 'auc'"),
        "cold_start_needs_model": (["--data", "sklearn:wine", "--cold-start", "margin"], "needs a model itself"),
        "same_name_twice": (["--data", "sklearn:wine", "wine"], "two datasets are named 'wine'"),
    }


BAD_IDS = ["csv_text_cell", "npz_nan", "one_class", "budget_too_big", "unknown_strategy", "unknown_dataset",
           "text_without_X", "images_without_X", "splits_two_datasets", "unknown_learner", "unknown_backend",
           "initial_too_small", "same_name_twice", "unknown_protocol", "imbalance_ratio_out_of_range",
           "imbalance_too_large", "unknown_transform", "unknown_metric", "cold_start_needs_model"]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    extra, expect = _bad_inputs(tmp_path)[case]
    argv = ["compare", "--strategies", "random,margin", "--budget", "10", "--seeds", "2", "--no-progress",
            "--out", str(tmp_path / "out")]
    # a later --strategies wins in argparse, so cases may override it
    code = main(argv + extra)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("metaal: error: ") and expect in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


@pytest.mark.slow
def test_bad_input_through_the_real_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "metaal.cli", "compare", "--data", "sklearn:wine", "--strategies", "nope",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("metaal: error: unknown strategy 'nope'")


def test_runner_rejects_splits_for_two_datasets() -> None:
    wine = load_dataset("sklearn:wine")
    with pytest.raises(ConfigError, match="exactly one dataset"):
        run_cells(["sklearn:wine", "sklearn:iris"], ["random"], budget=5, splits=[make_split(wine, 0, 6)])


def test_margin_beats_random_on_shared_banknote(shared) -> None:
    """The benchmark's finding in miniature (scripts/bench_heuristics.py runs the full one)."""
    ds = shared("banknote")
    rows = {r["strategy"]: r for r in summarize(run_cells([ds], ["random", "margin"], seeds=3, budget=30))}
    assert rows["margin"]["aulc_mean"] > rows["random"]["aulc_mean"] + 0.01
    assert rows["margin"]["mean_rank"] < rows["random"]["mean_rank"]
