"""examples/flask_app.py (timewheel.contrib.flask) under a real ``gunicorn -w 4`` (with and
without ``--preload``): each worker starts its wheel at the first request it serves.

Sign-ups are posted over HTTP; each schedules a verification email ~1 s later.  Each email
task appends a line to EMAIL_LOG; every sign-up must produce exactly one line, whichever
worker took the request and whichever worker ticks.  Gunicorn runs in its own session and
the whole process group is killed at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from timewheel.testing import processes as procs

from .conftest import read_meta
from .mp_worker import read_lines, wait_for
from .site_tasks import started_pids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN_CONF = os.path.join(ROOT, "tests", "gunicorn_conf.py")     # workers die with the master
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which("gunicorn")

if GUNICORN is None:   # it is in the test extra: a missing one is a broken set-up, not a skip
    raise RuntimeError("gunicorn is not installed: pip install -e '.[test]'")


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, db: str, email_log: str, out: str) -> None:
        self.proc, self.url, self.db, self.email_log, self.out = proc, url, db, email_log, out

    def request(self, method: str, path: str, data: dict | None = None, timeout: float = 10.0):
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            raise AssertionError(f"{method} {path}: HTTP {status}, not JSON: {raw[:300]!r}\n"
                                 f"gunicorn output:\n{self.tail()}") from None

    def tail(self, n: int = 60) -> str:
        with open(self.out, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n:])

    def signup(self, email: str) -> str:
        status, body = self.request("POST", "/signup", {"email": email})
        assert status == 202, (status, body)
        return body["task_id"]

    def status(self, task_id: str) -> str:
        status, body = self.request("GET", f"/tasks/{task_id}")
        assert status == 200, (status, body)
        return body["status"]

    def emails(self) -> Counter:
        try:
            with open(self.email_log, encoding="utf-8") as fh:
                return Counter(line.split()[0] for line in fh if line.strip())
        except FileNotFoundError:
            return Counter()

    def workers(self) -> set[int]:
        return {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", self.tail(10_000))}

    def leader_pid(self) -> int | None:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            leader = read_meta(con).get("leader")
        finally:
            con.close()
        return int(str(leader).split(":")[0]) if leader else None


def _supports_no_control_socket() -> bool:
    r = procs.run([GUNICORN, "--help"], capture_output=True, text=True, timeout=30)
    return "--no-control-socket" in r.stdout


@pytest.fixture
def gunicorn(tmp_path):
    masters: list[subprocess.Popen] = []
    extra_default = ["--no-control-socket"] if _supports_no_control_socket() else []

    def start(*extra: str, workers: int = 4, app: str = "examples.flask_app:app", cwd: str = ROOT,
              **env_vars: str) -> Server:
        db = str(tmp_path / "tasks.db")
        email_log = str(tmp_path / "emails.log")
        out_path = str(tmp_path / f"gunicorn-{len(masters)}.out")
        env = {**os.environ, "TIMEWHEEL_DB": db, "EMAIL_LOG": email_log, "VERIFY_EMAIL_DELAY": "1",
               **env_vars}
        with open(out_path, "wb") as out:
            p = procs.popen(
                [GUNICORN, "-w", str(workers), "-b", "127.0.0.1:0", "--graceful-timeout", "5",
                 "--timeout", "30", *extra_default, *([] if "-c" in extra else ["-c", GUNICORN_CONF]),
                 *extra, app],
                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        masters.append(p)

        def listening():
            assert p.poll() is None, open(out_path).read()[-3000:]
            m = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", open(out_path).read())
            return m.group(1) if m else None
        url = wait_for(listening, 30, what="gunicorn to listen")
        booted = lambda: open(out_path).read().count("Booting worker") >= workers  # noqa: E731
        wait_for(booted, 30, what="gunicorn workers to boot")
        return Server(p, url, db, email_log, out_path)

    yield start

    for p in masters:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in masters:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)     # the master and any worker left behind
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def _signups(server: Server, n: int, prefix: str) -> dict[str, str]:
    emails = [f"{prefix}{i}@example.com" for i in range(n)]
    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(server.signup, emails))
    return dict(zip(emails, ids))


def _wait_all_sent(server: Server, tasks: dict[str, str], timeout: float = 30.0) -> None:
    def done():
        return all(server.status(i) == "succeeded" for i in tasks.values())
    wait_for(done, timeout, interval=0.2, what="every verification email to be sent")


def _check_exactly_once(server: Server, tasks: dict[str, str]) -> None:
    sent = server.emails()
    assert set(sent) == set(tasks), set(tasks) ^ set(sent)
    assert [e for e, n in sent.items() if n != 1] == []


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_signups_send_each_email_exactly_once(gunicorn, preload):
    server = gunicorn(*(["--preload"] if preload else []))
    t0 = time.time()
    tasks = _signups(server, 40, "user")
    assert server.status(next(iter(tasks.values()))) in ("pending", "running", "succeeded")
    _wait_all_sent(server, tasks)
    time.sleep(1.0)                     # a second run would have happened by now
    _check_exactly_once(server, tasks)
    assert time.time() - t0 >= 1.0      # VERIFY_EMAIL_DELAY=1: not sent at once
    # The extension starts a worker's wheel at the first request it serves (also with
    # --preload: never in the master): a worker that answers has started, the emails were
    # sent by workers only.
    workers = server.workers()
    answers = [server.request("GET", "/timewheel")[1] for _ in range(8)]
    assert all(a["running"] for a in answers)
    assert {a["pid"] for a in answers} <= started_pids(server.db) <= workers
    assert {int(line[2]) for line in read_lines(server.email_log)} <= workers
    assert server.proc.pid not in started_pids(server.db)
    status, body = server.request("GET", "/tasks/nope")
    assert status == 404


def test_leading_worker_sigkilled_another_worker_takes_over(gunicorn):
    server = gunicorn()
    first = _signups(server, 40, "warm")        # every worker has served (and started) by now
    _wait_all_sent(server, first)
    leader = server.leader_pid()
    assert leader is not None
    tasks = _signups(server, 20, "late")         # due ~1 s from now
    os.kill(leader, signal.SIGKILL)               # gunicorn's master starts a new worker
    _wait_all_sent(server, tasks, timeout=30)
    time.sleep(1.0)
    _check_exactly_once(server, {**first, **tasks})
    assert wait_for(lambda: server.leader_pid() not in (None, leader), 10, what="a new leader")


PRELOADED_APP = """
import os
from flask import Flask, jsonify
from timewheel import TimeWheel

app = Flask(__name__)
hu = TimeWheel(os.environ["TIMEWHEEL_DB"], workers=2)

@hu.task(name="where")
def where():
    return os.getpid()

hu.start()          # the mistake: at import, so in the master under --preload

@app.post("/where")
def ran_where():
    return jsonify(worker=os.getpid(), ran_in=where.delay().result(timeout=10))
"""


def test_a_wheel_started_in_a_preloaded_master_is_reported_in_the_log(gunicorn, tmp_path):
    """Issue 19 item 11: with hu.start() at import and --preload every task ran in the master,
    silently.  Each worker that uses the wheel logs, once, what happened and the fix."""
    (tmp_path / "preloaded_app.py").write_text(PRELOADED_APP)
    server = gunicorn("--preload", workers=2, app="preloaded_app:app", cwd=str(tmp_path))
    answers = [server.request("POST", "/where")[1] for _ in range(6)]
    assert {a["ran_in"] for a in answers} == {server.proc.pid}       # the master ran them all
    workers = {a["worker"] for a in answers}
    assert server.proc.pid not in workers
    log = server.tail(400)
    warnings = [line for line in log.splitlines() if "was started in process" in line]
    assert len(warnings) == len(workers), log                        # once per worker that used it
    for worker in workers:
        line = next(w for w in warnings if f"before it forked this process ({worker})" in w)
        assert f"was started in process {server.proc.pid}" in line
        assert "post_fork" in line and "--preload" in line


@pytest.mark.parametrize("conf", [False, True], ids=["bare", "with-gunicorn.conf"])
def test_task_failures_reach_gunicorns_log_with_the_example_conf(gunicorn, tmp_path, conf):
    """Issue 19 item 13: under gunicorn nothing about a failing task reached the log; with
    examples/gunicorn.conf.py (the README's recipe) the failure is in gunicorn's error log."""
    server = gunicorn(*(["-c", os.path.join(ROOT, "examples", "gunicorn.conf.py")] if conf else []),
                      workers=2, EMAIL_LOG=str(tmp_path / "no-such-dir" / "emails.log"))
    task_id = server.signup("ann@example.com")           # the "email" fails: its log cannot be opened

    def attempted() -> bool:
        status, body = server.request("GET", f"/tasks/{task_id}")
        return status == 200 and body["attempts"] >= 1 and body["error"] is not None
    wait_for(attempted, 20, interval=0.2, what="the first attempt to fail")
    time.sleep(0.5)                                       # the log line is written before the record
    failure = f"task {task_id} (signup.send_verification_email) failed, attempt 1 of 4: FileNotFoundError"
    assert (failure in server.tail(400)) == conf, server.tail(400)
