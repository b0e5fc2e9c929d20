"""The PostgreSQL store on a real server started by the tests (see ``pg_server.py``).

The conformance and model suites (test_store.py, test_store_model.py) run on PostgreSQL too;
here is what only this backend has -- locations, schemas and migrations, the server's clock,
leases and their fencing, the ticking role, LISTEN/NOTIFY, transactional enqueue through the
application's own connection (psycopg, SQLAlchemy, Django), faults (a killed server, killed
connections, timeouts, a read-only or full database) -- and the promises proved with real
processes: a crash loop, the server SIGKILLed and restarted mid-run, hosts whose clocks are
30 s off, a worker SIGSTOPped past its lease.  Figures are printed (``pytest -s``) and
attached with ``record_property``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from timewheel import StoreBusy, StoreError, TimeWheel
from timewheel.errors import DuplicateTask, NotAStore, StoreMismatch
from timewheel.records import (
    PENDING,
    RUNNING,
    SUCCEEDED,
    Outcome,
    RecordDecodeError,
    end_run,
    requeue_crashed,
)
from timewheel.store import open_store
from timewheel.store.base import BROKEN
from timewheel.store.postgres import PostgresStore
from timewheel.store.postgres_sql import VERSION
from timewheel.testing import PostgresServer
from timewheel.testing import processes as procs
from timewheel.wheel import Wheel

from . import crashloop, mp_worker
from .conftest import ROOT, make_record, wait_for
from .mp_worker import Runs, events_of
from .pg_check import check_pg_store
from .test_multiprocess import Cluster, _crashloop_check

TICK = 0.25


def _ready_all(store: PostgresStore, ahead: float = 0.0) -> None:
    through = store.wheel.current_tick(store.now() + ahead) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass


@pytest.fixture
def opened():
    """Close every store a test opened."""
    stores: list = []
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def open_pg(pg_db, opened):
    def make(**kw) -> PostgresStore:
        kw.setdefault("namespace", "t")
        wheel = kw.pop("wheel", Wheel())
        s = PostgresStore(kw.pop("url", pg_db), wheel, **kw)
        opened.append(s)
        return s
    return make


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "timewheel.cli", *args], capture_output=True, text=True,
                     timeout=timeout, cwd=ROOT)


# -- opening ------------------------------------------------------------------------------------

def test_geometry_is_stored_and_checked(open_pg):
    first = open_pg(wheel=Wheel(slots=60, tick=0.5))
    assert first.wheel == Wheel(slots=60, tick=0.5)
    assert PostgresStore(first._conninfo + "?schema=t", None).wheel == Wheel(slots=60, tick=0.5)
    with pytest.raises(StoreMismatch, match="slots=60, tick=0.5"):
        open_pg(wheel=Wheel(slots=3600, tick=1.0))


def test_schemas_keep_stores_apart_and_the_location_names_one(open_pg, pg_db, pg_server):
    a = open_pg(namespace="one")
    b = open_pg(url=pg_db + "?schema=two", namespace="one")          # the location's wins
    assert (a.schema, b.schema) == ("one", "two")
    a.add([make_record("x", a.now() + 60)])
    assert b.get("x") is None and b.counts() == {} and a.counts() == {(PENDING, "t"): 1}
    keyword = f"host=127.0.0.1 port={pg_server.port} user=postgres dbname=postgres schema=one"
    c = open_pg(url=keyword, namespace="zzz")
    assert c.get("x") == a.get("x") and c.location == keyword
    with pytest.raises(ValueError, match="schema"):
        open_pg(url=pg_db + "?schema=1bad")
    with pytest.raises(ValueError, match="lease"):
        open_pg(url=pg_db + "?lease=forever")


def test_the_password_is_hidden_everywhere(pg_server, opened):
    pg_server.sql("DROP ROLE IF EXISTS app")
    pg_server.sql("CREATE ROLE app LOGIN SUPERUSER PASSWORD 's3cr/et@x'")
    hba = os.path.join(pg_server.data, "pg_hba.conf")
    with open(hba) as fh:
        original = fh.read()
    try:
        with open(hba, "w") as fh:        # passwords checked for "app", trust for the rest
            fh.write("host all app 127.0.0.1/32 scram-sha-256\n" + original)
        pg_server.sql("SELECT pg_reload_conf()")
        time.sleep(0.2)
        url = f"postgresql://app:s3cr%2Fet%40x@127.0.0.1:{pg_server.port}/postgres?schema=pw"
        hu = TimeWheel(url, namespace="pw")
        assert "s3cr" not in repr(hu) and "s3cr" not in hu.location and ":***@" in hu.location
        hu.task(name="n")(lambda: None).delay(count_down=60)
        assert "s3cr" not in hu.store.location
        hu.close()
        bad = url.replace("s3cr%2Fet", "wrong")
        with pytest.raises(StoreError, match="refused the credentials") as ei:
            PostgresStore(bad)
        assert "wrong" not in str(ei.value)
        out = _cli("inspect", url, "--json")
        assert out.returncode == 0, out.stderr
        assert "s3cr" not in out.stdout and json.loads(out.stdout)["counts"]["pending"] == 1
        out = _cli("tasks", bad)
        assert out.returncode == 1 and "refused the credentials" in out.stderr and "wrong" not in out.stderr
        keyword = (f"host=127.0.0.1 port={pg_server.port} user=app dbname=postgres password='s3cr/et@x' "
                   "schema=pw")
        out = _cli("tasks", keyword)
        assert out.returncode == 0 and "s3cr" not in out.stdout + out.stderr
        assert PostgresStore(keyword, readonly=True).location.endswith("password=*** schema=pw")
    finally:
        with open(hba, "w") as fh:
            fh.write(original)
        pg_server.sql("SELECT pg_reload_conf()")


def test_readers_create_nothing_and_need_only_select(open_pg, pg_db, pg_server):
    with pytest.raises(NotAStore, match="no timewheel store in schema 'nothing'"):
        PostgresStore(pg_db, namespace="nothing", readonly=True)
    assert pg_server.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'nothing'") == [(0,)]
    out = _cli("tasks", pg_db + "?schema=nothing")
    assert out.returncode == 1 and "no timewheel store in schema 'nothing'" in out.stderr
    s = open_pg()
    s.add([make_record("r", s.now() + 60)])
    pg_server.sql("DROP ROLE IF EXISTS viewer")
    pg_server.sql("CREATE ROLE viewer LOGIN")
    pg_server.sql("GRANT USAGE ON SCHEMA t TO viewer")
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA t TO viewer")
    viewer = pg_db.replace("postgres@", "viewer@") + "?schema=t"
    ro = PostgresStore(viewer, readonly=True)
    try:
        assert ro.get("r").status == PENDING and ro.counts() == {(PENDING, "t"): 1}
        assert ro.liveness.leader() is None and not ro.liveness.try_lead()
        with pytest.raises(StoreError, match="read-only"):
            ro.add([make_record("w", ro.now())])
    finally:
        ro.close()
    out = _cli("inspect", viewer, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)["store"]
    assert info["schema"] == "t" and info["postgres_version"].startswith("15")
    out = _cli("cancel", viewer, "r")            # a writer: the server refuses, one line
    assert out.returncode == 1 and "may not" in out.stderr and "Traceback" not in out.stderr


def test_a_user_who_may_not_create_it_is_told_how(pg_db, pg_server):
    pg_server.sql("DROP ROLE IF EXISTS plain")
    pg_server.sql("CREATE ROLE plain LOGIN")          # not the database's owner: no CREATE on it
    plain = pg_db.replace("postgres@", "plain@")
    with pytest.raises(StoreError, match="timewheel migrate"):
        PostgresStore(plain, namespace="owned")
    # its owner applies what `timewheel migrate` prints; then the plain user can use it
    out = _cli("migrate", pg_db + "?schema=owned", "--tick", "0.5")
    assert out.returncode == 0 and out.stdout.count("CREATE OR REPLACE FUNCTION") >= 8, out.stderr
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("\n".join(line for line in out.stdout.splitlines() if not line.startswith("--")))
    pg_server.sql("GRANT USAGE ON SCHEMA owned TO plain")
    pg_server.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA owned TO plain")
    s = PostgresStore(plain, namespace="owned")
    try:
        assert s.wheel == Wheel(tick=0.5)
        s.add([make_record("m", s.now() - 1)])
        _ready_all(s)
        assert [r.id for r in s.claim(s.liveness.token, s.now(), 1).records] == ["m"]
    finally:
        s.close()
    out = _cli("migrate", pg_db + "?schema=owned")
    assert out.returncode == 0 and "up to date" in out.stdout
    out = _cli("migrate", pg_db + "?schema=owned", "--json")
    assert json.loads(out.stdout)["statements"] == [] and json.loads(out.stdout)["version"] == VERSION
    out = _cli("migrate", os.path.join(ROOT, "README.md"))
    assert out.returncode == 2 and "PostgreSQL" in out.stderr


def test_processes_starting_at_once_create_one_store(pg_db):
    errors: list[BaseException] = []
    stores: list[PostgresStore] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_db, Wheel(), namespace="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == [] and len(stores) == 6
        assert len({s._store_id for s in stores}) == 1
    finally:
        for s in stores:
            s.close()


# -- the server's clock ---------------------------------------------------------------------------

def test_now_is_the_servers_clock_whatever_the_local_one_says(open_pg, pg_server):
    s = open_pg(clock=lambda: time.time() + 3600)
    (server,), = pg_server.sql("SELECT extract(epoch FROM clock_timestamp())::float8")
    assert abs(s.now() - server) < 0.5


def test_a_claim_is_judged_by_the_servers_clock_not_the_callers(open_pg):
    fast = open_pg(clock=lambda: time.time() + 3600)      # thinks it is an hour later
    now = fast.now()                                       # the server's
    fast.add([make_record("soon", now + 1.5)])
    _ready_all(fast, ahead=3)
    assert fast.claim(fast.liveness.token, time.time() + 7200, 5).records == []
    time.sleep(1.6)
    (got,) = fast.claim(fast.liveness.token, 0, 5).records
    assert got.id == "soon" and got.started >= got.eta


def test_count_down_counts_from_the_servers_now(pg_db):
    for offset in (-30.0, 30.0):
        hu = TimeWheel(pg_db, clock=lambda o=offset: time.time() + o, namespace="cd")
        h = hu.task(name="noop")(lambda: None).delay(count_down=5)
        assert abs(h.record.eta - (time.time() + 5)) < 0.5, offset
        hu.close()


# -- leases, the ticking role, heartbeats ---------------------------------------------------------

def test_a_lease_runs_out_unless_renewed_and_is_never_revived(open_pg):
    s = open_pg(lease=1.0)
    other = open_pg(lease=1.0)
    now = s.now()
    s.add([make_record("a", now - 2), make_record("b", now - 1)])
    _ready_all(s)
    a, b = s.claim(s.liveness.token, s.now(), 2).records
    assert a.lease == pytest.approx(a.started + 1.0, abs=1e-3) and s.abandoned(s.now()) == []
    for _ in range(4):                       # renewed past its first deadline: "a" stays
        time.sleep(0.3)
        assert s.liveness.keepalive([a]) == []
    lost = other.abandoned(other.now())
    assert [r.id for r in lost] == ["b"]     # "b" was not renewed
    assert s.liveness.keepalive([a, b]) == ["b"]     # an expired lease is not renewed ...
    assert [r.id for r in other.abandoned(other.now())] == ["b"]   # ... so it stays abandoned
    assert s.liveness.keepalive([a, b]) == []        # (and is reported once)
    (back,) = other.swap([(lost[0], requeue_crashed(lost[0], other.now(), 3))])
    assert back.status == PENDING and back.crashes == 1
    t = s.now()                              # b's first owner finishes late: fenced out
    assert s.swap([(b, end_run(b, Outcome(True, t, t)))]) == [None]
    assert s.get("b") == back
    (b2,) = other.claim(other.liveness.token, other.now(), 1).records
    assert b2.rev > back.rev and s.liveness.keepalive([b2]) == ["b"]   # not s's task any more
    assert other.liveness.keepalive([b2]) == []
    check_pg_store(s._conninfo, "t")


def test_a_live_lease_is_changed_by_its_owner_only(open_pg):
    """A recovery that read a lease as run out an instant before its owner renewed it must
    lose: the compare-and-set refuses to change a running task with a live lease for anyone
    but its owner (on Redis, scripts run one at a time and cannot interleave like that)."""
    s, other = open_pg(lease=5.0), open_pg(lease=5.0)
    now = s.now()
    s.add([make_record("a", now - 1)])
    _ready_all(s)
    (a,) = s.claim(s.liveness.token, s.now(), 1).records
    stale_view = a._replace(lease=now - 1)            # what a recovery saw before the renewal
    assert other.swap([(stale_view, requeue_crashed(stale_view, other.now(), 3))]) == [None]
    assert s.get("a").status == RUNNING
    t = s.now()
    (done,) = s.swap([(a, end_run(a, Outcome(True, t, t)))])
    assert done.status == SUCCEEDED


def test_claims_by_an_owner_that_is_not_alive_are_abandoned_at_once(open_pg):
    s = open_pg()
    now = s.now()
    s.add([make_record("x", now - 1)])
    _ready_all(s)
    (x,) = s.claim("ghost:1:dead", s.now(), 1).records
    assert s.liveness.is_dead("ghost:1:dead")
    assert [r.id for r in s.abandoned(s.now())] == ["x"]


def test_one_leader_at_a_time_renewed_only_by_its_holder(open_pg):
    a, b = open_pg(wheel=Wheel(tick=0.5)), open_pg(wheel=Wheel(tick=0.5))
    assert a.liveness.role_ttl == 1.0
    assert a.liveness.try_lead() and not b.liveness.try_lead()
    assert a.liveness.leader() == b.liveness.leader() == a.liveness.token
    assert not a.liveness.is_dead(a.liveness.token)          # leading wrote its heartbeat
    for _ in range(5):                        # a renews: b never gets it
        time.sleep(0.3)
        assert a.liveness.try_lead() and not b.liveness.try_lead()
    time.sleep(1.2)                           # a stops renewing: the role lapses
    assert b.liveness.try_lead() and b.liveness.leader() == b.liveness.token
    a.liveness._leading_until = 0.0           # a's cached belief is gone: it asks again
    assert not a.liveness.try_lead()
    assert not a.advance(10 ** 10, 10, a.liveness.token).led      # and cannot turn the wheel
    b.liveness.resign()
    assert b.liveness.leader() is None and a.liveness.try_lead()


def test_a_closed_or_killed_process_is_dead(open_pg, pg_db, python):
    s = open_pg(namespace="dead", wheel=Wheel(tick=0.1), lease=0.5)     # heartbeats last 0.5 s
    gone = open_pg(namespace="dead", wheel=Wheel(tick=0.1), lease=0.5)
    gone.liveness.try_lead()
    token = gone.liveness.token
    assert not s.liveness.is_dead(token)
    gone.close()
    assert s.liveness.is_dead(token) and s.liveness.leader() is None
    code = ("import sys, time; from timewheel.store.postgres import PostgresStore\n"
            "s = PostgresStore(sys.argv[1], namespace='dead', lease=0.5); s.liveness.try_lead()\n"
            "print(s.liveness.token, flush=True); time.sleep(60)\n")
    p = procs.popen([python, "-c", code, pg_db], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        token = p.stdout.readline().strip()
        assert not s.liveness.is_dead(token)
        p.kill()
        p.wait(10)
        wait_for(lambda: s.liveness.is_dead(token), timeout=5, what="the heartbeat to lapse")
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()


# -- waking runners ---------------------------------------------------------------------------------

def test_a_ready_task_rings_runners_of_other_stores_and_poke_stays_local(open_pg):
    a, b = open_pg(), open_pg()
    bell_a, bell_b = a.doorbell(), b.doorbell()
    try:
        assert bell_a.wait(5.0) and bell_b.wait(5.0)     # each rings itself once listening
        a.add([make_record("r", a.now() + 60)])          # in the wheel: nobody needs waking
        assert not bell_b.wait(0.3)
        _ready_all(a, ahead=120)                         # made ready: every runner looks
        assert bell_b.wait(2.0) and bell_a.wait(2.0)
        a.add([make_record("s", a.now() + 30)])          # ready at once, ahead of "r"
        t0 = time.monotonic()
        assert bell_b.wait(2.0)
        woke = time.monotonic() - t0
        a.add([make_record("t", a.now() + 50)])          # behind "s": the runners know
        assert not bell_b.wait(0.3)
        bell_a.poke()
        assert bell_a.wait(1.0) and not bell_b.wait(0.3)
        late = a.doorbell()                              # joins a listener already listening:
        try:                                             # rung at once, not at the next notify
            assert late.wait(2.0)
        finally:
            late.close()
        print(f"\nLISTEN/NOTIFY wake-up across stores: {woke * 1e3:.2f} ms")
        assert woke < 1.0
    finally:
        bell_a.close()
        bell_b.close()


def test_listen_off_keeps_no_session_state_and_still_runs_tasks(pg_db, pg_server):
    """?listen=0 (PgBouncer in transaction mode): no LISTEN session, and a task due soon is
    still started on time by another process (found within a tick)."""
    url = pg_db + "?schema=nolisten&listen=0"
    worker = TimeWheel(url, workers=2, tick=0.25)
    worker.task(name="noop")(lambda: None)
    client = TimeWheel(url, tick=0.25)
    task = client.task(name="noop")(lambda: None)
    worker.start()
    try:
        h = task.delay(count_down=0.5)
        h.result(timeout=10)
        rec = h.record
        assert 0 <= rec.started - rec.eta < 0.5
        sessions = pg_server.sql("SELECT query FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                 "AND pid <> pg_backend_pid()")
        assert sessions and not [q for (q,) in sessions if q.startswith("LISTEN")], sessions
    finally:
        worker.close()
        client.close()


# -- records ------------------------------------------------------------------------------------------

def test_a_broken_record_is_set_aside(open_pg, pg_server):
    s = open_pg()
    now = s.now()
    s.add([make_record("bad", now - 1), make_record("good", now - 0.5), make_record("next", now - 0.4)])
    pg_server.sql("UPDATE t.tasks SET version = 99 WHERE id = 'bad'")     # written by a newer timewheel
    with pytest.raises(RecordDecodeError):
        s.get("bad")
    _ready_all(s)
    # one to start, one queued: the broken one took the started place, both good ones queue
    got = s.claim(s.liveness.token, s.now(), 1, queued=2).records
    assert [x.id for x in got] == ["good", "next"]
    assert [s.get(x.id) for x in got] == got and all(x.started is None for x in got)
    (b,) = s.scan(BROKEN)
    assert b.id == "bad" and b.status == BROKEN and "newer" in b.error
    assert s.counts() == {(RUNNING, "t"): 2, (BROKEN, "t"): 1}
    check_pg_store(s._conninfo, "t")
    (again,) = s.add([make_record("bad", now + 5)], existing="replace")     # replaced, rev goes on
    assert again.rev > 0 and s.get("bad") == again
    check_pg_store(s._conninfo, "t")


def test_a_large_batch_is_copied_all_or_none_and_rings(open_pg):
    """A batch of new tasks is written by COPY in one transaction: a duplicate id anywhere in it
    writes nothing; ready ones ring the runners; the counters are kept as for one task."""
    s = open_pg()
    bell = open_pg().doorbell()
    try:
        assert bell.wait(5.0)
        now = s.now()
        s.add([make_record("taken", now + 60)])
        batch = [make_record(f"b{i}", now + 60 + i) for i in range(40)]
        with pytest.raises(DuplicateTask, match="'taken'"):
            s.add(batch[:20] + [make_record("taken", now + 5)] + batch[20:])
        assert s.get("b0") is None and s.counts() == {(PENDING, "t"): 1}
        assert s.add(batch) == batch and not bell.wait(0.3)            # far out: no ring
        _ready_all(s, ahead=120)
        assert bell.wait(2.0)
        s.add([make_record(f"r{i}", now + 30 + i, name="soon") for i in range(20)])   # ready at once
        assert bell.wait(2.0)
        assert s.counts() == {(PENDING, "t"): 41, (PENDING, "soon"): 20}
        check_pg_store(s._conninfo, "t")
    finally:
        bell.close()


def test_far_etas_and_odd_geometry_are_placed_alike_in_python_and_sql(open_pg):
    s = open_pg(wheel=Wheel(slots=7, tick=0.001))
    now = s.now()
    etas = [now + 0.5, now + 3600.25, now + 86400 * 365 * 100, 253402300799.0, now + 1e6 + 0.0005]
    s.add([make_record(f"f{i}", eta) for i, eta in enumerate(etas)])
    check_pg_store(s._conninfo, "t")
    assert [r.id for r in s.scan(PENDING)] == [f"f{i}" for i in (0, 1, 4, 2, 3)]
    assert s.ticks() == sorted((s.wheel.due_tick(e), 1) for e in etas)
    assert s.wheel_stats() == (5, len({s.wheel.due_tick(e) % 7 for e in etas}))
    step = s.advance(s.wheel.due_tick(now + 3600.25), 10, "L")
    assert step.moved == 2 and step.complete
    check_pg_store(s._conninfo, "t")


def test_the_counters_are_folded_by_the_ticking_process(open_pg, pg_server):
    s = open_pg()
    now = s.now()
    s.add([make_record(f"c{i}", now + 60 + i, name=f"n{i % 3}") for i in range(30)])
    for i in range(30, 40):
        s.add([make_record(f"c{i}", now + 60 + i)])
    before = (s.counts(), s.ticks(), s.wheel_stats())
    assert pg_server.sql("SELECT count(*) FROM t.counts_delta") == [(40,)]
    _ready_all(s)
    assert pg_server.sql("SELECT count(*) FROM t.counts_delta") == [(0,)]
    assert (s.counts(), s.ticks(), s.wheel_stats()) == before
    check_pg_store(s._conninfo, "t")


def test_a_dropped_store_fails_cleanly(open_pg, pg_server):
    s = open_pg()
    s.add([make_record("a", s.now() - 1)])
    pg_server.sql("DROP SCHEMA t CASCADE")
    for call in (lambda: s.add([make_record("b", s.now())]), lambda: s.claim(s.liveness.token, 0, 1),
                 lambda: s.advance(10 ** 10, 10, "x"), lambda: s.purge(s.now())):
        with pytest.raises(StoreError, match="no timewheel store in schema 't'"):
            call()


# -- the API end to end ------------------------------------------------------------------------------

def test_the_api_works_unchanged_on_postgres(pg_db):
    """Retries, async tasks, periodic tasks (two wheels: each occurrence runs once), cancel,
    retry, results, hooks and time limits, through TimeWheel on a PostgreSQL URL."""
    import asyncio
    runs: list[str] = []
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    tries = {"n": 0}            # shared: a retry may run in either wheel

    def wheel() -> TimeWheel:
        hu = TimeWheel(pg_db, workers=2, tick=0.25, slots=60, namespace="api")

        @hu.task(name="flaky", retries=2, retry_delay=0.05)
        def flaky() -> str:
            tries["n"] += 1
            if tries["n"] < 3:
                raise ValueError("not yet")
            return "third time"

        @hu.task(name="later")
        async def later(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * 2

        @hu.task(name="slow", timeout=0.2)
        def slow() -> None:
            for _ in range(1000):
                time.sleep(0.01)

        @hu.periodic(every=0.5, name="beat")
        def beat() -> None:
            from timewheel.execute import current_task
            with lock:
                runs.append(current_task().id)

        @hu.on("failed")
        def failed(rec, exc) -> None:
            with lock:
                events.append((rec.name, type(exc).__name__))
        return hu

    a, b = wheel(), wheel()
    a.start()
    b.start()
    try:
        flaky, later, slow = a.tasks["flaky"], a.tasks["later"], a.tasks["slow"]
        assert flaky.delay().result(timeout=10) == "third time"
        assert later.delay(21).result(timeout=10) == 42
        h = later.delay(1, count_down=60)
        assert h.cancel() and h.status == "cancelled" and a.retry(h.id)
        assert h.result(timeout=10) == 2
        first = later.schedule((5,), task_id="once", once=True)
        assert later.schedule((6,), task_id="once", once=True) == first and first.result(timeout=10) == 10
        with pytest.raises(Exception, match="TaskTimeout"):
            slow.delay().result(timeout=10)
        wait_for(lambda: ("slow", "TaskTimeout") in events, 10, what="the failed hook")
        time.sleep(1.5)
    finally:
        a.close()
        b.close()
    assert len(runs) >= 2 and len(runs) == len(set(runs)), runs     # each occurrence once


# -- transactional enqueue ------------------------------------------------------------------------

@pytest.fixture
def tx(pg_db):
    """A started wheel (tick 0.5 s) on schema "tx", and a wheel that only enqueues there."""
    worker = TimeWheel(pg_db + "?schema=tx", workers=2, tick=0.5)
    worker.task(name="tx.note")(lambda tag: tag)
    worker.task(name="tx.sleep")(lambda s: time.sleep(s))
    worker.start()
    client = TimeWheel(pg_db + "?schema=tx", tick=0.5)
    note = client.task(name="tx.note")(lambda tag: tag)
    client.task(name="tx.sleep")(lambda s: time.sleep(s))
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.orders")
        c.execute("CREATE TABLE public.orders (tag text)")
    yield worker, client, note
    client.close()
    worker.close()


def _orders(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as c:
        return sorted(t for (t,) in c.execute("SELECT tag FROM public.orders"))


def _gone(hu: TimeWheel, task_id: str) -> bool:
    from timewheel.errors import TaskNotFound
    try:
        hu.get(task_id)
    except TaskNotFound:
        return True
    return False


def test_transactional_enqueue_with_psycopg(pg_db, tx):
    worker, client, note = tx
    with psycopg.connect(pg_db) as conn:                  # not autocommit: a transaction block
        conn.execute("INSERT INTO public.orders VALUES ('rolled back')")
        with client.using(conn):
            rolled = note.delay("rolled back")
            with client.batch():                           # a batch too: one statement, same transaction
                batch = [note.delay(f"b{i}") for i in range(50)]
        conn.rollback()
        conn.execute("INSERT INTO public.orders VALUES ('committed')")
        with client.using(conn):
            h = note.delay("committed")
        h2 = client.tasks["tx.note"].schedule(("by connection=",), connection=conn)
        assert client.store.get(h.id) is None and client.store.get(h2.id) is None   # not visible yet
        conn.commit()
    assert h.result(timeout=10) == "committed" and h2.result(timeout=10) == "by connection="
    assert _gone(client, rolled.id) and not [b for b in batch if not _gone(client, b.id)]
    assert _orders(pg_db) == ["committed"]
    with psycopg.connect(pg_db, autocommit=True) as conn:  # no transaction: written at once
        with client.using(conn):
            assert note.delay("autocommit").result(timeout=10) == "autocommit"
    check_pg_store(pg_db, "tx")


def test_an_open_transaction_holds_its_task_back_then_it_runs_within_a_tick(pg_db, tx, record_property):
    """Held open for 5 s: the task is invisible (no process can run it early, nobody is
    blocked meanwhile); once committed it starts within one tick (no wake-up is sent from the
    application's transaction: the workers find it when they look, once a tick)."""
    worker, client, note = tx
    conn = psycopg.connect(pg_db)
    try:
        with client.using(conn):
            h = note.delay("held", count_down=0.2)
        opened_at = time.time()
        other = note.delay("meanwhile", count_down=0.2)      # the store's own connection
        assert other.result(timeout=5) == "meanwhile"        # not held up by the open transaction
        while time.time() < opened_at + 5:
            assert client.store.get(h.id) is None
            time.sleep(0.25)
        conn.commit()
        committed = time.time()
    finally:
        conn.close()
    assert h.result(timeout=10) == "held"
    rec = h.record
    held, after_commit = rec.started - rec.eta, rec.started - committed
    print(f"\nheld by an open transaction: started {held:.2f}s after its eta, {after_commit * 1e3:.0f} ms "
          f"after the commit (tick 0.5 s)")
    record_property("started_after_commit_s", round(after_commit, 3))
    assert held >= 4.5
    assert -0.05 <= after_commit <= 0.5 + 0.25


def test_no_wake_up_is_sent_from_inside_the_applications_transaction(pg_db):
    """A NOTIFY in a transaction takes a database-wide lock at its commit: the application's
    transaction never carries one.  Our own delay() of a task due now wakes the runners; the
    same through an application's transaction does not (with psycopg there is no commit hook:
    the tick is the backstop)."""
    hu = TimeWheel(pg_db + "?schema=quiet", tick=0.5)
    note = hu.task(name="tx.note")(lambda tag: tag)
    store = hu.store
    store.advance(store.wheel.current_tick(store.now()) + 40, 10_000, "the test")    # due now: ready
    with psycopg.connect(pg_db, autocommit=True) as listener:
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(store.channel)))
        note.delay("own")
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
        store.purge(store.now() + 10)
        for r in store.scan(PENDING):
            store.change(r.id, lambda x: x.status == PENDING, lambda x, now: x._replace(status="cancelled",
                                                                                    finished=now))
        with psycopg.connect(pg_db) as conn:
            with hu.using(conn):
                note.delay("through the application")
            assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
            conn.commit()
        assert list(listener.notifies(timeout=1.0, stop_after=1)) == []
    hu.close()


def test_transactional_enqueue_with_sqlalchemy(pg_db, tx):
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session
    worker, client, note = tx
    engine = create_engine(pg_db.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            conn.execute(text("INSERT INTO public.orders VALUES ('conn rolled back')"))
            with client.using(conn):
                r1 = note.delay("conn rolled back")
            conn.rollback()
            conn.execute(text("INSERT INTO public.orders VALUES ('conn')"))
            with client.using(conn):
                h1 = note.delay("conn")
            conn.commit()
        with Session(engine) as session:
            session.execute(text("INSERT INTO public.orders VALUES ('session rolled back')"))
            with client.using(session):
                r2 = note.delay("session rolled back")
            session.rollback()
            session.execute(text("INSERT INTO public.orders VALUES ('session')"))
            with client.using(session):
                h2 = note.delay("session")
            session.commit()
    finally:
        engine.dispose()
    assert h1.result(timeout=10) == "conn" and h2.result(timeout=10) == "session"
    assert _gone(client, r1.id) and _gone(client, r2.id)
    assert _orders(pg_db) == ["conn", "session"]


def test_transactional_enqueue_with_django(pg_db, python):
    """Through hu.using("default") in transaction.atomic(): rolled back (and in a rolled-back
    savepoint), the task never existed; committed, it runs; the wake-up is sent by Django's
    on_commit, after the commit, never before."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS public.dj_orders")
    out = procs.run([python, os.path.join(ROOT, "tests", "pg_django_tx.py"), pg_db, "dj"],
                    capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    assert seen["notified_for_rollback"] == 0 and not seen["visible_before_commit"]
    assert seen["notified_before_commit"] == 0 and seen["notified_after_commit"] == 1
    assert seen["notified_after_autocommit"] == 1
    worker = TimeWheel(pg_db + "?schema=dj", tick=0.5)
    worker.task(name="tx.note")(lambda tag: tag)
    worker.start()
    try:
        assert worker.get(seen["committed"]).result(timeout=10) == "committed"
        assert worker.get(seen["autocommit"]).result(timeout=10) == "autocommit"
        assert _gone(worker, seen["rolled_back"]) and _gone(worker, seen["in_savepoint"])
    finally:
        worker.close()
    with psycopg.connect(pg_db, autocommit=True) as c:
        assert [t for (t,) in c.execute("SELECT tag FROM public.dj_orders")] == ["committed"]


def test_errors_in_the_applications_transaction(pg_db, tx):
    """A task id that forbids the change raises DuplicateTask and leaves the transaction
    usable; a server error (here a statement timeout) raises StoreBusy and says the
    transaction must be rolled back, as PostgreSQL aborted it."""
    worker, client, note = tx
    sleep = client.tasks["tx.sleep"]
    busy = sleep.schedule((3.0,), task_id="busy")
    wait_for(lambda: busy.status == RUNNING, 10, what="the task to start")
    with psycopg.connect(pg_db) as conn:
        conn.execute("INSERT INTO public.orders VALUES ('kept')")
        with client.using(conn):
            with pytest.raises(DuplicateTask, match="running"):
                sleep.schedule((1.0,), task_id="busy", replace=True)
            assert sleep.schedule((1.0,), task_id="busy") == busy          # reuse: the running one
        conn.execute("INSERT INTO public.orders VALUES ('still usable')")
        conn.commit()
    assert _orders(pg_db) == ["kept", "still usable"]
    with psycopg.connect(pg_db, autocommit=True) as locker, psycopg.connect(pg_db) as conn:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE tx.tasks IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET LOCAL statement_timeout = '300ms'")
        with client.using(conn), pytest.raises(StoreBusy, match="roll it back"):
            note.delay("blocked")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        locker.execute("ROLLBACK")


def test_transactional_enqueue_needs_a_postgres_store_and_a_connection_it_knows(tmp_path, pg_db, pg_server):
    import sqlite3

    from sqlalchemy import create_engine
    file_wheel = TimeWheel(str(tmp_path / "t.db"))
    with pytest.raises(TypeError, match="needs a PostgreSQL store; this wheel's store is .*t.db"):
        with file_wheel.using(psycopg.connect(pg_db)):
            pass
    file_wheel.close()
    hu = TimeWheel(pg_db + "?schema=kinds")
    note = hu.task(name="n")(lambda: None)
    for wrong, message in ((42, "not int"), (sqlite3.connect(":memory:"), "not Connection"),
                           (create_engine("sqlite://").connect(), "is a sqlite connection")):
        with pytest.raises(TypeError, match=message):
            with hu.using(wrong):
                pass
    with psycopg.connect(pg_db) as conn:
        with hu.using(conn), pytest.raises(ValueError, match="inside hu.batch"):
            with hu.batch():
                note.schedule((), connection=conn)
    # a connection to another database: not this store
    pg_server.sql("DROP DATABASE IF EXISTS other")
    pg_server.sql("CREATE DATABASE other")
    other = pg_server.url_for("other")
    TimeWheel(other + "?schema=kinds").store.close()            # a store of the same schema there
    with psycopg.connect(other) as conn, hu.using(conn), pytest.raises(StoreError, match="is not the store"):
        note.delay()
    hu.close()
    immediate = TimeWheel(pg_db, immediate=True)                 # tests of apps: inline, no connection
    double = immediate.task(name="d")(lambda x: 2 * x)
    with immediate.using("any alias"):
        assert double.delay(4).result() == 8


# -- faults -----------------------------------------------------------------------------------------

def test_an_unreachable_server_raises_store_errors_naming_it():
    from timewheel.testing import free_port
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StoreError, match=r"cannot reach the PostgreSQL server at postgresql://postgres@127\.0\.0\.1"):
        PostgresStore(url)
    hu = TimeWheel(url)
    with pytest.raises(StoreError, match="nothing was written"):
        hu.task(name="n")(lambda: None).delay()
    out = _cli("tasks", url)
    assert out.returncode == 1 and "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_killed_connections_are_replaced_and_lose_no_task(pg_db, pg_server, record_property):
    """pg_terminate_backend on every connection, three times, while a wheel runs tasks and
    another enqueues: an idle connection that was killed is replaced before it is used, so
    delay() fails only when a kill hits its very statement (and then says so), and every task
    whose delay() returned runs once."""
    url = pg_db + "?schema=killed"
    worker = TimeWheel(url, workers=4, tick=0.25)
    ran: list[str] = []
    lock = threading.Lock()

    def note(tag: str) -> None:
        with lock:
            ran.append(tag)
    worker.task(name="k.note")(note)
    worker.start()
    client = TimeWheel(url, tick=0.25)
    task = client.task(name="k.note")(note)
    returned, failed = [], []
    try:
        for round_ in range(3):
            for i in range(40):
                try:
                    task.delay(f"{round_}-{i}", count_down=0.1)
                    returned.append(f"{round_}-{i}")
                except StoreError as exc:
                    failed.append(str(exc))
                time.sleep(0.005)
            killed = pg_server.sql("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                                   "WHERE "
                                   "backend_type = 'client backend' AND pid <> pg_backend_pid()")[0][0]
            assert killed >= 2
            # (the kill waited for them to exit:) the idle ones are replaced, no error
            task.delay(f"after-kill-{round_}", count_down=0.1)
            returned.append(f"after-kill-{round_}")
        wait_for(lambda: set(returned) <= set(ran), 20, what="every returned task to run")
        time.sleep(0.5)
    finally:
        client.close()
        worker.close()
    print(f"\nkilled connections 3 times: {len(returned)} delay() returned, {len(failed)} raised")
    record_property("delay_failed", len(failed))
    assert all("lost the connection" in f for f in failed), failed
    assert sorted(ran) == sorted(set(ran)) and set(returned) <= set(ran)
    check_pg_store(pg_db, "killed")


def test_a_statement_timeout_and_a_held_lock_are_store_busy(pg_db, open_pg, pg_server):
    """The server's statement_timeout (here through libpq's options) cancels a write stuck
    behind a lock, and the store's own timeout does the same when the server has none:
    StoreBusy, nothing written."""
    server_side = open_pg(url=pg_db + "?options=-c%20statement_timeout%3D300")
    own = open_pg(timeout=0.5)
    with psycopg.connect(pg_db, autocommit=True) as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE t.tasks IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        with pytest.raises(StoreBusy, match="statement timeout.*nothing was written"):
            server_side.add([make_record("blocked", server_side.now())])
        with pytest.raises(StoreBusy, match=r"did not answer within 0.5s.*nothing was written"):
            own.add([make_record("blocked2", own.now())])
        took = time.monotonic() - t0
        locker.execute("ROLLBACK")
    assert took < 3.0
    assert own.get("blocked") is None and own.get("blocked2") is None and own.counts() == {}
    own.add([make_record("fine", own.now())])                   # the connections still work
    assert own.get("fine") is not None


def test_a_stopped_server_makes_calls_time_out(tmp_path):
    """A server that stops answering (SIGSTOP) keeps its connections open: the store's
    watchdog cancels, then gives the connection up, and the call raises StoreBusy within a
    few timeouts instead of hanging."""
    with PostgresServer() as server:
        s = PostgresStore(server.url, timeout=1.0)
        try:
            s.add([make_record("a", s.now() + 60)])
            server.pause()
            t0 = time.monotonic()
            try:
                with pytest.raises(StoreBusy, match="did not answer within 1s"):
                    s.add([make_record("b", s.now() + 60)])
            finally:
                server.resume()
            took = time.monotonic() - t0
            print(f"\na stopped server: StoreBusy after {took:.2f}s (timeout 1 s)")
            assert took < 6.0
            s.add([make_record("c", s.now() + 60)])               # works again once it answers
            assert s.get("c") is not None
        finally:
            s.close()


def test_a_read_only_database_refuses_writes_whole_and_outcomes_wait(pg_db, pg_server):
    """default_transaction_read_only on (as a standby answers): delay() raises StoreError
    saying so, nothing is half-written; a task running meanwhile finishes, and its outcome is
    recorded once the database takes writes again."""
    url = pg_db + "?schema=ro"
    worker = TimeWheel(url, workers=2, tick=0.25)
    worker.task(name="ro.sleep")(lambda s: time.sleep(s) or "slept")
    worker.start()
    client = TimeWheel(url, tick=0.25)
    sleep = client.task(name="ro.sleep")(lambda s: None)
    try:
        h = sleep.delay(1.5)
        wait_for(lambda: h.status == RUNNING, 10, what="the task to start")
        pg_server.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        pg_server.sql("SELECT pg_reload_conf()")
        time.sleep(0.3)
        with pytest.raises(StoreError, match="read-only.*nothing was written"):
            sleep.delay(0.0)
        with pytest.raises(StoreError, match="read-only"), client.batch():
            for _ in range(10):
                sleep.delay(0.0)
        time.sleep(2.0)                       # the task ended meanwhile; its outcome waits
        assert h.status == RUNNING and worker.health().ok is False
    finally:
        pg_server.sql("ALTER SYSTEM RESET default_transaction_read_only")
        pg_server.sql("SELECT pg_reload_conf()")
    try:
        assert h.result(timeout=15) == "slept"
        assert client.store.counts() == {(SUCCEEDED, "ro.sleep"): 1}
        wait_for(lambda: worker.health().ok, 10, what="the wheel to recover")
    finally:
        client.close()
        worker.close()
    check_pg_store(pg_db, "ro")


def test_a_full_database_refuses_writes_whole(pg_db, pg_server):
    """The store's table on a small tmpfs tablespace filled to the last byte: delay() and a
    batch raise StoreError naming the full disk, and write nothing; once space is free again
    they work."""
    import pwd
    import tempfile

    from .test_faults import Disk
    root = tempfile.mkdtemp(prefix="timewheel-pg-full-")
    os.chmod(root, 0o755)
    disk = Disk(os.path.join(root, "disk"), size="8m")
    pw = pwd.getpwnam("postgres")
    os.chown(disk.path, pw.pw_uid, pw.pw_gid)
    space = os.path.join(disk.path, "ts")
    os.mkdir(space)
    os.chown(space, pw.pw_uid, pw.pw_gid)
    url = pg_db + "?schema=filled"
    hu = TimeWheel(url, tick=0.25)
    task = hu.task(name="f.big")(lambda blob: None)
    try:
        hu.store.counts()                                 # the store exists: move it to the small disk
        pg_server.sql("DROP TABLESPACE IF EXISTS tiny")
        pg_server.sql(f"CREATE TABLESPACE tiny LOCATION '{space}'")
        pg_server.sql("ALTER TABLE filled.tasks SET TABLESPACE tiny")
        pg_server.sql("ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE tiny")
        task.delay(b"x", count_down=60)
        disk.fill()
        with pytest.raises(StoreError, match="out of disk space.*nothing was written"):
            for _ in range(20):
                task.delay(os.urandom(200_000), count_down=60)
        before = hu.store.counts()
        with pytest.raises(StoreError, match="out of disk space"), hu.batch():
            for _ in range(5):
                task.delay(os.urandom(100_000), count_down=60)
        assert hu.store.counts() == before
        check_pg_store(pg_db, "filled")
        disk.free()
        task.delay(os.urandom(200_000), count_down=60)
        assert hu.store.counts()[(PENDING, "f.big")] == before[(PENDING, "f.big")] + 1
        check_pg_store(pg_db, "filled")
    finally:
        hu.close()
        for cleanup in ("DROP SCHEMA IF EXISTS filled CASCADE",
                        "ALTER INDEX ALL IN TABLESPACE tiny SET TABLESPACE pg_default",
                        "DROP TABLESPACE IF EXISTS tiny"):
            try:
                pg_server.sql(cleanup)
            except psycopg.Error as exc:
                print(f"cleanup: {cleanup}: {exc}")
        disk.unmount()
        os.rmdir(disk.path)
        os.rmdir(root)


# -- real processes -----------------------------------------------------------------------------------

@pytest.fixture
def pg_cluster(tmp_path):
    """A PostgreSQL server of this test's own, and mp_worker processes on it (lease 1 s)."""
    server = PostgresServer().start()
    c = Cluster(tmp_path)
    c.db = server.url + "?lease=1"
    c.server = server
    yield c
    c.close()
    server.stop()


def test_crash_loop_on_postgres(tmp_path, record_property):
    """3 workers, random SIGKILLs of any of them while 3,000 tasks come due: 0 lost, the only
    duplicates are tasks running at a kill."""
    with PostgresServer() as server:
        res = crashloop.run(kills=12, procs=3, tasks=3000, workdir=str(tmp_path), seed=17, quiet=True,
                            store=server.url + "?lease=1")
    for k, v in res.items():
        record_property(k, v)
    print("\ncrash loop on PostgreSQL:", res)
    _crashloop_check(res)
    assert res["enqueued"] == 3000


@pytest.mark.slow
def test_crash_loop_on_postgres_long(tmp_path, record_property):
    with PostgresServer() as server:
        res = crashloop.run(kills=110, procs=3, tasks=3000, workdir=str(tmp_path), seed=45, quiet=True,
                            store=server.url + "?lease=1")
    for k, v in res.items():
        record_property(k, v)
    print("\ncrash loop on PostgreSQL (long):", res)
    _crashloop_check(res)


def test_postgres_sigkilled_while_tasks_run_then_restarted(pg_cluster, record_property):
    """Two workers run tasks while this process keeps calling delay(); the server (every
    process of it) is SIGKILLed and restarted 1 s later, recovering from its WAL.  Every task
    whose delay() returned runs exactly once; the outcomes of tasks that ended during the
    outage are recorded once it is back."""
    c = pg_cluster
    c.db = c.server.url + "?lease=6"            # longer than the outage plus the boss's backoff
    procs = [c.worker("--workers", "4") for _ in range(2)]
    c.ready(2)
    hu, task = mp_worker.make_wheel(c.db, busy_timeout=0.5)
    returned: dict[str, str] = {}
    failed: list[str] = []

    def feed() -> None:
        t0 = time.monotonic()
        for i in range(300):
            time.sleep(max(0.0, t0 + i * 0.01 - time.monotonic()))
            try:
                returned[f"k-{i}"] = task.delay(c.log, f"k-{i}", 0.3, count_down=0.2).id
            except StoreError as exc:
                failed.append(f"k-{i}: {exc}")

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(1.5)
    killed_at = time.time()
    c.server.kill()
    time.sleep(1.0)
    c.server.start()
    back_at = time.time()
    feeder.join()
    wait_for(lambda: set(returned) <= Runs(c.log).finished(), 30, what="every returned task to run")
    time.sleep(1.0)
    runs = Runs(c.log)
    ended = {p[1]: float(p[3]) for p in mp_worker.read_lines(c.log) if p[0] == "end"}
    running_at_kill = [t for t in returned if runs.start_times[t][0] < killed_at < ended[t]]
    dups = {t: n for t, n in runs.duplicates().items() if t in returned}
    statuses = {hu.get(i).status for i in returned.values()}
    print(f"\nserver down {back_at - killed_at:.2f}s: {len(returned)} delay() returned, {len(failed)} "
          f"raised, {len(running_at_kill)} tasks were running at the kill, duplicates {dups}")
    record_property("delay_failed", len(failed))
    record_property("running_at_kill", len(running_at_kill))
    assert failed and len(returned) + len(failed) == 300         # the outage was felt
    assert all("127.0.0.1" in f for f in failed)
    assert running_at_kill, "no task was running at the kill"
    assert dups == {}
    assert statuses == {SUCCEEDED}
    check_pg_store(c.server.url, "timewheel")
    hu.close()
    mp_worker.stop_all(procs, c.stop_file)


def test_clock_skew_of_30s_either_way_never_starts_a_task_early(pg_cluster, record_property):
    """Three workers whose clocks are -30 s, 0 and +30 s off each enqueue 100 tasks and run
    tasks: none starts before its eta by the server's clock (here: this host's), and
    count_down counts from the server's now (no task runs ~30 s late)."""
    c = pg_cluster
    procs = [c.worker("--clock-offset", str(off), "--enqueue", "100", "--count-down", "0.5",
                      "--spread", "2", "--tag", f"o{i}", "--go-file", c.go_file)
             for i, off in enumerate((-30.0, 0.0, 30.0))]
    c.ready(3)
    mp_worker.append_line(c.go_file, "go")
    wait_for(lambda: len(events_of(c.events, "enqueued")) == 3, 30, what="enqueueing")
    ids = {p[3]: p[2] for p in events_of(c.events, "enq")}
    wait_for(lambda: set(ids) <= Runs(c.log).finished(), 30, what="300 runs")
    runs = Runs(c.log)
    store = open_store(c.db, readonly=True)
    early, late, by_pid = [], [], set()
    for tag, task_id in ids.items():
        rec = store.get(task_id)
        (start,) = runs.start_times[tag]
        by_pid.update(runs.starts[tag])
        if start < rec.eta or rec.started < rec.eta:
            early.append((tag, start - rec.eta))
        late.append(start - rec.eta)
    store.close()
    late.sort()
    print(f"\nskewed clocks: {len(early)} of 300 early; lateness p50 {late[150] * 1e3:.1f} ms, "
          f"p99 {late[297] * 1e3:.1f} ms, max {late[-1] * 1e3:.1f} ms")
    record_property("max_lateness_ms", round(max(late) * 1e3, 1))
    assert len(ids) == 300 and early == []
    assert max(late) < 2.0
    assert len(by_pid) >= 2
    mp_worker.stop_all(procs, c.stop_file)


def test_a_worker_sigstopped_past_its_lease_is_fenced_out(pg_cluster, record_property):
    """A's task runs again on B after A's lease runs out; when A is continued its run ends
    too, but its outcome is refused: the stored outcome is B's."""
    c = pg_cluster
    a = c.worker("--workers", "1")
    c.ready(1)
    c.enqueue(1, "--tag", "slow", "--task-sleep", "2.0")
    wait_for(lambda: Runs(c.log).starts.get("slow-0"), 10, what="A to start the task")
    b = c.worker("--workers", "1")
    c.ready(2)
    stopped_at = time.time()
    a.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len(Runs(c.log).starts.get("slow-0", [])) == 2, 15, what="B to run it again")
        rerun_after = Runs(c.log).start_times["slow-0"][1] - stopped_at
        wait_for(lambda: str(b.pid) in Runs(c.log).ends.get("slow-0", []), 10, what="B to finish")
        (task_id,) = [p[2] for p in events_of(c.events, "enq")]
        store = open_store(c.db, readonly=True)
        by_b = wait_for(lambda: (r := store.get(task_id)).status == SUCCEEDED and r, 10,
                        what="B's outcome to be recorded")
        assert by_b.crashes == 1
    finally:
        a.send_signal(signal.SIGCONT)
    wait_for(lambda: str(a.pid) in Runs(c.log).ends.get("slow-0", []), 10, what="A's run to end")
    wait_for(lambda: [e for e in c.errors() if "refused" in e and str(a.pid) in e], 10,
             what="A's outcome to be refused")
    runs = Runs(c.log)
    assert runs.starts["slow-0"] == [str(a.pid), str(b.pid)]
    assert store.get(task_id) == by_b                   # B's outcome stands
    print(f"\nSIGSTOP: re-run on B {rerun_after:.2f}s after A stopped (lease 1 s, tick {TICK}s)")
    record_property("rerun_after_s", round(rerun_after, 3))
    assert rerun_after < 1.0 + 2 * TICK + 1.5
    store.close()
    mp_worker.stop_all([a, b], c.stop_file)


def test_recovery_of_a_sigkilled_workers_task_within_lease_plus_a_tick(pg_cluster, record_property):
    """The task of a SIGKILLed worker runs again elsewhere within lease + one tick.  Measured
    with lease 1 s, tick 0.25 s; the killed worker was also the ticking one, so a survivor
    first takes the role over."""
    c = pg_cluster
    a = c.worker("--workers", "1")
    c.ready(1)
    c.leader()
    b = c.worker("--workers", "2")
    c.ready(2)
    c.enqueue(1, "--tag", "victim", "--task-sleep", "2.0", "--count-down", "0.5")
    wait_for(lambda: Runs(c.log).starts.get("victim-0"), 10, what="the task to start")
    if Runs(c.log).starts["victim-0"] != [str(a.pid)]:
        a, b = b, a                              # b took it: kill b, a recovers it
    killed_at = time.time()
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    wait_for(lambda: len(Runs(c.log).starts.get("victim-0", [])) == 2, 10, what="the re-run")
    took = Runs(c.log).start_times["victim-0"][1] - killed_at
    print(f"\nrecovery of a SIGKILLed worker's task: {took:.2f}s (lease 1 s, tick {TICK}s)")
    record_property("recovery_s", round(took, 3))
    assert took < 1.0 + TICK + 0.75
    mp_worker.stop_all([b], c.stop_file)


def test_limits_that_hold_nothing_are_forgotten_by_the_purge(open_pg, pg_db) -> None:
    """As on the file and Redis stores: once a per-key limit holds no slot, no parked task, no
    start in its window and no window to reopen, the purge drops its spec and its starts; a
    held one stays, a key that comes back is limited as before, and what a process long gone
    said it serves goes too."""
    from timewheel.records import Outcome, end_run
    s = open_pg()
    now = s.now()
    s.add([make_record("busy", now - 2, limits=(("k:busy", 1, 0, 0.0),))] +
          [make_record(f"c{i}", now - 1, limits=((f"k:{i}", 1, 5, 0.2),)) for i in range(300)])
    _ready_all(s)
    got = {r.id: r for r in s.claim("me", s.now(), 400).records}
    assert len(got) == 301
    s.swap([(got[f"c{i}"], end_run(got[f"c{i}"], Outcome(True, now, now))) for i in range(300)])
    s.serve("gone-long-ago", None)
    s.serve("starting", None)                        # no heartbeat written yet: kept
    with psycopg.connect(pg_db, autocommit=True) as c:
        def rows(sql: str) -> list:
            return [r[0] for r in c.execute(sql.replace("@s", s.s)).fetchall()]
        rows("INSERT INTO @s.alive (token, expires) VALUES ('gone-long-ago', "
             "extract(epoch FROM now()) - 3700) RETURNING token")
        assert len(rows("SELECT lim FROM @s.limits")) == 301 and len(rows("SELECT lim FROM @s.starts")) == 300
        time.sleep(1.3)                   # the 0.2 s windows pass (starts are kept a second more)
        s.purge(now - 3600)
        assert rows("SELECT lim FROM @s.limits") == ["k:busy"] and rows("SELECT lim FROM @s.starts") == []
        assert rows("SELECT token FROM @s.serving") == ["starting"]
        s.add([make_record("again1", s.now() - 1, limits=(("k:7", 1, 5, 0.2),)),
               make_record("again2", s.now() - 1, limits=(("k:7", 1, 5, 0.2),))])
        _ready_all(s)
        assert [x.id for x in s.claim("me", s.now(), 10).records] == ["again1"]   # one per key, still
        assert "k:7" in rows("SELECT lim FROM @s.limits")
