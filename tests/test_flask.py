"""timewheel.contrib.flask: the config it reads, the wheels it makes (one per app, tasks run
in an app context), where it starts them, the mounted view behind its checks, ``flask
timewheel`` -- in-process on real files and started wheels, then for real: ``flask timewheel
run`` and ``flask timewheel inspect`` as commands, and the app under ``gunicorn -w 4``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Iterator

import pytest
from flask import Flask, current_app, g, session

from timewheel import StoreError, TimeWheel
from timewheel.contrib.flask import ConfigError, FlaskTimeWheel
from timewheel.contrib.flask.config import QUEUES, RUN_IN_WEB, STORE, WEB_PREFIX, option_keys, read
from timewheel.testing import processes as procs

from .mp_worker import Runs, wait_for
from .servers import ROOT, servers, tool  # noqa: F401 - servers is a fixture
from .site_tasks import check_view, run_once_over_http, started_pids, stop_while_running

# -- the config ---------------------------------------------------------------------------------


def test_every_timewheel_option_is_a_key_and_the_docs_list_them_all() -> None:
    keys = option_keys()
    assert keys[STORE] == "path" and keys["TIMEWHEEL_WORKERS"] == "workers"
    import inspect
    assert sorted(keys.values()) == sorted(p for p in inspect.signature(TimeWheel.__init__).parameters
                                           if p != "self")
    with open(os.path.join(ROOT, "docs", "integrations", "flask.md"), encoding="utf-8") as fh:
        page = fh.read()
    table = page[page.index("| `TIMEWHEEL_STORE`"):]
    rows = table[:table.index("\n\n")].splitlines()
    documented = [key for row in rows for key in re.findall(r"`(TIMEWHEEL_\w+)`", row.split("|")[1])]
    assert sorted(documented) == sorted([*keys, RUN_IN_WEB, QUEUES, WEB_PREFIX])


@pytest.mark.parametrize("config, message", [
    ({"TIMEWHEEL_WROKERS": 4},
     "app.config['TIMEWHEEL_WROKERS']: unknown key (did you mean TIMEWHEEL_WORKERS?)"),
    ({"TIMEWHEEL_PATH": "x.db"}, "app.config['TIMEWHEEL_PATH']: unknown key"),
    ({"TIMEWHEEL_WORKERS": "4"}, "app.config['TIMEWHEEL_WORKERS']: workers must be an int from 1 to 1024"),
    ({"TIMEWHEEL_TICK": -1}, "app.config['TIMEWHEEL_TICK']: "),
    ({"TIMEWHEEL_RESULT_TTL": "7d"}, "app.config['TIMEWHEEL_RESULT_TTL']: result_ttl must be a number"),
    ({"TIMEWHEEL_STORE": 42}, "app.config['TIMEWHEEL_STORE']: path must be a file path"),
    ({"TIMEWHEEL_STORE": ""}, "app.config['TIMEWHEEL_STORE']: not a usable store path"),
    ({"TIMEWHEEL_NAMESPACE": " x"}, "app.config['TIMEWHEEL_NAMESPACE']: namespace must be"),
    ({"TIMEWHEEL_RUN_IN_WEB": "yes"}, "app.config['TIMEWHEEL_RUN_IN_WEB'] must be True or False, got 'yes'"),
    ({"TIMEWHEEL_WEB_PREFIX": "/"}, "app.config['TIMEWHEEL_WEB_PREFIX'] must be a URL path"),
    ({"TIMEWHEEL_WEB_PREFIX": "ops"}, "must be a URL path such as '/ops/timewheel'"),
    ({"TIMEWHEEL_WEB_PREFIX": "/ops tw"}, "must be a URL path"),
    ({"TIMEWHEEL_WEB_PREFIX": "/ops//tw"}, "must be a URL path"),
    ({"TIMEWHEEL_WEB_PREFIX": "/öps"}, "must be a URL path"),
    ({"TIMEWHEEL_WEB_PREFIX": True}, "must be a URL path"),
    ({"TIMEWHEEL_QUEUES": "emails"}, "app.config['TIMEWHEEL_QUEUES']: queues must be a list of queue names"),
    ({"TIMEWHEEL_QUEUES": []}, "app.config['TIMEWHEEL_QUEUES']: queues must name at least one queue"),
    ({"TIMEWHEEL_QUEUES": ["ok", ""]}, "app.config['TIMEWHEEL_QUEUES']: "),
])
def test_a_wrong_key_or_value_is_an_error_naming_the_key(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read(config, "/srv/instance")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_what_the_config_says(tmp_path) -> None:
    default = read({"SECRET_KEY": "x", "OTHER_TIMEWHEEL": 1}, "/srv/instance")    # others are not ours
    assert default.options == {"path": "/srv/instance/tasks.db"}
    assert default.run_in_web is True and default.web_prefix is None and default.queues is None
    assert read({QUEUES: ("emails", "default")}, "/x").queues == frozenset({"emails", "default"})
    assert default.instance_dir == "/srv/instance"
    given = read({STORE: "data/t.db", "TIMEWHEEL_WORKERS": 2, "TIMEWHEEL_TICK": 0.5, RUN_IN_WEB: False,
                  WEB_PREFIX: "/ops/tw/"}, "/srv/instance")
    assert given.options == {"path": "/srv/instance/data/t.db", "workers": 2, "tick": 0.5}
    assert given.run_in_web is False and given.web_prefix == "/ops/tw"
    assert given.instance_dir == "/srv/instance/data"
    for store, path in [(str(tmp_path / "a.db"), str(tmp_path / "a.db")),
                        (tmp_path / "b.db", str(tmp_path / "b.db")),
                        ("redis://h:6379/0", "redis://h:6379/0"), (None, None)]:
        settings = read({STORE: store}, "/x")
        assert settings.options["path"] == path and settings.instance_dir is None


def test_init_app_refuses_a_bad_config_a_second_extension_and_bad_checks(tmp_path) -> None:
    app = Flask("bad")
    app.config["TIMEWHEEL_WORKER"] = 2
    tw = FlaskTimeWheel()
    with pytest.raises(ConfigError, match="did you mean TIMEWHEEL_WORKERS"):
        tw.init_app(app)
    assert "timewheel" not in app.extensions
    good = make_app("good", tmp_path)
    with pytest.raises(RuntimeError, match="already registered on app 'good'"):
        FlaskTimeWheel(good)
    with pytest.raises(TypeError, match="authorize must be a check"):
        FlaskTimeWheel(authorize="admin")             # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_actions must be a bool or a check"):
        FlaskTimeWheel(allow_actions="yes")           # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries must be an int"):
        tw.task(retries=-1)                           # checked at the decorator, before any app


# -- apps and their wheels ------------------------------------------------------------------------

APPS: list[Flask] = []


def make_app(name: str, tmp_path, tw: FlaskTimeWheel | None = None, **config: Any) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / f"{name}-instance"))
    app.config.update({STORE: "tasks.db", "TIMEWHEEL_TICK": 0.25, **config})
    (tw or FlaskTimeWheel()).init_app(app)
    APPS.append(app)
    return app


@pytest.fixture(autouse=True)
def stop_wheels() -> Iterator[None]:
    yield
    while APPS:
        APPS.pop().extensions["timewheel"].wheel.stop(wait=True, timeout=10)


def test_each_app_has_its_wheel_and_tasks_run_in_its_app_context(tmp_path) -> None:
    tw = FlaskTimeWheel()
    seen: list[tuple[str, str]] = []

    @tw.task(name="which")
    def which(x: int) -> tuple[str, int, bool]:
        return current_app.name, x, getattr(g, "leftover", False)

    a = make_app("a", tmp_path, tw)
    b = make_app("b", tmp_path, tw)

    @tw.task(name="late")                               # after init_app: on every app's wheel too
    def late() -> str:
        g.leftover = True                               # gone with the run's app context
        return current_app.name

    @tw.on("succeeded")
    def hooked(record: Any, exc: Any) -> None:
        seen.append((current_app.name, record.name))

    @a.teardown_appcontext
    def torn(exc: Any) -> None:
        seen.append(("teardown", "a"))

    wa, wb = a.extensions["timewheel"].wheel, b.extensions["timewheel"].wheel
    assert wa is not wb and wa.path == str(tmp_path / "a-instance" / "tasks.db")
    assert wb.path == str(tmp_path / "b-instance" / "tasks.db") and os.path.isdir(tmp_path / "b-instance")
    assert set(wa.tasks) == set(wb.tasks) == {"which", "late"}
    assert not wa.running and wa._store is None          # init_app opens and starts nothing
    wa.start(), wb.start()
    with a.app_context():
        assert tw.wheel is wa
        assert late.delay().result(timeout=10) == "a"
        h = which.delay(1)
    with b.app_context():
        assert tw.wheel is wb and which.delay(2).result(timeout=10) == ("b", 2, False)
    assert h.result(timeout=10) == ("a", 1, False)
    assert which.for_app(b).timewheel is wb
    with a.app_context():
        assert which(5) == ("a", 5, False)              # a plain call just calls
    assert {t.name for t in (which.for_app(a), late.for_app(a))} == {"which", "late"}
    wait_for(lambda: len([s for s in seen if s[0] != "teardown"]) == 3, 10, what="the hooks")
    assert sorted(s for s in seen if s[0] != "teardown") == [("a", "late"), ("a", "which"), ("b", "which")]
    assert seen.count(("teardown", "a")) >= 4           # two runs, two hooks: each in a context of its own
    with pytest.raises(RuntimeError, match="needs an application context"):
        which.delay(3)
    with pytest.raises(RuntimeError, match="needs an application context"):
        assert tw.wheel
    with Flask("other").app_context(), pytest.raises(RuntimeError, match="not registered on app 'other'"):
        which.delay(3)


def test_periodic_tasks_run_on_each_apps_wheel_in_its_app_context(tmp_path) -> None:
    tw = FlaskTimeWheel()
    ran: list[str] = []

    @tw.periodic(every=0.25, name="beat")
    def beat() -> None:
        ran.append(current_app.name)

    with pytest.raises(ValueError):
        tw.periodic(every=-1)                     # checked at the decorator
    app = make_app("beating", tmp_path, tw)
    assert "beat" in app.extensions["timewheel"].wheel.tasks
    app.extensions["timewheel"].wheel.start()
    wait_for(lambda: len(ran) >= 2, 10, what="two beats")
    assert set(ran) == {"beating"}


def test_immediate_mode_runs_tasks_inside_the_request_that_enqueues_them(tmp_path) -> None:
    tw = FlaskTimeWheel()
    torn: list[str] = []

    @tw.task(name="inline")
    def inline() -> str:
        return g.user                                     # the request's own app context

    app = make_app("imm", tmp_path, tw, TIMEWHEEL_IMMEDIATE=True)
    app.teardown_appcontext(lambda exc: torn.append("torn"))

    @app.get("/")
    def index() -> Any:
        g.user = "ann"
        result = inline.delay().result(timeout=0)
        return {"result": result, "torn_before_the_end": list(torn)}

    assert app.test_client().get("/").json == {"result": "ann", "torn_before_the_end": []}
    assert torn == ["torn"]
    assert not os.path.exists(tmp_path / "imm-instance" / "tasks.db")


def test_the_wheel_starts_at_the_first_request_unless_told_not_to(tmp_path) -> None:
    app = make_app("lazy", tmp_path)
    off = make_app("off", tmp_path, TIMEWHEEL_RUN_IN_WEB=False)
    for a in (app, off):
        a.get("/")(lambda: "ok")
    wheel = app.extensions["timewheel"].wheel
    with app.app_context():
        pass                                              # an app context (a CLI command) starts nothing
    assert not wheel.running
    assert app.test_client().get("/").status_code == 200 and wheel.running
    assert off.test_client().get("/").status_code == 200
    assert not off.extensions["timewheel"].wheel.running


def test_web_processes_serve_only_the_queues_the_config_names(tmp_path) -> None:
    """TIMEWHEEL_QUEUES: the wheel started at the first request runs only those queues' tasks;
    the others stay pending for a worker that serves them (``flask timewheel run --queues``)."""
    tw = FlaskTimeWheel()
    ran: list[str] = []

    @tw.task(queue="emails")
    def mail(x: str) -> None:
        ran.append(x)

    @tw.task(queue="reports")
    def report(x: str) -> None:
        ran.append(x)

    app = make_app("queues", tmp_path, tw, TIMEWHEEL_QUEUES=["emails"])
    app.get("/")(lambda: "ok")
    with app.app_context():
        hm, hr = mail.delay("m"), report.delay("r")
    assert app.test_client().get("/").status_code == 200
    wheel = app.extensions["timewheel"].wheel
    assert wheel.running
    with app.app_context():
        wait_for(lambda: wheel.get(hm.id).status == "succeeded", 10)
        assert ran == ["m"]
        time.sleep(3 * 0.25)                             # three ticks: still nobody runs reports
        assert wheel.get(hr.id).status == "pending" and ran == ["m"]


def test_a_store_that_cannot_be_opened_at_the_first_request_is_logged_and_the_site_serves(
        tmp_path, caplog) -> None:
    (tmp_path / "afile").write_text("not a directory")
    app = make_app("broken", tmp_path, **{STORE: str(tmp_path / "afile" / "tasks.db")})
    app.get("/")(lambda: "still serving")
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="timewheel.flask"):
        assert [client.get("/").status_code for _ in range(3)] == [200] * 3
    failures = [r for r in caplog.records if "could not start the TimeWheel" in r.getMessage()]
    assert len(failures) == 1 and "trying again in 10s" in failures[0].getMessage()    # not at each request
    state = app.extensions["timewheel"]
    state.start()                          # gunicorn's post_worker_init: as a request, no error
    assert not state.wheel.running
    off = make_app("broken-off", tmp_path, **{STORE: str(tmp_path / "afile" / "tasks.db"), RUN_IN_WEB: False})
    with pytest.raises(StoreError):
        off.extensions["timewheel"].start()    # nothing would try again: the error is raised


# -- the web view --------------------------------------------------------------------------------

def view_app(tmp_path, **options: Any) -> tuple[Flask, FlaskTimeWheel]:
    tw = FlaskTimeWheel(**options)
    app = make_app("view", tmp_path, tw, **{WEB_PREFIX: "/ops/tw", RUN_IN_WEB: False})
    app.secret_key = "s3cret-for-the-test"

    @app.post("/login")
    def login() -> str:
        session["role"] = "admin"
        return "ok"
    return app, tw


def test_the_view_is_off_unless_a_prefix_is_set(tmp_path) -> None:
    app = make_app("noview", tmp_path)
    assert app.test_client().get("/timewheel/").status_code == 404
    assert "timewheel" not in app.blueprints


def test_without_an_authorize_check_the_view_refuses_everything(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="timewheel.flask"):
        app, _ = view_app(tmp_path, allow_actions=True)
    assert "the web view refuses every request" in caplog.text
    client = app.test_client()
    for path in ("/ops/tw/", "/ops/tw/tasks", "/ops/tw/api/inspect", "/ops/tw/metrics"):
        assert client.get(path).status_code == 403, path
    assert client.post("/ops/tw/api/purge", data={"older_than": "1s"}).status_code == 403
    assert client.get("/ops/tw/static/app.css").status_code == 200        # (the view's public files)


def test_the_view_answers_behind_the_apps_own_session_check(tmp_path) -> None:
    app, tw = view_app(tmp_path, authorize=lambda request: session.get("role") == "admin",
                       allow_actions=lambda request: request.headers.get("X-Admin") == "yes")

    @tw.task(name="odd.ids")
    def odd() -> None:
        raise RuntimeError("no")

    wheel = app.extensions["timewheel"].wheel
    with app.app_context():
        odd.schedule(task_id="a//b", count_down=3600)
        failed = odd.delay(task_id="f1")
    wheel.start()
    wait_for(lambda: failed.status == "failed", 10, what="the task to fail")
    client = app.test_client()
    assert client.get("/ops/tw/api/inspect").status_code == 403
    assert client.get("/ops/tw").status_code == 308                       # to /ops/tw/
    client.post("/login")
    page = client.get("/ops/tw/")
    assert page.status_code == 200 and 'src="/ops/tw/static/app.js"' in page.text
    assert client.get("/ops/tw/api/inspect").json["counts"]["failed"] == 1
    assert client.get("/ops/tw/api/tasks/a%2F%2Fb").json["id"] == "a//b"    # no slashes merged
    assert client.get("/ops/tw/tasks/f1").status_code == 200
    csrf = client.get_cookie("timewheel_csrf", path="/ops/tw")
    assert csrf is not None
    headers = {"X-CSRF-Token": csrf.value}
    r = client.post("/ops/tw/api/tasks/f1/retry", headers=headers)
    assert r.status_code == 403 and failed.status == "failed"             # allowed to look, not to act
    r = client.post("/ops/tw/api/tasks/a%2F%2Fb/cancel", headers={**headers, "X-Admin": "yes"})
    assert r.status_code == 200 and r.json["cancelled"] == ["a//b"]
    assert client.post("/ops/tw/api/tasks/f1/retry", headers={"X-Admin": "yes"}).status_code == 403  # no CSRF


def test_a_check_that_raises_refuses_and_is_logged(tmp_path, caplog) -> None:
    def broken(request: Any) -> bool:
        raise KeyError("role")

    app, _ = view_app(tmp_path, authorize=lambda request: True, allow_actions=broken)
    client = app.test_client()
    csrf = client.get("/ops/tw/") and client.get_cookie("timewheel_csrf", path="/ops/tw")
    with caplog.at_level(logging.ERROR):
        r = client.post("/ops/tw/api/purge", data={"older_than": "1s"}, headers={"X-CSRF-Token": csrf.value})
    assert r.status_code == 403 and "the allow_actions check failed" in caplog.text
    other, _ = view_app(tmp_path / "x", authorize=broken)
    with caplog.at_level(logging.ERROR):
        assert other.test_client().get("/ops/tw/api/inspect").status_code == 403
    assert "the authorize hook failed" in caplog.text


# -- flask timewheel ...: timewheel's commands on the app's store --------------------------------

def test_the_cli_commands_work_on_the_apps_store(tmp_path) -> None:
    tw = FlaskTimeWheel()

    @tw.task(name="cli.later")
    def later(x: int) -> int:
        return x

    app = make_app("cli", tmp_path, tw)
    runner = app.test_cli_runner()
    r = runner.invoke(args=["timewheel", "inspect"])
    assert r.exit_code == 1 and "the store does not exist" in r.output        # nothing enqueued yet
    with app.app_context():
        ids = [later.delay(i, count_down=3600).id for i in range(3)]
    r = runner.invoke(args=["timewheel", "tasks", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(t["id"] for t in json.loads(r.output)["tasks"]) == sorted(ids)
    r = runner.invoke(args=["timewheel", "cancel", ids[0]])
    assert r.exit_code == 0 and "cancelled" in r.output
    r = runner.invoke(args=["timewheel", "show", ids[0], "--json"])
    assert json.loads(r.output)["status"] == "cancelled"
    r = runner.invoke(args=["timewheel", "inspect", "--json"])
    assert json.loads(r.output)["store"]["path"] == str(tmp_path / "cli-instance" / "tasks.db")
    r = runner.invoke(args=["timewheel", "--help"])
    assert all(c in r.output for c in ("inspect", "tasks", "show", "stats", "timeline", "cancel", "retry",
                                       "purge", "run"))
    r = runner.invoke(args=["timewheel", "retry", "--help"])
    assert "flask timewheel retry --all-failed" in r.output and "DB" not in r.output
    r = runner.invoke(args=["timewheel", "tasks", "--status", "nope"])
    assert r.exit_code == 2
    memory = make_app("mem", tmp_path, **{STORE: None})
    r = memory.test_cli_runner().invoke(args=["timewheel", "inspect"])
    assert r.exit_code == 1 and "keeps its tasks in memory" in r.output


def test_the_cli_uses_the_apps_redis_namespace(tmp_path, redis_db) -> None:
    tw = FlaskTimeWheel()
    later = tw.task(name="cli.redis")(lambda: None)
    app = make_app("red", tmp_path, tw, **{STORE: redis_db, "TIMEWHEEL_NAMESPACE": "shop"})
    with app.app_context():
        task_id = later.delay(count_down=3600).id
    r = app.test_cli_runner().invoke(args=["timewheel", "tasks", "--json"])
    assert r.exit_code == 0, r.output
    assert [t["id"] for t in json.loads(r.output)["tasks"]] == [task_id]


def site_env(tmp_path, **extra: str) -> dict[str, str]:
    return {"RUN_LOG": str(tmp_path / "runs.log"), "TIMEWHEEL_DB": str(tmp_path / "tasks.db"),
            "SITE_KEY": "site-key-1", "PYTHONPATH": ROOT, **extra}


def test_flask_timewheel_run_is_a_worker_that_drains_at_sigterm(tmp_path, servers) -> None:  # noqa: F811
    env = site_env(tmp_path, SITE_WORKERS="2")
    enqueue = procs.run(
        [tool("flask"), "--app", "tests.flask_site", "shell"], cwd=ROOT, env={**os.environ, **env},
        input="from tests.flask_site import record\n"
              "print([record.delay(f'w{i}').id for i in range(6)], record.delay('slow', 3.0).id)\n",
        capture_output=True, text=True, timeout=60)
    assert enqueue.returncode == 0, enqueue.stderr
    worker = servers([tool("flask"), "--app", "tests.flask_site", "timewheel", "run", "--json",
                      "--grace", "20"], env=env, name="worker")
    log = env["RUN_LOG"]
    worker.wait(lambda: "slow" in Runs(log).starts and len(Runs(log).finished()) >= 6, 30,
                what="the worker to run the tasks")
    assert worker.terminate(timeout=30) == 0, worker.output()
    runs = Runs(log)
    assert runs.finished() == {f"w{i}" for i in range(6)} | {"slow"} and runs.duplicates() == {}
    assert set(runs.starts["slow"]) == {str(worker.proc.pid)}
    summary = json.loads(worker.output()[worker.output().index("{"):])
    assert summary["app"] == "flask_site" and summary["signal"] == "SIGTERM" and summary["unfinished"] == 0


# -- the app under gunicorn -w 4 ------------------------------------------------------------------

def test_under_gunicorn_every_worker_starts_and_tasks_run_once(tmp_path, servers) -> None:  # noqa: F811
    """examples/gunicorn.conf.py starts the wheel in each worker at boot (with --preload: the
    app was made in the master, which never starts it); enqueued through HTTP, each task
    runs once; the view answers behind its checks; ``flask timewheel inspect`` sees the
    app's store; SIGTERM lets a running task finish and stops every wheel."""
    env = site_env(tmp_path, SITE_WORKERS="2", SITE_EXIT_GRACE="10")
    server = servers([tool("gunicorn"), "-c", "examples/gunicorn.conf.py", "-w", "4", "--preload",
                      "-b", "127.0.0.1:0", "--graceful-timeout", "20", "--no-control-socket",
                      "tests.flask_site:app"], env=env, name="gunicorn")
    server.wait_output(r"Listening at: http://127\.0\.0\.1:\d+")
    server.wait_output(r"Booting worker with pid: \d+", count=4)
    server.url = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", server.output()).group(1)
    workers = set(server.pids(r"Booting worker with pid: (\d+)"))
    # every worker started its wheel at boot, before any request; the master, which made
    # the app (--preload), did not
    server.wait(lambda: started_pids(env["TIMEWHEEL_DB"]) == workers, 30,
                what="a started wheel in each worker")
    assert server.proc.pid not in workers

    tags = run_once_over_http(server, env["RUN_LOG"], workers)
    check_view(server)

    # the app's own CLI reads the store the workers use
    done = procs.run([tool("flask"), "--app", "tests.flask_site", "timewheel", "inspect", "--json"],
                     cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    inspected = json.loads(done.stdout)
    assert inspected["store"]["path"] == env["TIMEWHEEL_DB"] and inspected["ticker"]["ticking"]
    assert int(inspected["ticker"]["leader"].split(":")[0]) in workers

    # SIGTERM: the running task finishes and is recorded; the wheels stop
    runs = stop_while_running(server, env["RUN_LOG"], env["TIMEWHEEL_DB"])
    assert runs.finished() >= tags
