"""Unlabeled data end to end: featurize a .txt / CSV column / image folder / .npz without y into an
.npz with no y, then `metaal label --classes ...` with an oracle, resume and export; bad inputs give
one-line errors. metaal.data.Dataset stays strict (always has labels)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from metaal.cli import main
from metaal.data import Dataset, load_npz
from metaal.errors import ConfigError, DataError
from metaal.featurize import RawData, load_npz_any, read_text_lines
from metaal.loop import ActiveLearner
from metaal.loop.session import run_oracle


def _sms_txt(shared, tmp_path, n=60):
    sms = shared("sms_spam")
    texts, y = sms.text[:n], sms.y[:n]
    path = tmp_path / "sms.txt"
    path.write_text("\n".join(str(t) for t in texts) + "\n", encoding="utf-8")
    np.save(tmp_path / "labels.npy", y)
    return path, texts, y


@pytest.mark.slow
def test_txt_featurize_label_resume_export(shared, tmp_path, capsys):
    txt, texts, y = _sms_txt(shared, tmp_path)
    assert 0 < y.sum() < len(y)  # both classes among the 60 messages
    feats = tmp_path / "feats.npz"
    assert main(["featurize", "--data", str(txt), "--no-progress", "--out", str(feats)]) == 0
    assert "unlabeled (no y)" in capsys.readouterr().out
    with np.load(feats) as z:
        assert "y" not in z.files and z["X"].shape == (60, 384) and list(z["text"]) == list(texts)
    with pytest.raises(DataError, match="no 'y'"):
        load_npz(feats)  # the strict labeled loader still refuses it

    store = tmp_path / "s.sqlite"
    oracle = str(tmp_path / "labels.npy")
    args = [
        "label",
        "--data",
        str(feats),
        "--classes",
        "ham,spam",
        "--store",
        str(store),
        "--seed",
        "1",
        "--oracle",
        oracle,
    ]
    assert main(args + ["--n", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 13 and out[0].startswith("labeled 1 ") and "counts=" in out[0] and " accuracy=" not in out[0]
    assert out[-1].startswith("done: 12 labels, counts=")

    # resume from the store alone: data, classes and seed come from it
    assert main(["label", "--store", str(store), "--oracle", oracle, "--n", "20"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 12 labels") and out[0].startswith("resumed") and len(out) == 1 + 8 + 1

    assert main(["label", "--store", str(store), "--export", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "labels.csv", encoding="utf-8")))
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    for r in rows:
        i = int(r["id"])
        assert int(r["label"]) == y[i] and r["class"] == ["ham", "spam"][y[i]] and r["text"] == texts[i]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_labeled"] == 20 and report["n_test"] == 0 and report["accuracy"] is None
    assert report["counts"]["spam"] == int(sum(y[int(r["id"])] for r in rows)) > 0
    est = report["estimate"]
    assert est["cv_folds"] >= 2 and 0.5 <= est["cv_accuracy"] <= 1 and 0.5 < est["mean_confidence"] <= 1

    # the same session from Python: every row in the pool, labels replayed, undo works
    al = ActiveLearner(feats, "margin", store=store, seed=1, classes=["ham", "spam"])
    assert al.resumed and al.n_labeled == 20 and len(al.pool_ids) == 60 and al.dataset.y is None
    assert isinstance(al.dataset, RawData) and al.dataset.text[0] == texts[0]
    last = al.store.labels()[-1][1]
    assert al.undo() == (last, ["ham", "spam"][y[last]]) and al.n_labeled == 19


def test_classes_errors_and_labeled_defaults(tmp_path, wine, capsys):
    X = wine.X[:40]
    RawData(X=X, name="w").save(tmp_path / "u.npz")
    with np.load(tmp_path / "u.npz") as z:
        assert sorted(z.files) == ["X"]
    # no y and no --classes: one clear line
    assert main(["label", "--data", str(tmp_path / "u.npz"), "--oracle", "x.npy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no labels (no 'y') and no class names: give --classes" in err[0]
    for bad in ("a", "a,,b", "a,a"):
        with pytest.raises(ConfigError, match="at least two distinct"):
            main_raise(["label", "--data", str(tmp_path / "u.npz"), "--classes", bad, "--oracle", "x.npy"])
    with pytest.raises(ConfigError, match="--oracle y needs a dataset with labels"):
        main_raise(["label", "--data", str(tmp_path / "u.npz"), "--classes", "a,b", "--oracle", "y"])
    # an unlabeled file that names its classes needs no --classes
    RawData(X=X, name="w", classes=np.array(["p", "q", "r"])).save(tmp_path / "c.npz")
    al = ActiveLearner(tmp_path / "c.npz")
    assert list(al.classes) == ["p", "q", "r"] and len(al.test_ids) == 0
    run_oracle(al, wine.y[:40], 8)
    assert al.progress()["counts"] == {
        c: int(v) for c, v in zip("pqr", np.bincount(wine.y[[i for _, i, _, _ in al.store.labels()]], minlength=3))
    }

    # a labeled file: classes default to its own; --classes must agree
    wine.save(tmp_path / "wine.npz")
    assert main(["label", "--data", str(tmp_path / "wine.npz"), "--oracle", "y", "--n", "3"]) == 0
    assert " accuracy=" in capsys.readouterr().out
    ok = ",".join(wine.classes)
    assert main(["label", "--data", str(tmp_path / "wine.npz"), "--classes", ok, "--oracle", "y", "--n", "3"]) == 0
    capsys.readouterr()
    assert main(["label", "--data", str(tmp_path / "wine.npz"), "--classes", "a,b,c", "--oracle", "y"]) == 2
    err = capsys.readouterr().err
    assert f"--classes a,b,c disagrees with the classes of {tmp_path / 'wine.npz'}: {ok}" in err
    # a resumed store refuses other classes
    s = tmp_path / "u.sqlite"
    np.save(tmp_path / "o.npy", (wine.y[:40] > 0).astype(int))
    on_store = ["label", "--data", str(tmp_path / "u.npz"), "--store", str(s), "--oracle", str(tmp_path / "o.npy")]
    assert main([*on_store, "--classes", "a,b", "--n", "4"]) == 0
    capsys.readouterr()
    assert main([*on_store, "--classes", "b,a"]) == 2
    assert "its classes is" in capsys.readouterr().err


def main_raise(argv: list[str]) -> int:
    """Run a sub-command without the CLI's error printing, so the exception reaches the test."""
    from metaal.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_empty_line_and_bad_text_inputs(tmp_path, capsys):
    p = tmp_path / "notes.txt"
    p.write_text("first note\nsecond note\n   \nfourth\n\n", encoding="utf-8")
    assert main(["featurize", "--data", str(p), "--out", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"metaal: error: {p}: line 3 is empty; every line must hold one document"]
    assert not (tmp_path / "f.npz").exists()
    p.write_text("a\n\nb\n\nc\r\nd\n\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is empty \\(2 empty lines in all\\)"):
        read_text_lines(p)
    p.write_text("a\r\nb\r\n\r\n", encoding="utf-8")  # CRLF and trailing blank lines are fine
    assert list(read_text_lines(p).text) == ["a", "b"]
    c = tmp_path / "t.csv"
    c.write_text('id,body\n1,"hello, world"\n2,"multi\nline"\n3,\n', encoding="utf-8")
    with pytest.raises(DataError, match="t.csv: line 5 is empty"):
        main_raise(["featurize", "--data", str(c), "--text-column", "body", "--out", str(tmp_path / "x.npz")])
    with pytest.raises(DataError, match="no column named 'text' \\(columns: id, body\\)"):
        main_raise(["featurize", "--data", str(c), "--text-column", "text", "--out", str(tmp_path / "x.npz")])
    with pytest.raises(ConfigError, match="give --text-column"):
        main_raise(["featurize", "--data", str(c), "--out", str(tmp_path / "x.npz")])


def test_csv_column_image_folder_and_npz_without_y(tmp_path, capsys):
    from PIL import Image

    # CSV text column, with precomputed features attached (no model needed)
    c = tmp_path / "t.csv"
    c.write_text('id,body\n1,"hello, world"\n2,"multi\nline"\n3,last one\n', encoding="utf-8")
    np.save(tmp_path / "f3.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    out = tmp_path / "t_feats.npz"
    assert (
        main(
            [
                "featurize",
                "--data",
                str(c),
                "--text-column",
                "body",
                "--features",
                str(tmp_path / "f3.npy"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    back = load_npz_any(out)
    assert (
        isinstance(back, RawData) and back.y is None and list(back.text) == ["hello, world", "multi\nline", "last one"]
    )
    assert back.X.shape == (3, 2)

    # a folder of unlabeled images (no class sub-folders)
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    out = tmp_path / "photos.npz"
    assert main(["featurize", "--data", str(d), "--model", "pixels", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    with np.load(out) as z:
        assert "y" not in z.files and z["X"].shape == (6, 360) and z["images"].shape == (6, 12, 10, 3)
        assert list(z["filename"]) == [f"img{i}.png" for i in range(6)]
        np.testing.assert_allclose(z["X"][2], z["images"][2].reshape(-1) / 255.0, atol=1e-6)
    (d / "broken.png").write_bytes(b"\x89PNG garbage")
    assert main(["featurize", "--data", str(d), "--model", "pixels", "--out", str(out)]) == 2
    assert "broken.png: cannot decode as an image" in capsys.readouterr().err

    # an .npz with raw images and no y, subsampled with --limit; classes ride along
    np.savez(
        tmp_path / "raw.npz", images=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), classes=np.array(["x", "y"])
    )
    out = tmp_path / "raw_feats.npz"
    assert (
        main(
            ["featurize", "--data", str(tmp_path / "raw.npz"), "--model", "pixels", "--limit", "10", "--out", str(out)]
        )
        == 0
    )
    assert "unlabeled (no y), classes x,y" in capsys.readouterr().out
    back = load_npz_any(out)
    assert back.X.shape == (10, 64) and list(back.classes) == ["x", "y"]
    assert len(set(back.extras["source_row"])) == 10 and back.extras["source_row"].max() < 20
    al = ActiveLearner(out, "entropy", seed=0)  # classes from the file
    assert al.query(1)[0].guess in ("x", "y")

    # Dataset stays strict: no -1 labels
    with pytest.raises(DataError, match="labels must be 0..K-1"):
        Dataset(X=np.zeros((2, 1)), y=np.array([-1, 0]), classes=["a", "b"])
