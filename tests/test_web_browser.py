"""The web view in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) against a live ``timewheel web`` on a store with pending, running, failed and
finished tasks.  One browser for the module; a screenshot of every page is kept under
``$TIMEWHEEL_ARTIFACTS`` (default ``tests/artifacts/``).

A missing browser or driver fails these tests: ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from timewheel.records import PENDING
from timewheel.store import SqliteDictStore
from timewheel.testing import DEAD_OWNER, HOSTILE_ERROR, serve

from .conftest import ARTIFACTS, WAIT, expect
from .web_server import finish, make_store


@pytest.fixture
def site(tmp_path):
    path = str(tmp_path / "tasks.db")
    store, demo = make_store(path)
    with serve(path, "--allow-actions", "--refresh", "1") as server:
        yield server, store, demo, path
    store.close()


def shot(pg, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    pg.screenshot(path=os.path.join(ARTIFACTS, f"web-{name}.png"), full_page=True)


def count(pg, status: str) -> int:
    return int(pg.text_content(f'[data-count="{status}"]').replace(",", ""))


def slot_loads(store: SqliteDictStore, revolutions: int = 24) -> dict[int, int]:
    """Pending tasks per slot over the coming revolutions, counted here from the records."""
    w = store.wheel
    current = w.current_tick(time.time())
    out: dict[int, int] = {}
    for rec in store.scan(PENDING):
        tick = w.due_tick(rec.eta)
        if current < tick <= current + revolutions * w.slots:
            out[tick % w.slots] = out.get(tick % w.slots, 0) + 1
    return out


def test_every_page_renders_what_the_store_holds(page, site) -> None:
    server, store, demo, _ = site
    pg = page
    pg.goto(server.url)
    pg.wait_for_selector("#ticker dd")
    for status in ("pending", "running", "succeeded", "failed", "cancelled", "misfired"):
        assert count(pg, status) == len(getattr(demo, status)), status
    assert pg.text_content("#ticking") == "NOT ticking"      # no process runs this store
    assert [a.text_content() for a in pg.query_selector_all("#next-due a.id")][:3] == ["p000", "p001", "p003"]
    assert pg.query_selector("#chart-throughput canvas") and pg.query_selector("#chart-lateness canvas")
    shot(pg, "overview")

    pg.goto(server.url + "wheel")
    pg.wait_for_selector("#ring-svg .slot")
    expected = slot_loads(store)
    drawn = {int(p.get_attribute("data-slot")): int(p.get_attribute("data-count"))
             for p in pg.query_selector_all("#ring-svg .slot")}
    assert drawn == expected
    turn = {int(p.get_attribute("data-slot")): int(p.get_attribute("data-count"))
            for p in pg.query_selector_all("#ring-svg .turn")}
    assert turn == slot_loads(store, revolutions=1) and len(turn) == 3      # p000+p001, p003, p004
    current = store.wheel.current_tick(time.time()) % store.wheel.slots
    assert abs(int(pg.get_attribute("#hand", "data-slot")) - current) <= 1
    first = min(demo.placed)
    slot = first % store.wheel.slots
    pg.click(f'#ring-svg [data-slot="{slot}"]')
    pg.wait_for_selector(f'#slot-body[data-slot="{slot}"] #slot-tasks')
    cycles = [int(r.get_attribute("data-cycle")) for r in pg.query_selector_all("#slot-cells tr.cell")]
    assert cycles == [first // store.wheel.slots, first // store.wheel.slots + 1]   # p002, a turn later
    assert [a.text_content() for a in pg.query_selector_all("#slot-tasks a.id")] == demo.placed[first]
    shot(pg, "wheel")
    pg.click(f'#slot-cells tr[data-cycle="{cycles[1]}"]')
    expect(pg.locator("#slot-tasks a.id")).to_have_text(["p002"], timeout=WAIT)

    pg.goto(server.url + "timeline")
    pg.wait_for_selector("#chart-timeline canvas")
    rows = pg.query_selector_all("#timeline-table tbody tr")
    assert sum(int(r.query_selector_all("td")[2].text_content()) for r in rows) == len(demo.pending)
    shot(pg, "timeline")

    pg.goto(server.url + "tasks")
    pg.select_option('select[name="status"]', "pending")
    pg.fill('input[name="name"]', "billing.charge")
    pg.click("#filters button")
    pg.wait_for_url(re.compile(r"status=pending"))
    ids = [r.get_attribute("data-id") for r in pg.query_selector_all("table.tasks tbody tr")]
    assert ids == [f"q{i:03d}" for i in range(20)]
    pg.fill('input[name="id"]', "q01")
    pg.click("#filters button")
    pg.wait_for_url(re.compile(r"id=q01"))
    assert [r.get_attribute("data-id") for r in pg.query_selector_all("table.tasks tbody tr")] == [
        f"q01{i}" for i in range(10)]
    shot(pg, "tasks")

    pg.goto(server.url + "tasks/f000")
    assert pg.text_content("#args") == "('f000', 42)"
    assert pg.text_content("#error") == HOSTILE_ERROR.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert pg.query_selector("#retry") and not pg.query_selector("#cancel")
    shot(pg, "task")

    pg.goto(server.url + "failed")
    assert [r.get_attribute("data-id") for r in pg.query_selector_all("#section-failed tbody tr")] == \
        list(reversed(demo.failed))                          # most recently finished first
    assert pg.query_selector("#section-failed td.error").text_content().startswith("ValueError: <img")
    shot(pg, "failed")

    pg.goto(server.url + "running")
    rows = pg.query_selector_all("table.tasks tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == demo.running
    assert DEAD_OWNER in rows[0].text_content() and "gone" in rows[0].text_content()
    shot(pg, "running")


def test_the_overview_updates_live_when_a_task_finishes(page, site) -> None:
    server, store, demo, _ = site
    pg = page
    pg.goto(server.url)
    pg.wait_for_selector("#ticker dd")
    pg.evaluate("window.loadedOnce = true")
    succeeded, running = count(pg, "succeeded"), count(pg, "running")
    finish(store, demo.running[0])
    expect(pg.locator("[data-count=succeeded]")).to_have_text(str(succeeded + 1), timeout=WAIT)
    assert count(pg, "running") == running - 1
    assert pg.evaluate("window.loadedOnce") is True          # the same page: not reloaded
    finish(store, demo.running[1], ok=False)
    expect(pg.locator("[data-count=failed]")).to_have_text(str(len(demo.failed) + 1), timeout=WAIT)
    assert pg.evaluate("window.loadedOnce") is True


def test_bulk_retry_from_the_failed_page(page, site) -> None:
    server, store, demo, _ = site
    pg = page
    pg.goto(server.url + "failed")
    pg.check("#section-failed .pick-all")
    assert all(c.is_checked() for c in pg.query_selector_all('#section-failed input[name="ids"]'))
    pg.click("#section-failed .retry-selected")
    pg.wait_for_selector(".flash")
    assert pg.text_content(".flash") == f"retried {len(demo.failed)} task(s)"
    assert [store.get(i).status for i in demo.failed] == ["pending"] * len(demo.failed)
    assert pg.text_content("#section-failed td.empty") == "none"
    pg.click("#retry-all-misfired")
    expect(pg.locator(".flash")).to_have_text("retried 3 task(s)", timeout=WAIT)
    assert [store.get(i).status for i in demo.misfired] == ["pending"] * 3


def test_actions_are_refused_when_not_allowed_or_forged(page, site) -> None:
    server, store, demo, path = site
    pg = page
    with serve(path) as readonly:                            # the same store, read-only
        pg.goto(readonly.url + "failed")
        assert not pg.query_selector(".retry-selected") and not pg.query_selector("#purge-form")
        pg.goto(readonly.url + "tasks/f000")
        assert not pg.query_selector("#retry")
        status = pg.evaluate("""async () => {
            const token = document.querySelector('meta[name=csrf-token]').content;
            const r = await fetch(document.body.dataset.root + 'api/tasks/f000/retry',
                                  {method: 'POST', headers: {'X-CSRF-Token': token}});
            return [r.status, (await r.json()).error];
        }""")
        assert status[0] == 403 and "actions are off" in status[1]
        # Another site's page (served here by the browser itself) whose form posts to the view
        # that allows actions: it cannot know the CSRF token.
        attack = f"""<form method="post" action="{server.url}bulk"><input name="verb" value="retry">
            <input name="ids" value="f000"><input name="csrf_token" value="guessed"></form>
            <script>document.forms[0].submit()</script>"""
        pg.route("http://attacker.test/", lambda route: route.fulfill(body=attack, content_type="text/html"))
        pg.goto(server.url)                                  # (the victim has the view's cookie)
        pg.goto("http://attacker.test/")
        pg.wait_for_url(server.url + "bulk")
        assert pg.text_content("h1") == "403" and "refused" in pg.text_content(".message")
    pg.goto(server.url + "tasks/f000")
    status = pg.evaluate("""async () => {
        const r = await fetch('f000/retry', {method: 'POST'});
        return r.status;
    }""")
    assert status == 403                                     # same origin, but no CSRF token
    assert store.get("f000").status == "failed"
    pg.click("#retry")                                       # the page's own form carries it
    pg.wait_for_selector(".flash")
    assert store.get("f000").status == "pending"
    assert pg.text_content(".flash") == "retried 1 task(s)"
