"""Transactional enqueue: tasks written through the application's own database connection.

``with hu.using(conn): send_mail.delay(...)`` (or ``task.schedule(..., connection=conn)``) adds
the task with the application's connection, inside whatever transaction it has open: rolled
back, the task never existed; committed, it runs at its eta.  Accepted connections:

* a psycopg 3 ``Connection``;
* a SQLAlchemy ``Connection`` or ORM ``Session`` on a PostgreSQL engine (its driver's cursor);
* a Django database alias (``"default"``), inside ``transaction.atomic()`` or not.

The write is the store's own ``add`` function (:mod:`timewheel.store.postgres_sql`), one
statement: it takes no lock anyone else waits for (the task's own row aside) and sends no
NOTIFY, so an application's long transaction holds up nobody.  A task id given twice, or one
whose record forbids the change (``replace=True`` on a running task), raises
``DuplicateTask`` *without* an SQL error: the transaction stays usable.  An error of the server
(a statement timeout, a full disk, a read-only database, a lost connection) raises
``StoreError``, and PostgreSQL has then aborted the transaction, as after any failed statement:
roll it back.  The statement also checks that the connection reaches the store's database (a
store id in its ``meta`` row).

Wake-ups: a task that is due within the wheel's lookahead rings the started processes after
the commit where the framework tells of it (Django's ``on_commit``, SQLAlchemy's commit events,
a psycopg connection in autocommit); otherwise they find it within one tick of the commit.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..errors import StoreError
from ..records import TaskRecord
from .base import check_existing
from .postgres import _COLS, _plan, add_call, stored_by_id, translate
from .postgres_deps import Again
from .rules import check_distinct

__all__ = ["Through"]

_ACCEPTS = ("a psycopg 3 connection, a SQLAlchemy Connection or Session, or a Django database "
            "alias such as \"default\"")


class Through:
    """An ``add`` that writes through one application connection (see the module docstring)."""

    def __init__(self, store: Any, connection: Any) -> None:
        self._store = store
        self._run, self._after_commit, self.what = _executor(connection)

    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        if any(r.depends_on for r in records):          # (issue 23: store/postgres_deps.py)
            return self._add_dependent(records, existing)
        return self._store.add_with(self._write, self._read, records, existing, self._ring)

    def _add_dependent(self, records: Sequence[TaskRecord], existing: str) -> list[TaskRecord]:
        """add() of dependents in the application's transaction, as the store adds them in its
        own (store/postgres_deps.py); planned again if a stored task changes meanwhile."""
        if existing == "fail":
            check_distinct(records)
        while True:
            if existing == "fail":
                out, plan, expect = list(records), {r.id: r for r in records}, {}
            else:
                stored = self._read(list(dict.fromkeys(r.id for r in records)))
                out, plan, expect = _plan(records, existing, stored)
                if not plan:
                    return out
            try:
                resolved, ring = self._store._add_resolved(self._call, list(plan.values()), expect, existing)
            except Again:
                continue
            if ring:
                self._ring()
            by_id = {r.id: r for r in resolved}
            return [by_id[r.id] if plan.get(r.id) is r else r for r in out]

    def _call(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        try:
            return self._run(sql, list(params))
        except Exception as exc:
            cause = _driver_error(exc)
            if cause is None:
                raise
            err = translate(cause, f"the PostgreSQL server through {self.what}", self._store.schema, True)
            raise type(err)(f"{err}; the transaction of {self.what} is aborted if it had one: roll it "
                            "back") from None

    def _write(self, items: Sequence[tuple[TaskRecord, Optional[int]]]) -> tuple[int, bool]:
        s = self._store
        ((conflict, ring),) = self._call(*add_call(s.s, items, s.wheel, s._store_id))
        if conflict < 0:
            raise StoreError(f"{self.what} reaches a database whose schema {s.schema!r} is not the store "
                             f"at {s.location}; nothing was written")
        return conflict, ring

    def _read(self, ids: list[str]) -> dict[str, tuple[Optional[TaskRecord], int]]:
        return stored_by_id(self._call(f"SELECT {_COLS} FROM {self._store.s}.tasks t "
                                       "WHERE t.id = ANY(%s::text[])", [ids]))

    def _ring(self) -> None:
        self._after_commit(self._store.ring)


def _driver_error(exc: BaseException) -> Optional[BaseException]:
    """The psycopg error behind ``exc`` (SQLAlchemy and Django wrap the driver's)."""
    import psycopg
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, psycopg.Error):
            return exc
        exc = getattr(exc, "orig", None) or exc.__cause__
        seen += 1
    return None


def _executor(connection: Any) -> tuple[Callable[[str, list], list], Callable[[Callable[[], None]], None],
                                        str]:
    """(run a statement and return its rows, call a function once the transaction commits,
    what the connection is) for an application connection."""
    module = type(connection).__module__.split(".")[0]
    if isinstance(connection, str):
        return _django(connection)
    if module == "psycopg":
        return _psycopg(connection)
    if module == "sqlalchemy":
        return _sqlalchemy(connection)
    raise TypeError(f"hu.using() and connection= take {_ACCEPTS}, not {type(connection).__name__}")


def _psycopg(conn: Any) -> tuple[Callable, Callable, str]:
    import psycopg
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(f"hu.using() and connection= take {_ACCEPTS}, not a {type(conn).__name__} "
                        "(an async connection: enqueue from a thread, or through this store's own)")

    def run(sql: str, params: list) -> list:
        return conn.execute(sql, params).fetchall()

    def after_commit(fn: Callable[[], None]) -> None:
        # Only a connection outside a transaction block has committed already; the commit of an
        # open one is not announced: the tick is the backstop.
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            fn()

    return run, after_commit, "the application's psycopg connection"


def _sqlalchemy(obj: Any) -> tuple[Callable, Callable, str]:
    from sqlalchemy import event
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session
    if isinstance(obj, Session):
        session = obj

        def connection() -> Any:
            return session.connection()

        def after_commit(fn: Callable[[], None]) -> None:
            event.listen(session, "after_commit", lambda _s: fn(), once=True)
        what = "the application's SQLAlchemy session"
    elif isinstance(obj, Connection):
        def connection() -> Any:
            return obj

        def after_commit(fn: Callable[[], None]) -> None:
            if not obj.in_transaction():
                fn()
            else:
                event.listen(obj, "commit", lambda _c: fn(), once=True)
        what = "the application's SQLAlchemy connection"
    else:
        raise TypeError(f"hu.using() and connection= take {_ACCEPTS}, not a {type(obj).__name__}")
    dialect = connection().dialect.name
    if dialect != "postgresql":
        raise TypeError(f"{what} is a {dialect} connection; the store is in PostgreSQL")

    def run(sql: str, params: list) -> list:
        return connection().exec_driver_sql(sql, tuple(params)).fetchall()

    return run, after_commit, what


def _django(alias: str) -> tuple[Callable, Callable, str]:
    from django.db import connections, transaction
    from django.db.utils import ConnectionDoesNotExist
    try:
        conn = connections[alias]
    except ConnectionDoesNotExist:
        raise ValueError(f"no Django database {alias!r} (settings.DATABASES has "
                         f"{', '.join(sorted(connections.settings)) or 'none'})") from None
    what = f"the Django database {alias!r}"
    if conn.vendor != "postgresql":
        raise TypeError(f"{what} is {conn.vendor}; the store is in PostgreSQL")

    def run(sql: str, params: list) -> list:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def after_commit(fn: Callable[[], None]) -> None:
        transaction.on_commit(fn, using=alias)      # at once when not in an atomic block

    return run, after_commit, what
