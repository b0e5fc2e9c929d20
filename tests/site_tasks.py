"""The tasks of the apps the framework tests run in real servers (tests/flask_site.py,
tests/fastapi_site.py), and what the tests check of both over HTTP.

Each run appends ``start <tag> <pid> <time>`` and ``end <tag> <pid> <time>`` to a run log
(:func:`tests.mp_worker.record`), so the tests count runs from the log, never from the
store's statuses.  :func:`started_pids` reads which processes have started a wheel on a file
store: each registers its doorbell there under its owner token (``pid:...``) until it stops.
(A claim may take more tasks than a process has idle workers, queued, so which processes ran
tasks proves nothing about which ones started.)
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Optional

from timewheel import TimeWheel

from .mp_worker import Runs, record

if TYPE_CHECKING:
    from .servers import Served

__all__ = ["record", "fail", "http", "started_pids", "run_once_over_http", "check_view",
           "stop_while_running"]


def started_pids(db: str) -> set[int]:
    """The pids of the processes whose wheel is started on the file store ``db``."""
    from .conftest import read_meta
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            meta = read_meta(con)
        finally:
            con.close()
    except sqlite3.OperationalError:          # not created yet
        return set()
    return {int(str(owner).split(":")[0]) for key, owner in meta.items() if key.startswith("bell:")}


def fail(tag: str) -> None:
    raise RuntimeError(f"{tag} fails, as it should")


def http(method: str, url: str, *, headers: Optional[dict[str, str]] = None,
         data: Optional[dict[str, Any]] = None, timeout: float = 10.0) -> tuple[int, Any, Any]:
    """(status, JSON body or text, headers) of one request; never raises for an HTTP error."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, got = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw.decode("utf-8", "replace"), got


# -- what the server tests check of both sites ------------------------------------------------------

#: the sites' checks: the key lets a request see the view, the admin header allows actions
KEY = {"X-Site-Key": "site-key-1"}
ADMIN = {"X-Site-Admin": "yes"}


def run_once_over_http(server: "Served", log: str, workers: set[int]) -> set[str]:
    """40 tasks enqueued by 4 requests each run once, in the server's workers; their tags."""
    url = server.url
    tags = {f"r{n}-{i}" for n in range(4) for i in range(10)}
    for n in range(4):
        status, body, _ = http("POST", url + "/enqueue", data={"task": "record", "calls": [
            {"tag": f"r{n}-{i}"} for i in range(10)]})
        assert status == 200 and body["running"], body
    server.wait(lambda: tags <= Runs(log).finished(), 30, what="the 40 tasks")
    runs = Runs(log)
    assert runs.duplicates() == {} and {int(p) for t in tags for p in runs.starts[t]} <= workers
    return tags


def check_view(server: "Served") -> None:
    """The view at /ops/tw, in whichever worker answers: refused without the key; with it,
    answered; retry allowed to an admin only, with the view's CSRF token."""
    url = server.url
    assert http("GET", url + "/ops/tw/api/inspect")[0] == 403
    status, body, _ = http("GET", url + "/ops/tw/api/inspect", headers=KEY)
    assert status == 200 and body["counts"]["succeeded"] == 40 and body["ticker"]["ticking"], body
    _, body, _ = http("POST", url + "/enqueue", data={"task": "fail", "calls": [{"tag": "f"}]})
    failed = body["ids"][0]
    task = url + f"/ops/tw/api/tasks/{failed}"
    server.wait(lambda: http("GET", task, headers=KEY)[1]["status"] == "failed", 20, what="the failing task")
    _, _, got = http("GET", url + "/ops/tw/", headers=KEY)
    csrf = re.search(r"timewheel_csrf=([^;]+)", got["Set-Cookie"]).group(1)
    with_csrf = {**KEY, "Cookie": f"timewheel_csrf={csrf}", "X-CSRF-Token": csrf}
    assert http("POST", url + f"/ops/tw/api/tasks/{failed}/retry", headers=with_csrf)[0] == 403
    status, body, _ = http("POST", url + f"/ops/tw/api/tasks/{failed}/retry", headers={**with_csrf, **ADMIN})
    assert status == 200 and body["retried"] == [failed]


def stop_while_running(server: "Served", log: str, db: str) -> Runs:
    """SIGTERM while a task runs: the server exits 0 once the task has finished and been
    recorded, and every worker has stopped its wheel.  The run log then."""
    _, body, _ = http("POST", server.url + "/enqueue",
                      data={"task": "record", "calls": [{"tag": "slow", "sleep": 3.0}]})
    server.wait(lambda: "slow" in Runs(log).starts, 20, what="the slow task to start")
    assert server.terminate(timeout=30) == 0, server.output()[-3000:]
    runs = Runs(log)
    assert "slow" in runs.finished() and runs.duplicates() == {}
    assert started_pids(db) == set()
    hu = TimeWheel(db, tick=0.25)
    try:
        assert hu.get(body["ids"][0]).status == "succeeded"
    finally:
        hu.close()
    return runs
