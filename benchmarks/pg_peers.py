"""timewheel's PostgreSQL store beside Procrastinate, pgqueuer and Huey's SqlHuey, all on one
PostgreSQL server.

``python -m benchmarks --only postgres`` (``--quick`` for small sizes).  The parent starts ONE
server for the workload (:class:`timewheel.testing.PostgresServer`: its own data directory on
the disk the other stores use, ``fsync`` and ``synchronous_commit`` on, the defaults else), every
system uses it, and the database ``bench`` is dropped and created again before each
measurement (each system's schema installed then, by the parent).  Every measurement runs in
fresh processes, as a deployment does: *worker* processes run tasks, a *client* process
enqueues them; runs are counted outside any store, in the ``O_APPEND`` log of
:mod:`benchmarks.tasks`.  The measurements are those of the Redis workload
(:class:`benchmarks.peers.ServerBench`): ``enqueue`` (one call per task, durable: one commit
each), ``batch`` (the bulk API, one transaction), ``lateness``, ``burst``, ``kill``, ``recovery``.

Systems (defaults except where noted; :data:`SETTINGS` says the same for the report):

* ``timewheel``: ``TimeWheel(url, workers=4)``, default lease (10 s) and tick (1 s), LISTEN on.
* ``procrastinate``: ``App(PsycopgConnector)``, ``task.configure(schedule_at=...).defer()``,
  ``app.run_worker(concurrency=4)`` (its default polling interval: 5 s).
* ``pgqueuer``: ``SyncQueries(SyncPsycopgDriver).enqueue(..., execute_after=...)``; ``PgQueuer``
  with an async psycopg connection, one entrypoint with ``concurrency_limit=4``.
* ``huey``: ``SqlHuey`` (peewee on the same server) + ``create_consumer(workers=4,
  worker_type="thread")`` (scheduler interval 1 s).
* ``psycopg`` (enqueue only, the ceiling): one ``INSERT`` of the pickled call into a table
  with a primary key and an index on the eta, in autocommit (one commit per task); its bulk
  form is ``executemany`` in one transaction, ``psycopg-copy`` is ``COPY``.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import itertools
import logging
import os
import pickle
import time
from typing import Any, Callable, Iterable, Optional

from . import tasks
from .harness import Case, Runner
from .machine import package_version, tree_cpu_s
from .peers import ServerBench, child_workloads, forever, slow
from .systems import WORKERS, Unsupported, utc

SYSTEMS = ("timewheel", "procrastinate", "pgqueuer", "huey")
PEERS = SYSTEMS[1:]
CEILINGS = ("psycopg", "psycopg-copy")
DATABASE = "bench"

SETTINGS = {
    "timewheel": "`TimeWheel(url, workers=4)`: default lease (10 s), tick (1 s), schema, LISTEN on; one "
                 "worker process (`hu.start()`), a separate client process (no `start()`)",
    "procrastinate": "`App(connector=PsycopgConnector(conninfo=url))`, "
                     "`task.configure(schedule_at=...).defer(...)`; worker: `app.run_worker(concurrency=4)` "
                     "(LISTEN/NOTIFY for new jobs, scheduled jobs found by its poll, every 5 s by default)",
    "pgqueuer": "`SyncQueries(SyncPsycopgDriver(conn)).enqueue(..., execute_after=timedelta)`; worker: "
                "`PgQueuer(PsycopgDriver(async conn))`, one entrypoint, `concurrency_limit=4`, `run()` "
                "with its defaults",
    "huey": "`SqlHuey('benchmarks', database=url)` (peewee, psycopg 3), `task.schedule(eta=...)`; consumer: "
            "`create_consumer(workers=4, worker_type='thread')` (scheduler_interval 1 s, polling)",
}

BULK = {
    "timewheel": "`with hu.batch():` around the `delay()` calls (one statement)",
    "procrastinate": None,          # batch_defer takes no schedule_at per job: not a delayed bulk API
    "pgqueuer": "`SyncQueries.enqueue([...], [...], execute_after=[...])` (lists: one statement)",
    "huey": None,                   # no bulk enqueue API
    "psycopg": "`executemany` of the `INSERT`, one transaction",
    "psycopg-copy": "`COPY ... FROM STDIN`, one transaction",
}


def _quiet() -> None:
    for name in ("timewheel", "procrastinate", "pgqueuer", "huey", "huey.consumer", "peewee"):
        logging.getLogger(name).setLevel(logging.WARNING)


# -- adapters -------------------------------------------------------------------------------------
class TimewheelPg:
    def __init__(self, url: str) -> None:
        from timewheel import TimeWheel  # on open: a measurement process loads only its system
        self.hu = TimeWheel(url, workers=WORKERS)
        self.run = self.hu.task(name="benchmarks.run")(tasks.run)
        self.slow = self.hu.task(name="benchmarks.slow")(slow)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        delay = self.run.delay
        for i, due in items:
            delay(i, due, eta=due)

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        delay = self.run.delay
        with self.hu.batch():
            for i, due in items:
                delay(i, due, eta=due)

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        self.slow.delay(i, due, seconds, eta=due)

    def serve(self, ready: Callable[[], None]) -> None:
        self.hu.start()
        ready()
        forever()

    def left(self) -> dict:
        by: dict[str, int] = {}
        for (status, _name), n in self.hu.store.counts().items():
            by[status] = by.get(status, 0) + int(n)
        return {"will_run": by.get("pending", 0) + by.get("running", 0), "stranded": 0, "by_status": by}

    @staticmethod
    def install(url: str) -> None:
        from timewheel.store import open_store
        open_store(url).close()


class ProcrastinatePg:
    def __init__(self, url: str) -> None:
        from procrastinate import App, PsycopgConnector  # on open
        self.url = url
        self.app = App(connector=PsycopgConnector(conninfo=url))
        self.app.open()
        self.run = self.app.task(name="benchmarks.run")(_kw(tasks.run))
        self.slow = self.app.task(name="benchmarks.slow")(_kw(slow))

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        configure = self.run.configure
        for i, due in items:
            configure(schedule_at=utc(due)).defer(i=i, due=due)

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        raise Unsupported("Procrastinate's batch_defer takes one schedule for every job")

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        self.slow.configure(schedule_at=utc(due)).defer(i=i, due=due, seconds=seconds)

    def serve(self, ready: Callable[[], None]) -> None:
        import threading
        threading.Timer(1.0, ready).start()       # run_worker blocks; it listens within a second
        self.app.run_worker(concurrency=WORKERS, wait=True, install_signal_handlers=False)

    def left(self) -> dict:
        with _psycopg(self.url) as conn:
            rows = conn.execute("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status").fetchall()
        by = {str(s): int(n) for s, n in rows}
        return {"will_run": by.get("todo", 0), "stranded": by.get("doing", 0), "by_status": by}

    @staticmethod
    def install(url: str) -> None:
        from procrastinate import App, PsycopgConnector
        app = App(connector=PsycopgConnector(conninfo=url))
        with app.open():
            app.schema_manager.apply_schema()


class PgqueuerPg:
    def __init__(self, url: str) -> None:
        import psycopg  # on open
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.q = SyncQueries(SyncPsycopgDriver(self.conn))

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        enqueue, td = self.q.enqueue, _dt.timedelta
        for i, due in items:
            enqueue("run", pickle.dumps((i, due)), execute_after=td(seconds=max(0.0, due - time.time())))

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        items = list(items)
        now = time.time()
        self.q.enqueue(["run"] * len(items), [pickle.dumps((i, due)) for i, due in items], [0] * len(items),
                       [_dt.timedelta(seconds=max(0.0, due - now)) for _, due in items])

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        self.q.enqueue("slow", pickle.dumps((i, due, seconds)),
                       execute_after=_dt.timedelta(seconds=max(0.0, due - time.time())))

    def serve(self, ready: Callable[[], None]) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: Callable[[], None]) -> None:
        import psycopg
        from pgqueuer import PgQueuer
        from pgqueuer.db import PsycopgDriver
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        pgq = PgQueuer(PsycopgDriver(conn))

        @pgq.entrypoint("run", concurrency_limit=WORKERS)
        async def run(job: Any) -> None:
            tasks.run(*pickle.loads(job.payload))

        @pgq.entrypoint("slow", concurrency_limit=WORKERS)
        async def run_slow(job: Any) -> None:
            i, due, seconds = pickle.loads(job.payload)
            tasks.run(i, due)
            await asyncio.sleep(seconds)
            tasks.note_end(i)

        asyncio.get_running_loop().call_later(1.0, ready)
        await pgq.run()

    def left(self) -> dict:
        rows = self.conn.execute("SELECT status::text, count(*) FROM pgqueuer GROUP BY status").fetchall()
        by = {s: int(n) for s, n in rows}
        return {"will_run": by.get("queued", 0), "stranded": by.get("picked", 0), "by_status": by}

    @staticmethod
    def install(url: str) -> None:
        asyncio.run(PgqueuerPg._install(url))

    @staticmethod
    async def _install(url: str) -> None:
        import psycopg
        from pgqueuer.db import PsycopgDriver
        from pgqueuer.queries import Queries
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            await Queries(PsycopgDriver(conn)).install()
        finally:
            await conn.close()


class HueyPg:
    def __init__(self, url: str) -> None:
        from huey.contrib.sql_huey import SqlHuey  # on open
        self.huey = SqlHuey("benchmarks", database=url)
        self.run = self.huey.task(name="benchmarks.run")(tasks.run)
        self.slow = self.huey.task(name="benchmarks.slow")(slow)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        schedule = self.run.schedule
        for i, due in items:
            schedule(args=(i, due), eta=utc(due))

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        raise Unsupported("Huey has no bulk enqueue API")

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        self.slow.schedule(args=(i, due, seconds), eta=utc(due))

    def serve(self, ready: Callable[[], None]) -> None:
        consumer = self.huey.create_consumer(workers=WORKERS, worker_type="thread")
        consumer.start()
        ready()
        forever()

    def left(self) -> dict:
        queued, scheduled = self.huey.pending_count(), self.huey.scheduled_count()
        return {"will_run": queued + scheduled, "stranded": 0,
                "by_status": {"queued": queued, "scheduled": scheduled}}

    @staticmethod
    def install(url: str) -> None:
        from huey.contrib.sql_huey import SqlHuey
        SqlHuey("benchmarks", database=url).storage.database.close()


class RawPg:
    """The storage ceiling (enqueue only): psycopg, one ``INSERT`` of the pickled call into an
    indexed table per task in autocommit; the bulk forms are ``executemany`` or ``COPY`` in one
    transaction."""

    TABLE = ("CREATE TABLE IF NOT EXISTS raw_q (id text PRIMARY KEY, name text NOT NULL, "
             "eta float8 NOT NULL, payload bytea NOT NULL)")

    def __init__(self, url: str, copy: bool = False) -> None:
        import psycopg  # on open
        self.conn = psycopg.connect(url, autocommit=True)
        self.copy = copy
        self._ids = itertools.count()
        self._prefix = os.urandom(8).hex()

    def _row(self, i: int, due: float) -> tuple:
        return (f"{self._prefix}{next(self._ids):08x}", "benchmarks.run", due,
                pickle.dumps(((i, due), {}), protocol=5))

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        execute = self.conn.execute
        for i, due in items:
            execute("INSERT INTO raw_q (id, name, eta, payload) VALUES (%s, %s, %s, %s)", self._row(i, due))

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        rows = [self._row(i, due) for i, due in items]
        with self.conn.transaction():
            if self.copy:
                with self.conn.cursor().copy("COPY raw_q (id, name, eta, payload) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
            else:
                self.conn.cursor().executemany(
                    "INSERT INTO raw_q (id, name, eta, payload) VALUES (%s, %s, %s, %s)", rows)

    @staticmethod
    def install(url: str) -> None:
        import psycopg
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RawPg.TABLE)
            conn.execute("CREATE INDEX IF NOT EXISTS raw_q_eta ON raw_q (eta)")


def _kw(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` called with keyword arguments only (Procrastinate defers keyword arguments)."""
    def call(**kwargs: Any) -> Any:
        return fn(**kwargs)
    call.__name__ = call.__qualname__ = fn.__name__
    call.__module__ = __name__
    return call


def _psycopg(url: str) -> Any:
    import psycopg
    return psycopg.connect(url, autocommit=True)


_ADAPTERS: dict[str, Any] = {"timewheel": TimewheelPg, "procrastinate": ProcrastinatePg,
                             "pgqueuer": PgqueuerPg, "huey": HueyPg, "psycopg": RawPg,
                             "psycopg-copy": RawPg}


def open_system(name: str, url: str) -> Any:
    _quiet()
    if name == "psycopg-copy":
        return RawPg(url, copy=True)
    cls = _ADAPTERS.get(name)
    if cls is None:
        raise ValueError(f"unknown system {name!r}; one of {', '.join(_ADAPTERS)}")
    return cls(url)


# -- what the child processes do (registered in benchmarks.child.WORKLOADS) --------------------
CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = child_workloads("pg", open_system)


# -- plan -------------------------------------------------------------------------------------------
SIZES = {
    "quick": {
        "reps": 1, "peer_reps": 1, "enqueue_n": 1000, "batch_n": 2000,
        "lateness": {"n": 300, "lead": 1.0, "spread": 3.0, "grace": 6.0},
        "burst": {"n": 1000, "max_wait": 15.0, "quiet": 6.0, "start_allowance": 2.5},
        "kill": {"n": 200, "task_s": 0.01, "due_lo": 1.0, "due_hi": 3.0, "kill_at": 2.0,
                 "restart_after": 1.0, "max_wait": 15.0, "linger": 1.0},
        "recovery": {"sleep": 4.0, "cap": 20.0},
    },
    "full": {
        "reps": 3, "peer_reps": 2, "enqueue_n": 5000, "batch_n": 10_000,
        "lateness": {"n": 2000, "lead": 2.0, "spread": 10.0, "grace": 10.0},
        "burst": {"n": 20_000, "max_wait": 60.0, "quiet": 10.0, "start_allowance": 3.0},
        "kill": {"n": 1000, "task_s": 0.01, "due_lo": 2.0, "due_hi": 6.0, "kill_at": 4.0,
                 "restart_after": 2.0, "max_wait": 30.0, "linger": 2.0},
        "recovery": {"sleep": 6.0, "cap": 60.0},
    },
}


def plan(mode: str) -> list[Case]:
    """The cases of the ``postgres`` workload, kind by kind (the harness interleaves repetitions)."""
    s = SIZES[mode]

    def reps(system: str) -> int:
        return s["reps"] if system in ("timewheel", "psycopg", "psycopg-copy") else s["peer_reps"]

    cases = [Case("postgres", sy, {"kind": "enqueue", "n": s["enqueue_n"]}, reps(sy), f"enqueue:{sy}")
             for sy in SYSTEMS + ("psycopg",)]
    cases += [Case("postgres", sy, {"kind": "batch", "n": s["batch_n"]}, reps(sy), f"batch:{sy}")
              for sy in SYSTEMS + CEILINGS if BULK[sy]]
    for kind in ("lateness", "burst", "kill", "recovery"):
        cases += [Case("postgres", sy, dict(s[kind], kind=kind), reps(sy), f"{kind}:{sy}") for sy in SYSTEMS]
    return cases


# -- the parent side ----------------------------------------------------------------------------------
class PgBench(ServerBench):
    """One PostgreSQL server for the workload; database ``bench`` made anew per measurement."""

    PREFIX = "pg"
    BULK = BULK

    def __init__(self, runner: Runner) -> None:
        from timewheel.testing import PostgresServer  # in the parent only
        super().__init__(runner)
        self.server: Optional[Any] = PostgresServer().start()
        self.url = self.server.url_for(DATABASE)
        self.info = self._server_info()
        atexit.register(self.close)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _server_info(self) -> dict:
        assert self.server is not None
        rows = dict(self.server.sql(
            "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync', "
            "'synchronous_commit', 'shared_buffers', 'wal_level', 'max_connections', 'full_page_writes')"))
        return {"postgres": rows, "bind": "127.0.0.1 (TCP, loopback)",
                "packages": {m: package_version(m) for m in
                             ("timewheel", "procrastinate", "pgqueuer", "huey", "peewee", "psycopg")}}

    def measure(self, case: Case) -> dict:
        self._system = case.system
        return super().measure(case)

    def reset(self) -> None:
        assert self.server is not None
        self.server.sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        self.server.sql(f"CREATE DATABASE {DATABASE}")
        _ADAPTERS[self._system].install(self.url)

    def server_cpu_s(self) -> float:
        assert self.server is not None and self.server.proc is not None
        return tree_cpu_s(self.server.proc.pid)

    def enqueue(self, case: Case) -> dict:
        kind, p = case.params["kind"], case.params
        return self.runner.run({"workload": "pg_enqueue", "system": case.system, "url": self.url,
                                "n": p["n"], "batch": kind == "batch"}, case.key().replace(":", "-"))


_BENCHES: dict[int, PgBench] = {}


def measure(runner: Runner, case: Case) -> dict:
    """One measurement of the ``postgres`` workload (the server is started on the first)."""
    bench = _BENCHES.get(id(runner))
    if bench is None:
        bench = _BENCHES[id(runner)] = PgBench(runner)
    return bench.measure(case)
