"""Batches across real processes (issue 23), on the file store, a real redis-server and a
real PostgreSQL server: exactly-once callbacks while workers are SIGKILLed at random
(crash-loop style), and members that add members.

Three ``tests/batch_worker.py`` processes share one store; this process enqueues (it never
starts its wheel) once they are up, and kills a random worker with SIGKILL every 0.15-0.35 s,
restarting it at once, until the first callback starts.  What ran is read from the append-only log the tasks
write, never from the store alone.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from timewheel import TaskFailed
from timewheel.testing import processes as procs

from .batch_worker import make

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_db") + "?lease=1"
    if request.param == "postgres":
        url = request.getfixturevalue("pg_db")
        return url + ("&" if "?" in url else "?") + "lease=1"
    return str(tmp_path / "tasks.db")


class Workers:
    """The worker processes, started, SIGKILLed and restarted through tests' process helper."""

    def __init__(self, store: str, log: str, n: int) -> None:
        self.store, self.log = store, log
        self.out = open(log + ".out", "ab")
        self.procs = [self._start() for _ in range(n)]
        self.kills = 0
        _wait(lambda: len(_lines(log, "ready")) >= n, 60, "the workers to start")

    def _start(self) -> subprocess.Popen:
        return procs.popen([sys.executable, os.path.join(HERE, "batch_worker.py"), self.store, self.log],
                           stdout=self.out, stderr=self.out)

    def kill_one(self) -> None:
        i = random.randrange(len(self.procs))
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(timeout=10)
        self.kills += 1
        self.procs[i] = self._start()

    def stop(self) -> None:
        with open(self.log + ".stop", "w"):
            pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.out.close()


#: one entry of the log: a SIGKILL can cut a process's line short (a partial write, no
#: newline), and the next process's line then continues it -- so entries are found anywhere
_ENTRY = re.compile(r"(ready|start|end|cb-start|cb-end) ((?:\S+ )*?)(\d+\.\d{6})(?=\D|$)")


def _entries(log: str) -> list[list[str]]:
    """Every complete entry of ``log``, split: kind, its fields, time."""
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    return [[m.group(1), *m.group(2).split(), m.group(3)] for m in _ENTRY.finditer(text)]


def _lines(log: str, kind: str) -> list[list[str]]:
    return [ln for ln in _entries(log) if ln[0] == kind]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("failing", [0, 7], ids=["all-succeed", "some-fail"])
def test_callbacks_exactly_once_while_workers_are_killed(store_url, tmp_path, failing):
    log = str(tmp_path / "runs.log")
    hu, t = make(store_url, log)
    rng = random.Random(23 + failing)
    fails = set(rng.sample(range(300), failing))
    workers = Workers(store_url, log, 3)
    try:
        with hu.batch(on_complete=t["on_complete"], on_success=t["on_success"],
                      on_failure=t["on_failure"]) as b:
            for i in range(300):
                t["member"].delay(f"m{i}", rng.uniform(0.05, 0.15), i in fails)
        deadline = time.monotonic() + 90
        while not _lines(log, "cb-start") and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.15, 0.35))
            if not _lines(log, "cb-start"):
                workers.kill_one()
        _wait(lambda: len(_lines(log, "cb-end")) >= 2, 60, "both callbacks to run")
        time.sleep(1.0)           # a duplicate callback, if the stores made one, runs meanwhile
    finally:
        workers.stop()
    assert workers.kills >= 3, "the members finished before the test could kill anyone"
    runs = _entries(log)
    starts = [ln[1] for ln in runs if ln[0] == "start"]
    assert len(starts) > len(set(starts)), "no kill hit a running member (no member ran twice)"
    ended = {ln[1] for ln in runs if ln[0] == "end"}
    never = sorted({f"m{i}" for i in range(300)} - ended)
    tags = {r.id: pickle.loads(r.payload)[0][0] for r in map(hu.store.get, b.ids)}
    assert not never, ("members never ran to their end", never, b.state.counts,
                       [(r.id, r.status, r.crashes, r.error) for r in map(hu.store.get, b.ids)
                        if tags[r.id] in never])
    starts = [ln for ln in runs if ln[0] == "cb-start"]
    events = sorted(ln[1] for ln in starts)
    want = ["on_complete", "on_failure" if failing else "on_success"]
    assert events == sorted(want), starts
    assert {ln[2] for ln in starts} == {b.id}
    assert {ln[3] for ln in starts} == {f"batch:{b.id}:{e}" for e in want}
    last_member_end = max(float(ln[3]) for ln in runs if ln[0] == "end")
    assert min(float(ln[5]) for ln in starts) >= last_member_end
    st = b.state
    assert st.status == ("failed" if failing else "succeeded")
    assert st.counts == ({"succeeded": 300 - failing, "failed": failing} if failing else {"succeeded": 300})
    assert len(b.ids) == 300
    results = b.results(errors=True)
    kept = [i for i in range(300) if i not in fails]
    assert [results[i] for i in kept] == [f"m{i}" for i in kept]
    assert all(isinstance(results[i], TaskFailed) for i in fails)
    hu.close()


def test_members_add_members_and_the_callback_waits_for_them(store_url, tmp_path):
    log = str(tmp_path / "runs.log")
    hu, t = make(store_url, log)
    workers = Workers(store_url, log, 2)
    try:
        with hu.batch(on_complete=t["on_complete"]) as b:
            for i in range(3):
                t["grower"].delay(f"g{i}", 4, 0.2)
        _wait(lambda: _lines(log, "cb-end"), 60, "the callback")
        time.sleep(0.5)
    finally:
        workers.stop()
    runs = _entries(log)
    children = [ln for ln in runs if ln[0] == "end" and "." in ln[1]]
    assert len(children) == 12
    cb = _lines(log, "cb-start")
    assert len(cb) == 1
    assert float(cb[0][5]) >= max(float(ln[3]) for ln in children)
    assert b.state.counts == {"succeeded": 15}
    assert len(b.ids) == 15
    hu.close()
