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


# -- issue 19: links, redirects and what the pages show -----------------------------------------

LONG_NAME = "billing.invoices.monthly_statement_renderer"
LONG_ERROR = "RuntimeError: " + " ".join(f"the statement for customer {i} could not be rendered"
                                         for i in range(12))
WIDE_NUMBER = re.compile(r"\d{1,3}(,\d{3}){2,}|\d{7,}")     # a tick number: 1,796,675,685


def mid_word_wraps(pg) -> list[str]:
    """Every place where a task name on the page wraps inside a word (between two letters,
    digits or underscores): it may wrap after its dots, or where text wraps anyway."""
    return pg.evaluate(r"""() => {
        const bad = [];
        for (const cell of document.querySelectorAll("td.name")) {
            const chars = [];
            const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
            for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                for (let i = 0; i < n.length; i++) {
                    const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
                    const box = r.getClientRects()[0];
                    if (box) chars.push([n.data[i], Math.round(box.top)]);
                }
            }
            const word = /[\p{L}\p{N}_]/u;
            for (let i = 1; i < chars.length; i++)
                if (chars[i][1] > chars[i - 1][1] + 2 && word.test(chars[i - 1][0]) && word.test(chars[i][0]))
                    bad.push(cell.textContent + " wraps between " + chars[i - 1][0] + " and " + chars[i][0]);
        }
        return bad;
    }""")


def test_names_do_not_wrap_mid_word(page, site) -> None:
    server, store, demo, _ = site
    from timewheel.testing import record, run_as_worker
    now = time.time()
    failing = [record(f"long{i}", now - 100 + i, name=LONG_NAME) for i in range(3)]
    store.add(failing)
    for rec in failing:
        run_as_worker(store, rec, DEAD_OWNER, False, error=LONG_ERROR)
    store.add([record(f"soon{i}", now + 5 + i, name=LONG_NAME) for i in range(2)])
    pg = page
    for width in (1400, 900, 600):
        pg.set_viewport_size({"width": width, "height": 1000})
        for path in ("failed", "tasks?status=failed", "tasks/long1", ""):
            pg.goto(server.url + path)
            pg.wait_for_selector("td.name")
            assert mid_word_wraps(pg) == [], (width, path)
        shot(pg, f"names-{width}")


def test_times_not_tick_numbers(page, site) -> None:
    server, store, demo, _ = site
    pg = page
    pg.goto(server.url)
    pg.wait_for_selector("#ticker dd")
    ticker = pg.text_content("#ticker")
    assert not WIDE_NUMBER.search(ticker), ticker
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", pg.text_content("#horizon"))
    assert re.search(r"slot \d+ of 3,600", pg.text_content("#now"))
    pg.goto(server.url + "wheel")
    pg.wait_for_selector("#ring-svg .slot")
    first = min(demo.placed)
    pg.click(f'#ring-svg [data-slot="{first % store.wheel.slots}"]')
    pg.wait_for_selector("#slot-tasks")
    for part in ("#slot-body", "#wheel-facts"):
        assert not WIDE_NUMBER.search(pg.text_content(part)), pg.text_content(part)
    assert pg.text_content("#cell-title").startswith("Due ")
    turns = [c.text_content() for c in pg.query_selector_all("#slot-cells tr.cell td:first-child")]
    assert turns in (["this turn", "next turn"], ["next turn", "in 2 turns"]), turns
    shot(pg, "wheel-slot")


def test_an_empty_wheel_says_so(page, tmp_path) -> None:
    path = str(tmp_path / "empty.db")
    SqliteDictStore(path).close()
    with serve(path) as server:
        page.goto(server.url + "wheel")
        page.wait_for_selector("#legend span")
        legend = page.text_content("#legend")
        assert "0 tasks" not in legend and "up to 0" not in legend, legend
        assert page.text_content("#legend-outer") == "no task is due in the next 24 revolutions"
        shot(page, "wheel-empty")


def test_links_to_tasks_with_tricky_ids(page, site) -> None:
    """Issue 19.9: ids are free text; every link to one, server-rendered or drawn by the
    page's script, opens that task, and its page's buttons act on it."""
    server, store, demo, _ = site
    from .web_server import TRICKY_IDS, add_tricky
    add_tricky(store, time.time() - 60)            # all overdue: the first ten lead "Next due"
    pg = page
    pg.on("dialog", lambda d: d.accept())
    pg.goto(server.url + "tasks?name=tricky.ids&limit=100")
    hrefs = {a.text_content(): a.get_attribute("href") for a in pg.query_selector_all("table.tasks a.id")}
    assert sorted(hrefs) == sorted(TRICKY_IDS)
    for task_id, href in hrefs.items():
        pg.goto(server.url + "tasks?name=tricky.ids&limit=100")
        pg.click(f'table.tasks tr[data-id="{css(task_id)}"] a.id')
        pg.wait_for_selector("h1 code.id")
        assert pg.text_content("h1 code.id") == task_id, (task_id, href, pg.url)
    pg.goto(server.url)
    pg.wait_for_selector("#next-due a.id")
    drawn = [a.text_content() for a in pg.query_selector_all("#next-due a.id")]
    assert drawn == TRICKY_IDS[:10]
    for i, task_id in enumerate(drawn):
        pg.goto(server.url)
        pg.wait_for_selector("#next-due a.id")
        pg.query_selector_all("#next-due a.id")[i].click()
        pg.wait_for_selector("h1 code.id")
        assert pg.text_content("h1 code.id") == task_id, (task_id, pg.url)
    for task_id in ("..", "a/../b"):                # the task page's button acts on its task
        pg.goto(server.url + "tasks?name=tricky.ids&limit=100")
        pg.click(f'table.tasks tr[data-id="{css(task_id)}"] a.id')
        pg.click("#cancel")
        pg.wait_for_selector(".flash")
        assert pg.text_content(".flash") == "cancelled 1 task(s)"
        assert pg.text_content("h1 code.id") == task_id
        assert store.get(task_id).status == "cancelled"
    assert [store.get(i).status for i in TRICKY_IDS if i not in ("..", "a/../b")] == ["pending"] * 19


def css(text: str) -> str:
    """``text`` inside a CSS attribute selector's double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def test_redirects_stay_on_the_view_in_a_browser(page, tmp_path) -> None:
    """Issue 19.8: the browser itself follows /login?next=... (no token: it redirects at once)."""
    from urllib.parse import quote as q
    path = str(tmp_path / "tasks.db")
    make_store(path)[0].close()
    from .test_web_hostile import TRICKY_NEXT
    with serve(path) as server:
        origin = server.url.rstrip("/")
        for value in TRICKY_NEXT:
            page.goto(server.url + "login?next=" + q(value, safe=""))
            assert page.url.startswith(origin + "/"), (value, page.url)
    page.problems.clear()       # (some targets are paths of the view that do not exist: 404s)
