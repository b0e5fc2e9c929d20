"""Flow control on the PostgreSQL store, beyond the conformance suite (tests/test_store.py) and the
scenarios with real processes (tests/test_flow_processes.py), which run on it as on the other
backends: a store made by the code before flow control migrates in place; transactional enqueue
takes the flow options; the claim's reads stay on their index whatever the backlog (the plans
PostgreSQL chooses for them, shown)."""

from __future__ import annotations

import gzip
import json
import os
import time

import psycopg

from timewheel import TimeWheel
from timewheel.records import PENDING, RUNNING, SUCCEEDED
from timewheel.store.postgres import PostgresStore
from timewheel.store.postgres_flow_sql import BAND_PAGE, BANDS
from timewheel.store.postgres_sql import VERSION

from .conftest import make_record, wait_for
from .pg_check import check_pg_store

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _restore_v1(pg_db: str) -> dict:
    """The schema ``tw_v1`` as version 1's code made it (tests/fixtures/make_postgres_v1.py)."""
    with gzip.open(os.path.join(FIXTURES, "postgres_v1.sql.gz"), "rt") as f:
        # (psql's meta-commands, \restrict and the like, are for psql: not SQL)
        dump = "".join(line for line in f if not line.startswith("\\"))
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(dump)
    with open(os.path.join(FIXTURES, "postgres_v1.json")) as f:
        return json.load(f)


def test_a_store_made_before_flow_control_migrates_in_place(pg_db) -> None:
    """Version 1's tables, functions and rows (made by that code, dumped): opened by this code,
    the store migrates in one transaction -- every record reads as it was (queue "default",
    priority 0, no limits), its tasks run once, and flow control works on it."""
    want = _restore_v1(pg_db)
    url = pg_db + "?schema=tw_v1"
    with psycopg.connect(pg_db, autocommit=True) as c:
        assert c.execute("SELECT version FROM tw_v1.meta").fetchone()[0] == 1
    hu = TimeWheel(url, workers=2, tick=0.5)
    try:
        assert hu.store.wheel.tick == 0.5                    # (opened: migrated)
        with psycopg.connect(pg_db, autocommit=True) as c:
            assert c.execute("SELECT version FROM tw_v1.meta").fetchone()[0] == VERSION
        for task_id, old in want["tasks"].items():
            rec = hu.store.get(task_id)
            assert (rec.queue, rec.priority, rec.limits) == ("default", 0, ())
            for field, value in old.items():
                assert getattr(rec, field) == value, (task_id, field)
        check_pg_store(pg_db, "tw_v1")
        ran: list = []
        hu.task(name="fixture.add")(lambda a, b: ran.append(a + b))
        slow = hu.task(name="flow.slow", concurrency=1, queue="reports", priority=5)(lambda: time.sleep(0.2))
        handles = [slow.delay() for _ in range(3)]
        hu.start()
        # (the fixture's etas are absolute: "hour" and "week" come due as it ages)
        due = [i for i, t in want["tasks"].items()
               if t["status"] in (PENDING, RUNNING) and t["eta"] < time.time()]
        later = [i for i, t in want["tasks"].items()
                 if t["status"] == PENDING and t["eta"] > time.time() + 60]
        wait_for(lambda: all(hu.store.get(i).status == SUCCEEDED for i in due), 20, what="the v1 tasks")
        for h in handles:
            h.result(timeout=10)
        spans = sorted((h.record.started, h.record.finished) for h in handles)
        assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))          # one at a time
        assert len(ran) == len(due) and all(hu.store.get(i).status == PENDING for i in later)
    finally:
        hu.close()
    check_pg_store(pg_db, "tw_v1")


def test_transactional_enqueue_takes_the_flow_options(pg_db) -> None:
    """``hu.using(conn)`` with queue=, priority= and a limit: rolled back, nothing; committed,
    the record keeps them and the claim enforces them (the slot held, the rest parked)."""
    hu = TimeWheel(pg_db + "?schema=txflow", tick=0.5)
    try:
        task = hu.task(name="tx.limited", concurrency=1, key="customer")(lambda customer: customer)
        with psycopg.connect(pg_db) as conn:
            with hu.using(conn):
                gone = task.schedule(("c1",), queue="mail", priority=7)
            conn.rollback()
            with hu.using(conn):
                ids = [task.schedule(("c1",), queue="mail", priority=7).id for _ in range(3)]
            assert hu.store.get(ids[0]) is None                      # not visible before the commit
            conn.commit()
        assert hu.store.get(gone.id) is None
        rec = hu.store.get(ids[0])
        assert (rec.queue, rec.priority, rec.limits) == ("mail", 7, (("task:tx.limited:c1", 1, 0, 0.0),))
        store = hu.store
        store.advance(store.wheel.current_tick(store.now()) + 1, 10_000, "test")
        assert store.claim("me", store.now(), 5, queues=frozenset({"default"})).records == []
        got = store.claim("me", store.now(), 5, queues=frozenset({"mail"})).records
        assert [r.id for r in got] == ids[:1]
        (state,) = store.limit_states(["task:tx.limited:c1"])
        assert (state.running, state.parked) == (1, 2)
        check_pg_store(pg_db, "txflow")
    finally:
        hu.close()


def _plan(c: psycopg.Connection, sql: str, types: str = "", params: tuple = ()) -> str:
    """The generic plan of ``sql`` (what a PL/pgSQL function caches after its first calls)."""
    c.execute("SET plan_cache_mode = force_generic_plan")
    c.execute("DEALLOCATE ALL")
    c.execute(f"PREPARE q{'(' + types + ')' if types else ''} AS {sql}")
    args = psycopg.sql.SQL("({})").format(psycopg.sql.SQL(", ").join(map(psycopg.sql.Literal, params))) \
        if params else psycopg.sql.SQL("")
    query = psycopg.sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE q{}").format(args)
    return "\n".join(r[0] for r in c.execute(query))


def test_the_claims_reads_stay_on_the_band_index_whatever_the_backlog(pg_db, record_property) -> None:
    """20,000 tasks not yet due and 5,000 due ones parked on a limit, beside a few due ones in
    two queues: finding the bands and reading a band's due tasks are index probes and ranges on
    ``tasks_bands`` (no sequential scan, no sort of a backlog: Procrastinate's regression,
    PR #1225).  The plans are printed (benchmarks/RESULTS.md quotes them)."""
    store = PostgresStore(pg_db + "?schema=plans")
    try:
        now = store.now()
        store.add([make_record(f"later{i}", now + 3600 + i) for i in range(20_000)])
        store.add([make_record(f"parked{i}", now - 600 + i / 100, limits=(("held", 1, 0, 0.0),))
                   for i in range(5_000)])
        store.add([make_record(f"due{i}", now - 10 + i, queue="mail" if i % 2 else "default",
                               priority=i % 3) for i in range(6)])
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute("UPDATE plans.tasks SET parked = 'held' WHERE id LIKE 'parked%'")
            c.execute("VACUUM ANALYZE plans.tasks")     # (the parked rows' old index entries: see RESULTS)
            bands = _plan(c, BANDS.replace("@s", "plans"))
            h = store.wheel.current_tick(now)
            page = BAND_PAGE.replace("@s", "plans")
            for name, n in (("@q", 1), ("@p", 2), ("@now_us", 3), ("@now_s", 4), ("@hb", 6), ("@h", 5),
                            ("@mark_id", 7), ("@mark_eta", 8), ("@n", 9)):
                page = page.replace(name, f"${n}")
            band = _plan(c, page, "text, int, bigint, float8, bigint, bigint, text, bigint, int",
                         ("default", 0, int(now * 1e6), now, h, int(now * 1e6) + 10**9, None, None, 8))
        print(f"\nfinding the bands:\n{bands}\n\na band's due tasks:\n{band}")
        record_property("bands_plan", bands)
        record_property("band_page_plan", band)
        for plan in (bands, band):
            assert "tasks_bands" in plan and "Seq Scan" not in plan and "Sort" not in plan, plan
        assert bands.splitlines()[0].startswith("CTE Scan on b (actual rows=6 loops=1)"), bands  # 6 bands
        # what a claim reads: nothing of the 25,000 not due or parked
        got = store.claim("me", store.now(), 10)
        assert sorted(r.id for r in got.records) == [f"due{i}" for i in range(6)]
    finally:
        store.close()


def test_a_running_record_set_aside_as_unreadable_frees_its_slot(pg_db) -> None:
    """A running task whose row can no longer be read (here: a version column from a newer
    timewheel) never records an outcome: when it is set aside, its slot frees and the task
    parked behind it comes back."""
    store = PostgresStore(pg_db + "?schema=broken")
    try:
        now = store.now()
        one = ("one", 1, 0, 0.0)
        store.add([make_record("a", now - 2, limits=(one,)), make_record("b", now - 1, limits=(one,))])
        store.advance(store.wheel.current_tick(now) + 1, 10_000, "test")
        (a,) = store.claim("nobody-alive", store.now(), 5).records         # a lease run out at once
        assert store.claim("me", store.now(), 5).records == []            # b parked behind a
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute("UPDATE broken.tasks SET version = 99 WHERE id = 'a'")
        assert store.abandoned(store.now()) == []                          # read, set aside
        assert store.limit_states(["one"])[0].running == 0
        assert [r.id for r in store.claim("me", store.now(), 5).records] == ["b"]
        check_pg_store(pg_db, "broken")
    finally:
        store.close()
