"""Flow control at the command line (issue 21): ``pause`` / ``resume``, ``tasks --queue``,
the queues and limits of ``inspect`` and ``stats``, why ``show`` says a due task waits, and
``run --queues`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from timewheel import TimeWheel
from timewheel.testing import console_script
from timewheel.testing import processes as procs

from .cli_fixtures import invoke
from .conftest import wait_for


def ok(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict]:
    """A store with due tasks in two queues, one of them held by a full limit."""
    path = str(tmp_path / "tasks.db")
    hu = TimeWheel(path)
    report = hu.task(name="reports.build", queue="reports", priority=5)(lambda n: n)
    one = hu.task(name="one.at.a.time", concurrency=1)(lambda n: n)
    ids = {"r": report.delay(1).id, "a": one.delay(1).id, "b": one.delay(2).id,
           "d": hu.task(name="plain")(lambda: 0).schedule(queue="emails").id}
    s = hu.store
    s.advance(s.wheel.current_tick(s.now()) + 2, 1000, "test")
    s.claim("999999:deadbeef:999999", s.now(), 2, queues=frozenset({"default"}))   # "a" runs, "b" parks
    hu.close()
    return path, ids


def test_pause_and_resume_are_stored_and_shown(store) -> None:
    path, ids = store
    assert ok("pause", path, "reports") == {"queue": "reports", "paused": True, "changed": True,
                                           "paused_queues": ["reports"]}
    assert ok("pause", path, "reports")["changed"] is False
    queues = {q["queue"]: q for q in ok("inspect", path)["queues"]}
    assert queues["reports"] == {"queue": "reports", "pending": 1, "waiting": 1, "running": 0,
                                 "paused": True, "served": False}
    assert ok("show", path, ids["r"])["waiting"] == "queue 'reports' is paused"
    text = invoke("inspect", path).output
    assert "PAUSED" in text and "reports" in text
    assert ok("resume", path, "reports")["paused_queues"] == []
    assert ok("show", path, ids["r"])["waiting"] == "no process has called start()"
    bad = invoke("pause", path, "no:colon")
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "queue" in bad.output


def test_limits_and_queues_in_inspect_stats_and_show(store) -> None:
    path, ids = store
    limits = ok("stats", path)["limits"]
    assert limits == [{"key": "task:one.at.a.time", "concurrency": 1, "rate": None, "running": 1,
                       "parked": 1, "recent_starts": 0, "reopens": None}]
    shown = ok("show", path, ids["b"])
    assert shown["queue"] == "default" and shown["priority"] == 0
    assert shown["limits"] == [{"key": "task:one.at.a.time", "concurrency": 1, "rate": None}]
    assert shown["waiting"] == "no process has called start()"
    assert ok("show", path, ids["r"])["priority"] == 5
    assert "Limits" in invoke("stats", path).output


def test_tasks_lists_one_queue(store) -> None:
    path, ids = store
    assert [t["id"] for t in ok("tasks", path, "--queue", "reports")["tasks"]] == [ids["r"]]
    emails = ok("tasks", path, "--queue", "emails", "--status", "pending")["tasks"]
    assert [t["id"] for t in emails] == [ids["d"]]
    assert ok("tasks", path, "--queue", "nothing")["tasks"] == []
    bad = invoke("tasks", path, "--queue", "")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


APP = """
import os
from timewheel import TimeWheel
hu = TimeWheel(os.environ["TW_DB"], tick=0.25)

@hu.task(name="mark", queue="emails")
def mark_email(path):
    open(path, "a").write("email\\n")

@hu.task(name="other", queue="reports")
def mark_report(path):
    open(path, "a").write("report\\n")
"""


def test_run_with_queues_runs_only_those(tmp_path: Path) -> None:
    db, out = str(tmp_path / "tasks.db"), str(tmp_path / "ran")
    (tmp_path / "cliapp_queues.py").write_text(APP)
    env = {**os.environ, "TW_DB": db}
    import importlib.util
    spec = importlib.util.spec_from_file_location("cliapp_queues_t", tmp_path / "cliapp_queues.py")
    os.environ["TW_DB"] = db
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        del os.environ["TW_DB"]
    mod.mark_report.delay(out)
    mod.mark_email.delay(out)
    mod.hu.close()
    worker = procs.popen([console_script(), "run", "cliapp_queues:hu", "--queues", "emails",
                          "--grace", "5"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(out), 15, what="the email task")
        time.sleep(1.0)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert open(out).read() == "email\n"
    bad = procs.run([console_script(), "run", "cliapp_queues:hu", "--queues", "a,b:c"], cwd=tmp_path,
                    env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "queue" in bad.stderr
