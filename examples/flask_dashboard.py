"""The timewheel web view inside a Flask app, at /timewheel, behind the app's own login.

    TIMEWHEEL_DB=tasks.db DASHBOARD_PASSWORD=s3cret flask --app examples/flask_dashboard.py run
    open http://127.0.0.1:5000/ and sign in; then http://127.0.0.1:5000/timewheel/

The view is a WSGI application, mounted with Werkzeug's DispatcherMiddleware (Flask is built
on Werkzeug; any WSGI app -- Django's too -- mounts the same way).  It does not ask for a
password of its own: ``authorize`` hands each request's environ to the app, which opens its
own session from the cookie and decides.  Only a signed-in admin sees it, and may retry,
cancel and purge (``allow_actions`` takes the same check).

Environment: ``TIMEWHEEL_DB`` (the store, default ``tasks.db``), ``DASHBOARD_PASSWORD`` (the
admin's password; required), ``SECRET_KEY`` (signs Flask's session cookie; random if unset,
which signs everyone out at each restart), ``PORT`` (for ``python examples/flask_dashboard.py``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from flask import Flask, redirect, request, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from timewheel import TimeWheel
from timewheel.web import make_app

app = Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
hu = TimeWheel(os.environ.get("TIMEWHEEL_DB", "tasks.db"))


@hu.task(name="reports.build")
def build_report(days: int) -> int:
    return days * 24


def is_admin(environ: dict[str, Any]) -> bool:
    """The host's own check: Flask opens its session from the request's cookie."""
    with app.request_context(environ):
        return session.get("user") == "admin"


# The view reads hu's store (opened lazily: nothing opens before a fork under gunicorn).
app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, {"/timewheel": make_app(hu, authorize=is_admin, allow_actions=is_admin)})


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
    handle = build_report.delay(int(request.form.get("days", 7)), count_down=60)
    return {"task_id": handle.id}, 202


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
