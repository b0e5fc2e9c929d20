"""timewheel.contrib.django.TasksBackend: Django's own ``@task`` functions on the wheel, in a
real Django project (tests/django_tasks_project) -- on Django 6's ``django.tasks`` (a Python
>= 3.12 virtualenv, tests/django6_env.py) and on the ``django-tasks`` backport (this
interpreter) -- plus the pure mapping of records to Django's results."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import sys
import time
import traceback
import urllib.error
import urllib.request

import pytest

from timewheel.contrib.django.task_results import DJANGO_STATUS, NO_EXCEPTION, error_of, exception_path
from timewheel.records import STATUSES, Outcome, end_run, new_task, start_run

from . import django6_env
from .conftest import ROOT, wait_for
from .django_procs import Project

PROJECT = os.path.join(ROOT, "tests", "django_tasks_project")


class Refused(Exception):
    pass


def test_every_status_maps_to_one_of_djangos() -> None:
    assert set(DJANGO_STATUS) == set(STATUSES)
    assert set(DJANGO_STATUS.values()) == {"READY", "RUNNING", "SUCCESSFUL", "FAILED"}


def test_the_exception_class_is_read_from_the_traceback() -> None:
    def formatted(exc: BaseException) -> str:
        try:
            raise exc
        except BaseException as e:    # noqa: BLE001
            return traceback.format_exc() if e else ""

    assert exception_path(formatted(ValueError("a: b"))) == "builtins.ValueError"
    assert exception_path(formatted(Refused("no\nsecond line"))) == f"{__name__}.Refused"
    assert exception_path(formatted(KeyError("x"))) == "builtins.KeyError"
    assert exception_path("") is None and exception_path("Traceback (most recent call last):\n") is None
    assert exception_path("garbage that is not a traceback!") is None


def test_a_records_error_is_djangos_task_error() -> None:
    rec = start_run(new_task("t1", "jobs.tasks.refuse", 1.0, pickle.dumps(((), {})), 1.0, 1, 0.1, None,
                             None), "me", 2.0)
    try:
        raise Refused("no")
    except Refused:
        tb = traceback.format_exc()
    retrying = end_run(rec, Outcome(ok=False, started=2.0, finished=3.0, error="Refused: no", traceback=tb))
    assert retrying.status == "pending" and error_of(retrying) == (f"{__name__}.Refused", tb)
    assert error_of(rec) is None
    crashed = retrying._replace(status="failed", error="the process running it died 3 times", traceback=None)
    assert error_of(crashed) == (NO_EXCEPTION, "the process running it died 3 times\n")


# -- a real project ---------------------------------------------------------------------------------------

@pytest.fixture(params=["backport-file", "django6-redis"])
def project(request, tmp_path):
    """The test project migrated: on the backport (this interpreter) with the store in a file,
    or on Django 6 with the store on the session's Redis server.  Two runs (about 6 s each)
    rather than the four pairs: the backend is the same code on either framework and store."""
    framework, store = request.param.split("-")
    python = sys.executable if framework == "backport" else django6_env.ensure()
    p = DjangoTasks(python, tmp_path)
    if store == "redis":
        p.env["TIMEWHEEL_DB"] = request.getfixturevalue("redis_db")
    done = p.manage("migrate", "--noinput", "-v", "0")
    assert done.returncode == 0, done.stderr
    yield p
    p.close()


class DjangoTasks(Project):
    def __init__(self, python: str, tmp) -> None:
        super().__init__(PROJECT, tmp, python=python)

    def worker(self, name: str, *args: str):
        p = self.spawn(name, "timewheel_run", "--grace", "5", *args)
        wait_for(lambda: "SIGTERM or SIGINT stops it" in self.log(name) or p.poll() is not None,
                 timeout=30, what=f"{name} to start")
        assert p.poll() is None, self.log(name)
        return p

    def runs(self) -> list[tuple[str, int]]:
        with sqlite3.connect(self.app_db) as con:
            return con.execute("SELECT label, pid FROM jobs_run ORDER BY id").fetchall()


def call(url: str, body: "dict | None" = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_djangos_tasks_run_on_the_wheel(project) -> None:
    """Enqueued from a web process, run by timewheel_run workers: once each, in priority
    order, on the queues they serve, never before run_after; results, errors, context and
    retries read back with get_result(); aenqueue/aget_result from async views."""
    web, base = project.runserver(probe="/framework/")
    assert call(base + "/framework/")[1]["framework"] == (
        "django_tasks" if project.python == sys.executable else "django.tasks")

    def enqueue(name: str, *args, **options) -> dict:
        status, shown = call(f"{base}/enqueue/{name}/", {"args": list(args), **options})
        assert status == 202, shown
        assert shown["status"] == "READY" and shown["return_value_error"] == "Task has not finished yet"
        return shown

    def finished(task_id: str, url: str = "/result/") -> dict:
        return wait_for(lambda: (r := call(f"{base}{url}{task_id}/")[1]).get("status")
                        in ("SUCCESSFUL", "FAILED") and r, timeout=30, what=f"{task_id} to finish")

    # due now, before any worker runs: one worker thread takes them highest priority first
    low = enqueue("record", "low", priority=-10)
    high = enqueue("record", "high", priority=50)
    mid = enqueue("record", "mid")
    report = enqueue("record", "report", queue_name="reports")
    later = enqueue("record", "later", run_after_in=1.5)
    assert call(f"{base}/result/{high['id']}/")[1]["priority"] == 50
    assert call(f"{base}/result/{report['id']}/")[1]["queue_name"] == "reports"
    worker = project.worker("worker", "--queues", "default")
    for task in (low, high, mid, later):
        done = finished(task["id"])
        assert done["status"] == "SUCCESSFUL" and done["return_value"]["pid"] == worker.pid, done
        assert done["attempts"] == 1 and done["errors"] == [] and done["enqueued_at"] <= done["started_at"]
    assert finished(later["id"])["started_at"] >= later["enqueued_at"] + 1.5 - 0.01      # never early
    # high, mid, low: by priority (later, priority 0, runs among them if the worker started
    # after its run_after: its place depends on how long the start took)
    assert [label for label, _ in project.runs() if label != "later"] == ["high", "mid", "low"]
    # the reports queue is served by no process yet: its task waits
    assert call(f"{base}/result/{report['id']}/")[1]["status"] == "READY"

    # takes_context, and OPTIONS retries=1: the first attempt fails, the second succeeds
    flaky = enqueue("flaky", "flaky")
    done = finished(flaky["id"])
    assert done["return_value"] == {"id": flaky["id"], "attempt": 2} and done["attempts"] == 2
    # a failure for good: Django's errors, with the exception's class path and traceback
    refused = enqueue("refuse", "not today")
    done = finished(refused["id"])
    assert done["status"] == "FAILED" and done["return_value_error"] == "Task failed"
    (error,) = done["errors"]
    assert error["exception_class_path"] == "jobs.tasks.Refused" and "not today" in error["traceback"]

    # an async task, through aenqueue and aget_result, on the reports queue: a second worker
    reports = project.worker("reports", "--queues", "reports")
    status, queued = call(f"{base}/aenqueue/double/", {"args": [21]})
    assert status == 202
    done = finished(queued["id"], url="/aresult/")
    assert done["return_value"] == {"double": 42, "pid": reports.pid}
    assert done["queue_name"] == "reports" and done["priority"] == 5
    assert finished(report["id"])["return_value"]["pid"] == reports.pid

    # ENQUEUE_ON_COMMIT: nothing is written before the commit (the task would not find the
    # order), and nothing at all for a transaction rolled back
    status, made = call(base + "/order/", {"note": "kept", "hold": 1.0})
    assert made["inside"] == "absent"
    done = finished(made["id"])
    assert done["return_value"] == "kept" and done["started_at"] >= made["committing_at"]
    status, undone = call(base + "/order/", {"note": "undone", "rollback": True})
    assert undone["inside"] == "absent"
    time.sleep(1.0)                  # the worker polls every 0.2 s: it would have run by now
    assert call(f"{base}/result/{undone['id']}/")[0] == 404

    # each ran once, in the worker of its queue
    labels = [label for label, _ in project.runs()]
    assert sorted(labels) == sorted(["high", "mid", "low", "later", "report", "flaky", "flaky"])
    for p in (worker, reports):
        p.terminate()
        assert p.wait(timeout=20) == 0
    assert "Traceback" not in project.log("web")


@pytest.mark.parametrize("framework", ["backport", "django6"])
def test_enqueue_on_commit_writes_in_the_transaction_on_postgres(pg_db, framework) -> None:
    """With the store in the project's PostgreSQL database the task is written in the
    transaction, through Django's connection: there before the commit for that connection
    only, committed with it, gone with a rollback.  A priority is written with it
    (this store enforces flow control)."""
    from timewheel.testing import processes as procs
    python = sys.executable if framework == "backport" else django6_env.ensure()
    out = procs.run([python, os.path.join(ROOT, "tests", "pg_django_tasks.py"), pg_db, "djtasks"],
                    capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    assert seen["in_transaction"] == 1 and seen["rolled_back_in_transaction"] == 1
    assert not seen["seen_outside_before_commit"] and seen["seen_outside_after_commit"]
    assert seen["status"] == "SUCCESSFUL" and seen["return_value"] == {"tag": "committed"}
    assert seen["rolled_back"] == "absent"
    assert seen["prioritised_in_transaction"] == 1 and seen["prioritised"] == 10


BAD_CONFIGS = r'''
import json, sys
import django
from django.conf import settings
settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
                   INSTALLED_APPS=["timewheel.contrib.django"], TIMEWHEEL={"path": sys.argv[1]})
django.setup()
from django.core.exceptions import ImproperlyConfigured
from timewheel.contrib.django import TasksBackend
out = []
for params in json.loads(sys.argv[2]):
    try:
        TasksBackend("default", params)
        out.append("accepted")
    except ImproperlyConfigured as exc:
        out.append(str(exc))
print(json.dumps(out))
'''


@pytest.mark.parametrize("framework", ["backport", "django6"])
def test_a_bad_tasks_setting_names_what_is_wrong(framework, tmp_path) -> None:
    """A misspelt or invalid TASKS entry fails with ImproperlyConfigured naming it."""
    from timewheel.testing import processes as procs
    python = sys.executable if framework == "backport" else django6_env.ensure()
    configs = [{"OPTIONS": {"retries": 2, "timeout": 5, "database": "default"}},
               {"OPTIONS": {"retires": 2}},
               {"OPTIONS": {"retries": -1}},
               {"OPTIONS": ["retries"]},
               {"OPTIONS": {"database": "other"}},
               {"ENQUEUE_ON_COMMIT": "yes"},
               {"QUEUES": ["default", "mail,sms"]}]
    out = procs.run([python, "-c", BAD_CONFIGS, str(tmp_path / "tasks.db"), json.dumps(configs)],
                    capture_output=True, text=True, timeout=60, cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    ok, misspelt, negative, not_dict, database, on_commit, queue = json.loads(out.stdout)
    assert ok == "accepted"
    assert "unknown option(s) 'retires'" in misspelt and "retries" in misspelt
    assert negative.startswith("TASKS['default']['OPTIONS']: ") and "retries" in negative
    assert "['OPTIONS'] must be a dict, got list" in not_dict
    assert "no database 'other' in settings.DATABASES" in database
    assert "['ENQUEUE_ON_COMMIT'] must be True or False, got 'yes'" in on_commit
    assert "['QUEUES']" in queue and "mail,sms" in queue
