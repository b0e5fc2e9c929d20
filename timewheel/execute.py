"""Running one claimed task: find its function, decode its arguments, call it, pickle what it
returned -- and never raise: every way a run can end becomes an :class:`~timewheel.records.Outcome`.

Shared by the worker pool and by ``immediate=True``.  Inside a run,
:func:`current_task` tells the task who it is (id, attempt, eta, fencing token).  A task's
``timeout`` is enforced here: an ``async def`` task is cancelled at its deadline; a sync task
gets :class:`~timewheel.errors.TaskTimeout` raised in its thread by a watchdog (this
interrupts Python code, not a C call that blocks: see docs/guide/time-limits.md).

An abort of a run (issue 23) arrives the same ways: the boss learns it from the store and calls
:func:`abort_run`; an ``async def`` task is cancelled, a sync one sees
``current_task().aborted`` become True (and ``check_aborted()`` raise
:class:`~timewheel.errors.TaskAborted`) -- it is asked, not interrupted, so that it stops where
its work is consistent.

``current_task().progress(done, total, note)`` only keeps the value with the run (about a
microsecond a call); the boss writes the latest of each run every :data:`PROGRESS_EVERY` at
most (:func:`unsent_progress`), and the last one goes with the run's outcome.
"""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import heapq
import inspect
import itertools
import logging
import os
import pickle
import sys
import threading
import time
import traceback as _traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn, Optional

from . import serialize, tracing
from .aio import run_coroutine
from .errors import Retry, TaskAborted, TaskTimeout
from .records import MAX_RECORD_BYTES, Outcome, TaskRecord, call_of, is_retryable, progress_value
from .tracing import API as _OTEL_API

__all__ = ["TaskContext", "current_task", "execute", "abort_run", "forget_run", "unsent_progress",
           "reports_progress", "PROGRESS_EVERY"]

#: the least seconds between two progress writes of one run (issue 23): at most 4 a second,
#: whatever the task does (and the boss looks that often while a run reports)
PROGRESS_EVERY = 0.25

log = logging.getLogger("timewheel.execute")


@dataclass(frozen=True)
class TaskContext:
    """Who the running task is.  ``fence`` is the claim's token: a store refuses an outcome
    recorded under an older one, so a task can tag its side effects with it."""

    id: str
    name: str
    attempt: int        #: 1 for the first run, 2 for the first retry, ...
    eta: float
    fence: int
    batch_id: Optional[str] = None      #: the batch it is a member of (issue 23)
    _wheel: Any = None
    _signal: "Optional[_Run]" = None

    @property
    def aborted(self) -> bool:
        """True once an abort of this run was asked for (``TaskHandle.abort()``): stop, and
        the run ends ``aborted`` (see :meth:`check_aborted`)."""
        return self._signal is not None and self._signal.event.is_set()

    def check_aborted(self) -> None:
        """Raise :class:`~timewheel.errors.TaskAborted` if an abort of this run was asked for:
        call it where stopping leaves things consistent.  The run ends ``aborted``, not retried."""
        if self.aborted:
            raise TaskAborted(f"task {self.id} was asked to abort")

    def progress(self, done: float, total: Optional[float] = None, note: str = "") -> None:
        """Report how far this run got: ``done`` units of ``total`` (if known), with a short
        ``note``.  Cheap -- call it as often as you like: the latest value is written a few
        times a second at most, and the last one with the run's outcome.  Read back by
        ``TaskHandle.progress``, ``timewheel show`` and the web view."""
        value = progress_value(done, total, note, time.time())
        run = self._signal
        if run is not None:
            run.progress = value
            run.unsent = True

    @property
    def batch(self) -> Any:
        """The :class:`~timewheel.BatchHandle` of the batch this task is a member of (None if
        none): ``current_task().batch.add(task, ...)`` adds a member before it completes."""
        if self.batch_id is None or self._wheel is None:
            return None
        from .batch_api import BatchHandle
        return BatchHandle(self._wheel, self.batch_id)

    def retry(self, message: Optional[str] = None, *, count_down: Optional[float] = None,
              eta: Optional[float] = None, max_retries: Optional[int] = None) -> NoReturn:
        """Ask for a retry: raises :class:`~timewheel.errors.Retry` with these arguments."""
        raise Retry(message, count_down=count_down, eta=eta, max_retries=max_retries)


_current: "contextvars.ContextVar[Optional[TaskContext]]" = contextvars.ContextVar(
    "timewheel_current_task", default=None)


def current_task() -> Optional[TaskContext]:
    """The task running in this thread or coroutine, or None outside a task."""
    return _current.get()


class _Run:
    """What passes between a run and the boss: an abort asked for (set by the boss's thread,
    read by the task's), and the run's latest progress (the reverse)."""

    __slots__ = ("event", "_cancel", "progress", "unsent", "sent_at")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._cancel: Optional[Callable[[], Any]] = None
        self.progress: Optional[tuple[Any, ...]] = None
        self.unsent = False
        self.sent_at = -PROGRESS_EVERY

    def set(self) -> None:
        self.event.set()
        cancel = self._cancel
        if cancel is not None:
            cancel()

    def on_set(self, cancel: Callable[[], Any]) -> None:
        """Call ``cancel`` when set (now, if it is): an async run's cancellation.  (Set and
        registered at once from two threads, ``cancel`` may run twice: it is idempotent.)"""
        self._cancel = cancel
        if self.event.is_set():
            cancel()


_signals: dict[tuple[str, int], _Run] = {}
_signals_lock = threading.Lock()


def _signal_for(task_id: str, fence: int) -> _Run:
    with _signals_lock:
        sig = _signals.get((task_id, fence))
        if sig is None:
            sig = _signals[(task_id, fence)] = _Run()
        return sig


def reports_progress(task_id: str, fence: int) -> bool:
    """Whether the run ``fence`` of ``task_id`` has reported progress (its boss then looks
    every :data:`PROGRESS_EVERY` for a value to write)."""
    run = _signals.get((task_id, fence))
    return run is not None and run.progress is not None


def unsent_progress(task_id: str, fence: int) -> Optional[tuple[Any, ...]]:
    """The latest progress of the run ``fence`` of ``task_id`` not written yet, if its write
    may go now (:data:`PROGRESS_EVERY` since the last one), marked written; else None."""
    run = _signals.get((task_id, fence))
    if run is None or not run.unsent:
        return None
    now = time.monotonic()
    if now - run.sent_at < PROGRESS_EVERY:
        return None
    run.unsent, run.sent_at = False, now
    return run.progress


def abort_run(task_id: str, fence: int) -> None:
    """Tell the run ``fence`` of ``task_id`` in this process to stop (a run not started yet
    ends at once when a worker takes it)."""
    _signal_for(task_id, fence).set()


def forget_run(task_id: str, fence: int) -> None:
    """The run's outcome is recorded: drop its signal."""
    with _signals_lock:
        _signals.pop((task_id, fence), None)


def execute(registry: Mapping[str, Any], rec: TaskRecord, clock: Callable[[], float]) -> Outcome:
    """Run ``rec`` (claimed, RUNNING) with the function registered under its name; its last
    progress, if it reported any, goes with the outcome."""
    run = _signal_for(rec.id, rec.rev)
    try:
        out = _execute(registry, rec, clock, run)
    finally:
        forget_run(rec.id, rec.rev)
    return out if run.progress is None else dataclasses.replace(out, progress=run.progress)


def _execute(registry: Mapping[str, Any], rec: TaskRecord, clock: Callable[[], float],
             signal: _Run) -> Outcome:
    started = clock()

    def failed(error: str, tb: Optional[str] = None, retryable: bool = True,
               exc: Optional[BaseException] = None) -> Outcome:
        return Outcome(ok=False, started=started, finished=clock(), error=error, traceback=tb,
                       retryable=retryable, exception=exc)

    task = registry.get(rec.name)
    if task is None:
        log.error("task %s: %r is not registered in this process; failed", rec.id, rec.name)
        return failed(f"task {rec.name!r} is not registered in process {os.getpid()}; "
                      "register it and retry the task", retryable=False)
    try:
        args, kwargs, traced = _arguments(task, rec.payload)
        if rec.takes_result:                 # h.then(task, ...): h's result comes first (issue 23)
            args = (_result_given(task, rec.given), *args)
    except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it is this task's failure
        log.error("task %s (%s): cannot decode its arguments: %s", rec.id, rec.name, exc)
        return failed(f"cannot decode its arguments: {exc.__class__.__name__}: {exc}",
                      _traceback.format_exc(), retryable=False, exc=exc)
    if signal.event.is_set():
        return failed("TaskAborted: aborted before it started", retryable=False)
    token = _current.set(TaskContext(rec.id, rec.name, rec.attempts, rec.eta, rec.rev, rec.batch,
                                     None if rec.batch is None else getattr(task, "timewheel", None),
                                     signal))
    try:
        if _OTEL_API in sys.modules:        # the application uses OpenTelemetry: a span
            value = tracing.run_in_span(rec, traced, started,
                                        lambda: _call(task.fn, args, kwargs, rec.timeout, signal))
        else:
            value = _call(task.fn, args, kwargs, rec.timeout, signal)
    except Retry as exc:           # the task asked: whatever retry_on says
        finished = clock()
        error = f"Retry: {exc}" + ("" if exc.__cause__ is None else
                                   f" (after {exc.__cause__.__class__.__name__}: {exc.__cause__})")
        log.info("task %s (%s), attempt %d: %s", rec.id, rec.name, rec.attempts, error)
        return Outcome(ok=False, started=started, finished=finished, error=error,
                       traceback=_traceback.format_exc(), exception=exc, jitter=task.retry_jitter,
                       retry_at=exc.due(finished), max_retries=exc.max_retries)
    except BaseException as exc:   # a task's SystemExit must not kill the worker either
        error = f"{exc.__class__.__name__}: {exc}"
        if signal.event.is_set():      # whatever it raised (TaskAborted, a cancellation): no retry
            log.info("task %s (%s), attempt %d, aborted as asked: %s", rec.id, rec.name, rec.attempts, error)
            return Outcome(ok=False, started=started, finished=clock(), error=error,
                           traceback=_traceback.format_exc(), retryable=False, exception=exc)
        retryable = is_retryable(exc, task.retry_on, task.dont_retry_on)
        log.warning("task %s (%s) failed, attempt %d of %d%s: %s", rec.id, rec.name, rec.attempts,
                    rec.retries + 1, "" if retryable else " (not retried: retry_on/dont_retry_on)",
                    error)
        return Outcome(ok=False, started=started, finished=clock(), error=error,
                       traceback=_traceback.format_exc(), retryable=retryable, exception=exc,
                       jitter=task.retry_jitter)
    finally:
        _current.reset(token)
    try:
        result = (serialize.dumps_result(value) if task.json
                  else pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:  # noqa: BLE001
        return failed(f"its return value cannot be {'written as JSON' if task.json else 'pickled'}: "
                      f"{exc.__class__.__name__}: {exc}", _traceback.format_exc(), retryable=False, exc=exc)
    if len(result) > MAX_RECORD_BYTES // 2:
        return failed(f"its return value is {len(result)} bytes serialised; the limit is "
                      f"{MAX_RECORD_BYTES // 2}", retryable=False)
    return Outcome(ok=True, started=started, finished=clock(), result=result)


def _result_given(task: Any, blob: Optional[bytes]) -> Any:
    """The dependency's result a ``then`` task was released with, decoded as its arguments are."""
    if blob is None:
        return None
    if serialize.is_json(blob):
        return serialize.loads_result(blob)
    if task.json:
        raise ValueError("the result it was given is a pickle; a serializer='json' wheel runs only JSON")
    return pickle.loads(blob)


def _arguments(task: Any, payload: bytes) -> tuple[Any, Any, Optional[dict[str, str]]]:
    """A payload's (args, kwargs, trace context): JSON or a pickle, whichever it is -- but a
    task of a ``serializer="json"`` wheel never unpickles one: whoever could write the store
    would run their code here (issue 26)."""
    if serialize.is_json(payload):
        return serialize.loads_traced(payload)
    if task.json:
        raise ValueError("its arguments are a pickle; a serializer='json' wheel runs only JSON payloads")
    return call_of(payload)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          timeout: Optional[float], signal: Optional[_Run] = None) -> Any:
    cancel_on = None if signal is None else signal.on_set
    if inspect.iscoroutinefunction(fn):
        return run_coroutine(fn(*args, **kwargs), timeout, cancel_on)
    if timeout is None:
        value = fn(*args, **kwargs)
    else:
        try:
            with _watchdog.guard(timeout):
                value = fn(*args, **kwargs)
        except TaskTimeout as exc:
            if exc.args:
                raise
            # The watchdog's bare exception went off on the way into the guard's __exit__.
            raise _timed_out(timeout, exc.__traceback__) from None
    if inspect.isawaitable(value):       # a sync function that returned a coroutine
        return run_coroutine(value, timeout, cancel_on)
    return value


def _timed_out(timeout: float, tb: Any) -> TaskTimeout:
    return TaskTimeout(f"did not finish within its timeout of {timeout:g}s").with_traceback(tb)


class _Watchdog:
    """Raises TaskTimeout in threads whose sync task ran past its deadline.

    One thread for the process, sleeping until the earliest deadline.  The exception is
    delivered by ``PyThreadState_SetAsyncExc``: the interpreter raises it at the thread's
    next bytecode, so a thread inside a blocking C call sees it only when the call returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []     # (deadline, seq, thread id)
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._pid = -1

    def guard(self, timeout: float) -> "_Guard":
        return _Guard(self, timeout)

    def _arm(self, timeout: float) -> int:
        seq = next(self._seq)
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._heap, self._live = [], set()
                self._thread = threading.Thread(target=self._run, name="timewheel-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + timeout, seq, threading.get_ident()))
            self._live.add(seq)
            self._lock.notify()
        return seq

    def _disarm(self, seq: int) -> bool:
        """Cancel deadline ``seq``; False if the watchdog already fired for it."""
        with self._lock:
            if seq in self._live:
                self._live.discard(seq)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, seq, ident = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._lock.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(seq)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                           ctypes.py_object(TaskTimeout))


class _Guard:
    """The deadline of one sync run.  Once the watchdog has fired for it, the run is a
    timeout however it ends: the bare exception the watchdog raises gets its message here, a
    task that swallowed it still fails, and one that returned just as the watchdog fired has
    the pending exception withdrawn -- so it can never go off later, outside the run, in the
    worker's own code (which would leave the outcome unrecorded)."""

    def __init__(self, dog: _Watchdog, timeout: float) -> None:
        self._dog, self._timeout, self._seq = dog, timeout, -1

    def __enter__(self) -> None:
        self._seq = self._dog._arm(self._timeout)

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self._dog._disarm(self._seq):
            return                                        # the deadline had not passed
        # Fired: if the exception is still pending (the task returned, or raised something
        # else, just then), withdraw it (NULL clears it) rather than let it land later.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        raise _timed_out(self._timeout, tb if exc_type is TaskTimeout else None)


_watchdog = _Watchdog()
