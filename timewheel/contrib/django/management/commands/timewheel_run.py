"""``python manage.py timewheel_run``: run the project's TimeWheel in the foreground.

The same loop as ``timewheel run``: start, run until SIGTERM or SIGINT, then take no new
tasks, let running ones finish for up to ``--grace`` seconds, record them and exit 0; a
second signal ends the process at once (tasks still running then run again later).
"""

from __future__ import annotations

from typing import Any, Optional

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = ("Run the project's TimeWheel (settings.TIMEWHEEL) until SIGTERM/SIGINT, then let "
            "running tasks finish for up to --grace seconds.")
    requires_system_checks: list[str] = []      # a worker needs no URL/model checks to run tasks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--grace", type=float, default=30.0,
                            help="Seconds to let running tasks finish after SIGTERM/SIGINT (default 30).")
        parser.add_argument("--log-level", default="INFO",
                            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                            help="Logging level of the timewheel logger, to stderr (default INFO).")
        parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                            help="Serve this worker's Prometheus metrics on PORT (pip install "
                                 "'timewheel[metrics]').")
        parser.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                            help="Address for --metrics-port (default 127.0.0.1).")
        parser.add_argument("--queues", default=None, metavar="Q1,Q2",
                            help="Run only the tasks of these queues (default: every queue).")

    def handle(self, *args: Any, grace: float, log_level: str, metrics_port: Optional[int],
               metrics_addr: str, queues: Optional[str] = None, **options: Any) -> None:
        from timewheel import TimeWheelError
        from timewheel.contrib.django import get_wheel
        from timewheel.flow import check_queues
        from timewheel.serve import serve
        if grace < 0:
            raise CommandError(f"--grace must be >= 0, got {grace:g}")
        try:
            served = None if queues is None else check_queues([q.strip() for q in queues.split(",")])
        except ValueError as exc:
            raise CommandError(f"--queues: {exc}") from None
        hu = get_wheel()
        if hu.location == "memory":
            raise CommandError("settings.TIMEWHEEL keeps tasks in memory (immediate=True or "
                               "path=None): there is nothing for a worker to run")
        if metrics_port is not None:
            _serve_metrics(hu, metrics_addr, metrics_port)
        try:
            serve(hu, grace=grace, log_level=log_level, queues=served)   # the loop of `timewheel run`
        except (TimeWheelError, OSError) as exc:             # the store cannot be used
            raise CommandError(f"{hu.location}: {' '.join(str(exc).split())}") from None


def _serve_metrics(hu: Any, addr: str, port: int) -> None:
    """This process's metrics (the wheel's and prometheus_client's process collectors) over
    HTTP on a daemon thread: the per-run series exist only in the process that runs tasks."""
    try:
        from prometheus_client import start_http_server

        from timewheel.metrics import instrument
    except ImportError as exc:
        raise CommandError(f"--metrics-port: {exc}") from None
    if not 0 < port < 65536:
        raise CommandError(f"--metrics-port must be from 1 to 65535, got {port}")
    instrument(hu)
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        raise CommandError(f"--metrics-port: cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
