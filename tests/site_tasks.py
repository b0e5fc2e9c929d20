"""The tasks of the apps the framework tests run in real servers (tests/flask_site.py,
tests/fastapi_site.py), and the HTTP calls the tests make to them.

Each run appends ``start <tag> <pid> <time>`` and ``end <tag> <pid> <time>`` to a run log
(:func:`tests.mp_worker.record`), so the tests count runs from the log, never from the
store's statuses.  :func:`started_pids` reads which processes have started a wheel on a file
store: each registers its doorbell there under its owner token (``pid:...``) until it stops.
(A claim may take more tasks than a process has idle workers, queued, so which processes ran
tasks proves nothing about which ones started.)
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from typing import Any, Optional

from .mp_worker import Runs, record

__all__ = ["record", "fail", "http", "started_pids", "Runs"]


def started_pids(db: str) -> set[int]:
    """The pids of the processes whose wheel is started on the file store ``db``."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT value FROM timewheel "
                               "WHERE key >= 'm:bell:' AND key < 'm:bell;'").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:          # not created yet
        return set()
    return {int(str(value).split(":")[0]) for (value,) in rows}


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
