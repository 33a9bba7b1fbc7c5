"""The bad inputs a new user hit (issue 14, item 5): each is one line ``metaal: error: ...`` and exit
status 2, or a loud fallback that every output names; nothing already labeled is lost."""
from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaal.cli import main

SMALL = ["--budget", "4", "--initial", "6", "--seeds", "2", "--no-progress", "--no-plot"]


def _csv_column(path: Path, column: str) -> set[str]:
    with open(path, newline="") as fh:
        return {row[column] for row in csv.DictReader(fh)}


def _truncated_policy(tmp_path: Path) -> Path:
    """A policy zip cut short (as a failed download leaves it), with no metadata beside it."""
    from metaal.agents.policy_file import resolve_policy_path

    bad = tmp_path / "bad.zip"
    bad.write_bytes(resolve_policy_path("default").read_bytes()[:3000])
    return bad


# ----------------------------------------------------------------------------------------------
# 1. a corrupt policy: a loud fallback, named in every output, warned once


def test_corrupt_policy_fallback_is_named_everywhere_and_warned_once(tmp_path: Path, capfd) -> None:
    bad = _truncated_policy(tmp_path)
    out = tmp_path / "out"
    code = main(["compare", "--data", "sklearn:iris", "--strategies", f"margin,policy:{bad}", *SMALL,
                 "--jobs", "2", "--out", str(out)])
    captured = capfd.readouterr()
    assert code == 0
    name = f"policy:{bad}(fallback=margin)"
    assert _csv_column(out / "summary.csv", "strategy") == {"margin", name}
    assert _csv_column(out / "curves.csv", "strategy") == {"margin", name}
    summary = json.loads((out / "summary.json").read_text())
    assert name in json.dumps(summary)
    assert f"policy:{bad} " not in json.dumps(summary) and f"policy:{bad}\"" not in json.dumps(summary)
    assert name in captured.out  # the printed table's row
    lines = [ln for ln in captured.err.splitlines() if "bad.zip" in ln]
    assert len(lines) == 1, captured.err  # once, not once per worker
    assert lines[0].startswith("metaal: warning: ")
    assert "not a zip" in lines[0] and "metadata" not in lines[0], lines[0]
    assert "fallback=margin" in lines[0] or "'margin'" in lines[0]


def test_corrupt_policy_message_says_what_is_wrong_with_the_zip(tmp_path: Path) -> None:
    from metaal.agents.policy_file import read_metadata
    from metaal.errors import PolicyError

    bad = _truncated_policy(tmp_path)
    with pytest.raises(PolicyError, match="not a zip archive"):
        read_metadata(bad)


# ----------------------------------------------------------------------------------------------
# 2. evaluate --policy missing: checked before any cell runs


def test_evaluate_missing_policy_fails_before_any_cell(tmp_path: Path, capsys, monkeypatch) -> None:
    import metaal.experiments.evaluate as ev

    def no_cells(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a cell ran before the policy was checked")

    monkeypatch.setattr(ev, "run_cells", no_cells)
    code = main(["evaluate", "--policy", str(tmp_path / "runs" / "missing"), "--data", "sklearn:wine",
                 "--seeds", "2", "--budgets", "5", "--no-progress", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("metaal: error: ") and "not found" in err[0], err


# ----------------------------------------------------------------------------------------------
# 3. absurd seeds: refused in under a second, naming the limit


def _limit_memory() -> None:  # the unfixed command eats gigabytes: keep it from taking the machine
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["compare", "evaluate"])
def test_absurd_seeds_are_refused_at_once(command: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "metaal.cli", command, "--data", "sklearn:wine", "--seeds", "1000000000",
            "--no-progress", "--out", str(tmp_path / "o")]
    argv += ["--strategies", "margin"] if command == "compare" else ["--budgets", "5"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("--seeds 1000000000 was not refused within 30 s")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metaal: error: --seeds"), proc.stderr[-2000:]
    assert "at most" in lines[0]


@pytest.mark.parametrize("command", ["compare", "evaluate"])
def test_absurd_seeds_in_process_take_under_a_second(command: str, tmp_path: Path, capsys) -> None:
    from metaal.experiments.runner import MAX_SEEDS

    argv = [command, "--data", "sklearn:wine", "--seeds", str(MAX_SEEDS + 1), "--no-progress",
            "--out", str(tmp_path / "o")]
    argv += ["--strategies", "margin"] if command == "compare" else ["--budgets", "5"]
    t0 = time.perf_counter()
    code = main(argv)
    assert time.perf_counter() - t0 < 1.0
    assert code == 2
    assert f"at most {MAX_SEEDS}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 4. metaal label: ports, a second server on the same store, --n


def _one_error_line(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metaal: error: "), err
    return err[0]


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_label_port_out_of_range_is_refused(port: str, tmp_path: Path, capsys) -> None:
    store = tmp_path / "s.sqlite"
    code = main(["label", "--data", "sklearn:wine", "--store", str(store), "--port", port])
    assert code == 2
    assert "--port" in _one_error_line(capsys)
    assert not store.exists()


def test_label_port_in_use_is_found_before_the_store_is_created(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        store = tmp_path / "s.sqlite"
        code = main(["label", "--data", "sklearn:wine", "--store", str(store), "--port", str(port)])
    assert code == 2
    assert "in use" in _one_error_line(capsys)
    assert not store.exists()


@pytest.mark.parametrize("n", ["-2", "0"])
def test_label_negative_n_is_refused(n: str, tmp_path: Path, capsys) -> None:
    store = tmp_path / "s.sqlite"
    code = main(["label", "--data", "sklearn:wine", "--store", str(store), "--oracle", "y", "--n", n])
    assert code == 2
    assert "--n" in _one_error_line(capsys)
    assert not store.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_second_server_on_the_same_store_is_refused(tmp_path: Path) -> None:
    import urllib.request

    store = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "metaal.cli", "label", "--data", "sklearn:wine", "--store", str(store)]
    port = _free_port()
    first = subprocess.Popen(cmd + ["--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/progress", timeout=1).read()
                break
            except OSError:
                assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else ""
                time.sleep(0.3)
        try:
            second = subprocess.run(cmd + ["--port", str(_free_port())], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("a second server on the same store was started")
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("metaal: error: ") and "in use" in lines[0], second.stderr
        assert first.poll() is None  # the first one still serves
    finally:
        first.terminate()
        first.wait(timeout=30)


# ----------------------------------------------------------------------------------------------
# 7. metaal label ... | head: a closed pipe ends quietly, the labels are kept


@pytest.mark.slow
def test_label_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaal.cli", "label", "--data", "sklearn:wine", "--store", str(store),
         "--oracle", "y", "--n", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert first.startswith("labeled ")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code != 0 or err == ""
    from metaal.store import Store

    with Store(store) as s:  # what was labeled before the pipe closed is in the store
        assert s.n_labels >= 1


# ----------------------------------------------------------------------------------------------
# 5. help, usage, --jobs -1, string labels in an .npz


def _sub(name: str):  # noqa: ANN202
    import argparse

    from metaal.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_compare_help_lists_torch_logreg_and_synth_specs() -> None:
    text = _sub("compare").format_help()
    assert "torch_logreg" in text and "synth:" in text


@pytest.mark.parametrize("command", ["label", "featurize"])
def test_label_and_featurize_help_show_defaults_and_every_option_has_help(command: str) -> None:
    p = _sub(command)
    text = p.format_help()
    for action in p._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings[0]} has no help"
    assert "default: " in text
    if command == "label":
        assert "8765" in text and "127.0.0.1" in text


def test_unknown_flag_prints_the_subcommand_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--data", "sklearn:wine", "--strategies", "margin", "--out", "o", "--nope"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("usage: metaal compare") and "--nope" in err, err


def test_jobs_minus_one_means_all_cores(tmp_path: Path, capsys) -> None:
    code = main(["compare", "--data", "sklearn:iris", "--strategies", "margin", "--budget", "3", "--initial", "6",
                 "--seeds", "1", "--jobs", "-1", "--no-progress", "--no-plot", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())
    code = main(["compare", "--data", "sklearn:iris", "--strategies", "margin", "--jobs", "-3",
                 "--out", str(tmp_path / "o2")])
    assert code == 2 and "-1 for all cores" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 6. the export: source_row and ISO times


def test_export_carries_source_row_and_iso_times(tmp_path: Path, capsys) -> None:
    import datetime as dt

    import numpy as np

    from metaal.data import load_dataset

    wine = load_dataset("sklearn:wine")
    rows = np.arange(wine.n) * 3 + 7  # the rows of the file the features came from
    np.savez(tmp_path / "feats.npz", X=wine.X, y=wine.y, classes=wine.classes, source_row=rows)
    out = tmp_path / "exp"
    code = main(["label", "--data", str(tmp_path / "feats.npz"), "--store", str(tmp_path / "s.sqlite"),
                 "--oracle", "y", "--n", "12", "--export", str(out)])
    assert code == 0, capsys.readouterr().err
    with open(out / "labels.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    assert records and all(int(r["source_row"]) == rows[int(r["id"])] for r in records)
    for r in records:
        assert dt.datetime.fromisoformat(r["time"]).tzinfo is not None, r["time"]
    first = json.loads((out / "labels.jsonl").read_text().splitlines()[0])
    assert first["source_row"] == int(rows[first["id"]])
