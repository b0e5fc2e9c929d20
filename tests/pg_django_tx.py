"""Transactional enqueue through a Django database alias, on PostgreSQL.

Run as a script by tests/test_postgres.py (Django is configured once per process)::

    python tests/pg_django_tx.py postgresql://postgres@127.0.0.1:5432/postgres SCHEMA

It enqueues through ``hu.using("default")`` inside ``transaction.atomic()`` blocks (one rolled
back, one committed, each beside a row of the app's own table) and outside any (Django's
autocommit), while a LISTEN session counts the wake-ups sent before and after each commit,
and prints what it saw as JSON.  No process runs tasks here: the test starts one afterwards.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import django
import psycopg
from django.conf import settings


def main(url: str, schema: str) -> dict:
    parts = urlsplit(url)
    settings.configure(DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"), "USER": parts.username,
        "HOST": parts.hostname, "PORT": parts.port}}, USE_TZ=True)
    django.setup()
    from django.db import connection, transaction

    from timewheel import TimeWheel
    hu = TimeWheel(f"{url}?schema={schema}", tick=0.5)
    note = hu.task(name="tx.note")(lambda tag: tag)
    store = hu.store
    store.advance(store.wheel.current_tick(store.now()) + 40, 10_000, "the test")   # due now: ready
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS dj_orders (tag text)")
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(store.channel)))

    def notified(wait: float) -> int:
        return len(list(listener.notifies(timeout=wait, stop_after=1)))

    out: dict = {}
    try:
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO dj_orders VALUES ('rolled back')")
            with hu.using("default"):
                out["rolled_back"] = note.delay("rolled back").id
            raise LookupError("the view failed")
    except LookupError:
        pass
    out["notified_for_rollback"] = notified(0.5)
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO dj_orders VALUES ('committed')")
        with hu.using("default"):
            out["committed"] = note.delay("committed", count_down=1.0).id
            with transaction.atomic():                   # a savepoint inside: rolled back alone
                out["in_savepoint"] = note.delay("in a savepoint").id
                transaction.set_rollback(True)
        out["visible_before_commit"] = store.get(out["committed"]) is not None
        out["notified_before_commit"] = notified(0.5)
    out["notified_after_commit"] = notified(2.0)
    with hu.using("default"):
        out["autocommit"] = note.delay("autocommit").id     # no atomic(): Django commits at once
        # (due before "committed": the runners must be told; a later one they know of already)
    out["notified_after_autocommit"] = notified(2.0)
    listener.close()
    hu.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
