"""A FastAPI app: one endpoint runs an ``async def`` task and awaits its result, another
schedules a report for later and returns the task id at once.

    uvicorn examples.fastapi_app:app --workers 4       # or: python examples/fastapi_app.py

    curl -X POST 'http://127.0.0.1:8000/thumbnails?url=https://example.com/cat.png&size=64'
    curl -X POST 'http://127.0.0.1:8000/reports?days=7'          # -> {"task_id": "..."}
    curl http://127.0.0.1:8000/tasks/<task_id>

Environment: ``TIMEWHEEL_DB`` (the store, default ``tasks.db``; every worker process opens the
same file) and ``REPORT_DELAY`` (seconds before a report is built, default 5).

The TimeWheel is created at import but started by ``timewheel_lifespan`` (from
``timewheel.contrib.fastapi``) in each worker process, after any fork, and stopped at shutdown,
letting running tasks finish (``exit_grace``, 5 s) and recording them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI, HTTPException

from timewheel import TaskFailed, TaskNotFound, TimeWheel
from timewheel.contrib.fastapi import timewheel_lifespan

REPORT_DELAY = float(os.environ.get("REPORT_DELAY", "5"))

hu = TimeWheel(os.environ.get("TIMEWHEEL_DB", "tasks.db"), workers=4)


# Explicit names: a task must have the same name in every process, however the module is
# imported (examples.fastapi_app, fastapi_app, __main__).
@hu.task(name="media.make_thumbnail", retries=2, retry_delay=0.5)
async def make_thumbnail(url: str, size: int) -> dict[str, Any]:
    await asyncio.sleep(0.05)            # a real app would fetch and resize the image here
    return {"url": url, "size": size, "thumbnail": f"{url}?w={size}"}


@hu.task(name="reports.build")
def build_report(days: int) -> dict[str, Any]:
    return {"days": days, "rows": days * 24}


# (an app with a lifespan of its own: timewheel_lifespan(hu, lifespan=its_own))
app = FastAPI(title="timewheel example", lifespan=timewheel_lifespan(hu))


@app.post("/thumbnails")
async def thumbnail(url: str, size: int = 128) -> dict[str, Any]:
    # delay() commits to the file, which may wait for another process: not on the loop.
    handle = await asyncio.to_thread(make_thumbnail.delay, url, size)
    try:
        return await handle.aresult(timeout=10)
    except TimeoutError:
        raise HTTPException(504, detail={"task_id": handle.id, "status": handle.status}) from None
    except TaskFailed as exc:
        raise HTTPException(502, detail={"task_id": handle.id, "error": exc.error}) from None


@app.post("/reports", status_code=202)
def report(days: int = 7) -> dict[str, str]:
    # A plain def: FastAPI runs it in its thread pool, so the commit blocks no loop.
    handle = build_report.options(count_down=REPORT_DELAY).delay(days)
    return {"task_id": handle.id}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    try:
        handle = hu.get(task_id)
        rec = handle.record
    except TaskNotFound:
        raise HTTPException(404, detail="no such task (or its result expired)") from None
    out: dict[str, Any] = {"task_id": task_id, "name": rec.name, "status": rec.status, "eta": rec.eta}
    if rec.status == "succeeded":
        out["result"] = handle.result(timeout=0)
    elif rec.error:
        out["error"] = rec.error
    return out


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
