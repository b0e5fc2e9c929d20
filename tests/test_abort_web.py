"""The web view's Abort button (issue 23) in a real browser (headless Chromium, as
tests/test_web_browser.py), against a live ``timewheel web --allow-actions`` on a file store
whose task runs in a real worker process (tests/abort_worker.py)."""

from __future__ import annotations

import pytest

from timewheel.testing import serve

from .abort_worker import make
from .test_abort_processes import _entries, _wait, run_worker


@pytest.fixture
def running(tmp_path):
    path = str(tmp_path / "tasks.db")
    gen = run_worker(path, tmp_path)
    log = next(gen)
    try:
        yield path, log
    finally:
        gen.close()


def test_the_abort_button_stops_a_task_running_in_another_process(page, running) -> None:
    path, log = running
    hu, t = make(path, log)
    h = t["spin"].delay(60.0)
    _wait(lambda: any(e[0] == "start" and e[2] == h.id for e in _entries(log)), 30, "the task to start")
    pg = page
    pg.on("dialog", lambda d: d.accept())
    with serve(path, "--allow-actions") as server:
        pg.goto(server.url + f"tasks/{h.id}")
        assert pg.query_selector("#abort") and not pg.query_selector("#cancel")
        pg.click("#abort")
        pg.wait_for_selector(".flash")
        assert pg.text_content(".flash") == "asked 1 running task(s) to abort"
        _wait(lambda: h.status == "aborted", 10, "the run to end aborted")
        ends = [e for e in _entries(log) if e[0] == "end" and e[2] == h.id]
        assert [e[3] for e in ends] == ["aborted"]
        pg.goto(server.url + f"tasks/{h.id}")
        assert "aborted" in pg.text_content("#task-facts")
        assert not pg.query_selector("#abort") and pg.query_selector("#retry")   # aborted: retryable
    with serve(path) as server:                       # read-only: no button
        other = t["spin"].delay(60.0)
        _wait(lambda: other.status == "running", 30, "the next task to start")
        pg.goto(server.url + f"tasks/{other.id}")
        assert not pg.query_selector("#abort")
        other.abort()


def _running_store(path: str):
    from timewheel.store import SqliteDictStore

    from .conftest import make_record
    store = SqliteDictStore(path)
    store.add([make_record("r1", store.now() - 1)])
    store.advance(store.wheel.current_tick(store.now()) + 1, 100, store.liveness.token)
    (run,) = store.claim("host:1:someone", store.now(), 1).records
    return store, run


def test_abort_follows_the_actions_and_csrf_rules_of_the_other_buttons(tmp_path) -> None:
    import httpx

    from .test_web import csrf
    path = str(tmp_path / "tasks.db")
    store, run = _running_store(path)
    try:
        with serve(path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            token = csrf(client, "tasks/r1")
            assert 'id="abort"' not in client.get("tasks/r1").text
            r = client.post("api/tasks/r1/abort", headers={"X-CSRF-Token": token})
            assert r.status_code == 403 and "actions are off" in r.json()["error"]
            r = client.post("bulk", data={"verb": "abort", "ids": "r1", "csrf_token": token})
            assert r.status_code == 403
        assert store.get("r1").abort is None
        with serve(path, "--allow-actions") as server, \
                httpx.Client(base_url=server.url, timeout=10) as client:
            assert 'id="abort"' in client.get("tasks/r1").text
            r = client.post("api/tasks/r1/abort")
            assert r.status_code == 403 and "CSRF" in r.json()["error"]
            r = client.post("tasks/r1/abort", data={"csrf_token": "forged"})
            assert r.status_code == 403
            assert store.get("r1").abort is None
            h = {"X-CSRF-Token": csrf(client, "")}
            r = client.post("api/tasks/r1/abort", headers=h)
            assert r.status_code == 200
            assert r.json() == {"aborting": ["r1"], "cancelled": [], "skipped": [], "unknown": []}
            rec = store.get("r1")
            assert rec.status == "running" and rec.abort is not None and rec.rev == run.rev   # the fence kept
            page = client.get("tasks/r1").text
            assert 'id="abort"' not in page and "(asked to abort)" in page
            assert client.post("api/tasks/nope/abort", headers=h).status_code == 404
    finally:
        store.close()


def test_progress_on_the_task_and_running_pages(tmp_path) -> None:
    import httpx

    from timewheel.records import with_progress
    path = str(tmp_path / "tasks.db")
    store, run = _running_store(path)
    try:
        with serve(path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            assert 'id="progress"' not in client.get("tasks/r1").text
            assert store.note(run, with_progress(run, (30, 120, "rows <b>", store.now())))
            page = client.get("tasks/r1").text
            assert 'id="progress">30/120 (25%) rows &lt;b&gt;' in page
            assert '<td class="progress">30/120 (25%) rows &lt;b&gt;' in client.get("running").text
            row = client.get("api/tasks/r1").json()["progress"]
            assert (row["done"], row["total"], row["note"]) == (30, 120, "rows <b>")
    finally:
        store.close()
