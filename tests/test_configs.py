"""Training configs are found from the installed package (metaal.configs), not only from a
checkout: ``metaal train --config default`` and ``split_file: configs/meta_split.yaml`` resolve
through importlib.resources when no such path exists."""
from __future__ import annotations

from importlib import resources

import pytest

from metaal.agents.train import config_path, load_config, read_split
from metaal.errors import ConfigError


def test_shipped_configs_are_package_data():
    names = {f.name for f in resources.files("metaal.configs").iterdir()}
    assert {"default.yaml", "meta_split.yaml"} <= names


@pytest.mark.parametrize("spec", ["default", "default.yaml", "configs/default.yaml"])
def test_config_names_resolve_outside_the_checkout(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    p = config_path(spec)
    assert p.name == "default.yaml" and "imitation" in p.read_text()
    cfg = load_config(spec)  # its split_file: configs/meta_split.yaml resolves the same way
    assert cfg["name"] == "default" and cfg["datasets"]["train_names"]
    assert set(read_split()) >= {"meta_train", "validation", "meta_test"}


def test_an_existing_path_wins_and_unknown_names_are_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "default.yaml"
    own.write_text("name: mine\n")
    assert config_path("default.yaml").resolve() == own
    with pytest.raises(ConfigError, match=r"config nope.yaml not found .*default"):
        config_path("nope.yaml")
    with pytest.raises(ConfigError, match="not found"):
        config_path(tmp_path / "elsewhere" / "default.yaml")  # a path with a folder is never a shipped name


def test_one_time_estimate_for_the_default_config_and_tiny_is_mentioned():
    """README, docs/agents.md and configs/default.yaml give the same duration for the default run
    (the one measured in docs/agents.md) and point to configs/tiny.yaml for a first try."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    figure = "about 12 minutes on 2 quiet CPU cores"
    for rel in ("README.md", "docs/agents.md", "configs/default.yaml"):
        text = (root / rel).read_text()
        assert figure in text, rel
        assert "tiny" in text, rel
        for other in ("12-35 min", "30-35 min", "about 35 minutes"):
            assert other not in text, (rel, other)
    assert load_config("tiny")["name"] == "tiny"
