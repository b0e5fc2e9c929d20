"""Starting a web process's wheel at the first request it serves (Django's ``run_in_web``,
Flask's ``TIMEWHEEL_RUN_IN_WEB``).

The first request is the one moment every WSGI server has in common that comes after its
fork and only in processes that serve: never in a pre-fork master (``gunicorn --preload``,
uWSGI without ``lazy-apps``), never in ``migrate``, ``flask shell`` or a worker command.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ..api import TimeWheel

__all__ = ["FirstRequestStarter", "RETRY_START"]

#: seconds between attempts to start the wheel in a web process whose store fails
RETRY_START = 10.0


class FirstRequestStarter:
    """A request-started signal receiver that starts the wheel ``wheel_of()`` returns, once.

    A store that cannot be opened is logged and tried again ``RETRY_START`` seconds later;
    requests are never failed because of it (the site must keep serving).  Once started,
    each call costs one attribute read.
    """

    def __init__(self, wheel_of: Callable[[], "TimeWheel"], log: logging.Logger,
                 queues: Optional[frozenset] = None) -> None:
        self._wheel_of = wheel_of
        self._queues = queues       # None: every queue
        self._log = log
        self._lock = threading.Lock()
        self._next_try = 0.0

    def __call__(self, *sender: Any, **signal: Any) -> None:
        hu = self._wheel_of()
        if hu.running or time.monotonic() < self._next_try:
            return
        with self._lock:
            if hu.running or time.monotonic() < self._next_try:
                return
            try:
                hu.start(queues=self._queues)
            except Exception:  # noqa: BLE001 - the site must keep serving; logged, retried
                self._next_try = time.monotonic() + RETRY_START
                self._log.exception("could not start the TimeWheel in this web process; "
                                    "trying again in %gs", RETRY_START)
