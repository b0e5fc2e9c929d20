"""One adapter per system under test, all with the same small surface.

``open_system(name, path)`` returns an object with:

* ``enqueue(i, due)``: schedule ``tasks.run(i, due)`` at unix time ``due``; returns the task's id
  once the system says the task is stored (durable per call);
* ``enqueue_batch(items)``: the system's bulk API, or :class:`Unsupported`;
* ``start()``: start running due tasks in this process (4 workers everywhere);
* ``stop()``.

Settings are each system's defaults except where the brief fixes them:

=====================  =========================================================================
``timewheel``          ``TimeWheel(path, workers=4)``
``timewheel-fsync``    the same with ``durability="fsync"`` (``synchronous=FULL``: an fsync per
                       commit, shared by the commits a group commit makes one)
``huey``               ``SqliteHuey(filename=path)`` (WAL, ``synchronous`` left at SQLite's
                       default FULL: an fsync per commit) + ``create_consumer(workers=4,
                       worker_type="thread")`` started in-process
``huey-normal``        the same with ``PRAGMA synchronous=NORMAL`` (timewheel's setting), to
                       separate Huey's code from its fsync in the enqueue numbers
``apscheduler``        ``BackgroundScheduler`` + ``SQLAlchemyJobStore("sqlite:///path")``,
                       ``ThreadPoolExecutor(4)``, default ``misfire_grace_time`` (1 s)
``apscheduler-nograce``  the same with ``misfire_grace_time=None`` (run however late)
``sqlite3``            raw ``sqlite3``: WAL, ``synchronous=NORMAL``, one table
                       ``(id TEXT PRIMARY KEY, eta REAL, payload BLOB)`` + an index on eta; one
                       autocommitted INSERT per task, or ``executemany`` in one transaction
=====================  =========================================================================

APScheduler only writes a job to its job store once the scheduler is started, so its adapter
starts the scheduler *paused* when it opens (jobs are stored, nothing runs) and ``start()``
resumes it.

Each adapter imports its system's library when it is opened, not at the top: a measurement
process loads the one system it measures, and its start-up time and RSS are that system's.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import pickle
import sqlite3
from typing import Any, Iterable

from . import tasks

SYSTEMS = ("timewheel", "timewheel-fsync", "huey", "huey-normal", "apscheduler", "apscheduler-nograce",
           "sqlite3")
RUNNERS = ("timewheel", "huey", "apscheduler", "apscheduler-nograce")   # systems that run tasks
WORKERS = 4


class Unsupported(Exception):
    """The system has no API for this."""


def utc(ts: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)


class TimewheelSystem:
    name = "timewheel"

    def __init__(self, path: str, durability: str = "normal") -> None:
        from timewheel import TimeWheel  # on open: see the module docstring
        self.hu = TimeWheel(path, workers=WORKERS, durability=durability)
        self.task = self.hu.task(name="benchmarks.run")(tasks.run)

    def enqueue(self, i: int, due: float) -> str:
        return self.task.delay(i, due, eta=due).id

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        delay = self.task.delay
        with self.hu.batch():
            for i, due in items:
                delay(i, due, eta=due)

    def start(self) -> None:
        self.hu.start()

    def stop(self) -> None:
        self.hu.stop(wait=False)


class HueySystem:
    name = "huey"

    def __init__(self, path: str, sync_normal: bool = False) -> None:
        from huey import SqliteHuey  # on open: see the module docstring
        from huey.storage import SqliteStorage

        class NormalSync(SqliteStorage):
            def _create_connection(self) -> Any:
                conn = super()._create_connection()
                conn.execute("PRAGMA synchronous=NORMAL")
                return conn

        kw: dict[str, Any] = {"storage_class": NormalSync} if sync_normal else {}
        self.huey = SqliteHuey("benchmarks", filename=path, **kw)
        self.task = self.huey.task(name="benchmarks.run")(tasks.run)
        self.consumer: Any = None

    def enqueue(self, i: int, due: float) -> str:
        return self.task.schedule(args=(i, due), eta=utc(due)).id

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        raise Unsupported("Huey has no batch enqueue API")

    def start(self) -> None:
        self.consumer = self.huey.create_consumer(workers=WORKERS, worker_type="thread")
        self.consumer.start()

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()


class APSchedulerSystem:
    name = "apscheduler"

    def __init__(self, path: str, grace: Any = "default") -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor  # on open: see the module docstring
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
        defaults = {} if grace == "default" else {"misfire_grace_time": grace}
        self.sched = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}")},
            executors={"default": ThreadPoolExecutor(WORKERS)}, job_defaults=defaults)
        self.sched.start(paused=True)

    def enqueue(self, i: int, due: float) -> str:
        return self.sched.add_job(tasks.run, "date", run_date=utc(due), args=(i, due)).id

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        raise Unsupported("APScheduler has no batch add_job API")

    def start(self) -> None:
        self.sched.resume()

    def stop(self) -> None:
        self.sched.shutdown(wait=False)


class SqliteSystem:
    name = "sqlite3"

    def __init__(self, path: str) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS q (id TEXT PRIMARY KEY, eta REAL NOT NULL, "
                         "payload BLOB NOT NULL)")
        self.con.execute("CREATE INDEX IF NOT EXISTS q_eta ON q (eta)")
        self._prefix = os.urandom(8).hex()
        self._ids = itertools.count()

    def _row(self, i: int, due: float) -> tuple[str, float, bytes]:
        return (f"{self._prefix}{next(self._ids):08x}", due,
                pickle.dumps(((i, due), {}), protocol=pickle.HIGHEST_PROTOCOL))

    def enqueue(self, i: int, due: float) -> str:
        row = self._row(i, due)
        self.con.execute("INSERT INTO q (id, eta, payload) VALUES (?, ?, ?)", row)
        return row[0]

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO q (id, eta, payload) VALUES (?, ?, ?)",
                             (self._row(i, due) for i, due in items))
        self.con.execute("COMMIT")

    def start(self) -> None:
        raise Unsupported("raw sqlite3 is storage only: nothing runs tasks")

    def stop(self) -> None:
        self.con.close()


def open_system(name: str, path: str) -> Any:
    for logger in ("apscheduler", "huey", "timewheel"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    if name == "timewheel":
        return TimewheelSystem(path)
    if name == "timewheel-fsync":
        return TimewheelSystem(path, durability="fsync")
    if name == "huey":
        return HueySystem(path)
    if name == "huey-normal":
        return HueySystem(path, sync_normal=True)
    if name == "apscheduler":
        return APSchedulerSystem(path)
    if name == "apscheduler-nograce":
        return APSchedulerSystem(path, grace=None)
    if name == "sqlite3":
        return SqliteSystem(path)
    raise ValueError(f"unknown system {name!r}; one of {', '.join(SYSTEMS)}")


def checkpoint(path: str) -> None:
    """Fold the SQLite file's WAL into it and empty the WAL, so that the file alone can be
    copied (the pre-built stores)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
