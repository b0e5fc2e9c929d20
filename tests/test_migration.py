"""Stores written by timewheel 0.1.0 (format timewheel/1) and 0.2 (timewheel/2) are converted
in place, nothing lost.

The fixtures (tests/fixtures/, see its README) were written by those versions themselves;
store_v1.json and store_v2.json say what each record held then.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3

import pytest
from sqlitedict import SqliteDict

from timewheel import NotAStore, TimeWheel, current_task
from timewheel.store import SqliteDictStore
from timewheel.store.rules import UNKNOWN_REV

from .conftest import check_file_store, count_of, make_record, read_meta, records_of, wait_for

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def unpacked(tmp_path, fixture: str) -> str:
    """A copy of the store file ``fixture`` (gzipped in tests/fixtures), private as ours are."""
    db = str(tmp_path / "tasks.db")
    with gzip.open(os.path.join(FIXTURES, fixture), "rb") as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(db, 0o600)
    return db


def expected(fixture: str = "store_v1.json") -> dict:
    with open(os.path.join(FIXTURES, fixture)) as fh:
        return json.load(fh)


@pytest.fixture
def old_store(tmp_path) -> str:
    return unpacked(tmp_path, "store_v1.sqlite.gz")


def test_read_only_opens_say_the_store_needs_converting(old_store) -> None:
    before = open(old_store, "rb").read()
    with pytest.raises(NotAStore, match="timewheel 0.1"):
        SqliteDictStore(old_store, readonly=True)
    assert open(old_store, "rb").read() == before


def test_every_task_survives_the_conversion_in_its_state(old_store) -> None:
    want = expected()
    store = SqliteDictStore(old_store)
    for task_id, old in want.items():
        if old["status"] == "broken":
            continue
        rec = store.get(task_id)
        assert rec is not None, task_id
        for field in ("status", "name", "eta", "attempts", "owner", "error"):
            assert getattr(rec, field) == old[field], (task_id, field)
    broken = store.scan("broken")
    assert [b.id for b in broken] == [i for i, o in want.items() if o["status"] == "broken"]
    statuses = {}
    for o in want.values():
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    for status, n in statuses.items():
        assert count_of(store, status) == n, status
    store.close()
    check_file_store(old_store)
    # converting again is a no-op
    store = SqliteDictStore(old_store)
    assert len(records_of(store)) == sum(n for s, n in statuses.items() if s != "broken")
    store.close()


def test_the_converted_pending_tasks_run_once_and_the_dead_owners_task_again(old_store) -> None:
    want = expected()
    ran: list[tuple] = []
    hu = TimeWheel(old_store, workers=4)

    @hu.task(name="fixture.add")
    def add(a, b):
        ran.append((a, b))
        return a + b

    @hu.task(name="fixture.boom", retries=2, retry_delay=5)
    def boom():
        raise RuntimeError("boom")

    pending = [i for i, o in want.items() if o["status"] == "pending"]
    running = [i for i, o in want.items() if o["status"] == "running"]
    assert len(pending) == 24 and len(running) == 1
    hu.start()
    try:
        # every pending task of 0.1 is overdue by now except the ones a week out
        due = [i for i in pending if want[i]["eta"] <= hu.now()] + running
        for i in due:
            assert hu.get(i).result(timeout=30) is not None
    finally:
        hu.stop()
    assert len(ran) == len(due)           # each once (the dead owner's task: its documented re-run)
    assert hu.get(running[0]).record.crashes == 1
    hu.close()
    check_file_store(old_store)


# -- timewheel 0.2 (format timewheel/2) -----------------------------------------------------------

@pytest.fixture
def v2_store(tmp_path) -> str:
    return unpacked(tmp_path, "store_v2.sqlite.gz")


def expected_v2() -> dict:
    return expected("store_v2.json")


def _counts_by_status(store: SqliteDictStore) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status, _), n in store.counts().items():
        out[status] = out.get(status, 0) + n
    return out


def _v2_statuses(want: dict) -> dict[str, int]:
    """Tasks per status as the counters of the fixture hold them: a row's position says its
    status (an undecodable one still in the ready queue counts as pending until a claim meets
    it), a finished row's record which one."""
    out: dict[str, int] = {}
    for task_id, kind in want["positions"].items():
        status = {"n": "pending", "p": "pending", "q": "pending", "r": "running", "b": "broken"}.get(
            kind) or want["tasks"][task_id]["status"]
        out[status] = out.get(status, 0) + 1
    return out


def test_a_v2_store_is_read_as_it_is_by_a_read_only_open(v2_store) -> None:
    want = expected_v2()
    before = open(v2_store, "rb").read()
    store = SqliteDictStore(v2_store, readonly=True)
    assert store.wheel.slots == want["meta"]["slots"] and store.wheel.tick == want["meta"]["tick"]
    st = store.state()
    assert (st.horizon, st.leader, st.advanced_at) == (want["meta"]["horizon"], want["meta"]["leader"],
                                                       want["meta"]["advanced"])
    assert store.get("reused").rev == 5 and store.get("running").owner == want["tasks"]["running"]["owner"]
    assert _counts_by_status(store) == _v2_statuses(want)
    assert [r.id for r in store.scan("broken")] == ["broken-aside"]
    assert open(v2_store, "rb").read() == before
    # a writer converts it meanwhile (the web view open on it while the application starts):
    # the reader reads the new layout from then on
    SqliteDictStore(v2_store).close()
    st = store.state()
    assert (st.horizon, st.leader) == (want["meta"]["horizon"], want["meta"]["leader"])
    assert store.get("reused").rev == 5 and _counts_by_status(store) == _v2_statuses(want)
    store.close()


def test_every_task_of_a_v2_store_survives_the_conversion_in_its_state(v2_store) -> None:
    want = expected_v2()
    store = SqliteDictStore(v2_store)
    for task_id, old in want["tasks"].items():
        if old["status"] == "broken":
            continue
        rec = store.get(task_id)
        assert rec is not None, task_id
        for field, value in old.items():
            assert getattr(rec, field) == value, (task_id, field)
    assert [b.id for b in store.scan("broken")] == ["broken-aside"]
    assert _counts_by_status(store) == _v2_statuses(want)
    st = store.state()
    assert (st.horizon, st.leader, st.advanced_at) == (want["meta"]["horizon"], want["meta"]["leader"],
                                                       want["meta"]["advanced"])
    store.close()
    # the bookkeeping moved to the metadata map, where a plain SqliteDict reads it; of the m:
    # rows only the format's name is left, for timewheel 0.2 to refuse the file by
    con = sqlite3.connect(v2_store)
    assert read_meta(con) == dict(want["meta"], format="timewheel/4")
    assert con.execute("SELECT key, value FROM timewheel WHERE key >= 'm:' AND key < 'm;'").fetchall() == [
        ("m:format", "timewheel/4")]
    assert con.execute("SELECT count(*) FROM timewheel WHERE rev IS NOT NULL").fetchone() == (0,)
    con.close()
    copy = v2_store + ".copy"
    shutil.copyfile(v2_store, copy)          # closed: its WAL is checkpointed into the file
    # (a store is in WAL mode: every opener passes journal_mode="WAL", or sqlitedict tries to
    # switch the file to DELETE and fails while its own table listing holds it open)
    with SqliteDict(copy, tablename="timewheel_meta", flag="r", journal_mode="WAL") as meta:
        assert dict(meta) == dict(want["meta"], format="timewheel/4")
    # converting again is a no-op
    before = open(v2_store, "rb").read()
    SqliteDictStore(v2_store, readonly=True).close()
    store = SqliteDictStore(v2_store)
    assert _counts_by_status(store) == _v2_statuses(want)
    store.close()
    assert read_meta(sqlite3.connect(v2_store))["format"] == "timewheel/4"
    assert len(before) > 0


def test_a_converted_v2_store_runs_its_tasks_once_and_keeps_revs_growing(v2_store) -> None:
    want = expected_v2()
    ran: list[str] = []
    hu = _fixture_wheel(v2_store, ran)

    pending = [i for i, k in want["positions"].items()
               if k in "npq" and want["tasks"][i]["status"] != "broken"]
    hu.start()
    try:
        due = [i for i in pending if want["tasks"][i]["eta"] <= hu.now()] + ["running"]
        for i in due:
            hu.get(i).result(timeout=30) if i != "boom" else wait_for(lambda: "boom" in ran)
    finally:
        hu.stop()
    # each once (the dead owner's task: its documented re-run); boom fails, and may have run
    # its first retry by now
    assert sorted(set(ran)) == sorted(due) and all(ran.count(i) == 1 for i in due if i != "boom")
    assert hu.get("running").record.crashes == 1
    # the undecodable ready one was met by a claim and set aside
    assert sorted(r.id for r in hu.store.scan("broken")) == ["broken-aside", "broken-ready"]
    # an id replaced after the conversion continues its rev, also where the record cannot be
    # read and only 0.2 wrote its row (no rev beside it: a jump past any count of writes)
    (again,) = hu.store.add([make_record("reused", hu.now() + 60)], existing="reuse")
    assert again.rev == 6
    (fresh,) = hu.store.add([make_record("broken-ready", hu.now() + 60)], existing="replace")
    assert fresh.rev == UNKNOWN_REV
    hu.close()
    check_file_store(v2_store)


def _fixture_wheel(path: str, ran: list[str]) -> TimeWheel:
    """A wheel on a fixture store with the fixtures' tasks (they note the ids they run)."""
    hu = TimeWheel(path, workers=4)

    @hu.task(name="fixture.add")
    def add(a, b):
        ran.append(current_task().id)
        return a + b

    @hu.task(name="fixture.boom", retries=2, retry_delay=5)
    def boom():
        ran.append(current_task().id)
        raise RuntimeError("boom")

    return hu


# -- timewheel/3 (0.3, before flow control) ------------------------------------------------------

@pytest.fixture
def v3_store(tmp_path) -> str:
    return unpacked(tmp_path, "store_v3.sqlite.gz")


def test_a_v3_store_reads_as_it_is_and_converts_adding_only_flow_controls_tables(v3_store) -> None:
    """0.3's rows mean the same in 0.4: a read-only open reads them (no queue but "default",
    no limits), a write open adds flow control's tables and moves no row."""
    from timewheel import query
    want = expected("store_v3.json")
    before = open(v3_store, "rb").read()
    ro = SqliteDictStore(v3_store, readonly=True)
    data = query.inspect_data(ro, ro.now())
    assert data["limits"] == [] and {q["queue"] for q in data["queues"]} == {"default"}
    assert ro.paused() == frozenset() and query.show_data(ro, "hour", ro.now())["queue"] == "default"
    ro.close()
    assert open(v3_store, "rb").read() == before
    con = sqlite3.connect(v3_store)
    rows = dict(con.execute("SELECT key, pos FROM timewheel WHERE key >= 't:' AND key < 't;'"))
    con.close()
    store = SqliteDictStore(v3_store)
    for task_id, old in want["tasks"].items():
        if old["status"] == "broken":
            continue
        rec = store.get(task_id)
        for field, value in old.items():
            assert getattr(rec, field) == value, (task_id, field)
        assert (rec.queue, rec.priority, rec.limits) == ("default", 0, ())
    store.close()
    con = sqlite3.connect(v3_store)
    assert read_meta(con)["format"] == "timewheel/4"
    assert dict(con.execute("SELECT key, pos FROM timewheel WHERE key >= 't:' AND key < 't;'")) == rows
    tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"timewheel_held", "timewheel_starts", "timewheel_limits", "timewheel_paused",
            "timewheel_queues"} <= tables
    con.close()


def test_a_converted_v3_store_runs_its_tasks_once_beside_new_flow_tasks(v3_store) -> None:
    want = expected("store_v3.json")
    ran: list[str] = []
    hu = _fixture_wheel(v3_store, ran)

    @hu.task(name="fixture.limited", concurrency=1, queue="new", priority=10)
    def limited(n):
        ran.append(current_task().id)

    pending = [i for i, k in want["positions"].items()
               if k in "npq" and want["tasks"][i]["status"] != "broken"]
    news = [limited.delay(n).id for n in range(3)]
    hu.start()
    try:
        due = [i for i in pending if want["tasks"][i]["eta"] <= hu.now()] + ["running"] + news
        for i in due:
            hu.get(i).result(timeout=30) if i != "boom" else wait_for(lambda: "boom" in ran)
    finally:
        hu.stop()
    assert sorted(set(ran)) == sorted(due) and all(ran.count(i) == 1 for i in due if i != "boom")
    assert hu.get("running").record.crashes == 1
    hu.close()
    check_file_store(v3_store)
