"""Group commit in the file store (store/sqlite_group.py), its waits for the write lock
(store/connection.py) and its checkpoints (store/sqlite_checkpoint.py), with real threads,
real processes, a real full disk and SIGKILL:

* concurrent writes of one process share transactions, and each caller returns its own
  result once it is committed: every task whose ``delay()`` returned is stored, once;
* an error reaches exactly the writes it concerns: a taken id, a batch with an id given
  twice, a batch too large for the disk fail alone, whole, and the others of their group
  commit; a lock held too long fails every write that waited for it, and writes nothing;
* SIGKILL at random moments of two processes' group commits (50 times) loses no task whose
  ``delay()`` returned and leaves no half of a batch (tests/group_kill.py);
* a writer takes the lock within milliseconds of its release (SQLite's busy handler sleeps
  up to 100 ms at a time);
* ``durability="fsync"``: every writer's connection commits with ``synchronous=FULL``, and
  concurrent writers share commits;
* the WAL is copied back and starts over while processes write without a pause.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel import DuplicateTask, StoreBusy, StoreError, TimeWheel
from timewheel.records import CANCELLED, PENDING, SUCCEEDED, Outcome, cancel, end_run
from timewheel.store import SqliteDictStore
from timewheel.store.base import Claimed
from timewheel.store.connection import busy_pause, is_busy
from timewheel.testing import processes as procs

from .conftest import ROOT, check_file_store, count_of, make_record, wait_for
from .test_faults import Disk


def _stored_ids(db: str) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [k[2:] for (k,) in con.execute("SELECT key FROM timewheel WHERE key >= 't:' AND key < 't;'")]
    finally:
        con.close()


def in_threads(calls: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Start each call in a thread of its own; the threads, and the list each fills in with
    ("ok", result) or ("error", exception) once it ends."""
    out: list[Any] = [None] * len(calls)

    def run(k: int) -> None:
        try:
            out[k] = ("ok", calls[k]())
        except BaseException as exc:       # the test reads it
            out[k] = ("error", exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    return threads, out


def _as_one_group(store: SqliteDictStore, calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run ``calls`` in threads while this thread holds the store's lock, so that all of them
    queue; then let go: one leader runs them as one group.  Their outcomes, in order."""
    group = store.file.group
    before = group.commits
    with store.file.lock:
        threads, out = in_threads(calls)
        # the first write's caller leads and waits for the lock; the others queue behind it
        wait_for(lambda: group.waiting == len(calls) - 1, 10, what="every write queued")
    for t in threads:
        t.join(30)
    assert group.commits - before <= len(calls)
    return out


# -- sharing ------------------------------------------------------------------------------------
def test_threads_share_commits_and_every_returned_task_is_stored_once(tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    hu = TimeWheel(db)

    @hu.task(name="t")
    def t(i: int) -> None: ...

    threads, per = 8, 300
    start = threading.Barrier(threads)
    returned: list[list[str]] = [[] for _ in range(threads)]

    def enqueue(k: int) -> None:
        start.wait()
        for i in range(per):
            returned[k].append(t.delay(i, count_down=3600).id)

    ts = [threading.Thread(target=enqueue, args=(k,)) for k in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(60)
    ids = [i for r in returned for i in r]
    assert len(ids) == threads * per == len(set(ids))
    stored = _stored_ids(db)
    assert sorted(stored) == sorted(ids)                  # each once, none missing, none extra
    group = hu.store.file.group
    assert group.grouped > 0 and group.commits < threads * per, (group.commits, group.grouped)
    assert count_of(hu.store, PENDING) == threads * per
    hu.close()
    check_file_store(db)


def test_an_error_reaches_only_the_writes_it_concerns(tmp_path) -> None:
    """One group: two good delays, a taken id, a batch that gives an id twice, a good batch,
    a swap, a conflicting swap.  Each gets its own outcome; the failed ones wrote nothing;
    the rest committed together."""
    db = str(tmp_path / "tasks.db")
    s = SqliteDictStore(db)
    now = time.time()
    (taken,) = s.add([make_record("taken", now + 100)])
    (other,) = s.add([make_record("other", now + 100)])
    stale = other._replace(rev=other.rev + 5)
    out = _as_one_group(s, [
        lambda: s.add([make_record("a1", now + 100)]),
        lambda: s.add([make_record("taken", now + 50)]),
        lambda: s.add([make_record("c1", now + 100), make_record("c2", now + 100),
                       make_record("c1", now + 9)]),
        lambda: s.add([make_record("d1", now + 100), make_record("d2", now + 1)]),
        lambda: s.swap([(taken, cancel(taken, now))]),
        lambda: s.swap([(stale, cancel(stale, now))]),
        lambda: s.add([make_record("a2", now + 100)]),
    ])
    kinds = [k for k, _ in out]
    assert kinds == ["ok", "error", "error", "ok", "ok", "ok", "ok"], out
    assert isinstance(out[1][1], DuplicateTask) and "taken" in str(out[1][1])
    assert isinstance(out[2][1], DuplicateTask)
    assert out[4][1][0].status == CANCELLED and out[5][1] == [None]     # the stale swap: refused
    assert sorted(_stored_ids(db)) == ["a1", "a2", "d1", "d2", "other", "taken"]   # no c1, c2
    assert s.get("taken").status == CANCELLED and s.get("taken").eta == taken.eta
    assert s.get("other").status == PENDING
    assert s.file.group.groups >= 1
    s.close()
    check_file_store(db)


def test_a_failure_of_work_in_a_group_is_raised_in_its_caller_only(tmp_path) -> None:
    s = SqliteDictStore(str(tmp_path / "tasks.db"))
    group = s.file.group

    def boom() -> None:
        s.file.x("INSERT INTO timewheel (key, value, pos, name) VALUES ('t:half', x'00', 'b:', 'x')")
        raise RuntimeError("a bug in one write")

    out = _as_one_group(s, [lambda: s.add([make_record("x1", time.time() + 100)]),
                            lambda: group.run(boom),
                            lambda: s.add([make_record("x2", time.time() + 100)])])
    assert [k for k, _ in out] == ["ok", "error", "ok"]
    assert isinstance(out[1][1], RuntimeError) and "a bug in one write" in str(out[1][1])
    assert sorted(_stored_ids(s.path)) == ["x1", "x2"]            # its row went with it
    s.close()


def test_flow_controlled_claims_and_outcomes_share_a_group_with_delays(tmp_path) -> None:
    """The boss's writes take the same path as delay()'s (issue 25) and keep flow control's
    rules inside it (issue 21): one group holds a delay(), an outcome that frees a concurrency
    slot with the claim of the same round, a claim of a queue whose only task another limit
    holds, and a claim of a paused queue; each gets what it would alone, in one commit.
    (``claim()`` reads under the file's lock before it writes, so these go through
    ``record_and_claim()``, as a boss round with outcomes does.)"""
    db = str(tmp_path / "tasks.db")
    s = SqliteDictStore(db)
    now = time.time()
    one, other = ("one", 1, 0, 0.0), ("other", 1, 0, 0.0)
    s.add([make_record("x0", now - 3, limits=(one,)), make_record("x1", now - 2, limits=(one,)),
           make_record("o0", now - 3, queue="other", limits=(other,)),
           make_record("o1", now - 2, queue="other", limits=(other,)),
           make_record("r0", now - 1, queue="reports")])
    s.pause("reports")
    (x0,) = s.claim("me", time.time(), 5, queues=frozenset({"default"})).records
    (o0,) = s.claim("me", time.time(), 5, queues=frozenset({"other"})).records
    assert s.claim("me", time.time(), 5, queues=frozenset({"default"})).records == []   # x1: parked
    t = time.time()
    commits = s.file.group.commits
    out = _as_one_group(s, [
        lambda: s.add([make_record("new", now + 100)]),
        lambda: s.record_and_claim([(x0, end_run(x0, Outcome(True, t, t)))], "me", time.time(), 5,
                                   queues=frozenset({"default"})),
        lambda: s.record_and_claim([], "me", time.time(), 5, queues=frozenset({"other"})),
        lambda: s.record_and_claim([], "me", time.time(), 5, queues=frozenset({"reports"})),
    ])
    assert [k for k, _ in out] == ["ok"] * 4, out
    done, got = out[1][1]
    assert done[0].status == SUCCEEDED and [r.id for r in got.records] == ["x1"]   # x0's slot, freed
    assert out[2][1] == ([], Claimed([], None))               # o1 stays parked behind o0
    assert out[3][1][1].records == []                         # paused
    assert s.file.group.commits == commits + 1 and s.file.group.groups >= 1
    assert s.get("o1").status == PENDING and s.get("r0").status == PENDING
    assert {(ls.key, ls.running, ls.parked) for ls in s.limit_states(["one", "other"])} == {
        ("one", 1, 0), ("other", 1, 1)}
    s.close()
    check_file_store(db)


def test_a_batch_too_large_for_the_disk_fails_alone(tmp_path) -> None:
    """A real full disk: the group's commit fails, each write is tried on its own, and only
    the one that does not fit fails (StoreError naming the full disk, none of its tasks
    stored); the small ones of the same group are committed."""
    disk = Disk(str(tmp_path / "disk"), size="8m")
    try:
        db = os.path.join(disk.path, "tasks.db")
        s = SqliteDictStore(db)
        s.add([make_record(f"pre{i}", time.time() + 100) for i in range(20)])
        disk.fill()
        with open(disk.ballast, "r+b") as fh:           # leave ~400 KiB: room for small writes
            fh.truncate(os.path.getsize(disk.ballast) - 400 * 1024)
        now = time.time()
        big = [make_record(f"big{i}", now + 100, payload=os.urandom(2000)) for i in range(1500)]
        out = _as_one_group(s, [lambda: s.add([make_record("small1", now + 100)]),
                                lambda: s.add(big),
                                lambda: s.add([make_record("small2", now + 100)])])
        assert [k for k, _ in out] == ["ok", "error", "ok"], out
        assert isinstance(out[1][1], StoreError) and "disk is full" in str(out[1][1]), out[1][1]
        ids = set(_stored_ids(db))
        assert {"small1", "small2"} <= ids and not any(i.startswith("big") for i in ids)
        s.close()
        check_file_store(db)
    finally:
        disk.unmount()


def test_every_write_waiting_for_a_lock_held_too_long_gets_storebusy_and_writes_nothing(tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    s = SqliteDictStore(db, busy_timeout=0.3)
    s.add([make_record("before", time.time() + 100)])
    holder = _LockHolder(db)
    try:
        holder.hold()
        threads, out = in_threads([lambda i=i: s.add([make_record(f"w{i}", time.time() + 100)])
                                    for i in range(6)]
                                   + [lambda: s.add([make_record("b1", 1e9), make_record("b2", 1e9)])])
        for t in threads:
            t.join(30)
        assert all(k == "error" and isinstance(e, StoreBusy) for k, e in out), out
        assert all("0.3s" in str(e) for _, e in out)
    finally:
        holder.close()
    assert _stored_ids(db) == ["before"]
    s.add([make_record("after", time.time() + 100)])            # and it works again
    s.close()


# -- processes ----------------------------------------------------------------------------------
@pytest.mark.timeout(150)
@pytest.mark.parametrize("kills", [12, pytest.param(50, marks=pytest.mark.slow)])
def test_sigkill_in_the_middle_of_group_commits_loses_no_returned_task_and_no_half_batch(
        tmp_path, kills: int) -> None:
    """Two processes enqueue in 6 threads each (4 delay() loops, 2 batch loops) while their
    bosses claim and record outcomes, and are SIGKILLed at random moments, ``kills`` times
    (12 in the default suite, ~4 s; 50 under -m slow, ~15-30 s): every id logged after its
    delay() or batch returned is stored once, no batch is stored in part, the store is sound
    (tests/group_kill.py).  It catches a leader that tells its followers before COMMIT at
    the first kill."""
    r = procs.run([sys.executable, os.path.join(ROOT, "tests", "group_kill.py"), str(tmp_path),
                   str(kills), str(random.randrange(1 << 30))], capture_output=True, text=True, timeout=140)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["failures"] == [], out
    assert out["kills"] == kills and out["singles_logged"] > 0 and out["batches_logged"] > 0, out


class _LockHolder:
    """Another process that takes the write lock (a raw BEGIN IMMEDIATE) when told, for as
    long as told, and says when it let go (its time.time())."""

    CODE = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "for line in sys.stdin:\n"
            "    c.execute('BEGIN IMMEDIATE'); print('held', flush=True)\n"
            "    time.sleep(float(line)); c.execute('ROLLBACK')\n"
            "    print(repr(time.time()), flush=True)\n")

    def __init__(self, db: str) -> None:
        self.proc = procs.popen([sys.executable, "-c", self.CODE, db], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    def hold(self, seconds: float = 30.0) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"

    def released_at(self) -> float:
        assert self.proc.stdout
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_writers_take_the_lock_within_milliseconds_of_its_release(tmp_path) -> None:
    """SQLite's busy handler sleeps 100 ms at a time once a wait passed 228 ms: a writer that
    waited 0.35 s for another process's transaction wakes at 428 ms, ~80 ms after the lock
    was free; ours try again every 0.05-1.5 ms.  Seven times: 4 threads wait 0.35 s; the
    median of the lags from the release to the last return is < 20 ms."""
    db = str(tmp_path / "tasks.db")
    s = SqliteDictStore(db)
    s.add([make_record("x", time.time() + 100)])
    holder = _LockHolder(db)
    lags = []
    try:
        for trial in range(7):
            holder.hold(0.35)
            threads, out = in_threads([lambda i=f"{trial}-{k}": s.add([make_record(i, time.time() + 100)])
                                        for k in range(4)])
            for t in threads:
                t.join(30)
            done = time.time()
            assert [k for k, _ in out] == ["ok"] * 4, out
            lags.append(done - holder.released_at())
    finally:
        holder.close()
    lags.sort()
    assert lags[3] < 0.02, [round(x * 1e3, 1) for x in lags]
    s.close()


# -- durability ---------------------------------------------------------------------------------
def _synchronous(con: Any) -> int:
    return con.execute("PRAGMA synchronous").fetchone()[0]


def test_fsync_durability_commits_every_write_with_synchronous_full(tmp_path) -> None:
    db = str(tmp_path / "tasks.db")
    hu = TimeWheel(db, durability="fsync")

    @hu.task(name="t")
    def t(i: int) -> None: ...

    for i in range(10):                # (the first commit starts the checkpoints' thread)
        t.delay(i, count_down=60)
    f = hu.store.file
    wait_for(lambda: len(f.checkpoints.conns) == 2, 10, what="the checkpoints' connections")
    assert _synchronous(f.conn()._con) == 2                             # FULL
    assert all(_synchronous(c._con) == 2 for c in f.checkpoints.conns)
    hu.close()
    normal = TimeWheel(str(tmp_path / "normal.db"))
    assert normal.durability == "normal" and _synchronous(normal.store.file.conn()._con) == 1   # NORMAL
    normal.close()


def test_fsync_durability_shares_commits_between_threads(tmp_path) -> None:
    """8 threads enqueueing at once with durability="fsync": far fewer commits (each an
    fsync of the WAL) than tasks."""
    db = str(tmp_path / "tasks.db")
    hu = TimeWheel(db, durability="fsync")

    @hu.task(name="t")
    def t(i: int) -> None: ...

    start = threading.Barrier(8)

    def enqueue() -> None:
        start.wait()
        for i in range(100):
            t.delay(i, count_down=60)

    ts = [threading.Thread(target=enqueue) for _ in range(8)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(60)
    group = hu.store.file.group
    assert len(_stored_ids(db)) == 800
    assert group.commits < 400, (group.commits, group.groups, group.grouped)
    hu.close()


@pytest.mark.parametrize("value", ["full", "FSYNC", "", None, 1, "off"])
def test_durability_takes_normal_or_fsync_only(tmp_path, value: Any) -> None:
    with pytest.raises(ValueError, match="durability must be 'normal' or 'fsync'"):
        TimeWheel(str(tmp_path / "tasks.db"), durability=value)
    assert not os.path.exists(tmp_path / "tasks.db")


@pytest.mark.parametrize("url", ["redis://localhost:1/0", "postgresql://localhost:1/db"])
def test_durability_fsync_is_refused_for_a_server(url: str) -> None:
    with pytest.raises(ValueError, match="a server's durability is its own setting"):
        TimeWheel(url, durability="fsync")


# -- the WAL ------------------------------------------------------------------------------------
def _wal_pages(db: str) -> int:
    """Pages in the WAL now (what a checkpoint would copy back), read with plain sqlite3."""
    con = sqlite3.connect(db, timeout=10)
    try:
        for _ in range(1000):
            busy, pages, _ = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy:                   # (busy: another checkpoint is running)
                return pages
            time.sleep(0.01)
        raise AssertionError("the WAL stayed busy for 10 s")
    finally:
        con.close()


@pytest.mark.timeout(120)
def test_the_wal_starts_over_while_processes_write_without_a_pause(tmp_path) -> None:
    """Two processes enqueue one task per call, without a pause, for 2 s (some 30,000
    WAL pages).  The WAL is copied back and started over: at the end it holds less than
    4 times RESTART_AT.  (Checkpoints that never take the write lock left 139,000 pages here;
    SQLite's own, at commits, grew it to 0.5-1.2 GB in 5 s with 8 processes.)"""
    from timewheel.store.sqlite_checkpoint import RESTART_AT
    db = str(tmp_path / "tasks.db")
    TimeWheel(db).close()
    code = ("import sys, time; from timewheel import TimeWheel\n"
            "hu = TimeWheel(sys.argv[1]); t = hu.task(name='t')(lambda i: None)\n"
            "end = time.time() + float(sys.argv[2]); n = 0\n"
            "while time.time() < end:\n"
            "    t.delay(n, count_down=3600); n += 1\n"
            "print(n, flush=True); time.sleep(3)\n")
    writers = [procs.popen([sys.executable, "-c", code, db, "2"], stdout=subprocess.PIPE, text=True,
                           cwd=ROOT) for _ in range(2)]
    try:
        written = sum(int(p.stdout.readline()) for p in writers)    # type: ignore[union-attr]
        pages = _wal_pages(db)                                       # while they are still open
    finally:
        for p in writers:
            p.kill()
            p.wait(10)
    assert written > 5_000
    assert pages < 4 * RESTART_AT, (pages, written)


# -- the pure parts -----------------------------------------------------------------------------
@given(waited=st.floats(0, 1e4), rnd=st.floats(0, 1, exclude_max=True))
def test_pauses_are_short_jittered_and_grow_slowly(waited: float, rnd: float) -> None:
    pause = busy_pause(waited, rnd)
    assert 50e-6 <= pause <= 1.5e-3
    assert busy_pause(waited, 0.0) <= pause < busy_pause(waited, 1.0 - 1e-12) + 1e-12
    assert busy_pause(waited + 0.001, rnd) >= pause
    if waited >= 0.02:
        assert busy_pause(waited, rnd) == busy_pause(0.02, rnd)        # no more after 20 ms


def test_locked_is_busy_and_nothing_else_is() -> None:
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5                                         # type: ignore[attr-defined]
    assert is_busy(locked)
    assert is_busy(sqlite3.OperationalError("database is locked"))     # (no code: Python < 3.11)
    for exc in (sqlite3.OperationalError("disk I/O error"), sqlite3.IntegrityError("UNIQUE"),
                RuntimeError("database is locked")):
        assert not is_busy(exc)
