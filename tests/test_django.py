"""timewheel.contrib.django in a real Django project (tests/django_project: settings, an app
with models, migrations, views and tasks.py), every process a real ``manage.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from timewheel.testing import free_port

from .conftest import ROOT, wait_for
from .django_procs import Project, get, post, scrape

PROJECT = os.path.join(ROOT, "tests", "django_project")

@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> str:
    """An app database ``manage.py migrate`` made, once for the module (each test copies it)."""
    tmp = tmp_path_factory.mktemp("migrated")
    done = Project(PROJECT, tmp).manage("migrate", "--noinput", "-v", "0")
    assert done.returncode == 0, done.stderr
    assert not (tmp / "tasks.db").exists()           # nothing opened the store at start-up
    return str(tmp / "app.sqlite3")


@pytest.fixture
def make_project(tmp_path, migrated):
    """Projects with a migrated app database of their own, closed after the test."""
    made: list[Project] = []

    def make(**env: str) -> Project:
        p = Project(PROJECT, tmp_path, **env)
        shutil.copyfile(migrated, p.app_db)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def project(make_project) -> Project:
    return make_project()


def open_files(pid: int, path: str) -> list[str]:
    fds = f"/proc/{pid}/fd"
    return [fd for fd in os.listdir(fds) if os.path.realpath(os.path.join(fds, fd)) == os.path.realpath(path)]


def wait_status(base: str, task_id: str, status: str, timeout: float = 20) -> dict:
    return wait_for(lambda: (j := get(f"{base}/tasks/{task_id}/"))["status"] == status and j,
                    timeout=timeout, what=f"{task_id} {status}")


def test_timewheel_run_runs_a_task_scheduled_by_a_view_and_drains_on_sigterm(project) -> None:
    web, base = project.runserver()
    metrics_port = free_port()
    worker = project.spawn("worker", "timewheel_run", "--grace", "20", "--metrics-port", str(metrics_port))
    wait_for(lambda: "SIGTERM or SIGINT stops it" in project.log("worker") or worker.poll() is not None,
             timeout=30, what="the worker to start")
    assert worker.poll() is None, project.log("worker")

    signup = post(base + "/signup/", email="ada@example.com")
    assert signup["task_id"] == f"welcome:{signup['customer']}"
    done = wait_status(base, signup["task_id"], "succeeded")
    # run by the worker process (found through tasks.py autodiscovery), not by the web one,
    # which never starts its wheel without run_in_web
    assert done["result"] == {"email": "ada@example.com", "pid": worker.pid}
    with sqlite3.connect(project.app_db) as con:       # the ORM wrote from the worker's thread
        assert con.execute("SELECT welcomed_by FROM shop_customer").fetchall() == [(worker.pid,)]
    # ... and closed its connection after the run, as Django does after a request
    wait_for(lambda: not open_files(worker.pid, project.app_db), timeout=5,
             what="the worker to close its database connection")

    # metrics: the store's counts from the web process, this worker's runs from its own port
    web_metrics = scrape(base + "/metrics")
    assert web_metrics[("timewheel_tasks", (("name", "shop.send_welcome"), ("status", "succeeded")))] == 1
    worker_metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    assert worker_metrics[("timewheel_runs_total", (("name", "shop.send_welcome"),
                                                    ("outcome", "succeeded")))] == 1
    assert worker_metrics[("timewheel_workers", ())] == 2

    slow = post(base + "/slow/", seconds="1.5")["task_id"]
    wait_status(base, slow, "running", timeout=10)
    worker.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert worker.wait(timeout=20) == 0, project.log("worker")
    assert 0.5 < time.monotonic() - t0 < 10            # it waited for the running task
    assert get(f"{base}/tasks/{slow}/")["result"] == f"slept 1.5s in {worker.pid}"
    log = project.log("worker")
    assert "SIGTERM: taking no new tasks" in log and "0 pending, 0 running" in log
    assert "Traceback" not in log and "Traceback" not in project.log("web")
    web.terminate()
    web.wait(timeout=10)


def test_run_in_web_starts_the_wheel_in_the_web_process_at_its_first_request(make_project) -> None:
    project = make_project(TIMEWHEEL_RUN_IN_WEB="1")
    try:
        web, base = project.runserver()
        signup = post(base + "/signup/", email="grace@example.com")
        done = wait_status(base, signup["task_id"], "succeeded")
        assert done["result"]["pid"] == web.pid
        # the same id again while it is finished: replaced, and run again
        again = post(base + "/signup/", email="linus@example.com")
        assert wait_status(base, again["task_id"], "succeeded")["result"]["email"] == "linus@example.com"
    finally:
        project.close()


@pytest.mark.parametrize("preload", [False, True])
def test_run_in_web_under_gunicorn_starts_each_worker_after_the_fork(make_project, preload) -> None:
    project = make_project(TIMEWHEEL_RUN_IN_WEB="1")
    try:
        master, base = project.gunicorn(*(["--preload"] if preload else []))
        signups = [post(base + "/signup/", email=f"u{i}@example.com") for i in range(6)]
        pids = {wait_status(base, s["task_id"], "succeeded")["result"]["pid"] for s in signups}
        assert master.pid not in pids                 # the (pre-fork) master never started one
        with sqlite3.connect(project.app_db) as con:
            assert con.execute("SELECT count(*) FROM shop_customer WHERE welcomed_at IS NOT NULL"
                               ).fetchone() == (6,)
        master.send_signal(signal.SIGTERM)
        assert master.wait(timeout=20) == 0
        log = project.log("web")
        assert "Traceback" not in log and "Shutting down: Master" in log
    finally:
        project.close()


def test_run_in_web_with_a_broken_store_logs_and_keeps_serving(tmp_path, make_project) -> None:
    broken = tmp_path / "not-a-store.db"
    broken.write_bytes(b"not a database" * 100)
    project = make_project(TIMEWHEEL_RUN_IN_WEB="1", TIMEWHEEL_DB=str(broken))
    try:
        web, base = project.runserver(probe="/customers/1/")
        for _ in range(3):                      # 404: the page works; the wheel did not start
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(base + "/customers/1/", timeout=10)
            assert info.value.code == 404
        log = project.log("web")
        assert log.count("could not start the TimeWheel in this web process; trying again in 10s") == 1
        assert broken.read_bytes() == b"not a database" * 100
    finally:
        project.close()


def test_the_apps_own_django_tests_run_tasks_inline_with_immediate(project) -> None:
    done = project.manage("test", "shop", "-v", "2", TIMEWHEEL_OPTIONS=json.dumps({"immediate": True}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_signup_welcomes_the_customer" in done.stderr and "OK" in done.stderr


@pytest.mark.parametrize("options, message", [
    ({"wrokers": 2}, "settings.TIMEWHEEL: unknown option(s) 'wrokers'; it takes path, workers"),
    ({"workers": 0}, "settings.TIMEWHEEL: workers must be an int from 1 to 1024, got 0"),
    ({"run_in_web": "yes"}, "settings.TIMEWHEEL: run_in_web must be True or False"),
])
def test_a_wrong_setting_fails_start_up_naming_it(tmp_path, options, message) -> None:
    done = Project(PROJECT, tmp_path).manage("check", TIMEWHEEL_OPTIONS=json.dumps(options))
    assert done.returncode != 0 and "ImproperlyConfigured: " + message in done.stderr, done.stderr


def test_timewheel_run_queues_claims_only_those(project) -> None:
    """``timewheel_run --queues`` starts the wheel on those queues: the store says so."""
    from timewheel.store import open_store
    worker = project.spawn("worker", "timewheel_run", "--grace", "5", "--queues", "emails, reports")
    wait_for(lambda: "SIGTERM or SIGINT stops it" in project.log("worker") or worker.poll() is not None,
             timeout=30, what="the worker to start")
    store = open_store(project.env["TIMEWHEEL_DB"], readonly=True)
    try:
        assert list(store.served().values()) == [frozenset({"emails", "reports"})]
    finally:
        store.close()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, project.log("worker")


@pytest.mark.parametrize("args, options, message", [
    ([], {"immediate": True}, "CommandError: settings.TIMEWHEEL keeps tasks in memory"),
    ([], {"path": None}, "CommandError: settings.TIMEWHEEL keeps tasks in memory"),
    (["--grace", "-1"], {}, "CommandError: --grace must be >= 0, got -1"),
    (["--queues", "emails,no:colon"], {}, "CommandError: --queues: a queue in queues must be"),
])
def test_timewheel_run_refuses_what_it_cannot_run_without_a_traceback(tmp_path, args, options,
                                                                       message) -> None:
    done = Project(PROJECT, tmp_path).manage("timewheel_run", *args, TIMEWHEEL_OPTIONS=json.dumps(options))
    assert done.returncode == 1 and done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tasks.db").exists()


def test_timewheel_run_on_a_file_that_is_not_a_store_fails_in_one_line(tmp_path) -> None:
    broken = tmp_path / "not-a-store.db"
    broken.write_bytes(b"not a database" * 100)
    done = Project(PROJECT, tmp_path, TIMEWHEEL_DB=str(broken)).manage("timewheel_run", "--grace", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"CommandError: {broken}: ") and done.stderr.count("\n") == 1
    assert broken.read_bytes() == b"not a database" * 100


class Browser:
    """An HTTP client with cookies, that does not follow redirects (to see them)."""

    def __init__(self, base: str) -> None:
        import http.cookiejar
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def request(self, path: str, form: "dict | None" = None, headers: "dict | None" = None):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def login(self, user: str) -> None:
        self.request("/admin/login/")
        status, headers, _ = self.request("/admin/login/", {
            "username": user, "password": "pw-" + user, "csrfmiddlewaretoken": self.cookie("csrftoken"),
            "next": "/admin/"})
        assert status == 302 and headers["Location"] == "/admin/", (status, headers)


def test_the_web_view_is_mounted_for_staff_only_and_actions_for_superusers(project) -> None:
    made = project.manage("shell", "-c", "\n".join([
        "from django.contrib.auth.models import User",
        "User.objects.create_user('plain', password='pw-plain')",
        "User.objects.create_user('staff', password='pw-staff', is_staff=True)",
        "User.objects.create_superuser('root', password='pw-root')",
        "from shop.tasks import slow",
        "h = slow.schedule((0,), task_id='to-retry', count_down=3600)",
        "assert h.cancel()",
        "slow.schedule((0,), task_id='grüße:1', count_down=3600)",
        "from django.test import Client",                # a signed-in user who is not staff
        "for name in ('plain', 'staff'):",
        "    c = Client(); c.force_login(User.objects.get(username=name))",
        "    print('SESSION', name, c.cookies['sessionid'].value)",
    ]))
    assert made.returncode == 0, made.stderr
    sessions = {line.split()[1]: line.split()[2] for line in made.stdout.splitlines()
                if line.startswith("SESSION ")}
    web, base = project.runserver()
    anonymous = Browser(base)
    status, headers, _ = anonymous.request("/ops/timewheel/")
    assert status == 302 and headers["Location"] == "/admin/login/?next=/ops/timewheel/"
    assert anonymous.request("/ops/timewheel/api/stats")[0] == 403

    as_plain = {"Cookie": f"sessionid={sessions['plain']}"}          # signed in, not staff
    status, headers, _ = anonymous.request("/ops/timewheel/tasks", headers=as_plain)
    assert status == 302 and headers["Location"] == "/admin/login/?next=/ops/timewheel/tasks"
    assert anonymous.request("/ops/timewheel/api/tasks", headers=as_plain)[0] == 403
    as_staff = {"Cookie": f"sessionid={sessions['staff']}"}          # the same way in, as staff
    assert anonymous.request("/ops/timewheel/api/tasks", headers=as_staff)[0] == 200

    staff = Browser(base)
    staff.login("staff")
    status, headers, html = staff.request("/ops/timewheel/")
    assert status == 200 and "text/html" in headers["Content-Type"]
    assert 'href="/ops/timewheel/static/app.css"' in html           # links under the mount
    status, headers, css = staff.request("/ops/timewheel/static/app.css")
    assert status == 200 and "text/css" in headers["Content-Type"] and css
    status, _, body = staff.request("/ops/timewheel/api/tasks/to-retry")
    assert status == 200 and json.loads(body)["status"] == "cancelled"
    status, _, body = staff.request("/ops/timewheel/api/tasks/" + urllib.parse.quote("grüße:1"))
    assert status == 200 and json.loads(body)["id"] == "grüße:1"           # a non-ASCII id
    token = {"X-CSRF-Token": staff.cookie("timewheel_csrf")}
    status, _, _ = staff.request("/ops/timewheel/api/tasks/to-retry/retry", {}, token)
    assert status == 403                                # staff may look, not change

    root = Browser(base)
    root.login("root")
    root.request("/ops/timewheel/")
    assert root.request("/ops/timewheel/api/tasks/to-retry/retry", {})[0] == 403     # no CSRF token
    status, _, body = root.request("/ops/timewheel/api/tasks/to-retry/retry", {},
                                   {"X-CSRF-Token": root.cookie("timewheel_csrf")})
    assert status == 200, body
    assert json.loads(staff.request("/ops/timewheel/api/tasks/to-retry")[2])["status"] == "pending"
    assert "Traceback" not in project.log("web")


def test_the_mounted_web_view_in_a_browser(project, page) -> None:  # noqa: F811 - the fixture
    made = project.manage("shell", "-c", "\n".join([
        "from django.contrib.auth.models import User",
        "User.objects.create_superuser('root', password='pw-root')",
        "from shop.tasks import slow",
        "assert slow.schedule((0,), task_id='to-retry', count_down=3600).cancel()",
    ]))
    assert made.returncode == 0, made.stderr
    web, base = project.runserver(insecure=True)          # the admin's login page has assets too
    pg = page
    pg.goto(base + "/ops/timewheel/tasks/to-retry")
    assert pg.url == base + "/admin/login/?next=/ops/timewheel/tasks/to-retry"
    pg.fill("#id_username", "root")
    pg.fill("#id_password", "pw-root")
    pg.click("input[type=submit]")
    pg.wait_for_url(base + "/ops/timewheel/tasks/to-retry")
    assert "cancelled" in pg.text_content("main")
    pg.click("#retry")
    pg.wait_for_selector(".flash")
    assert "retried 1 task" in pg.text_content(".flash")
    assert get(base + "/tasks/to-retry/")["status"] == "pending"
    pg.goto(base + "/ops/timewheel/")                 # the live overview: its scripts run here
    pg.wait_for_selector('[data-count="pending"]')
    assert pg.text_content('[data-count="pending"]').strip() == "1"
