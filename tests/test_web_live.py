"""Issue 19.5: the web view shows what the store holds, within one refresh, whatever the other
processes on the store do -- started before any of them, while the last one exits and
another starts -- for every way the view is opened: ``timewheel web`` read-only, with
``--allow-actions``, and mounted in an application through its TimeWheel.

Real processes throughout: the view, and writers that open the store as an application
does.  A view that reads the file through a connection that never sees later writes
(``immutable=1``), or whose process drops its own SQLite locks by opening and closing
another descriptor on the file (the last writer then deletes the WAL under it), freezes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

from timewheel.store import SqliteDictStore
from timewheel.testing import serve

from .web_server import serve_mounted, writer

VIEWS = ["read-only", "actions", "mounted"]


@contextmanager
def view(kind: str, path: str) -> Iterator[httpx.Client]:
    if kind == "mounted":
        with serve_mounted(path) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client
    else:
        options = ["--allow-actions"] if kind == "actions" else []
        with serve(path, *options) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def shown(client: httpx.Client) -> set[str]:
    """The ids of the tasks the writers added, as the view lists them now -- after the
    overview page, which also reads the file's details (journal mode, sizes)."""
    assert client.get("").status_code == 200
    r = client.get("api/tasks", params={"name": "live.add", "limit": 500})
    assert r.status_code == 200, r.text
    return {t["id"] for t in r.json()["tasks"]}


def ids(prefix: str, n: int) -> set[str]:
    return {f"{prefix}{i:04d}" for i in range(n)}


def new_store(path: str) -> None:
    SqliteDictStore(path).close()
    assert not os.path.exists(path + "-wal")          # closed cleanly: no process has it open


@pytest.mark.parametrize("kind", VIEWS)
def test_a_view_started_before_any_writer_sees_their_tasks(tmp_path, kind) -> None:
    path = str(tmp_path / "tasks.db")
    new_store(path)
    with view(kind, path) as client:
        assert shown(client) == set()
        with writer(path) as a:
            a.add("a", 5)
            assert shown(client) == ids("a", 5)           # the next request, not some later one
            a.add("b", 3)
            assert shown(client) == ids("a", 5) | ids("b", 3)
            a.exit()
        assert shown(client) == ids("a", 5) | ids("b", 3)
        with writer(path) as b:
            b.add("c", 4)
            assert shown(client) == ids("a", 5) | ids("b", 3) | ids("c", 4)
            b.exit()


@pytest.mark.parametrize("kind", VIEWS)
def test_a_view_stays_live_while_the_last_writer_exits_and_another_starts(tmp_path, kind) -> None:
    path = str(tmp_path / "tasks.db")
    new_store(path)
    with writer(path) as a:
        a.add("a", 5)
        with view(kind, path) as client:
            assert shown(client) == ids("a", 5)
            a.exit()
            # The view still has the store open: the WAL is not the last writer's to delete.
            assert os.path.exists(path + "-wal")
            assert shown(client) == ids("a", 5)
            with writer(path) as b:
                b.add("b", 4)
                assert shown(client) == ids("a", 5) | ids("b", 4)
                b.add("c", 2)
                assert shown(client) == ids("a", 5) | ids("b", 4) | ids("c", 2)
                b.exit()
            assert shown(client) == ids("a", 5) | ids("b", 4) | ids("c", 2)
