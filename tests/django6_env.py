"""A virtualenv with Django 6 (``django.tasks``) for tests/test_django_tasks.py: Django 6 needs
Python >= 3.12, and the suite may run on an older one (it then runs the backport, django-tasks,
itself).  Made once under ``.venv-django6/`` (git-ignored) and reused while its requirements
and timewheel's pyproject.toml are unchanged; ``.ci/run`` makes it before the tests.

    python tests/django6_env.py        # make it (if needed) and print its python

The interpreter: ``$TIMEWHEEL_PY312``, else ``python3.13`` or ``python3.12`` on PATH, else the
newest 3.12+ of pyenv (``$PYENV_ROOT`` or ``~/.pyenv``).  None is an error, never a skip.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-django6")
REQUIREMENTS = ["django>=6.0,<6.1"]
#: timewheel's extras there: the tests run Django 6 on the Redis and PostgreSQL stores too
EXTRAS = ["redis", "postgres"]
PYTHON = os.path.join(VENV, "bin", "python")
_STAMP = os.path.join(VENV, "timewheel-requirements")


def interpreter() -> str:
    """A Python >= 3.12 to make the virtualenv with; RuntimeError if there is none."""
    given = os.environ.get("TIMEWHEEL_PY312")
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = ([given] if given else []) + [shutil.which(n) or n for n in ("python3.13", "python3.12")] \
        + sorted(glob.glob(os.path.join(pyenv, "versions", "3.*", "bin", "python")), reverse=True)
    for exe in candidates:
        if _version(exe) >= (3, 12):
            return exe
        if exe == given:
            raise RuntimeError(f"TIMEWHEEL_PY312={given} is not a Python >= 3.12")
    raise RuntimeError("Django 6 needs Python >= 3.12 and none was found (set TIMEWHEEL_PY312, put "
                       "python3.12 on PATH, or `pyenv install 3.12`)")


def _version(exe: str) -> tuple[int, ...]:
    """The version of the Python at ``exe``, () if it does not run (a pyenv shim of a version
    that is not selected fails)."""
    try:
        out = subprocess.run([exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30)
    except OSError:
        return ()
    return tuple(int(p) for p in out.stdout.split()) if out.returncode == 0 else ()


def _wanted() -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return "\n".join(REQUIREMENTS + EXTRAS + [hashlib.sha256(f.read()).hexdigest()])


def ensure() -> str:
    """The virtualenv's python, made or brought up to date first."""
    wanted = _wanted()
    if os.path.exists(_STAMP) and open(_STAMP).read() == wanted and os.path.exists(PYTHON):
        return PYTHON
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([interpreter(), "-m", "venv", VENV], check=True, timeout=120)
    timewheel = f"{ROOT}[{','.join(EXTRAS)}]"
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "-e", timewheel, *REQUIREMENTS],
                   check=True, timeout=600)
    with open(_STAMP, "w") as f:
        f.write(wanted)
    return PYTHON


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
