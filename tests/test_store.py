"""Store conformance: every backend passes the same tests; then the file store's own promises."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
import threading

import pytest

from timewheel.errors import NotAStore, StoreError, StoreMismatch
from timewheel.records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TaskRecord,
    encode_record,
)
from timewheel.store import Due, MemoryStore, Outcome, SqliteDictStore, WheelStore
from timewheel.wheel import Wheel

NOW = 1_700_000_000.5          # creation time of every store here (half-way through a tick)
T0 = 1_700_000_000             # the tick that had ended at NOW: the initial horizon


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> WheelStore:
    if request.param == "memory":
        s: WheelStore = MemoryStore(Wheel(), now=NOW, result_ttl=100.0)
    else:
        s = SqliteDictStore(str(tmp_path / "s.db"), Wheel(), now=NOW, result_ttl=100.0)
    yield s
    s.close()


def rec(i: str, eta: float, **kw) -> TaskRecord:
    return TaskRecord(id=i, name="t", eta=eta, payload=pickle.dumps(((i,), {})), created=NOW, **kw)


def load_all(store: WheelStore, through: int) -> list[Due]:
    st = store.state()
    return store.load(st.horizon, through, st.done_through)


def test_add_get_roundtrip(store: WheelStore) -> None:
    r = rec("a", NOW + 10, retries=2, retry_delay=0.5, misfire_grace=3.0)
    store.add([r])
    got = store.get("a")
    assert got == r
    assert store.get("missing") is None
    assert store.counts()[PENDING] == 1


def test_duplicate_id_is_rejected_and_nothing_is_written(store: WheelStore) -> None:
    store.add([rec("a", NOW + 10)])
    with pytest.raises(ValueError):
        store.add([rec("b", NOW + 5), rec("a", NOW + 20)])
    assert store.get("b") is None
    assert store.get("a").eta == NOW + 10
    assert store.counts()[PENDING] == 1


def test_load_returns_exactly_the_ticks_asked_for(store: WheelStore) -> None:
    store.add([rec("in1", T0 + 0.7), rec("in2", T0 + 2.0), rec("out", T0 + 2.01),
               rec("far", T0 + 3600 + 1.5)])
    due = load_all(store, T0 + 2)
    assert sorted(d.id for d in due) == ["in1", "in2"]
    assert {d.id: d.eta for d in due} == pytest.approx({"in1": T0 + 0.7, "in2": T0 + 2.0})
    assert store.state().horizon == T0 + 2
    # same slot, next cycle: only when that tick is loaded
    due = store.load(T0 + 2, T0 + 3602, T0 + 2)
    assert sorted(d.id for d in due) == ["far", "out"]


def test_adding_into_a_loaded_tick_leaves_a_late_marker(store: WheelStore) -> None:
    load_all(store, T0 + 5)
    store.add([rec("late", T0 + 3.5), rec("past", NOW - 100), rec("future", T0 + 6.5)])
    late = {d.id for d in store.late()}
    assert late == {"late", "past"}
    assert all(d.late for d in store.late())
    # the next load returns the markers too, so a new leader finds them
    assert {"late", "past", "future"} <= {d.id for d in store.load(T0 + 5, T0 + 7, T0 + 5)}


def test_claim_moves_pending_to_running_once(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1), rec("b", T0 + 1.5)])
    due = load_all(store, T0 + 2)
    c1 = store.claim(due, "1:x", T0 + 2, starting=1)
    assert sorted(r.id for r in c1.run) == ["a", "b"]
    assert sorted(r.started is None for r in c1.run) == [False, True]
    assert all(r.status == RUNNING and r.owner == "1:x" and r.attempts == 1 for r in c1.run)
    c2 = store.claim(due, "2:y", T0 + 2)
    assert c2.run == [] and sorted(c2.gone) == ["a", "b"]
    assert store.counts()[RUNNING] == 2 and store.counts()[PENDING] == 0
    assert store.late() == []


def test_claim_never_runs_a_task_before_its_exact_eta(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1.25)])
    due = load_all(store, T0 + 2)
    c = store.claim(due, "1:x", T0 + 1.2499)
    assert c.run == [] and [d.id for d in c.not_due] == ["a"]
    assert c.not_due[0].eta == T0 + 1.25
    assert store.get("a").status == PENDING
    assert [r.id for r in store.claim(c.not_due, "1:x", T0 + 1.25).run] == ["a"]


def test_claim_past_misfire_grace_marks_misfired(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1, misfire_grace=5.0), rec("b", T0 + 1, misfire_grace=5.0)])
    due = sorted(load_all(store, T0 + 2))
    c = store.claim(due[:1], "1:x", T0 + 6)         # 5 s late: still within grace
    assert len(c.run) == 1
    c = store.claim(due[1:], "1:x", T0 + 6.01)
    assert c.run == [] and [r.id for r in c.misfired] == [due[1].id]
    got = store.get(due[1].id)
    assert got.status == MISFIRED and "misfire_grace" in got.error
    assert store.counts()[MISFIRED] == 1


def test_finish_success_failure_and_retry(store: WheelStore) -> None:
    store.add([rec("ok", T0 + 1), rec("bad", T0 + 1), rec("again", T0 + 1)])
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    again = store.finish([
        Outcome("ok", True, result=pickle.dumps(42), finished=T0 + 2),
        Outcome("bad", False, error="ValueError: x", traceback="tb", finished=T0 + 2),
        Outcome("again", False, error="E", retry_at=T0 + 4.5, finished=T0 + 2),
    ])
    assert [d.id for d in again] == ["again"] and again[0].eta == T0 + 4.5
    ok, bad, ag = store.get("ok"), store.get("bad"), store.get("again")
    assert ok.status == SUCCEEDED and pickle.loads(ok.result) == 42 and ok.owner is None
    assert bad.status == FAILED and bad.error == "ValueError: x" and bad.traceback == "tb"
    assert ag.status == PENDING and ag.eta == T0 + 4.5 and ag.attempts == 1
    counts = store.counts()
    assert (counts[SUCCEEDED], counts[FAILED], counts[PENDING], counts[RUNNING]) == (1, 1, 1, 0)
    # the retry is in the wheel at its new tick (and marked late: tick 5 > horizon 1? no)
    assert "again" in {d.id for d in store.load(T0 + 1, T0 + 5, T0 + 1)}
    # finishing a task that is not running (e.g. twice) changes nothing
    store.finish([Outcome("ok", False, error="late report", finished=T0 + 3)])
    assert store.get("ok").status == SUCCEEDED


def test_cancel_only_pending(store: WheelStore) -> None:
    store.add([rec("a", T0 + 100), rec("b", T0 + 1)])
    assert store.cancel("a", T0) is True
    assert store.cancel("a", T0) is False
    assert store.get("a").status == CANCELLED
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    assert store.cancel("b", T0 + 1) is False         # already running
    assert store.cancel("nope", T0) is False
    assert "a" not in {d.id for d in store.load(T0 + 1, T0 + 200, T0)}
    assert store.counts()[CANCELLED] == 1


def test_retry_a_failed_task(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1), rec("b", T0 + 50)])
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    store.finish([Outcome("a", False, error="boom", finished=T0 + 2)])
    assert store.retry("b", T0 + 3) is False           # pending: nothing to retry
    assert store.retry("a", T0 + 3) is True
    a = store.get("a")
    assert a.status == PENDING and a.attempts == 0 and a.eta == T0 + 3
    assert "a" in {d.id for d in store.load(T0 + 1, T0 + 3, T0 + 1)}
    assert store.counts()[FAILED] == 0


def test_recover_requeues_only_tasks_of_dead_owners(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1), rec("b", T0 + 1), rec("c", T0 + 1, )])
    due = {d.id: d for d in load_all(store, T0 + 1)}
    store.claim([due["a"], due["b"]], "111:dead", T0 + 1, starting=1)   # b waits for a worker
    store.claim([due["c"]], "222:alive", T0 + 1)
    back = store.recover(lambda owner: owner == "111:dead", T0 + 2, max_crashes=3)
    assert sorted(back) == ["a", "b"]
    a, b = store.get("a"), store.get("b")
    assert a.status == PENDING and a.crashes == 1 and a.attempts == 0 and a.owner is None
    assert b.status == PENDING and b.crashes == 0    # never started: no crash counted
    assert store.get("c").status == RUNNING
    assert {"a", "b"} <= {d.id for d in store.late()}   # the leader finds them again
    assert store.recover(lambda owner: owner == "111:dead", T0 + 2, 3) == []


def test_a_task_that_keeps_killing_its_process_is_failed(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1)])
    for n in range(3):
        due = store.load(store.state().horizon, T0 + 1 + n, T0) + store.late()
        store.claim(due, f"{n}:x", T0 + 5, starting=1)
        store.recover(lambda owner: True, T0 + 5, max_crashes=3)
    a = store.get("a")
    assert a.status == FAILED and a.crashes == 3 and "died 3 times" in a.error


def test_purge_after_result_ttl(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1), rec("b", T0 + 1)])
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    store.finish([Outcome("a", True, result=pickle.dumps(1), finished=T0 + 2),
                  Outcome("b", False, error="e", finished=T0 + 50)])
    assert store.purge(T0 + 101) == 0                # ttl is 100 s
    assert store.purge(T0 + 102.5) == 1
    assert store.get("a") is None and store.get("b") is not None
    assert store.purge(T0 + 151) == 1
    assert store.get("b") is None
    assert sum(store.counts().values()) == 0


def test_purge_by_status_and_age(store: WheelStore) -> None:
    store.add([rec("a", T0 + 1), rec("b", T0 + 1), rec("c", T0 + 100)])
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    store.finish([Outcome("a", True, finished=T0 + 2), Outcome("b", False, error="e", finished=T0 + 2)])
    assert store.purge(T0 + 3, statuses=[FAILED], finished_before=T0 + 3) == 1
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    with pytest.raises(ValueError):
        store.purge(T0, statuses=[PENDING], finished_before=T0)


def test_listing_and_occupancy(store: WheelStore) -> None:
    store.add([rec("x", T0 + 30), rec("y", T0 + 10), rec("z", T0 + 3610)])
    assert [r.id for r in store.tasks(status=PENDING)] == ["y", "x", "z"]
    assert [r.id for r in store.tasks(limit=2)] == ["y", "x"]
    occ = store.occupancy()
    assert sum(n for _, _, n in occ) == 3
    t = Wheel().due_tick(T0 + 10)
    assert (t % 3600, t // 3600, 1) in occ
    assert store.tasks(name="other") == []


# -- the file store --------------------------------------------------------------------------

def test_file_is_created_private(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p)
    s.add([rec("a", NOW + 100)])
    for f in (p, p + "-wal", p + "-shm"):
        if os.path.exists(f):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    s.close()


def test_data_survives_reopen_and_geometry_is_fixed(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, Wheel(slots=60, tick=0.5), now=NOW)
    s.add([rec("a", NOW + 100)])
    s.close()
    s2 = SqliteDictStore(p)                     # geometry read back from the file
    assert s2.wheel == Wheel(slots=60, tick=0.5) and s2.get("a").eta == NOW + 100
    s2.close()
    with pytest.raises(StoreMismatch, match="slots=60"):
        SqliteDictStore(p, Wheel())


def test_refuses_files_that_are_not_stores_and_leaves_them_alone(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAStore, match="not an SQLite file"):
        SqliteDictStore(str(text))
    assert text.read_text() == "hello"
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(NotAStore, match="users"):
        SqliteDictStore(str(other))
    assert other.read_bytes() == before
    with pytest.raises(StoreError, match="no such file"):
        SqliteDictStore(str(tmp_path / "missing.db"), readonly=True)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="does not exist"):
        SqliteDictStore(str(tmp_path / "nodir" / "x.db"))


def test_readonly_store_reads_and_never_writes(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, now=NOW)
    s.add([rec("a", NOW + 100)])
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("a") is not None and ro.counts()[PENDING] == 1
    assert ro.info()["journal_mode"] == "wal"
    with pytest.raises(StoreError):
        ro.cancel("a", NOW)
    assert s.get("a").status == PENDING
    ro.close()
    s.close()


def test_undecodable_record_is_reported_not_dropped(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, now=NOW)
    s.add([rec("a", T0 + 1), rec("b", T0 + 1)])
    con = sqlite3.connect(p)
    con.execute("UPDATE timewheel SET value = ? WHERE key = 't:a'", (b"garbage",))
    con.commit()
    con.close()
    due = load_all(s, T0 + 1)
    c = s.claim(due, "1:x", T0 + 1)
    assert [r.id for r in c.run] == ["b"] and "a" in c.gone
    assert [i for i, _ in s.broken()] == ["a"]
    assert "not a timewheel record" in s.broken()[0][1]
    # off the wheel (no claim loop), but the raw row is still there
    assert "a" not in {d.id for d in s.load(T0 + 1, T0 + 2, T0 + 1)}
    con = sqlite3.connect(p)
    assert con.execute("SELECT value FROM timewheel WHERE key = 't:a'").fetchone()[0] == b"garbage"
    con.close()
    s.close()


def test_two_connections_never_claim_the_same_task(tmp_path) -> None:
    """Two store instances are two SQLite connections: they contend like two processes."""
    p = str(tmp_path / "tasks.db")
    a = SqliteDictStore(p, now=NOW)
    b = SqliteDictStore(p)
    a.add([rec(f"t{i}", T0 + 1) for i in range(400)])
    due = load_all(a, T0 + 1)
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    def grab(name: str, s: SqliteDictStore) -> None:
        for i in range(0, len(due), 7):
            claimed[name] += [r.id for r in s.claim(due[i:i + 7], name, T0 + 2).run]

    threads = [threading.Thread(target=grab, args=("a", a)), threading.Thread(target=grab, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed["a"]) + len(claimed["b"]) == 400
    assert set(claimed["a"]).isdisjoint(claimed["b"])
    a.close()
    b.close()


def test_store_reopens_after_fork(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    s = SqliteDictStore(p, now=NOW)
    s.add([rec("parent", NOW + 100)])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child: must not hang on the parent's connection
        try:
            s.add([rec("child", NOW + 100)])
            ok = s.get("parent") is not None
            os.write(w, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 10) == b"ok" and status == 0
    assert s.get("child") is not None
    s.close()


def test_record_from_a_newer_version_is_refused(tmp_path) -> None:
    from timewheel.records import RecordDecodeError, decode_record
    r = rec("a", NOW)
    r.version = 99
    with pytest.raises(RecordDecodeError, match="newer"):
        decode_record(encode_record(r))
    with pytest.raises(RecordDecodeError):
        decode_record(pickle.dumps(os.getcwd))    # names a global: refused without importing


def test_readonly_open_of_a_crashed_writers_file_changes_no_byte(tmp_path) -> None:
    import hashlib
    import subprocess
    import sys
    p = str(tmp_path / "tasks.db")
    code = ("import os, sys, pickle\n"
            "from timewheel.store import SqliteDictStore\n"
            "from timewheel.records import TaskRecord\n"
            "s = SqliteDictStore(sys.argv[1])\n"
            "s.add([TaskRecord(id=str(i), name='t', eta=2e9, payload=b'') for i in range(50)])\n"
            "os._exit(0)\n")                       # dies with its WAL not checkpointed
    subprocess.run([sys.executable, "-c", code, p], check=True, timeout=60)
    assert os.path.getsize(p + "-wal") > 0

    def digest() -> str:
        with open(p, "rb") as fh:
            return hashlib.sha1(fh.read()).hexdigest()
    before = digest()
    ro = SqliteDictStore(p, readonly=True)
    assert ro.counts()[PENDING] == 50
    ro.close()
    import gc
    gc.collect()
    assert digest() == before


def test_paths_with_uri_characters_are_opened_as_files(tmp_path) -> None:
    d = tmp_path / "a#b?c"
    d.mkdir()
    p = str(d / "t.db")
    s = SqliteDictStore(p, now=NOW)
    s.add([rec("x", NOW + 5)])
    s.close()
    ro = SqliteDictStore(p, readonly=True)
    assert ro.get("x") is not None
    ro.close()
    assert sorted(os.listdir(tmp_path)) == ["a#b?c"]


def test_purge_never_takes_a_task_retried_meanwhile(tmp_path) -> None:
    p = str(tmp_path / "tasks.db")
    a, b = SqliteDictStore(p, now=NOW), SqliteDictStore(p)
    a.add([rec("x", T0 + 1)])
    a.claim(load_all(a, T0 + 1), "1:x", T0 + 1, starting=1)
    a.finish([Outcome("x", False, error="e", finished=T0 + 2)])
    real_writing = a._writing

    def retry_first(*args, **kw):           # another process retries x just before purge writes
        b.retry("x", T0 + 3)
        return real_writing(*args, **kw)
    a._writing = retry_first
    assert a.purge(T0 + 3, statuses=[FAILED], finished_before=T0 + 3) == 0
    a._writing = real_writing
    assert a.get("x").status == PENDING and a.counts()[PENDING] == 1
    a.close()
    b.close()


def test_listing_by_id_prefix(store: WheelStore) -> None:
    store.add([rec("periodic-a-1", T0 + 5), rec("periodic-a-2", T0 + 6), rec("periodic-b-1", T0 + 7),
               rec("other", T0 + 1)])
    assert [r.id for r in store.tasks(id_prefix="periodic-a-")] == ["periodic-a-1", "periodic-a-2"]
    assert len(store.tasks(status=PENDING, id_prefix="periodic-")) == 3
    assert store.tasks(status=FAILED, id_prefix="periodic-") == []


def test_listing_without_status_puts_the_most_recent_finished_first(store: WheelStore) -> None:
    store.add([rec("ok-old", T0 + 1), rec("bad-new", T0 + 1), rec("ok-new", T0 + 1), rec("p", T0 + 99)])
    store.claim(load_all(store, T0 + 1), "1:x", T0 + 1)
    store.finish([Outcome("ok-old", True, finished=T0 + 2), Outcome("ok-new", True, finished=T0 + 9),
                  Outcome("bad-new", False, error="e", finished=T0 + 5)])
    assert [r.id for r in store.tasks(limit=3)] == ["p", "ok-new", "bad-new"]
    assert [r.id for r in store.tasks(limit=1)] == ["p"]
