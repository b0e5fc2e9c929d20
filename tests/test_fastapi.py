"""timewheel.contrib.fastapi: the lifespan that runs the wheel (composed with the app's own),
the view behind the app's checks -- in-process through Starlette's TestClient on real files
and started wheels, then the app under a real ``uvicorn --workers 2``."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
from fastapi import FastAPI, Request

from timewheel import StoreError, TimeWheel
from timewheel.contrib.fastapi import mount_view, timewheel_lifespan, timewheel_view

from .mp_worker import read_lines, wait_for
from .servers import servers, tool  # noqa: F401 - servers is a fixture
from .site_tasks import check_view, run_once_over_http, started_pids, stop_while_running

# Raised by the installed Starlette about its own TestClient; nothing to do with this app.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")


def client(app: FastAPI) -> Any:
    from fastapi.testclient import TestClient
    return TestClient(app)


@pytest.fixture
def hu(tmp_path) -> Any:
    wheel = TimeWheel(str(tmp_path / "tasks.db"), tick=0.25, exit_grace=10)
    yield wheel
    wheel.close()


# -- the lifespan --------------------------------------------------------------------------------

def test_the_lifespan_runs_the_wheel_around_the_apps_own(hu) -> None:
    seen: list[tuple[str, bool]] = []
    ends: list[float] = []

    @hu.task(name="slow")
    def slow() -> str:
        time.sleep(1.0)
        ends.append(time.monotonic())
        return "done"

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        seen.append(("start", hu.running))
        yield {"db": "connected"}
        seen.append(("stop", hu.running))

    app = FastAPI(lifespan=timewheel_lifespan(hu, lifespan=own))

    @app.post("/slow")
    def enqueue(request: Request) -> dict[str, str]:
        return {"id": slow.delay().id, "db": request.state.db}

    assert not hu.running
    with client(app) as c:
        assert hu.running
        body = c.post("/slow").json()
        assert body["db"] == "connected"                   # the app's lifespan state passes through
        handle = hu.get(body["id"])
        wait_for(lambda: handle.status == "running", 10, what="the task to start")
        leaving = time.monotonic()
    assert not hu.running and ends and ends[0] > leaving   # shutdown waited for the running task
    assert handle.status == "succeeded"
    assert seen == [("start", True), ("stop", True)]       # started before, stopped after the app's own


def test_the_lifespan_without_one_of_the_apps_and_a_grace_that_runs_out(hu, caplog) -> None:
    release = threading.Event()

    @hu.task(name="stuck")
    def stuck() -> None:
        release.wait(20)

    app = FastAPI(lifespan=timewheel_lifespan(hu, grace=0.2))
    app.post("/stuck")(lambda: {"id": stuck.delay().id})
    with caplog.at_level(logging.WARNING, logger="timewheel.fastapi"):
        with client(app) as c:
            handle = hu.get(c.post("/stuck").json()["id"])
            wait_for(lambda: handle.status == "running", 10, what="the task to start")
            t0 = time.monotonic()
    assert time.monotonic() - t0 < 5 and not hu.running
    assert "1 task(s) still running after 0.2s" in caplog.text
    release.set()


@pytest.mark.parametrize("grace", [-1, "5", float("nan"), True])
def test_a_bad_grace_fails_at_once(hu, grace: Any) -> None:
    with pytest.raises(ValueError, match="grace must be a number of seconds"):
        timewheel_lifespan(hu, grace=grace)


def test_a_store_that_cannot_be_used_fails_the_start_up(tmp_path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    broken = TimeWheel(str(tmp_path / "afile" / "tasks.db"))
    app = FastAPI(lifespan=timewheel_lifespan(broken))
    with pytest.raises(StoreError):
        with client(app):
            pass
    assert not broken.running


# -- the view ------------------------------------------------------------------------------------

def test_the_view_needs_a_check() -> None:
    hu = TimeWheel(None)
    with pytest.raises(TypeError, match="authorize"):
        mount_view(FastAPI(), hu)                          # type: ignore[call-arg]
    with pytest.raises(TypeError, match="authorize must be a check"):
        timewheel_view(hu, authorize="admin")              # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_actions must be a bool or a check"):
        timewheel_view(hu, authorize=lambda r: True, allow_actions="yes")    # type: ignore[arg-type]


def test_the_view_answers_behind_the_apps_checks(hu, caplog) -> None:
    asked: list[str] = []

    async def has_key(request: Request) -> bool:           # async: awaited on the loop
        asked.append("authorize")
        return request.headers.get("x-key") == "k"

    def is_admin(request: Request) -> bool:                # sync: in the thread pool, off the loop
        asked.append("actions")
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        return request.headers.get("x-admin") == "yes"

    @hu.task(name="fails")
    def fails() -> None:
        raise RuntimeError("no")

    app = FastAPI(lifespan=timewheel_lifespan(hu))
    mount_view(app, hu, "/ops/tw", authorize=has_key, allow_actions=is_admin)
    with client(app) as c:
        failed = fails.delay()
        wait_for(lambda: failed.status == "failed", 10, what="the task to fail")
        for path in ("/ops/tw/", "/ops/tw/api/inspect", "/ops/tw/metrics"):
            assert c.get(path).status_code == 403, path
        assert asked == ["authorize"] * 3                  # actions are asked only of those let in
        key = {"x-key": "k"}
        page = c.get("/ops/tw/", headers=key)
        assert page.status_code == 200 and 'src="/ops/tw/static/app.js"' in page.text
        assert c.get("/ops/tw/api/inspect", headers=key).json()["counts"]["failed"] == 1
        csrf = {**key, "x-csrf-token": c.cookies["timewheel_csrf"]}
        assert c.post(f"/ops/tw/api/tasks/{failed.id}/retry", headers=csrf).status_code == 403
        r = c.post(f"/ops/tw/api/tasks/{failed.id}/retry", headers={**csrf, "x-admin": "yes"})
        assert r.status_code == 200 and r.json()["retried"] == [failed.id]
        r = c.post(f"/ops/tw/api/tasks/{failed.id}/cancel", headers={"x-admin": "yes"})
        assert r.status_code == 403                        # the app's checks are not the view's CSRF

        def broken(request: Request) -> bool:
            raise KeyError("session")
        app.mount("/broken", timewheel_view(hu, authorize=broken))
        with caplog.at_level(logging.ERROR, logger="timewheel.fastapi"):
            assert c.get("/broken/api/inspect").status_code == 403
        assert "the web view's broken check failed" in caplog.text


# -- the app under uvicorn --workers 2 -----------------------------------------------------------

def test_under_uvicorn_each_worker_runs_the_wheel_and_tasks_run_once(tmp_path, servers) -> None:  # noqa: F811
    """The lifespan starts the wheel in each of uvicorn's worker processes (not its parent)
    and stops it, waiting for running tasks, when SIGTERM stops the server; tasks enqueued
    through HTTP run once; the view answers behind the app's checks."""
    env = {"RUN_LOG": str(tmp_path / "runs.log"), "EVENTS": str(tmp_path / "events.log"),
           "TIMEWHEEL_DB": str(tmp_path / "tasks.db"), "SITE_KEY": "site-key-1", "SITE_EXIT_GRACE": "10"}
    server = servers([tool("uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", "0",
                      "tests.fastapi_site:app"], env=env, name="uvicorn")
    server.wait_output(r"Application startup complete", count=2)
    server.url = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", server.output()).group(1)
    workers = set(server.pids(r"Started server process \[(\d+)\]"))
    (parent,) = server.pids(r"Started parent process \[(\d+)\]")
    assert len(workers) == 2 and parent not in workers
    server.wait(lambda: started_pids(env["TIMEWHEEL_DB"]) == workers, 30,
                what="a started wheel in each worker")
    tags = run_once_over_http(server, env["RUN_LOG"], workers)
    check_view(server)
    runs = stop_while_running(server, env["RUN_LOG"], env["TIMEWHEEL_DB"])
    assert runs.finished() >= tags
    # the app's own lifespan ran inside, in each worker, with the wheel running
    assert sorted(read_lines(env["EVENTS"])) == sorted([["lifespan", kind, str(pid), "True"]
                                                        for pid in workers for kind in ("start", "stop")])
