"""Periodic tasks: a report rebuilt every few seconds and a cron job, for a few seconds.

    python examples/periodic_report.py [seconds_to_run] [every_seconds]     # default 6 and 2

In an app these would be ``every=15 * 60`` and ``cron="0 3 * * *"``; here they are short so
you can watch them.  Environment: ``TIMEWHEEL_DB`` (the store; default a new temporary
file), ``REPORT_EVERY`` (seconds), ``REPORT_CRON`` (default ``"* * * * * */3"``: croniter's
optional sixth field is seconds, so every 3 s), ``REPORT_TZ`` (default ``Europe/Berlin``).

Each occurrence is an ordinary task in the store, with an id, a status and a result:
``timewheel inspect <store>`` lists them.  Run this script twice at once on the same
``TIMEWHEEL_DB`` and each occurrence still runs once, in one of the two processes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import tempfile
import time

from timewheel import TimeWheel

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

RUN_FOR = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
EVERY = float(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("REPORT_EVERY", "2"))
CRON = os.environ.get("REPORT_CRON", "* * * * * */3")
TZ = os.environ.get("REPORT_TZ", "Europe/Berlin")
DB = os.environ.get("TIMEWHEEL_DB") or os.path.join(tempfile.mkdtemp(), "tasks.db")

hu = TimeWheel(DB, workers=2)


def stamp() -> str:
    return dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]


@hu.periodic(every=EVERY, name="reports.rebuild")
def rebuild_report() -> str:
    print(f"{stamp()}  rebuild_report (every {EVERY:g}s) in pid {os.getpid()}", flush=True)
    return f"report built at {stamp()}"


@hu.periodic(cron=CRON, tz=TZ, name="maintenance.cleanup", retries=1)
def cleanup() -> int:
    print(f"{stamp()}  cleanup (cron {CRON!r}, {TZ}) in pid {os.getpid()}", flush=True)
    return 0


if __name__ == "__main__":
    print(f"store: {DB}; running {RUN_FOR:g}s", flush=True)
    with hu:                              # start(); stop(wait=True) at the end
        time.sleep(RUN_FOR)
    for name in ("reports.rebuild", "maintenance.cleanup"):
        done = hu.store.scan("succeeded", name=name)
        pending = hu.store.scan("pending", name=name, limit=1)      # in due order
        nxt = dt.datetime.fromtimestamp(pending[0].eta).strftime("%H:%M:%S") if pending else "-"
        print(f"{name}: {len(done)} run(s), next at {nxt}")
