"""The Python API in modAL's habits (``ActiveLearner(X_pool=...)``) on the labeling session, user
strategies (a function, ``module:Class``, ``path.py:Class``) and the README example, executed."""
from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from metaal import ActiveLearner
from metaal.cli import main
from metaal.errors import ConfigError, DataError, LabelError
from metaal.store import Store
from metaal.strategies import FunctionStrategy, Strategy, get

ROOT = Path(__file__).resolve().parent.parent
NAMES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def least_confident(estimator, X):
    """A module-level function strategy (pickles, so save/load keeps it)."""
    return 1.0 - estimator.predict_proba(X).max(axis=1)


def run(learner, y, rounds=4, n=3, names=True):
    for _ in range(rounds):
        idx = learner.query(n)
        assert isinstance(idx, np.ndarray) and idx.dtype.kind == "i" and len(idx) == n
        learner.teach(idx, NAMES[y[idx]] if names else y[idx])


def test_query_teach_with_names_grows_classes_and_predicts(iris):
    X, y = iris
    al = ActiveLearner(estimator=LogisticRegression(max_iter=1000), X_pool=X, random_state=0)
    assert len(al.classes) == 0
    run(al, y, rounds=5)
    # classes in the order they were first taught; indices of earlier labels never change
    assert sorted(al.classes.tolist()) == sorted(NAMES.tolist())
    assert al.predict_proba(X).shape == (150, 3)
    assert set(al.predict(X[:10])) <= set(NAMES)
    assert al.score(X, NAMES[y]) > 0.6
    assert al.store.meta["classes"] == al.classes.tolist()


def test_teach_with_integers_and_fixed_classes(iris):
    X, y = iris
    al = ActiveLearner(X_pool=X, classes=list(NAMES), strategy="margin", random_state=1)
    run(al, y, names=False)  # integers are class indices when classes are given
    assert al.n_labeled == 12 and al.classes.tolist() == NAMES.tolist()
    ints = ActiveLearner(X_pool=X, random_state=1)  # integer labels without classes: their values
    run(ints, y, names=False)
    assert al.score(X, y) == pytest.approx(al.score(X, NAMES[y]))
    assert ints.predict(X[:5]).dtype.kind == "i"


def test_function_strategy_and_wrong_shape(iris):
    X, y = iris
    al = ActiveLearner(X_pool=X, strategy=least_confident, random_state=0)
    assert isinstance(al.strategy, FunctionStrategy) and al.strategy_name.startswith("function:")
    run(al, y)
    st = al.state
    expected = np.argmax(least_confident(al.estimator, st.X_pool[st.unlabeled_idx]))
    assert al.query(1)[0] == st.unlabeled_idx[expected]

    bad = ActiveLearner(X_pool=X, strategy=lambda est, X: np.zeros(3), random_state=0)
    with pytest.raises(ConfigError, match=r"shape \(3,\).*one score per unlabeled row"):
        run(bad, y)


def test_dataframe_input_and_a_text_column(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    al = ActiveLearner(X_pool=df, random_state=0)
    run(al, y, rounds=3)
    assert np.allclose(al.predict_proba(df.iloc[:4]), al.predict_proba(X[:4]))
    df["note"] = "x"
    with pytest.raises(DataError, match=r"column\(s\) 'note' are not numeric"):
        ActiveLearner(X_pool=df)


def test_bad_inputs_one_clear_error(iris):
    X, y = iris
    al = ActiveLearner(X_pool=X, classes=["ham", "spam"], random_state=0)
    idx = al.query(2)
    with pytest.raises(LabelError, match=r"unknown class 'eggs' \(classes: ham, spam\)"):
        al.teach(idx, ["ham", "eggs"])
    assert al.n_labeled == 0  # nothing stored
    with pytest.raises(ConfigError, match="not both"):
        ActiveLearner("sklearn:wine", X_pool=X)
    with pytest.raises(ConfigError, match="give data="):
        ActiveLearner()
    grow = ActiveLearner(X_pool=X, random_state=0)
    with pytest.raises(LabelError, match="not in the pool"):
        grow.teach([10_000], ["a"])
    assert grow.classes.tolist() == [] and grow.n_labeled == 0  # a refused answer adds no class


def test_save_load_round_trip_continues_the_same_queries(iris, tmp_path):
    X, y = iris
    al = ActiveLearner(X_pool=X, strategy=least_confident, random_state=3)
    run(al, y)
    path = al.save(tmp_path / "s.sqlite")
    back = ActiveLearner.load(path)
    assert back.api and back.classes.tolist() == al.classes.tolist() and back.n_labeled == al.n_labeled
    for _ in range(3):
        a, b = al.query(2), back.query(2)
        assert a.tolist() == b.tolist()
        al.teach(a, NAMES[y[a]])
        back.teach(b, NAMES[y[b]])
    assert np.allclose(al.predict_proba(X), back.predict_proba(X))

    lam = ActiveLearner(X_pool=X, strategy=lambda est, X: -X[:, 0], random_state=0)
    run(lam, y, rounds=2)
    lam.save(tmp_path / "lam.sqlite")
    with pytest.raises(ConfigError, match="give it again"):
        ActiveLearner.load(tmp_path / "lam.sqlite")
    assert ActiveLearner.load(tmp_path / "lam.sqlite", strategy=lam.strategy).n_labeled == 6


STRATEGY_FILE = '''
import numpy as np
from metaal.strategies import Strategy


class FirstFeature(Strategy):
    name = "first_feature"

    def score(self, state):
        return state.X_pool[state.unlabeled_idx, 0]


class NotOne:
    pass
'''


def test_module_and_file_strategies(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_strats.py").write_text(textwrap.dedent(STRATEGY_FILE))
    by_file = get(f"{tmp_path / 'my_strats.py'}:FirstFeature")
    assert isinstance(by_file, Strategy) and by_file.name == "first_feature"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(get("my_strats:FirstFeature")).__name__ == "FirstFeature"
    for spec, msg in [("my_strats:NotOne", "not a subclass of metaal.strategies.Strategy"),
                      ("my_strats:Missing", "has no 'Missing'"),
                      ("no_such_module_xyz:Cls", "unknown strategy prefix 'no_such_module_xyz'.*no module"),
                      (f"{tmp_path / 'nope.py'}:Cls", "does not exist")]:
        with pytest.raises(ConfigError, match=msg):
            get(spec)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "sklearn:wine", "--strategies", "margin,my_strats.py:FirstFeature",
                 "--budget", "4", "--seeds", "1", "--jobs", "1", "--no-progress", "--no-plot", "--out", str(out)]) == 0
    assert "my_strats.py:FirstFeature" in (out / "summary.csv").read_text()
    store = tmp_path / "l.sqlite"
    assert main(["label", "--data", "sklearn:wine", "--strategy", "my_strats:FirstFeature", "--oracle", "y",
                 "--n", "8", "--store", str(store)]) == 0
    with Store(store) as st:
        assert st.meta["strategy"] == "my_strats:FirstFeature"
        assert any(q["reason"] == "my_strats:FirstFeature" for q in st.queries())
    assert main(["compare", "--data", "sklearn:wine", "--strategies", "my_strats:NotOne", "--out", str(out)]) == 2
    assert "not a subclass" in capsys.readouterr().err


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The README's "In Python, in modAL's habits" block, executed as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-example:api -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its <!-- readme-example:api --> block"
    code = m.group(1)
    assert "RandomForestClassifier()" in code and 'strategy="policy:default"' in code and "pd.DataFrame" in code
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "session.sqlite").is_file()


def test_label_session_keeps_query_items(iris):
    """A session built with data= keeps QueryItems (metaal label's habit)."""
    al = ActiveLearner("sklearn:wine", seed=0, initial=4)
    items = al.query(2)
    assert not al.api and items and hasattr(items[0], "reason")
    assert al.query_idx(2).tolist() == [it.id for it in items]
    assert sys.modules["metaal.loop.session"].QueryItem is type(items[0])
