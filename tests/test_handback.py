"""SIGTERM hands back what a process claimed but never started (issue 26): with 40 tasks
claimed on 4 workers, the process returns within its running tasks' time, and the 36 it had
queued run in another process, each exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from timewheel.records import RUNNING
from timewheel.testing import processes as procs

from . import handback_worker
from .conftest import wait_for
from .mp_worker import read_lines

HERE = os.path.dirname(os.path.abspath(__file__))
PAUSE = 2.0                          # each task's run


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared(request, db_path) -> str:
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db")


def worker(store: str, out: str, workers: int, depth: int) -> subprocess.Popen:
    return procs.popen([sys.executable, os.path.join(HERE, "handback_worker.py"), store, out, str(workers),
                        str(depth)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_hands_back_the_queued_tasks_and_waits_only_for_the_running_ones(tmp_path, shared) -> None:
    out = str(tmp_path)
    enqueuer, work = handback_worker.make_wheel(shared, out)
    with enqueuer.batch():
        handles = [work.delay(i, PAUSE) for i in range(40)]
    a = worker(shared, out, 4, 36)
    b = None
    try:
        # a claims all 40: 4 start on its workers, 36 wait in its queue
        wait_for(lambda: len(list(enqueuer.store.scan(RUNNING))) == 40, timeout=30, what="40 claimed")
        owners = {r.owner for r in enqueuer.store.scan(RUNNING)}
        assert len(owners) == 1
        b = worker(shared, out, 36, 0)             # another process, idle: nothing left to claim
        a.send_signal(signal.SIGTERM)
        a_out, a_err = a.communicate(timeout=30)
        assert a.returncode == 0, a_err
        report = json.loads(a_out.strip().splitlines()[-1])
        # it waited for its 4 running tasks only (at most PAUSE), not for its queue (9 * PAUSE)
        assert report["unfinished"] == 0
        assert report["returned"] - report["signalled"] < PAUSE + 1.5, report
        assert [h.result(timeout=60) for h in handles] == list(range(40))
        b.send_signal(signal.SIGTERM)
        _, b_err = b.communicate(timeout=30)
        assert b.returncode == 0, b_err
    finally:
        for p in (a, b):
            if p is not None:
                p.kill()
                p.wait(10)
        enqueuer.close()
    runs = read_lines(os.path.join(out, "runs.log"))
    starts = [(int(i), pid, float(t)) for kind, i, pid, t in runs if kind == "start"]
    ends = [int(i) for kind, i, _, _ in runs if kind == "end"]
    assert sorted(i for i, _, _ in starts) == list(range(40)) == sorted(ends)    # each exactly once
    by_a = [i for i, pid, _ in starts if pid == str(a.pid)]
    by_b = [i for i, pid, t in starts if pid == str(b.pid)]
    assert len(by_a) == 4 and len(by_b) == 36, (by_a, by_b)
    assert all(t < report["signalled"] for i, pid, t in starts if pid == str(a.pid))


def test_running_counts_the_started_tasks_and_claimed_the_queued_ones(tmp_path, shared) -> None:
    """One definition of running (started on a worker), on every backend: a process with 4
    workers that claimed 40 shows 4 running and 36 claimed; as its workers take queued tasks,
    their starts reach the store and the counts follow (4 running, 32 claimed)."""
    from timewheel import query
    out = str(tmp_path)
    enqueuer, work = handback_worker.make_wheel(shared, out)
    with enqueuer.batch():
        for i in range(40):
            work.delay(i, PAUSE)
    a = worker(shared, out, 4, 36)
    try:
        def counts() -> tuple:
            c = query.counts_by_status(enqueuer.store)[0]
            return c["running"], c["claimed"], c["pending"]
        wait_for(lambda: counts() == (4, 36, 0), timeout=30, what="4 running, 36 claimed")
        assert query.inspect_data(enqueuer.store, enqueuer.now())["counts"]["running"] == 4
        wait_for(lambda: counts() == (4, 32, 0), timeout=30, what="the next 4 started")
        running = enqueuer.store.scan(RUNNING)
        started = [r for r in running if r.started is not None]
        assert len(started) == 4 and len({r.owner for r in running}) == 1
    finally:
        a.kill()
        a.wait(10)
        enqueuer.close()


@pytest.fixture(params=["redis", "postgres"])
def leased(request) -> str:
    """A store with leases of 1 s: a queued task waits longer than that."""
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db") + "?lease=1"


def test_a_start_recorded_after_a_long_wait_in_the_queue_keeps_the_lease(leased, monkeypatch) -> None:
    """A task queued for longer than its lease (renewed meanwhile) starts with its lease renewed:
    the write of its start must not put back the claim's deadline, long past -- which would make
    it abandoned, requeued and run twice."""
    import threading
    import time

    import timewheel.boss
    from timewheel import TimeWheel
    monkeypatch.setattr(timewheel.boss, "queue_depth", lambda workers, round_s, task_s: 5)
    hu = TimeWheel(leased, workers=1, tick=0.1, slots=600)
    runs: list = []
    lock = threading.Lock()

    @hu.task(name="slow")
    def slow(i: int) -> None:
        with lock:
            runs.append(i)
        time.sleep(0.6)

    with hu.batch():
        handles = [slow.delay(i) for i in range(6)]      # the last waits ~3 s in the queue
    hu.start()
    try:
        for h in handles:
            h.result(timeout=60)
        time.sleep(1.5)                                  # a requeue would run one again
        assert sorted(runs) == list(range(6)), runs
        assert all(h.record.crashes == 0 and h.record.attempts == 1 for h in handles)
    finally:
        hu.close()
