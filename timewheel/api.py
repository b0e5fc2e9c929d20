"""The public API: :class:`TimeWheel`, the ``@hu.task()`` decorator and task handles."""

from __future__ import annotations

import atexit
import datetime as _dt
import functools
import inspect
import itertools
import logging
import math
import os
import pickle
import threading
import time
import traceback as _traceback
import weakref
from contextlib import contextmanager
from typing import (
    Any,
    Callable,
    Generic,
    Iterator,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
    overload,
)

from .aio import run_coroutine
from .boss import Boss
from .errors import TaskFailed, TaskNotFound
from .locks import ProcessLocks, locks_for
from .pool import WorkerPool
from .records import PENDING, SUCCEEDED, TERMINAL, TaskRecord
from .store.base import Due, Outcome, WheelStore
from .store.memory import MemoryStore
from .store.sqlite import SqliteDictStore
from .wheel import Wheel, retry_backoff

__all__ = ["TimeWheel", "Task", "TaskHandle", "Stopped"]

log = logging.getLogger("timewheel")

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
_MAX_ETA = 253402300799.0           # 9999-12-31T23:59:59Z: keys have fixed-width time fields
_instances: "weakref.WeakSet[TimeWheel]" = weakref.WeakSet()


class Stopped(NamedTuple):
    """What :meth:`TimeWheel.stop` left behind in the store."""

    pending: int     #: tasks still waiting for their eta (they run after the next start)
    running: int     #: tasks claimed and not finished, by any process
    unfinished: int  #: of those, claimed by this wheel and still running when stop() returned


class _Ids:
    """Unique task ids, cheaply: a random per-process prefix plus a counter."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._count = itertools.count()

    def new(self) -> str:
        if self._pid != os.getpid():      # forked: a child must not repeat its parent's ids
            self._pid, self._prefix, self._count = os.getpid(), os.urandom(8).hex(), itertools.count()
        return f"{self._prefix}{next(self._count):08x}"


_ids = _Ids()


def _number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum:g}, got {value!r}")
    return float(value)


def _optional(value: Any, what: str) -> Optional[float]:
    return None if value is None else _seconds(value, what)


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    return _number(value, what)


class TaskHandle:
    """A task in the store, by id.  Cheap: it holds no state besides the id."""

    __slots__ = ("id", "_wheel")

    def __init__(self, wheel: "TimeWheel", task_id: str) -> None:
        self.id = task_id
        self._wheel = wheel

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def record(self) -> TaskRecord:
        """The stored record.  Raises :class:`TaskNotFound` once purged."""
        rec = self._wheel.store.get(self.id)
        if rec is None:
            raise TaskNotFound(f"no task {self.id} in {self._wheel.path or 'memory'} "
                               "(never committed, or purged after its result TTL)")
        return rec

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``misfired``."""
        return self.record.status

    def cancel(self) -> bool:
        """True if the task was still pending and now never runs; False otherwise."""
        ok = self._wheel.store.cancel(self.id, self._wheel.clock())
        if ok:
            self._wheel._changed_notify()
        return ok

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the task to end and return its value.

        Raises :class:`TaskFailed` if it failed (after its retries), was cancelled or was
        skipped as misfired, and :class:`TimeoutError` if it is still unfinished after
        ``timeout`` seconds (``None``: wait as long as it takes).
        """
        timeout = _optional(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.005
        while True:
            seen = self._wheel._generation
            rec = self.record
            if rec.status in TERMINAL:
                return _outcome_of(rec)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"task {self.id} is still {rec.status} after {timeout:g}s")
            # Woken at once by this process's boss; tasks run by another process are polled.
            self._wheel._wait_change(seen, poll if remaining is None else min(poll, remaining))
            poll = min(poll * 2, 0.25)

    async def aresult(self, timeout: Optional[float] = None) -> Any:
        """Like :meth:`result`, for ``await`` in an event loop: it never blocks the loop."""
        import asyncio
        timeout = _optional(timeout, "timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.005
        loop = asyncio.get_running_loop()
        while True:
            # Off the loop: a read can wait behind this process's writer, which may itself be
            # waiting (up to busy_timeout) for another process's write lock.
            rec = await loop.run_in_executor(None, lambda: self.record)
            if rec.status in TERMINAL:
                return _outcome_of(rec)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"task {self.id} is still {rec.status} after {timeout:g}s")
            await asyncio.sleep(poll if remaining is None else min(poll, remaining))
            poll = min(poll * 2, 0.1)


def _plain_arity(sig: Optional[inspect.Signature]) -> Optional[tuple[int, int]]:
    """(required, total) positional parameters when they are all a function has, so that
    delay(*args) can be checked by counting; None sends every call through Signature.bind."""
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return None
    return sum(p.default is p.empty for p in params), len(params)


def _outcome_of(rec: TaskRecord) -> Any:
    if rec.status == SUCCEEDED:
        return None if rec.result is None else pickle.loads(rec.result)
    raise TaskFailed(rec.id, rec.status, rec.error, rec.traceback)


class Task(Generic[R]):
    """A registered task function.  Calling it calls the function; ``.delay()`` schedules it."""

    def __init__(self, wheel: "TimeWheel", fn: Callable[..., R], name: str, retries: int,
                 retry_delay: float, misfire_grace: Optional[float]) -> None:
        self.timewheel = wheel
        self.fn = fn
        self.name = name
        self.retries = retries
        self.retry_delay = retry_delay
        self.misfire_grace = misfire_grace
        try:
            self._signature: Optional[inspect.Signature] = inspect.signature(fn)
        except (TypeError, ValueError):   # some builtins have none; skip the check then
            self._signature = None
        self._arity = _plain_arity(self._signature)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def call_local(self, *args: Any, **kwargs: Any) -> R:
        """Run it here and now, bypassing the wheel."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, count_down: Optional[float] = None,
              eta: Optional[Union[_dt.datetime, float]] = None, **kwargs: Any) -> TaskHandle:
        """Schedule ``fn(*args, **kwargs)`` to run ``count_down`` seconds from now (default 0)
        or at ``eta`` (a datetime; naive means local time).

        Returns once the task is committed to the store (inside ``with hu.batch()``: once the
        batch is).  Bad timing options, arguments that do not fit the function, or arguments
        that cannot be pickled raise ``ValueError``/``TypeError`` and nothing is written.
        """
        return self.schedule(args, kwargs, count_down=count_down, eta=eta)

    def schedule(self, args: tuple = (), kwargs: Optional[dict] = None, *,
                 count_down: Optional[float] = None,
                 eta: Optional[Union[_dt.datetime, float]] = None,
                 misfire_grace: Any = ...) -> TaskHandle:
        """Like :meth:`delay` with the arguments given explicitly, so they may be named
        ``count_down`` or ``eta`` too, and with a per-call ``misfire_grace``."""
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, tuple):
            args = tuple(args)
        due = self.timewheel._eta(count_down, eta)
        arity = self._arity
        if self._signature is not None and not (
                arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]):
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.name}: {exc}") from None
        try:
            payload = pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"{self.name}: arguments cannot be serialised with pickle "
                            f"({exc.__class__.__name__}: {exc})") from None
        grace = (self.misfire_grace if misfire_grace is ...
                 else _optional(misfire_grace, "misfire_grace"))
        rec = TaskRecord(id=_ids.new(), name=self.name, eta=due, payload=payload,
                         created=self.timewheel.clock(), retries=self.retries,
                         retry_delay=self.retry_delay, misfire_grace=grace)
        return self.timewheel._submit(rec)


class TimeWheel:
    """An embedded, persistent delayed-task scheduler.

    :param path: the store file (created mode 0600).  ``None`` keeps tasks in memory only.
    :param workers: threads running tasks in this process.
    :param tick: seconds per wheel slot.  :param slots: slots in the ring.  Both are fixed
        when the store is created.
    :param result_ttl: seconds results and errors are kept after a task ends.
    :param misfire_grace: default for tasks: skip (status ``misfired``) rather than start
        more than this many seconds late.  ``None``: always run, however late.
    :param immediate: run ``delay()`` inline, synchronously, in memory -- for test suites.
    :param busy_timeout: seconds a write waits for another process before ``StoreBusy``.
    :param prefetch: claimed tasks that may wait for a free worker (default ``max(64, 4 * workers)``).
    :param clock: returns unix time; inject a fake one in tests.
    :param max_crashes: a task whose process died this many times while running it is failed.
    :param lookahead: ticks loaded into memory at once (each load is one write).
    :param exit_grace: at interpreter exit a started wheel stops, waiting this many seconds
        for running tasks; those still running after it run again at the next start.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]", None] = "tasks.db", workers: int = 4, *,
                 tick: float = 1.0, slots: int = 3600, result_ttl: float = 7 * 86400.0,
                 misfire_grace: Optional[float] = None, immediate: bool = False,
                 busy_timeout: float = 10.0, prefetch: Optional[int] = None,
                 clock: Callable[[], float] = time.time, max_crashes: int = 3,
                 late_poll: float = 0.2, exit_grace: float = 5.0, lookahead: int = 4) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        self.wheel = Wheel(slots=slots, tick=tick)
        self.path = None if path is None else os.path.abspath(os.fspath(path))
        self.workers = workers
        self.result_ttl = _number(result_ttl, "result_ttl")
        self.misfire_grace = _optional(misfire_grace, "misfire_grace")
        self.immediate = immediate
        self.busy_timeout = _number(busy_timeout, "busy_timeout")
        self.prefetch = max(64, 4 * workers) if prefetch is None else prefetch
        self.clock = clock
        self.max_crashes = max_crashes
        self.late_poll = late_poll
        self.exit_grace = _number(exit_grace, "exit_grace")
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
            raise ValueError(f"lookahead must be a positive int, got {lookahead!r}")
        self.lookahead = lookahead
        self._registry: dict[str, Task[Any]] = {}
        self._store: Optional[WheelStore] = None
        self._store_lock = threading.Lock()
        self._locks: Optional[ProcessLocks] = None
        self._boss: Optional[Boss] = None
        self._pool: Optional[WorkerPool] = None
        self._start_lock = threading.RLock()
        self._batch = threading.local()
        self._changed = threading.Condition()
        self._generation = 0
        #: called (in order) by start() once the boss runs; periodic schedules hook in here
        self._start_hooks: list[Callable[[], None]] = []
        _instances.add(self)

    def __repr__(self) -> str:
        return f"<TimeWheel {self.path or 'memory'} workers={self.workers}>"

    # -- the store (opened lazily, so nothing -- no thread -- starts in a pre-fork master) ----
    @property
    def store(self) -> WheelStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    if self.immediate or self.path is None:
                        self._store = MemoryStore(self.wheel, now=self.clock(),
                                                  result_ttl=self.result_ttl)
                    else:
                        self._store = SqliteDictStore(self.path, self.wheel,
                                                      busy_timeout=self.busy_timeout,
                                                      result_ttl=self.result_ttl, now=self.clock())
        return self._store

    # -- registering ----------------------------------------------------------------------
    @overload
    def task(self, fn: F) -> "Task[Any]": ...
    @overload
    def task(self, *, name: Optional[str] = None, retries: int = 0, retry_delay: float = 1.0,
             misfire_grace: Any = ...) -> Callable[[F], "Task[Any]"]: ...

    def task(self, fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
             retries: int = 0, retry_delay: float = 1.0, misfire_grace: Any = ...) -> Any:
        """Register a function as a task: ``@hu.task()`` or ``@hu.task(retries=3, ...)``.

        ``retries``: extra attempts after a failure (at most ``retries + 1`` calls); attempt
        ``n`` waits ``retry_delay * 2 ** (n - 1)`` seconds (capped at 6 h) after failure ``n``.
        ``name`` defaults to ``module.qualname`` and must be the same in every process.
        """
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        delay_s = _seconds(retry_delay, "retry_delay")
        grace = (self.misfire_grace if misfire_grace is ...
                 else _optional(misfire_grace, "misfire_grace"))

        def register(f: Callable[..., Any]) -> Task[Any]:
            if not callable(f):
                raise TypeError(f"@task needs a function, got {type(f).__name__} {f!r}")
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            if not isinstance(task_name, str) or not task_name:
                raise ValueError(f"task name must be a non-empty str, got {task_name!r}")
            old = self._registry.get(task_name)
            if old is not None and old.fn is not f and (
                    getattr(old.fn, "__code__", None) is not getattr(f, "__code__", None)):
                raise ValueError(f"another function is already registered as task {task_name!r}")
            t: Task[Any] = Task(self, f, task_name, retries, delay_s, grace)
            self._registry[task_name] = t
            return t

        if fn is not None:
            return register(fn)
        return register

    def periodic(self, *, every: Any = None, cron: Optional[str] = None, tz: Optional[str] = None,
                 name: Optional[str] = None, **options: Any) -> Callable[[F], "Task[Any]"]:
        """Register a recurring task: ``@hu.periodic(every=900)`` or
        ``@hu.periodic(cron="0 3 * * *", tz="Europe/Berlin")``.  See :mod:`timewheel.periodic`."""
        from .periodic import periodic
        return periodic(self, every=every, cron=cron, tz=tz, name=name, **options)

    @property
    def tasks(self) -> dict[str, "Task[Any]"]:
        """The registered tasks by name."""
        return dict(self._registry)

    # -- scheduling -----------------------------------------------------------------------
    def _eta(self, count_down: Any, eta: Any) -> float:
        if count_down is not None and eta is not None:
            raise ValueError("give count_down or eta, not both")
        if eta is None:
            return self.clock() + (_optional(count_down, "count_down") or 0.0)
        if isinstance(eta, _dt.datetime):
            when = eta.timestamp()        # naive datetimes are local time, as documented
        elif isinstance(eta, (int, float)) and not isinstance(eta, bool):
            when = float(eta)
        else:
            raise TypeError(f"eta must be a datetime or unix seconds, got {type(eta).__name__} {eta!r}")
        if not (math.isfinite(when) and 0 <= when <= _MAX_ETA):
            raise ValueError(f"eta {eta!r} is outside 1970..9999")
        return when

    def _submit(self, rec: TaskRecord) -> TaskHandle:
        pending = getattr(self._batch, "records", None)
        if pending is not None:
            pending.append(rec)
            return TaskHandle(self, rec.id)
        self.store.add([rec])
        if self.immediate:
            self._run_inline(rec)
        else:
            self._notify_boss([rec])
        return TaskHandle(self, rec.id)

    def _notify_boss(self, recs: list[TaskRecord]) -> None:
        boss = self._boss
        if boss is not None:
            for rec in recs:
                boss.notify(Due(rec.eta, rec.id))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Enqueue many tasks with one commit: every ``delay()`` in the block is written when
        the block ends, all or none.  If the block raises, nothing is written."""
        if getattr(self._batch, "records", None) is not None:   # nested: the outer one commits
            yield
            return
        self._batch.records = []
        try:
            yield
            recs = self._batch.records
        finally:
            self._batch.records = None
        self.store.add(recs)
        if self.immediate:
            for rec in recs:
                self._run_inline(rec)
        else:
            self._notify_boss(recs)

    def get(self, task_id: str) -> TaskHandle:
        """A handle for a task id (from another process, or from before a restart)."""
        h = TaskHandle(self, task_id)
        _ = h.record   # raises TaskNotFound now rather than at first use
        return h

    def cancel(self, task_id: str) -> bool:
        return TaskHandle(self, task_id).cancel()

    def retry(self, task_id: str) -> bool:
        """Put a failed, misfired or cancelled task back as pending, due now, with its full
        retry budget.  False if it is not in one of those states."""
        ok = self.store.retry(task_id, self.clock())
        if ok:
            rec = self.store.get(task_id)
            if rec is not None:
                self._notify_boss([rec])
        return ok

    # -- running --------------------------------------------------------------------------
    def _execute(self, rec: TaskRecord) -> Outcome:
        started = self.clock()
        out = self._call(rec)
        out.started = started
        return out

    def _call(self, rec: TaskRecord) -> Outcome:
        task = self._registry.get(rec.name)
        if task is None:
            log.error("task %s: %r is not registered in this process; left failed", rec.id, rec.name)
            return Outcome(rec.id, False, error=(
                f"task {rec.name!r} is not registered in process {os.getpid()}; "
                "register it and retry the task"), finished=self.clock())
        try:
            args, kwargs = pickle.loads(rec.payload)
        except Exception as exc:
            log.error("task %s (%s): cannot decode its arguments: %s", rec.id, rec.name, exc)
            return Outcome(rec.id, False, error=f"cannot decode its arguments: "
                           f"{exc.__class__.__name__}: {exc}", traceback=_traceback.format_exc(),
                           finished=self.clock())
        try:
            value = task.fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = run_coroutine(value)
            result = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:   # a task's SystemExit must not kill the worker either
            now = self.clock()
            error = f"{exc.__class__.__name__}: {exc}"
            retry_at = None
            if rec.attempts <= rec.retries:
                retry_at = now + retry_backoff(rec.retry_delay, rec.attempts)
                log.warning("task %s (%s) failed, attempt %d of %d, retrying in %.3gs: %s",
                            rec.id, rec.name, rec.attempts, rec.retries + 1, retry_at - now, error)
            else:
                log.error("task %s (%s) failed after %d attempt(s): %s",
                          rec.id, rec.name, rec.attempts, error)
            return Outcome(rec.id, False, error=error, traceback=_traceback.format_exc(),
                           retry_at=retry_at, finished=now)
        return Outcome(rec.id, True, result=result, finished=self.clock())

    def _run_inline(self, rec: TaskRecord) -> None:
        """immediate=True: claim, run and record right here, retries included."""
        due = Due(rec.eta, rec.id)
        while True:
            claim = self.store.claim([due], "immediate", max(self.clock(), due.eta), starting=1)
            if not claim.run:
                break
            again = self.store.finish([self._execute(claim.run[0])])
            if not again:
                break
            due = again[0]
        self._changed_notify()

    def _changed_notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _wait_change(self, seen: int, timeout: float) -> None:
        with self._changed:
            if self._generation == seen:
                self._changed.wait(timeout)

    def start(self) -> "TimeWheel":
        """Start ticking and working in this process (idempotent, thread-safe; call it lazily
        from a request handler or after fork, never in a pre-fork master).  Returns self."""
        if self.immediate:
            return self
        with self._start_lock:
            if self._boss is not None:
                return self
            store = self.store
            self._locks = self._locks or locks_for(store.path)
            boss_ref: list[Boss] = []
            pool = WorkerPool(self.workers, self._execute, lambda out: boss_ref[0].report(out))
            boss = Boss(store, self._locks, pool, capacity=self.workers + self.prefetch,
                        clock=self.clock, late_poll=self.late_poll, max_crashes=self.max_crashes,
                        purge_every=min(60.0, max(1.0, self.result_ttl / 10)),
                        lookahead=self.lookahead,
                        on_change=self._changed_notify)
            boss_ref.append(boss)
            self._pool, self._boss = pool, boss
            for hook in self._start_hooks:      # before the boss can claim anything
                hook()
            pool.start()
            boss.start()
            log.info("started %s", self)
        return self

    def stop(self, wait: bool = True, timeout: Optional[float] = None) -> Stopped:
        """Stop ticking.  ``wait``: first let running tasks finish (up to ``timeout`` s) and
        record their results; otherwise they finish in the background.  Pending tasks stay in
        the store and run after the next ``start()`` here or in another process."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unfinished = 0
        with self._start_lock:
            boss, pool = self._boss, self._pool
            self._boss = self._pool = None
            if boss is not None and pool is not None:
                boss.stop(wait=wait, timeout=timeout)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                pool.stop(wait=wait, timeout=remaining)
                unfinished = boss.inflight
                log.info("stopped %s", self)
        counts = self.store.counts()
        return Stopped(counts[PENDING], counts["running"], unfinished)

    @property
    def running(self) -> bool:
        return self._boss is not None

    @property
    def is_leader(self) -> bool:
        """True while this process is the one ticking the store."""
        boss = self._boss
        return boss is not None and boss.loaded_through is not None

    def close(self) -> None:
        """Stop (waiting) and release the store."""
        self.stop(wait=True)
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "TimeWheel":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop(wait=True)

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork: forget the parent's boss and pool (a child starts its
        # own with start()).  The store reopens itself on first use in the new pid.
        self._boss = self._pool = None
        self._start_lock = threading.RLock()
        self._store_lock = threading.Lock()
        self._changed = threading.Condition()


def _after_fork_in_child() -> None:
    for hu in list(_instances):
        hu._after_fork_in_child()


def _stop_all_at_exit() -> None:
    # Workers are daemon threads: without this, tasks still running at exit would die
    # mid-run and run again after the next start, and finished ones might go unrecorded.
    for hu in list(_instances):
        if hu.running:
            try:
                hu.stop(wait=True, timeout=hu.exit_grace)
            except Exception:
                log.exception("stopping %s at exit failed", hu)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
