"""Aborting a running task across real processes (issue 23), on the file store, a real
redis-server and a real PostgreSQL server.

A ``tests/abort_worker.py`` process runs the tasks (tick 0.2 s); this process enqueues them
(it never starts its wheel) and asks for the aborts -- through ``TaskHandle.abort()`` and
through the ``timewheel abort`` command in a third process.  What ran is read from the
append-only log the tasks write, never from the store alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from timewheel.testing import processes as procs

from . import test_batch_processes
from .abort_worker import POLL, TICK, make

HERE = os.path.dirname(os.path.abspath(__file__))
#: the fixture of the batch tests: a file store, a redis-server, a PostgreSQL (leases of 1 s)
store_url = test_batch_processes.store_url
#: stopped "within one tick + the task's own polling interval": this bound adds a generous
#: allowance for a loaded machine (2 cores shared by several test runs) and the round trips
BOUND = TICK + POLL + 1.5


_ENTRY = re.compile(r"^(ready|start|end) (.*) (\d+\.\d{6})$")


def _entries(log: str) -> list[list[str]]:
    try:
        with open(log, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    return [[m.group(1), *m.group(2).split(), m.group(3)] for m in map(_ENTRY.match, lines) if m]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def worker(store_url, tmp_path):
    yield from run_worker(store_url, tmp_path)


def run_worker(store_url: str, tmp_path):
    """A worker process on ``store_url`` until the generator is closed; yields its log."""
    log = str(tmp_path / "runs.log")
    out = open(log + ".out", "ab")
    proc = procs.popen([sys.executable, os.path.join(HERE, "abort_worker.py"), store_url, log],
                       stdout=out, stderr=out)
    try:
        _wait(lambda: any(e[0] == "ready" for e in _entries(log)), 60, "the worker to start")
        yield log
    finally:
        with open(log + ".stop", "w"):
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        out.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "timewheel.cli", *args], capture_output=True, text=True,
                     timeout=60)


def test_abort_stops_running_tasks_in_another_process(store_url, worker):
    log = worker
    hu, t = make(store_url, log)
    sync, task_async, other = t["spin"].delay(60.0), t["aspin"].delay(60.0), t["other"].delay(2.5)
    started = lambda: {e[2] for e in _entries(log) if e[0] == "start"}   # noqa: E731 (entries:
    # what, kind, task id, how, time)
    _wait(lambda: {sync.id, task_async.id, other.id} <= started(), 30, "the three tasks to start")
    _wait(lambda: sync.status == task_async.status == "running", 10, "their claims")

    asked = {sync.id: time.time()}
    assert sync.abort() is True                      # through the handle
    assert sync.abort() is True                      # asked again at once: still recorded
    asked[task_async.id] = time.time()
    done = _cli("abort", store_url, task_async.id, "--json")   # through the command
    took = {sync.id: 0.0, task_async.id: time.time() - asked[task_async.id]}   # (the command's own time)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"aborting": [task_async.id], "cancelled": [], "skipped": [],
                                       "unknown": []}
    ends = lambda: {e[2]: e for e in _entries(log) if e[0] == "end"}     # noqa: E731
    _wait(lambda: {sync.id, task_async.id} <= set(ends()), 10, "the aborted runs to end")
    assert ends()[sync.id][3] == "aborted" and ends()[task_async.id][3] == "cancelled"
    for h in (sync, task_async):
        stopped = float(ends()[h.id][4]) - asked[h.id]
        bound = BOUND + took[h.id]
        assert stopped < bound, f"{h.id} stopped {stopped:.2f}s after the abort (bound {bound:.2f}s)"
    _wait(lambda: sync.status == task_async.status == "aborted", 10, "their outcomes")

    assert other.result(timeout=30) == "other"       # no other task affected
    time.sleep(3 * TICK)                             # a retry, if there were one, would start now
    for h in (sync, task_async):
        rec = h.record
        assert (rec.status, rec.attempts, rec.owner, rec.lease) == ("aborted", 1, None, None)
        assert rec.error.startswith("aborted") and rec.history[-1][5] == "aborted"
        assert [e[1] for e in _entries(log) if e[0] == "start" and e[2] == h.id] == [h.record.name[3:]]
        assert h.abort() is False                    # finished: refused
    assert other.abort() is False
    refused = _cli("abort", store_url, sync.id, "nosuchtask")
    assert refused.returncode == 1
    assert "no task nosuchtask" in refused.stderr and f"task {sync.id} is aborted" in refused.stderr
    counts = hu.store.counts()
    assert counts.get(("aborted", "ab.spin")) == 1 and counts.get(("aborted", "ab.aspin")) == 1


def test_abort_of_a_pending_task_cancels_it(store_url, tmp_path):
    hu, t = make(store_url, str(tmp_path / "runs.log"))
    h = t["spin"].delay(1.0, count_down=3600)
    assert h.abort() is True and h.status == "cancelled"
    assert h.abort() is False


def test_another_process_reads_the_latest_progress_while_the_task_runs(store_url, worker):
    log = worker
    hu, t = make(store_url, log)
    h = t["count"].delay(40, 0.05)                   # 2 s, a report every 50 ms
    seen = []
    deadline = time.monotonic() + 30
    while h.status != "succeeded" and time.monotonic() < deadline:
        p = h.progress
        if p is not None and (not seen or p != seen[-1]):
            seen.append(p)
        time.sleep(0.01)
    assert h.result(timeout=10) == 40
    final = h.progress
    assert (final.done, final.total, final.note, final.fraction) == (40, 40, "row 40", 1.0)
    running = [p for p in seen if p.done < 40]
    # read while it ran, increasing; a write at most every 0.25 s (about 8 in 2 s, at least 3)
    assert len(running) >= 3, seen
    assert [p.done for p in running] == sorted(p.done for p in running)
    gaps = [b.at - a.at for a, b in zip(running, running[1:])]
    assert min(gaps) >= 0.2, gaps                  # PROGRESS_EVERY, less the 50 ms between reports
    assert all(p.total == 40 and p.note == f"row {p.done}" for p in running)
