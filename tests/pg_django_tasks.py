"""Django's tasks enqueued through timewheel's TasksBackend on a PostgreSQL store in the
project's own database: ENQUEUE_ON_COMMIT writes them *in* the transaction.

Run as a script by tests/test_django_tasks.py (Django is configured once per process)::

    python tests/pg_django_tasks.py postgresql://postgres@127.0.0.1:5432/postgres SCHEMA

Inside ``transaction.atomic()`` it enqueues a task beside a row of the app's own, and looks
from Django's connection (the row is there, in the transaction) and from the store's own
(nothing, before the commit); one such block is rolled back.  Then it starts the wheel here
and reads the results back with ``get_result()``; it prints what it saw as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

import django
from django.conf import settings


def note(tag):
    return {"tag": tag}


def main(url: str, schema: str) -> dict:
    parts = urlsplit(url)
    try:
        from django import tasks  # noqa: F401 - Django >= 6.0
        task_apps = []
    except ImportError:
        task_apps = ["django_tasks"]       # the backport
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"),
                               "USER": parts.username, "HOST": parts.hostname, "PORT": parts.port}},
        USE_TZ=True, INSTALLED_APPS=[*task_apps, "timewheel.contrib.django"],
        TIMEWHEEL={"path": f"{url}?schema={schema}", "tick": 0.5, "workers": 1},
        TASKS={"default": {"BACKEND": "timewheel.contrib.django.TasksBackend"}})
    django.setup()
    from django.db import connection, transaction

    from timewheel.contrib.django import get_wheel
    from timewheel.contrib.django.backend import TaskResultDoesNotExist
    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task

    global note
    tagged = note = task()(note)            # module level, as Django requires: found by its path
    hu = get_wheel()
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS dj_orders (tag text)")

    def in_django_tx(task_id: str) -> int:
        with connection.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{schema}".tasks WHERE id = %s', [task_id])
            return cur.fetchone()[0]

    out: dict = {}
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO dj_orders VALUES ('committed')")
        committed = tagged.enqueue("committed")
        out["in_transaction"] = in_django_tx(committed.id)
        out["seen_outside_before_commit"] = hu.store.get(committed.id) is not None
    out["seen_outside_after_commit"] = hu.store.get(committed.id) is not None
    with transaction.atomic():             # flow control's options, in Django's transaction too
        prioritised = tagged.using(priority=10).enqueue("prioritised")
        out["prioritised_in_transaction"] = in_django_tx(prioritised.id)
    rec = hu.store.get(prioritised.id)
    out["prioritised"] = rec.priority
    try:
        with transaction.atomic():
            rolled_back = tagged.enqueue("rolled back")
            out["rolled_back_in_transaction"] = in_django_tx(rolled_back.id)
            raise LookupError("the view failed")
    except LookupError:
        pass
    hu.start()
    deadline = time.monotonic() + 20
    while (result := tagged.get_result(committed.id)).status != "SUCCESSFUL" and time.monotonic() < deadline:
        time.sleep(0.05)
    out["status"], out["return_value"] = str(result.status), result.return_value
    time.sleep(1.0)                        # a tick or two: a rolled-back task would have run
    try:
        tagged.get_result(rolled_back.id)
        out["rolled_back"] = "found"
    except TaskResultDoesNotExist:
        out["rolled_back"] = "absent"
    hu.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
