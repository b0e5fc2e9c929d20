"""The PostgreSQL store: the wheel in the application's own database, shared by processes on many hosts.

``TimeWheel("postgresql://user:password@host:5432/db")`` (also ``postgres://`` and libpq
keyword strings: :mod:`timewheel.store.postgres_url`) opens it; its tables live in a schema of
their own (``?schema=``, default the wheel's ``namespace``: ``timewheel``), created on first use
and migrated by version in one transaction (:mod:`timewheel.store.postgres_sql`, which holds
every statement that writes).  Requires PostgreSQL 13 or later and psycopg 3.

How the promises are kept, and what differs from Redis (:mod:`timewheel.store.redis`, the
closest model):

* **Never early**: the server's clock is the store's.  A claim compares etas with
  ``clock_timestamp()`` in the statement; :meth:`PostgresStore.now` is the local clock plus the
  offset measured to the server's, re-measured every 10 s.
* **Never twice**: a claim is one statement (``FOR UPDATE SKIP LOCKED``) that gives each task a
  lease on the server's clock; the owner renews it (:meth:`PostgresLiveness.keepalive`), the
  ticking process requeues tasks whose lease ran out, and the record's ``rev`` fences a late
  outcome.  The ticking role is a lease in the ``meta`` row that only its holder renews, and
  :meth:`PostgresStore.advance` is fenced by it.  Heartbeat rows (``alive``) expire on the
  server's clock.
* **Never lost**: every write is committed before the call returns (``synchronous_commit``: see
  docs/stores.md for what ``off`` and an asynchronous failover can lose).
* **Transactional enqueue**: :meth:`PostgresStore.through` writes tasks through the
  application's own connection and transaction (:mod:`timewheel.store.postgres_tx`).
* **Wake-ups** are hints: LISTEN/NOTIFY on one channel per schema, sent only by our own short
  transactions, never inside an application's (a NOTIFY takes a database-wide lock at commit);
  every runner also looks once a tick.  ``?listen=0`` turns LISTEN off (PgBouncer in
  transaction mode cannot carry it); nothing else the claims rely on lives in a session.

Connections: a small pool per process (:class:`_Pool`, fork-safe), psycopg's automatic
prepared statements off (a pooler in transaction mode would lose them: the functions cache
their plans themselves), every statement its own transaction (autocommit).  A statement that
takes longer than ``timeout`` is cancelled (:class:`_Watchdog`): ``StoreBusy``, nothing written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import socket
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ..errors import (
    DuplicateTask,
    NotAStore,
    StoreBusy,
    StoreError,
    StoreMismatch,
)
from ..records import (
    PENDING,
    RUNNING,
    RecordDecodeError,
    TaskRecord,
    history_from_json,
    history_to_json,
    is_progress,
    progress_from_json,
    progress_to_json,
    record_from_fields,
)
from ..wheel import Wheel
from . import postgres_sql as pgsql
from . import rules
from .base import (
    BROKEN,
    Advanced,
    Claimed,
    Doorbell,
    StoreState,
    WheelStore,
    check_existing,
    check_listable,
    eta_us,
    finished_ms,
    purge_statuses,
)
from .leases import LeaseLiveness
from .postgres_batches import PostgresBatches
from .postgres_deps import DependentsWait, PostgresDeps, depends_from, depends_json, waits_refused
from .postgres_flow import PostgresFlow
from .postgres_inbox import PostgresInbox
from .postgres_url import check_schema, parse
from .server_clock import ServerClock

try:
    import psycopg
    from psycopg import errors as pgerrors
except ImportError:  # pragma: no cover - the message is the point
    psycopg = None

__all__ = ["PostgresStore", "PostgresLiveness", "DEFAULT_LEASE"]

log = logging.getLogger("timewheel.store")

DEFAULT_LEASE = 10.0        #: seconds a claim lasts without renewal (``?lease=``)
MIN_SERVER = 130000         #: PostgreSQL 13: the tables' autovacuum settings
_RESYNC = 10.0              #: seconds between measurements of the offset to the server's clock
_POOL = 8                   #: connections per process and store (a thread holds one per call)
_PAGE = 500                 #: records read per round trip while scanning
_PURGE_MAX = 10_000         #: tasks one purge call deletes: bounds how long it holds its locks
_COLS = ", ".join(f"t.{c}" for c in pgsql.ROW_COLUMNS)
_COPY_FROM = 16             #: a batch of this many new tasks or more is written by COPY
_COPY_COLUMNS = ("id, name, status, eta, eta_us, tick, payload, created, retries, retry_delay, "
                 "misfire_grace, attempts, crashes, version, rev, timeout, batch")
_COPY_TYPES = ["text", "text", "text", "float8", "int8", "int8", "bytea", "float8", "int8", "float8",
               "float8", "int8", "int8", "int4", "int8", "float8", "text"]
_NREC = len(pgsql.RECORD_COLUMNS)
_NROW = len(pgsql.ROW_COLUMNS)    # a read row: the record's columns, then its batch and abort
_LIMITS_AT = pgsql.RECORD_COLUMNS.index("limits")


def _casts() -> str:
    """The write functions' array arguments, each cast to its type (the function is found by
    them whatever a driver sends an empty or all-NULL list as)."""
    return ", ".join(["%s::bigint[]"] + [f"%s::{t}[]" for _, t in pgsql.WRITE_COLUMNS])


def _columns(rec: TaskRecord, wheel: Wheel) -> tuple:
    """A record as the write functions take it (the order of ``WRITE_COLUMNS``)."""
    return (rec.id, rec.name, rec.status, rec.eta, eta_us(rec.eta), wheel.due_tick(rec.eta),
            rec.payload, rec.created, rec.retries, rec.retry_delay, rec.misfire_grace,
            rec.attempts, rec.crashes, rec.started, rec.finished,
            None if rec.finished is None else finished_ms(rec.finished), rec.owner, rec.error,
            rec.traceback, rec.result, rec.version, rec.rev, rec.timeout, rec.lease, rec.queue,
            rec.priority, json.dumps(rec.limits) if rec.limits else None, rec.first_call, rec.max_wait,
            history_to_json(rec.history), rec.batch, rec.abort, progress_to_json(rec.progress),
            depends_json(rec), rec.waiting, rec.takes_result, rec.given)


def write_args(items: Sequence[tuple[TaskRecord, Optional[int]]], wheel: Wheel) -> list[list]:
    """The arrays of a write: ``p_expect`` (each record's expected stored rev, None: absent)
    and one per write column."""
    rows = [_columns(rec, wheel) for rec, _ in items]
    return [[e for _, e in items]] + [list(col) for col in zip(*rows)] if rows else \
        [[] for _ in range(len(pgsql.WRITE_COLUMNS) + 1)]


def add_call(schema: str, items: Sequence[tuple[TaskRecord, Optional[int]]], wheel: Wheel,
             store_id: str) -> tuple[str, list]:
    """The statement and arguments of an ``add`` of ``items`` (record, expected stored rev):
    ``add1`` with scalars for one new task (``delay()``), ``add`` with arrays otherwise."""
    if len(items) == 1 and items[0][1] is None and _is_new(items[0][0]):
        rec = items[0][0]
        return (f"SELECT * FROM {schema}.add1(%s, %s, %s, %s::float8, %s, %s, %s, %s::float8, %s, "
                "%s::float8, %s::float8, %s, %s::float8)",
                [store_id, rec.id, rec.name, rec.eta, eta_us(rec.eta), wheel.due_tick(rec.eta), rec.payload,
                 rec.created, rec.retries, rec.retry_delay, rec.misfire_grace, rec.version, rec.timeout])
    return f"SELECT * FROM {schema}.add(%s, {_casts()})", [store_id, *write_args(items, wheel)]


def _is_new(rec: TaskRecord) -> bool:
    """Whether ``rec`` has only the fields ``add1`` takes (a task as delay() makes it)."""
    return (rec.status == PENDING and rec.rev == 0 and not rec.attempts and not rec.crashes
            and rec.started is None and rec.finished is None and rec.owner is None and rec.error is None
            and rec.traceback is None and rec.result is None and rec.lease is None
            and rec.queue == "default" and rec.priority == 0 and not rec.limits and rec.first_call is None
            and rec.max_wait is None and not rec.depends_on)


def decode_row(row: Sequence[Any]) -> TaskRecord:
    """A task row (``RECORD_COLUMNS``) -> its record; RecordDecodeError for a broken one."""
    if row[4] == BROKEN:
        raise RecordDecodeError(f"record set aside as broken ({row[14] or 'no reason kept'})")
    values = tuple(row[:_NREC - 1])
    limits = values[_LIMITS_AT]
    if limits is None:
        limits = ()
    elif isinstance(limits, list) and all(isinstance(x, list) and len(x) == 4 for x in limits):
        try:
            limits = tuple((str(k), int(c), int(r), float(p)) for k, c, r, p in limits)
        except (TypeError, ValueError):
            raise RecordDecodeError(f"not a timewheel record (field limits holds {limits!r:.60})") from None
    rec = record_from_fields(values[:_LIMITS_AT] + (limits,) + values[_LIMITS_AT + 1:]
                             + (history_from_json(row[_NREC - 1]),))
    batch, abort, progress = row[_NREC], row[_NREC + 1], row[_NREC + 2]   # after the record's (issue 23)
    depends_on, waiting, takes_result, given = row[_NREC + 3:_NROW]        # dependencies (issue 23)
    if batch is None and abort is None and progress is None and depends_on is None and not waiting \
            and not takes_result and given is None:
        return rec
    if batch is not None and (not isinstance(batch, str) or not 0 < len(batch) <= 200):
        raise RecordDecodeError("not a timewheel record (field batch is not a batch id)")
    if abort is not None and (not isinstance(abort, float) or not math.isfinite(abort)):
        raise RecordDecodeError("not a timewheel record (field abort is not a time)")
    progress = progress_from_json(progress)
    if progress is not None and not is_progress(progress):
        raise RecordDecodeError("not a timewheel record (field progress is not a progress)")
    if depends_on is None and not waiting and not takes_result and given is None:
        return rec._replace(batch=batch, abort=abort, progress=progress)
    return record_from_fields(rec[:_NREC] + (batch, abort, progress, depends_from(depends_on), waiting,
                                             takes_result, None if given is None else bytes(given)))


def _placeholder(row: Sequence[Any], reason: str) -> TaskRecord:
    """What scan() lists for a row that cannot be read (see base.broken_record)."""
    name = row[1] if isinstance(row[1], str) and row[1] else "?"
    return TaskRecord(id=row[0], name=name, eta=0.0, payload=b"", status=BROKEN,
                      finished=row[12] if isinstance(row[12], float) else None,
                      owner=row[13] if isinstance(row[13], str) else None, error=reason)


# -- connections ----------------------------------------------------------------------------------

def _readable(conn: Any) -> bool:
    """An idle connection with something to read was closed by the server (restart,
    pg_terminate_backend, idle_session_timeout): its next statement would fail."""
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Pool:
    """A few connections of this process; a thread holds one for a call.

    Fork-safe: a child forgets its parent's connections without touching them (psycopg leaves
    a connection made by another process alone) and makes its own.
    """

    def __init__(self, connect: Callable[[], Any], size: int, timeout: float, where: str) -> None:
        self._connect, self._size, self._timeout, self._where = connect, size, timeout, where
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self._idle: list[Any] = []
        self._count = 0
        self._closed = False

    def _take(self) -> Any:
        deadline = time.monotonic() + self._timeout
        with self._cond:
            if self._pid != os.getpid():
                self._pid, self._idle, self._count = os.getpid(), [], 0
                self._cond = threading.Condition()
                return self._take()
            while True:
                if self._closed:
                    raise StoreError(f"{self._where} is closed")
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed and not conn.broken and not _readable(conn):
                        return conn
                    self._count -= 1
                    _close(conn)
                if self._count < self._size:
                    self._count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreBusy(f"{self._where}: all {self._size} connections of this process "
                                    f"stayed busy for {self._timeout:g}s; nothing was written")
                self._cond.wait(remaining)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, conn: Any) -> None:
        with self._cond:
            if self._pid != os.getpid():
                return
            if self._closed or conn.closed or conn.broken:
                self._count -= 1
                _close(conn)
            else:
                self._idle.append(conn)
            self._cond.notify()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._give(conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for conn in idle:
                _close(conn)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone either way
        log.debug("closing a connection failed", exc_info=True)


class _Watchdog:
    """Cancels a statement that runs longer than the store's ``timeout`` (a lock held by an
    application's open transaction, a server that stopped answering), so that the call raises
    ``StoreBusy`` instead of hanging.  One thread per process, which looks every quarter of the
    timeout (a call costs a registration, never a wake-up: waking a thread per statement costs
    more than the statement's round trip).  A cancel that does not help (the server stopped) is
    followed by closing the socket a second timeout later."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._calls: dict[int, list[Any]] = {}     # id -> [deadline, conn, what was done]
        self._pid = -1

    @contextmanager
    def watch(self, conn: Any) -> Iterator[list[str]]:
        """Watch the call in the block; yields the list of what the watchdog did to it."""
        done: list[str] = []
        key = id(done)
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._calls = os.getpid(), {}
                threading.Thread(target=self._run, name="timewheel-pg-watchdog", daemon=True).start()
            self._calls[key] = [time.monotonic() + self.timeout, conn, done]
        try:
            yield done
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _run(self) -> None:
        pid = os.getpid()
        look = self.timeout / 4
        while pid == os.getpid():
            with self._lock:
                now = time.monotonic()
                due = [c for c in self._calls.values() if c[0] <= now]
                for c in due:
                    c[0] = now + max(1.0, self.timeout)       # the next step, if still running
                nearest = min((c[0] for c in self._calls.values()), default=now + look)
            for c in due:
                self._act(c[1], c[2])
            time.sleep(max(0.001, min(look, nearest - now)))

    @staticmethod
    def _act(conn: Any, done: list[str]) -> None:
        if not done:
            done.append("cancelled")
            try:
                conn.cancel_safe(timeout=2.0)
            except Exception:  # noqa: BLE001 - the server may be gone: the next step follows
                log.debug("cancelling a statement failed", exc_info=True)
        elif done == ["cancelled"]:
            done.append("closed")
            try:
                s = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    s.shutdown(socket.SHUT_RDWR)
                finally:
                    s.close()
            except Exception:  # noqa: BLE001 - already closed
                log.debug("closing a stuck connection failed", exc_info=True)


class _Listener:
    """LISTEN on the schema's channel, on a connection of its own, for every bell of one store
    in this process; a notification pokes them all.  After a reconnection it pokes them too,
    since whatever was notified meanwhile was missed."""

    def __init__(self, store: "PostgresStore") -> None:
        self._store = weakref.ref(store)
        self._conninfo, self._channel = store._conninfo, store.channel
        self._bells: "weakref.WeakSet[Doorbell]" = weakref.WeakSet()
        self._lock = threading.Lock()       # bells joining vs. the poke once LISTEN is on
        self._listening = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="timewheel-listen", daemon=True)
        self._thread.start()

    def add(self, bell: Doorbell) -> None:
        """A bell joins; poked at once if LISTEN is already on (it may have missed something),
        else with the others when it is."""
        with self._lock:
            self._bells.add(bell)
            if self._listening:
                bell.poke()

    def discard(self, bell: Doorbell) -> bool:
        """A bell leaves; whether any is left."""
        with self._lock:
            self._bells.discard(bell)
            return bool(self._bells)

    def _poke(self) -> None:
        """Every bell, once LISTEN is on (after each reconnection) and at each notification."""
        with self._lock:
            self._listening = True
            bells = list(self._bells)
        for bell in bells:
            bell.poke()

    def _loop(self) -> None:
        pause = 0.05
        while not self._closed.is_set():
            conn = None
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None,
                                       connect_timeout=5)
                conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel)))
                self._poke()
                pause = 0.05
                while not self._closed.is_set():
                    for _ in conn.notifies(timeout=0.5, stop_after=1):
                        self._poke()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect (the tick is the backstop)
                with self._lock:
                    self._listening = False
                log.debug("listening on %s: %s; reconnecting", self._channel, exc)
                self._closed.wait(pause)
                pause = min(pause * 2, 5.0)
            finally:
                if conn is not None:
                    _close(conn)

    def close(self) -> None:
        self._closed.set()


class _Bell(Doorbell):
    """A runner's bell, poked by the store's listener (or, with ``listen=0``, by this process's
    own rings only)."""

    def __init__(self, store: "PostgresStore") -> None:
        super().__init__(store)
        self._owner = store

    def close(self) -> None:
        self._owner._forget(self)
        super().close()


# -- liveness ---------------------------------------------------------------------------------------

class PostgresLiveness(LeaseLiveness):
    """Leases for a PostgreSQL store: a heartbeat row per process, the ticking role in ``meta``."""

    def __init__(self, store: "PostgresStore") -> None:
        self._alive_at = -math.inf      # monotonic: our heartbeat was last written then
        super().__init__(store)

    def _new_incarnation(self) -> None:
        self._alive_at = -math.inf

    def _lead(self, token: str, now: float) -> bool:
        # The heartbeat rides along with the role's renewal when a third of its life is gone.
        refresh = now - self._alive_at > self.alive_ttl / 3
        (got,), = self._store._call(f"SELECT {self._store.s}.lead(%s, %s, %s, %s)",
                                    (token, self.role_ttl, self.alive_ttl, refresh), write=True)
        if refresh:
            self._alive_at = now
        return bool(got)

    def _renew(self, token: str, live: Sequence[TaskRecord]) -> list[str]:
        rows = self._store._call(f"SELECT * FROM {self._store.s}.renew(%s, %s::text[], %s::bigint[], %s, %s)",
                                 (token, [r.id for r in live], [r.rev for r in live],
                                  self._store.lease, self.alive_ttl), write=True)
        self._alive_at = time.monotonic()
        return [i for (i,) in rows]

    def _resign(self, token: str, final: bool) -> None:
        self._store._call(f"SELECT {self._store.s}.resign(%s, {'true' if final else 'false'})",
                          (token,), write=True)

    def leader(self) -> Optional[str]:
        rows = self._store._call(f"SELECT role FROM {self._store.s}.meta WHERE id = 1 "
                                 "AND role_until > extract(epoch FROM clock_timestamp())")
        return rows[0][0] if rows else None

    def is_dead(self, token: str) -> bool:
        return not self._store._call(f"SELECT FROM {self._store.s}.alive WHERE token = %s "
                                     "AND expires > extract(epoch FROM clock_timestamp())", (token,))


class _Observers:
    """The read-only observers of :class:`PostgresStore` (the shared bookkeeping, the counters,
    listings), apart from its writes."""

    s: str
    schema: str
    location: str
    wheel: Wheel
    _call: Callable[..., list[tuple]]

    def state(self) -> StoreState:
        rows = self._call(f"SELECT horizon, leader, advanced_at FROM {self.s}.meta WHERE id = 1")
        if not rows:
            raise StoreError(f"schema {self.schema!r} at {self.location}: its bookkeeping row is gone")
        return StoreState(*rows[0])

    def counts(self) -> dict[tuple[str, str], int]:
        rows = self._call(f"SELECT status, name, sum(n)::bigint FROM (SELECT status, name, n FROM "
                          f"{self.s}.counts UNION ALL SELECT status, name, n FROM {self.s}.counts_delta) c "
                          "GROUP BY status, name HAVING sum(n) > 0")
        return {(s, n): c for s, n, c in rows}

    def _pending_ticks(self, where: str, params: Sequence[Any], tail: str = "", extra: Sequence[Any] = ()
                       ) -> list[tuple[int, int]]:
        rows = self._call(f"SELECT tick, sum(n)::bigint FROM (SELECT tick, n FROM {self.s}.counts WHERE "
                          f"status = 'pending' {where} UNION ALL SELECT tick, n FROM {self.s}.counts_delta "
                          f"WHERE status = 'pending' {where}) c GROUP BY tick HAVING sum(n) > 0 "
                          f"ORDER BY tick {tail}", [*params, *params, *extra])
        return [(t, n) for t, n in rows]

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        if limit is not None and limit <= 0:
            return []
        where, params = _tick_range(start, stop)
        return self._pending_ticks(where, params, "" if limit is None else "LIMIT %s",
                                   () if limit is None else (limit,))

    def histogram(self, start: int, stop: int, bucket: int, *, name: Optional[str] = None) -> list[int]:
        out = [0] * max(0, -(-(stop - start) // bucket))
        where, params = _tick_range(start, stop)
        if name is not None:
            where, params = where + " AND name = %s", [*params, name]
        for t, n in self._pending_ticks(where, params):
            out[(t - start) // bucket] += n
        return out

    def wheel_stats(self) -> tuple[int, int]:
        slots = self.wheel.slots
        (cells, occupied), = self._call(
            f"SELECT count(*), count(DISTINCT mod(mod(tick, {slots}) + {slots}, {slots})) FROM ("
            f"SELECT tick FROM (SELECT tick, n FROM {self.s}.counts WHERE status = 'pending' UNION ALL "
            f"SELECT tick, n FROM {self.s}.counts_delta WHERE status = 'pending') c "
            "GROUP BY tick HAVING sum(n) > 0) x")
        return cells, occupied

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        check_listable(status)
        if limit is not None and limit <= 0:
            return []
        where, params = ["t.status = %s"], [status]
        if name is not None:
            where.append("t.name = %s")
            params.append(name)
        kind = "id" if id_prefix or status == BROKEN else status if status in (PENDING, RUNNING) else "done"
        if id_prefix:
            where.append("t.id LIKE %s")
            params.append(id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        order, cond = _ORDERS[kind]
        mark = None if after is None else _mark(kind, after.id, after.eta, after.started, after.finished)
        sql = f"SELECT {_COLS} FROM {self.s}.tasks t WHERE {' AND '.join(where)}"
        out: list[TaskRecord] = []
        while True:
            n = _PAGE if limit is None else min(limit - len(out), _PAGE)
            rows = self._call(f"{sql}{'' if mark is None else ' AND ' + cond} ORDER BY {order} LIMIT %s",
                              [*params, *(mark or ()), n])
            for row in rows:
                try:
                    out.append(_placeholder(row, row[14] or "broken") if status == BROKEN
                               else decode_row(row))
                except RecordDecodeError as exc:
                    out.append(_placeholder(row, str(exc)))
            if len(rows) < n or (limit is not None and len(out) >= limit):
                return out
            last = rows[-1]
            mark = _mark(kind, last[0], last[2], last[11], last[12])


class PostgresStore(PostgresDeps, PostgresFlow, _Observers, PostgresBatches, PostgresInbox, WheelStore):
    """A :class:`WheelStore` in a PostgreSQL database.  Thread-safe; one instance per process.

    :param location: ``postgresql://[user[:password]@]host[:port]/db[?...]``, ``postgres://...``
        or a libpq keyword string; ``schema=``, ``listen=`` and ``lease=`` are ours.
    :param wheel: the geometry to create the store with (``None``: read the stored one).
        Opening a store created with another one raises :class:`StoreMismatch`.
    :param namespace: the schema when the location names none.
    :param timeout: seconds to wait for the server (a connection, a statement) before
        :class:`StoreBusy`.
    :param readonly: read only: nothing is created or written (a read-only user is enough).
    :param clock: the local clock; :meth:`now` adds the measured offset to the server's.
    :param lease: seconds a claim lasts without renewal (default: the location's, else 10).
    """

    flow_control = True       #: see WheelStore.flow_control (store/postgres_flow_sql.py)
    batches_kept = True       #: see WheelStore.batches_kept

    def __init__(self, location: str, wheel: Optional[Wheel] = None, *, namespace: str = "timewheel",
                 timeout: float = 10.0, readonly: bool = False,
                 clock: Callable[[], float] = time.time, lease: Optional[float] = None) -> None:
        if psycopg is None:
            raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'timewheel[postgres]'")
        target = parse(location)
        self.location = target.public
        self.schema = target.schema or check_schema(namespace, "namespace")
        self.namespace = self.schema
        self.s = pgsql._q(self.schema)
        self.channel = pgsql.channel(self.schema)
        self.listen = target.listen
        self.readonly = readonly
        self.timeout = max(0.1, timeout)
        self.lease = lease if lease is not None else (target.lease or DEFAULT_LEASE)
        if not (math.isfinite(self.lease) and 0.05 <= self.lease <= 86400):
            raise ValueError(f"lease must be from 0.05 to 86400 seconds, got {self.lease!r}")
        self._conninfo = target.conninfo
        self._clock = clock            # type: ignore[assignment]
        self._server_clock = ServerClock(self._server_time, clock, _RESYNC)
        self._where = f"the PostgreSQL server at {self.location}"
        self._pool = _Pool(self._connect, _POOL, self.timeout, self._where)
        self._dog = _Watchdog(self.timeout)
        self._listener: Optional[_Listener] = None
        self._listener_pid = -1
        self._bells: "weakref.WeakSet[Doorbell]" = weakref.WeakSet()
        self._store_id = ""
        try:
            self._check_server()
            self._server_clock.sync()
            self.wheel = self._set_up(wheel)
        except BaseException:
            self._pool.close()
            raise
        self.liveness = PostgresLiveness(self)
        self._forget_after = ""         # where the purge's walk through the limits stands

    # -- talking to the server ----------------------------------------------------------------------
    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None,
                                   connect_timeout=max(2, math.ceil(self.timeout)))
        except psycopg.Error as exc:
            text = " ".join(str(exc).split())
            if "password authentication" in text or "authentication failed" in text:
                raise StoreError(f"{self._where} refused the credentials ({text}); "
                                 "nothing was written") from None
            raise StoreError(f"cannot reach {self._where} ({text}); nothing was written") from None

    def _call(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[tuple]:
        """Run one statement (its own transaction) and return its rows; psycopg's errors
        become ours."""
        if write and self.readonly:
            raise StoreError(f"{self.location} is open read-only")
        with self._pool.connection() as conn, self._dog.watch(conn) as done:
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                if waits_refused(exc):               # nothing written: see postgres_deps.py
                    raise DependentsWait() from None
                raise self._error(exc, write, done) from None

    def _error(self, exc: BaseException, write: bool, done: list[str]) -> StoreError:
        return translate(exc, self._where, self.schema, write, self.timeout if done else None)

    def _check_server(self) -> None:
        """Refuse servers older than 13; warn about settings that can lose tasks."""
        (num, fsync, sync), = self._call("SELECT current_setting('server_version_num')::int, "
                                         "current_setting('fsync'), current_setting('synchronous_commit')")
        if num < MIN_SERVER:
            raise StoreError(f"{self._where} runs PostgreSQL {num // 10000}; timewheel needs 13 or later")
        self.server_version = num
        if self.readonly:
            return
        if fsync != "on":
            log.warning("%s has fsync off: a crash of its host can lose tasks, or corrupt the database "
                        "(set fsync on; docs/stores.md, \"PostgreSQL\")", self._where)
        if sync == "off":
            log.warning("%s has synchronous_commit off: a crash of the server loses the tasks of its "
                        "last few hundred milliseconds of commits although delay() returned",
                        self._where)

    # -- the clock ------------------------------------------------------------------------------------
    def _server_time(self) -> float:
        ((server,),) = self._call("SELECT extract(epoch FROM clock_timestamp())::float8")
        return server

    def _saw(self, server_time: Optional[float]) -> None:
        if server_time is not None:
            self._server_clock.saw(server_time)

    def now(self) -> float:
        """The server's clock (see :class:`~timewheel.store.server_clock.ServerClock`)."""
        return self._server_clock.now()

    # -- set-up ----------------------------------------------------------------------------------------
    def _stored(self) -> Optional[tuple]:
        """(format, version, slots, tick, store_id) of the schema's store, None if there is none."""
        return stored_meta(self._call, self.schema)

    def _set_up(self, wheel: Optional[Wheel]) -> Wheel:
        stored = self._stored()
        if stored is None or stored[1] < pgsql.VERSION:
            if self.readonly:
                if stored is None:
                    raise NotAStore(f"no timewheel store in schema {self.schema!r} at {self.location}")
                raise NotAStore(f"schema {self.schema!r} at {self.location} holds version {stored[1]} of "
                                f"{pgsql.FORMAT}; this timewheel reads version {pgsql.VERSION}: open it for "
                                "writing once, or have its owner run the SQL of `timewheel migrate`")
            else:
                self._migrate(wheel or Wheel())
                stored = self._stored()
        assert stored is not None
        fmt, version, slots, tick, store_id = stored
        if fmt != pgsql.FORMAT or version > pgsql.VERSION:
            raise NotAStore(f"schema {self.schema!r} at {self.location} holds store format {fmt!r} "
                            f"version {version}; this timewheel reads {pgsql.FORMAT!r} up to version "
                            f"{pgsql.VERSION}")
        self._store_id = store_id
        stored_wheel = Wheel(slots=slots, tick=tick)
        if wheel is not None and wheel != stored_wheel:
            raise StoreMismatch(
                f"schema {self.schema!r} at {self.location} was created with slots={slots}, tick={tick}; "
                f"cannot open it with slots={wheel.slots}, tick={wheel.tick}")
        return stored_wheel

    def _migrate(self, wheel: Wheel) -> None:
        """Create the schema's store or migrate it, in one transaction under the schema's lock
        (several processes may start at once: one does it, the others find it done)."""
        with self._pool.connection() as conn, self._dog.watch(conn) as done:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema),))
                    # (a query of the catalog, not to_regclass(): its cached view of the catalog
                    # may predate the commit of whoever held the lock before us)
                    (exists,), = conn.execute(
                        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relname = 'meta')", (self.schema,))
                    version = 0
                    if exists:
                        (version,), = conn.execute(f"SELECT version FROM {self.s}.meta WHERE id = 1")
                    if version >= pgsql.VERSION:
                        return
                    for statement in pgsql.migration(self.schema, version):
                        conn.execute(statement)
                    if version == 0:
                        conn.execute(f"INSERT INTO {self.s}.meta (id, format, version, store_id, slots, "
                                     "tick, horizon) VALUES (1, %s, %s, %s, %s, %s, %s)",
                                     (pgsql.FORMAT, pgsql.VERSION, uuid.uuid4().hex, wheel.slots,
                                      float(wheel.tick), wheel.current_tick(self.now())))
                    else:
                        conn.execute(f"UPDATE {self.s}.meta SET version = %s WHERE id = 1", (pgsql.VERSION,))
                log.info("%s store in schema %s at %s", "created the" if version == 0 else "migrated the",
                         self.schema, self.location)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StoreError(f"{self._where}: the database user may not create the timewheel store in "
                                 f"schema {self.schema!r} ({' '.join(str(exc).split())}); have its owner run "
                                 f"the SQL that `timewheel migrate` prints") from None
            except psycopg.Error as exc:
                raise self._error(exc, True, done) from None

    def close(self) -> None:
        liveness = self.__dict__.get("liveness")
        if liveness is not None:
            liveness.close()
        if self._listener is not None and self._listener_pid == os.getpid():
            self._listener.close()
        self._pool.close()

    # -- writing records -----------------------------------------------------------------------------
    def _write(self, items: Sequence[tuple[TaskRecord, Optional[int]]]) -> tuple[int, bool]:
        """Add ``items`` (record, expected stored rev) all or none: (0 or the 1-based index of
        the first conflict, whether to ring)."""
        if len(items) >= _COPY_FROM and all(e is None and _is_new(r) for r, e in items):
            return self._copy_new([r for r, _ in items])
        (conflict, ring), = self._call(*add_call(self.s, items, self.wheel, self._store_id), write=True)
        if conflict < 0:
            raise StoreError(f"{self._where}: schema {self.schema!r} holds another store than the one "
                             "opened (recreated meanwhile?); nothing was written")
        return conflict, ring

    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        if any(r.depends_on for r in records):      # (issue 23: postgres_deps.py)
            return self._add_dependent(records, existing)
        return self.add_with(self._write, self._plan_reader(), records, existing, self.ring)

    def _copy_new(self, recs: Sequence[TaskRecord]) -> tuple[int, bool]:
        """A batch of new tasks (``hu.batch()``) in one transaction: the rows by ``COPY`` (the
        array form of ``add`` spends most of a large batch adapting 25 arrays), the counters
        and the wake-up decision as ``add`` makes them.  A duplicate id rolls all back."""
        if self.readonly:
            raise StoreError(f"{self.location} is open read-only")
        with self._pool.connection() as conn, self._dog.watch(conn) as done:
            try:
                with conn.transaction():
                    ring = self._copy_in(conn, recs)
                    if ring is None:
                        return -1, False
            except psycopg.errors.UniqueViolation:
                return self._first_taken(recs), False
            except psycopg.Error as exc:
                raise self._error(exc, True, done) from None
        return 0, ring

    def _first_taken(self, recs: Sequence[TaskRecord]) -> int:
        taken = {i for (i,) in self._call(f"SELECT id FROM {self.s}.tasks t WHERE t.id = ANY(%s::text[])",
                                          ([r.id for r in recs],))}
        return next((k + 1 for k, r in enumerate(recs) if r.id in taken), 1)

    def _copy_in(self, conn: Any, recs: Sequence[TaskRecord]) -> Optional[bool]:
        """COPY new pending ``recs`` in the caller's transaction on ``conn``, counted; whether
        one became ready ahead of every other (ring), None if the schema holds another store."""
        wheel, s = self.wheel, self.s
        rows = [(r.id, r.name, PENDING, r.eta, eta_us(r.eta), wheel.due_tick(r.eta), r.payload, r.created,
                 r.retries, r.retry_delay, r.misfire_grace, 0, 0, r.version, 0, r.timeout, r.batch)
                for r in recs]
        counted: dict[tuple[str, int], int] = {}
        for row in rows:
            counted[(row[1], row[5])] = counted.get((row[1], row[5]), 0) + 1
        found = conn.execute(f"SELECT horizon, tick FROM {s}.meta WHERE id = 1 AND store_id = %s",
                             (self._store_id,)).fetchall()
        if not found:
            return None
        (horizon, tick), = found
        soonest = min((row[4] for row in rows if row[5] <= horizon), default=None)
        head = None if soonest is None else conn.execute(
            f"SELECT t.eta_us FROM {s}.tasks t WHERE t.status = 'pending' AND t.eta_us <= %s "
            "AND t.tick <= %s ORDER BY t.eta_us, t.id LIMIT 1",
            (math.ceil(horizon * tick * 1e6) + 1, horizon)).fetchall()
        copy = f"COPY {s}.tasks ({_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        with conn.cursor().copy(copy) as cp:
            cp.set_types(_COPY_TYPES)
            for row in rows:
                cp.write_row(row)
        conn.execute(f"INSERT INTO {s}.counts_delta (status, name, tick, n) SELECT 'pending', "
                     "name, tick, n FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS "
                     "c(name, tick, n)", ([k[0] for k in counted], [k[1] for k in counted],
                                          list(counted.values())))
        return soonest is not None and (not head or soonest < head[0][0])

    def add_with(self, write: Callable[[Sequence[tuple[TaskRecord, Optional[int]]]], tuple[int, bool]],
                 read: Callable[[list[str]], dict[str, tuple[Optional[TaskRecord], int]]],
                 records: Sequence[TaskRecord], existing: str, ring: Callable[[], None]) -> list[TaskRecord]:
        """:meth:`add` through ``write`` and ``read`` (this store's connections, or an
        application's: :mod:`timewheel.store.postgres_tx`)."""
        if not records:
            return []
        if existing == "fail":
            rules.check_distinct(records)
            conflict, wake = write([(r, None) for r in records])
            if conflict:
                raise DuplicateTask(f"task id {records[conflict - 1].id!r} already exists; nothing was added")
            if wake:
                ring()
            return list(records)
        while True:     # plan on what is stored; if it changed meanwhile, plan again
            out, plan, expect = _plan(records, existing, read(list(dict.fromkeys(r.id for r in records))))
            if not plan:
                return out
            conflict, wake = write([(r, expect[r.id]) for r in plan.values()])
            if not conflict:
                if wake:
                    ring()
                return out

    def _plan_reader(self) -> Callable[[list[str]], dict[str, tuple[Optional[TaskRecord], int]]]:
        def read(ids: list[str]) -> dict[str, tuple[Optional[TaskRecord], int]]:
            return stored_by_id(self._call(f"SELECT {_COLS} FROM {self.s}.tasks t "
                                           "WHERE t.id = ANY(%s::text[])", (ids,)))
        return read

    def get(self, task_id: str) -> Optional[TaskRecord]:
        rows = self._call(f"SELECT {_COLS} FROM {self.s}.tasks t WHERE t.id = %s", (task_id,))
        return decode_row(rows[0]) if rows else None

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        planned = _planned(changes)
        out: list[Optional[TaskRecord]] = [None] * len(changes)
        parts = _rounds([k for k, p in enumerate(planned) if p is not None], planned)
        for j, part in enumerate(parts):
            try:
                rows = self._call(f"SELECT * FROM {self.s}.swap(%s, {_casts()}, %s)",
                                  [self.liveness.token, *self._write_args(changes, planned, part),
                                   self.channel], write=True)
            except DependentsWait:               # tasks wait for an outcome: with their changes
                rest = {k for p in parts[j:] for k in p}
                waited = self._swap_waited(changes, [p if k in rest else None for k, p in enumerate(planned)])
                return [waited[k] if k in rest else out[k] for k in range(len(changes))]
            done = {i for (i,) in rows}
            for k in part:
                out[k] = planned[k] if planned[k].id in done else None      # type: ignore[union-attr]
        return out

    def _write_args(self, changes: Sequence[tuple[TaskRecord, TaskRecord]],
                    planned: list[Optional[TaskRecord]], part: list[int]) -> list[list]:
        return write_args([(planned[k], changes[k][0].rev) for k in part], self.wheel)   # type: ignore[misc]

    # -- workers --------------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0, *,
              queues: Optional[frozenset] = None) -> Claimed:
        limit, queued = max(0, limit), max(0, queued)
        rows = self._call(f"SELECT * FROM {self.s}.claim(%s, %s, %s, %s, %s, %s::text[], %s)",
                          (owner, owner == self.liveness.token, limit, limit + queued, self.lease,
                           _served(queues), self.channel), write=True)
        return self._claimed(rows, owner)

    def record_and_claim(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], owner: str,
                         now: float, limit: int, queued: int = 0, *, queues: Optional[frozenset] = None
                         ) -> tuple[list[Optional[TaskRecord]], Claimed]:
        """The outcomes and the claim in one statement: one transaction, one round trip, one
        commit per worker round."""
        planned = _planned(changes)
        rounds = _rounds([k for k, p in enumerate(planned) if p is not None], planned)
        if len(rounds) != 1:                 # nothing to record, or an id given twice
            return self.swap(changes), self.claim(owner, now, limit, queued, queues=queues)
        limit, queued = max(0, limit), max(0, queued)
        args = [self.liveness.token, *self._write_args(changes, planned, rounds[0]), owner,
                owner == self.liveness.token, limit, limit + queued, self.lease, _served(queues),
                self.channel]
        try:
            rows = self._call(f"SELECT * FROM {self.s}.settle(%s, {_casts()}, %s, %s, %s, %s, %s, "
                              "%s::text[], %s)", args, write=True)
        except DependentsWait:                   # tasks wait for an outcome: with their changes
            return self._swap_waited(changes, planned), self.claim(owner, now, limit, queued, queues=queues)
        done = set(rows[-1][-1] or ())
        out = [p if p is not None and p.id in done else None for p in planned]
        return out, self._claimed([r[:-1] for r in rows], owner)

    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        fields = rules.noted(old, new)
        (ok,), = self._call(f"SELECT {self.s}.note(%s, %s, %s::float8, %s::text)",
                            (old.id, old.rev, fields.get("abort"), progress_to_json(fields.get("progress"))),
                            write=True)
        return bool(ok)

    def aborting(self, owner: str, running: Sequence[TaskRecord]) -> dict[str, float]:
        if not running:
            return {}
        rows = self._call(f"SELECT t.id, t.abort FROM unnest(%s::text[], %s::bigint[]) AS r(id, rev) "
                          f"JOIN {self.s}.tasks t ON t.id = r.id AND t.rev = r.rev "
                          "WHERE t.status = 'running' AND t.owner = %s AND t.abort IS NOT NULL",
                          ([r.id for r in running], [r.rev for r in running], owner))
        return {i: a for i, a in rows}

    def _claimed(self, rows: list[tuple], owner: str) -> Claimed:
        *taken_rows, (*_, at, lease, head) = rows
        self._saw(at)
        taken = []
        for row in taken_rows:
            try:
                old = decode_row(row)
            except RecordDecodeError as exc:
                if rules.set_aside(row[0], exc):
                    self._mark_broken(row[0], str(exc))
                continue
            # the claim's "waits" (claimed but queued) comes after the row
            taken.append(rules.claimed(old, owner, at, lease=lease, queued=row[_NROW]))
        return Claimed(taken, head)

    def _mark_broken(self, task_id: str, reason: str) -> None:
        self._call(f"SELECT {self.s}.mark_broken(%s, %s)", (task_id, reason), write=True)

    # -- the ticking process ----------------------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        (horizon, moved, complete, led), = self._call(
            f"SELECT * FROM {self.s}.advance(%s, %s, %s, %s)", (through, max(0, limit), leader, self.channel),
            write=True)
        return Advanced(horizon, moved, complete, led=led)

    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        rows = self._call(f"SELECT {_COLS} FROM {self.s}.tasks t WHERE t.status = 'running' AND "
                          "(t.lease IS NULL OR t.lease <= extract(epoch FROM clock_timestamp())) "
                          "ORDER BY t.lease NULLS FIRST, t.id LIMIT %s", (limit,))
        return [r for r in self._decoded(rows) if r.status == RUNNING]

    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        wanted = purge_statuses(statuses)
        (n,), = self._call(f"SELECT {self.s}.purge(%s, %s, %s::text[])",
                           (finished_ms(finished_before), max(0, min(limit, _PURGE_MAX)), wanted), write=True)
        # and a page of the walk through the limits, forgetting idle ones (see forget_idle)
        (self._forget_after,), = self._call(f"SELECT {self.s}.forget_idle(%s, 1000)",
                                            (self._forget_after,), write=True)
        return n

    def _decoded(self, rows: Iterable[Sequence[Any]]) -> list[TaskRecord]:
        """The records of ``rows`` that can be read; others are set aside (when writable)."""
        out = []
        for row in rows:
            try:
                out.append(decode_row(row))
            except RecordDecodeError as exc:
                if rules.set_aside(row[0], exc, readonly=self.readonly, marked=row[4] == BROKEN):
                    self._mark_broken(row[0], str(exc))
        return out

    # -- the doorbell -----------------------------------------------------------------------------------
    def doorbell(self) -> Doorbell:
        if self.readonly:
            return Doorbell()
        bell = _Bell(self)
        self._bells.add(bell)
        if self.listen:
            if self._listener is None or self._listener_pid != os.getpid():
                self._listener, self._listener_pid = _Listener(self), os.getpid()
            self._listener.add(bell)
        return bell

    def _forget(self, bell: Doorbell) -> None:
        self._bells.discard(bell)
        if self._listener is not None and self._listener_pid == os.getpid():
            if not self._listener.discard(bell):
                self._listener.close()
                self._listener = None

    def stored_serializer(self) -> Optional[str]:
        rows = self._call(f"SELECT serializer FROM {self.s}.meta WHERE id = 1")
        return rows[0][0] if rows else None

    def record_serializer(self, name: str) -> None:
        self._call(f"UPDATE {self.s}.meta SET serializer = %s WHERE id = 1", (name,), write=True)

    def report_process(self, token: str, report: str) -> None:
        self._call(f"INSERT INTO {self.s}.processes (token, report) VALUES (%s, %s) ON CONFLICT (token) "
                   "DO UPDATE SET report = excluded.report", (token, report), write=True)

    def process_reports(self) -> dict[str, str]:
        return dict(self._call(f"SELECT token, report FROM {self.s}.processes"))

    def forget_processes(self, tokens: Sequence[str]) -> None:
        if tokens:
            self._call(f"DELETE FROM {self.s}.processes WHERE token = ANY(%s)", (list(tokens),), write=True)

    def ring(self) -> None:
        """Wake every runner of this schema's store, on any host (this process's at least)."""
        for bell in list(self._bells):
            bell.poke()
        try:
            self._call("SELECT pg_notify(%s, '')", (self.channel,))
        except StoreError as exc:
            log.debug("could not ring %s: %s", self.channel, exc)

    # -- transactional enqueue ----------------------------------------------------------------------------
    def through(self, connection: Any) -> Any:
        """An adder that writes tasks through the application's own ``connection`` (a psycopg
        3 connection, a SQLAlchemy Connection or Session, a Django database alias), in its
        transaction: see :mod:`timewheel.store.postgres_tx`."""
        from .postgres_tx import Through
        return Through(self, connection)

    # -- for the CLI ---------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Server and schema facts, for ``timewheel inspect``."""
        (version, size, dead), = self._call(
            "SELECT current_setting('server_version'), pg_total_relation_size(%s::regclass), "
            "(SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass)",
            (f"{self.s}.tasks", f"{self.s}.tasks"))
        return {"url": self.location, "schema": self.schema, "postgres_version": version,
                "table_bytes": size, "dead_rows": dead, "lease": self.lease, "listen": self.listen,
                "slots": self.wheel.slots, "tick": self.wheel.tick}


# -- helpers of the store's methods --------------------------------------------------------------------

def lock_key(schema: str) -> int:
    """The transaction advisory lock that serialises creating and migrating ``schema``'s store."""
    return int.from_bytes(uuid.uuid5(uuid.NAMESPACE_URL, "timewheel:" + schema).bytes[:8], "big", signed=True)


def stored_meta(call: Callable[..., list[tuple]], schema: str) -> Optional[tuple]:
    """(format, version, slots, tick, store_id) of ``schema``'s store, None if there is none."""
    s = pgsql._q(schema)
    ((exists,),) = call("SELECT to_regclass(%s) IS NOT NULL", (f"{s}.meta",))
    if not exists:
        return None
    rows = call(f"SELECT format, version, slots, tick, store_id FROM {s}.meta WHERE id = 1")
    return rows[0] if rows else None


def migration_script(location: str, *, namespace: str = "timewheel", timeout: float = 10.0,
                     wheel: Optional[Wheel] = None) -> tuple[str, int, list[str]]:
    """What ``timewheel migrate`` prints: (the schema, its stored version (0: none), the SQL
    that creates the store there or brings it to this version -- empty when it is up to
    date).  Reads the database, changes nothing.  ``wheel``: the geometry of a new store."""
    if psycopg is None:
        raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'timewheel[postgres]'")
    target = parse(location)
    schema = target.schema or check_schema(namespace, "namespace")
    where = f"the PostgreSQL server at {target.public}"
    try:
        conn = psycopg.connect(target.conninfo, autocommit=True, prepare_threshold=None,
                               connect_timeout=max(2, math.ceil(timeout)))
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach {where} ({' '.join(str(exc).split())})") from None
    try:
        def call(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
            return conn.execute(sql, params).fetchall()
        stored = stored_meta(call, schema)
        ((now,),) = call("SELECT extract(epoch FROM clock_timestamp())::float8")
    except psycopg.Error as exc:
        raise translate(exc, where, schema, False) from None
    finally:
        _close(conn)
    version = 0 if stored is None else stored[1]
    if stored is not None and stored[0] != pgsql.FORMAT:
        raise NotAStore(f"schema {schema!r} at {target.public} holds store format {stored[0]!r}")
    if version >= pgsql.VERSION:
        return schema, version, []
    w = wheel or Wheel()
    return schema, version, list(pgsql.script(schema, version, slots=w.slots, tick=float(w.tick),
                                              horizon=w.current_tick(now), store_id=uuid.uuid4().hex,
                                              lock=lock_key(schema)))


def stored_by_id(rows: Iterable[Sequence[Any]]) -> dict[str, "TaskRecord | rules.Unreadable"]:
    """Task rows -> id: its record, or :class:`rules.Unreadable` with its rev."""
    out: dict[str, "TaskRecord | rules.Unreadable"] = {}
    for row in rows:
        try:
            out[row[0]] = decode_row(row)
        except RecordDecodeError:
            out[row[0]] = rules.Unreadable(rules.stored_rev(row[18]))
    return out


def _plan(records: Sequence[TaskRecord], existing: str, stored: dict[str, "TaskRecord | rules.Unreadable"]
          ) -> tuple[list[TaskRecord], dict[str, TaskRecord], dict[str, Optional[int]]]:
    """What add(existing=keep|reuse|replace) returns, what it writes (the rules decide), and
    the rev it expects to find in each row it writes (None: no such task)."""
    out, plan = rules.admit_all(records, stored.get, existing)
    return out, plan, {i: None if i not in stored else stored[i].rev for i in plan}


def _planned(changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
    return [rules.swapped(old, new) if new.id == old.id else None for old, new in changes]


def _rounds(keys: list[int], planned: list[Optional[TaskRecord]]) -> list[list[int]]:
    """Split the indexes of a batch so that no id appears twice in one statement (the pairs of
    one id apply in their order, one statement after another)."""
    out: list[list[int]] = []
    ids: list[set[str]] = []
    for k in keys:
        task_id = planned[k].id                  # type: ignore[union-attr]
        n = next((j for j, seen in enumerate(ids) if task_id not in seen and
                  all(task_id not in later for later in ids[j + 1:])), len(out))
        if n == len(out):
            out.append([])
            ids.append(set())
        out[n].append(k)
        ids[n].add(task_id)
    return out


def _served(queues: Optional[frozenset]) -> Optional[list[str]]:
    """The queues a claim serves, as its ``p_queues`` (None: every queue)."""
    return None if queues is None else sorted(queues)


def _tick_range(start: Optional[int], stop: Optional[int]) -> tuple[str, list[Any]]:
    where, params = "", []
    if start is not None:
        where, params = where + " AND tick >= %s", params + [start]
    if stop is not None:
        where, params = where + " AND tick < %s", params + [stop]
    return where, params


#: per kind of scan: its order, and the condition of "after a mark" in that order
_ORDERS = {
    "id": ("t.id", "t.id > %s"),
    PENDING: ("t.eta_us, t.id", "(t.eta_us, t.id) > (%s, %s)"),
    RUNNING: ("coalesce(t.started, 0), t.id", "(coalesce(t.started, 0), t.id) > (%s, %s)"),
    "done": ("t.finished_ms DESC, t.id DESC", "(t.finished_ms, t.id) < (%s, %s)"),
}


def _mark(kind: str, task_id: str, eta: Any, started: Any, finished: Any) -> tuple:
    """The values a scan continues after, for a record or a row of that kind."""
    if kind == "id":
        return (task_id,)
    if kind == PENDING:
        return (eta_us(eta), task_id)
    if kind == RUNNING:
        return (started or 0.0, task_id)
    return (finished_ms(finished), task_id)


def translate(exc: BaseException, where: str, schema: str, write: bool,
              timed_out: Optional[float] = None) -> StoreError:
    """A psycopg error as ours: what happened and whether anything was written.  Every call is
    one statement, its own transaction: an error in it rolled everything back, unless the
    connection broke after it was sent (then the commit may or may not have happened)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    maybe = "; the change may or may not have been made" if write else ""
    if timed_out is not None and isinstance(exc, pgerrors.QueryCanceled):
        return StoreBusy(f"{where} did not answer within {timed_out:g}s ({text}); nothing was written")
    if timed_out is not None and isinstance(exc, psycopg.OperationalError):
        return StoreBusy(f"{where} did not answer within {timed_out:g}s ({text})"
                         f"{maybe or '; nothing was written'}")
    if isinstance(exc, pgerrors.QueryCanceled):
        return StoreBusy(f"{where} cancelled the statement ({text}); nothing was written")
    if isinstance(exc, (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected, pgerrors.SerializationFailure)):
        return StoreBusy(f"{where} is busy ({text}); nothing was written")
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return StoreError(f"{where} is read-only (a standby, or default_transaction_read_only is on: "
                          f"{text}); nothing was written")
    if isinstance(exc, pgerrors.DiskFull):
        return StoreError(f"{where} is out of disk space ({text}); nothing was written")
    if isinstance(exc, pgerrors.InsufficientResources):
        return StoreBusy(f"{where} is out of resources ({text}); nothing was written")
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return StoreError(f"{where}: the database user may not do this ({text}); nothing was written")
    if isinstance(exc, (pgerrors.UndefinedTable, pgerrors.UndefinedFunction, pgerrors.InvalidSchemaName)):
        return StoreError(f"{where}: no timewheel store in schema {schema!r} any more ({text}); "
                          "nothing was written")
    if isinstance(exc, (pgerrors.AdminShutdown, pgerrors.CrashShutdown, pgerrors.CannotConnectNow,
                        psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreError(f"lost the connection to {where} ({text}){maybe or '; nothing was written'}")
    return StoreError(f"{where}: {text}")

