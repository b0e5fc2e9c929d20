"""Shared fixtures.  Tests use real files under pytest's tmp_path.

``store`` runs a test once per backend in :data:`BACKENDS`; ``store_factory`` gives more
instances on the same store (other "processes"), and ``dead_owner`` an owner token that the
backend considers gone.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable, Iterator, Optional

import pytest

from timewheel.records import TaskRecord
from timewheel.store import MemoryStore, SqliteDictStore, WheelStore
from timewheel.wheel import Wheel

from . import hard_timeout
from .mp_worker import wait_for as _poll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["memory", "sqlite", "redis", "postgres"]
#: the backends whose claim enforces queues, priorities and limits (issue 21; a store says
#: so by ``flow_control``): flow control's conformance tests run on these
FLOW_BACKENDS = ["memory", "sqlite", "redis", "postgres"]
#: ``@flow_backends`` on a conformance test: run it once per backend of FLOW_BACKENDS
flow_backends = pytest.mark.parametrize("backend", FLOW_BACKENDS, indirect=True)


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "tasks.db")


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             what: str = "") -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    return _poll(cond, timeout, interval, what or str(cond))


@pytest.fixture
def python() -> str:
    return sys.executable


#: the serializers of the tasks' arguments and results (timewheel/serialize.py): the store
#: conformance suite runs with each (``pytestmark`` parametrises the ``serializer`` fixture)
SERIALIZERS = ["pickle", "json"]
_SERIALIZING = ["pickle"]      # the serializer fixture's: what payload_of and make_record write


@pytest.fixture
def serializer(request) -> Iterator[str]:
    """The serializer of the tasks under test: "pickle", unless the test is parametrised with
    ``pytest.mark.parametrize("serializer", SERIALIZERS, indirect=True)``.  Stores opened by
    ``store_factory`` agree to it, and ``make_record``/``payload_of``/``result_of`` write with it
    while the test runs."""
    name = getattr(request, "param", "pickle")
    _SERIALIZING[0] = name
    yield name
    _SERIALIZING[0] = "pickle"


def payload_of(args: tuple, kwargs: "dict | None" = None, serializer: "str | None" = None) -> bytes:
    """The payload of a call ``(*args, **kwargs)`` in ``serializer`` (default: the one under test)."""
    if (serializer or _SERIALIZING[0]) == "json":
        from timewheel.serialize import dumps_call
        return dumps_call(args, kwargs or {})
    return pickle.dumps((args, kwargs or {}))


def result_of(value: Any, serializer: "str | None" = None) -> bytes:
    """A stored return value in ``serializer`` (default: the one under test)."""
    if (serializer or _SERIALIZING[0]) == "json":
        from timewheel.serialize import dumps_result
        return dumps_result(value)
    return pickle.dumps(value)


def make_record(task_id: str, eta: float, **fields: Any) -> TaskRecord:
    """A pending record of task ``t`` (the one builder every test uses), its payload in the
    serializer under test."""
    fields.setdefault("name", "t")
    fields.setdefault("payload", payload_of((task_id,)))
    fields.setdefault("created", eta)
    return TaskRecord(id=task_id, eta=eta, **fields)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(params=BACKENDS)
def location(request, db_path) -> Optional[str]:
    """Where a test's TimeWheel keeps its tasks, on each backend: None (memory), a file, the
    test's Redis database or PostgreSQL URL (a module may narrow it with its own)."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db")


@pytest.fixture
def store_factory(backend, serializer, tmp_path, request):
    """Open another instance of this test's store (for memory: the same one), agreeing to the
    serializer under test as a wheel's store does (``open_store(serializer=)``)."""
    opened: list[WheelStore] = []
    memory: list[MemoryStore] = []
    redis_url = request.getfixturevalue("redis_db") if backend == "redis" else None
    pg_url = request.getfixturevalue("pg_db") if backend == "postgres" else None

    def open_store() -> WheelStore:
        if backend == "memory":
            if not memory:
                memory.append(MemoryStore(Wheel()))
            return memory[0]
        if redis_url is not None:
            from timewheel.store.redis import RedisStore
            s: WheelStore = RedisStore(redis_url, Wheel(), namespace="conformance")
        elif pg_url is not None:
            from timewheel.store.postgres import PostgresStore
            s = PostgresStore(pg_url, Wheel(), namespace="conformance")
        else:
            s = SqliteDictStore(str(tmp_path / "store.db"), Wheel())
        opened.append(s)
        s.agree_serializer(serializer)
        return s

    yield open_store
    for s in opened:
        s.close()
    if backend == "sqlite" and opened:
        check_file_store(str(tmp_path / "store.db"))     # after every conformance test
    if redis_url is not None and opened:
        from .redis_check import check_redis_store
        check_redis_store(redis_url, "conformance")
    if pg_url is not None and opened:
        from .pg_check import check_pg_store
        check_pg_store(pg_url, "conformance")


# -- Redis: one real server per test session, an empty database per test ---------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of our own (free port, temp dir, AOF fsynced at every write)."""
    from timewheel.testing import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_db(redis_server) -> str:
    """The URL of the session's server, its database emptied for this test."""
    import redis
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


# -- PostgreSQL: one real server per test session, an empty schema per test ----------------------

@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of our own (free port, its own data directory, fsync on)."""
    from timewheel.testing import PostgresServer
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg_server) -> str:
    """The URL of the session's server, with the schemas the tests use dropped."""
    pg_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                  "AND datname = 'postgres' AND backend_type = 'client backend'")
    schemas = [r[0] for r in pg_server.sql(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN "
        "('public', 'information_schema')")]
    if schemas:
        pg_server.sql("DROP SCHEMA " + ", ".join(f'"{n}"' for n in schemas) + " CASCADE")
    return pg_server.url


@pytest.fixture
def store(store_factory) -> WheelStore:
    return store_factory()


@pytest.fixture
def corrupt(backend, request) -> Callable[[WheelStore, str], None]:
    """``corrupt(store, task_id)`` makes a stored record undecodable the way damage would on
    that backend, under the store's interface: the file's record blob, the Redis hash's record
    field, a PostgreSQL row's version column, the memory store's object (there: the
    placeholder that stands for one).  What the backend keeps beside the record (its rev: the
    file's rev column, the hash's fields, the row's rev column) stays."""
    def damage(store: Any, task_id: str) -> None:
        if backend == "memory":
            from timewheel.store.base import broken_record
            with store._lock:
                rec = store._records[task_id]
                store._records[task_id] = broken_record(task_id, b"garbage", rec.name)._replace(rev=rec.rev)
        elif backend == "sqlite":
            import sqlite3
            con = sqlite3.connect(store.path)
            assert con.execute("UPDATE timewheel SET value = ? WHERE key = ?",
                               (b"garbage", "t:" + task_id)).rowcount == 1
            con.commit()
            con.close()
        elif backend == "postgres":
            import psycopg
            # a column out of what a record can hold: as written by a newer timewheel
            with psycopg.connect(request.getfixturevalue("pg_db"), autocommit=True) as c:
                assert c.execute(f"UPDATE {store.s}.tasks SET version = 99 WHERE id = %s",
                                 (task_id,)).rowcount == 1
        else:
            import redis
            r = redis.Redis.from_url(request.getfixturevalue("redis_db"))
            assert r.exists(store.keys.task(task_id))
            r.hset(store.keys.task(task_id), "r", b"garbage")
            r.close()
    return damage


@pytest.fixture
def dead_owner(backend) -> str:
    """An owner token whose process is gone, for the backend under test (for Redis: one with
    no heartbeat, whose claims get a lease that has already run out)."""
    return "memory:1:gone" if backend == "memory" else "999999:deadbeef:999999"


def records_of(store: WheelStore, status: "str | None" = None, name: "str | None" = None) -> list[TaskRecord]:
    """Every record of ``status`` (default: every status) and ``name``, in scan order."""
    from timewheel.records import STATUSES
    return [r for s in ([status] if status else STATUSES) for r in store.scan(s, name=name)]


def count_of(store: WheelStore, status: str) -> int:
    return sum(n for (s, _), n in store.counts().items() if s == status)


def check_file_store(db: str) -> None:
    """The file store's invariants, read with plain sqlite3: the file is sound, every record
    sits where its status says, and the counter tables equal a recount of the rows."""
    import sqlite3
    from collections import Counter

    from timewheel.records import decode_record
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        meta = read_meta(con)
        wheel = Wheel(slots=meta["slots"], tick=meta["tick"])
        slots = wheel.slots
        assert meta["format"] == "timewheel/5" and isinstance(meta["horizon"], int), meta
        states: Counter = Counter()
        ticks: Counter = Counter()
        codes = {"s": "succeeded", "f": "failed", "c": "cancelled", "m": "misfired", "a": "aborted"}
        held = set(con.execute("SELECT lim, key FROM timewheel_held"))
        holders: dict = {}
        for key, value, pos, name, rev in con.execute(
                "SELECT key, value, pos, name, rev FROM timewheel WHERE key >= 't:' AND key < 't;'"):
            if pos == "b:":
                states[("broken", name or "")] += 1
                continue
            rec = decode_record(value)
            assert rec.name == name, key
            assert rev is None or rev == rec.rev, (key, rev, rec.rev)     # the rev column
            kind = pos[0]
            expected = {"n": "pending", "p": "pending", "q": "pending", "l": "pending",
                        "r": "running"}.get(kind, codes.get(pos[2:3]))
            assert rec.status == expected, (key, pos, rec.status)
            if kind == "r":
                assert pos == "r:" + rec.owner, key
            if kind == "r":
                for lim in rec.limits:          # a running task holds a slot of each limit
                    held.discard((lim[0], key))
                    holders[lim[0]] = holders.get(lim[0], 0) + 1
            if kind in "pql":
                t = wheel.due_tick(rec.eta)
                ticks[t] += 1
                if kind == "p":
                    assert pos.startswith(f"p:{t % slots:06d}:{t // slots:015d}:"), (key, pos)
                if kind in "pq":               # its band: queue and priority, as its record says
                    from timewheel.store import positions
                    at = positions.parse(pos)
                    assert (at.queue or "default", at.priority or 0) == (rec.queue, rec.priority), (key, pos)
            if kind != "n":
                states[(rec.status, rec.name)] += 1
        stored = Counter({(s, n): c for s, n, c in con.execute(
            "SELECT state, name, n FROM timewheel_counts") if c})
        assert stored == +states, "timewheel_counts does not match the rows"
        stored_ticks = Counter({t: c for t, c in con.execute("SELECT tick, n FROM timewheel_ticks") if c})
        assert stored_ticks == +ticks, "timewheel_ticks does not match the pending rows"
        assert held == set(), f"slots held by tasks that do not run: {sorted(held)[:5]}"
        for lim, n in holders.items():       # no limit holds more slots than it allows
            row = con.execute("SELECT concurrency FROM timewheel_limits WHERE lim = ?", (lim,)).fetchone()
            assert row is not None and (not row[0] or n <= row[0]), (lim, n, row)
        _check_file_batches(con)
        _check_file_deps(con)
    finally:
        con.close()


def _check_file_deps(con) -> None:
    """A task waits for its dependencies (issue 23) exactly when it is parked at the waiting
    position, and then on as many open index rows as its record counts."""
    from timewheel.records import decode_record
    from timewheel.store.positions import WAITING
    for key, value, pos in con.execute("SELECT key, value, pos FROM timewheel "
                                       "WHERE key >= 't:' AND key < 't;' AND pos != 'b:'"):
        rec = decode_record(value)
        parked = pos.startswith(f"l:{WAITING}:")
        assert parked == (rec.status == "pending" and rec.waiting > 0), (key, pos, rec.waiting)
        if parked:
            (open_rows,) = con.execute("SELECT count(*) FROM timewheel_deps WHERE task = ? AND open = 1",
                                       (key[2:],)).fetchone()
            assert open_rows == rec.waiting, (key, open_rows, rec.waiting)


def _check_file_batches(con) -> None:
    """Each batch's counts (kept by the writes) equal a recount of its members' records, and
    no member of a batch that is not done is gone."""
    from timewheel import batches as br
    from timewheel.records import decode_record
    for batch_id, done, *counts in con.execute(
            f"SELECT id, done, {', '.join(br.CLASSES)} FROM timewheel_batches"):
        stored = {c: n for c, n in zip(br.CLASSES, counts) if n}
        recount: dict = {}
        missing = 0
        for (value,) in con.execute("SELECT t.value FROM timewheel_members m LEFT JOIN timewheel t "
                                      "ON t.key = m.key WHERE m.batch = ?", (batch_id,)):
            if value is None:
                missing += 1
                continue
            rec = decode_record(value)
            if rec.batch == batch_id:
                recount[br.class_of(rec.status)] = recount.get(br.class_of(rec.status), 0) + 1
        assert done is not None or not missing, f"batch {batch_id}: {missing} member(s) gone too early"
        if not missing:
            assert stored == recount, f"batch {batch_id}: counts {stored} != recount {recount}"
        assert done is not None or not br.finished(stored), f"batch {batch_id} finished but not done"


def read_meta(con) -> dict:
    """The metadata map of a file store, read over a plain sqlite3 connection ``con`` as the
    store reads it (values pickled by sqlitedict, unpickled without globals)."""
    from timewheel.store.connection import decode_meta
    return {k: decode_meta(v) for k, v in con.execute("SELECT key, value FROM timewheel_meta")}


# -- a real browser: Debian's Chromium, driven by Playwright (tests of the web view) -------------

CHROMIUM = os.environ.get("TIMEWHEEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("TIMEWHEEL_ARTIFACTS") or os.path.join(ROOT, "tests", "artifacts")
# Debian's Chromium as root in a container, with no network: no sandbox, no background calls.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
WAIT = 10_000     # ms: generous; the pages answer in milliseconds


def expect(locator):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(locator)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    page = getattr(item, "funcargs", {}).get("page")
    if page is not None:
        page.test_running = False


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright  # part of the test extra

    assert os.path.exists(CHROMIUM), f"no browser at {CHROMIUM}: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh page; fails the test if the page logged an error or threw."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    # Only what the page logs while the test runs counts: a server fixture set up after this
    # one stops first, and the page's next live refresh then fails to connect.
    pg.test_running = True
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}") if pg.test_running else None)
    pg.on("console", lambda m: problems.append(f"console: {m.text}")
          if m.type == "error" and pg.test_running else None)
    pg.problems = problems
    yield pg
    context.close()
    assert not [p for p in problems if "403" not in p], problems   # refused actions log a 403


# ---- Hypothesis settings of the property, model and fault suites (hostile-input helper) ----
# Two profiles: "timewheel-ci" (the default) and "timewheel-slow", 10x as many examples.  The
# slow one is chosen by `pytest -m slow` or by TIMEWHEEL_HYPOTHESIS=slow in the environment.
# Suites mark their tests `properties` and size them with `examples(n)`: n cases in CI mode,
# 10n in slow mode; under `-m slow` those tests are selected along with the soak tests.
#
# The default run is reproducible (issue 19 item 4): every clone, every day, draws the same
# cases (derandomize: seeded from each test's source) and reads no example database, so a
# case one checkout once failed on is not replayed there alone -- a new user's clone failed
# three runs in a row on a draw another clone never made.  A committed database would also
# do, but as binary churn in every commit that touches a suite.  A bug found is kept as an
# explicit @example(...) on its test.  The slow profile explores: random draws, and failures
# replayed from the local database (.hypothesis/, git-ignored).  `--hypothesis-seed=N` makes
# a default run draw from seed N instead (to look for new failures at CI size).
from _pytest.mark.expression import Expression as _MarkExpression  # noqa: E402
from hypothesis import HealthCheck as _HealthCheck  # noqa: E402
from hypothesis import settings as _hsettings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase as _ExampleDatabase  # noqa: E402

_HYPOTHESIS = {"scale": 10 if os.environ.get("TIMEWHEEL_HYPOTHESIS") == "slow" else 1, "marked": False}
_hsettings.register_profile(
    "timewheel-ci", deadline=None, print_blob=True, derandomize=True, database=None,
    # the suites call real stores (files, servers): an example may take milliseconds
    suppress_health_check=[_HealthCheck.too_slow, _HealthCheck.function_scoped_fixture])
_hsettings.register_profile("timewheel-seeded", parent=_hsettings.get_profile("timewheel-ci"),
                            derandomize=False)
_hsettings.register_profile("timewheel-slow", parent=_hsettings.get_profile("timewheel-ci"),
                            max_examples=1000, derandomize=False,
                            database=_ExampleDatabase(os.path.join(ROOT, ".hypothesis", "examples")))


def examples(n: int) -> int:
    """How many cases a suite of ``n`` cases in CI mode tries in the current mode."""
    return n * _HYPOTHESIS["scale"]


_TALLY: dict[str, int] = {}


def tally(what: str, n: int = 1) -> None:
    """Count a case a suite tried; the counts are printed at the end of the run."""
    _TALLY[what] = _TALLY.get(what, 0) + n


def pytest_terminal_summary(terminalreporter) -> None:
    if _TALLY:
        terminalreporter.write_sep("-", f"cases tried (hypothesis x{_HYPOTHESIS['scale']})")
        for what, n in sorted(_TALLY.items()):
            terminalreporter.write_line(f"{n:8d}  {what}")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "properties: property/model/fault suite sized by "
                            "conftest.examples() (10x under -m slow or TIMEWHEEL_HYPOTHESIS=slow)")
    expr = config.option.markexpr
    if expr and _MarkExpression.compile(expr).evaluate(lambda name, **kw: name == "slow"):
        _HYPOTHESIS.update(scale=10, marked=True)
    seeded = config.getoption("hypothesis_seed", None) is not None
    _hsettings.load_profile("timewheel-slow" if _HYPOTHESIS["scale"] > 1
                            else "timewheel-seeded" if seeded else "timewheel-ci")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    # Before -m deselects anything: under `-m slow` the suites run too, in their long mode.
    if _HYPOTHESIS["marked"]:
        for item in items:
            if item.get_closest_marker("properties") is not None:
                item.add_marker(pytest.mark.slow)
# ---- end of the hypothesis settings ----


# ---- the time limit of every test (pyproject's timeout), made to hold: see hard_timeout.py ----
@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    return hard_timeout.arm(item, settings)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item):
    return hard_timeout.disarm(item)
