"""Shared fixtures.  Tests use real files under pytest's tmp_path.

``store`` runs a test once per backend in :data:`BACKENDS`; ``store_factory`` gives more
instances on the same store (other "processes"), and ``dead_owner`` an owner token that the
backend considers gone.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable

import pytest

from timewheel.records import TaskRecord
from timewheel.store import MemoryStore, SqliteDictStore, WheelStore
from timewheel.wheel import Wheel

from .mp_worker import wait_for as _poll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["memory", "sqlite", "redis"]


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


def make_record(task_id: str, eta: float, **fields: Any) -> TaskRecord:
    """A pending record of task ``t`` (the one builder every test uses)."""
    fields.setdefault("name", "t")
    fields.setdefault("payload", pickle.dumps(((task_id,), {})))
    fields.setdefault("created", eta)
    return TaskRecord(id=task_id, eta=eta, **fields)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_factory(backend, tmp_path, request):
    """Open another instance of this test's store (for memory: the same one)."""
    opened: list[WheelStore] = []
    memory: list[MemoryStore] = []
    redis_url = request.getfixturevalue("redis_db") if backend == "redis" else None

    def open_store() -> WheelStore:
        if backend == "memory":
            if not memory:
                memory.append(MemoryStore(Wheel()))
            return memory[0]
        if redis_url is not None:
            from timewheel.store.redis import RedisStore
            s: WheelStore = RedisStore(redis_url, Wheel(), namespace="conformance")
        else:
            s = SqliteDictStore(str(tmp_path / "store.db"), Wheel())
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()
    if backend == "sqlite" and opened:
        check_file_store(str(tmp_path / "store.db"))     # after every conformance test
    if redis_url is not None and opened:
        from .redis_check import check_redis_store
        check_redis_store(redis_url, "conformance")


# -- Redis: one real server per test session, an empty database per test ---------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of our own (free port, temp dir, AOF fsynced at every write)."""
    from .redis_server import RedisServer
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


@pytest.fixture
def store(store_factory) -> WheelStore:
    return store_factory()


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
        slots = int(con.execute("SELECT value FROM timewheel WHERE key = 'm:slots'").fetchone()[0])
        tick = float(con.execute("SELECT value FROM timewheel WHERE key = 'm:tick'").fetchone()[0])
        wheel = Wheel(slots=slots, tick=tick)
        states: Counter = Counter()
        ticks: Counter = Counter()
        codes = {"s": "succeeded", "f": "failed", "c": "cancelled", "m": "misfired"}
        for key, value, pos, name in con.execute(
                "SELECT key, value, pos, name FROM timewheel WHERE key >= 't:' AND key < 't;'"):
            if pos == "b:":
                states[("broken", name or "")] += 1
                continue
            rec = decode_record(value)
            assert rec.name == name, key
            kind = pos[0]
            expected = {"n": "pending", "p": "pending", "q": "pending", "r": "running"}.get(
                kind, codes.get(pos[2:3]))
            assert rec.status == expected, (key, pos, rec.status)
            if kind == "r":
                assert pos == "r:" + rec.owner, key
            if kind in "pq":
                t = wheel.due_tick(rec.eta)
                ticks[t] += 1
                if kind == "p":
                    assert pos.startswith(f"p:{t % slots:06d}:{t // slots:015d}:"), (key, pos)
            if kind != "n":
                states[(rec.status, rec.name)] += 1
        stored = Counter({(s, n): c for s, n, c in con.execute(
            "SELECT state, name, n FROM timewheel_counts") if c})
        assert stored == +states, "timewheel_counts does not match the rows"
        stored_ticks = Counter({t: c for t, c in con.execute("SELECT tick, n FROM timewheel_ticks") if c})
        assert stored_ticks == +ticks, "timewheel_ticks does not match the pending rows"
    finally:
        con.close()
