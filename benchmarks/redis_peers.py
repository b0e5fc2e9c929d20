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
import json
import logging
import os
import pickle
import queue as _queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Optional

from . import tasks
from .harness import ROOT, Case, Runner
from .machine import kill_tree, package_version, tree_cpu_s
from .stats import pct, quantiles
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
def slow(i: int, due: float, seconds: float) -> None:
    """Note the start (like :func:`tasks.run`), run for ``seconds``, note the end."""
    tasks.run(i, due)
    time.sleep(seconds)
    tasks.note_end(i)


async def arq_run(ctx: dict, i: int, due: float) -> None:
    tasks.run(i, due)


async def arq_slow(ctx: dict, i: int, due: float, seconds: float) -> None:
    tasks.run(i, due)
    await asyncio.sleep(seconds)
    tasks.note_end(i)


def _forever() -> None:
    while True:
        time.sleep(60)


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
        _forever()

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
        _forever()

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
def child_enqueue(spec: dict) -> dict:
    """``n`` tasks due ``delay`` s out (1 h), one call each or through the bulk API."""
    n, batch = spec["n"], spec.get("batch", False)
    system = open_system(spec["system"], spec["url"])
    base = time.time() + spec.get("delay", 3600.0)
    items = [(i, base + i * 1e-3) for i in range(n)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if batch:
        system.enqueue_batch(items)
    else:
        system.enqueue_calls(items)
    elapsed = time.perf_counter() - t0
    return {"n": n, "seconds": elapsed, "rate": n / elapsed, "cpu_s": time.process_time() - cpu0}


def child_worker(spec: dict) -> dict:
    """Run the system's workers until SIGKILLed by the parent; ``READY`` on stdout once started."""
    tasks.log_to(spec["log"])
    system = open_system(spec["system"], spec["url"])
    system.serve(lambda: print(f"READY {time.time():.6f}", flush=True))
    return {}


def _say(what: str, **info: Any) -> None:
    print(f"{what} {json.dumps(info)}", flush=True)


def child_client(spec: dict) -> dict:
    """Enqueue what the measurement needs (``spec["plan"]``), print ``SCHEDULED {json}``."""
    system = open_system(spec["system"], spec["url"])
    plan = spec["plan"]
    out: dict[str, Any] = {"plan": plan}
    if plan in ("spread", "burst"):
        # A system whose enqueue is slow gets a longer lead, so that every task is stored before
        # the first one is due: time a few enqueues first (due tomorrow, never run here).
        batch = plan == "burst" and spec.get("batch", False)
        m = spec.get("calibrate", 50)
        far = time.time() + 86400
        system.enqueue_calls([(-1, far)])             # connect, load scripts: not part of the rate
        t = time.perf_counter()
        cal = [(-2 - j, far + j) for j in range(m)]
        if batch:
            system.enqueue_batch(cal)
        else:
            system.enqueue_calls(cal)
        per_task = (time.perf_counter() - t) / m
        n = spec["n"]
        out.update(calibration_tasks=m, per_task_s=per_task, batch=batch)
        if plan == "spread":
            lead = max(spec["lead"], per_task * n * 1.5 + 0.5)
            t0 = time.time()
            dues = [t0 + lead + spec["spread"] * k / n for k in range(n)]
            late = 0
            for k, due in enumerate(dues):
                system.enqueue_calls([(k, due)])
                if time.time() > due:
                    late += 1
            out.update(lead_s=lead, t0=t0, first_due=dues[0], last_due=dues[-1], late_enqueued=late)
        else:
            # the workers start once the tasks are stored: leave them time to start
            lead = max(spec.get("min_lead", 1.5), per_task * n * 1.3 + 1.0) + spec.get("start_allowance", 0.0)
            t0 = time.time()
            due = t0 + lead
            items = [(k, due) for k in range(n)]
            if batch:
                system.enqueue_batch(items)
            else:
                system.enqueue_calls(items)
            out.update(lead_s=lead, t0=t0, due=due, first_due=due, last_due=due)
    elif plan == "window":
        n, lo, hi, task_s = spec["n"], spec["due_lo"], spec["due_hi"], spec["task_s"]
        t0 = time.time()
        for k in range(n):
            system.enqueue_slow(k, t0 + lo + (hi - lo) * k / max(1, n - 1), task_s)
        out.update(t0=t0, first_due=t0 + lo, last_due=t0 + hi)
    elif plan == "slow":
        t0 = time.time()
        system.enqueue_slow(0, t0, spec["sleep"])
        out.update(t0=t0, first_due=t0, last_due=t0)
    else:
        raise ValueError(plan)
    out["enqueued_at"] = time.time()
    out["enqueue_s"] = out["enqueued_at"] - out["t0"]
    _say("SCHEDULED", **out)
    return out


def child_left(spec: dict) -> dict:
    """How many tasks the store still holds, not yet run (pending, queued, running)."""
    return open_system(spec["system"], spec["url"]).left()


CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = {
    "redis_enqueue": child_enqueue, "redis_worker": child_worker, "redis_client": child_client,
    "redis_left": child_left,
}


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
class Child:
    """A child process (``python -m benchmarks.child``) in its own session, its stdout lines
    read by a thread so that the parent can wait for one with a timeout."""

    def __init__(self, runner: Runner, d: str, name: str, spec: dict) -> None:
        path = os.path.join(d, f"spec-{name}.json")
        self.out = os.path.join(d, f"out-{name}.json")
        spec = dict(spec, out=self.out)
        with open(path, "w") as fh:
            json.dump(spec, fh)
        self.err_path = os.path.join(d, f"stderr-{name}.txt")
        err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.child", path], cwd=ROOT,
                                     env=runner.env(), stdout=subprocess.PIPE, stderr=err, text=True,
                                     start_new_session=True)
        err.close()
        self.lines: "_queue.Queue[str]" = _queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> Optional[str]:
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except _queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    return None
                continue
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def info(self, prefix: str, timeout: float) -> Optional[dict]:
        line = self.expect(prefix, timeout)
        return json.loads(line) if line else None

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"error": f"timed out after {timeout:g}s"}
        try:
            with open(self.out) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {"error": "no result", "stderr": self.stderr_tail()}

    def kill(self) -> int:
        n = 0
        if self.proc.poll() is None:
            n = kill_tree(self.proc.pid)
        self.proc.wait()
        return n

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            with open(self.err_path) as fh:
                return fh.read()[-n:]
        except OSError:
            return ""


def _pct(s: list[float], p: float) -> Optional[float]:
    """:func:`benchmarks.stats.pct`, None (JSON null) for no values."""
    return pct(s, p) if s else None


class RedisBench:
    """The parent side: one redis-server for the workload, one method per kind of measurement."""

    SETTLE = 0.5      # s after a worker says READY (RQ's pool forks its workers after that)

    def __init__(self, runner: Runner) -> None:
        import redis  # the parent's own client: optional (bench extra)

        from timewheel.testing import RedisServer  # in the parent only: see the module docstring
        self.runner = runner
        self.dir = tempfile.mkdtemp(prefix="timewheel-bench-redis-")
        self.server = RedisServer(self.dir).start()
        self.url = self.server.url
        self.r = redis.Redis.from_url(self.url)
        self.info = self._server_info()
        atexit.register(self.close)

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
    def _dir(self, case: Case) -> str:
        d, _, _ = self.runner.paths(case.key().replace(":", "-"))
        return d

    def _worker(self, d: str, name: str, system: str, log: str) -> tuple[Child, Optional[float]]:
        w = Child(self.runner, d, name, {"workload": "redis_worker", "system": system, "url": self.url,
                                         "log": log})
        line = w.expect("READY", 30)
        if line is None:
            return w, None
        time.sleep(self.SETTLE)
        return w, float(line)

    def _client(self, d: str, system: str, **plan: Any) -> tuple[Child, Optional[dict]]:
        c = Child(self.runner, d, "client", dict(plan, workload="redis_client", system=system, url=self.url))
        return c, c.info("SCHEDULED", 600)

    def _left(self, d: str, system: str) -> dict:
        c = Child(self.runner, d, "left", {"workload": "redis_left", "system": system, "url": self.url})
        return c.wait(60)

    @staticmethod
    def _failed(what: str, *children: Child) -> dict:
        return {"error": what, "stderr": "\n".join(c.stderr_tail() for c in children)}

    def _server_cpu_s(self) -> float:
        cpu = self.r.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def _commandstats(self) -> dict:
        out = {}
        for name, v in self.r.info("commandstats").items():
            out[name.replace("cmdstat_", "")] = {"calls": v["calls"], "usec": v["usec"]}
        return out

    # -- the measurements ---------------------------------------------------------------------
    def measure(self, case: Case) -> dict:
        self.r.flushall()
        kind = case.params["kind"]
        fn = {"enqueue": self.enqueue, "enqueue-everysec": self.enqueue, "batch": self.enqueue,
              "lateness": self.lateness, "burst": self.burst, "kill": self.kill,
              "recovery": self.recovery}[kind]
        res = fn(case)
        res.update(kind=kind, system=case.system, server=self.info)
        return res

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

    def _collect(self, log: str, n: int, deadline: float, linger: float,
                 quiet: Optional[float] = None, quiet_after: float = 0.0, ends: bool = False) -> list:
        """Poll the run log until ``n`` distinct tasks started (``ends``: ended), then ``linger``
        more for duplicates; or ``deadline``; or (with ``quiet``) no new run for ``quiet`` s after
        ``quiet_after``."""
        complete_at = None
        last_count, last_change = 0, time.time()
        while True:
            now = time.time()
            runs = tasks.read_log(log)
            if len(runs) != last_count:
                last_count, last_change = len(runs), now
            done = {r[0] for r in tasks.read_ends(log)} if ends else {r[0] for r in runs if r[0] >= 0}
            if len(done) >= n:
                complete_at = complete_at or now
                if now - complete_at >= linger:
                    break
            if now > deadline:
                break
            if quiet is not None and now > quiet_after and now - max(last_change, quiet_after) > quiet:
                break
            time.sleep(0.05)
        return tasks.read_log(log)

    def lateness(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        w, _ = self._worker(d, "worker", case.system, log)
        try:
            c, info = self._client(d, case.system, plan="spread", n=p["n"], lead=p["lead"],
                                   spread=p["spread"])
            if info is None:
                return self._failed("the client did not schedule", c, w)
            c.wait(30)
            # CPU over the due window: the worker's process tree and redis-server
            time.sleep(max(0.0, info["first_due"] - time.time()))
            cpu0, srv0, t0 = tree_cpu_s(w.proc.pid), self._server_cpu_s(), time.time()
            runs = self._collect(log, p["n"], info["last_due"] + p["grace"], 0.5)
            cpu1, srv1, t1 = tree_cpu_s(w.proc.pid), self._server_cpu_s(), time.time()
        finally:
            w.kill()
        runs = [r for r in runs if r[0] >= 0]
        lat = sorted(r[3] - r[2] for r in runs)
        ids = [r[0] for r in runs]
        res = {
            "n": p["n"], "ran": len(ids), "unique": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
            "early": sum(1 for x in lat if x < 0), "early_over_1ms": sum(1 for x in lat if x < -1e-3),
            "late_enqueued": info["late_enqueued"], "lead_s": info["lead_s"], "enqueue_s": info["enqueue_s"],
            "enqueued_before_first_due_s": info["first_due"] - info["enqueued_at"],
            "p50_ms": _ms(_pct(lat, 50)), "p90_ms": _ms(_pct(lat, 90)), "p99_ms": _ms(_pct(lat, 99)),
            "max_ms": _ms(lat[-1] if lat else None), "min_ms": _ms(lat[0] if lat else None),
            "cdf_ms": [x * 1e3 for x in quantiles(lat)],
            "worker_cpu_s": cpu1 - cpu0, "server_cpu_s": srv1 - srv0, "cpu_window_s": t1 - t0,
            "loadavg_after": os.getloadavg()[0],
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def burst(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        w = None
        try:
            # the tasks are stored first, the workers started after (before the due instant), so
            # that neither the enqueue rate nor the lead depends on workers competing for the CPU
            c, info = self._client(d, case.system, plan="burst", n=p["n"],
                                   batch=bool(BULK.get(case.system)), calibrate=200,
                                   start_allowance=p["start_allowance"])
            if info is None:
                return self._failed("the client did not schedule", c)
            c.wait(30)
            due = info["due"]
            w, ready = self._worker(d, "worker", case.system, log)
            ready_at = time.time()
            runs = self._collect(log, p["n"], due + p["max_wait"], 0.5, quiet=p["quiet"], quiet_after=due)
        finally:
            if w is not None:
                w.kill()
        runs = [r for r in runs if r[0] >= 0]
        offs = sorted(r[3] - due for r in runs)
        ids = [r[0] for r in runs]
        last = offs[-1] if offs else None
        res = {
            "n": p["n"], "ran": len(ids), "unique": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
            "early": sum(1 for x in offs if x < 0), "bulk_api": info["batch"],
            "enqueue_s": info["enqueue_s"], "margin_s": due - info["enqueued_at"], "lead_s": info["lead_s"],
            "workers_ready_before_due_s": due - ready_at,
            "first_s": offs[0] if offs else None, "p50_s": _pct(offs, 50), "last_s": last,
            "throughput": len(set(ids)) / last if last and last > 0 else None,
            "drain_curve_s": quantiles(offs), "max_wait_s": p["max_wait"],
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def kill(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        a, _ = self._worker(d, "worker-a", case.system, log)
        b = None
        try:
            c, info = self._client(d, case.system, plan="window", n=p["n"], due_lo=p["due_lo"],
                                   due_hi=p["due_hi"], task_s=p["task_s"])
            if info is None:
                a.kill()
                return self._failed("the client did not schedule", c, a)
            c.wait(30)
            time.sleep(max(0.0, info["t0"] + p["kill_at"] - time.time()))
            killed_at = time.time()
            killed_procs = a.kill()
            starts_before, ends_before = tasks.read_log(log), tasks.read_ends(log)
            time.sleep(p["restart_after"])
            restart_at = time.time()
            b, _ = self._worker(d, "worker-b", case.system, log)
            runs = self._collect(log, p["n"], restart_at + p["max_wait"], p["linger"], ends=True)
        finally:
            a.kill()
            if b is not None:
                b.kill()
        left = self._left(d, case.system)
        ends = tasks.read_ends(log)
        started: dict[int, int] = {}
        for r in runs:
            started[r[0]] = started.get(r[0], 0) + 1
        ended: dict[int, int] = {}
        for i, _pid in ends:
            ended[i] = ended.get(i, 0) + 1
        completed = len(set(ended) & set(range(p["n"])))
        not_completed = p["n"] - completed
        stored = left.get("will_run")
        last = max((r[3] for r in runs), default=None)
        res = {
            "n": p["n"], "task_s": p["task_s"], "starts": len(runs), "started": len(started),
            "completed": completed, "not_completed": not_completed,
            "not_done_ids": _ranges(sorted(set(range(p["n"])) - set(ended))),
            "running_at_kill": len({r[0] for r in starts_before} - {i for i, _ in ends_before}),
            "completed_before_kill": len({i for i, _ in ends_before}),
            "still_stored": stored, "left": left,
            "lost": max(0, not_completed - stored) if isinstance(stored, int) else None,
            "started_again": sum(1 for c in started.values() if c > 1),
            "duplicates": sum(c - 1 for c in ended.values() if c > 1),
            "early": sum(1 for r in runs if r[3] < r[2]),
            "schedule_s": info["enqueue_s"], "killed_after_t0_s": killed_at - info["t0"],
            "killed_processes": killed_procs,
            "due_window_s": [p["due_lo"], p["due_hi"]], "waited_after_restart_s": p["max_wait"],
            "restart_to_last_start_s": (last - restart_at) if last is not None and last > restart_at
            else None,
            "all_ran_once": completed >= p["n"] and not any(c > 1 for c in ended.values()),
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def recovery(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        a, _ = self._worker(d, "worker-a", case.system, log)
        b = None
        try:
            c, info = self._client(d, case.system, plan="slow", sleep=p["sleep"])
            if info is None:
                a.kill()
                return self._failed("the client did not schedule", c, a)
            c.wait(30)
            end = time.time() + 20
            while time.time() < end and not tasks.read_log(log):
                time.sleep(0.01)
            first = tasks.read_log(log)
            if not first:
                return self._failed("the task did not start on worker A", a)
            started_a = first[0][3]
            b, _ = self._worker(d, "worker-b", case.system, log)      # ready while A runs the task
            if time.time() - started_a > p["sleep"] - 0.2:
                return {"error": f"worker B took too long to start ({time.time() - started_a:.1f} s "
                                 f"after the task started on A; it runs {p['sleep']} s)"}
            killed_at = time.time()
            a.kill()
            rerun = None
            while time.time() < killed_at + p["cap"]:
                runs = tasks.read_log(log)
                if len(runs) > 1:
                    rerun = runs[1]
                    break
                time.sleep(0.02)
        finally:
            a.kill()
            if b is not None:
                b.kill()
        res = {
            "sleep_s": p["sleep"], "cap_s": p["cap"], "started_on_a_before_kill_s": killed_at - started_a,
            "rerun": rerun is not None,
            "recovery_s": (rerun[3] - killed_at) if rerun is not None else None,
            "rerun_pid_differs": (rerun[1] != first[0][1]) if rerun is not None else None,
        }
        shutil.rmtree(d, ignore_errors=True)
        return res


def _ranges(ids: list[int], cap: int = 20) -> str:
    """``"3-7, 12, 40-41"``: which tasks (by their due order), the first ``cap`` runs of them."""
    out: list[str] = []
    k = 0
    while k < len(ids) and len(out) < cap:
        j = k
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[k]) if j == k else f"{ids[k]}-{ids[j]}")
        k = j + 1
    return ", ".join(out) + (", ..." if k < len(ids) else "")


def _fmt_s(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


def _ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else x * 1e3


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


def brief(res: dict) -> str:
    """One line per measurement for the harness's progress output."""
    if "error" in res:
        return "ERROR " + str(res["error"])[:200]
    k = res.get("kind")
    if k in ("enqueue", "enqueue-everysec", "batch"):
        return (f"{res['rate']:,.0f}/s ({res['server_calls_per_task']:.1f} cmds, "
                f"{res['server_usec_per_task']:.0f} us server per task)")
    if k == "lateness":
        return (f"ran {res['unique']}/{res['n']} dup {res['duplicates']} early {res['early']} "
                f"p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms max {res['max_ms']:.1f} ms")
    if k == "burst":
        return (f"ran {res['unique']}/{res['n']} first {res['first_s']:.3f} s last {res['last_s']:.3f} s "
                f"(margin {res['margin_s']:.1f} s)")
    if k == "kill":
        return (f"done {res['completed']}/{res['n']}, running at the kill {res['running_at_kill']}, "
                f"not done {res['not_completed']} (will run later {res['still_stored']}, lost "
                f"{res['lost']}), started again {res['started_again']}, done twice {res['duplicates']}, "
                f"restart->last start {_fmt_s(res['restart_to_last_start_s'])}")
    if k == "recovery":
        return (f"re-run after {res['recovery_s']:.2f} s" if res["rerun"]
                else f"not re-run within {res['cap_s']:g} s")
    return json.dumps(res)[:200]
