"""The file store's own promises, beyond the conformance suite (test_store.py): a private file,
fixed geometry, foreign files left alone, read-only opens that write nothing, broken records
kept and reported, fork safety, and the uncounted rows of delay()'s one-statement path."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import stat
import sys
import time

import pytest
from sqlitedict import SqliteDict

from timewheel.errors import NotAStore, StoreError, StoreMismatch
from timewheel.records import PENDING, cancel
from timewheel.store import SqliteDictStore
from timewheel.store.rules import UNKNOWN_REV
from timewheel.testing import processes as procs
from timewheel.wheel import Wheel

from .conftest import check_file_store, count_of, make_record, read_meta, wait_for


def digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def test_file_and_its_siblings_are_private(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    s.add([make_record("a", time.time() + 100)])
    assert s.liveness.token                           # creates the .lock file
    for f in (p, p + "-wal", p + "-shm", p + ".lock"):
        assert os.path.exists(f), f
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    s.close()


def test_an_empty_file_made_with_a_loose_umask_is_adopted_private(tmp_path) -> None:
    p = tmp_path / "tasks.db"
    p.touch(mode=0o644)
    os.chmod(p, 0o644)
    s = SqliteDictStore(str(p))
    s.add([make_record("a", time.time() + 100)])
    for f in (str(p), str(p) + "-wal", str(p) + "-shm"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    s.close()


def test_data_survives_reopen_and_geometry_is_fixed(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, Wheel(slots=60, tick=0.5))
    s.add([make_record("a", time.time() + 100)])
    s.close()
    s2 = SqliteDictStore(p)                     # geometry read back from the file
    assert s2.wheel == Wheel(slots=60, tick=0.5) and s2.get("a") is not None
    s2.close()
    with pytest.raises(StoreMismatch, match="slots=60"):
        SqliteDictStore(p, Wheel())


def test_refuses_files_that_are_not_stores_and_leaves_them_alone(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAStore, match="not an SQLite file"):
        SqliteDictStore(str(text))
    assert text.read_text() == "hello"
    for name, ddl in (("users.db", "CREATE TABLE users (id INTEGER)"),
                      # only a table that happens to be called like ours, with rows in it
                      ("lookalike.db", "CREATE TABLE timewheel (key TEXT PRIMARY KEY, value BLOB)")):
        other = tmp_path / name
        con = sqlite3.connect(other)
        con.execute(ddl)
        if name == "lookalike.db":
            con.execute("INSERT INTO timewheel VALUES ('k', 'v')")
        con.commit()
        con.close()
        before = other.read_bytes()
        with pytest.raises(NotAStore):
            SqliteDictStore(str(other))
        assert other.read_bytes() == before
        assert sorted(os.listdir(tmp_path)).count(name + "-wal") == 0
    with pytest.raises(StoreError, match="no such file"):
        SqliteDictStore(str(tmp_path / "missing.db"), readonly=True)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="does not exist"):
        SqliteDictStore(str(tmp_path / "nodir" / "x.db"))


def test_readonly_store_reads_and_never_writes(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    (r,) = s.add([make_record("a", time.time() + 100)])
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("a") == r and count_of(ro, PENDING) == 1
    assert ro.info()["journal_mode"] == "wal"
    with pytest.raises(StoreError, match="read-only"):
        ro.swap([(r, cancel(r, time.time()))])
    assert s.get("a").status == PENDING
    ro.close()
    s.close()


def test_readonly_open_of_a_closed_store_creates_nothing_beside_it(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    s.add([make_record("a", time.time() + 100)])
    s.close()
    os.remove(p + ".lock") if os.path.exists(p + ".lock") else None
    listing, before = sorted(os.listdir(tmp_path)), digest(p)
    assert listing == ["tasks.db"]                # a clean close leaves no -wal/-shm
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("a") is not None and ro.liveness.leader() is None
    ro.close()
    assert sorted(os.listdir(tmp_path)) == listing and digest(p) == before


def test_readonly_open_of_a_crashed_writers_file_changes_no_byte(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    code = ("import os, sys\n"
            "from timewheel.store import SqliteDictStore\n"
            "from timewheel.records import TaskRecord\n"
            "s = SqliteDictStore(sys.argv[1])\n"
            "s.add([TaskRecord(id=str(i), name='t', eta=2e9, payload=b'') for i in range(50)])\n"
            "os._exit(0)\n")                       # dies with its WAL not checkpointed
    procs.run([sys.executable, "-c", code, p], check=True, timeout=60)
    assert os.path.getsize(p + "-wal") > 0
    before = digest(p)
    ro = SqliteDictStore(p, readonly=True)
    assert count_of(ro, PENDING) == 50
    ro.close()
    import gc
    gc.collect()
    assert digest(p) == before


def test_undecodable_record_is_reported_not_dropped(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    now = time.time()
    s.add([make_record("a", now - 1), make_record("b", now - 1)])
    con = sqlite3.connect(p)
    con.execute("UPDATE timewheel SET value = ? WHERE key = 't:a'", (b"garbage",))
    con.commit()
    con.close()
    assert [r.id for r in s.claim("me", time.time(), 10).records] == ["b"]
    (broken,) = s.scan("broken")
    assert broken.id == "a" and broken.status == "broken" and "not a timewheel record" in broken.error
    assert s.claim("me", time.time(), 10).records == []      # off the ready queue: no claim loop
    con = sqlite3.connect(p)
    assert con.execute("SELECT value FROM timewheel WHERE key = 't:a'").fetchone()[0] == b"garbage"
    con.close()
    assert s.counts()[("broken", "t")] == 1
    s.close()
    check_file_store(p)


def test_an_undecodable_record_is_replaced_with_the_rev_kept_beside_it(tmp_path) -> None:
    """The rev column: written with every rewrite of a row, read where the record cannot be;
    where it is empty too (a row last written by timewheel 0.2) the replacement jumps past
    any fence (rules.UNKNOWN_REV)."""
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    now = time.time()
    s.add([make_record("a", now - 1), make_record("b", now - 1)])
    s.advance(s.wheel.current_tick(now) + 2, 100, "tests")
    a, b = s.claim("me", time.time(), 2).records
    con = sqlite3.connect(p)
    revs = con.execute("SELECT key, rev FROM timewheel WHERE key IN ('t:a', 't:b') ORDER BY key")
    assert revs.fetchall() == [("t:a", a.rev), ("t:b", b.rev)]
    con.execute("UPDATE timewheel SET value = x'00' WHERE key IN ('t:a', 't:b')")
    con.execute("UPDATE timewheel SET rev = NULL WHERE key = 't:b'")
    con.commit()
    con.close()
    (a2, b2) = s.add([make_record("a", now), make_record("b", now)], existing="reuse")
    assert (a2.rev, b2.rev) == (a.rev + 1, UNKNOWN_REV)
    assert s.swap([(a, cancel(a, now)), (b, cancel(b, now))]) == [None, None]
    assert s.counts() == {(PENDING, "t"): 2}
    s.close()
    check_file_store(p)


def test_a_single_add_is_one_uncounted_row_until_absorbed(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    now = time.time()
    s.add([make_record("one", now + 50)])
    con = sqlite3.connect(p)
    rows = con.execute("SELECT key, pos FROM timewheel WHERE key LIKE 't:%'").fetchall()
    assert len(rows) == 1 and rows[0][1].startswith("n:")
    assert con.execute("SELECT count(*) FROM timewheel_counts").fetchone()[0] == 0
    con.close()
    assert s.counts() == {(PENDING, "t"): 1}               # readers count it anyway
    assert s.ticks() == [(s.wheel.due_tick(now + 50), 1)]
    s.claim("me", time.time(), 1)                          # any write transaction absorbs it
    con = sqlite3.connect(p)
    assert con.execute("SELECT pos FROM timewheel WHERE key = 't:one'").fetchone()[0].startswith("p:")
    con.close()
    s.close()
    check_file_store(p)


def test_store_reopens_after_fork(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    s.add([make_record("parent", time.time() + 100)])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child: must not hang on the parent's connection
        procs.die_with_parent()
        signal.alarm(30)
        try:
            s.add([make_record("child", time.time() + 100)])
            ok = s.get("parent") is not None
            os.write(w, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 10) == b"ok" and status == 0
    assert s.get("child") is not None
    s.close()


def test_paths_with_uri_characters_are_opened_as_files(tmp_path) -> None:
    d = tmp_path / "a#b?c"
    d.mkdir()
    p = str(d / "t.db")
    s = SqliteDictStore(p)
    s.add([make_record("x", time.time() + 5)])
    s.close()
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("x") is not None
    ro.close()
    assert sorted(os.listdir(tmp_path)) == ["a#b?c"]


def test_doorbells_cross_processes_and_dead_ones_are_forgotten(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    bell = s.doorbell()
    assert not bell.wait(0.05)
    code = ("import sys, time\nfrom timewheel.store import SqliteDictStore\n"
            "from timewheel.records import TaskRecord\n"
            "s = SqliteDictStore(sys.argv[1])\n"
            "s.add([TaskRecord(id='soon', name='t', eta=time.time(), payload=b'')])\n")
    procs.run([sys.executable, "-c", code, p], check=True, timeout=60)
    assert bell.wait(5.0)                      # another process's add of a due task rang us
    # a bell of a process that is gone, registered through sqlitedict's own API (with WAL, as
    # every opener of a live store must)
    with SqliteDict(p, tablename="timewheel_meta", journal_mode="WAL", autocommit=True) as meta:
        meta["bell:gone"] = "999999:dead:999999"
    s.advance(s.wheel.current_tick(time.time()) + 2, 100, s.liveness.token)
    con = sqlite3.connect(p)
    names = [k for k in read_meta(con) if k.startswith("bell:")]
    con.close()
    assert names == [f"bell:{bell.name}"]
    bell.close()
    s.close()


def test_a_store_without_observer_counters_gets_them_on_a_write_open(tmp_path) -> None:
    """The ring's summary reads per-slot cell counts kept by triggers, a timeline of one name
    per-name tick counters; a store written before they existed is read without them
    (read-only) and gains them, filled, on a write open."""
    p = str(tmp_path / "tasks.db")
    w = Wheel(slots=60, tick=1.0)
    s = SqliteDictStore(p, w)
    now = time.time()
    etas = [now + 30 + i * 7.3 for i in range(40)]
    s.add([make_record(f"b{i}", e, name="odd" if i % 2 else "even") for i, e in enumerate(etas)])
    s.add([make_record("single", now + 1000, name="odd")])    # an uncounted row too
    s.advance(w.due_tick(etas[3]), 100, "tests")               # a few ready ones
    expected = {w.due_tick(e) for e in etas + [now + 1000]}
    want = (len(expected), len({t % 60 for t in expected}))
    first = w.due_tick(now)
    odd = [0] * 20
    for e in etas[1::2] + [now + 1000]:
        odd[(w.due_tick(e) - first) // 60] += 1
    assert s.wheel_stats() == want and s.histogram(first, first + 1200, 60, name="odd") == odd
    s.close()
    con = sqlite3.connect(p)
    con.executescript('DROP TRIGGER timewheel_cell_added; DROP TRIGGER timewheel_cell_removed; '
                      'DROP TABLE timewheel_slots; DROP TABLE timewheel_name_ticks;')
    con.close()
    ro = SqliteDictStore(p, readonly=True)
    assert ro.wheel_stats() == want and ro.histogram(first, first + 1200, 60, name="odd") == odd
    ro.close()
    rw = SqliteDictStore(p)
    assert rw.wheel_stats() == want and rw.histogram(first, first + 1200, 60, name="odd") == odd
    rw.swap([(rw.get("b0"), cancel(rw.get("b0"), now))])      # the triggers follow changes again
    expected_after = {w.due_tick(e) for e in etas[1:] + [now + 1000]}
    assert rw.wheel_stats() == (len(expected_after), len({t % 60 for t in expected_after}))
    rw.close()


def test_a_plain_sqlitedict_reads_the_metadata_the_wheel_wrote(tmp_path) -> None:
    """The store's bookkeeping is sqlitedict's: a SqliteDict of its own (on a copy, passing
    WAL as every opener of a store must) reads what the wheel wrote, with nothing but its
    defaults -- pickled values included."""
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, Wheel(slots=60, tick=0.5))
    now = time.time()
    s.add([make_record("a", now + 3)])
    s.advance(s.wheel.current_tick(now) + 4, 100, s.liveness.token)
    bell = s.doorbell()
    state = s.state()
    copy = str(tmp_path / "copy.db")
    with sqlite3.connect(p) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    bell.close()
    s.close()
    with SqliteDict(copy, tablename="timewheel_meta", flag="r", journal_mode="WAL") as meta:
        got = dict(meta)
    assert got == {"format": "timewheel/4", "slots": 60, "tick": 0.5, "horizon": state.horizon,
                   "leader": state.leader, "advanced": state.advanced_at,
                   f"bell:{bell.name}": s.liveness.token}


def test_the_wheel_opens_a_store_after_sqlitedict_wrote_to_its_metadata(tmp_path) -> None:
    """And the other way: keys written through sqlitedict's own API -- one of ours, one not --
    with its default journal mode, which switches the file out of WAL; the wheel switches it
    back, reads the value sqlitedict wrote, keeps the foreign key, and works."""
    p = str(tmp_path / "tasks.db")
    SqliteDictStore(p).close()
    with SqliteDict(p, tablename="timewheel_meta", autocommit=True) as meta:
        meta["leader"] = "somebody:1:2"
        meta["note"] = {"written by": "sqlitedict", "at": [1, 2.5]}
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()
    s = SqliteDictStore(p)
    assert s.state().leader == "somebody:1:2"
    now = time.time()
    s.add([make_record("a", now - 1), make_record("b", now + 100)])
    s.advance(s.wheel.current_tick(now) + 2, 100, s.liveness.token)
    assert [r.id for r in s.claim("me", time.time(), 10).records] == ["a"]
    assert s.state().leader == s.liveness.token
    s.close()
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert read_meta(con)["note"] == {"written by": "sqlitedict", "at": [1, 2.5]}
    con.close()
    check_file_store(p)


def test_metadata_values_never_run_code_and_damage_is_named(tmp_path) -> None:
    """A metadata value is read without the plain pickle module: one that names a global (it
    would run code when unpickled) is refused as damage, and nothing runs."""
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "ran"),))

    p = str(tmp_path / "tasks.db")
    SqliteDictStore(p).close()
    blob = pickle.dumps(Exploit())
    con = sqlite3.connect(p)
    con.execute("UPDATE timewheel_meta SET value = ? WHERE key = 'horizon'", (blob,))
    con.commit()
    con.close()
    damaged = r"bookkeeping is damaged \(horizon: not a metadata value .*refers to posix\.mkdir"
    with pytest.raises(StoreError, match=damaged):
        SqliteDictStore(p, readonly=True).state()
    with pytest.raises(StoreError, match=damaged):
        SqliteDictStore(p).add([make_record("a", time.time()), make_record("b", time.time())])
    assert not os.path.exists(tmp_path / "ran")
    pickle.loads(blob)                   # what the plain pickle module would have done
    assert os.path.isdir(tmp_path / "ran")


def _my_locks(path: str) -> list[str]:
    """The POSIX locks this process holds on ``path`` (Linux's /proc/locks)."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as fh:
        rows = [line.split() for line in fh]
    # without the ordinal in front, which numbers every lock of the system and so changes
    # whenever another process takes or drops one
    return sorted(" ".join(r[1:]) for r in rows
                  if "->" not in r and r[4] == str(os.getpid()) and r[5] == inode)


def test_no_open_drops_the_locks_this_process_holds_on_the_store(tmp_path) -> None:
    """Issue 19.5: closing any descriptor of a file drops every POSIX lock the process holds
    on it, its SQLite connections' too; the last other process to close the store then
    deletes the WAL under them.  Opening more stores on the file, read-only or not, and
    reading its details must leave this process's locks as they are."""
    assert os.path.exists("/proc/locks"), "this test reads Linux's /proc/locks"
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    s.add([make_record("a", time.time() + 100)])
    held = _my_locks(p)
    assert held, "an open WAL store holds a shared lock on its file"
    ro = SqliteDictStore(p, readonly=True)
    assert ro.info()["journal_mode"] == "wal" and s.info()["journal_mode"] == "wal"
    assert _my_locks(p) == held
    other = SqliteDictStore(p)
    other.close()
    ro.close()
    assert _my_locks(p) == held
    s.close()


def test_a_readonly_store_opened_before_any_writer_sees_later_writes(tmp_path) -> None:
    """Issue 19.5: a read-only store opened while no process has the file open reads it as
    immutable; once another process writes, it reads what is there."""
    p = str(tmp_path / "tasks.db")
    SqliteDictStore(p).close()
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("a") is None and ro.info()["journal_mode"] == "wal"
    code = ("import sys, time; from tests.conftest import make_record; "
            "from timewheel.store import SqliteDictStore; s = SqliteDictStore(sys.argv[1]); "
            "s.add([make_record(sys.argv[2], time.time() + 100)]); s.close()")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for task_id in ("a", "b"):           # each writer comes and goes: no -wal is left
        procs.run([sys.executable, "-c", code, p, task_id], cwd=root, check=True, timeout=60)
        assert not os.path.exists(p + "-wal")
        assert ro.get(task_id) is not None
    ro.close()


WAL_HOLDER = """
import os, sys, time
from timewheel import TimeWheel
db, ready, stop = sys.argv[1:4]
hu = TimeWheel(db, workers=1)
later = hu.task(name="later")(lambda: None)
hu.start()
for _ in range(5):
    later.delay(count_down=600)
open(ready, "w").close()
while not os.path.exists(stop):
    time.sleep(0.05)
hu.close()                                   # the last one to close checkpoints its -wal
"""

NEWCOMER = """
import sys
from timewheel import StoreError, TimeWheel
hu = TimeWheel(sys.argv[1], workers=1)
later = hu.task(name="later")(lambda: None)
try:
    later.delay(count_down=600)
    print("ok")
except StoreError as exc:
    print(exc)
"""


def test_a_wal_deleted_under_running_processes_is_named(tmp_path) -> None:
    """Issue 19 item 14: after `rm tasks.db-wal` while a process runs, new processes said
    "disk I/O error".  They must say what happened and what to do; once the running process
    exits, its commits are in the store and new processes work."""
    from timewheel.testing import console_script
    db, ready, stop = str(tmp_path / "tasks.db"), tmp_path / "ready", tmp_path / "stop"
    holder = procs.popen([sys.executable, "-c", WAL_HOLDER, db, str(ready), str(stop)])
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, 20, what="the holder to be ready")
        os.remove(db + "-wal")
        said = procs.run([sys.executable, "-c", NEWCOMER, db], capture_output=True, text=True, timeout=60)
        assert said.returncode == 0, said.stderr
        listing = procs.run([console_script(), "tasks", db], capture_output=True, text=True, timeout=60)
        for text in (said.stdout, listing.stderr):
            assert "its -wal file was deleted while processes had the store open" in text, text
            assert "stop every process that uses the store" in text and text.count("\n") == 1, text
        assert listing.returncode == 1
        stop.touch()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait(10)
    again = procs.run([sys.executable, "-c", NEWCOMER, db], capture_output=True, text=True, timeout=60)
    assert again.stdout == "ok\n", again.stdout + again.stderr
    ro = SqliteDictStore(db, readonly=True)
    assert count_of(ro, PENDING) == 6                    # the holder's five and the newcomer's
    ro.close()


def test_limits_that_hold_nothing_are_forgotten_by_the_purge(tmp_path) -> None:
    """Per-key limits (one per customer) do not pile up: a limit with no slot held, no
    parked task, no start in the last week and no window to reopen is dropped by the ticking
    process's purge; one that holds something stays."""
    from timewheel.records import Outcome, end_run
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    now = time.time()
    s.add([make_record("busy", now - 2, limits=(("k:busy", 1, 0, 0.0),)),
           make_record("idle", now - 1, limits=(("k:idle", 1, 0, 0.0),))])
    s.advance(s.wheel.current_tick(now) + 2, 100, s.liveness.token)
    got = {r.id: r for r in s.claim("me", now, 5).records}
    s.swap([(got["idle"], end_run(got["idle"], Outcome(True, now, now)))])
    s.purge(now - 3600)
    con = sqlite3.connect(p)
    assert [lim for (lim,) in con.execute("SELECT lim FROM timewheel_limits")] == ["k:busy"]
    con.close()
    s.close()
