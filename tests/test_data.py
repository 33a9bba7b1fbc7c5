"""Data layer: loaders, lookup along METAAL_DATA, splits and clear errors on bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metaal.data import (
    Dataset,
    choose_initial,
    load_csv,
    load_dataset,
    load_libsvm,
    load_splits,
    make_split,
    save_splits,
)
from metaal.errors import DataError


def test_shared_npz_by_name(shared):
    d = shared("banknote")
    assert d.X.dtype == np.float32 and d.X.shape == (1372, 4)
    assert d.n_classes == 2 and set(np.unique(d.y)) == {0, 1}


def test_text_npz_loads_without_features(shared):
    d = shared("sms_spam")
    assert d.X is None and d.text is not None and len(d.text) == d.n
    with pytest.raises(DataError, match="featurize"):
        d.require_features()


def test_sklearn_names():
    assert load_dataset("sklearn:wine").n_classes == 3
    assert load_dataset("iris").n == 150  # bare scikit-learn name when nothing shadows it


def test_default_split_protocol(wine):
    from sklearn.model_selection import train_test_split

    s = make_split(wine, seed=3, n_initial=6)
    pool, test = train_test_split(np.arange(wine.n), test_size=0.3, stratify=wine.y, random_state=3)
    assert np.array_equal(s.pool, pool) and np.array_equal(s.test, test)
    assert len(s.initial) == 6 and np.isin(s.initial, s.pool).all()
    assert len(np.unique(wine.y[s.initial])) >= 2
    assert np.array_equal(make_split(wine, 3, 6).initial, s.initial)  # reproducible


def test_initial_set_always_two_classes():
    y = np.array([0] * 98 + [1] * 2)
    for seed in range(30):
        idx = choose_initial(y, 2, np.random.default_rng(seed))
        assert set(y[idx]) == {0, 1}


def test_splits_json_round_trip(tmp_path, wine):
    splits = [make_split(wine, s, 5) for s in range(3)]
    p = save_splits(tmp_path / "s.json", "wine", splits)
    name, back = load_splits(p, wine)
    assert name == "wine" and len(back) == 3
    assert all(np.array_equal(a.initial, b.initial) for a, b in zip(splits, back))
    bad = json.loads(p.read_text())
    bad["splits"][0]["initial"] = [int(bad["splits"][0]["test"][0])]
    p.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="subset of 'pool'"):
        load_splits(p, wine)


def test_csv_and_libsvm(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,yes\n3,4,no\n5,6,yes\n")
    d = load_csv(p)
    assert d.X.shape == (3, 2) and list(d.classes) == ["no", "yes"] and list(d.y) == [1, 0, 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,yes\n3,hello,no\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'hello' is not a number"):
        load_csv(bad)
    lib = tmp_path / "d.libsvm"
    lib.write_text("1 1:0.5 3:1\n-1 2:1\n1 1:0.1\n")
    d = load_libsvm(lib)
    assert d.X.shape == (3, 3) and list(d.y) == [1, 0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(X=np.array([[1.0, np.nan], [0, 1]]), y=[0, 1]), "NaN or inf in 1 row"),
        (dict(X=np.ones((3, 2)), y=[0, 1]), "lengths must match"),
        (dict(X=np.ones(3), y=[0, 1, 1]), "must be 2-D"),
        (dict(X=np.ones((2, 2)), y=[0, -1]), "0..K-1"),
        (dict(X=np.ones((2, 2)), y=[0.5, 1.0]), "integers"),
    ],
)
def test_bad_arrays_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        Dataset(classes=None, **kwargs)


def test_one_class_and_unknown_name(tmp_path):
    d = Dataset(X=np.ones((20, 2)), y=np.zeros(20, dtype=int), classes=None, name="mono")
    with pytest.raises(DataError, match="only one class"):
        make_split(d, 0)
    with pytest.raises(DataError, match="not found"):
        load_dataset("no_such_dataset_anywhere")
    np.savez(tmp_path / "x.npz", X=np.ones((3, 2)))
    with pytest.raises(DataError, match="no 'y' array"):
        load_dataset(tmp_path / "x.npz")


def test_npz_string_labels_are_mapped_like_csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((12, 3))
    labels = np.array(["spam", "ham", "eggs"] * 4)
    np.savez(tmp_path / "s.npz", X=X, y=labels)
    with open(tmp_path / "s.csv", "w") as fh:
        fh.write("a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{lab}\n" for r, lab in zip(X, labels)))
    npz, csv_ = load_dataset(tmp_path / "s.npz"), load_dataset(tmp_path / "s.csv")
    assert list(npz.classes) == list(csv_.classes) == ["eggs", "ham", "spam"]
    assert npz.y.tolist() == csv_.y.tolist()
    assert [npz.classes[i] for i in npz.y] == labels.tolist()
    # with the file's own class list, its order wins; a label outside it is one clear error
    np.savez(tmp_path / "c.npz", X=X, y=labels, classes=np.array(["spam", "ham", "eggs"]))
    c = load_dataset(tmp_path / "c.npz")
    assert [c.classes[i] for i in c.y] == labels.tolist() and list(c.classes) == ["spam", "ham", "eggs"]
    np.savez(tmp_path / "d.npz", X=X, y=labels, classes=np.array(["spam", "ham"]))
    with pytest.raises(DataError, match="eggs"):
        load_dataset(tmp_path / "d.npz")
