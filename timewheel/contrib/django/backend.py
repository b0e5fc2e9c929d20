"""Django's task framework on the project's wheel: ``django.tasks`` (Django >= 6.0), or the
``django-tasks`` backport package on older Django.

    # settings.py
    INSTALLED_APPS = [..., "timewheel.contrib.django"]        # ("django_tasks" too, backport)
    TASKS = {"default": {
        "BACKEND": "timewheel.contrib.django.TasksBackend",
        "QUEUES": ["default", "emails"],       # Django's: the queue names tasks may use
        "ENQUEUE_ON_COMMIT": True,             # the default: see below
        "OPTIONS": {"retries": 3, "retry_delay": 2.0, "timeout": 60},
    }}

Django's ``@task`` functions then run on the project's wheel (``settings.TIMEWHEEL``): in
``manage.py timewheel_run`` workers and, with ``run_in_web``, in the web processes.  Each is a
timewheel task named by its ``module_path``, registered when first enqueued and, in a worker,
imported by that name when first claimed; so it needs no ``tasks.py`` of its own.

* ``run_after`` is the eta (never early); ``priority`` and ``queue_name`` are flow control's
  priority and queue (``timewheel_run --queues emails`` serves one queue).
* ``get_result()`` reads the store from any process: pending -> ``READY``, running ->
  ``RUNNING``, succeeded -> ``SUCCESSFUL``, failed, cancelled, misfired or aborted -> ``FAILED``, with
  ``errors`` (the exception's class path and traceback) and ``return_value``.  Arguments and
  return values are JSON-normalised as Django's backends do (a tuple comes back a list).
* ``takes_context=True`` tasks get Django's ``TaskContext`` first; its ``attempt`` counts
  timewheel's attempts (a retry from ``OPTIONS["retries"]`` is attempt 2).
* ``ENQUEUE_ON_COMMIT`` (default True): a task enqueued inside ``transaction.atomic()`` on
  ``OPTIONS["database"]`` (default ``"default"``) is written when that transaction commits,
  and never if it rolls back (the returned result's id is its id from the start;
  ``get_result`` raises ``TaskResultDoesNotExist`` until the commit).  With the store in
  that database (a PostgreSQL store), the task is instead written *in* the transaction,
  through ``hu.using(database)``: committed with it, gone with a rollback, and no task lost
  to a crash between the commit and an ``on_commit`` callback.
* ``OPTIONS``: ``retries``, ``retry_delay``, ``timeout``, ``misfire_grace`` (as ``@hu.task()``
  takes them, for every task of this backend) and ``database``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import logging
import os
import pickle
import socket
import traceback
import uuid
from typing import Any, Callable, Optional

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils.module_loading import import_string

try:                                   # Django >= 6.0
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task as DjangoTask
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
    FRAMEWORK = "django.tasks"
except ImportError:                    # older Django: the backport, pip install django-tasks
    try:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task as DjangoTask  # type: ignore[assignment]
        from django_tasks.base import TaskError
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    except ImportError:
        raise ImproperlyConfigured("timewheel.contrib.django.TasksBackend needs Django >= 6.0 "
                                   "(django.tasks) or, on older Django, pip install django-tasks") from None
    FRAMEWORK = "django_tasks"

from ... import flow
from ...api import Task as WheelTask
from ...api import TimeWheel
from ...execute import current_task
from ...records import TERMINAL, call_of
from ...store.base import WheelStore
from . import get_wheel
from .task_results import DJANGO_STATUS, error_of

__all__ = ["TasksBackend", "FRAMEWORK", "register_by_name"]

log = logging.getLogger("timewheel.django")

#: the keys of a TasksBackend's OPTIONS: @hu.task()'s options, and the database alias
TASK_OPTIONS = ("retries", "retry_delay", "timeout", "misfire_grace")
OPTIONS = TASK_OPTIONS + ("database",)
#: attempts whose worker timewheel does not record (it knows a running attempt's owner only)
UNKNOWN_WORKER = "unknown"
_WORKER = f"{socket.gethostname()}:{os.getpid()}"


class TasksBackend(BaseTaskBackend):
    """A ``TASKS`` backend that runs Django's tasks on the project's TimeWheel (see the
    module docstring for the settings)."""

    supports_defer = True           # run_after: the eta
    supports_async_task = True      # async def tasks run on the wheel's event loop
    supports_get_result = True      # from the store, in any process
    supports_priority = True        # flow control's priority

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        where = f"TASKS[{alias!r}]"
        if not isinstance(self.options, dict):
            raise ImproperlyConfigured(f"{where}['OPTIONS'] must be a dict, "
                                       f"got {type(self.options).__name__}")
        unknown = sorted(repr(k) for k in self.options if k not in OPTIONS)
        if unknown:
            raise ImproperlyConfigured(f"{where}['OPTIONS']: unknown option(s) {', '.join(unknown)}; "
                                       f"it takes {', '.join(OPTIONS)}")
        self.task_options = {k: self.options[k] for k in TASK_OPTIONS if k in self.options}
        try:        # checked now, on a wheel of its own, rather than at the first enqueue
            TimeWheel(None, immediate=True).task(name="check", **self.task_options)(_nothing)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{where}['OPTIONS']: {exc}") from None
        self.database = self.options.get("database", DEFAULT_DB_ALIAS)
        if self.database not in settings.DATABASES:
            raise ImproperlyConfigured(f"{where}['OPTIONS']['database']: no database {self.database!r} "
                                       "in settings.DATABASES")
        on_commit = params.get("ENQUEUE_ON_COMMIT", True)
        if not isinstance(on_commit, bool):
            raise ImproperlyConfigured(f"{where}['ENQUEUE_ON_COMMIT'] must be True or False, "
                                       f"got {on_commit!r}")
        self.enqueue_on_commit = on_commit
        for queue in self.queues:
            try:
                flow.check_queue(queue, f"{where}['QUEUES']: a queue name")
            except ValueError as exc:
                raise ImproperlyConfigured(str(exc)) from None
        self.wheel = get_wheel()
        #: by name: the wheel's task that runs each Django task, and the Django task
        self._tasks: dict[str, tuple[WheelTask[..., Any], Any]] = {}

    # -- enqueueing -----------------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        try:
            flow.check_queue(task.queue_name, "queue_name")
        except ValueError as exc:
            raise InvalidTask(str(exc)) from None

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Write the task to the store (see ENQUEUE_ON_COMMIT) and return its READY result.
        Arguments that are not JSON (what Django's tasks take) raise, and nothing is written."""
        self.validate_task(task)
        if (task.queue_name != flow.DEFAULT_QUEUE or task.priority) and not self.wheel.store.flow_control:
            # checked here, not in validate_task: Django validates at import (the store unopened)
            raise InvalidTask(f"{task.module_path}: {self.wheel.location} does not enforce queues or "
                              "priorities (flow control) yet: use queue_name 'default' and priority 0 "
                              "there; nothing was written")
        runner = self.wheel_task(task)
        result = TaskResult(task=task, id=uuid.uuid4().hex, status=TaskResultStatus.READY,
                            enqueued_at=None, started_at=None, finished_at=None, last_attempted_at=None,
                            args=list(args), kwargs=dict(kwargs), backend=self.alias, errors=[],
                            worker_ids=[])
        write = functools.partial(self._write, runner, task, result)
        if self.enqueue_on_commit and self._transactional():
            with self.wheel.using(self.database):      # in the transaction, or at once in autocommit
                write()
        elif self.enqueue_on_commit and connections[self.database].in_atomic_block:
            transaction.on_commit(write, using=self.database)
        else:
            write()
        return result

    def _transactional(self) -> bool:
        """Whether the store can be written in the database's transactions (PostgreSQL)."""
        store = self.wheel.store
        return not self.wheel.immediate and type(store).through is not WheelStore.through

    def _write(self, runner: WheelTask[..., Any], task: Any, result: Any) -> None:
        flow_options: dict[str, Any] = {}
        if task.queue_name != flow.DEFAULT_QUEUE or task.priority:
            flow_options = {"queue": task.queue_name, "priority": int(task.priority)}
        runner.schedule(tuple(result.args), dict(result.kwargs), task_id=result.id, eta=task.run_after,
                        **flow_options)
        object.__setattr__(result, "enqueued_at", _when(self.wheel.now()))
        task_enqueued.send(type(self), task_result=result)

    def wheel_task(self, task: Any) -> WheelTask[..., Any]:
        """The wheel's task that runs Django task ``task``, registered on first use."""
        name = task.module_path
        found = self._tasks.get(name)
        if found is None:
            found = self._tasks[name] = (self.wheel.task(name=name, **self.task_options)(_runner(self, task)),
                                         task)
        return found[0]

    # -- results --------------------------------------------------------------------------------
    def get_result(self, result_id: str) -> Any:
        """The task's result as stored now, from any process.  Raises TaskResultDoesNotExist
        for an id the store does not hold (never enqueued, not yet committed, or purged after
        the wheel's ``result_ttl``) or that names a task that is not one of Django's."""
        rec = None
        if isinstance(result_id, str) and 0 < len(result_id) <= 200 and result_id.isprintable():
            rec = self.wheel.store.get(result_id)
        if rec is None:
            raise TaskResultDoesNotExist(f"no task {result_id!r} in {self.wheel.location}")
        known = self._tasks.get(rec.name)
        task = known[1] if known is not None else _django_task(rec.name)
        if task is None:
            raise TaskResultDoesNotExist(f"task {result_id!r} is {rec.name!r}, not a Django task")
        try:
            task = task.using(priority=rec.priority, queue_name=rec.queue, backend=self.alias)
        except InvalidTask:      # the settings changed since it was enqueued: as decorated
            pass
        args, kwargs, _ = call_of(rec.payload)
        error = error_of(rec)
        started = _when(rec.started)
        result = TaskResult(
            task=task, id=rec.id, status=TaskResultStatus(DJANGO_STATUS[rec.status]),
            enqueued_at=_when(rec.created), started_at=started, last_attempted_at=started,
            finished_at=_when(rec.finished) if rec.status in TERMINAL else None,
            args=list(args), kwargs=kwargs, backend=self.alias,
            errors=[] if error is None else [TaskError(exception_class_path=error.exception_class_path,
                                                       traceback=error.traceback)],
            worker_ids=_workers(rec.attempts, rec.owner))
        if rec.result is not None and result.status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", pickle.loads(rec.result))
        return result


def _nothing() -> None:
    """A function to check OPTIONS on."""


def _when(t: Optional[float]) -> Optional[_dt.datetime]:
    """A stored time as Django shows times: aware (UTC) with USE_TZ, else naive local."""
    if t is None:
        return None
    if settings.USE_TZ:
        return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return _dt.datetime.fromtimestamp(t)


def _workers(attempts: int, current: Optional[str]) -> list[str]:
    """``worker_ids``, one per attempt (Django counts attempts by them): timewheel records
    who holds a running attempt, not who ran the earlier ones."""
    if attempts <= 0:
        return []
    return [UNKNOWN_WORKER] * (attempts - 1) + [current or UNKNOWN_WORKER]


def _django_task(name: str) -> Any:
    """The Django task whose ``module_path`` is ``name``, or None."""
    try:
        found = import_string(name)
    except ImportError:
        return None
    return found if isinstance(found, DjangoTask) else None


def register_by_name(wheel: TimeWheel, name: str) -> bool:
    """Register on ``wheel`` the Django task stored as ``name``, if it is one whose backend is a
    TasksBackend on that wheel (a worker that has not enqueued it itself claims it)."""
    try:
        task = _django_task(name)
        backend = None if task is None else task.get_backend()
    except Exception:  # noqa: BLE001 - an import of the user's module may raise anything
        log.exception("cannot import %r to run it as a Django task", name)
        return False
    if not isinstance(backend, TasksBackend) or backend.wheel is not wheel:
        return False
    backend.wheel_task(task)
    return True


def _runner(backend: TasksBackend, task: Any) -> Callable[..., Any]:
    """What the wheel calls to run Django task ``task``: the function, with Django's
    TaskContext first if it takes one, Django's task_started and task_finished signals around
    it, its return value JSON-normalised (as Django's backends store it).  It has the
    function's signature (the context left out), so a wrong call fails at enqueue."""
    func, takes_context = task.func, task.takes_context

    def begin(args: tuple, kwargs: dict) -> tuple[Any, tuple]:
        ctx = current_task()
        now = _when(backend.wheel.now())
        result = TaskResult(task=task, id=ctx.id if ctx else "", status=TaskResultStatus.RUNNING,
                            enqueued_at=None, started_at=now, finished_at=None, last_attempted_at=now,
                            args=list(args), kwargs=dict(kwargs), backend=backend.alias, errors=[],
                            worker_ids=_workers(ctx.attempt if ctx else 1, _WORKER))
        task_started.send(type(backend), task_result=result)
        return result, ((TaskContext(task_result=result),) if takes_context else ())

    def end(result: Any, failure: Optional[BaseException]) -> None:
        if failure is None:
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        else:
            kind = type(failure)
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            result.errors.append(TaskError(exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                                           traceback="".join(traceback.format_exception(
                                               kind, failure, failure.__traceback__))))
        object.__setattr__(result, "finished_at", _when(backend.wheel.now()))
        task_finished.send(type(backend), task_result=result)

    if inspect.iscoroutinefunction(func):
        async def run(*args: Any, **kwargs: Any) -> Any:
            result, first = begin(args, kwargs)
            try:
                value = normalize_json(await func(*first, *args, **kwargs))
            except BaseException as exc:
                end(result, exc)
                raise
            end(result, None)
            return value
    else:
        def run(*args: Any, **kwargs: Any) -> Any:       # type: ignore[misc]
            result, first = begin(args, kwargs)
            try:
                value = normalize_json(func(*first, *args, **kwargs))
            except BaseException as exc:
                end(result, exc)
                raise
            end(result, None)
            return value

    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    run.__signature__ = sig.replace(parameters=params[1:] if takes_context else params)  # type: ignore[attr-defined]
    run.__module__, run.__qualname__, run.__name__ = func.__module__, func.__qualname__, func.__name__
    run.__doc__ = func.__doc__
    return run
