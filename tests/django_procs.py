"""Helpers for tests that run a Django project (tests/django_project, examples/django_project)
as real ``manage.py`` processes, and talk to them over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from timewheel.testing import free_port
from timewheel.testing import processes as procs

from .conftest import ROOT, wait_for

GUNICORN_CONF = os.path.join(ROOT, "tests", "gunicorn_conf.py")     # workers die with the master


class Project:
    """A Django project with its own databases under ``tmp`` (its settings read DJANGO_DB and
    TIMEWHEEL_DB); runs ``manage.py`` commands and servers (on ``python``: this interpreter
    unless told), and kills what is left at close."""

    def __init__(self, directory: str, tmp, python: str = sys.executable, **env: str) -> None:
        self.directory = directory
        self.python = python
        self.tmp = tmp
        self.app_db = str(tmp / "app.sqlite3")
        self.env = {**os.environ, "PYTHONPATH": ROOT, "DJANGO_DB": self.app_db,
                    "TIMEWHEEL_DB": str(tmp / "tasks.db"), "PYTHONUNBUFFERED": "1", **env}
        self.procs: list[subprocess.Popen] = []

    def manage(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return procs.run([self.python, "manage.py", *args], cwd=self.directory,
                         env={**self.env, **env}, capture_output=True, text=True, timeout=120)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        """``manage.py ARGS`` in the background, its output in ``tmp/NAME.log``."""
        with open(self.tmp / f"{name}.log", "w") as out:
            p = procs.popen([self.python, "manage.py", *args], cwd=self.directory,
                            env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def runserver(self, probe: str = "/tasks/none/", insecure: bool = False) -> tuple[subprocess.Popen, str]:
        """``manage.py runserver`` on a free port; returns once ``probe`` answers (a 404 will do).
        ``insecure``: serve static files although DEBUG is off (the staticfiles app's option)."""
        port = free_port()
        p = self.spawn("web", "runserver", f"127.0.0.1:{port}", "--noreload",
                       *(["--insecure"] if insecure else []))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: p.poll() is not None or _answers(base + probe), timeout=30,
                 what="runserver to answer")
        assert p.poll() is None, self.log("web")
        return p, base

    def gunicorn(self, *extra: str, workers: int = 2) -> tuple[subprocess.Popen, str]:
        """``gunicorn -w N project.wsgi`` on a free port; returns once every worker booted."""
        exe = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
        assert exe, "gunicorn is in the test extra: pip install -e '.[test]'"
        with open(self.tmp / "web.log", "w") as out:
            p = procs.popen([exe, "-w", str(workers), "-b", "127.0.0.1:0", "--graceful-timeout", "10",
                             "-c", GUNICORN_CONF, *extra, "project.wsgi"], cwd=self.directory, env=self.env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)

        def listening():
            assert p.poll() is None, self.log("web")
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", self.log("web"))
            return found and self.log("web").count("Booting worker") >= workers and found.group(1)
        return p, wait_for(listening, timeout=30, what="gunicorn to boot")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            try:
                os.killpg(p.pid, signal.SIGKILL)     # gunicorn's workers, if any are left
            except (ProcessLookupError, PermissionError):
                pass


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def post(url: str, **form: str) -> dict:
    with urllib.request.urlopen(url, data=urllib.parse.urlencode(form).encode(), timeout=10) as r:
        assert r.status == 202
        return json.loads(r.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return samples(r.read().decode())
