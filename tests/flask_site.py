"""The Flask app the tests run under gunicorn and the ``flask`` command (timewheel.contrib.flask).

    RUN_LOG=runs.log TIMEWHEEL_DB=tasks.db SITE_KEY=k gunicorn -w 4 tests.flask_site:app
    RUN_LOG=runs.log TIMEWHEEL_DB=tasks.db flask --app tests.flask_site timewheel run

Its tasks log their runs to ``app.config["RUN_LOG"]`` -- read through ``current_app``, so a
task that logs ran inside an app context of this app.  ``POST /enqueue`` schedules them;
the web view is at ``/ops/tw``, for requests carrying ``X-Site-Key`` (retry, cancel, purge:
also ``X-Site-Admin: yes``).  Environment: ``RUN_LOG``, ``TIMEWHEEL_DB``, ``SITE_KEY``,
``SITE_WORKERS`` (threads per process, default 4), ``SITE_EXIT_GRACE`` (default 5).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Flask, Request, current_app, jsonify, request

from timewheel.contrib.flask import FlaskTimeWheel

from . import site_tasks


def has_key(request: Request) -> bool:
    key = os.environ.get("SITE_KEY", "")
    return bool(key) and hmac.compare_digest(request.headers.get("X-Site-Key", ""), key)


def is_admin(request: Request) -> bool:
    return request.headers.get("X-Site-Admin") == "yes"


tw = FlaskTimeWheel(authorize=has_key, allow_actions=is_admin)


@tw.task(name="site.record")
def record(tag: str, sleep: float = 0.0) -> str:
    return site_tasks.record(current_app.config["RUN_LOG"], tag, sleep)


@tw.task(name="site.fail")
def fail(tag: str) -> None:
    site_tasks.fail(tag)


TASKS = {"record": record, "fail": fail}


def create_app() -> Flask:
    app = Flask("flask_site")
    app.config.update(RUN_LOG=os.environ["RUN_LOG"], TIMEWHEEL_STORE=os.environ["TIMEWHEEL_DB"],
                      TIMEWHEEL_WORKERS=int(os.environ.get("SITE_WORKERS", "4")), TIMEWHEEL_TICK=0.25,
                      TIMEWHEEL_EXIT_GRACE=float(os.environ.get("SITE_EXIT_GRACE", "5")),
                      TIMEWHEEL_WEB_PREFIX="/ops/tw")
    tw.init_app(app)

    @app.post("/enqueue")
    def enqueue() -> Any:
        """``{"task": "record", "calls": [{...kwargs}, ...]}``: one batch."""
        data = request.get_json()
        task = TASKS[data["task"]]
        with tw.wheel.batch():
            ids = [task.delay(**kwargs).id for kwargs in data["calls"]]
        return jsonify(ids=ids, pid=os.getpid(), running=tw.wheel.running)

    return app


app = create_app()
