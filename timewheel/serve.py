"""Running an application's wheel in the foreground until SIGTERM/SIGINT: ``timewheel run``.

:func:`load_app` finds the :class:`~timewheel.TimeWheel` named by ``module:attr``;
:func:`serve` starts it and drains it on a signal.  A Django management command (or any
other launcher) reuses them::

    from timewheel.serve import serve
    serve(hu, grace=30.0, log_level="INFO")
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

if TYPE_CHECKING:
    from .api import Stopped, TimeWheel

__all__ = ["load_app", "serve", "AppError", "SIGNALS"]

log = logging.getLogger("timewheel.serve")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


class AppError(Exception):
    """The application cannot be loaded or run; the message says why, in one line."""


def load_app(spec: str) -> "TimeWheel":
    """The TimeWheel named by ``module:attr.path``, importing ``module`` with the current
    directory on ``sys.path``.  Raises ValueError for a spec that is not MODULE:ATTR and
    AppError if it cannot be imported or is not a TimeWheel with a store.

    If the application's own import fails, its traceback goes to stderr first: that is a
    bug in the application, and where it happened matters.
    """
    from .api import TimeWheel

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not MODULE:ATTR (e.g. myapp.tasks:hu)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            traceback.print_exc()       # a module the application imports is missing
        raise AppError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the application's import raises
        traceback.print_exc()
        raise AppError(f"cannot import {module_name!r}: {exc.__class__.__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, TimeWheel):
        raise AppError(f"{spec} is a {type(obj).__name__}, not a TimeWheel")
    if obj.location == "memory":
        raise AppError(f"{spec} keeps its tasks in memory; there is no store to work on")
    return obj


def serve(hu: "TimeWheel", grace: float = 30.0, log_level: Optional[str] = "INFO", *,
          on_signal: Optional[Callable[[str], None]] = None,
          queues: Optional[Iterable[str]] = None) -> "Stopped":
    """Start ``hu`` and run until SIGTERM or SIGINT; then take no new tasks, let running
    ones finish for up to ``grace`` seconds, record them, and return what is left.

    A second signal ends the process at once (tasks still running then run again after a
    restart).  ``log_level``: configure logging to stderr at that level (None: leave the
    application's logging alone).  ``on_signal`` receives the name of the signal that
    stopped it.  ``queues``: run only those queues' tasks (``hu.start(queues=...)``).  Call it
    from the main thread (signal handlers live there).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve() must run in the main thread (it handles signals)")
    got: list[int] = []

    def record(signum: int, frame: Any) -> None:
        # Only note it: a handler runs between two bytecodes of the main thread, perhaps
        # while it holds a lock (logging's, the store's); stopping from here could deadlock.
        # (So no Event.set() either: it takes a lock the main thread may hold.)
        got.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in SIGNALS}
    try:
        if log_level is not None:
            # after the application's import, so an application that set logging up keeps it
            logging.basicConfig(level=log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
            logging.getLogger("timewheel").setLevel(log_level.upper())
        hu.start(queues=queues)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    log.info("running %s (pid %d); SIGTERM or SIGINT stops it", hu, os.getpid())
    while not got:
        time.sleep(0.1)
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)     # a second signal ends the process at once
    name = signal.Signals(got[0]).name
    if on_signal is not None:
        on_signal(name)
    log.info("%s: taking no new tasks; waiting up to %gs for running ones (signal again to exit now)",
             name, grace)
    stopped = hu.stop(wait=True, timeout=grace)
    log.info("stopped: %d pending, %d running in the store", stopped.pending, stopped.running)
    if stopped.unfinished == 0:
        hu.close()      # releases the store; skipped while a task may still be recording itself
    return stopped
