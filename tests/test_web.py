"""The web view over real HTTP: a live ``timewheel web`` subprocess (or an example app that
mounts it) on a real store file; every page and endpoint, bad input, escaping, actions,
CSRF and authentication."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from markupsafe import escape

from timewheel import query
from timewheel.records import Outcome, end_run, start_run
from timewheel.store import SqliteDictStore
from timewheel.testing import DEAD_OWNER, HOSTILE_NAME, fill, record, serve, web_command
from timewheel.testing import processes as procs

from .conftest import ROOT, wait_for
from .web_server import make_store

PAGES = ["", "wheel", "timeline", "tasks", "tasks?status=failed", "failed", "running", "tasks/s000"]


def initial(html: str) -> Any:
    """The JSON a live page starts from (what the JS renders)."""
    m = re.search(r'<script type="application/json" id="initial">(.*?)</script>', html, re.S)
    assert m, html[:500]
    return json.loads(m.group(1))


def totals(store: SqliteDictStore) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status, _), n in store.counts().items():
        out[status] = out.get(status, 0) + n
    return out


def csrf(client: httpx.Client, url: str) -> str:
    """Load a page (which sets the CSRF cookie) and return the token."""
    r = client.get(url)
    assert r.status_code == 200, r.text
    token = client.cookies.get("timewheel_csrf")
    assert token and re.search(r'<meta name="csrf-token" content="([^"]+)">', r.text).group(1) == token
    return token


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A read-only view of a store with tasks in every state."""
    path = str(tmp_path_factory.mktemp("web") / "tasks.db")
    store, demo = make_store(path)
    with serve(path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield server, store, demo, client
    store.close()


@pytest.fixture
def actions(tmp_path):
    """A view with --allow-actions, on its own store (the tests change it)."""
    path = str(tmp_path / "tasks.db")
    store, demo = make_store(path)
    with serve(path, "--allow-actions") as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield server, store, demo, client
    store.close()


# -- what the pages show -----------------------------------------------------------------------


def test_the_failed_page_lists_aborted_tasks_and_retries_them(actions) -> None:
    """An aborted run (issue 23) is listed on the Failed page beside failed and misfired ones,
    with its error, and can be retried from there like them; the series counts it."""
    server, store, demo, client = actions
    now = time.time()
    store.add([record("ab1", now - 5)])
    (run,) = store.swap([(store.get("ab1"), start_run(store.get("ab1"), "me", now - 4))])
    asked = run._replace(abort=now - 3)                 # as abort() notes it: same rev
    (done,) = store.swap([(run, end_run(asked, Outcome(False, now - 4, now - 2, error="TaskAborted: stop")))])
    assert done is not None and done.status == "aborted"
    page = client.get("failed").text
    assert "Failed, misfired and aborted" in page and 'id="section-aborted"' in page
    assert 'data-id="ab1"' in page and "stopped on request" in page
    assert sum(b["aborted"] for b in client.get("api/series").json()["buckets"]) == 1
    token = csrf(client, "failed")
    r = client.post("bulk", data={"csrf_token": token, "verb": "retry", "all": "1", "status": "aborted",
                                  "next": "/failed"})
    assert r.status_code == 303 and store.get("ab1").status == "pending"

def test_every_page_shows_what_the_store_holds(site) -> None:
    server, store, demo, client = site
    for page in PAGES:
        r = client.get(page)
        assert r.status_code == 200, (page, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
    overview = initial(client.get("").text)
    assert {s: overview["inspect"]["counts"][s] for s in totals(store)} == totals(store)
    assert overview["inspect"]["counts"]["failed"] == len(demo.failed) == 6
    assert [d["id"] for d in overview["inspect"]["next_due"][:2]] == ["p000", "p001"]
    assert overview["stats"]["lateness"]["runs"] > 0
    failed = client.get("failed").text
    for task_id in demo.failed + demo.misfired:
        assert f'data-id="{task_id}"' in failed
    assert "skipped: would have started" in failed
    running = client.get("running").text
    assert all(f'data-id="{i}"' in running for i in demo.running)
    assert DEAD_OWNER in running and ">gone</span>" in running
    tasks = client.get("tasks", params={"status": "pending", "limit": 500}).text
    assert all(f'data-id="{escape(i)}"' in tasks for i in demo.pending)
    task = client.get("tasks/s000").text
    assert "(&#39;s000&#39;, 42)" in task and "{&#39;sent&#39;: &#39;s000&#39;}" in task
    timeline = client.get("timeline", params={"hours": 48}).text
    assert sum(b["count"] for b in initial(timeline)["buckets"]) == len(demo.pending)
    wheel = initial(client.get("wheel").text)
    for tick, ids in demo.placed.items():
        slot = tick % wheel["slots"]
        assert wheel["load"][slot] >= len(ids), (slot, ids)


def test_api_says_what_the_query_layer_says(site) -> None:
    server, store, demo, client = site
    now = time.time()
    got = client.get("api/inspect").json()
    want = query.inspect_data(store, now)
    assert got.keys() == want.keys()
    assert got["counts"] == want["counts"]
    assert got["next_due"] == [{**d, "due_in": pytest.approx(d["due_in"], abs=5)} for d in want["next_due"]]
    assert got["ring"]["occupied_cells"] == want["ring"]["occupied_cells"]
    for status in ("pending", "failed", "succeeded", "running"):
        got = client.get("api/tasks", params={"status": status, "limit": 500}).json()
        assert [t["id"] for t in got["tasks"]] == [
            t["id"] for t in query.tasks_data(store, now, status=status, limit=500)["tasks"]]
    shown = client.get("api/tasks/f000").json()
    assert shown.keys() == query.show_data(store, "f000", now).keys()
    assert shown["status"] == "failed" and shown["traceback"].startswith("Traceback")
    stats = client.get("api/stats").json()
    assert stats["counts"] == query.stats_data(store, now)["counts"]
    timeline = client.get("api/timeline", params={"hours": 2}).json()
    assert timeline["hours"] == 2 and {"buckets", "overdue", "later", "bucket_seconds"} <= timeline.keys()
    wheel = client.get("api/wheel", params={"revolutions": 2}).json()
    for tick, ids in demo.placed.items():
        cell = client.get(f"api/wheel/slots/{tick % wheel['slots']}", params={"revolutions": 2}).json()
        by_tick = {c["tick"]: c["count"] for c in cell["cells"]}
        assert by_tick.get(tick) == len(ids), (tick, cell["cells"])
    first = min(demo.placed)
    cell = client.get(f"api/wheel/slots/{first % wheel['slots']}").json()
    assert [t["id"] for t in cell["tasks"]] == demo.placed[first]
    series = client.get("api/series").json()
    assert sum(b["succeeded"] for b in series["buckets"]) == len(demo.succeeded)
    assert sum(b["failed"] for b in series["buckets"]) == len(demo.failed)


def test_tasks_page_through_with_after(site) -> None:
    server, store, demo, client = site
    seen: list[str] = []
    after = None
    while True:
        query_string = {"status": "pending", "limit": 4, **({"after": after} if after else {})}
        page = client.get("api/tasks", params=query_string)
        ids = [t["id"] for t in page.json()["tasks"]]
        seen += ids
        if len(ids) < 4:
            break
        after = ids[-1]
        html = client.get("tasks", params={"status": "pending", "limit": 4, "after": ids[0]}).text
        assert 'id="next-page"' in html and "first page" in html
    assert seen == [r.id for r in store.scan("pending")]
    assert len(set(seen)) == len(demo.pending)


BAD = [
    ("tasks/nope", 404, "no task nope"),
    ("api/tasks/nope", 404, "no task nope"),
    ("tasks?status=bogus", 400, "status must be one of"),
    ("api/tasks?status=bogus", 400, "status must be one of"),
    ("api/tasks?limit=x", 400, "limit must be a whole number"),
    ("api/tasks?limit=-1", 400, "limit must be a whole number"),
    ("api/tasks?limit=99999999999999999999", 400, "limit must be a whole number"),
    ("api/tasks?after=nope", 404, "no task nope"),
    ("api/timeline?hours=nan", 400, "hours must be a number"),
    ("api/timeline?hours=inf", 400, "hours must be a number"),
    ("timeline?hours=-1", 400, "hours must be a number"),
    ("api/wheel?revolutions=0", 400, "revolutions must be a whole number"),
    ("wheel?revolutions=1e3", 400, "revolutions must be a whole number"),
    ("api/wheel/slots/3600", 404, "nothing at"),
    ("api/wheel/slots/-1", 404, "nothing at"),
    ("api/wheel/slots/5?cycle=x", 400, "cycle must be a whole number"),
    ("api/stats?recent=0", 400, "recent must be a whole number"),
    ("api/series?minutes=abc", 400, "minutes must be a whole number"),
    ("tasks?name=" + "x" * 600, 400, "name must be at most"),
    ("tasks/s000?full=maybe", 400, "full must be one of"),
    ("no/such/page", 404, "nothing at"),
    ("static/../app.py", 404, ""),
]


@pytest.mark.parametrize("path, code, needle", BAD)
def test_bad_input_gets_a_one_line_4xx(site, path, code, needle) -> None:
    server, store, demo, client = site
    r = client.get(path)
    assert r.status_code == code, (path, r.text[:300])
    assert "Traceback" not in r.text and "File \"" not in r.text
    if path.startswith("api/"):
        message = r.json()["error"]
        assert "\n" not in message and needle in message
    else:
        assert '<p class="message">' in r.text and needle in r.text


def test_a_standalone_view_serves_the_stores_metrics(site) -> None:
    server, store, demo, client = site
    r = client.get("metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'timewheel_tasks{name=' in r.text and 'status="failed"}' in r.text


def test_wrong_method_is_405(site) -> None:
    server, store, demo, client = site
    r = client.post("api/inspect")
    assert r.status_code in (403, 405)   # without a CSRF token a POST is refused first
    r = client.delete("api/tasks/s000")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_text_from_the_store_is_escaped(site) -> None:
    server, store, demo, client = site
    hostile_page = "tasks/" + demo.hostile
    for page in PAGES + [hostile_page, "tasks?status=pending&limit=500", "failed"]:
        body = client.get(page).text
        assert "<script>alert" not in body and "<img src=x" not in body, page
        assert "\x1b" not in body and "\u202e" not in body and "\x07" not in body, page
    body = client.get(hostile_page).text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;\\x1b[31mred\\u202e" in body
    failed = client.get("failed").text
    assert "&lt;img src=x onerror=alert(&#39;error&#39;)&gt; \\x1b]0;pwned\\x07" in failed
    # The JSON keeps the text as it is (a client may need it); it is served as JSON, never HTML.
    r = client.get("api/tasks/" + demo.hostile)
    assert r.headers["content-type"] == "application/json" and r.json()["name"] == HOSTILE_NAME
    assert r.headers["x-content-type-options"] == "nosniff"


def test_actions_are_refused_when_not_allowed(site) -> None:
    server, store, demo, client = site
    token = csrf(client, "failed")
    assert "Retry selected" not in client.get("failed").text
    r = client.post("api/tasks/f000/retry", headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and "actions are off" in r.json()["error"]
    r = client.post("bulk", data={"verb": "retry", "ids": "f000", "csrf_token": token})
    assert r.status_code == 403 and "actions are off" in r.text
    r = client.post("api/purge", data={"older_than": "0s"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert store.get("f000").status == "failed" and totals(store)["succeeded"] == len(demo.succeeded)


# -- actions, CSRF ------------------------------------------------------------------------------

def test_actions_need_the_csrf_token(actions) -> None:
    server, store, demo, client = actions
    r = client.post("api/tasks/f000/retry")
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    token = csrf(client, "")
    r = client.post("api/tasks/f000/retry", headers={"X-CSRF-Token": token[::-1]})
    assert r.status_code == 403
    r = client.post("api/tasks/f000/retry", headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["error"]
    with httpx.Client(base_url=server.url) as stranger:     # the token, but not the cookie
        r = stranger.post("api/tasks/f000/retry", headers={"X-CSRF-Token": token})
        assert r.status_code == 403
    assert store.get("f000").status == "failed"
    r = client.post("api/tasks/f000/retry", headers={"X-CSRF-Token": token, "Origin": server.url.rstrip("/")})
    assert r.status_code == 200 and r.json() == {"retried": ["f000"], "skipped": [], "unknown": []}
    assert store.get("f000").status == "pending"


def test_actions_from_the_api(actions) -> None:
    server, store, demo, client = actions
    h = {"X-CSRF-Token": csrf(client, "")}
    r = client.post("api/tasks/s000/retry", headers=h)
    assert r.status_code == 409 and "succeeded" in r.json()["error"]
    assert client.post("api/tasks/nope/cancel", headers=h).status_code == 404
    r = client.post("api/tasks/q000/cancel", headers=h)
    assert r.status_code == 200 and store.get("q000").status == "cancelled"
    r = client.post("api/retry", json={"all": True, "status": "failed"}, headers=h)
    assert sorted(r.json()["retried"]) == sorted(demo.failed)
    assert all(store.get(i).status == "pending" for i in demo.failed)
    r = client.post("api/retry", json={"ids": demo.misfired[:2]}, headers=h)
    assert r.json()["retried"] == demo.misfired[:2]
    r = client.post("api/cancel", json={"ids": []}, headers=h)
    assert r.status_code == 400 and "select at least one" in r.json()["error"]
    r = client.post("api/purge", data={"older_than": "x"}, headers=h)
    assert r.status_code == 400 and "older_than: 'x' is not a duration" in r.json()["error"]
    r = client.post("api/purge", data={"older_than": "0s", "status": "succeeded"}, headers=h)
    assert r.json()["purged"] == len(demo.succeeded) and totals(store).get("succeeded", 0) == 0


def test_actions_from_the_pages(actions) -> None:
    server, store, demo, client = actions
    token = csrf(client, "tasks/f001")
    page = client.get("tasks/f001").text
    assert 'id="retry"' in page and 'id="cancel"' not in page
    r = client.post("tasks/f001/retry", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].endswith("/tasks/f001")
    assert store.get("f001").status == "pending"
    assert "retried 1 task(s)" in client.get(r.headers["location"]).text     # the flash message
    assert "retried 1 task(s)" not in client.get("tasks/f001").text          # ... shown once
    r = client.post("bulk", data={"csrf_token": token, "verb": "retry", "ids": demo.failed[2:4],
                                  "next": "/failed"})
    assert r.status_code == 303 and r.headers["location"] == "/failed"
    assert [store.get(i).status for i in demo.failed[2:4]] == ["pending", "pending"]
    # "next" only goes back to our own pages
    r = client.post("bulk", data={"csrf_token": token, "verb": "cancel", "ids": "q001",
                                  "next": "//evil.example/"})
    assert r.headers["location"] == "/tasks" and store.get("q001").status == "cancelled"
    r = client.post("purge", data={"csrf_token": token, "older_than": "1d"})
    assert r.status_code == 303
    r = client.post("bulk", data={"csrf_token": token, "verb": "explode", "ids": "q002"})
    assert r.status_code == 400 and "verb must be one of" in r.text


# -- authentication ----------------------------------------------------------------------------

def test_basic_auth(tmp_path) -> None:
    path = str(tmp_path / "tasks.db")
    store, _ = make_store(path)
    store.close()
    with serve(path, "--auth", "admin:pa:ss") as server:
        r = httpx.get(server.url)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(server.url + "api/inspect").status_code == 401
        assert httpx.get(server.url, auth=("admin", "wrong")).status_code == 401
        assert httpx.get(server.url, auth=("root", "pa:ss")).status_code == 401
        assert httpx.get(server.url, auth=("admin", "pa:ss")).status_code == 200
        assert httpx.get(server.url + "api/stats", auth=("admin", "pa:ss")).status_code == 200


def test_token_auth(tmp_path) -> None:
    path = str(tmp_path / "tasks.db")
    store, _ = make_store(path)
    with serve(path, "--allow-actions", env={"TIMEWHEEL_WEB_TOKEN": "t0ken-t0ken"}) as server:
        assert httpx.get(server.url + "api/inspect").status_code == 401
        bearer = {"Authorization": "Bearer t0ken-t0ken"}
        assert httpx.get(server.url + "api/inspect", headers=bearer).status_code == 200
        # A script with the bearer token needs no CSRF token: browsers never send that header.
        r = httpx.post(server.url + "api/tasks/f000/retry", headers=bearer)
        assert r.status_code == 200 and store.get("f000").status == "pending"
        with httpx.Client(base_url=server.url) as browser:
            r = browser.get("wheel")
            assert r.status_code == 302 and r.headers["location"] == "/login?next=/wheel"
            token = csrf(browser, "login?next=/wheel")
            r = browser.post("login", data={"csrf_token": token, "token": "wrong-token", "next": "/wheel"})
            assert r.status_code == 401 and "not the right one" in r.text
            r = browser.post("login", data={"csrf_token": token, "token": "t0ken-t0ken", "next": "/wheel"})
            assert r.status_code == 303 and r.headers["location"] == "/wheel"
            assert browser.get("wheel").status_code == 200
            # signed in by cookie: changes need the CSRF token again
            assert browser.post("api/tasks/f001/retry").status_code == 403
            assert browser.post("api/tasks/f001/retry", headers={"X-CSRF-Token": token}).status_code == 200
    store.close()


# -- on a Redis store ---------------------------------------------------------------------------

def test_a_redis_store(redis_db) -> None:
    """``timewheel web redis://...``: the same pages, and the running tasks' leases."""
    from timewheel.store import open_store
    store = open_store(redis_db)
    try:
        demo = fill(store, time.time())
        now = store.now()
        current = store.wheel.current_tick(now)
        store.add([record(f"lease{i}", now - 1) for i in range(2)])
        store.advance(current, 1000, store.liveness.token)
        claimed = store.claim(store.liveness.token, now, 2).records
        assert sorted(r.id for r in claimed) == ["lease0", "lease1"] and all(r.lease for r in claimed)
        with serve(redis_db, "--allow-actions") as server, httpx.Client(base_url=server.url) as client:
            for page in PAGES:
                assert client.get(page).status_code == 200, page
            shown = initial(client.get("").text)["inspect"]["counts"]
            assert shown == query.inspect_data(store, now)["counts"]
            listing = client.get("api/tasks", params={"status": "running"}).json()
            rows = {t["id"]: t for t in listing["tasks"]}
            assert {i: rows[i]["lease"] for i in ("lease0", "lease1")} == {r.id: r.lease for r in claimed}
            running = client.get("running").text
            assert running.count('class="lease" data-lease=') >= 2
            token = csrf(client, "failed")
            r = client.post("api/retry", json={"all": True, "status": "failed"},
                            headers={"X-CSRF-Token": token})
            assert sorted(r.json()["retried"]) == sorted(demo.failed)
            assert all(store.get(i).status == "pending" for i in demo.failed)
    finally:
        store.close()


# -- on a PostgreSQL store ----------------------------------------------------------------------

def test_a_postgres_store(pg_db, pg_server) -> None:
    """``timewheel web postgresql://...``: the same pages, the running tasks' leases, and the
    password nowhere on a page."""
    from timewheel.store import open_store
    pg_server.sql("DROP ROLE IF EXISTS webapp")
    pg_server.sql("CREATE ROLE webapp LOGIN SUPERUSER PASSWORD 'pw-for-the-web'")
    url = pg_db.replace("postgres@", "webapp:pw-for-the-web@") + "?schema=web"
    store = open_store(url)
    try:
        demo = fill(store, time.time())
        now = store.now()
        current = store.wheel.current_tick(now)
        store.add([record(f"lease{i}", now - 1) for i in range(2)])
        store.advance(current, 1000, store.liveness.token)
        claimed = store.claim(store.liveness.token, now, 2).records
        assert sorted(r.id for r in claimed) == ["lease0", "lease1"] and all(r.lease for r in claimed)
        with serve(url, "--allow-actions") as server, httpx.Client(base_url=server.url) as client:
            for page in PAGES:
                r = client.get(page)
                assert r.status_code == 200 and "pw-for-the-web" not in r.text, page
            shown = initial(client.get("").text)["inspect"]
            assert shown["counts"] == query.inspect_data(store, now)["counts"]
            assert shown["store"]["schema"] == "web" and "pw-for-the-web" not in json.dumps(shown)
            listing = client.get("api/tasks", params={"status": "running"}).json()
            rows = {t["id"]: t for t in listing["tasks"]}
            assert {i: rows[i]["lease"] for i in ("lease0", "lease1")} == {r.id: r.lease for r in claimed}
            assert client.get("running").text.count('class="lease" data-lease=') >= 2
            token = csrf(client, "failed")
            r = client.post("api/retry", json={"all": True, "status": "failed"},
                            headers={"X-CSRF-Token": token})
            assert sorted(r.json()["retried"]) == sorted(demo.failed)
            assert all(store.get(i).status == "pending" for i in demo.failed)
    finally:
        store.close()


# -- the command -------------------------------------------------------------------------------

def test_command_errors_are_one_line(tmp_path) -> None:
    from click.testing import CliRunner

    from timewheel.cli import cli

    def run(*args: str) -> Any:
        result = CliRunner().invoke(cli, ["web", *args])
        assert isinstance(result.exception, SystemExit), result.exception    # no traceback
        return result

    r = run(str(tmp_path / "missing.db"))
    assert r.exit_code == 1 and "no such file" in r.stderr
    (tmp_path / "other.txt").write_text("not a store")
    r = run(str(tmp_path / "other.txt"))
    assert r.exit_code == 1 and "not a timewheel store" in r.stderr
    assert not (tmp_path / "missing.db").exists()
    path = str(tmp_path / "tasks.db")
    make_store(path)[0].close()
    r = run(path, "--auth", "admin:pw", "--token", "t0ken-t0ken")
    assert r.exit_code == 2 and "not both" in r.stderr
    r = run(path, "--auth", "nopassword")
    assert r.exit_code == 2 and "USER:PASSWORD" in r.stderr
    r = run(path, "--token", "short")
    assert r.exit_code == 2 and "at least 8" in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run(path, "--port", str(busy.getsockname()[1]))
        assert r.exit_code == 1 and "cannot listen" in r.stderr


def test_command_binds_loopback_by_default(tmp_path) -> None:
    path = str(tmp_path / "tasks.db")
    make_store(path)[0].close()
    proc = procs.popen(web_command(path, "--port", "0"), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(rf"timewheel web: {re.escape(path)} at http://127\.0\.0\.1:\d+/ \(read-only\); "
                            r"Ctrl-C stops\n", line), line
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    with serve(path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        with socket.socket() as s:          # nothing listens on another address of this host
            s.settimeout(2)
            other = socket.gethostbyname(socket.gethostname())
            if not other.startswith("127."):
                assert s.connect_ex((other, port)) != 0


# -- mounted in an application ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_example(name: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = procs.popen([sys.executable, os.path.join(ROOT, "examples", name)],
                       env={**os.environ, "PYTHONPATH": ROOT, "PORT": str(port), **env},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            httpx.get(url + "/timewheel/static/app.css", timeout=1)
            return True
        except httpx.TransportError:
            assert proc.poll() is None, f"{name} exited {proc.returncode}"
            return False
    wait_for(up, timeout=30, what=f"{name} serving")
    return proc, url


def stop_example(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def check_mounted(client: httpx.Client, url: str, store_ids: list[str]) -> None:
    """The view answers under /timewheel: its links, files and API carry the prefix."""
    page = client.get(url + "/timewheel/")
    assert page.status_code == 200, page.text[:300]
    assert 'src="/timewheel/static/app.js"' in page.text and 'data-root="/timewheel/"' in page.text
    assert client.get(url + "/timewheel/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    tasks = client.get(url + "/timewheel/api/tasks", params={"status": "failed"}).json()["tasks"]
    assert set(store_ids) <= {t["id"] for t in tasks}   # (an app that runs tasks may fail more)
    assert 'href="/timewheel/tasks/f000"' in client.get(url + "/timewheel/failed").text


def test_mounted_in_flask_behind_the_apps_login(tmp_path) -> None:
    path = str(tmp_path / "tasks.db")
    store, demo = make_store(path)
    proc, url = start_example("flask_dashboard.py", {"TIMEWHEEL_DB": path, "DASHBOARD_PASSWORD": "pw"})
    try:
        with httpx.Client(timeout=10) as client:
            assert client.get(url + "/timewheel/").status_code == 403
            assert client.get(url + "/timewheel/api/inspect").status_code == 403
            assert client.post(url + "/login", data={"password": "no"}).status_code == 403
            assert client.post(url + "/login", data={"password": "pw"}).status_code == 302
            check_mounted(client, url, demo.failed)
            token = client.cookies.get("timewheel_csrf")
            r = client.post(url + "/timewheel/api/tasks/f000/retry", headers={"X-CSRF-Token": token})
            assert r.status_code == 200 and store.get("f000").status == "pending"
            assert client.post(url + "/reports", data={"days": 2}).status_code == 202   # the app still works
            metrics = client.get(url + "/timewheel/metrics")
            assert metrics.status_code == 200 and 'timewheel_tasks{' in metrics.text
    finally:
        stop_example(proc)
        store.close()


def test_mounted_in_fastapi_behind_the_apps_check(tmp_path) -> None:
    """examples/fastapi_dashboard.py: mount_view behind the app's async check (a bearer
    header, or the cookie of the app's own sign-in)."""
    path = str(tmp_path / "tasks.db")
    store, demo = make_store(path)
    proc, url = start_example("fastapi_dashboard.py",
                              {"TIMEWHEEL_DB": path, "DASHBOARD_TOKEN": "t0ken-t0ken"})
    try:
        with httpx.Client(timeout=10) as client:
            assert client.get(url + "/timewheel/api/inspect").status_code == 403
            assert client.get(url + "/timewheel/").status_code == 403
            assert client.post(url + "/login", data={"token": "wrong-wrong"}).status_code == 403
            r = client.post(url + "/login", data={"token": "t0ken-t0ken"})
            assert r.status_code == 303 and r.headers["location"] == "/timewheel/"
            check_mounted(client, url, demo.failed)
            r = client.post(url + "/timewheel/api/retry", json={"all": True, "status": "misfired"},
                            headers={"X-CSRF-Token": client.cookies["timewheel_csrf"]})
            assert sorted(r.json()["retried"]) == demo.misfired
            assert client.post(url + "/reports?days=2").status_code == 202
        script = httpx.get(url + "/timewheel/api/inspect", headers={"Authorization": "Bearer t0ken-t0ken"})
        assert script.status_code == 200 and script.json()["store"]["path"] == path
    finally:
        stop_example(proc)
        store.close()
