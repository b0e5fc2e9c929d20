"""The shape of the code, checked (issue 20): no class grows past 500 lines; the store rules,
the claim's stamp and the file store's positions each live in one module, so that a new
backend or a change of key width cannot leave a copy behind."""

from __future__ import annotations

import ast
import os
import re

import pytest

from .conftest import ROOT

PACKAGE = os.path.join(ROOT, "timewheel")


def _sources() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    out[os.path.relpath(path, PACKAGE)] = fh.read()
    assert len(out) > 30, out.keys()
    return out


SOURCES = _sources()


def test_no_class_is_longer_than_500_lines() -> None:
    sizes = {f"{path}:{node.name}": node.end_lineno - node.lineno + 1      # type: ignore[operator]
             for path, text in SOURCES.items() for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.ClassDef)}
    assert sizes and max(sizes.values()) > 100                # the count sees real classes
    assert {k: n for k, n in sizes.items() if n > 500} == {}


def _modules_matching(pattern: str, paths: "list[str] | None" = None) -> list[str]:
    regex = re.compile(pattern)
    return sorted(p for p, text in SOURCES.items() if (paths is None or p in paths) and regex.search(text))


def test_the_add_policies_are_decided_in_the_rules_module_only() -> None:
    assert _modules_matching(r'existing == "(keep|reuse|replace)"') == ["store/rules.py"]


def test_a_claim_is_stamped_in_the_rules_module_only() -> None:
    """start_run is called from store/rules.py alone (immediate mode included); the Lua claim
    names that function as its twin."""
    callers = sorted(p for p, text in SOURCES.items() for node in ast.walk(ast.parse(text))
                     if isinstance(node, ast.Call)
                     and getattr(node.func, "id", getattr(node.func, "attr", None)) == "start_run")
    assert callers == ["store/rules.py"]
    assert "timewheel.store.rules.claimed" in SOURCES["store/redis_lua.py"]


FILE_STORE = [p for p in SOURCES if p.startswith("store/sqlite") or p == "store/connection.py"]
#: what positions were built and read with before the codec (sqlite.py at e394598), one each
POSITION_CODE = {
    r"substr\(pos": "CAST(substr(pos, 10, 15) AS INTEGER) * :slots",
    r"%0\{?\w*\}?d": '"n:%06d:%015d:" % (tick % slots, tick // slots)',
    r":0\d+d\}": 'f"q:{int(now * 1e6):018d}"',
    r"""['"][npqrxb][:;]\\?['"]""": """WHERE pos >= \\'q:\\' AND pos < \\'q;\\'""",
    r"pos\[\d": "int(pos[4:]) / 1000",
}


@pytest.mark.parametrize("pattern", sorted(POSITION_CODE))
def test_positions_are_built_and_read_in_the_codec_only(pattern: str) -> None:
    assert re.search(pattern, POSITION_CODE[pattern])          # the check sees such code
    assert len(FILE_STORE) >= 6, FILE_STORE
    assert set(_modules_matching(pattern, FILE_STORE + ["store/positions.py"])) <= {"store/positions.py"}
