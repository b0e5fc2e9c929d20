"""The public API: :class:`TimeWheel`, the ``@hu.task()`` decorator and task handles.

A task's way: ``delay()`` validates and builds a :class:`~timewheel.records.TaskRecord` and
adds it to the store (:mod:`timewheel.store`); a started wheel's boss (:mod:`timewheel.boss`)
claims it once due and hands it to a worker, which runs it (:mod:`timewheel.execute`); the
boss records the outcome through :func:`~timewheel.records.end_run`; the handle reads it.
"""

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
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Coroutine,
    Generic,
    Iterable,
    Iterator,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
    cast,
    overload,
)

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:                                   # typing_extensions: a dependency on 3.9 only
    from typing_extensions import ParamSpec

from . import deps, flow, inbox, serialize, tracing
from .backoff import backoff
from .boss import Boss, Health
from .errors import DuplicateTask, StoreBusy, TaskFailed, TaskNotFound, shown
from .execute import execute
from .hooks import Hooks
from .pool import WorkerPool
from .records import (
    MAX_ETA,
    MAX_RECORD_BYTES,
    PENDING,
    PLAIN_REST,
    RETRYABLE,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Progress,
    TaskRecord,
    cancel,
    end_run,
    new_task,
    reset_for_retry,
)
from .store import MemoryStore, WheelStore, is_url, open_store
from .store.connection import DURABILITY
from .store.rules import claimed, outcome_event
from .tracing import API as _OTEL_API
from .wheel import Wheel

if TYPE_CHECKING:
    from .batch_api import BatchHandle

__all__ = ["TimeWheel", "Task", "TaskHandle", "Delayed", "Stopped", "EVENTS"]

log = logging.getLogger("timewheel")
log.addHandler(logging.NullHandler())     # a library prints nothing unless the app says so

#: typed tasks (issue 24): a task is ``Task[P, R]``, P the function's parameters and R what it
#: returns; its handles are ``TaskHandle[T]``, T what ``result()`` gives (R, or what R awaits)
P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)     # covariant: Task[P, CoroutineType[..]] is a Task[P, Coroutine[..]]
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
#: what ``hu.on()`` accepts: a task changed state (the change is durable when hooks run)
EVENTS = ("started", "succeeded", "failed", "retrying", "misfired", "aborted")
_instances: "weakref.WeakSet[TimeWheel]" = weakref.WeakSet()
#: the adders of the ``hu.using(connection)`` blocks open in this context, by id of their wheel
_USING: "ContextVar[Optional[dict[int, Any]]]" = ContextVar("timewheel_using", default=None)


class Stopped(NamedTuple):
    """What :meth:`TimeWheel.stop` left behind in the store."""

    pending: int     #: tasks still waiting for their eta (they run after the next start)
    running: int     #: tasks claimed and not finished, by any process
    unfinished: int  #: of those, claimed by this wheel and still running when stop() returned


class _Ids:
    """Unique task ids, cheaply: a random per-process prefix plus a counter.  A forked child
    draws a new prefix (see _after_fork_in_child), so it never repeats its parent's ids."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def new(self) -> str:
        return "%s%08x" % (self._prefix, next(self._count))     # faster than an f-string's {:08x}


_ids = _Ids()


class _Local(threading.local):
    batch: "Optional[_Batch]" = None      #: this thread's open batch


class _Batch:
    """The records of an open ``with hu.batch():`` block, written when it ends; with a
    ``batch_id``, those of members of that batch (issue 23)."""

    __slots__ = ("records", "existing", "now", "batch_id")

    def __init__(self, now: float, batch_id: Optional[str] = None) -> None:
        self.records: list[TaskRecord] = []
        self.existing = "fail"
        self.now = now                   #: the ``created`` time of every task in it
        self.batch_id = batch_id

    def add(self, rec: TaskRecord, existing: str) -> None:
        if self.batch_id is not None:
            if existing != "fail":
                raise ValueError(f"a member of batch {self.batch_id} is a new task: existing= (or once=) "
                                 "cannot be used for it")
            rec = rec._replace(batch=self.batch_id)
        elif existing != "fail":
            if self.existing not in ("fail", existing):
                raise ValueError(f"one batch cannot mix task_id policies ({self.existing} and {existing})")
            self.existing = existing
        self.records.append(rec)


def _number(value: Any, what: str, *, minimum: float = 0.0, maximum: float = MAX_ETA) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__} {shown(value)}")
    # Compared before float(): an int beyond any float is out of bounds, not an OverflowError.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {shown(value)}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum:g}, got {shown(value)}")
    if value > maximum:
        raise ValueError(f"{what} must be <= {maximum:.6g}, got {shown(value)}")
    return float(value)


def _seconds(value: Any, what: str, **bounds: float) -> float:
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    return _number(value, what, **bounds)


def _optional(value: Any, what: str, **bounds: float) -> Optional[float]:
    return None if value is None else _seconds(value, what, **bounds)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {shown(value)}")
    return value


def _exception_types(value: Any, what: str) -> tuple[type[BaseException], ...]:
    """``retry_on=`` / ``dont_retry_on=``: an exception class or a tuple (or list) of them."""
    types = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"{what} takes exception classes, got {shown(t)}")
    return types


def _retry_rules(retry_on: Any, dont_retry_on: Any, retry_jitter: Any,
                 default_jitter: bool) -> tuple[Any, ...]:
    """``@task()``'s retry rules, checked: (retry_on, dont_retry_on, retry_jitter)."""
    return (_exception_types(retry_on, "retry_on"), _exception_types(dont_retry_on, "dont_retry_on"),
            default_jitter if retry_jitter is None else _flag(retry_jitter, "retry_jitter"))


def _label(value: Any, what: str, limit: int) -> str:
    """A task name or id: a non-empty printable str of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__} {shown(value)}")
    if not value or len(value) > limit or not value.isprintable() or value != value.strip():
        text = value if len(value) <= 60 else value[:57] + "..."
        raise ValueError(f"{what} must be 1 to {limit} printable characters without surrounding "
                         f"spaces, got {str.__repr__(text)}")
    return value


def _durable(value: Any, url: Optional[str]) -> str:
    """TimeWheel's ``durability``, checked: a server's is its own setting, not ours."""
    if value not in DURABILITY:
        raise ValueError(f"durability must be 'normal' or 'fsync', got {shown(value)}")
    if value != "normal" and url:
        raise ValueError(f"durability={value!r} is for a store file; a server's durability is its own "
                         "setting (Redis: appendfsync; PostgreSQL: fsync and synchronous_commit)")
    return str(value)


def _qualname(f: Callable[..., Any]) -> str:
    """The qualified name of a function, or the repr of a callable object (as stored task
    names have always been made); a repr that raises is a clear error."""
    qualname = getattr(f, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    try:
        return repr(f)
    except Exception:  # noqa: BLE001 - any object may come in
        raise TypeError(f"@task cannot name {shown(f)} (its repr raised): give it a name=") from None


def _storable_id(task_id: Any) -> bool:
    """Whether a task can be stored under ``task_id``, for lookups: an id that cannot is not
    found without asking the store.  Anything but a str is a TypeError."""
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, got {type(task_id).__name__} {shown(task_id)}")
    if not 0 < len(task_id) <= 200:
        return False
    return _encodable(task_id)      # a lone surrogate: no store can hold it


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TaskHandle(Generic[T_co]):
    """A task in the store, by id.  Cheap: it holds no state besides the id.  ``T_co`` is what
    :meth:`result` returns: the task function's return type (what it awaits, if async)."""

    __slots__ = ("id", "_wheel")

    def __init__(self, wheel: "TimeWheel", task_id: str) -> None:
        self.id = task_id
        self._wheel = wheel

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    @property
    def record(self) -> TaskRecord:
        """The stored record.  Raises :class:`TaskNotFound` once purged."""
        rec = self._wheel.store.get(self.id) if _storable_id(self.id) else None
        if rec is None:
            name = self.id if self.id.isprintable() else repr(self.id[:200])
            raise TaskNotFound(f"no task {name} in {self._wheel.store.location} "
                               "(never committed, or purged after its result TTL)")
        return rec

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``succeeded``, ``failed``, ``cancelled``, ``misfired`` or ``aborted``."""
        return self.record.status

    def cancel(self) -> bool:
        """True if the task was still pending and now never runs; False otherwise."""
        return self._wheel.cancel(self.id)

    def then(self, task: "Task[..., R]", *args: Any, **kwargs: Any) -> "TaskHandle[R]":
        """Schedule ``task(<this task's result>, *args, **kwargs)`` to run once this task has
        succeeded (cancelled, with the reason, if it does not): a dependent whose first
        argument is this task's stored result, copied in when it is released (issue 23).
        Chains: ``fetch.delay(url).then(parse).then(save)``."""
        if not isinstance(task, Task):
            raise TypeError(f"then() takes a task (@hu.task), got {shown(task)}")
        return task._enqueue(args, kwargs, None, None, ..., None, "fail", after=(self.id,), then=True)

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The ids of the tasks this one runs after (``depends_on=``, ``then``)."""
        return self.record.depends_on

    @property
    def progress(self) -> Optional[Progress]:
        """The last progress its run reported (``current_task().progress(...)``): ``done``,
        ``total``, ``note`` and ``at`` (when, unix seconds); None if it reported none.  While it
        runs, the latest written (about every 0.25 s); once it finished, its last one."""
        value = self.record.progress
        return None if value is None else Progress._make(value)

    def abort(self) -> bool:
        """Stop the task: cancel it if pending; if running, ask the process running it (any
        process, any host) to stop it -- it learns so within a tick: an ``async def`` task is
        cancelled, a sync one sees ``current_task().aborted``.  The run ends ``aborted``, not
        retried.  True if that was recorded; False for a finished or unknown task."""
        return self._wheel.abort(self.id)

    def result(self, timeout: Optional[float] = None) -> T_co:
        """Wait for the task to end and return its value.

        Raises :class:`TaskFailed` if it failed (after its retries), was cancelled or was
        skipped as misfired, and :class:`TimeoutError` if it is still unfinished after
        ``timeout`` seconds (``None``: wait as long as it takes).
        """
        patience = _Patience(self.id, _optional(timeout, "timeout"), most=0.25)
        while True:
            seen = self._wheel._generation
            rec = self.record
            if rec.status in TERMINAL:
                value: T_co = _outcome_of(rec, self._wheel.serializer)
                return value
            # Woken at once by this process's boss; tasks run by another process are polled.
            self._wheel._wait_change(seen, patience.pause(rec))

    async def aresult(self, timeout: Optional[float] = None) -> T_co:
        """Like :meth:`result`, for ``await`` in an event loop: it never blocks the loop."""
        import asyncio
        patience = _Patience(self.id, _optional(timeout, "timeout"), most=0.1)
        loop = asyncio.get_running_loop()
        while True:
            # Off the loop: a read can wait behind this process's writer, which may itself be
            # waiting (up to busy_timeout) for another process's write lock.
            rec = await loop.run_in_executor(None, lambda: self.record)
            if rec.status in TERMINAL:
                value: T_co = _outcome_of(rec, self._wheel.serializer)
                return value
            await asyncio.sleep(patience.pause(rec))


class _Patience:
    """How long a handle waits between looks at an unfinished task: a backoff from 5 ms to
    ``most``, cut to what is left of ``timeout`` (None: no limit), then TimeoutError."""

    def __init__(self, task_id: str, timeout: Optional[float], most: float) -> None:
        self._id = task_id
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._pauses = backoff(0.005, most)

    def pause(self, rec: TaskRecord) -> float:
        """Seconds to wait before the next look at ``rec``, still unfinished."""
        pause = next(self._pauses)
        if self._deadline is None:
            return pause
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"task {self._id} is still {rec.status} after {self._timeout:g}s")
        return min(pause, remaining)


#: delay()'s own options by their stem: lower case, without underscores (see _meant_option)
_OPTION_STEMS = {"countdown": "count_down", "eta": "eta", "taskid": "task_id"}
_UNITS = ("seconds", "secs", "sec", "s")


@functools.lru_cache(maxsize=4096)
def _meant_option(key: str) -> Optional[str]:
    """The option of delay() that keyword ``key`` misspells, or None (issue 19 item 12).

    A near miss is an option written with other case or underscores, perhaps with a unit
    (``countdown`` as Celery spells it, ``countDown``, ``count_down_s``, ``ETA``,
    ``eta_seconds``, ``taskId``): nobody names a parameter of their own so, and passed on to a
    task taking ``**kwargs`` it would silently run the task at once.  Names that are merely
    related (``id``, ``job_id``, ``delay``, ``expires``) are ordinary parameter names and are
    passed on.  Cached: the keywords of a code base are few (0.1 us a keyword when cached).
    """
    stem = key.lower().replace("_", "")
    for unit in _UNITS:
        if stem.endswith(unit) and stem[:-len(unit)] in _OPTION_STEMS:
            stem = stem[:-len(unit)]
            break
    option = _OPTION_STEMS.get(stem)
    return option if option != key else None


def _refuse_near_miss(task: str, key: str, option: str) -> None:
    raise TypeError(f"{task}: {key}= is not an option of delay(): did you mean {option}=? (a function "
                    f"with a parameter named {key} gets it through schedule(args, "
                    f"kwargs={{{str.__repr__(key)}: ...}}))")


def _plain_arity(sig: Optional[inspect.Signature]) -> Optional[tuple[int, int]]:
    """(required, total) positional parameters when they are all a function has, so that
    delay(*args) can be checked by counting; None sends every call through Signature.bind."""
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        return None
    return sum(p.default is p.empty for p in params), len(params)


def _added(stored: TaskRecord, rec: TaskRecord) -> bool:
    """Whether ``store.add`` stored ``rec`` (possibly as a replacement continuing an old
    record's rev) rather than keeping the task that had its id."""
    return stored is rec or stored._replace(rev=rec.rev) == rec


def _outcome_of(rec: TaskRecord, serializer: str) -> Any:
    if rec.status == SUCCEEDED:
        if rec.result is None:
            return None
        if serialize.is_json(rec.result):
            return serialize.loads_result(rec.result)
        if serializer == "json":        # unpickling what anyone wrote to the store runs their code
            raise TaskFailed(rec.id, rec.status, "its result is a pickle; a serializer='json' wheel "
                             "reads only JSON results")
        return pickle.loads(rec.result)
    raise TaskFailed(rec.id, rec.status, rec.error, rec.traceback)


class Task(Generic[P, R_co]):
    """A registered task function.  Calling it calls the function; ``.delay()`` schedules it.

    ``Task[P, R]``: type checkers (mypy, pyright) check ``delay()``, ``call_local()`` and
    calling it against the function's parameters ``P``, and type ``delay(...).result()`` as
    its return type ``R`` (for an ``async def``, what it awaits)."""

    def __init__(self, wheel: "TimeWheel", fn: Callable[P, R_co], name: str, retries: int,
                 retry_delay: float, misfire_grace: Optional[float], timeout: Optional[float],
                 flow_options: Optional[dict[str, Any]] = None) -> None:
        self.timewheel = wheel
        self.fn = fn
        self.name = name
        self.retries = retries
        self.retry_delay = retry_delay
        #: arguments and results as JSON (TimeWheel(serializer="json"))
        self.json = wheel.serializer == "json"
        self.misfire_grace = misfire_grace
        self.timeout = timeout
        try:
            self._signature: Optional[inspect.Signature] = inspect.signature(fn)
        except (TypeError, ValueError):   # some builtins have none; skip the check then
            self._signature = None
        self._arity = _plain_arity(self._signature)
        o = flow_options or {}
        #: the exceptions that use up a retry (empty: any), those that fail at once, and whether
        #: a retry waits a drawn fraction of its backoff (docs/guide/retries.md)
        self.retry_on, self.dont_retry_on, self.retry_jitter = o.get("rules", ((), (), True))
        #: flow control (issue 21): its queue, priority and limits
        self.queue: str = o.get("queue", flow.DEFAULT_QUEUE)
        self.priority: int = o.get("priority", 0)
        self._own = (o.get("concurrency"), o.get("rate"))
        self._shared: tuple[flow.SharedLimit, ...] = o.get("shared", ())
        key = o.get("key")
        self._key = None if key is None else flow.key_function(self._signature, key, name)
        # None: a plain task (records built as before); else the record's flow fields, or
        # None in them where each call works its limits out (a key=)
        self._flow: Optional[tuple[Any, ...]] = None
        if self.queue != flow.DEFAULT_QUEUE or self.priority or o.get("concurrency") or o.get("rate") \
                or self._shared:
            fixed = None if self._key else _plain(flow.task_limits(name, *self._own, self._shared, None))
            self._flow = (self.queue, self.priority, fixed, None, None)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        return self.fn(*args, **kwargs)

    def call_local(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run it here and now, bypassing the wheel."""
        return self.fn(*args, **kwargs)

    @overload
    def delay(self: "Task[P, Coroutine[Any, Any, T]]", *args: P.args,
              **kwargs: P.kwargs) -> TaskHandle[T]: ...
    @overload
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R_co]: ...

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[Any]:
        """Schedule ``fn(*args, **kwargs)`` to run now or, with the keyword options
        ``count_down`` (seconds from now, default 0) or ``eta`` (a datetime, naive meaning
        local time, or unix seconds), later; ``task_id`` names it (below).  The options are
        taken out of the keywords before the rest go to the function.

        Type checkers see only the function's parameters here (PEP 612 cannot add keywords
        to them): typed code writes the options through :meth:`options`,
        ``send_email.options(count_down=10).delay("a@b.c")``, which is the same call.

        ``task_id`` names the task: while a task with that id is pending or running, nothing
        is added and its handle is returned; once it has finished, the new task replaces it.

        Returns once the task is committed to the store (inside ``with hu.batch()``: once the
        batch is).  Bad timing options, arguments that do not fit the function, or arguments
        that cannot be pickled raise ``ValueError``/``TypeError`` and nothing is written.

        A keyword that misspells an option -- in other case or with other underscores, perhaps
        with a unit: ``countdown`` (Celery's), ``countDown``, ``count_down_s``, ``ETA``,
        ``eta_seconds``, ``taskId`` -- raises ``TypeError`` naming the option, even when the
        function takes ``**kwargs``; a function with a parameter of such a name gets it
        through :meth:`schedule` (``kwargs={"countdown": 30}``).
        """
        if not kwargs:
            return self._enqueue(args, kwargs, None, None, ..., None, "fail")
        given: dict[str, Any] = kwargs      # P.kwargs is a dict: the options come out of it
        pop = given.pop
        count_down, eta, task_id = pop("count_down", None), pop("eta", None), pop("task_id", None)
        for key in given:
            option = _meant_option(key)
            if option is not None:
                _refuse_near_miss(self.name, key, option)
        return self._enqueue(args, kwargs, count_down, eta, ..., task_id,
                             "fail" if task_id is None else "reuse")

    @overload
    def options(self: "Task[P, Coroutine[Any, Any, T]]", *, count_down: Optional[float] = None,
                eta: Optional[Union[_dt.datetime, float]] = None,
                task_id: Optional[str] = None, depends_on: Any = None) -> "Delayed[P, T]": ...
    @overload
    def options(self, *, count_down: Optional[float] = None, eta: Optional[Union[_dt.datetime, float]] = None,
                task_id: Optional[str] = None, depends_on: Any = None) -> "Delayed[P, R_co]": ...

    def options(self, *, count_down: Optional[float] = None, eta: Optional[Union[_dt.datetime, float]] = None,
                task_id: Optional[str] = None, depends_on: Any = None) -> "Delayed[P, Any]":
        """:meth:`delay` with these options, for type-checked code:
        ``send_email.options(count_down=10, task_id="welcome:7").delay("a@b.c", "hi")``.  The
        ``delay()`` it returns passes every keyword to the function (they may have any name).
        ``depends_on``: as :meth:`schedule`'s."""
        return Delayed(self, count_down, eta, task_id,
                       () if depends_on is None else deps.check_dependencies(depends_on))

    def schedule(self, args: Union[tuple[Any, ...], list[Any]] = (),
                 kwargs: Optional[dict[str, Any]] = None, *,
                 count_down: Optional[float] = None,
                 eta: Optional[Union[_dt.datetime, float]] = None,
                 misfire_grace: Any = ..., task_id: Optional[str] = None,
                 replace: bool = False, once: bool = False, connection: Any = None,
                 queue: Optional[str] = None, priority: Optional[int] = None,
                 debounce: Optional[float] = None, max_wait: Optional[float] = None,
                 depends_on: Any = None) -> TaskHandle[Any]:
        """Like :meth:`delay` with the arguments given explicitly (so they may have any name),
        and with a per-call ``misfire_grace``, ``queue`` and ``priority``.

        With ``task_id``: ``replace=True`` replaces a pending task of that id (new arguments
        and eta) in one atomic step (a running one raises :class:`DuplicateTask`);
        ``once=True`` adds nothing while any task of that id is stored, finished or not, so
        an id runs once until its record is purged (periodic occurrences use this).

        ``connection``: write the task through the application's own database connection, in
        its transaction, as :meth:`TimeWheel.using` does (a PostgreSQL store only).

        ``debounce=S`` (with ``task_id``): while the task of that id is pending, each call
        replaces its arguments and moves its eta to ``S`` seconds after the call, but never
        later than ``max_wait`` seconds after the first call of this run; a call while it
        runs leads to one more run after it (id ``<task_id>~next``), with the latest
        arguments.  The handle is the run the call went to.

        ``depends_on=[h1, h2]`` (handles or ids, issue 23): the task runs only once every one of
        them has succeeded and its own eta has passed; until then it waits, parked.  If one
        ends in any other final status (failed for good, cancelled, misfired) the task is
        cancelled, with the reason naming it -- as it is at once if one already has.  An id
        not in the store raises :class:`TaskNotFound` and nothing is written (inside
        ``hu.batch()``: the whole batch).  See docs/guide/dependencies.md.
        """
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple or list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"{self.name}: kwargs must be a dict, got {type(kwargs).__name__}")
        if replace and once:
            raise ValueError("replace=True and once=True contradict each other")
        if (replace or once) and task_id is None:
            raise ValueError("replace= and once= apply to a task_id you choose")
        options = None
        if queue is not None or priority is not None or debounce is not None or max_wait is not None:
            options = self._call_options(task_id, queue, priority, debounce, max_wait, replace or once,
                                         count_down, eta)
            if debounce is not None and connection is not None:
                raise ValueError("debounce= reads and writes the store itself; it takes no connection=")
        existing = ("fail" if task_id is None else "replace" if replace else "keep" if once
                    else "reuse")
        after = () if depends_on is None else deps.check_dependencies(depends_on)
        if after and options is not None and "debounce" in options:
            raise ValueError("debounce= and depends_on= cannot be combined")
        if after and replace:     # a pending task replaced could come to wait for its own dependents
            raise ValueError("replace=True and depends_on= cannot be combined (no cycle can be built)")
        return self._enqueue(tuple(args), kwargs or {}, count_down, eta, misfire_grace, task_id,
                             existing, options, connection, after)

    def _call_options(self, task_id: Optional[str], queue: Optional[str], priority: Optional[int],
                      debounce: Any, max_wait: Any, policy: bool, count_down: Any,
                      eta: Any) -> dict[str, Any]:
        """schedule()'s flow options, checked before anything is written."""
        out: dict[str, Any] = {
            "queue": self.queue if queue is None else flow.check_queue(queue),
            "priority": self.priority if priority is None else flow.check_priority(priority)}
        if max_wait is not None and debounce is None:
            raise ValueError("max_wait= applies to debounce=")
        if debounce is not None:
            if task_id is None:
                raise ValueError("debounce= needs the task_id whose calls it merges")
            if task_id.endswith(flow.FOLLOW_SUFFIX):
                raise ValueError(f"a debounced task_id must not end with {flow.FOLLOW_SUFFIX!r} "
                                 "(the id of the run after a running one)")
            if policy or count_down is not None or eta is not None:
                raise ValueError("debounce= sets the eta itself; it takes no count_down, eta, "
                                 "replace or once")
            if self.timewheel._local.batch is not None:
                raise ValueError("debounce= cannot be used inside hu.batch() (it reads what is stored)")
            out["debounce"] = flow.positive(debounce, "debounce")
            out["max_wait"] = None if max_wait is None else flow.positive(max_wait, "max_wait")
        return out

    def _limits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The limits of one call: fixed at decoration, or per its key."""
        if self._flow is None:
            return ()
        fixed: Optional[tuple[Any, ...]] = self._flow[2]
        if fixed is not None:
            return fixed
        try:
            key = self._key(args, kwargs)        # type: ignore[misc]
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        return _plain(flow.task_limits(self.name, *self._own, self._shared, key))

    def _enqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any], count_down: Any, eta: Any,
                 misfire_grace: Any, task_id: Optional[str], existing: str,
                 options: Optional[dict[str, Any]] = None,
                 connection: Any = None, after: tuple[str, ...] = (),
                 then: bool = False) -> TaskHandle[Any]:
        """What :meth:`delay` and :meth:`schedule` do once their own options are read: check
        the rest, build the record, and add it (or keep it for the open batch).  Positional,
        and without the checks ``delay(*args, **kwargs)`` makes true by construction: it runs
        once per task enqueued."""
        if task_id is not None:
            _label(task_id, "task_id", 200)
        due = self.timewheel._eta(count_down, eta)
        arity = self._arity
        if self._signature is not None and not (
                arity is not None and not kwargs and arity[0] <= len(args) + then <= arity[1]):
            try:
                self._signature.bind(*((None,) * then), *args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.name}: {exc}") from None
        try:
            # With OpenTelemetry in use, the enqueuing trace context goes along (records.call_of)
            traced = tracing.carried() if _OTEL_API in sys.modules else None
            payload = (serialize.dumps_call(args, kwargs, traced) if self.json
                       else pickle.dumps((args, kwargs) if traced is None else (args, kwargs, traced),
                                         pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            how = "JSON" if self.json else "pickle"
            raise TypeError(f"{self.name}: arguments cannot be serialised with {how} "
                            f"({exc.__class__.__name__}: {exc})") from None
        if len(payload) > MAX_RECORD_BYTES // 2:
            raise ValueError(f"{self.name}: arguments are {len(payload)} bytes pickled; the limit "
                             f"is {MAX_RECORD_BYTES // 2} (store large data elsewhere, pass a key)")
        grace = (self.misfire_grace if misfire_grace is ...
                 else _optional(misfire_grace, "misfire_grace"))
        hu = self.timewheel
        batch = hu._local.batch
        if self._flow is None and options is None:      # a plain task: the fast path
            rec = new_task(task_id or _ids.new(), self.name, due, payload,
                           hu.now() if batch is None else batch.now, self.retries, self.retry_delay,
                           grace, self.timeout)
        else:
            o = options or {}
            limits = self._limits(args, kwargs)
            if "debounce" in o:
                limits = limits + (tuple(flow.debounce_limit(task_id or "")),)
            if len(limits) > flow.MAX_LIMITS:
                raise ValueError(f"{self.name}: a task counts against at most {flow.MAX_LIMITS} limits")
            if not hu.store.flow_control:
                raise ValueError(f"{self.name}: {hu.location} does not enforce queues, priorities "
                                 "or limits (flow control) yet; nothing was written")
            rec = new_task(task_id or _ids.new(), self.name, due, payload,
                           hu.now() if batch is None else batch.now, self.retries, self.retry_delay,
                           grace, self.timeout,
                           (o.get("queue", self.queue), o.get("priority", self.priority), limits, None, None)
                           + PLAIN_REST[5:])
            if "debounce" in o:
                return hu._debounce(rec, o["debounce"], o["max_wait"])
        if after:
            if not hu.store.dependencies_kept:
                raise ValueError(f"{self.name}: {hu.location} keeps no dependencies (depends_on=, then()) "
                                 "yet; nothing was written")
            rec = rec._replace(depends_on=after, takes_result=then)
        if batch is None:
            return hu._submit(rec, existing, connection)
        if connection is not None:
            raise ValueError("connection= inside hu.batch(): open hu.using(connection) around the batch")
        batch.add(rec, existing)
        return TaskHandle(hu, rec.id)

    def _template(self, args: tuple[Any, ...]) -> TaskRecord:
        """The record ``delay(*args)`` would add now, without adding it (a batch's callback)."""
        hu = self.timewheel
        payload = (serialize.dumps_call(args, {}, None) if self.json
                   else pickle.dumps((args, {}), pickle.HIGHEST_PROTOCOL))
        rest = ("default", 0, (), None, None)
        if self._flow is not None:
            rest = (self.queue, self.priority, self._limits(args, {}), None, None)
        return new_task(_ids.new(), self.name, hu.now(), payload, hu.now(), self.retries, self.retry_delay,
                        None, self.timeout, rest + PLAIN_REST[5:])


def _inbox_builder(registry: "dict[str, Task[..., Any]]", clock: Callable[[], float]
                   ) -> Callable[[inbox.Entry], TaskRecord]:
    """What makes the record of an inbox entry (timewheel/inbox.py) in this process: as
    ``delay()`` without options makes it, from the task's declaration here -- an entry naming a
    task this process does not declare, or whose arguments do not fit it, is refused
    (InboxError), never added with options guessed."""
    def build(entry: inbox.Entry) -> TaskRecord:
        task = registry.get(entry.name)
        if task is None:
            raise inbox.InboxError(f"no task named {entry.name!r} is declared in the process that took "
                                   "the entry in (declare every task in every process)")
        args, kwargs = serialize.loads_call(entry.payload)
        if task._signature is not None:
            try:
                task._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise inbox.InboxError(f"its arguments do not fit {task.name}: {exc}") from None
        now = clock()
        rec = new_task(entry.id, task.name, now if entry.eta is None else entry.eta, entry.payload, now,
                       task.retries, task.retry_delay, task.misfire_grace, task.timeout)
        if task._flow is None:
            return rec
        try:
            limits = task._limits(tuple(args), kwargs)
        except Exception as exc:  # noqa: BLE001 - the application's key function
            raise inbox.InboxError(f"the limits of {task.name}: {exc.__class__.__name__}: {exc}") from None
        return rec._replace(queue=task.queue, priority=task.priority, limits=limits)
    return build


class Delayed(Generic[P, T_co]):
    """What :meth:`Task.options` returns: ``delay()`` with options set, checked by type checkers
    against the function's parameters (``T_co``: what the handle's ``result()`` returns)."""

    __slots__ = ("_task", "_count_down", "_eta", "_task_id", "_after")

    def __init__(self, task: "Task[P, Any]", count_down: Optional[float],
                 eta: Optional[Union[_dt.datetime, float]], task_id: Optional[str],
                 after: tuple[str, ...] = ()) -> None:
        self._task, self._count_down, self._eta, self._task_id = task, count_down, eta, task_id
        self._after = after

    def __repr__(self) -> str:
        return f"<Delayed {self._task.name}>"

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T_co]:
        """Schedule ``fn(*args, **kwargs)`` with the options (see :meth:`Task.delay`)."""
        return self._task._enqueue(args, kwargs, self._count_down, self._eta, ..., self._task_id,
                                   "fail" if self._task_id is None else "reuse", after=self._after)


def _plain(limits: tuple[Any, ...]) -> tuple[Any, ...]:
    """Limits as a record stores them: plain tuples (a pickle naming flow.Limit would be
    refused when read back: see records.decode_record)."""
    return tuple(tuple(lim) for lim in limits)


class _Batches:
    """``hu.batch()`` and ``hu.get_batch()``: what :class:`TimeWheel` does with many tasks at
    once (one commit; with callbacks, a batch: issue 23, see :mod:`timewheel.batch_api`)."""

    _local: _Local
    immediate: bool
    now: Callable[[], float]
    _adder: Callable[[], Any]
    _run_inline: Callable[[TaskRecord], None]

    @contextmanager
    def batch(self, *, on_complete: "Optional[Task[..., Any]]" = None,
              on_success: "Optional[Task[..., Any]]" = None, on_failure: "Optional[Task[..., Any]]" = None,
              batch_id: Optional[str] = None) -> Iterator[Any]:
        """Enqueue many tasks with one commit: every ``delay()`` in the block is written when
        the block ends, all or none; if it raises, nothing is.  Callbacks: see batch_api."""
        if on_complete or on_success or on_failure or batch_id is not None:
            from .batch_api import open_batch  # (it imports this module)
            hu = cast("TimeWheel", self)
            return (yield from open_batch(hu, batch_id, on_complete, on_success, on_failure))
        if self._local.batch is not None:          # nested: the outer one commits
            yield None
            return
        adder = self._adder()
        batch = self._local.batch = _Batch(self.now())
        try:
            yield
        finally:
            self._local.batch = None
        recs = batch.records
        stored = adder.add(recs, existing=batch.existing)
        if self.immediate:
            for rec, kept in zip(recs, stored):
                if _added(kept, rec):
                    self._run_inline(kept)

    def get_batch(self, batch_id: str) -> "BatchHandle":
        """A handle for a batch id (from another process, or from before a restart); raises
        :class:`BatchNotFound` for an unknown one (issue 23: see batch_api)."""
        from .batch_api import BatchHandle
        h = BatchHandle(cast("TimeWheel", self), batch_id)
        _ = h.state
        return h


class TimeWheel(_Batches):
    """An embedded, persistent delayed-task scheduler.

    :param path: the store: a file (created mode 0600), a ``redis://``, ``rediss://`` or
        ``unix://`` URL (``pip install 'timewheel[redis]'``), a PostgreSQL connection string
        (``postgresql://...``, ``postgres://...`` or libpq's ``host=... dbname=...``;
        ``pip install 'timewheel[postgres]'``), or ``None`` for memory only.
    :param workers: threads running tasks in this process.
    :param tick: seconds per wheel slot.  :param slots: slots in the ring.  Both are fixed
        when the store is created.
    :param result_ttl: seconds results and errors are kept after a task ends.
    :param misfire_grace: default for tasks: skip (status ``misfired``) rather than start
        more than this many seconds late.  ``None``: always run, however late.
    :param timeout: default for tasks: seconds a run may take (``None``: no limit).
    :param immediate: run ``delay()`` inline, synchronously, in memory -- for test suites.
    :param busy_timeout: seconds a write waits for another process before ``StoreBusy``.
    :param durability: ``"fsync"``: a store file's commits survive a power cut too (an fsync per commit).
    :param clock: returns unix time; inject a fake one in tests (a server store reads its server's).
    :param max_crashes: a task whose process died this many times while running it is failed.
    :param lookahead: ticks made ready ahead of the clock at once (each advance is one write).
    :param exit_grace: at interpreter exit a started wheel stops, waiting this many seconds
        for running tasks; those still running after it run again at the next start.
    :param namespace: the key prefix in a Redis database, the schema in a PostgreSQL one
        unless its connection string names one (several apps can share a database).
    :param retry_jitter: the tasks' default (docs/guide/retries.md); serializer: docs/guide/json.md.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]", None] = "tasks.db", workers: int = 4, *,
                 tick: float = 1.0, slots: int = 3600, result_ttl: float = 7 * 86400.0, lookahead: int = 4,
                 misfire_grace: Optional[float] = None, timeout: Optional[float] = None, max_crashes: int = 3,
                 immediate: bool = False, busy_timeout: float = 10.0, retry_jitter: bool = True,
                 clock: Callable[[], float] = time.time, serializer: str = "pickle", exit_grace: float = 5.0,
                 namespace: str = "timewheel", durability: str = "normal") -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
            raise ValueError(f"workers must be an int from 1 to 1024, got {shown(workers)}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path, a redis:// or postgresql:// URL or None, "
                            f"got {type(path).__name__}")
        self.wheel = Wheel(slots=slots, tick=tick)
        spec = None if path is None else os.fspath(path)
        if isinstance(spec, bytes):
            raise TypeError("path must be a str or os.PathLike of str, not bytes")
        self.url = spec if spec is not None and is_url(spec) else None
        self.path = None if spec is None or self.url else os.path.abspath(spec)
        if self.path is not None and (not spec or "\0" in spec or not _encodable(spec)):
            # SQLite takes UTF-8 file names: one with undecodable bytes cannot be opened
            raise ValueError(f"not a usable store path: {str.__repr__(spec)}")
        self.workers = workers
        self.result_ttl = _number(result_ttl, "result_ttl")
        self.misfire_grace = _optional(misfire_grace, "misfire_grace")
        self.timeout = _optional(timeout, "timeout", minimum=0.001)
        self.immediate = _flag(immediate, "immediate")
        self.busy_timeout = _number(busy_timeout, "busy_timeout", maximum=86400.0)
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning unix seconds, got {shown(clock)}")
        self.clock = clock
        if isinstance(max_crashes, bool) or not isinstance(max_crashes, int) or max_crashes < 1:
            raise ValueError(f"max_crashes must be an int >= 1, got {shown(max_crashes)}")
        self.max_crashes = max_crashes
        self.exit_grace = _number(exit_grace, "exit_grace", maximum=86400.0)
        if isinstance(lookahead, bool) or not isinstance(lookahead, int) or not 1 <= lookahead <= 3600:
            raise ValueError(f"lookahead must be an int from 1 to 3600, got {shown(lookahead)}")
        self.lookahead, self.retry_jitter, self.serializer = (lookahead, _flag(retry_jitter, "retry_jitter"),
                                                              serialize.check_serializer(serializer))
        self.namespace, self.durability = _label(namespace, "namespace", 100), _durable(durability, self.url)
        self._registry: dict[str, Task[..., Any]] = {}
        self._hooks = Hooks(EVENTS)
        self._store: Optional[WheelStore] = None
        self._store_lock = threading.Lock()
        #: in a process forked from one that had started this wheel: that process's pid, and the
        #: store it had open (see _after_fork_in_child)
        self._started_in: Optional[int] = None
        self._inherited: Optional[WheelStore] = None
        self._boss: Optional[Boss] = None
        self._start_lock = threading.RLock()
        self._local = _Local()
        self._changed = threading.Condition()
        self._generation = 0
        self._periodics: Any = None          # timewheel.periodic.Periodics, made by periodic()
        _instances.add(self)

    def __repr__(self) -> str:
        return f"<TimeWheel {self.location} workers={self.workers}>"

    @property
    def location(self) -> str:
        """The store's file path or URL, without its password (``memory`` for none)."""
        if self.immediate:
            return "memory"
        if self.url:
            from .store import public_location
            return public_location(self.url)
        return self.path or "memory"

    # -- the store (opened lazily, so nothing -- no thread -- starts in a pre-fork master) ----
    @property
    def store(self) -> WheelStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._open_store()
        return self._store

    def _open_store(self) -> WheelStore:
        if self._started_in is not None:         # the first use after a fork: see below
            self._warn_started_before_fork()
            inherited, self._inherited = self._inherited, None
            if inherited is not None:
                return inherited
        if self.immediate or (self.path is None and self.url is None):
            return MemoryStore(self.wheel, clock=self.clock)
        return open_store(self.url or self.path or "", wheel=self.wheel, namespace=self.namespace,
                          timeout=self.busy_timeout, clock=self.clock, serializer=self.serializer,
                          result_ttl=self.result_ttl if self.url else None, durability=self.durability)

    def now(self) -> float:
        """The store's clock: what etas and ``count_down`` are measured by."""
        return self.store.now()

    # -- registering ----------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R]) -> "Task[P, R]": ...
    @overload
    def task(self, *, name: Optional[str] = None, retries: int = 0, retry_delay: float = 1.0,
             misfire_grace: Any = ..., timeout: Any = ..., queue: str = flow.DEFAULT_QUEUE,
             priority: int = 0, concurrency: Optional[int] = None, key: Any = None,
             rate: Optional[str] = None, limit: Any = None, retry_on: Any = (), dont_retry_on: Any = (),
             retry_jitter: Optional[bool] = None) -> Callable[[Callable[P, R]], "Task[P, R]"]: ...

    def task(self, fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
             retries: int = 0, retry_delay: float = 1.0, misfire_grace: Any = ..., retry_on: Any = (),
             timeout: Any = ..., queue: str = flow.DEFAULT_QUEUE, priority: int = 0, dont_retry_on: Any = (),
             concurrency: Optional[int] = None, key: Any = None, rate: Optional[str] = None,
             limit: Any = None, retry_jitter: Optional[bool] = None) -> Any:
        """Register a function as a task: ``@hu.task()`` or ``@hu.task(retries=3, ...)``.

        ``retries``: extra attempts after a failure (at most ``retries + 1`` calls), each waiting up
        to ``retry_delay * 2 ** (n - 1)`` s after failure ``n``: see ``retry_on``, docs/guide/retries.md.
        ``timeout``: seconds a run may take before it fails with :class:`TaskTimeout`.
        ``name`` defaults to ``module.qualname`` and must be the same in every process.

        Flow control (docs/guide/flow-control.md): ``queue`` (default ``"default"``),
        ``priority`` (-100..100, higher first among due tasks), ``concurrency`` (runs at once
        across every process), ``rate`` (``"5/s"``: starts in any window), ``key`` (a
        parameter's name or a callable of the arguments: the limits apply per key), ``limit``
        (what :meth:`limit` returns, or a list: limits shared with other tasks).
        """
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 1000:
            raise ValueError(f"retries must be an int from 0 to 1000, got {shown(retries)}")
        delay_s = _seconds(retry_delay, "retry_delay", maximum=86400.0)
        grace = (self.misfire_grace if misfire_grace is ...
                 else _optional(misfire_grace, "misfire_grace"))
        time_limit = self.timeout if timeout is ... else _optional(timeout, "timeout", minimum=0.001)
        if name is not None:
            _label(name, "task name", 500)
        flow_options = {"queue": flow.check_queue(queue), "priority": flow.check_priority(priority),
                        "concurrency": None if concurrency is None else flow.check_concurrency(concurrency),
                        "rate": None if rate is None else flow.parse_rate(rate),
                        "shared": () if limit is None else flow.check_limits(limit), "key": key,
                        "rules": _retry_rules(retry_on, dont_retry_on, retry_jitter, self.retry_jitter)}
        if key is not None and concurrency is None and rate is None:
            raise ValueError("key= makes concurrency= or rate= per key: give one of them")

        def register(f: Callable[..., Any]) -> Task[..., Any]:
            if not callable(f):
                raise TypeError(f"@task needs a function, got {type(f).__name__} {shown(f)}")
            task_name = name if name is not None else _label(
                f"{getattr(f, '__module__', None)}.{_qualname(f)}", "task name", 500)
            old = self._registry.get(task_name)
            if old is not None and old.fn is not f and (
                    getattr(old.fn, "__code__", None) is not getattr(f, "__code__", None)):
                raise ValueError(f"another function is already registered as task {task_name!r}")
            t: Task[..., Any] = Task(self, f, task_name, retries, delay_s, grace, time_limit, flow_options)
            self._registry[task_name] = t
            return t

        if fn is not None:
            return register(fn)
        return register

    def periodic(self, *, every: Any = None, cron: Optional[str] = None, tz: Optional[str] = None,
                 name: Optional[str] = None, **options: Any) -> Callable[[Callable[[], R]], "Task[[], R]"]:
        """Register a recurring task: ``@hu.periodic(every=900)`` or
        ``@hu.periodic(cron="0 3 * * *", tz="Europe/Berlin")``.  See :mod:`timewheel.periodic`."""
        from .periodic import Periodics
        if self._periodics is None:
            self._periodics = Periodics(self)
        decorator: Callable[[Callable[[], R]], Task[[], R]] = self._periodics.decorator(
            every=every, cron=cron, tz=tz, name=name, **options)
        return decorator

    def limit(self, name: str, *, concurrency: Optional[int] = None,
              rate: Optional[str] = None) -> flow.SharedLimit:
        """A limit shared by several tasks: ``smtp = hu.limit("smtp", concurrency=3, rate="5/s")``
        then ``@hu.task(limit=smtp)`` on each.  At most ``concurrency`` runs at once and
        ``rate`` starts in any window, over all of them, across every process sharing the
        store.  Declare it alike in every process (each task's records carry it)."""
        return flow.shared_limit(name, concurrency, rate)

    def pause(self, queue: str) -> bool:
        """Stop every process from claiming ``queue``'s tasks until :meth:`resume` (stored:
        every host, across restarts).  Running tasks finish.  True if it was not paused."""
        return self.store.pause(flow.check_queue(queue))

    def resume(self, queue: str) -> bool:
        """Let ``queue``'s tasks be claimed again.  True if it was paused."""
        return self.store.resume(flow.check_queue(queue))

    def paused(self) -> frozenset[str]:
        """The paused queues."""
        return self.store.paused()

    @property
    def tasks(self) -> dict[str, "Task[..., Any]"]:
        """The registered tasks by name."""
        return dict(self._registry)

    def on(self, event: str, fn: Optional[Callable[..., Any]] = None) -> Any:
        """Call ``fn(record, exception)`` after a task's change to ``event`` is durable, in the
        process that made it: ``started``, ``succeeded``, ``failed`` (for good), ``retrying``
        (failed, will run again) or ``misfired``.  ``exception`` is the task's exception for
        ``failed`` and ``retrying``, else None.  Also a decorator: ``@hu.on("failed")``.

        Hooks run on a thread of their own (:mod:`timewheel.hooks`), one call at a time, in
        the order of the changes; never on the thread that claims tasks and turns the wheel,
        so a slow hook delays other hooks, nothing else.  By the time a hook runs, the task
        may have changed again.  A hook that raises is logged and changes nothing."""
        if not isinstance(event, str) or event not in EVENTS:
            raise ValueError(f"unknown event {shown(event)}; one of {', '.join(EVENTS)}")

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(f):
                raise TypeError(f"a hook must be callable, got {shown(f)}")
            self._hooks.add(event, f)
            return f

        return add if fn is None else add(fn)

    # -- scheduling -----------------------------------------------------------------------
    def _eta(self, count_down: Any, eta: Any) -> float:
        if count_down is not None and eta is not None:
            raise ValueError("give count_down or eta, not both")
        if eta is None:
            now = self.now()
            delay = _optional(count_down, "count_down") or 0.0
            if now + delay > MAX_ETA:
                raise ValueError(f"count_down={shown(count_down)} would put the task after 9999-12-31")
            return now + delay
        if type(eta) is float:                # the common case first: unix seconds
            when = eta
        elif isinstance(eta, _dt.datetime):
            try:
                when = eta.timestamp()        # naive datetimes are local time, as documented
            except (OverflowError, OSError, ValueError) as exc:
                raise ValueError(f"eta {shown(eta)} cannot be turned into a time ({exc})") from None
        elif isinstance(eta, (int, float)) and not isinstance(eta, bool):
            # an int beyond any float is out of range, not an OverflowError
            when = float(eta) if isinstance(eta, float) or abs(eta) <= MAX_ETA else math.inf
        else:
            raise TypeError(f"eta must be a datetime or unix seconds, got {type(eta).__name__} {shown(eta)}")
        if not 0 <= when <= MAX_ETA:          # nan fails every comparison, inf the second
            raise ValueError(f"eta {shown(eta)} is outside 1970..9999")
        return when

    def _debounce(self, new: TaskRecord, debounce: float, max_wait: Optional[float]) -> TaskHandle[Any]:
        """Write one debounced call (see :func:`timewheel.flow.debounced`): a read of the
        id's two records, then a compare-and-set on the one it changes, again if either
        changed meanwhile."""
        store = self.store
        follow = flow.follow_id(new.id)
        for _ in range(100):
            now = store.now()
            old, rec = flow.debounced(store.get(new.id), store.get(follow),
                                      new._replace(created=now), now, debounce, max_wait)
            stored: Optional[TaskRecord]
            if old is None:
                try:
                    (stored,) = store.add([rec], existing="fail")
                except DuplicateTask:
                    continue
            else:
                (stored,) = store.swap([(old, rec)])
                if stored is None:
                    continue
            if self.immediate:
                self._run_inline(stored)
            return TaskHandle(self, stored.id)
        raise StoreBusy(f"task {new.id}: its records kept changing while a debounced call was "
                        "written; nothing was written")

    def _submit(self, rec: TaskRecord, existing: str, connection: Any = None) -> TaskHandle[Any]:
        adder = self._adder() if connection is None else self._through(connection)
        (stored,) = adder.add([rec], existing=existing)
        if self.immediate and _added(stored, rec):
            self._run_inline(stored)
        return TaskHandle(self, stored.id)

    @contextmanager
    def using(self, connection: Any) -> Iterator[None]:
        """Transactional enqueue: every ``delay()``, ``schedule()`` and ``batch()`` of this
        wheel in the block (in this thread or task) writes through the application's own
        ``connection``, in its transaction -- rolled back, the task never existed; committed,
        it runs at its eta.  A psycopg 3 connection, a SQLAlchemy Connection or Session, or a
        Django database alias (``"default"``, also inside ``transaction.atomic()``); a
        PostgreSQL store only (see :mod:`timewheel.store.postgres_tx`).  In immediate mode the
        connection is not used: tasks run inline as always."""
        token = _USING.set({**(_USING.get() or {}), id(self): self._through(connection)})
        try:
            yield
        finally:
            _USING.reset(token)

    def _through(self, connection: Any) -> Any:
        """What adds tasks through ``connection`` (the store itself in immediate mode)."""
        return self.store if self.immediate else self.store.through(connection)

    def _adder(self) -> Any:
        """What ``delay()`` adds with here: the open ``using()`` block's, else the store."""
        using = _USING.get()
        return self.store if using is None else using.get(id(self), self.store)

    def get(self, task_id: str) -> TaskHandle[Any]:
        """A handle for a task id (from another process, or from before a restart)."""
        _storable_id(task_id)
        h: TaskHandle[Any] = TaskHandle(self, task_id)
        _ = h.record   # raises TaskNotFound now rather than at first use
        return h

    def cancel(self, task_id: str) -> bool:
        """True if the task was pending and now never runs; False otherwise."""
        return self._change(task_id, lambda r: r.status == PENDING, cancel)

    def abort(self, task_id: str) -> bool:
        """:meth:`TaskHandle.abort` by id."""
        if not _storable_id(task_id):
            return False
        _, done = self.store.abort(task_id)
        if done == "cancelled":
            self._changed_notify()
        return done in ("cancelled", "asked", "asked already")

    def retry(self, task_id: str) -> bool:
        """Put a failed, misfired or cancelled task back as pending, due now, with its full
        retry budget.  False if it is not in one of those states."""
        return self._change(task_id, lambda r: r.status in RETRYABLE, reset_for_retry)

    def _change(self, task_id: str, allowed: Callable[[TaskRecord], bool],
                transition: Callable[[TaskRecord, float], TaskRecord]) -> bool:
        if not _storable_id(task_id):
            return False
        _, new = self.store.change(task_id, allowed, transition)
        if new is not None:
            self._changed_notify()
        return new is not None

    # -- running --------------------------------------------------------------------------
    def _execute(self, rec: TaskRecord) -> Any:
        return execute(self._registry, rec, self.store.now)

    def _run_inline(self, first: TaskRecord) -> None:
        """immediate=True: run and record right here, retries included (without waiting)."""
        store = self.store
        rec: Optional[TaskRecord] = first
        while rec is not None and rec.status == PENDING and not rec.waiting:
            (running,) = store.swap([(rec, claimed(rec, "immediate", store.now()))])
            if running is None:
                break
            self._hooks.call("started", running, None)
            out = self._execute(running)
            (rec,) = store.swap([(running, end_run(running, out))])
            if rec is not None:
                event = outcome_event(rec)
                if event is not None:
                    self._hooks.call(event, rec, out.exception)
        self._changed_notify()

    def _changed_notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _wait_change(self, seen: int, timeout: float) -> None:
        with self._changed:
            if self._generation == seen:
                self._changed.wait(timeout)

    def start(self, queues: Optional[Iterable[str]] = None) -> "TimeWheel":
        """Start running due tasks in this process, and ticking when its turn comes
        (idempotent, thread-safe; call it lazily from a request handler or after fork, never
        in a pre-fork master).  ``queues``: run only the tasks of these queues (default:
        every queue).  Raises StoreError if the store cannot be used.  Returns self."""
        served = flow.check_queues(queues)
        if self.immediate:
            return self
        if served is not None and not self.store.flow_control:
            raise ValueError(f"{self.location} does not enforce queues (flow control) yet: start() "
                             "without queues=")
        with self._start_lock:
            if self._boss is not None:
                return self
            boss = Boss(self.store, WorkerPool(self.workers, self._execute), lookahead=self.lookahead,
                        result_ttl=self.result_ttl, max_crashes=self.max_crashes,
                        on_change=self._changed_notify, on_event=self._hooks.post, queues=served,
                        inbox=_inbox_builder(self._registry, self.store.now))
            if self._periodics is not None:
                self._periodics.reconcile()    # before the boss can claim anything
            boss.start()
            self._boss = boss
            if self._periodics is not None:
                self._periodics.start()
            log.info("started %s", self)
        return self

    def stop(self, wait: bool = True, timeout: Optional[float] = None) -> Stopped:
        """Stop running tasks here.  ``wait``: first let running tasks finish (up to
        ``timeout`` s) and record their results; otherwise they finish in the background.
        Pending tasks stay in the store and run after the next ``start()`` here or in another
        process.  On a wheel whose store was never opened this is a no-op."""
        timeout = _optional(timeout, "timeout", maximum=86400.0 * 365)
        deadline = None if timeout is None else time.monotonic() + timeout
        unfinished = 0
        with self._start_lock:
            boss, self._boss = self._boss, None
            if self._periodics is not None:
                self._periodics.stop()
            if boss is not None:
                unfinished = boss.stop(wait=wait, timeout=timeout)
                if wait:       # the hooks of the changes made so far, as far as time allows
                    self._hooks.drain(None if deadline is None else max(0.0, deadline - time.monotonic()))
                log.info("stopped %s", self)
        if self._store is None:
            return Stopped(0, 0, 0)
        counts = self._store.counts()
        return Stopped(sum(n for (s, _), n in counts.items() if s == PENDING),
                       sum(n for (s, _), n in counts.items() if s == RUNNING), unfinished)

    @property
    def running(self) -> bool:
        return self._boss is not None

    @property
    def is_leader(self) -> bool:
        """True while this process is the one ticking the store."""
        boss = self._boss
        return boss is not None and boss.leading

    def health(self) -> Optional[Health]:
        """How the started wheel is doing (None if not started): whether store calls
        succeed, whether this process ticks, the last error."""
        boss = self._boss
        return None if boss is None else boss.health()

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

    def _warn_started_before_fork(self) -> None:
        parent, self._started_in = self._started_in, None
        memory = " (a memory store is not shared: tasks delayed here run only if it starts here)" \
            if self.url is None and self.path is None else ""
        _warn_loudly(
            f"{self} was started in process {parent} before it forked this process ({os.getpid()}): "
            f"the wheel's threads stayed in process {parent}, which runs the tasks; this process runs "
            f"none unless it calls start() itself{memory}. Start the wheel after the fork, in each "
            "worker -- with gunicorn in a post_fork hook or at the first request; never at import "
            "with --preload, where the master would run every task")

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork: forget the parent's boss (a child starts its own with
        # start()).  The store reopens itself on first use in the new pid.
        if self._boss is not None:
            # Started before the fork (gunicorn --preload with start() at import: issue 19 item
            # 11): say so at this process's first use of the wheel, which goes through
            # _open_store while the store is set aside -- no check on the hot path.
            self._started_in = os.getppid()
        if self._started_in is not None and self._store is not None:
            self._inherited, self._store = self._store, None
        self._boss = None
        self._start_lock = threading.RLock()
        self._store_lock = threading.Lock()
        self._changed = threading.Condition()


def _warn_loudly(message: str) -> None:
    """A warning to the ``timewheel`` logger -- and to stderr too while the application has
    configured no logging at all (the logger's NullHandler would swallow it)."""
    log.warning(message)
    logger: Optional[logging.Logger] = log
    while logger is not None:
        if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
            return
        logger = logger.parent if logger.propagate else None
    sys.stderr.write(f"timewheel: WARNING: {message}\n")


def _after_fork_in_child() -> None:
    _ids.reset()
    for hu in list(_instances):
        hu._after_fork_in_child()


def _stop_all_at_exit() -> None:
    # Workers are daemon threads: without this, tasks still running at exit would die
    # mid-run and run again after the next start, and finished ones might go unrecorded.
    for hu in list(_instances):
        if hu.running:
            try:
                hu.stop(wait=True, timeout=hu.exit_grace)
            except Exception:  # noqa: BLE001
                log.exception("stopping %s at exit failed", hu)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
