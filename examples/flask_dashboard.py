"""The timewheel web view inside a Flask app, at /timewheel, behind the app's own login.

    TIMEWHEEL_DB=tasks.db DASHBOARD_PASSWORD=s3cret flask --app examples.flask_dashboard run
    open http://127.0.0.1:5000/ and sign in; then http://127.0.0.1:5000/timewheel/
    TIMEWHEEL_DB=tasks.db flask --app examples.flask_dashboard timewheel run     # runs the tasks

``TIMEWHEEL_WEB_PREFIX`` mounts the view (a blueprint of the app), and ``authorize`` decides
who sees it: it is called with the Flask request, inside it, so it reads the app's own
session.  Only a signed-in admin sees the view, and may retry, cancel and purge
(``allow_actions`` takes the same check); everyone else gets 403.  Without ``authorize`` the
view would refuse every request.

This app's web processes only enqueue (``TIMEWHEEL_RUN_IN_WEB = False``): its tasks run in a
worker process of their own, ``flask timewheel run``, which SIGTERM stops after letting
running tasks finish.

Environment: ``TIMEWHEEL_DB`` (the store, default ``tasks.db`` in the instance folder),
``DASHBOARD_PASSWORD`` (the admin's password; required), ``SECRET_KEY`` (signs Flask's
session cookie; random if unset, which signs everyone out at each restart -- and under a
server of several processes, at each request that another process serves: set it there),
``PORT`` (for ``python examples/flask_dashboard.py``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from flask import Flask, Request, redirect, request, session

from timewheel.contrib.flask import FlaskTimeWheel

app = Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
app.config.update(TIMEWHEEL_STORE=os.environ.get("TIMEWHEEL_DB", "tasks.db"),
                  TIMEWHEEL_WEB_PREFIX="/timewheel", TIMEWHEEL_RUN_IN_WEB=False)


def is_admin(request: Request) -> bool:
    """The app's own check, made inside the request: its session says who signed in."""
    return session.get("user") == "admin"


tw = FlaskTimeWheel(app, authorize=is_admin, allow_actions=is_admin)


@tw.task(name="reports.build")
def build_report(days: int) -> int:
    return days * 24


@app.get("/")
def home() -> str:
    if session.get("user") == "admin":
        return '<p>Signed in. <a href="/timewheel/">The task dashboard</a></p>'
    return ('<form method="post" action="/login"><input type="password" name="password">'
            "<button>Sign in</button></form>")


@app.post("/login")
def login() -> Any:
    # A real app has its own users, CSRF protection on this form, and so on.
    expected = os.environ.get("DASHBOARD_PASSWORD", "")
    if expected and hmac.compare_digest(request.form.get("password", ""), expected):
        session["user"] = "admin"
        return redirect("/timewheel/")
    return "wrong password", 403


@app.post("/reports")
def report() -> Any:
    handle = build_report.options(count_down=60).delay(int(request.form.get("days", 7)))
    return {"task_id": handle.id}, 202


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
