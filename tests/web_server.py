"""Helpers for the web view's tests: a store holding tasks in every state (filled by
:func:`timewheel.testing.fill`) and tasks whose ids a URL could take apart, the end of a
running task's run, and other processes on the same store (a writer, an application that mounts
the view); :func:`timewheel.testing.serve` is the live ``timewheel web``."""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from timewheel.records import Outcome, TaskRecord, end_run
from timewheel.store import SqliteDictStore, WheelStore
from timewheel.testing import Demo, fill, record
from timewheel.testing import processes as procs

#: task ids a URL could take apart: dot segments (also percent-encoded), slashes, query and
#: fragment marks, a verb of the action routes, text that is not ASCII
TRICKY_IDS = [".", "..", "a/../b", "%2e", "?x", "#y", "\u00e9\u6642 \u263a", "a//b", "%2e%2e", "../x",
              "a/./b", ".%2e", "/lead", "trail/", "a b", "%", "x/retry", "a\\b", "tasks", "?", "#"]


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


# -- other processes on the same store: writers, and an application that mounts the view ---------

_WRITER = """
import sys, time
from timewheel.testing import record
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
        proc.wait(10)
        raise AssertionError(f"process {proc.pid} did not stop") from None


class Writer:
    """Another process with the store open for writing (as an application is), adding tasks
    when told; it keeps the store open until :meth:`exit` (a clean close, as at the end of
    every application process)."""

    def __init__(self, path: str) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = procs.popen([sys.executable, "-c", _WRITER, path], cwd=root, text=True,
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
    proc = procs.popen([sys.executable, "-c", _MOUNTED, path], text=True, stdout=subprocess.PIPE)
    try:
        port = _line(proc, 20)
        assert port.isdigit(), "the application did not start"
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(proc)
