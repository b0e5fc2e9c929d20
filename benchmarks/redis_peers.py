"""timewheel's Redis store beside RQ, Huey's RedisHuey and arq, all on one ``redis-server``.

``python -m benchmarks --only redis`` (``--quick`` for small sizes).  The parent starts ONE
``redis-server`` for the workload (free port, temp dir, ``appendonly yes``, ``appendfsync
always``, ``maxmemory-policy noeviction``: :class:`timewheel.testing.RedisServer`), every
system uses it, and ``FLUSHALL`` empties it before each measurement.  Every measurement runs in
fresh processes, as a Redis deployment does: *worker* processes run tasks, a *client* process
enqueues them; runs are counted outside any store, in the ``O_APPEND`` log of
:mod:`benchmarks.tasks`, whose lines the parent reads.

Measurements (``Case.params["kind"]``):

=================  ===========================================================================
``enqueue``        one client enqueues ``n`` tasks due in 1 h, one call each (durable per call:
                   ``appendfsync always``), nothing running; ``enqueue-everysec``: the same for
                   timewheel with ``CONFIG SET appendfsync everysec`` (labelled, not a target)
``batch``          the same through the system's bulk API (timewheel ``hu.batch()``, RQ
                   ``enqueue_in(..., pipeline=pipe)`` + one ``pipe.execute()``)
``lateness``       workers running; the client enqueues ``n`` tasks due evenly over ``spread``
                   seconds starting ``lead`` s later; lateness = start (inside the task) - eta
``burst``          workers running; ``n`` no-op tasks due at one instant: time to drain
``kill``           worker A running; the client enqueues ``n`` tasks due ``due_lo..due_hi`` s
                   out; A (its whole process tree) is SIGKILLed at ``kill_at`` s, in the middle
                   of the due window; worker B starts ``restart_after`` s later: lost, duplicated
``recovery``       one task that sleeps ``sleep`` s starts on worker A; worker B starts and is
                   ready; A is SIGKILLed: time until the task starts again (on B), capped
=================  ===========================================================================

Systems (defaults except where noted; :data:`SETTINGS` says the same for the report):

* ``timewheel``: ``TimeWheel(url, workers=4)``, default lease (10 s) and tick (1 s).
* ``rq``: ``Queue.enqueue_in`` and ``WorkerPool(num_workers=4)`` of ``SimpleWorker``s (``rq
  worker-pool -n 4 -w rq.worker.SimpleWorker``), each started ``with_scheduler=True``; RQ's
  default forking ``Worker`` forks a process per job and falls behind 200 tasks/s here: it is
  measured as ``rq-fork`` in the full run's lateness only.
* ``huey``: ``RedisHuey`` + ``create_consumer(workers=4, worker_type="thread")`` in-process.
* ``arq``: ``enqueue_job(..., _defer_by=...)`` + one ``arq.worker.Worker`` (default
  ``max_jobs=10``, ``poll_delay=0.5``, ``job_timeout=300``).
* ``redis-py`` (enqueue only, the ceiling): one ``ZADD`` of the pickled call per task.

Every system's logging is set to WARNING (the SQLite adapters silence theirs too), so that none
pays for a log line per task.  As in :mod:`benchmarks.systems`, each adapter imports its
system's library when it is opened: a worker or client process loads the one it measures.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import itertools
import logging
import os
import pickle
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterable, Optional

from . import tasks
from .harness import Case, Runner
from .machine import package_version
from .peers import ServerBench, child_workloads, forever, slow
from .systems import WORKERS, Unsupported, utc

SYSTEMS = ("timewheel", "rq", "huey", "arq")
PEERS = SYSTEMS[1:]
QUEUE = "benchmarks"            # RQ queue and Huey name
KINDS = ("enqueue", "enqueue-everysec", "batch", "lateness", "burst", "kill", "recovery")

SETTINGS = {
    "timewheel": "`TimeWheel(url, workers=4)`: default lease (10 s), tick (1 s), namespace; one "
                 "worker process (`hu.start()`), a separate client process (no `start()`)",
    "rq": "`Queue('benchmarks').enqueue_in(timedelta, f, ...)`; workers: `WorkerPool(num_workers=4, "
          "worker_class=SimpleWorker)` (= `rq worker-pool -n 4 -w rq.worker.SimpleWorker`), each with "
          "`with_scheduler=True` (one of them holds the scheduler lock: it polls every 1 s). RQ's default "
          "forking `Worker` (a fork per job) could not keep up with 200 tasks/s on this machine: it is "
          "shown once, as `rq-fork`, in the lateness table",
    "huey": "`RedisHuey('benchmarks', url=...)`, `task.schedule(eta=...)`; consumer: "
            "`create_consumer(workers=4, worker_type='thread')` started in the worker process "
            "(scheduler_interval 1 s, blocking BRPOP)",
    "arq": "`enqueue_job('run', ..., _defer_by=seconds)`; one `arq.worker.Worker` with its defaults "
           "(`max_jobs=10`, `poll_delay=0.5 s`, `job_timeout=300 s`); task functions are coroutines",
}

BULK = {
    "timewheel": "`with hu.batch():` around the `delay()` calls (one script call)",
    "rq": "`enqueue_in(..., pipeline=pipe)` for each, then one `pipe.execute()` (MULTI/EXEC); "
          "`enqueue_many` has no delayed form (`prepare_data` takes no time)",
    "huey": None,    # no bulk enqueue API
    "arq": None,     # no bulk enqueue API
    "rq-fork": None,  # (only run in the lateness measurement)
    "redis-py": "`pipe.zadd(...)` for each, then one `pipe.execute()` (MULTI/EXEC)",
}


# -- task functions (imported by every system's workers) ----------------------------------------
async def arq_run(ctx: dict, i: int, due: float) -> None:
    tasks.run(i, due)


async def arq_slow(ctx: dict, i: int, due: float, seconds: float) -> None:
    tasks.run(i, due)
    await asyncio.sleep(seconds)
    tasks.note_end(i)


def _quiet() -> None:
    for name in ("timewheel", "rq", "rq.worker", "rq.scheduler", "rq.worker_pool", "huey",
                 "huey.consumer", "arq", "arq.worker", "arq.jobs", "arq.connections"):
        logging.getLogger(name).setLevel(logging.WARNING)


# -- adapters -----------------------------------------------------------------------------------
class TimewheelRedis:
    def __init__(self, url: str) -> None:
        from timewheel import TimeWheel  # on open: see the module docstring
        self.hu = TimeWheel(url, workers=WORKERS)
        self.run = self.hu.task(name="benchmarks.run")(tasks.run)
        self.slow = self.hu.task(name="benchmarks.slow")(slow)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> list[str]:
        delay = self.run.delay
        return [delay(i, due, eta=due).id for i, due in items]

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
        counts = self.hu.store.counts()
        by: dict[str, int] = {}
        for (status, _name), n in counts.items():
            by[status] = by.get(status, 0) + int(n)
        # a running task whose owner died is requeued once its lease runs out
        return {"will_run": by.get("pending", 0) + by.get("running", 0), "stranded": 0, "by_status": by}


class RQRedis:
    def __init__(self, url: str, fork: bool = False) -> None:
        from redis import Redis  # on open: see the module docstring
        from rq import Queue
        self.fork = fork
        self.conn = Redis.from_url(url)
        self.q = Queue(QUEUE, connection=self.conn)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> list[str]:
        enqueue_in, td = self.q.enqueue_in, _dt.timedelta
        return [enqueue_in(td(seconds=due - time.time()), tasks.run, i, due).id for i, due in items]

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        enqueue_in, td = self.q.enqueue_in, _dt.timedelta
        with self.conn.pipeline() as pipe:
            for i, due in items:
                enqueue_in(td(seconds=due - time.time()), tasks.run, i, due, pipeline=pipe)
            pipe.execute()

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        self.q.enqueue_in(_dt.timedelta(seconds=due - time.time()), slow, i, due, seconds)

    def serve(self, ready: Callable[[], None]) -> None:
        from rq.worker import SimpleWorker, Worker
        from rq.worker_pool import WorkerPool
        pool = WorkerPool([QUEUE], connection=self.conn, num_workers=WORKERS,
                          worker_class=Worker if self.fork else SimpleWorker)
        ready()
        pool.start(burst=False, logging_level="WARNING")

    def left(self) -> dict:
        from rq.registry import ScheduledJobRegistry, StartedJobRegistry
        scheduled = self.conn.zcard(ScheduledJobRegistry(queue=self.q).key)
        queued = self.conn.llen(self.q.key)
        started = self.conn.zcard(StartedJobRegistry(queue=self.q).key)
        # a job left in StartedJobRegistry by a dead worker is never re-run: maintenance moves it
        # to FailedJobRegistry (AbandonedJobError) unless it has retries left
        return {"will_run": scheduled + queued, "stranded": started,
                "by_status": {"scheduled": scheduled, "queued": queued, "started": started}}


class HueyRedis:
    def __init__(self, url: str) -> None:
        from huey import RedisHuey  # on open: see the module docstring
        self.huey = RedisHuey(QUEUE, url=url)
        self.run = self.huey.task(name="benchmarks.run")(tasks.run)
        self.slow = self.huey.task(name="benchmarks.slow")(slow)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> list[str]:
        schedule = self.run.schedule
        return [schedule(args=(i, due), eta=utc(due)).id for i, due in items]

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


class ArqRedis:
    def __init__(self, url: str) -> None:
        from arq.connections import RedisSettings  # on open: see the module docstring
        self.settings = RedisSettings.from_dsn(url)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pool: Any = None

    def _client(self) -> Any:
        if self._pool is None:
            from arq import create_pool
            self._loop = asyncio.new_event_loop()
            self._pool = self._loop.run_until_complete(create_pool(self.settings))
        return self._pool

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> None:
        pool = self._client()

        async def calls() -> None:
            enqueue = pool.enqueue_job
            for i, due in items:
                await enqueue("run", i, due, _defer_by=due - time.time())
        self._run(calls())

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        raise Unsupported("arq has no bulk enqueue API")

    def enqueue_slow(self, i: int, due: float, seconds: float) -> None:
        pool = self._client()
        self._run(pool.enqueue_job("slow", i, due, seconds, _defer_by=due - time.time()))

    def serve(self, ready: Callable[[], None]) -> None:
        from arq.worker import Worker, func
        worker = Worker(functions=[func(arq_run, name="run"), func(arq_slow, name="slow")],
                        redis_settings=self.settings)
        ready()
        worker.run()

    def left(self) -> dict:
        from arq.constants import default_queue_name
        pool = self._client()
        queued = self._run(pool.zcard(default_queue_name))
        # a job whose worker died stays queued: it starts again once arq:in-progress:<id> expires
        return {"will_run": int(queued), "stranded": 0, "by_status": {"queued": int(queued)}}


class RawRedis:
    """The storage ceiling (enqueue only): redis-py, one ``ZADD`` of the pickled call per task,
    scored by eta; the bulk form is one MULTI/EXEC pipeline."""

    def __init__(self, url: str) -> None:
        from redis import Redis  # on open: see the module docstring
        self.conn = Redis.from_url(url)
        self._ids = itertools.count()
        self._prefix = os.urandom(8).hex()
        self._dumps = pickle.dumps

    def _member(self, i: int, due: float) -> tuple[str, bytes]:
        task_id = f"{self._prefix}{next(self._ids):08x}"
        return task_id, self._dumps((task_id, "benchmarks.run", (i, due)), protocol=5)

    def enqueue_calls(self, items: Iterable[tuple[int, float]]) -> list[str]:
        zadd, out = self.conn.zadd, []
        for i, due in items:
            task_id, member = self._member(i, due)
            zadd("raw:q", {member: due})
            out.append(task_id)
        return out

    def enqueue_batch(self, items: Iterable[tuple[int, float]]) -> None:
        with self.conn.pipeline() as pipe:
            for i, due in items:
                pipe.zadd("raw:q", {self._member(i, due)[1]: due})
            pipe.execute()


def open_system(name: str, url: str) -> Any:
    _quiet()
    if name == "rq-fork":
        return RQRedis(url, fork=True)
    if name == "redis-py":
        return RawRedis(url)
    cls = {"timewheel": TimewheelRedis, "rq": RQRedis, "huey": HueyRedis, "arq": ArqRedis}.get(name)
    if cls is None:
        raise ValueError(f"unknown system {name!r}; one of {', '.join(SYSTEMS)}, rq-fork")
    return cls(url)


# -- what the child processes do (registered in benchmarks.child.WORKLOADS) --------------------
CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = child_workloads("redis", open_system)


# -- plan ---------------------------------------------------------------------------------------
SIZES = {
    "quick": {
        "reps": 1, "peer_reps": 1, "enqueue_n": 1000, "batch_n": 2000,
        "lateness": {"n": 300, "lead": 1.0, "spread": 3.0, "grace": 3.0},
        "burst": {"n": 1000, "max_wait": 15.0, "quiet": 4.0, "start_allowance": 2.5},
        "kill": {"n": 200, "task_s": 0.01, "due_lo": 1.0, "due_hi": 3.0, "kill_at": 2.0,
                 "restart_after": 1.0, "max_wait": 12.0, "linger": 1.0},
        "recovery": {"sleep": 4.0, "cap": 12.0},
    },
    "full": {
        "reps": 3, "peer_reps": 2, "enqueue_n": 10_000, "batch_n": 10_000,
        "lateness": {"n": 2000, "lead": 2.0, "spread": 10.0, "grace": 10.0},
        "burst": {"n": 20_000, "max_wait": 60.0, "quiet": 10.0, "start_allowance": 3.0},
        "kill": {"n": 1000, "task_s": 0.01, "due_lo": 2.0, "due_hi": 6.0, "kill_at": 4.0,
                 "restart_after": 2.0, "max_wait": 30.0, "linger": 2.0},
        "recovery": {"sleep": 6.0, "cap": 60.0},
    },
}


def plan(mode: str) -> list[Case]:
    """The cases of the ``redis`` workload, kind by kind (the harness interleaves repetitions)."""
    s = SIZES[mode]

    def reps(system: str) -> int:
        return s["reps"] if system == "timewheel" else s["peer_reps"]

    cases = [Case("redis", sy, {"kind": "enqueue", "n": s["enqueue_n"]}, reps(sy), f"enqueue:{sy}")
             for sy in SYSTEMS + ("redis-py",)]
    cases.append(Case("redis", "timewheel", {"kind": "enqueue-everysec", "n": s["enqueue_n"]},
                      s["peer_reps"], "enqueue-everysec:timewheel"))
    cases += [Case("redis", sy, {"kind": "batch", "n": s["batch_n"]}, reps(sy), f"batch:{sy}")
              for sy in SYSTEMS + ("redis-py",) if BULK[sy]]
    for kind in ("lateness", "burst", "kill", "recovery"):
        cases += [Case("redis", sy, dict(s[kind], kind=kind), reps(sy), f"{kind}:{sy}") for sy in SYSTEMS]
        if kind == "lateness" and mode != "quick":    # RQ's default forking worker, for the record
            cases.append(Case("redis", "rq-fork", dict(s[kind], kind=kind), s["peer_reps"],
                              "lateness:rq-fork"))
    return cases


# -- the parent side ----------------------------------------------------------------------------
class RedisBench(ServerBench):
    """The parent side: one redis-server for the workload, one method per kind of measurement."""

    PREFIX = "redis"
    BULK = BULK

    def __init__(self, runner: Runner) -> None:
        import redis  # the parent's own client: optional (bench extra)

        from timewheel.testing import RedisServer  # in the parent only: see the module docstring
        super().__init__(runner)
        self.dir = tempfile.mkdtemp(prefix="timewheel-bench-redis-")
        self.server = RedisServer(self.dir).start()
        self.url = self.server.url
        self.r = redis.Redis.from_url(self.url)
        self.info = self._server_info()
        atexit.register(self.close)

    def reset(self) -> None:
        self.r.flushall()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            shutil.rmtree(self.dir, ignore_errors=True)

    def _server_info(self) -> dict:
        conf = {}
        for key in ("appendonly", "appendfsync", "save", "maxmemory-policy", "maxmemory",
                    "aof-use-rdb-preamble", "io-threads"):
            conf.update({k if isinstance(k, str) else k.decode(): v if isinstance(v, str) else v.decode()
                         for k, v in self.r.config_get(key).items()})
        srv = self.r.info("server")
        fs = ""
        try:
            fs = subprocess.run(["df", "-T", self.dir], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()[-1].split()[1]
        except Exception:
            pass
        return {"redis_version": srv.get("redis_version"), "config": conf, "filesystem": fs,
                "bind": "127.0.0.1 (TCP, loopback)",
                "packages": {m: package_version(m)
                             for m in ("timewheel", "rq", "huey", "arq", "redis", "hiredis")}}

    # -- helpers ----------------------------------------------------------------------------
    def server_cpu_s(self) -> float:
        cpu = self.r.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def _commandstats(self) -> dict:
        out = {}
        for name, v in self.r.info("commandstats").items():
            out[name.replace("cmdstat_", "")] = {"calls": v["calls"], "usec": v["usec"]}
        return out

    # -- the measurements ---------------------------------------------------------------------
    def enqueue(self, case: Case) -> dict:
        kind, p = case.params["kind"], case.params
        fsync = "everysec" if kind == "enqueue-everysec" else "always"
        self.r.config_set("appendfsync", fsync)
        self.r.config_resetstat()
        try:
            res = self.runner.run({"workload": "redis_enqueue", "system": case.system, "url": self.url,
                                   "n": p["n"], "batch": kind == "batch"}, case.key().replace(":", "-"))
        finally:
            self.r.config_set("appendfsync", "always")
        stats = self._commandstats()
        stats.pop("config|set", None)
        stats.pop("config|resetstat", None)
        calls = sum(v["calls"] for v in stats.values())
        usec = sum(v["usec"] for v in stats.values())
        res.update(appendfsync=fsync, server_calls_per_task=calls / p["n"],
                   server_usec_per_task=usec / p["n"], commandstats=stats)
        return res


_BENCHES: dict[int, RedisBench] = {}


def bench_for(runner: Runner) -> RedisBench:
    """The run's redis-server (and its parent-side measurements), started on the first call:
    every Redis measurement of a run uses the same server."""
    bench = _BENCHES.get(id(runner))
    if bench is None:
        bench = _BENCHES[id(runner)] = RedisBench(runner)
    return bench


def measure(runner: Runner, case: Case) -> dict:
    """One measurement of the ``redis`` workload (the server is started on the first)."""
    return bench_for(runner).measure(case)


