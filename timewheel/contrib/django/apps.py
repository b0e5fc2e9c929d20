"""The Django app: checks ``settings.TIMEWHEEL`` and imports every installed app's ``tasks``
module at start-up, so each process (web, ``timewheel_run``, shell) registers the same tasks
under the same names; with ``run_in_web`` it starts the wheel at a web process's first request.
Where prometheus_client is installed it makes the wheel's metrics collector at start-up, so
the per-run series count every run of the process.
"""

from __future__ import annotations

import logging

from django.apps import AppConfig

from ..starter import FirstRequestStarter

log = logging.getLogger("timewheel.django")


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
            request_started.connect(FirstRequestStarter(get_wheel, log), dispatch_uid="timewheel-run-in-web",
                                    weak=False)
