"""The Django app: checks ``settings.TIMEWHEEL`` and imports every installed app's ``tasks``
module at start-up, so each process (web, ``timewheel_run``, shell) registers the same tasks
under the same names; with ``run_in_web`` it starts the wheel at a web process's first request.
Where prometheus_client is installed it makes the wheel's metrics collector at start-up, so
the per-run series count every run of the process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.apps import AppConfig

log = logging.getLogger("timewheel.django")

#: seconds between attempts to start the wheel in a web process whose store fails
RETRY_START = 10.0


class TimeWheelConfig(AppConfig):
    name = "timewheel.contrib.django"
    label = "timewheel"
    verbose_name = "timewheel"

    def ready(self) -> None:
        from django.core.signals import request_started
        from django.utils.module_loading import autodiscover_modules

        from . import get_wheel, options
        hu = get_wheel()                    # a wrong setting fails here, at start-up
        autodiscover_modules("tasks")
        try:
            from ...metrics import collector
        except ImportError:                 # no prometheus_client: no metrics
            pass
        else:
            collector(hu)                   # count runs from start-up, not from the first scrape
        if options().get("run_in_web"):
            request_started.connect(_WebStarter(), dispatch_uid="timewheel-run-in-web", weak=False)


class _WebStarter:
    """Starts the wheel at the first request this process serves: after any fork, and never
    in processes that serve none (``migrate``, ``timewheel_run``, a pre-fork master).  A
    store that cannot be opened is logged and tried again later; requests are never failed
    because of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_try = 0.0

    def __call__(self, **signal: Any) -> None:
        from . import get_wheel
        hu = get_wheel()
        if hu.running or time.monotonic() < self._next_try:
            return
        with self._lock:
            if hu.running or time.monotonic() < self._next_try:
                return
            try:
                hu.start()
            except Exception:  # noqa: BLE001 - the site must keep serving; logged, retried
                self._next_try = time.monotonic() + RETRY_START
                log.exception("could not start the TimeWheel in this web process; "
                              "trying again in %gs", RETRY_START)
