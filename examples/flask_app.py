"""A Flask app whose sign-up endpoint schedules a verification email 10 seconds later.

    gunicorn -w 4 examples.flask_app:app              # each worker imports the app
    gunicorn -w 4 --preload examples.flask_app:app    # imported once in the master, then forked
    gunicorn -w 4 -c examples/gunicorn.conf.py examples.flask_app:app   # every worker starts at boot,
                                                      # and timewheel's log goes to gunicorn's
    flask --app examples.flask_app run                # the development server
    flask --app examples.flask_app timewheel inspect  # timewheel's commands on the app's store

    curl -X POST -d email=ann@example.com http://127.0.0.1:8000/signup
    curl http://127.0.0.1:8000/tasks/<task_id>

Environment:

* ``TIMEWHEEL_DB``: the store file (default ``tasks.db`` in the app's instance folder, so
  gunicorn's workers and ``flask timewheel`` find the same file from any directory).
* ``VERIFY_EMAIL_DELAY``: seconds between sign-up and the email (default 10).
* ``EMAIL_LOG``: if set, each email "sent" appends one line ``<email> <token> <pid>`` to it.

The extension (``timewheel.contrib.flask``) makes the app's TimeWheel from its
``TIMEWHEEL_*`` config at import, opening nothing, and *starts* it at the first request each
worker process serves.  So the same module works under ``gunicorn --preload`` (import in the
master, fork, then start in each worker) and without it.  Every process that has started
claims due tasks; one of them at a time ticks the store, and another takes over within about
two ticks if it dies.  A process that only enqueues (a script, a cron job) starts nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from timewheel import TaskNotFound
from timewheel.contrib.flask import FlaskTimeWheel

log = logging.getLogger("flask_app")

VERIFY_EMAIL_DELAY = float(os.environ.get("VERIFY_EMAIL_DELAY", "10"))
EMAIL_LOG = os.environ.get("EMAIL_LOG")

app = Flask(__name__)
app.config.update(TIMEWHEEL_STORE=os.environ.get("TIMEWHEEL_DB", "tasks.db"), TIMEWHEEL_WORKERS=4)
tw = FlaskTimeWheel(app)


# An explicit name: the task must be registered under the same name in every process, whether
# this module is imported as examples.flask_app, flask_app or __main__.
@tw.task(name="signup.send_verification_email", retries=3, retry_delay=5.0)
def send_verification_email(email: str, token: str) -> str:
    # A real app would call its mail service here.  Make it idempotent if you can (a task
    # running when its process is killed runs again): e.g. pass a message id the provider
    # deduplicates on.
    if EMAIL_LOG:
        fd = os.open(EMAIL_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{email} {token} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    log.info("verification email to %s (token %s)", email, token)
    return f"sent to {email}"


@app.post("/signup")
def signup() -> ResponseReturnValue:
    data = request.get_json(silent=True) or request.form
    email = (data.get("email") or "").strip()
    if "@" not in email:
        return jsonify(error="a valid email is required"), 400
    token = secrets.token_urlsafe(16)
    # ... create the user here ...
    handle = send_verification_email.options(count_down=VERIFY_EMAIL_DELAY).delay(email, token)
    return jsonify(task_id=handle.id, email=email), 202


@app.get("/tasks/<task_id>")
def task_status(task_id: str) -> ResponseReturnValue:
    try:
        rec = tw.wheel.get(task_id).record
    except TaskNotFound:
        return jsonify(error=f"no task {task_id}"), 404
    return jsonify(id=rec.id, name=rec.name, status=rec.status, eta=rec.eta,
                   due_in=round(rec.eta - time.time(), 3), attempts=rec.attempts, error=rec.error)


@app.get("/timewheel")
def timewheel_status() -> ResponseReturnValue:
    """Which process answered, and whether it is the one ticking the store."""
    return jsonify(pid=os.getpid(), running=tw.wheel.running, leader=tw.wheel.is_leader)


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8000")))
