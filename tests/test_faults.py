"""Faults of the disk under a real store: full, and failing writes.

A full disk is a real one: a small tmpfs mounted by the test (the tests run as root, here
and in CI; if mounting is impossible they fail -- they never skip) and filled up with a
ballast file.  A failing write is the kernel's too: a process whose file-size limit
(RLIMIT_FSIZE) is reached gets EFBIG from every write past it, which SQLite reports as a
disk I/O error.

What must hold: a refused ``delay()`` raises StoreError naming the problem and loses nothing;
``start()`` raises if the store cannot be used at all (the store, its ``.lock`` file); while
a started wheel's disk is full its boss backs off exponentially, logs once when it starts
failing and once when it recovers (never a traceback, never once a second), and
``hu.health()`` says it is not ok and why; once space is freed it recovers on its own: the
outcomes it kept meanwhile are recorded, and every task runs exactly once.  With no logging
configured, none of this reaches stderr.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Iterator

import pytest

from timewheel import StoreError, TimeWheel
from timewheel.boss import _BACKOFF_MAX, _BACKOFF_MIN, Boss
from timewheel.pool import WorkerPool
from timewheel.records import PENDING, SUCCEEDED
from timewheel.store import MemoryStore
from timewheel.testing import processes as procs

from .conftest import ROOT, check_file_store, tally, wait_for


class Disk:
    """A small real file system (tmpfs) that the test can fill up and free again."""

    def __init__(self, path: str, size: str = "4m") -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        done = procs.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                         capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs at {path} ({done.stderr.strip()}): the fault tests "
                        "need a real full disk and run as root (as CI does)")
        self.ballast = os.path.join(path, "ballast")

    def fill(self) -> None:
        """Write the ballast until the disk refuses a single byte more."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        os.remove(self.ballast)

    def unmount(self) -> None:
        procs.run(["umount", "-l", self.path], check=True, timeout=60)


@pytest.fixture
def disk(tmp_path) -> Iterator[Disk]:
    d = Disk(str(tmp_path / "disk"))
    yield d
    d.unmount()


class Records(logging.Handler):
    """Every record the library logs, with when and whether it carried a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((time.monotonic(), record))

    def since(self, t: float, level: int = logging.WARNING, about: str = "") -> list[logging.LogRecord]:
        """What was logged from ``t`` on, at ``level`` or above; with ``about``, only records
        naming it (a store's path: another test's wheel in this process -- a task still
        finishing after its test -- may log meanwhile)."""
        return [r for at, r in self.seen if at >= t and r.levelno >= level and about in r.getMessage()]


@pytest.fixture
def logged() -> Iterator[Records]:
    h = Records()
    lib = logging.getLogger("timewheel")
    old = lib.level
    lib.addHandler(h)
    lib.setLevel(logging.DEBUG)
    yield h
    lib.removeHandler(h)
    lib.setLevel(old)


class Spy:
    """Wraps a real store's public methods to see each call the boss thread makes (the
    outermost, when one calls another) and whether it raised.  The store does the work; the
    spy only watches."""

    def __init__(self, store: Any) -> None:
        self.calls: list[tuple[float, str, bool]] = []
        self._depth = threading.local()
        for name in dir(type(store)):
            if not name.startswith("_") and callable(getattr(store, name)):
                setattr(store, name, self._wrap(getattr(store, name), name))

    def _wrap(self, method: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            if threading.current_thread().name != "timewheel-boss" or depth:
                return method(*args, **kwargs)
            self._depth.n = 1
            try:
                out = method(*args, **kwargs)
            except Exception:
                self.calls.append((time.monotonic(), name, True))
                raise
            finally:
                self._depth.n = 0
            self.calls.append((time.monotonic(), name, False))
            return out
        return call

    def failures(self, since: float) -> list[float]:
        return [t for t, _, raised in self.calls if raised and t >= since]


def snapshot(hu: TimeWheel) -> dict[str, tuple[str, float]]:
    from .conftest import records_of
    return {r.id: (r.status, r.eta) for r in records_of(hu.store)}


# -- delay() on a full disk ----------------------------------------------------------------------

def test_delay_on_a_full_disk_fails_cleanly_and_loses_nothing(disk: Disk) -> None:
    db = os.path.join(disk.path, "tasks.db")
    hu = TimeWheel(db)
    f = hu.task(name="f")(lambda x: x)
    kept = [f.delay(i, count_down=3600).id for i in range(50)]
    disk.fill()
    # SQLite may still fit a few rows into pages it holds already: those are committed and
    # kept like any other; the first refusal is what is tested.
    tries = 0
    while True:
        tries += 1
        assert tries <= 10_000, "10000 tasks fitted on a full disk"
        before = snapshot(hu)
        try:
            kept.append(f.delay(os.urandom(1000), count_down=3600).id)
        except StoreError as exc:
            refusal = exc
            break
    tally("faults: delay() on a full disk", tries)
    assert "disk is full" in str(refusal) and "nothing was written" in str(refusal), refusal
    assert snapshot(hu) == before
    with pytest.raises(StoreError, match="disk is full"):       # a batch: all or nothing
        with hu.batch():
            for i in range(20):
                f.delay(i, task_id=f"batch-{i}")
    with pytest.raises(StoreError, match="disk is full"):       # a cancel, too
        hu.cancel(kept[0])
    assert snapshot(hu) == before
    disk.free()
    assert f.delay("after", count_down=3600).status == PENDING
    assert hu.cancel(kept[0]) is True
    after = snapshot(hu)
    assert set(kept) <= set(after) and not any(k.startswith("batch-") for k in after)
    assert all(after[k][0] == PENDING for k in kept[1:])
    hu.close()
    check_file_store(db)


# -- start() on a store that cannot be used ------------------------------------------------------

def boss_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "timewheel-boss"]


def test_start_raises_when_a_new_store_cannot_be_created_on_a_full_disk(disk: Disk) -> None:
    disk.fill()
    hu = TimeWheel(os.path.join(disk.path, "tasks.db"))
    hu.task(name="f")(lambda: None)
    with pytest.raises(StoreError, match="disk is full"):
        hu.start()
    assert not hu.running and hu.health() is None and boss_threads() == []
    disk.free()
    hu.start()                               # and once there is room it starts as usual
    assert hu.running and hu.health().ok
    hu.close()


def test_start_raises_when_the_lock_file_cannot_be_written(disk: Disk) -> None:
    """Issue 12 item 10: the .lock file on a full disk gave a raw OSError (errno 28)."""
    db = os.path.join(disk.path, "tasks.db")
    hu = TimeWheel(db, workers=1)
    f = hu.task(name="f")(lambda: "done")
    h = f.delay()                            # the store opens and works; no lock file yet
    assert not os.path.exists(db + ".lock")
    disk.fill()
    with pytest.raises(StoreError) as caught:
        hu.start()
    assert ".lock" in str(caught.value) and "No space left" in str(caught.value), caught.value
    assert not hu.running and boss_threads() == []
    disk.free()
    hu.start()
    assert h.result(timeout=10) == "done"
    hu.close()


# -- a started wheel whose disk fills up ---------------------------------------------------------

def test_backoff_doubles_up_to_five_seconds() -> None:
    """The pause between failing rounds: exponential from 50 ms, capped at 5 s (the real
    boss, without a thread: _failing() is what its loop calls after a failed round)."""
    boss = Boss(MemoryStore(), WorkerPool(1, lambda rec: None))   # type: ignore[arg-type]
    pauses = [boss._failing(StoreError("the disk is full")) for _ in range(10)]
    assert pauses[0] == _BACKOFF_MIN == 0.05 and _BACKOFF_MAX == 5.0
    assert pauses == [min(5.0, 0.05 * 2 ** i) for i in range(10)]
    boss._healthy()                               # a round that works resets it
    assert boss._failing(StoreError("again")) == 0.05


def test_running_wheel_on_a_full_disk_backs_off_reports_and_recovers(disk: Disk, logged: Records) -> None:
    db = os.path.join(disk.path, "tasks.db")
    hu = TimeWheel(db, workers=2)
    gate = threading.Event()
    runs: list[str] = []

    @hu.task(name="slow")
    def slow(tag: str) -> str:
        gate.wait(30)
        runs.append(tag)
        return tag

    @hu.task(name="quick")
    def quick(tag: str) -> str:
        runs.append(tag)
        return tag

    hu.start()
    spy = Spy(hu.store)
    blocked = [slow.delay(f"s{i}") for i in range(2)]
    wait_for(lambda: hu.health().running == 2, what="both slow tasks running")
    later = [quick.delay(f"q{i}", count_down=1.0 + i / 4) for i in range(4)]   # due while full
    t0 = time.monotonic()
    disk.fill()
    gate.set()                                   # their outcomes cannot be recorded now
    wait_for(lambda: not hu.health().ok, timeout=5, what="health says not ok")
    h = hu.health()
    assert "disk is full" in h.error and h.since is not None, h
    time.sleep(4.0)
    failures = spy.failures(t0)
    tally("faults: failing boss rounds while full", len(failures))
    # Backoff: 50 ms doubling -- about 7 rounds in 4 s, where a round per tick or per ring
    # would be dozens; the gaps grow.
    assert 3 <= len(failures) <= 12, failures
    gaps = [b - a for a, b in zip(failures, failures[1:])]
    assert max(gaps) >= 1.0 and all(g <= _BACKOFF_MAX + 1.0 for g in gaps), gaps
    assert not hu.health().ok
    trouble = logged.since(t0, about=db)
    assert len(trouble) == 1, [r.getMessage() for r in trouble]      # once, not per round
    assert trouble[0].levelno == logging.ERROR and trouble[0].exc_info is None
    assert "disk is full" in trouble[0].getMessage()
    assert [r.status for r in map(hu.get, [b.id for b in blocked])] == ["running"] * 2

    t1 = time.monotonic()
    disk.free()
    wait_for(lambda: hu.health().ok, timeout=_BACKOFF_MAX + 3, what="health ok again")
    wait_for(lambda: all(x.status == SUCCEEDED for x in blocked + later), timeout=10,
             what="every task recorded as succeeded")
    again = logged.since(t1, about=db)
    assert [r.levelno for r in again] == [logging.WARNING], [r.getMessage() for r in again]
    assert "works again" in again[0].getMessage()
    assert sorted(runs) == sorted(["s0", "s1"] + [f"q{i}" for i in range(4)])    # each once
    assert [x.result(timeout=1) for x in blocked] == ["s0", "s1"]
    hu.close()
    check_file_store(db)


# -- a write that fails (EFBIG past the process's file-size limit) ------------------------------

IO_ERROR_SCRIPT = textwrap.dedent("""
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG from write(), not a signal
    from timewheel import StoreError, TimeWheel
    db = sys.argv[1]
    hu = TimeWheel(db, workers=1)
    f = hu.task(name="f")(lambda x: x)
    kept = [f.delay(i, count_down=3600).id for i in range(20)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # below the end of the write-ahead log, and of this process's bytes in the lock file
    limit = min(os.path.getsize(db + "-wal"), 64 + 8 * os.getpid())
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    for call in (lambda: f.delay(b"x" * 5000), hu.start):
        try:
            call()
            print("no error")
        except StoreError as exc:
            print("StoreError:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    hu.start()
    h = f.delay("after")
    print("after:", h.result(timeout=10), sorted(hu.get(k).status for k in kept) == ["pending"] * 20)
    hu.close()
""")


def test_failing_writes_raise_store_error_and_lose_nothing(tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    out = procs.run([sys.executable, "-c", IO_ERROR_SCRIPT, db], capture_output=True, text=True,
                    timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout
    assert lines[0].startswith("StoreError:") and "I/O error" in lines[0], lines[0]
    assert lines[1].startswith("StoreError:") and "File too large" in lines[1], lines[1]
    assert lines[2] == "after: after True"
    tally("faults: failing writes (EFBIG)", 2)
    check_file_store(db)


# -- nothing on stderr unless the app configures logging -----------------------------------------

QUIET_SCRIPT = textwrap.dedent("""
    import logging, os, sys, threading, time
    if sys.argv[2] == "configured":
        logging.basicConfig(level=logging.WARNING)
    from timewheel import TimeWheel
    disk = sys.argv[1]
    db = os.path.join(disk, "tasks.db")
    old = os.umask(0o022); open(db, "w").close(); os.umask(old)   # adopted: made private
    hu = TimeWheel(db, workers=1)
    gate = threading.Event()

    @hu.task(name="slow")
    def slow():
        gate.wait(30)

    @hu.task(name="boom")
    def boom():
        raise RuntimeError("a task that fails")

    @hu.on("failed")
    def hook(rec, exc):
        raise ValueError("a hook that raises")

    hu.start()
    failing = boom.delay()
    while hu.get(failing.id).status != "failed":
        time.sleep(0.02)
    h = slow.delay()
    while hu.health().running < 1:
        time.sleep(0.01)
    fd = os.open(os.path.join(disk, "ballast"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\\0" * 4096)
    except OSError:
        pass
    os.close(fd)
    gate.set()
    while hu.health().ok:
        time.sleep(0.01)
    os.remove(os.path.join(disk, "ballast"))
    while not hu.health().ok:
        time.sleep(0.05)
    h.result(timeout=10)
    hu.close()
    print("done")
""")


def test_nothing_reaches_stderr_without_logging_configured(disk: Disk) -> None:
    """Issue 12 item 11: warnings reached stderr through Python's last-resort handler.  The
    same script with logging configured shows what was logged, so the quiet run is not
    quiet for want of anything to say."""
    def run(mode: str) -> subprocess.CompletedProcess:
        for name in os.listdir(disk.path):
            os.remove(os.path.join(disk.path, name))
        return procs.run([sys.executable, "-c", QUIET_SCRIPT, disk.path, mode], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    loud = run("configured")
    assert loud.returncode == 0 and loud.stdout == "done\n", loud.stderr
    for said in ("made it private", "a hook that raises", "disk is full", "works again"):
        assert said in loud.stderr, (said, loud.stderr)
    quiet = run("unconfigured")
    assert quiet.returncode == 0 and quiet.stdout == "done\n", quiet.stderr
    assert quiet.stderr == ""
