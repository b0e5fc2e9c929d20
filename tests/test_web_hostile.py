"""The web view against an attacker's requests (issue 19, items 6-9), over real HTTP to a live
``timewheel web`` (or an application that mounts the view): DNS rebinding (other Host
names), ..."""

from __future__ import annotations

import html
import ipaddress
import os
import re
import resource
import socket
import time
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel import __version__
from timewheel.store.redis import _public
from timewheel.testing import processes as procs
from timewheel.testing import serve
from timewheel.web.security import HostGuard, same_site_path
from timewheel.web.server import MAX_BODY, MAX_HEAD, REQUEST_TIMEOUT, BadRequest, request_size

from .test_web import start_example, stop_example
from .web_server import TRICKY_IDS, add_tricky, make_store, serve_mounted


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


# -- DNS rebinding: the Host names a view answers to (19.6) ------------------------------------

EVIL = "evil.example"


def as_host(url: str, name: str, path: str = "", **kw) -> httpx.Response:
    """A request to the view at ``url`` that says it is for the host ``name`` (what a browser
    sends once a rebinding name resolves to 127.0.0.1)."""
    method = kw.pop("method", "GET")
    headers = {"Host": f"{name}:{port_of(url)}", **kw.pop("headers", {})}
    return httpx.request(method, url + path, headers=headers, timeout=10, **kw)


def refused_host(r: httpx.Response, name: str = EVIL) -> bool:
    said = r.json()["error"] if r.headers["content-type"] == "application/json" else r.text
    return r.status_code == 403 and f"does not answer to the host name '{name}'" in said \
        and said.strip().count("\n") == 0


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))


@given(st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]")), PORT)
def test_an_address_is_always_answered(address: str, port: str) -> None:
    """A rebinding needs a name: a page at an address is that address's own."""
    assert ipaddress.ip_address(address.strip("[]"))
    assert HostGuard().allows(address + port)


@given(NAME, NAME, PORT)
def test_a_name_is_answered_only_if_allowed(name: str, other: str, port: str) -> None:
    guard = HostGuard.of([name, "." + other])
    assert guard.allows(name + port) and guard.allows(name.upper() + "." + port)
    assert guard.allows(other + port) and guard.allows(f"x.{other}{port}")
    assert HostGuard().allows(f"{name}.localhost{port}")
    for evil in (f"{name}.evil-{other}", f"x{name}-{other}", f"localhost.{name}"):
        if not (evil == other or evil.endswith("." + other)):
            assert not guard.allows(evil + port), evil
            assert not HostGuard().allows(evil + port), evil


@pytest.fixture
def store_path(tmp_path):
    path = str(tmp_path / "tasks.db")
    store, demo = make_store(path)
    yield path, store, demo
    store.close()


def test_a_view_without_authentication_answers_only_its_own_names(store_path) -> None:
    path, store, demo = store_path
    with serve(path, "--allow-actions") as server:
        url = server.url
        for name in ("127.0.0.1", "localhost", "LOCALHOST.", "app.localhost", "[::1]", "10.1.2.3"):
            r = as_host(url, name, "api/inspect")
            assert r.status_code == 200, (name, r.text)
        for path_ in ("", "tasks/f000", "api/tasks/f000", "api/inspect", "login", "static/app.css",
                      "no/such/page"):
            r = as_host(url, EVIL, path_)
            assert refused_host(r), (path_, r.status_code, r.text)
            assert "f000" not in r.text and path not in r.text
        for name in ("localhost.evil.example", "127.0.0.1.nip.io", "evillocalhost", "a@localhost"):
            assert as_host(url, name).status_code == 403, name
        # The rebinding page is same-origin with itself: it can set the CSRF cookie it sends back.
        forged = {"Origin": f"http://{EVIL}:{port_of(url)}", "X-CSRF-Token": "x" * 43,
                  "Cookie": "timewheel_csrf=" + "x" * 43}
        r = as_host(url, EVIL, "api/purge", method="POST", headers=forged, data={"older_than": "0s"})
        assert refused_host(r)
        r = as_host(url, EVIL, "api/tasks/q000/cancel", method="POST", headers=forged)
        assert refused_host(r)
        assert store.get("q000").status == "pending" and store.get("s000") is not None
        # ... while the same request for the view's own name goes through
        forged["Origin"] = url.rstrip("/")
        r = httpx.post(url + "api/tasks/q000/cancel", headers=forged, timeout=10)
        assert r.status_code == 200 and store.get("q000").status == "cancelled"


def test_more_names_are_allowed_by_option(store_path) -> None:
    path, store, demo = store_path
    with serve(path, "--allow-host", "tasks.lan", "--allow-host", ".corp.example") as server:
        for name in ("tasks.lan", "TASKS.LAN", "corp.example", "dash.corp.example", "localhost"):
            assert as_host(server.url, name, "api/inspect").status_code == 200, name
        for name in (EVIL, "tasks.lan.evil.example", "xcorp.example"):
            assert refused_host(as_host(server.url, name), name), name
    with serve(path, "--allow-host", "*") as server:
        assert as_host(server.url, EVIL, "api/inspect").status_code == 200
    hostname = socket.gethostname()
    assert socket.gethostbyname(hostname), "this test binds the machine's own name"
    with serve(path, "--host", hostname) as server:           # --host NAME: that name is its own
        assert as_host(server.url, hostname, "api/inspect").status_code == 200
        assert refused_host(as_host(server.url, EVIL))


def test_with_authentication_any_name_gets_the_sign_in(store_path) -> None:
    path, store, demo = store_path
    with serve(path, env={"TIMEWHEEL_WEB_TOKEN": "t0ken-t0ken"}) as server:
        # the attacker's origin has no credentials to send: it sees what anyone would
        assert as_host(server.url, EVIL, "api/inspect").status_code == 401
        bearer = {"Authorization": "Bearer t0ken-t0ken"}
        assert as_host(server.url, "proxy.example", "api/inspect", headers=bearer).status_code == 200
    with serve(path, "--auth", "admin:pw", "--allow-host", "tasks.lan") as server:
        assert refused_host(as_host(server.url, EVIL, "api/inspect", auth=("admin", "pw")))
        assert as_host(server.url, "tasks.lan", "api/inspect", auth=("admin", "pw")).status_code == 200


def test_a_bad_allowed_name_is_a_usage_error(store_path) -> None:
    from click.testing import CliRunner

    from timewheel.cli import cli

    path, store, demo = store_path
    for bad in ("http://tasks.lan", "tasks.lan:8080", "a b", ""):
        result = CliRunner().invoke(cli, ["web", path, "--allow-host", bad])
        assert result.exit_code == 2 and "not a host name" in result.stderr, (bad, result.output)


def test_a_view_mounted_without_authentication_answers_only_loopback_names(store_path) -> None:
    path, store, demo = store_path
    with serve_mounted(path) as url:
        assert as_host(url, "localhost", "api/inspect").status_code == 200
        assert refused_host(as_host(url, EVIL, "api/inspect"))
        assert refused_host(as_host(url, EVIL, ""))


def test_a_view_mounted_behind_the_apps_own_login_answers_any_name(store_path) -> None:
    """The app's session cookie belongs to the app's own name: a rebinding page has none."""
    path, store, demo = store_path
    proc, url = start_example("flask_dashboard.py", {"TIMEWHEEL_DB": path, "DASHBOARD_PASSWORD": "pw"})
    try:
        with httpx.Client(timeout=10) as client:
            assert client.post(url + "/login", data={"password": "pw"}).status_code == 302
            port = port_of(url)
            r = client.get(url + "/timewheel/api/inspect", headers={"Host": f"dash.example:{port}"})
            assert r.status_code == 200
        r = httpx.get(url + "/timewheel/api/inspect", headers={"Host": f"{EVIL}:{port}"})
        assert r.status_code == 403 and "not authorized" in r.json()["error"]
    finally:
        stop_example(proc)


# -- redirects stay on the view (19.8) ----------------------------------------------------------

TRICKY_NEXT = [
    "/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/", "/ \t/evil.example/",
    "//evil.example/", "///evil.example/", "/\\evil.example/", "/\\/evil.example/", "\\\\evil.example/",
    "\\/evil.example/", "/\t\\evil.example/", "https://evil.example/", "http:evil.example",
    "HTTPS:/evil.example", "javascript:alert(1)", "data:text/html,<script>alert(1)</script>",
    " //evil.example/", "\t//evil.example/", "\x00//evil.example/", "//evil.example@127.0.0.1/",
    "/%2F/evil.example/", "/%5Cevil.example/", "/%09/evil.example/", "%2F%2Fevil.example",
    "/%2f%2fevil.example", "evil.example", "?next=//evil.example", "/\x00/evil.example",
    "/\u2028/evil.example", "/\u3000/evil.example", "\uff0f\uff0fevil.example",
]


def as_browser_reads(base: str, location: str) -> str:
    """Where a browser goes for ``Location: location`` on a page at ``base`` (WHATWG URL
    parsing: C0 controls and spaces trimmed, tabs and newlines dropped, backslashes read as
    slashes in http URLs)."""
    trimmed = location.strip("".join(map(chr, range(0x21))))
    cleaned = trimmed.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return urljoin(base, cleaned)


def stays_on(url: str, location: str, under: str = "/") -> bool:
    there = urlsplit(as_browser_reads(url, location))
    here = urlsplit(url)
    return (there.scheme, there.netloc) == (here.scheme, here.netloc) and there.path.startswith(under)


@given(st.text(), st.sampled_from(["", "/timewheel"]))
def test_a_redirect_target_is_a_path_on_the_view_or_nothing(target: str, root: str) -> None:
    location = same_site_path(target, root)
    if location is not None:
        assert location.isascii() and location.isprintable() and " " not in location
        assert stays_on("http://view.test/page", location, root + "/")


@pytest.mark.parametrize("value", ["/wheel", "/tasks/a b/c?x=1&y=%2F", "/tasks/\u00e9\u6642",
                                   "/failed?name=x#y"])
def test_a_target_on_the_view_is_kept(value: str) -> None:
    location = same_site_path(value, "")
    assert location is not None
    assert urlsplit(as_browser_reads("http://view.test/", location)).path == \
        quote(urlsplit(value.replace("#", "%23")).path, safe="/%")


def test_sign_in_and_actions_redirect_only_to_the_view(store_path) -> None:
    path, store, demo = store_path
    with serve(path, "--allow-actions") as server:        # no token: /login redirects at once
        with httpx.Client(base_url=server.url, timeout=10) as client:
            token = client.get("").cookies.get("timewheel_csrf") or client.cookies.get("timewheel_csrf")
            r = client.get(server.url + "login?next=/%09/evil.example/")
            assert r.status_code == 303 and stays_on(server.url, r.headers["location"])
            for value in TRICKY_NEXT:
                r = client.get("login", params={"next": value})
                assert r.status_code == 303, value
                assert stays_on(server.url, r.headers["location"]), (value, r.headers["location"])
                r = client.post("bulk", data={"csrf_token": token, "verb": "cancel", "ids": "nope",
                                              "next": value})
                assert r.status_code == 303, (value, r.text)
                assert stays_on(server.url, r.headers["location"]), (value, r.headers["location"])
            r = client.get("login", params={"next": "/tasks/a b?status=pending"})
            assert r.headers["location"] == "/tasks/a%20b?status=pending"
    with serve(path, env={"TIMEWHEEL_WEB_TOKEN": "t0ken-t0ken"}) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            client.get("login")
            token = client.cookies.get("timewheel_csrf")
            for value in TRICKY_NEXT:
                r = client.post("login", data={"csrf_token": token, "token": "t0ken-t0ken", "next": value})
                assert r.status_code == 303 and stays_on(server.url, r.headers["location"]), value


# -- silent connections (19.7) -------------------------------------------------------------------

HEADER = st.tuples(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
                   st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(str.strip))


@given(st.lists(HEADER, max_size=8), st.binary(max_size=3000), st.booleans(), st.data())
def test_a_request_is_read_whole_however_it_arrives(headers, body, crlf, data) -> None:
    """request_size() says nothing until the head is in, then the size of head and body,
    whatever the pieces the request arrives in."""
    eol = b"\r\n" if crlf else b"\n"
    lines = [b"POST /api/retry HTTP/1.1", b"Host: 127.0.0.1"] + [f"{k}: {v}".encode() for k, v in headers]
    if body:
        lines.insert(2, f"Content-Length: {len(body)}".encode())
    head = eol.join(lines) + eol + eol
    request = head + body + b"GET /next HTTP/1.1" + eol       # (what follows is not part of it)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(request)), max_size=10)))
    got, searched, seen = bytearray(), 0, None
    for start, stop in zip([0] + cuts, cuts + [len(request)]):
        got += request[start:stop]
        seen, searched = request_size(got, searched)
        assert (seen is None) == (len(got) < len(head)), (len(got), len(head))
    assert seen == len(head) + len(body)


@pytest.mark.parametrize("head, status", [
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * MAX_HEAD, 431),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * MAX_HEAD + b"\r\n\r\n", 431),
])
def test_a_request_that_cannot_be_read_whole_is_refused(head, status) -> None:
    with pytest.raises(BadRequest) as refused:
        request_size(head)
    assert refused.value.status == status and "\n" not in str(refused.value)


def test_the_server_refuses_such_requests_with_one_line(store_path) -> None:
    path, store, demo = store_path
    with serve(path) as server:
        address = ("127.0.0.1", port_of(server.url))
        for head, status in [(b"POST /api/retry HTTP/1.1\r\nHost: localhost\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
                             (b"POST /api/purge HTTP/1.1\r\nHost: localhost\r\n"
                              b"Content-Length: 99999999\r\n\r\n", 413)]:
            with socket.create_connection(address, timeout=5) as s:
                s.sendall(head)
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line.split()[1] == str(status).encode(), answer
            assert rest.split(b"\r\n\r\n", 1)[1].count(b"\n") == 1
        assert httpx.get(server.url + "api/inspect", timeout=5).status_code == 200

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux's /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_by_server(s: socket.socket, deadline: float) -> bool:
    """True once the server has closed ``s`` (whatever it said first), by ``deadline``."""
    while True:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


@pytest.fixture
def many_files():
    """Room in this process for 1,500 sockets of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    assert hard == resource.RLIM_INFINITY or hard >= want, f"the hard limit of open files is {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_silent_connections_neither_stop_the_view_nor_spin_it(store_path, many_files) -> None:
    """1,100 connections that send nothing and 50 that send half a request, to a view that may
    open the usual 1,024 files: it keeps answering real requests at once, its CPU stays near
    idle, and it closes the silent and stalled ones within its request timeout."""
    path, store, demo = store_path
    with serve(path, files=1024) as server:
        address = ("127.0.0.1", port_of(server.url))
        started = time.monotonic()
        silent, stalled = [], []
        try:
            for i in range(1100):
                try:
                    silent.append(socket.create_connection(address, timeout=5))
                except OSError as exc:
                    raise AssertionError(f"connection {i} was not accepted: {exc}") from None
            for _ in range(50):
                s = socket.create_connection(address, timeout=5)
                s.sendall(b"GET /api/inspect HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                stalled.append(s)
            cpu_before, window = cpu_seconds(server.proc.pid), time.monotonic()
            for _ in range(20):
                asked = time.monotonic()
                r = httpx.get(server.url + "api/inspect", timeout=5)
                assert r.status_code == 200 and r.json()["counts"]["failed"] == len(demo.failed)
                assert time.monotonic() - asked < 2.0
                time.sleep(0.15)
            time.sleep(max(0.0, 4.0 - (time.monotonic() - window)))
            used = (cpu_seconds(server.proc.pid) - cpu_before) / (time.monotonic() - window)
            assert used < 0.3, f"the server used {used:.0%} of a core while holding silent connections"
            deadline = started + REQUEST_TIMEOUT + 5
            still = [s for s in silent + stalled if not closed_by_server(s, deadline)]
            assert not still, f"{len(still)} silent connections still open after {REQUEST_TIMEOUT + 5:g}s"
            assert httpx.get(server.url + "api/inspect", timeout=5).status_code == 200
        finally:
            for s in silent + stalled:
                s.close()
        assert "Traceback" not in server.errors()


# -- smaller things (19.9) -----------------------------------------------------------------------

def test_pages_before_sign_in_say_nothing_of_the_store(store_path) -> None:
    path, store, demo = store_path
    version = f"timewheel {__version__}"
    with serve(path, "--auth", "admin:pw") as server:
        for page in ("", "tasks/f000", "api/inspect", "static/nope.css", "login"):
            r = httpx.get(server.url + page, timeout=10)
            assert r.status_code in (401, 404, 303), (page, r.status_code)
            assert path not in r.text and version not in r.text and "tasks.db" not in r.text, page
        signed_in = httpx.get(server.url, auth=("admin", "pw"), timeout=10).text
        assert path in signed_in and version in signed_in          # (what the page shows then)
    with serve(path, env={"TIMEWHEEL_WEB_TOKEN": "t0ken-t0ken"}) as server:
        for page in ("login", "login?next=/wheel", "static/nope.css"):
            r = httpx.get(server.url + page, timeout=10)
            assert r.status_code in (200, 404), page
            assert path not in r.text and version not in r.text and "tasks.db" not in r.text, page
    proc, url = start_example("flask_dashboard.py", {"TIMEWHEEL_DB": path, "DASHBOARD_PASSWORD": "pw"})
    try:
        r = httpx.get(url + "/timewheel/", timeout=10)                 # the app's hook says no
        assert r.status_code == 403 and path not in r.text and version not in r.text
    finally:
        stop_example(proc)


def test_paths_with_double_slashes_get_an_answer(store_path) -> None:
    path, store, demo = store_path
    store.add([record_for("a//b")])
    with serve(path) as server:
        for page in ("//", "///", "//wheel", "wheel//", "api//inspect", "tasks//s000", "static//app.css",
                     "tasks/a//b", "api/tasks/a//b"):
            r = httpx.get(server.url + page, timeout=10)
            redirected = 300 <= r.status_code < 400 and r.headers.get("location")
            assert r.status_code in (200, 404) or redirected, (page, r.status_code, r.headers)
            if r.status_code == 404:
                said = r.json()["error"] if page.startswith("api") else r.text
                assert "nothing at" in said or "no task" in said, page
        assert "no task /s000" in httpx.get(server.url + "api/tasks//s000", timeout=10).json()["error"]
        assert httpx.get(server.url + "api/tasks/a//b", timeout=10).json()["id"] == "a//b"


def record_for(task_id: str):
    from timewheel.testing import record
    return record(task_id, time.time() + 3600, name="tricky.ids")


def browser_path(base: str, href: str) -> str:
    """The URL a browser goes to for the link ``href`` on a page at ``base``: WHATWG also
    takes %2e as a dot in a dot segment."""
    url = urlsplit(urljoin(base, href))
    segments: list[str] = []
    parts = url.path.split("/")[1:]
    for i, seg in enumerate(parts):
        low = seg.lower()
        last = i == len(parts) - 1
        if low in (".", "%2e"):
            if last:
                segments.append("")
        elif low in ("..", ".%2e", "%2e.", "%2e%2e"):
            if segments:
                segments.pop()
            if last:
                segments.append("")
        else:
            segments.append(seg)
    return url._replace(path="/" + "/".join(segments)).geturl()


def test_links_to_tasks_lead_to_them_whatever_their_ids(store_path) -> None:
    path, store, demo = store_path
    add_tricky(store, time.time())
    with serve(path, "--allow-actions") as server, httpx.Client(timeout=10) as client:
        listing = client.get(server.url + "tasks", params={"name": "tricky.ids", "limit": 100}).text
        rows = re.findall(r'<tr data-id="([^"]*)"[^>]*>.*?<a class="id" href="([^"]*)">', listing, re.S)
        links = {html.unescape(i): html.unescape(href) for i, href in rows}
        assert sorted(links) == sorted(TRICKY_IDS)
        for task_id, href in links.items():
            page = client.get(browser_path(server.url + "tasks", href))
            assert page.status_code == 200, (task_id, href, page.text[:300])
            shown = re.search(r'<h1>Task <code class="id">(.*?)</code>', page.text).group(1)
            assert html.unescape(shown) == task_id, (task_id, href)
            json_link = re.search(r'<a href="([^"]*)">as JSON</a>', page.text).group(1)
            got = client.get(browser_path(page.url.__str__(), html.unescape(json_link))).json()
            assert got["id"] == task_id, (task_id, json_link)
            # the task page's own link back (the forms' "next") leads to the same task
            back = re.search(r'name="next" value="([^"]*)"', page.text).group(1)
            again = client.get(browser_path(server.url, html.unescape(back)))
            assert html.unescape(re.search(r'<code class="id">(.*?)</code>', again.text).group(1)) == task_id
            # a search for the whole id opens it
            found = client.get(server.url + "tasks", params={"id": task_id}, follow_redirects=False)
            assert found.status_code == 303, task_id
            opened = client.get(browser_path(server.url, found.headers["location"])).text
            assert html.unescape(re.search(r'<code class="id">(.*?)</code>', opened).group(1)) == task_id


# -- a Redis password is never shown (19.9) -----------------------------------------------------

#: passwords with @, :, / and a literal %40; the part after an @ is what the old check showed
PASSWORDS = ["Qz@Wxq", "Jk:Lm@Npq", "Rt/Yu@Ioq", "Gh%40Vbq", "@Zx:/%40@Cvq"]


@given(st.text(min_size=1).filter(lambda p: not set(p) & set("?#")), st.sampled_from(["", "alice"]))
def test_public_urls_hide_any_password(password: str, user: str) -> None:
    for written in (password, quote(password, safe="")):
        url = f"redis://{user}:{written}@127.0.0.1:6379/0"
        assert _public(url) == f"redis://{user}:***@127.0.0.1:6379/0", url
    assert _public(f"redis://127.0.0.1:6379/0?password={quote(password)}&db=1") == \
        "redis://127.0.0.1:6379/0?password=***&db=1"


def _redis_user(server, password: str):
    import redis
    r = redis.Redis.from_url(server.url)
    r.acl_setuser("tw", enabled=True, passwords=["+" + password], keys=["*"], channels=["*"],
                  commands=["+@all"], reset=True)
    return r


def test_a_redis_password_is_never_shown(redis_server, tmp_path) -> None:
    from timewheel.testing import console_script
    r = None
    try:
        for password in PASSWORDS:
            r = _redis_user(redis_server, password)
            r.flushall()
            url = f"redis://tw:{quote(password, safe='')}@127.0.0.1:{redis_server.port}/0"
            hidden = f"redis://tw:***@127.0.0.1:{redis_server.port}/0"
            secret = {password, quote(password, safe=""), password.split("@")[-1]}
            run = procs.run([console_script(), "inspect", url, "--json"], capture_output=True,
                            text=True, timeout=60)
            assert run.returncode == 1 and "no timewheel store" in run.stderr     # an empty database
            assert hidden in run.stderr and not any(s in run.stderr for s in secret), run.stderr
            from timewheel.store import open_store
            open_store(url).close()                     # (creates the store)
            run = procs.run([console_script(), "inspect", url, "--json"], capture_output=True,
                            text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            assert hidden in run.stdout and not any(s in run.stdout + run.stderr for s in secret)
            wrong = url.replace(quote(password, safe=""), quote(password + "-wrong", safe=""))
            run = procs.run([console_script(), "inspect", wrong], capture_output=True, text=True,
                            timeout=60)
            assert run.returncode == 1 and "***" in run.stderr and password not in run.stderr, run.stderr
            if not set(password) & set("/%"):            # written as it is: a parser takes the last @
                raw = f"redis://tw:{password}@127.0.0.1:{redis_server.port}/0"
                run = procs.run([console_script(), "inspect", raw, "--json"], capture_output=True,
                                text=True, timeout=60)
                assert run.returncode == 0 and hidden in run.stdout, run.stderr
                assert not any(s in run.stdout + run.stderr for s in secret)
            r.config_set("appendfsync", "no")           # so that opening it logs a warning
            try:
                with serve(url, "--auth", "admin:pw", "--allow-actions") as server:
                    page = httpx.get(server.url, timeout=10)
                    assert page.status_code == 401 and "redis://" not in page.text
                    assert not any(s in page.text for s in secret)
                    signed_in = httpx.get(server.url, auth=("admin", "pw"), timeout=10).text
                    assert hidden in signed_in and not any(s in signed_in for s in secret)
                    log = server.errors()
                    assert f"the Redis server at {hidden} has appendfsync no" in log, log
                    assert not any(s in log for s in secret), log
            finally:
                r.config_set("appendfsync", "always")
            r.close()
            r = None
    finally:
        if r is not None:
            r.close()
        import redis
        admin = redis.Redis.from_url(redis_server.url)
        admin.acl_deluser("tw")
        admin.flushall()
        admin.close()
