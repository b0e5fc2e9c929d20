"""Helpers for the web view's tests: a store holding tasks in every state, and a live
``timewheel web`` subprocess serving it."""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

from timewheel.records import Outcome, TaskRecord, cancel, end_run, skip_misfired, start_run
from timewheel.store import SqliteDictStore, WheelStore

from . import procs

HOSTILE_NAME = "<script>alert('name')</script>\x1b[31mred\u202e"
HOSTILE_ERROR = "ValueError: <img src=x onerror=alert('error')> \x1b]0;pwned\x07"
DEAD_OWNER = "999999999:deadbeef:999999999"


@dataclass
class Demo:
    """What :func:`fill` put in the store, by state (ids)."""

    pending: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    misfired: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    hostile: str = ""
    #: due tick -> ids of pending tasks placed there on purpose (for the ring)
    placed: dict[int, list[str]] = field(default_factory=dict)


def record(task_id: str, eta: float, name: str = "emails.send", **fields) -> TaskRecord:
    fields.setdefault("payload", pickle.dumps(((task_id, 42), {"to": "ann@example.com"})))
    fields.setdefault("created", eta - 60)
    return TaskRecord(id=task_id, name=name, eta=eta, **fields)


def run(store: WheelStore, rec: TaskRecord, owner: str, ok: Optional[bool], late: float = 0.25) -> TaskRecord:
    """Take ``rec`` through a run as a worker would: start it; then, unless ``ok`` is None
    (left running), record its outcome."""
    started = rec.eta + late
    (running,) = store.swap([(rec, start_run(rec, owner, started))])
    assert running is not None
    if ok is None:
        return running
    out = (Outcome(ok=True, started=started, finished=started + 0.1, result=pickle.dumps({"sent": rec.id}))
           if ok else Outcome(ok=False, started=started, finished=started + 0.1, error=HOSTILE_ERROR,
                              traceback="Traceback (most recent call last):\n  File \"app.py\", line 7\n"
                                        + HOSTILE_ERROR))
    (done,) = store.swap([(running, end_run(running, out))])
    assert done is not None
    return done


def fill(store: WheelStore, now: float, *, owner: str = DEAD_OWNER) -> Demo:
    """Tasks in every state; the running ones belong to ``owner``.  Pending tasks sit at
    known ticks (two in one tick, one a revolution later in the same slot)."""
    demo = Demo()
    w = store.wheel
    current = w.current_tick(now)
    placed = [current + 120, current + 120, current + 120 + w.slots, current + 900, current + 2500]
    recs = []
    for i, tick in enumerate(placed):
        r = record(f"p{i:03d}", w.tick_end(tick) - 0.5, name="reports.build")
        recs.append(r)
        demo.placed.setdefault(tick, []).append(r.id)
    for i in range(20):
        recs.append(record(f"q{i:03d}", now + 4000 + 600 * i, name="billing.charge"))
    hostile = record("h<b>1</b>", now + 7000, name=HOSTILE_NAME)
    recs.append(hostile)
    store.add(recs)
    demo.pending = [r.id for r in recs]
    demo.hostile = hostile.id
    finished = [record(f"s{i:03d}", now - 1500 + 30 * i) for i in range(12)]
    finished += [record(f"f{i:03d}", now - 900 + 30 * i) for i in range(6)]
    finished += [record(f"m{i:03d}", now - 600 + 30 * i, misfire_grace=0.01) for i in range(3)]
    finished += [record(f"r{i:03d}", now - 300 + 30 * i) for i in range(3)]
    finished += [record("c000", now + 50000)]
    store.add(finished)
    for r in finished:
        kind = r.id[0]
        if kind == "s":
            run(store, r, owner, True)
            demo.succeeded.append(r.id)
        elif kind == "f":
            run(store, r, owner, False)
            demo.failed.append(r.id)
        elif kind == "m":
            (running,) = store.swap([(r, start_run(r, owner, r.eta + 0.5))])
            store.swap([(running, skip_misfired(running, r.eta + 0.5))])
            demo.misfired.append(r.id)
        elif kind == "r":
            run(store, r, owner, None)
            demo.running.append(r.id)
        else:
            store.swap([(r, cancel(r, now))])
            demo.cancelled.append(r.id)
    return demo


def finish(store: WheelStore, task_id: str, ok: bool = True) -> TaskRecord:
    """Record the end of a running task, as its worker would."""
    rec = store.get(task_id)
    assert rec is not None and rec.status == "running", rec
    started = rec.started or time.time()
    out = Outcome(ok=ok, started=started, finished=time.time(), result=pickle.dumps("done"),
                  error=None if ok else "RuntimeError: no")
    (done,) = store.swap([(rec, end_run(rec, out))])
    assert done is not None
    return done


def make_store(path: str, now: Optional[float] = None) -> tuple[SqliteDictStore, Demo]:
    store = SqliteDictStore(path)
    return store, fill(store, time.time() if now is None else now)


@dataclass
class Server:
    url: str           #: ends with "/"
    proc: subprocess.Popen
    log: str           #: the server's stderr

    def errors(self) -> str:
        with open(self.log) as fh:
            return fh.read()


def web_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from timewheel.cli import main; main()", "web", *args]


@contextmanager
def serve(store_path: str, *options: str, env: Optional[dict] = None,
          timeout: float = 20.0) -> Iterator[Server]:
    """A live ``timewheel web STORE --port 0 --json OPTIONS`` until the block ends; then
    SIGTERM, and it must exit 0 having logged no error."""
    log = tempfile.NamedTemporaryFile("w+", prefix="timewheel-web-", suffix=".log", delete=False)
    proc = procs.popen(web_command(store_path, "--port", "0", "--json", *options),
                       stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                line = proc.stdout.readline()
                break
        assert line.startswith("{"), f"timewheel web did not start: {line}{open(log.name).read()}"
        started = json.loads(line)
        assert started["pid"] == proc.pid and started["actions"] == ("--allow-actions" in options)
        yield Server(started["url"], proc, log.name)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise AssertionError("timewheel web did not stop on SIGTERM") from None
            assert code == 0, f"timewheel web exited {code}"
        text = open(log.name).read()
        log.close()
        os.unlink(log.name)
        assert "Traceback" not in text, text
