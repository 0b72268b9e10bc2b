"""The package's shape: the installed wheel works, the layers hold (import-linter), no import cycles, no lazy imports.

The wheel is built and installed into a temporary folder once; the checks run
there, in fresh processes, because only the installed layout puts the
project's top-level ``envs/`` and ``agents/`` folders inside ``adc`` where
import-linter can see them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_LAZY = {"ray", "onnxruntime", "onnx", "torchvision", "torch.utils.tensorboard", "sklearn", "optuna", "cma",
                "tensorboard", "onnxscript"}
"""Heavy optional dependencies, the only modules a function may import lazily."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """adc built as a wheel and installed (without dependencies) into a temporary folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("adc-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


def run_installed(site: Path, *args: str) -> subprocess.CompletedProcess:
    """Run in a fresh process that sees the installed copy of adc first, from a folder without the checkout."""
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=site.parent, timeout=600)


def test_the_wheel_installs_envs_and_agents_inside_adc(installed: Path) -> None:
    assert (installed / "adc" / "envs" / "pruning_env.py").is_file()
    assert (installed / "adc" / "agents" / "ddpg.py").is_file()
    assert not (installed / "envs").exists() and not (installed / "agents").exists()  # no generic top-level names
    code = ("import adc, adc.envs, adc.agents, gymnasium; "
            "assert adc.envs.__file__.startswith(%r); "
            "print(sorted(adc.agents.AGENTS.names())); print(gymnasium.spec('adc/Prune-v0').entry_point)") % str(installed)
    result = run_installed(installed, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ddpg" in result.stdout and "adc.envs.pruning_env:PruningEnv" in result.stdout


def test_import_linter_layers_hold(installed: Path) -> None:
    config = str(ROOT / "pyproject.toml")
    result = run_installed(installed, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           f"sys.argv = ['lint-imports', '--config', {config!r}]; sys.exit(lint_imports_command())")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_no_import_cycles(installed: Path) -> None:
    code = '''
import grimp
graph = grimp.build_graph("adc")
modules = sorted(graph.modules)
index = {m: i for i, m in enumerate(modules)}
edges = {m: [n for n in graph.find_modules_directly_imported_by(m) if n in index] for m in modules}
sys_limit = __import__("sys").setrecursionlimit(10000)
order, low, stack, on, cycles = {}, {}, [], set(), []
def visit(v):
    order[v] = low[v] = len(order); stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in order:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], order[w])
    if low[v] == order[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: cycles.append(sorted(comp))
for m in modules:
    if m not in order: visit(m)
print(len(modules), "modules;", cycles)
'''
    result = run_installed(installed, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("modules; []"), result.stdout


def test_adc_imports_only_at_module_level() -> None:
    """A lazy import hides a cycle or a layer reaching up; only heavy optional dependencies may be lazy."""
    offenders = []
    for folder in ("adc", "envs", "agents"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
                for node in ast.walk(func):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names = [node.module]
                    for name in names:
                        if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_LAZY):
                            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders


def test_importing_adc_is_cheap_and_loads_no_search() -> None:
    code = "import sys, adc; print(sorted(m for m in sys.modules if m.startswith('adc')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "['adc']", result.stdout
