"""The layer order of DESIGN.md, checked on the source: every metaal module imports, and no module
imports one of a higher layer (with ``ast``, over module-level and function-level ``import``
statements and ``importlib.import_module("...")`` calls), no module of ``metaal.envs`` imports
Stable-Baselines3, and the imports among metaal's modules form no cycle.

Layers, lowest first (a module may import its own layer and the ones below)::

    errors -> dataset, data, synthetic, featurize, store -> learners, torch_learners -> scores, geometry, stopping
    -> state -> observe, stream -> strategies -> loop -> envs -> agents -> experiments, configs
    -> cli, label_cli, featurize_cli, labelstudio
"""
from __future__ import annotations

import ast
import importlib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> package name (pyproject's package-dir)
PACKAGES = {"metaal": "metaal", "envs": "metaal.envs", "agents": "metaal.agents", "configs": "metaal.configs"}

LAYERS: list[tuple[str, ...]] = [
    ("metaal", "metaal.errors"),
    ("metaal.dataset", "metaal.data", "metaal.synthetic", "metaal.featurize", "metaal.store", "metaal.protocols"),
    ("metaal.learners", "metaal.torch_learners"),
    ("metaal.scores", "metaal.geometry", "metaal.stopping"),
    ("metaal.state",),
    ("metaal.observe", "metaal.stream"),
    ("metaal.strategies",),
    ("metaal.loop",),
    ("metaal.envs",),
    ("metaal.agents",),
    ("metaal.experiments", "metaal.configs"),
    ("metaal.cli", "metaal.label_cli", "metaal.featurize_cli", "metaal.labelstudio"),
]
SB3 = ("stable_baselines3", "sb3_contrib")
#: the package root re-exports the labeling session on first access (PEP 562), never at import
LAZY_REEXPORTS: dict[str, set[str]] = {"metaal": {"metaal.loop.session", "metaal.loop.stream_session"}}

def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1][: -len(".py")]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    out = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _resolve(name: str, level: int, importer: str) -> str:
    if not level:
        return name
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


@lru_cache(maxsize=None)
def imports_of(name: str) -> frozenset[str]:
    """Every module that ``name`` imports anywhere in its source (top level and functions):
    metaal modules by their full name, others by their top-level package."""
    tree = ast.parse(modules()[name].read_text(), str(modules()[name]))
    found: set[str] = set()

    def add(target: str) -> None:
        if target.split(".")[0] != "metaal":
            found.add(target.split(".")[0])
            return
        while target and target not in modules():  # an attribute of a module: the module
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name)
            add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules():
                    add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Call):  # importlib.import_module("metaal.x") counts too
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                add(node.args[0].value)
    found.discard(name)
    return frozenset(found)


def layer(name: str) -> int:
    best, rank = "", -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, i
    assert rank >= 0, f"{name} is in no layer of tests/test_layers.py: add it"
    return rank


def test_the_analysis_sees_imports():
    """The parser finds what is there (so that the checks below could fail)."""
    assert "metaal.strategies.base" in imports_of("metaal.strategies")
    assert "metaal.agents.policy_file" in imports_of("metaal.agents.learned")
    assert "numpy" in imports_of("metaal.data")
    assert layer("metaal.strategies.margin_like") == layer("metaal.strategies")
    assert layer("metaal.label_cli") > layer("metaal.loop.session") > layer("metaal.state")


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional extra (ray, skactiveml, ...)
        if (exc.name or "").split(".")[0] == "metaal":
            raise
        pytest.skip(f"{name} needs {exc.name}, not installed")


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_imports_a_higher_layer(name):
    mine = layer(name)
    allowed = LAZY_REEXPORTS.get(name, set())
    up = sorted(t for t in imports_of(name) if t.startswith("metaal") and layer(t) > mine and t not in allowed)
    assert not up, f"{name} (layer {mine}) imports higher layers: {', '.join(up)}"


def test_the_named_rules_of_design_md():
    """The examples DESIGN.md names: data knows no learner, strategies know no env or agent,
    state and observe know no strategy."""
    for name in modules():
        imp = imports_of(name)
        if name in ("metaal.data", "metaal.dataset", "metaal.synthetic"):
            assert not {"metaal.learners", "metaal.torch_learners"} & imp, name
        if name.startswith("metaal.strategies"):
            assert not any(t.startswith(("metaal.envs", "metaal.agents")) for t in imp), name
        if name in ("metaal.state", "metaal.observe"):
            assert not any(t.startswith("metaal.strategies") for t in imp), name


@pytest.mark.parametrize("name", [n for n in sorted(modules()) if n.startswith("metaal.envs")])
def test_envs_know_no_sb3_and_no_agents(name):
    imp = imports_of(name)
    assert not [t for t in imp if t in SB3], f"{name} imports Stable-Baselines3"
    assert not [t for t in imp if t.startswith("metaal.agents")], f"{name} imports metaal.agents"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), edges to a module's own
    parent package left out (a submodule imported by its package's __init__ may use the
    package's lower submodules through it)."""
    graph = {n: sorted(t for t in imports_of(n) if t in modules() and not n.startswith(t + ".")) for n in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in graph:
        if n not in index:
            visit(n)
    return out


def test_no_import_cycle():
    assert _cycles() == []


@pytest.mark.slow
def test_the_command_line_and_the_loop_import_no_torch_and_no_agent_library():
    """``metaal --help`` and the simulation loop stay light: torch and SB3 load only where a
    model or the batched env is built (a fresh interpreter, so that nothing is imported yet)."""
    import subprocess
    import sys

    code = (
        "import sys, metaal.cli, metaal.loop, metaal.observe; "
        "heavy = [m for m in ('torch', 'stable_baselines3', 'sb3_contrib') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
