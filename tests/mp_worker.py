"""Helpers for the multi-process tests: a worker process, its tasks, and log parsing.

Run as a script it is one worker process of a test::

    python tests/mp_worker.py --db tasks.db --log runs.log --events events.log --start \
        --enqueue 400 --spread 3 --stop-file stop

Every task appends ``start <tag> <pid> <time>`` and ``end <tag> <pid> <time>`` lines to a run
log opened with O_APPEND (one ``write()`` per line, so lines from many processes never mix).
The tests count runs from those lines, never from the store's own statuses.

The worker writes its own events (``ready``, ``enq``, ``lead``, ``error``, ``exit``) to an
events file the same way; ``lead <pid> <time>`` is written when ``hu.is_leader`` turns true.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Callable, Iterable, Optional

from timewheel import TimeWheel
from timewheel.testing import processes as procs

HERE = os.path.dirname(os.path.abspath(__file__))
TASK_NAME = "mp.record"


# -- lines, appended atomically ---------------------------------------------------------------

def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str) -> list[list[str]]:
    """The complete lines of ``path``, split: a line still being written (no newline yet) is
    left for the next read -- a reader can see an append half done."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    return [ln.split() for ln in text.split("\n")[:-1] if ln.strip()]


# -- the task every test process registers -----------------------------------------------------

def record(log: str, tag: str, sleep: float = 0.0) -> str:
    append_line(log, f"start {tag} {os.getpid()} {time.time():.6f}")
    if sleep:
        time.sleep(sleep)
    append_line(log, f"end {tag} {os.getpid()} {time.time():.6f}")
    return tag


def make_wheel(db: str, *, workers: int = 4, tick: float = 0.25, busy_timeout: float = 10.0,
               max_crashes: int = 3, clock_offset: float = 0.0) -> tuple[TimeWheel, object]:
    """A TimeWheel on ``db`` with the test task registered under a fixed name (and a clock
    ``clock_offset`` seconds off, for clock-skew tests)."""
    clock = time.time if not clock_offset else (lambda: time.time() + clock_offset)
    hu = TimeWheel(db, workers=workers, tick=tick, slots=600, busy_timeout=busy_timeout,
                   max_crashes=max_crashes, clock=clock)
    task = hu.task(name=TASK_NAME)(record)
    return hu, task


def watch_leadership(hu: TimeWheel, events: str, interval: float = 0.005) -> threading.Thread:
    """Write ``lead <pid> <time>`` to ``events`` when this process starts ticking."""
    def loop() -> None:
        was = False
        while True:
            now = hu.is_leader
            if now and not was:
                append_line(events, f"lead {os.getpid()} {time.time():.6f}")
            was = now
            time.sleep(interval)
    t = threading.Thread(target=loop, name="mp-lead-watch", daemon=True)
    t.start()
    return t


class _ErrorsToFile(logging.Handler):
    """Every WARNING+ record of the ``timewheel`` logger, as one ``error`` line."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, rec: logging.LogRecord) -> None:
        msg = rec.getMessage().replace("\n", " | ")
        if rec.exc_info and rec.exc_info[1] is not None:
            msg += f" | {rec.exc_info[0].__name__}: {rec.exc_info[1]}"
        append_line(self.path, f"error {os.getpid()} {time.time():.6f} {rec.levelname} {msg}")


def log_errors_to(path: str) -> None:
    logging.getLogger("timewheel").addHandler(_ErrorsToFile(path))


# -- parsing run logs --------------------------------------------------------------------------

class Runs:
    """What a run log says: starts and ends per tag, in file order."""

    def __init__(self, path: str) -> None:
        self.starts: dict[str, list[str]] = defaultdict(list)      # tag -> [pid, ...]
        self.ends: dict[str, list[str]] = defaultdict(list)
        self.start_times: dict[str, list[float]] = defaultdict(list)
        for parts in read_lines(path):
            kind, tag, pid, t = parts[:4]
            if kind == "start":
                self.starts[tag].append(pid)
                self.start_times[tag].append(float(t))
            elif kind == "end":
                self.ends[tag].append(pid)

    @property
    def total_starts(self) -> int:
        return sum(len(v) for v in self.starts.values())

    def duplicates(self) -> dict[str, int]:
        return {t: len(p) for t, p in self.starts.items() if len(p) > 1}

    def finished(self) -> set[str]:
        return set(self.ends)

    def rerun_after_end(self) -> dict[str, list[str]]:
        """Tasks run again although an earlier run logged its end (and so was not cut short
        by its process dying, the one documented re-run), with the pids of their starts."""
        return {t: pids for t, pids in self.starts.items()
                if len(pids) > 1 and (len(set(pids)) < len(pids)
                                      or any(p in self.ends[t] for p in pids[:-1]))}


def events_of(path: str, kind: str) -> list[list[str]]:
    return [p for p in read_lines(path) if p and p[0] == kind]


def wait_for(cond: Callable[[], object], timeout: float, interval: float = 0.02,
             what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


# -- starting and killing worker processes -----------------------------------------------------

def spawn(args: Iterable[str], **kw) -> subprocess.Popen:
    """Start ``python tests/mp_worker.py ARGS`` (stdout/stderr to a file next to the db)."""
    return procs.popen([sys.executable, os.path.join(HERE, "mp_worker.py"), *args],
                       start_new_session=True, **kw)


def kill_all(procs: Iterable[subprocess.Popen], sig: int = signal.SIGKILL) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def stop_all(procs: list[subprocess.Popen], stop_file: str, timeout: float = 20.0) -> list[int]:
    """Ask the workers to stop (they wait for their tasks), SIGKILL whoever is left."""
    append_line(stop_file, "stop")
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(-999)
    kill_all(procs)
    return codes


# -- the worker process ------------------------------------------------------------------------

def _enqueued_by(events: str, prefix: str) -> list[tuple[str, str]]:
    """(task id, tag) of every task enqueued with tag prefix ``prefix``, in index order."""
    rows = [(p[2], p[3]) for p in events_of(events, "enq") if p[3].rsplit("-", 1)[0] == prefix]
    return sorted(rows, key=lambda r: int(r[1].rsplit("-", 1)[1]))


def _cancel_peer(hu: TimeWheel, events: str, peer: str) -> None:
    """Cancel the even-numbered tasks of ``peer`` close to their eta, racing their claim:
    some just before it, some just after.  Logs ``cancel <tag> <pid> <True|False>``."""
    import random
    rnd = random.Random(os.getpid())
    victims = [(hu.get(i).record.eta, i, tag) for i, tag in _enqueued_by(events, peer)
               if int(tag.rsplit("-", 1)[1]) % 2 == 0]
    for eta, task_id, tag in sorted(victims):
        time.sleep(max(0.0, eta + rnd.uniform(-0.05, 0.02) - time.time()))
        ok = hu.cancel(task_id)
        append_line(events, f"cancel {tag} {os.getpid()} {ok}")


def _await_results(hu: TimeWheel, events: str, prefix: str) -> None:
    """Wait for each own task's result; logs ``result <tag> <pid> <value or TaskFailed:status>``."""
    from timewheel import TaskFailed
    for task_id, tag in _enqueued_by(events, prefix):
        try:
            value = hu.get(task_id).result(timeout=30)
        except TaskFailed as exc:
            value = f"TaskFailed:{exc.status}"
        except Exception as exc:
            value = f"{type(exc).__name__}"
        append_line(events, f"result {tag} {os.getpid()} {value}")

def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--log", required=True, help="run log the tasks append to")
    ap.add_argument("--events", required=True)
    ap.add_argument("--stop-file", default=None, help="stop (gracefully) once this file exists")
    ap.add_argument("--start", action="store_true", help="call hu.start() (tick and run tasks)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tick", type=float, default=0.25)
    ap.add_argument("--busy-timeout", type=float, default=10.0)
    ap.add_argument("--max-crashes", type=int, default=3)
    ap.add_argument("--enqueue", type=int, default=0, help="tasks to enqueue")
    ap.add_argument("--threads", type=int, default=1, help="threads sharing the enqueueing")
    ap.add_argument("--count-down", type=float, default=0.0, help="delay of the first task")
    ap.add_argument("--spread", type=float, default=0.0, help="etas spread over this many s")
    ap.add_argument("--eta", type=float, default=None, help="absolute eta of every task")
    ap.add_argument("--task-sleep", type=float, default=0.0)
    ap.add_argument("--tag", default=None, help="tag prefix (default: the pid)")
    ap.add_argument("--go-file", default=None, help="wait for this file before enqueueing")
    ap.add_argument("--lifetime", type=float, default=120.0, help="exit after this long anyway")
    ap.add_argument("--clock-offset", type=float, default=0.0,
                    help="this process's clock is off by this many seconds (TimeWheel(clock=))")
    ap.add_argument("--peers", type=int, default=0,
                    help="with --cancel-peer/--await-results: wait for this many 'enqueued' events first")
    ap.add_argument("--cancel-peer", default=None,
                    help="cancel every other task of the process with this tag, around its eta")
    ap.add_argument("--await-results", action="store_true",
                    help="wait for the result of each own task (hu.get(id).result())")
    ap.add_argument("--hook-sleep", type=float, default=0.0,
                    help="register a 'succeeded' hook that sleeps this long (a slow hook)")
    a = ap.parse_args(argv)

    log_errors_to(a.events)
    hu, task = make_wheel(a.db, workers=a.workers, tick=a.tick, busy_timeout=a.busy_timeout,
                          max_crashes=a.max_crashes, clock_offset=a.clock_offset)
    pid = os.getpid()
    if a.hook_sleep:
        hu.on("succeeded", lambda rec, exc: time.sleep(a.hook_sleep))
    if a.start:
        hu.start()
        watch_leadership(hu, a.events)
    append_line(a.events, f"ready {pid} {time.time():.6f}")
    if a.go_file:
        wait_for(lambda: os.path.exists(a.go_file), timeout=60, interval=0.005, what="go file")

    prefix = a.tag or str(pid)
    failures: Counter = Counter()

    def enqueue(idx: Iterable[int]) -> None:
        for i in idx:
            if a.eta is not None:
                eta = a.eta
            else:
                eta = time.time() + a.count_down + (a.spread * i / max(1, a.enqueue))
            try:
                h = task.schedule((a.log, f"{prefix}-{i}", a.task_sleep), eta=eta)
            except Exception as exc:   # counted and reported: the test asserts there are none
                failures[type(exc).__name__] += 1
                append_line(a.events, f"delay-error {pid} {time.time():.6f} "
                                      f"{type(exc).__name__}: {exc}".replace("\n", " "))
                continue
            append_line(a.events, f"enq {pid} {h.id} {prefix}-{i} {eta:.6f}")

    if a.enqueue:
        threads = [threading.Thread(target=enqueue, args=(range(k, a.enqueue, a.threads),))
                   for k in range(a.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        append_line(a.events, f"enqueued {pid} {a.enqueue - sum(failures.values())}")

    if a.peers:
        wait_for(lambda: len(events_of(a.events, "enqueued")) >= a.peers, 60, what="peers' enqueueing")
    threads = []
    if a.cancel_peer:
        threads.append(threading.Thread(target=_cancel_peer, args=(hu, a.events, a.cancel_peer)))
    if a.await_results:
        threads.append(threading.Thread(target=_await_results, args=(hu, a.events, prefix)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    deadline = time.monotonic() + a.lifetime
    while time.monotonic() < deadline:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        time.sleep(0.02)
    if a.start:
        hu.stop(wait=True, timeout=10)
    append_line(a.events, f"exit {pid} {time.time():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
