"""The shape of the code base, as CI enforces it (issue 20): benchmarks/ is layered without an
import cycle, imports its own modules at the top, shares no private names between modules and
takes nothing from tests/ (what both need is :mod:`timewheel.testing`, which timewheel's
runtime never imports); a measurement process loads no system's library until it opens one.

Static checks on the source (``ast``) but one, which imports the measurement processes' entry
point in a fresh interpreter.
"""

from __future__ import annotations

import ast
import graphlib
import os
import re
import sys
from pathlib import Path

import pytest

from timewheel.testing import processes as procs

from .conftest import ROOT

BENCHMARKS = Path(ROOT) / "benchmarks"
MODULES = sorted(BENCHMARKS.glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _relative_imports(path: Path) -> set[str]:
    """The benchmarks modules ``path`` imports (``from .x import ...``, ``from . import x``)."""
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return out


def test_benchmarks_are_found() -> None:
    names = {p.stem for p in MODULES}
    assert {"cli", "child", "harness", "stats", "report", "suite", "workloads"} <= names, names


def test_benchmarks_import_one_another_without_a_cycle() -> None:
    graph = {p.stem: _relative_imports(p) for p in MODULES}
    order = list(graphlib.TopologicalSorter(graph).static_order())     # CycleError if there is one
    assert {"harness", "stats", "tasks"} <= set(order)
    # the shared types and statistics are leaves: they name no workload
    for leaf in ("harness", "tasks"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    assert graph["stats"] <= {"harness"}, graph["stats"]


def test_benchmarks_import_their_own_modules_at_the_top() -> None:
    # the check of issue 20, as `grep -nE '^\s+from \.' benchmarks/*.py` would run it
    indented = [f"{p.name}:{n}: {line.strip()}" for p in MODULES
                for n, line in enumerate(p.read_text().splitlines(), 1) if re.match(r"^\s+from \.", line)]
    assert indented == []


def test_benchmarks_share_no_private_names() -> None:
    crossing = []
    for p in MODULES:
        tree = _tree(p)
        siblings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is None:
                    siblings.update(a.asname or a.name for a in node.names)
                crossing += [f"{p.name}: from .{node.module or ''} import {a.name}"
                             for a in node.names if a.name.startswith("_")]
        crossing += [f"{p.name}:{node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in siblings and node.attr.startswith("_")]
    assert crossing == []


def test_benchmarks_take_nothing_from_tests() -> None:
    found = []
    for p in MODULES:
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.Import):
                found += [f"{p.name}: import {a.name}" for a in node.names if a.name.split(".")[0] == "tests"]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "tests":
                    found.append(f"{p.name}: from {node.module} import ...")
            elif isinstance(node, ast.Constant) and node.value == "tests":     # a file loaded by path
                found.append(f"{p.name}:{node.lineno}: the string 'tests'")
    assert found == []


def test_timewheel_runtime_never_imports_its_testing_helpers() -> None:
    package = Path(ROOT) / "timewheel"
    found = []
    for p in package.rglob("*.py"):
        if "testing" in p.relative_to(package).parts:
            continue
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            else:
                continue
            found += [f"{p.relative_to(ROOT)}: {n}" for n in names if "testing" in n.split(".")]
    assert found == []


@pytest.mark.timeout(60)
def test_a_measurement_process_loads_no_system_until_it_opens_one() -> None:
    """Every measurement process imports benchmarks.child (and with it every workload module)
    and has its start-up time and RSS measured: a Huey process must not load timewheel, nor the
    parent's plotting or packaging machinery."""
    code = ("import sys, benchmarks.child\n"
            "print(' '.join(sorted(m for m in sys.modules)))\n")
    done = procs.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "benchmarks.workloads" in loaded and "benchmarks.redis_peers" in loaded
    heavy = {"timewheel", "huey", "apscheduler", "sqlalchemy", "rq", "arq", "redis", "matplotlib",
             "importlib.metadata", "cProfile", "tests"}
    assert sorted(m for m in loaded if m in heavy or m.split(".")[0] in heavy) == []
