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

HOSTILE_NAME = "<script>alert('name')</script>\x1b[31mred\u202e"
HOSTILE_ERROR = "ValueError: <img src=x onerror=alert('error')> \x1b]0;pwned\x07"
DEAD_OWNER = "999999999:deadbeef:999999999"
#: task ids a URL could take apart: dot segments (also percent-encoded), slashes, query and
#: fragment marks, a verb of the action routes, text that is not ASCII
TRICKY_IDS = [".", "..", "a/../b", "%2e", "?x", "#y", "\u00e9\u6642 \u263a", "a//b", "%2e%2e", "../x",
              "a/./b", ".%2e", "/lead", "trail/", "a b", "%", "x/retry", "a\\b", "tasks", "?", "#"]


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


def run(store: WheelStore, rec: TaskRecord, owner: str, ok: Optional[bool], late: float = 0.25,
        error: str = HOSTILE_ERROR) -> TaskRecord:
    """Take ``rec`` through a run as a worker would: start it; then, unless ``ok`` is None
    (left running), record its outcome."""
    started = rec.eta + late
    (running,) = store.swap([(rec, start_run(rec, owner, started))])
    assert running is not None
    if ok is None:
        return running
    out = (Outcome(ok=True, started=started, finished=started + 0.1, result=pickle.dumps({"sent": rec.id}))
           if ok else Outcome(ok=False, started=started, finished=started + 0.1, error=error,
                              traceback="Traceback (most recent call last):\n  File \"app.py\", line 7\n"
                                        + error))
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


def add_tricky(store: WheelStore, now: float) -> None:
    """A pending task for each of TRICKY_IDS, the first ten due before any other task."""
    store.add([record(task_id, now + 30 + i, name="tricky.ids") for i, task_id in enumerate(TRICKY_IDS)])


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


def web_command(*args: str, files: Optional[int] = None) -> list[str]:
    """``timewheel web ARGS``; ``files``: the process may open that many (RLIMIT_NOFILE)."""
    limit = ("" if files is None else
             f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, "
             "resource.getrlimit(resource.RLIMIT_NOFILE)[1])); ")
    return [sys.executable, "-c", limit + "from timewheel.cli import main; main()", "web", *args]


@contextmanager
def serve(store_path: str, *options: str, env: Optional[dict] = None,
          timeout: float = 20.0, files: Optional[int] = None) -> Iterator[Server]:
    """A live ``timewheel web STORE --port 0 --json OPTIONS`` until the block ends; then
    SIGTERM, and it must exit 0 having logged no error."""
    log = tempfile.NamedTemporaryFile("w+", prefix="timewheel-web-", suffix=".log", delete=False)
    proc = subprocess.Popen(web_command(store_path, "--port", "0", "--json", *options, files=files),
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
                proc.wait()
                raise AssertionError("timewheel web did not stop on SIGTERM") from None
            assert code == 0, f"timewheel web exited {code}"
        text = open(log.name).read()
        log.close()
        os.unlink(log.name)
        assert "Traceback" not in text, text


# -- other processes on the same store: writers, and an application that mounts the view ---------

_WRITER = """
import sys, time
from tests.web_server import record
from timewheel.store import SqliteDictStore
store = SqliteDictStore(sys.argv[1])
print("open", flush=True)
for line in sys.stdin:
    prefix, n = line.split()
    now = time.time()
    store.add([record(f"{prefix}{i:04d}", now + 3600, name="live.add") for i in range(int(n))])
    print("added", flush=True)
store.close()
"""

_MOUNTED = """
import sys
from werkzeug.serving import make_server
from timewheel import TimeWheel
from timewheel.web import make_app
hu = TimeWheel(sys.argv[1])
server = make_server("127.0.0.1", 0, make_app(hu), threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def _line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    if select.select([proc.stdout], [], [], timeout)[0]:
        return proc.stdout.readline().strip()
    return ""


def _stop(proc: subprocess.Popen, how: Optional[int] = signal.SIGTERM) -> int:
    """Send ``how`` (None: nothing, it is ending on its own) and wait, boundedly, for the exit."""
    if how is not None and proc.poll() is None:
        proc.send_signal(how)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"process {proc.pid} did not stop") from None


class Writer:
    """Another process with the store open for writing (as an application is), adding tasks
    when told; it keeps the store open until :meth:`exit` (a clean close, as at the end of
    every application process)."""

    def __init__(self, path: str) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-c", _WRITER, path], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": root})
        assert _line(self.proc, 20) == "open", "the writer did not open the store"

    def add(self, prefix: str, n: int) -> None:
        """Add ``n`` tasks ``<prefix>0000``...; returns once they are committed."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{prefix} {n}\n")
        self.proc.stdin.flush()
        assert _line(self.proc, 20) == "added", "the writer did not add the tasks"

    def exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert _stop(self.proc, None) == 0


@contextmanager
def writer(path: str) -> Iterator[Writer]:
    w = Writer(path)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            _stop(w.proc, signal.SIGKILL)


@contextmanager
def serve_mounted(path: str) -> Iterator[str]:
    """An application process with ``TimeWheel(path)`` whose view (``make_app(hu)``) it
    serves on a free port; yields the view's URL."""
    proc = subprocess.Popen([sys.executable, "-c", _MOUNTED, path], text=True, stdout=subprocess.PIPE)
    try:
        port = _line(proc, 20)
        assert port.isdigit(), "the application did not start"
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(proc)
