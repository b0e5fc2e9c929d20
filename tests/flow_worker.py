"""A worker process of the flow-control tests (tests/test_flow_processes.py), and the tasks it
and the test process register alike.

    python tests/flow_worker.py STORE --namespace NS --log runs.log --events ev.log \
        [--queues emails,reports] [--workers 4] [--tick 0.25] --stop-file stop

Every task appends ``start <tag> <pid> <time>`` and ``end <tag> <pid> <time>`` to the run log
(tests/mp_worker.py's format, one ``write()`` per line); the debounced one logs its argument as
its tag.  The process exits once the stop file exists (draining its tasks) or after
``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.mp_worker import append_line, log_errors_to, record  # noqa: E402
from timewheel import TimeWheel  # noqa: E402


def wheel(store: str, namespace: str = "flow", *, workers: int = 4, tick: float = 0.25) -> TimeWheel:
    """A TimeWheel on ``store`` with the flow tests' tasks registered (under fixed names)."""
    hu = TimeWheel(store, workers=workers, tick=tick, slots=600, namespace=namespace)
    hu.task(name="flow.two", concurrency=2)(record)
    hu.task(name="flow.per_key", concurrency=1, key="key")(keyed)
    hu.task(name="flow.rate", rate="5/s")(record)
    hu.task(name="flow.plain")(record)
    hu.task(name="flow.email", queue="emails")(record)
    hu.task(name="flow.report", queue="reports")(record)
    hu.task(name="flow.debounced")(record)
    smtp = hu.limit("smtp", concurrency=1)
    hu.task(name="flow.smtp_a", limit=smtp)(record)
    hu.task(name="flow.smtp_b", limit=smtp)(record)
    return hu


def keyed(log: str, tag: str, sleep: float = 0.0, key: str = "") -> str:
    return record(log, tag, sleep)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("store")
    ap.add_argument("--namespace", default="flow")
    ap.add_argument("--events", required=True)
    ap.add_argument("--queues", default=None, help="comma-separated queues to serve (default: all)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tick", type=float, default=0.25)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--lifetime", type=float, default=60.0)
    a = ap.parse_args(argv)
    log_errors_to(a.events)
    hu = wheel(a.store, a.namespace, workers=a.workers, tick=a.tick)
    hu.start(queues=None if a.queues is None else a.queues.split(","))
    append_line(a.events, f"ready {os.getpid()} {time.time():.6f}")
    deadline = time.monotonic() + a.lifetime
    while time.monotonic() < deadline and not os.path.exists(a.stop_file):
        time.sleep(0.02)
    hu.stop(wait=True, timeout=10)
    append_line(a.events, f"exit {os.getpid()} {time.time():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
