"""The timewheel web view inside a FastAPI app, at /timewheel, behind a bearer token.

    TIMEWHEEL_DB=tasks.db DASHBOARD_TOKEN=a-long-random-token uvicorn examples.fastapi_dashboard:app
    open http://127.0.0.1:8000/timewheel/ and sign in with the token; or, from a script:
    curl -H "Authorization: Bearer $DASHBOARD_TOKEN" http://127.0.0.1:8000/timewheel/api/inspect

``make_asgi_app`` wraps the same WSGI application as ``make_app`` for ASGI hosts (FastAPI,
Starlette), through a2wsgi: each request runs in a thread pool, off the event loop, as the
view's blocking store reads must.  Retry, cancel and purge are allowed here; every change
from a page carries a CSRF token, and from a script the bearer token.  To use the app's own
authentication instead, pass ``authorize=lambda environ: ...`` (it gets the WSGI environ:
headers as ``HTTP_*`` keys, cookies in ``HTTP_COOKIE``).

Environment: ``TIMEWHEEL_DB`` (the store, default ``tasks.db``), ``DASHBOARD_TOKEN``
(required, at least 8 characters), ``PORT`` (for ``python examples/fastapi_dashboard.py``).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI

from timewheel import TimeWheel
from timewheel.web import make_asgi_app

hu = TimeWheel(os.environ.get("TIMEWHEEL_DB", "tasks.db"))


@hu.task(name="reports.build")
def build_report(days: int) -> int:
    return days * 24


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    hu.start()
    try:
        yield
    finally:
        await asyncio.to_thread(hu.stop)


app = FastAPI(title="timewheel dashboard example", lifespan=lifespan)
app.mount("/timewheel", make_asgi_app(hu, token=os.environ["DASHBOARD_TOKEN"], allow_actions=True))


@app.post("/reports", status_code=202)
def report(days: int = 7) -> dict[str, Any]:
    return {"task_id": build_report.delay(days, count_down=60).id}


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
