"""Flow control in the web view (issue 21): a live ``timewheel web`` on a store with queues, a
full limit and parked tasks shows per-queue and per-limit counts, why a due task waits, and --
with actions allowed -- pauses and resumes a queue from its button (in a real browser) and from
the API."""

from __future__ import annotations

import httpx
import pytest

from timewheel import TimeWheel
from timewheel.testing import serve

from .conftest import WAIT, expect
from .test_web import csrf


@pytest.fixture
def flow_store(tmp_path):
    path = str(tmp_path / "tasks.db")
    hu = TimeWheel(path)
    report = hu.task(name="reports.build", queue="reports")(lambda n: n)
    one = hu.task(name="one.at.a.time", concurrency=1)(lambda n: n)
    ids = {"r": report.delay(1).id, "a": one.delay(1).id, "b": one.delay(2).id}
    s = hu.store
    s.advance(s.wheel.current_tick(s.now()) + 2, 1000, "test")
    s.claim("999999:deadbeef:999999", s.now(), 2, queues=frozenset({"default"}))    # a runs, b parks
    yield path, hu, ids
    hu.close()


def test_the_overview_and_task_pages_show_queues_limits_and_why(flow_store) -> None:
    path, hu, ids = flow_store
    with serve(path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("").text
        assert 'id="queues"' in page and 'data-queue="reports"' in page and "no process serves it" in page
        assert "task:one.at.a.time" in page and ">1/1<" in page
        assert "Pause" not in page                       # read-only: no buttons
        assert "no process has called start()" in client.get(f"tasks/{ids['b']}").text
        assert client.get("api/task", params={"id": ids["b"]}).json()["limits"] == [
            {"key": "task:one.at.a.time", "concurrency": 1, "rate": None}]
        listed = client.get("api/tasks", params={"queue": "reports"}).json()["tasks"]
        assert [t["id"] for t in listed] == [ids["r"]]
        assert client.get("api/tasks", params={"queue": "a:b"}).status_code == 400
        token = csrf(client, "")
        r = client.post("api/pause", data={"queue": "reports"}, headers={"X-CSRF-Token": token})
        assert r.status_code == 403 and hu.paused() == frozenset()


def test_pause_and_resume_from_the_api(flow_store) -> None:
    path, hu, ids = flow_store
    with serve(path, "--allow-actions") as server, httpx.Client(base_url=server.url, timeout=10) as client:
        h = {"X-CSRF-Token": csrf(client, "")}
        r = client.post("api/pause", data={"queue": "reports"}, headers=h)
        assert r.status_code == 200 and r.json()["paused_queues"] == ["reports"]
        assert hu.paused() == frozenset({"reports"})
        assert "reports&#39; is paused" in client.get(f"tasks/{ids['r']}").text
        assert client.post("api/pause", data={"queue": "bad:name"}, headers=h).status_code == 400
        assert client.post("api/resume", data={"queue": "reports"}, headers=h).json()["changed"] is True
        assert hu.paused() == frozenset()


def test_the_pause_button_pauses_and_resumes_in_a_browser(page, flow_store) -> None:
    path, hu, ids = flow_store
    with serve(path, "--allow-actions") as server:
        page.on("dialog", lambda d: d.accept())
        page.goto(server.url)
        row = page.locator('#queues tr[data-queue="reports"]')
        row.locator("button", has_text="Pause").click()
        page.wait_for_selector(".flash", timeout=WAIT)
        assert page.text_content(".flash") == "queue reports paused"
        assert hu.paused() == frozenset({"reports"})
        expect(page.locator('#queues tr[data-queue="reports"] .badge')).to_have_text("paused")
        page.locator('#queues tr[data-queue="reports"] button', has_text="Resume").click()
        page.wait_for_selector(".flash", timeout=WAIT)
        assert hu.paused() == frozenset()
