"""The web view against an attacker's requests (issue 19, items 6-9), over real HTTP to a live
``timewheel web`` (or an application that mounts the view): DNS rebinding (other Host
names), ..."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.web.security import HostGuard

from .test_web import start_example, stop_example
from .web_server import make_store, serve, serve_mounted


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
