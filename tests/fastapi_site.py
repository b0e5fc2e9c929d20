"""The FastAPI app the tests run under ``uvicorn --workers 2`` (timewheel.contrib.fastapi).

    RUN_LOG=runs.log EVENTS=events.log TIMEWHEEL_DB=tasks.db SITE_KEY=k \\
        uvicorn --workers 2 tests.fastapi_site:app

Its tasks log their runs to ``RUN_LOG``; ``POST /enqueue`` schedules them.  The app's own
lifespan, run inside ``timewheel_lifespan``, appends ``lifespan start|stop <pid> <running>``
to ``EVENTS`` (whether the wheel was running then).  The web view is at ``/ops/tw`` behind an
async check (``X-Site-Key``); retry, cancel and purge need ``X-Site-Admin: yes`` too (a sync
check).
"""

from __future__ import annotations

import hmac
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request

from timewheel import TimeWheel
from timewheel.contrib.fastapi import mount_view, timewheel_lifespan

from . import site_tasks
from .mp_worker import append_line

RUN_LOG = os.environ["RUN_LOG"]
EVENTS = os.environ["EVENTS"]

hu = TimeWheel(os.environ["TIMEWHEEL_DB"], workers=int(os.environ.get("SITE_WORKERS", "4")), tick=0.25,
               exit_grace=float(os.environ.get("SITE_EXIT_GRACE", "5")))


@hu.task(name="site.record")
def record(tag: str, sleep: float = 0.0) -> str:
    return site_tasks.record(RUN_LOG, tag, sleep)


@hu.task(name="site.fail")
def fail(tag: str) -> None:
    site_tasks.fail(tag)


TASKS = {"record": record, "fail": fail}


@asynccontextmanager
async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    append_line(EVENTS, f"lifespan start {os.getpid()} {hu.running}")
    yield {"site": "fastapi_site"}
    append_line(EVENTS, f"lifespan stop {os.getpid()} {hu.running}")


async def has_key(request: Request) -> bool:
    key = os.environ.get("SITE_KEY", "")
    return bool(key) and hmac.compare_digest(request.headers.get("x-site-key", ""), key)


def is_admin(request: Request) -> bool:
    return request.headers.get("x-site-admin") == "yes"


app = FastAPI(lifespan=timewheel_lifespan(hu, lifespan=own_lifespan))
mount_view(app, hu, "/ops/tw", authorize=has_key, allow_actions=is_admin)


@app.post("/enqueue")
def enqueue(data: dict[str, Any], request: Request) -> dict[str, Any]:
    """``{"task": "record", "calls": [{...kwargs}, ...]}``: one batch."""
    task = TASKS[data["task"]]
    with hu.batch():
        ids = [task.delay(**kwargs).id for kwargs in data["calls"]]
    return {"ids": ids, "pid": os.getpid(), "running": hu.running, "state": request.state.site}
