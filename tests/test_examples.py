"""Smoke tests: every example in examples/ runs and does what its docstring says."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import sys
import time
from types import ModuleType

import pytest

from timewheel.testing import processes as procs

from .conftest import ROOT, wait_for

EXAMPLES = os.path.join(ROOT, "examples")


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = procs.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                     env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
                     capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """Import examples/<name>.py afresh (its own TimeWheel) with ``env`` set."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not module.hu.running and module.hu._store is None     # nothing starts at import
    return module


def test_quickstart(tmp_path) -> None:
    out = run_script("quickstart.py", str(tmp_path / "tasks.db"))
    for i in (1, 2, 3):
        assert f"'sent to user{i}@example.com'" in out
    assert "failed after 3 attempts: ConnectionError" in out
    assert "is cancelled: True" in out
    assert "'cancelled'" in out and out.count("'succeeded'") == 3 and "'failed'" in out
    # its last line names a command that works as printed, with no venv activated (issue 12.11)
    hint = shlex.split(out.strip().splitlines()[-1].split("with:", 1)[1])
    done = procs.run(hint, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "3 succeeded, 1 cancelled" in done.stdout, done.stderr


def test_periodic_report(tmp_path) -> None:
    out = run_script("periodic_report.py", "3.5", "1",
                     env={"TIMEWHEEL_DB": str(tmp_path / "tasks.db"), "REPORT_CRON": "* * * * * *"})
    lines = out.splitlines()
    assert sum("rebuild_report (every 1s)" in line for line in lines) >= 2
    assert sum("cleanup (cron '* * * * * *', Europe/Berlin)" in line for line in lines) >= 2
    runs = {line.split(":")[0]: int(line.split()[1]) for line in lines if " run(s), next at " in line}
    assert runs.keys() == {"reports.rebuild", "maintenance.cleanup"} and min(runs.values()) >= 2


# Raised by the installed Starlette about its own TestClient; nothing to do with this app.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_fastapi_app(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    example = load_example("fastapi_app", monkeypatch,
                           TIMEWHEEL_DB=str(tmp_path / "tasks.db"), REPORT_DELAY="1")
    with TestClient(example.app) as client:
        assert example.hu.running                                  # started by the lifespan
        r = client.post("/thumbnails", params={"url": "https://example.com/cat.png", "size": 64})
        assert r.status_code == 200, r.text
        assert r.json() == {"url": "https://example.com/cat.png", "size": 64,
                            "thumbnail": "https://example.com/cat.png?w=64"}

        r = client.post("/reports", params={"days": 2})
        assert r.status_code == 202
        task_id = r.json()["task_id"]
        assert client.get(f"/tasks/{task_id}").json()["status"] == "pending"
        done = wait_for(lambda: (j := client.get(f"/tasks/{task_id}").json())["status"] == "succeeded" and j,
                        timeout=10)
        assert done["result"] == {"days": 2, "rows": 48} and done["name"] == "reports.build"
        assert client.get("/tasks/no-such-task").status_code == 404
    assert not example.hu.running                                  # stopped at shutdown


def test_tornado_app(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port

    example = load_example("tornado_app", monkeypatch,
                           TIMEWHEEL_DB=str(tmp_path / "tasks.db"), RESIZE_DELAY="1")

    async def scenario() -> None:
        sock, port = bind_unused_port()                            # 127.0.0.1, ephemeral
        server = HTTPServer(example.make_app())
        server.add_sockets([sock])
        client = AsyncHTTPClient()
        base = f"http://127.0.0.1:{port}"
        try:
            r = await client.fetch(f"{base}/resize", method="POST", body="url=https://x.test/a.png&width=32")
            assert r.code == 202
            task_id = json.loads(r.body)["task_id"]
            now = json.loads((await client.fetch(f"{base}/tasks/{task_id}")).body)
            assert now == {"task_id": task_id, "status": "pending"}
            t0 = time.monotonic()
            done = json.loads((await client.fetch(f"{base}/tasks/{task_id}?wait=10")).body)
            assert done["status"] == "succeeded" and time.monotonic() - t0 < 5
            assert done["result"] == {"url": "https://x.test/a.png", "width": 32,
                                      "resized": "https://x.test/a.png?w=32"}
            r = await client.fetch(f"{base}/tasks/nope", raise_error=False)
            assert r.code == 404
        finally:
            server.stop()
            client.close()

    try:
        asyncio.run(scenario())
        assert example.hu.running                                  # started by the first request
    finally:
        example.hu.stop()


def test_django_project(tmp_path) -> None:
    from .django_procs import Project, get, post, scrape

    project = Project(os.path.join(EXAMPLES, "django_project"), tmp_path,
                      MAIL_DIR=str(tmp_path / "mail"), CONFIRM_DELAY="0.5")
    try:
        done = project.manage("migrate", "--noinput", "-v", "0")
        assert done.returncode == 0, done.stderr
        web, base = project.runserver(probe="/tasks/none")
        first = post(base + "/subscribe", email="ada@example.com")
        assert first["task_id"] == "confirm:1"
        assert post(base + "/subscribe", email="ada@example.com") == first      # pending: one task
        done = wait_for(lambda: (j := get(f"{base}/tasks/confirm:1"))["status"] == "succeeded" and j,
                        timeout=15)
        assert done["result"] == "sent to ada@example.com (attempt 1)"
        (mail,) = (tmp_path / "mail").iterdir()
        assert "To: ada@example.com" in mail.read_text()
        again = post(base + "/subscribe", email="ada@example.com")      # finished: runs again
        wait_for(lambda: get(f"{base}/tasks/{again['task_id']}").get("result")
                 == "already sent to ada@example.com", timeout=15)
        assert len(list((tmp_path / "mail").iterdir())) == 1
        metrics = scrape(base + "/metrics")
        assert metrics[("timewheel_runs_total", (("name", "newsletter.send_confirmation"),
                                                 ("outcome", "succeeded")))] == 2
    finally:
        project.close()
