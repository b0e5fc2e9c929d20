"""timewheel for Django: one TimeWheel per project, from settings.

    # settings.py
    INSTALLED_APPS = [..., "timewheel.contrib.django"]
    TIMEWHEEL = {"path": BASE_DIR / "tasks.db", "workers": 4}    # any TimeWheel option

    # shop/tasks.py -- a tasks module in any installed app is imported at start-up
    from timewheel.contrib.django import hu

    @hu.task()
    def send_welcome(customer_id): ...

    # run the tasks: a worker process (SIGTERM drains, like ``timewheel run``) ...
    python manage.py timewheel_run
    # ... and/or inside the web processes: TIMEWHEEL = {..., "run_in_web": True}

``TIMEWHEEL`` takes every argument of :class:`~timewheel.TimeWheel` (``path`` defaults to
``BASE_DIR / "tasks.db"``), plus ``run_in_web``: start the wheel in each web process at its
first request -- lazily, so after a pre-forking server's fork.  The wheel is made on first
use (``hu`` is looked up lazily, so importing this module needs no configured settings); a
wrong option fails ``manage.py check`` and start-up with ImproperlyConfigured.

The wheel's workers close Django's database connections before and after each run, as
Django does around each request, so a task never uses a connection that went stale while
its thread was idle, and no thread keeps one open for ever.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Optional

from ...api import TimeWheel
from ...errors import shown
from ...records import Outcome, TaskRecord

__all__ = ["DjangoTimeWheel", "TasksBackend", "get_wheel", "hu", "options"]

#: the keys of ``settings.TIMEWHEEL`` this integration reads itself (not TimeWheel options)
INTEGRATION_KEYS = ("run_in_web",)

_lock = threading.Lock()
_wheel: Optional["DjangoTimeWheel"] = None


class DjangoTimeWheel(TimeWheel):
    """A TimeWheel whose runs are framed like Django requests: stale or expired database
    connections are closed before and after each one (``close_old_connections``).

    Immediate mode (tests) runs tasks in the caller's thread, inside its transaction: its
    connection is left alone there.
    """

    def _execute(self, rec: TaskRecord) -> Outcome:
        if rec.name not in self._registry:     # a Django task (TASKS) that this process has not enqueued
            _register_django_task(self, rec.name)
        if self.immediate:
            return super()._execute(rec)
        from django.db import close_old_connections
        close_old_connections()
        try:
            return super()._execute(rec)
        finally:
            close_old_connections()


def _register_django_task(hu: TimeWheel, name: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    try:
        from .backend import register_by_name
    except ImproperlyConfigured:         # neither django.tasks nor the backport: not one of theirs
        return
    register_by_name(hu, name)


def options() -> dict[str, Any]:
    """``settings.TIMEWHEEL``, checked: the TimeWheel arguments and the integration's keys.

    Raises ImproperlyConfigured naming what is wrong."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    given = getattr(settings, "TIMEWHEEL", {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"settings.TIMEWHEEL must be a dict of TimeWheel options, "
                                   f"got {type(given).__name__}")
    allowed = [p for p in inspect.signature(TimeWheel.__init__).parameters if p != "self"]
    unknown = sorted(shown(k) for k in given if k not in allowed and k not in INTEGRATION_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.TIMEWHEEL: unknown option(s) {', '.join(unknown)}; it takes "
            f"{', '.join(allowed + list(INTEGRATION_KEYS))}")
    if not isinstance(given.get("run_in_web", False), bool):
        raise ImproperlyConfigured(f"settings.TIMEWHEEL: run_in_web must be True or False, "
                                   f"got {shown(given['run_in_web'])}")
    out = dict(given)
    if "path" not in out:
        base = getattr(settings, "BASE_DIR", None)
        out["path"] = os.path.join(os.fspath(base), "tasks.db") if base is not None else "tasks.db"
    return out


def get_wheel() -> DjangoTimeWheel:
    """The project's TimeWheel, made from ``settings.TIMEWHEEL`` on first use."""
    global _wheel
    if _wheel is None:
        with _lock:
            if _wheel is None:
                from django.core.exceptions import ImproperlyConfigured
                kwargs = {k: v for k, v in options().items() if k not in INTEGRATION_KEYS}
                try:
                    _wheel = DjangoTimeWheel(**kwargs)
                except (TypeError, ValueError) as exc:
                    raise ImproperlyConfigured(f"settings.TIMEWHEEL: {exc}") from None
    return _wheel


def __getattr__(name: str) -> Any:
    # PEP 562: ``from timewheel.contrib.django import hu`` makes the wheel then, in a module
    # imported once settings are configured (tasks.py), not when this package is imported.
    if name == "hu":
        return get_wheel()
    if name == "TasksBackend":      # settings.TASKS: {"BACKEND": "timewheel.contrib.django.TasksBackend"}
        from .backend import TasksBackend
        return TasksBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
