"""The default store: one SQLite file, opened through sqlitedict.

Every row is a key/value pair in sqlitedict's table; the key prefix says what the row is:

========================================  ==================================================
``t:<id>``                                the task record (see :mod:`timewheel.records`)
``w:<slot>:<cycle>:<eta_us>:<id>``        the wheel: one row per pending task
``l:<id>`` -> eta                          late marker: added into an already-loaded tick
``r:<id>`` -> owner                        running, claimed by process ``owner``
``x:<status>:<expires_ms>:<id>``           finished; purge after ``expires_ms``
``b:<id>`` -> reason                       a record that could not be decoded
``m:<name>``                               shared bookkeeping (geometry, horizon, ...)
========================================  ==================================================

Keys are the table's primary key, so "the tasks of slot 12, cycle 480" is an index range
read, not a scan, and one enqueue writes two small rows instead of rewriting a growing
per-slot value.

How we use sqlitedict (see shared/NOTES-sqlitedict-and-wheels.md for the measurements):
the file is a :class:`~sqlitedict.SqliteDict` table, opened through sqlitedict, but its
connection layer -- one background thread per dict, to which every call is queued -- is
replaced by :class:`_Connection`, which runs each call synchronously in the caller's thread.
That thread is what makes sqlitedict slow and unsafe for a durable queue: a round trip costs
~65 us (10k commits/s at best against 41k for sqlite3), write errors surface at some later
call, ``commit()`` hangs forever when COMMIT raises (piskvorky/sqlitedict#108), and a dict
opened before ``fork()`` hangs in the child.  We also pass ``journal_mode="WAL"`` on *every*
open (a second opener without it downgrades the file or fails with "database is locked"),
set ``synchronous=NORMAL`` (sqlitedict hard-codes OFF; with WAL, NORMAL survives a process
kill without an fsync per commit) and a real busy timeout (its ``timeout=`` does not set one).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence
from urllib.parse import quote

from sqlitedict import SqliteDict

from ..errors import NotAStore, StoreBusy, StoreError, StoreMismatch
from ..records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    RecordDecodeError,
    TaskRecord,
    decode_record,
    encode_record,
)
from ..wheel import Wheel
from .base import (
    RETRYABLE,
    Claim,
    Due,
    Outcome,
    StoreState,
    WheelStore,
    cancel_record,
    end_run,
    ordered,
    purge_statuses,
    requeue_crashed,
    reset_for_retry,
    start_run,
)

__all__ = ["SqliteDictStore"]

log = logging.getLogger("timewheel.store")

TABLE = "timewheel"
FORMAT = "timewheel/1"
_STATUS_CODE = {SUCCEEDED: "s", FAILED: "f", CANCELLED: "c", MISFIRED: "m"}
_CHUNK = 400          # rows per multi-row statement (SQLite allows 32766 bound variables)

_ADD_ONE = (
    f'INSERT INTO "{TABLE}" (key, value) SELECT ?, ? UNION ALL SELECT ?, X\'\' '
    f'UNION ALL SELECT ?, ? WHERE ? <= (SELECT value FROM "{TABLE}" WHERE key = \'m:horizon\')'
)


def _identity(x: Any) -> Any:
    return x


# Every call into SQLite from this module holds its connection's lock (or _CONNECTING while
# opening), and fork() waits for all of them (see the at-fork handlers below): SQLite keeps
# process-wide mutexes, and a child forked while another thread was inside SQLite inherits
# them locked -- its first open then hangs forever.
_CONNECTING = threading.RLock()
_connections: "weakref.WeakSet[_Connection]" = weakref.WeakSet()


class _Connection:
    """sqlitedict's connection interface (``SqliteMultithread``), run in the calling thread.

    Autocommit mode: a statement outside an explicit BEGIN is its own durable transaction.
    Thread-safe through one lock; the store's own lock spans multi-statement transactions.
    """

    def __init__(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool) -> None:
        self.filename = filename
        self.autocommit = True
        self.journal_mode = journal_mode
        self._lock = threading.RLock()
        self._readonly = readonly
        with _CONNECTING:
            self._connect(filename, journal_mode, busy_timeout, readonly)
            _connections.add(self)

    def _connect(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool) -> None:
        if readonly:
            # mode=ro: never creates, converts or writes the file; no journal_mode pragma.
            self._con = sqlite3.connect(f"file:{quote(filename)}?mode=ro", uri=True,
                                        timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
        else:
            self._con = sqlite3.connect(filename, timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
            self._con.execute(f"PRAGMA journal_mode = {journal_mode}")
            self._con.execute("PRAGMA synchronous = NORMAL")
            # sqlitedict's own CREATE TABLE IF NOT EXISTS then finds this one.  WITHOUT ROWID
            # stores each key once (a rowid table keeps it again in the primary-key index):
            # ~8% less SQLite time per enqueue.
            self._con.execute(f'CREATE TABLE IF NOT EXISTS "{TABLE}" '
                              "(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")

    def execute(self, req: str, arg: Sequence[Any] = (), res: Any = None) -> None:
        if self._readonly and req.startswith("CREATE TABLE IF NOT EXISTS"):
            return
        with self._lock:
            cur = self._con.execute(req, arg or ())
            if res is not None:
                for row in cur:
                    res.put(row)
                res.put("--no more--")

    def executemany(self, req: str, items: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._con.executemany(req, items)

    def select(self, req: str, arg: Sequence[Any] = ()) -> Iterator[tuple]:
        with self._lock:
            return iter(self._con.execute(req, arg or ()).fetchall())

    def select_one(self, req: str, arg: Sequence[Any] = ()) -> Optional[tuple]:
        with self._lock:
            return self._con.execute(req, arg or ()).fetchone()

    def commit(self, blocking: bool = True) -> None:
        with self._lock:
            if self._con.in_transaction:
                self._con.execute("COMMIT")

    def close(self, force: bool = False) -> None:
        with self._lock:
            self._con.close()


class _Dict(SqliteDict):
    """A SqliteDict whose connection is a :class:`_Connection`.

    Read-only stores are opened with flag "c" on a ``mode=ro`` connection, whose CREATE TABLE
    IF NOT EXISTS is skipped (the table was checked already): flag "r" would make sqlitedict
    list the tables through a read-write connection that it never closes, and whose eventual
    finalisation checkpoints a WAL left by a killed process -- a "read" that rewrites the file.
    """

    def __init__(self, path: str, readonly: bool, busy_timeout: float) -> None:
        self._tw_readonly = readonly
        self._tw_busy_timeout = busy_timeout
        super().__init__(path, tablename=TABLE, flag="c", autocommit=True,
                         journal_mode="WAL", encode=_identity, decode=_identity, outer_stack=False)

    def _new_conn(self) -> Any:
        return _Connection(self.filename, self.journal_mode, self._tw_busy_timeout, self._tw_readonly)


def tkey(task_id: str) -> str:
    return "t:" + task_id


def _range_end(prefix: str) -> str:
    """The smallest key greater than every key starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


_open_stores: "weakref.WeakSet[SqliteDictStore]" = weakref.WeakSet()
_abandoned: list[Any] = []      # connections inherited through fork(): kept, never touched


_held_for_fork: list[Any] = []


def _before_fork() -> None:
    _CONNECTING.acquire()
    for conn in sorted(_connections, key=id):
        conn._lock.acquire()
        _held_for_fork.append(conn._lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()
    _CONNECTING.release()


def _after_fork_in_child() -> None:
    _after_fork_in_parent()
    # A lock held by another thread of the parent at fork() stays held forever in the child.
    for store in list(_open_stores):
        store._lock = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class SqliteDictStore(WheelStore):
    """A :class:`WheelStore` in one SQLite file.  Thread-safe; one instance per process.

    :param path: the store file; created (mode 0600) unless ``readonly``.
    :param readonly: open an existing store for reading only (the CLI's read commands): the
        file is never created, converted or written.
    :param busy_timeout: seconds a write waits for another process's transaction before
        :class:`StoreBusy` is raised.
    """

    path: str

    def __init__(self, path: str, wheel: Optional[Wheel] = None, *, readonly: bool = False,
                 busy_timeout: float = 10.0, result_ttl: float = 7 * 86400.0,
                 now: Optional[float] = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self.result_ttl = result_ttl
        self._lock = threading.RLock()
        self._db: Optional[SqliteDict] = None
        self._pid = -1
        _open_stores.add(self)
        self._check_file()
        self._open()
        stored = self._geometry()
        if stored is None:
            if readonly:
                raise NotAStore(f"{self.path} is not a timewheel store (no timewheel data in it)")
            self.wheel = wheel or Wheel()
            stored = self._initialise(now)      # another process may have won the race
        if stored is not None:
            if wheel is not None and wheel != stored:
                raise StoreMismatch(
                    f"{self.path} was created with slots={stored.slots}, tick={stored.tick}; "
                    f"cannot open it with slots={wheel.slots}, tick={wheel.tick}")
            self.wheel = stored

    # -- connection -----------------------------------------------------------------------
    def _check_file(self) -> None:
        """Refuse files that are not ours before sqlitedict touches them (it would add a table
        to any SQLite file and switch its journal mode)."""
        exists = os.path.exists(self.path)
        if not exists:
            if self.readonly:
                raise StoreError(f"{self.path}: no such file")
            parent = os.path.dirname(self.path)
            if not os.path.isdir(parent):
                raise StoreError(f"{self.path}: directory {parent} does not exist")
            try:
                # Created by us, 0600: the store holds pickles, which run code when loaded.
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the store ({exc.strerror})") from None
            return
        if os.path.isdir(self.path):
            raise NotAStore(f"{self.path} is a directory, not a timewheel store")
        if os.path.getsize(self.path) == 0:
            if self.readonly:
                raise NotAStore(f"{self.path} is empty, not a timewheel store")
            return
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(16)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read ({exc.strerror})") from None
        if magic != b"SQLite format 3\x00":
            raise NotAStore(f"{self.path} is not a timewheel store (not an SQLite file)")
        try:
            with _CONNECTING:
                con = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True,
                                      timeout=self.busy_timeout)
                try:
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    ours = TABLE in tables and con.execute(
                        f'SELECT 1 FROM "{TABLE}" WHERE key = ?', ("m:format",)).fetchone() is not None
                finally:
                    con.close()
        except sqlite3.Error as exc:
            raise NotAStore(f"{self.path} is not a readable timewheel store ({exc})") from None
        if self.readonly and not ours:
            raise NotAStore(f"{self.path} is not a timewheel store (no timewheel data in it)")
        if tables - {TABLE} and not ours:     # our table alone: another process is creating it
            raise NotAStore(f"{self.path} is an SQLite file but not a timewheel store "
                            f"(tables: {', '.join(sorted(tables))})")

    def _open(self) -> None:
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                self._db = _Dict(self.path, self.readonly, self.busy_timeout)
                break
            except sqlite3.OperationalError as exc:
                # Two processes switching a new file to WAL at once: the loser gets "database
                # is locked" at once, without SQLite's busy handler.  Wait like a busy write.
                if self._translate(exc).__class__ is StoreBusy and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
                    continue
                raise self._translate(exc) from None
            except (sqlite3.Error, RuntimeError) as exc:
                raise StoreError(f"{self.path}: cannot open the store ({exc})") from None
        self._pid = os.getpid()

    def _conn(self) -> Any:
        if self._pid != os.getpid():
            # Forked: an SQLite connection must not cross fork().  Abandon the parent's and
            # open our own.  Never close or even garbage-collect it here: closing may try a
            # checkpoint on the parent's file, and its lock may be held by a parent thread
            # that does not exist in this process (sqlitedict's __del__ would wait forever).
            if self._db is not None:
                _abandoned.append(self._db)
            self._db = None
            self._open()
        if self._db is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._db.conn

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                try:
                    self._db.close()
                except Exception:  # closing must not raise; nothing is pending here
                    log.debug("closing %s failed", self.path, exc_info=True)
            self._db = None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreBusy(f"{self.path} stayed locked by another process for more than "
                             f"{self.busy_timeout:g}s ({text})")
        return StoreError(f"{self.path}: {text}")

    # -- statements -------------------------------------------------------------------------
    def _x(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement that returns no rows."""
        self._conn().execute(sql, params)

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a statement and wait for its rows."""
        return list(self._conn().select(sql, params))

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise self._translate(exc) from None

    @contextmanager
    def _writing(self, immediate: bool = True) -> Iterator[None]:
        """One write transaction, committed when the block ends, rolled back on any error.

        ``immediate=False`` is for a block that runs exactly one statement: in autocommit
        mode SQLite makes it its own atomic, durable transaction, with no BEGIN/COMMIT.
        BEGIN IMMEDIATE takes the write lock up front, so a read-modify-write (a claim) cannot
        interleave with another process's.
        """
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        with self._lock:
            if not immediate:
                try:
                    yield
                except sqlite3.Error as exc:
                    raise self._translate(exc) from None
                return
            try:
                self._x("BEGIN IMMEDIATE")
                yield
                self._x("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from None
                raise

    def _rollback(self) -> None:
        try:
            self._x("ROLLBACK")
        except sqlite3.Error:
            pass   # "no transaction is active": BEGIN itself failed

    def _upsert(self, rows: Sequence[tuple[str, Any]]) -> None:
        for i in range(0, len(rows), _CHUNK):
            part = rows[i:i + _CHUNK]
            flat = [v for row in part for v in row]
            self._x(f'INSERT OR REPLACE INTO "{TABLE}" (key, value) VALUES '
                    + ",".join(["(?,?)"] * len(part)), flat)

    def _delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), _CHUNK):
            part = list(keys[i:i + _CHUNK])
            self._x(f'DELETE FROM "{TABLE}" WHERE key IN ({",".join("?" * len(part))})', part)

    def _fetch(self, keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i in range(0, len(keys), _CHUNK):
            part = list(keys[i:i + _CHUNK])
            out.update(self._q(f'SELECT key, value FROM "{TABLE}" WHERE key IN '
                               f'({",".join("?" * len(part))})', part))
        return out

    def _prefix(self, prefix: str, columns: str = "key, value", order: str = "",
                limit: Optional[int] = None, below: Optional[str] = None) -> list[tuple]:
        sql = f'SELECT {columns} FROM "{TABLE}" WHERE key >= ? AND key < ?'
        params: list[Any] = [prefix, below if below is not None else _range_end(prefix)]
        if order:
            sql += " ORDER BY key " + order
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._q(sql, params)

    def _meta(self, name: str) -> Any:
        rows = self._q(f'SELECT value FROM "{TABLE}" WHERE key = ?', ("m:" + name,))
        return rows[0][0] if rows else None

    # -- keys -------------------------------------------------------------------------------
    def wkey(self, task_id: str, eta: float) -> str:
        return self._wkey(task_id, eta, self.wheel.due_tick(eta))

    def _wkey(self, task_id: str, eta: float, t: int) -> str:
        return f"w:{t % self.wheel.slots:06d}:{t // self.wheel.slots:015d}:{round(eta * 1e6):018d}:{task_id}"

    @staticmethod
    def _wprefix(slot: int, cycle: int) -> str:
        return f"w:{slot:06d}:{cycle:015d}:"

    @staticmethod
    def _due_from_wkey(key: str) -> Due:
        _, _, _, eta_us, task_id = key.split(":", 4)
        return Due(int(eta_us) / 1e6, task_id, False, key)

    def _xkey(self, rec: TaskRecord) -> str:
        expires = round(((rec.finished or 0.0) + self.result_ttl) * 1000)
        return f"x:{_STATUS_CODE[rec.status]}:{expires:015d}:{rec.id}"

    # -- set-up -----------------------------------------------------------------------------
    def _geometry(self) -> Optional[Wheel]:
        with self._reading():
            fmt = self._meta("format")
            if fmt is None:
                return None
            if fmt != FORMAT:
                raise NotAStore(f"{self.path} has store format {fmt!r}; this timewheel reads {FORMAT!r}")
            return Wheel(slots=int(self._meta("slots")), tick=float(self._meta("tick")))

    def _initialise(self, now: Optional[float]) -> Optional[Wheel]:
        """Write the bookkeeping of a new store; if another process just did, return the
        geometry it chose instead."""
        t = self.wheel.current_tick(time.time() if now is None else now)
        with self._writing():
            if self._meta("format") is not None:
                return Wheel(slots=int(self._meta("slots")), tick=float(self._meta("tick")))
            self._x(f'INSERT INTO "{TABLE}" (key, value) VALUES (?,?),(?,?),(?,?),(?,?),(?,?)',
                    ("m:slots", self.wheel.slots, "m:tick", self.wheel.tick,
                     "m:horizon", t, "m:done", t, "m:format", FORMAT))
        log.info("created store %s (slots=%d, tick=%gs)", self.path, self.wheel.slots, self.wheel.tick)
        return None

    # -- producers ------------------------------------------------------------------------
    def add(self, records: Sequence[TaskRecord]) -> None:
        if not records:
            return
        try:
            if len(records) == 1:      # the hot path of delay(): one statement, no BEGIN
                rec = records[0]
                t = self.wheel.due_tick(rec.eta)
                params = (tkey(rec.id), encode_record(rec), self._wkey(rec.id, rec.eta, t),
                          "l:" + rec.id, rec.eta, t)
                with self._writing(immediate=False):
                    self._x(_ADD_ONE, params)
                return
            with self._writing():
                horizon = int(self._meta("horizon"))
                rows: list[tuple[str, Any]] = []
                for rec in records:
                    rows.append((tkey(rec.id), encode_record(rec)))
                    rows += self._placement(rec, horizon)
                for i in range(0, len(rows), _CHUNK):
                    part = rows[i:i + _CHUNK]
                    self._x(f'INSERT INTO "{TABLE}" (key, value) VALUES '
                            + ",".join(["(?,?)"] * len(part)), [v for r in part for v in r])
        except StoreError as exc:
            if "UNIQUE" in str(exc):
                raise ValueError("task id already exists in the store; nothing was added") from None
            raise

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self._reading():
            rows = self._q(f'SELECT value FROM "{TABLE}" WHERE key = ?', (tkey(task_id),))
        return decode_record(rows[0][0]) if rows else None

    def cancel(self, task_id: str, now: float) -> bool:
        with self._writing():
            rec = self.get(task_id)        # the lock is reentrant: read inside the txn
            if rec is None or rec.status != PENDING:
                return False
            self._delete([self.wkey(rec.id, rec.eta), "l:" + rec.id])
            cancel_record(rec, now)
            self._upsert([(tkey(rec.id), encode_record(rec)), (self._xkey(rec), b"")])
            return True

    def retry(self, task_id: str, now: float) -> bool:
        with self._writing():
            rec = self.get(task_id)        # the lock is reentrant: read inside the txn
            if rec is None or rec.status not in RETRYABLE:
                return False
            self._delete([self._xkey(rec)])
            reset_for_retry(rec, now)
            self._upsert([(tkey(rec.id), encode_record(rec))] + self._placement(rec, None))
            return True

    def _placement(self, rec: TaskRecord, horizon: Optional[int]) -> list[tuple[str, Any]]:
        """Wheel row (and late marker if needed) for a record becoming pending in a txn."""
        if horizon is None:
            horizon = int(self._meta("horizon"))
        t = self.wheel.due_tick(rec.eta)
        rows: list[tuple[str, Any]] = [(self._wkey(rec.id, rec.eta, t), b"")]
        if t <= horizon:
            rows.append(("l:" + rec.id, rec.eta))
        return rows

    # -- the ticking process ----------------------------------------------------------------
    def state(self) -> StoreState:
        with self._reading():
            return StoreState(int(self._meta("horizon")), int(self._meta("done")),
                              self._meta("leader"))

    def load(self, after: int, through: int, done_through: int,
             leader: Optional[str] = None) -> list[Due]:
        with self._writing():
            self._x(f'UPDATE "{TABLE}" SET value = max(value, ?) WHERE key = \'m:horizon\'', (through,))
            self._upsert([("m:done", done_through)] + ([("m:leader", leader)] if leader else []))
            out: list[Due] = []
            ranges = list(self.wheel.ranges(after, through))
            for i in range(0, len(ranges), 64):
                parts, params = [], []
                for r in ranges[i:i + 64]:
                    parts.append(f'SELECT key FROM "{TABLE}" WHERE key >= ? AND key < ?')
                    params += [self._wprefix(r.slot, r.cycle_lo), self._wprefix(r.slot, r.cycle_hi + 1)]
                out.extend(self._due_from_wkey(k) for (k,) in self._q(" UNION ALL ".join(parts), params))
            out.extend(self._late_rows())
            return out

    def late(self) -> list[Due]:
        with self._reading():
            return self._late_rows()

    def _late_rows(self) -> list[Due]:
        return [Due(float(v), k[2:], True) for k, v in self._prefix("l:")]

    def claim(self, due: Sequence[Due], owner: str, now: float, starting: int = 0) -> Claim:
        claim = Claim()
        if not due:
            return claim
        with self._writing():
            blobs = self._fetch([tkey(d.id) for d in due])
            dead: list[str] = []
            rows: list[tuple[str, Any]] = []
            broken: list[tuple[str, Any]] = []
            seen: set[str] = set()
            for d in due:
                if d.id in seen:           # listed twice (wheel row and late marker)
                    continue
                seen.add(d.id)
                blob = blobs.get(tkey(d.id))
                if blob is None:
                    claim.gone.append(d.id)
                    continue
                try:
                    rec = decode_record(blob)
                except RecordDecodeError as exc:
                    # Never dropped, never retried in a loop: off the wheel, kept, reported.
                    log.error("task %s: %s; left in the store as broken", d.id, exc)
                    dead += [k for k in (d.key, "l:" + d.id) if k]
                    broken.append(("b:" + d.id, str(exc)))
                    claim.gone.append(d.id)
                    continue
                if rec.status != PENDING:
                    claim.gone.append(d.id)
                    continue
                if rec.eta > now:
                    claim.not_due.append(Due(rec.eta, rec.id, d.late, d.key))
                    continue
                dead += [self.wkey(rec.id, rec.eta), "l:" + rec.id]
                if start_run(rec, owner, now, len(claim.run) < starting):
                    rows.append(("r:" + rec.id, owner))
                    claim.run.append(rec)
                else:
                    rows.append((self._xkey(rec), b""))
                    claim.misfired.append(rec)
                rows.append((tkey(rec.id), encode_record(rec)))
            self._delete(dead)
            self._upsert(rows + broken)
        return claim

    def finish(self, outcomes: Sequence[Outcome]) -> list[Due]:
        again: list[Due] = []
        if not outcomes:
            return again
        with self._writing():
            blobs = self._fetch([tkey(o.id) for o in outcomes])
            horizon = int(self._meta("horizon"))
            rows: list[tuple[str, Any]] = []
            dead: list[str] = []
            for out in outcomes:
                blob = blobs.get(tkey(out.id))
                if blob is None:
                    continue
                rec = decode_record(blob)
                if rec.status != RUNNING:
                    continue
                end_run(rec, out)
                dead.append("r:" + rec.id)
                if rec.status == PENDING:
                    rows += self._placement(rec, horizon)
                    again.append(Due(rec.eta, rec.id, False, self.wkey(rec.id, rec.eta)))
                else:
                    rows.append((self._xkey(rec), b""))
                rows.append((tkey(rec.id), encode_record(rec)))
            self._delete(dead)
            self._upsert(rows)
        return again

    def recover(self, is_dead: Callable[[str], bool], now: float, max_crashes: int) -> list[str]:
        with self._reading():
            running = self._prefix("r:")
        verdict = {owner: is_dead(owner) for owner in {o for _, o in running}}
        suspects = [k for k, owner in running if verdict[owner]]
        if not suspects:
            return []
        back: list[str] = []
        with self._writing():
            horizon = int(self._meta("horizon"))
            owners = dict(self._fetch(suspects))       # re-read inside the transaction
            blobs = self._fetch([tkey(k[2:]) for k in owners])
            rows: list[tuple[str, Any]] = []
            for rkey, owner in owners.items():
                if not verdict.get(owner, False):
                    continue
                blob = blobs.get(tkey(rkey[2:]))
                if blob is None:
                    continue
                rec = decode_record(blob)
                requeue_crashed(rec, now, max_crashes)
                rows += self._placement(rec, horizon) if rec.status == PENDING else [(self._xkey(rec), b"")]
                rows.append((tkey(rec.id), encode_record(rec)))
                back.append(rec.id)
            self._delete(list(owners))
            self._upsert(rows)
        if back:
            log.warning("requeued %d task(s) whose process died while running them", len(back))
        return back

    def purge(self, now: float, limit: int = 1000, statuses: Optional[Iterable[str]] = None,
              finished_before: Optional[float] = None) -> int:
        wanted = purge_statuses(statuses)
        victims: list[str] = []
        # Chosen inside the write transaction: a task retried meanwhile (its x: row deleted
        # in the same transaction that made it pending) is then never a victim.
        with self._writing():
            for status in wanted:
                prefix = f"x:{_STATUS_CODE[status]}:"
                if finished_before is None:
                    below = f"{prefix}{round(now * 1000):015d}:"
                    keys = [k for (k,) in self._prefix(prefix, "key", below=below,
                                                        limit=limit - len(victims))]
                else:
                    keys = [k for (k,) in self._prefix(prefix, "key")]
                    recs = self._fetch([tkey(k.rsplit(":", 1)[1]) for k in keys])
                    keys = [k for k in keys
                            if (b := recs.get(tkey(k.rsplit(":", 1)[1]))) is not None
                            and (decode_record(b).finished or 0.0) < finished_before]
                victims += keys
                if finished_before is None and len(victims) >= limit:
                    break
            if victims:
                self._delete(victims + [tkey(k.rsplit(":", 1)[1]) for k in victims])
        return len(victims)

    # -- observers ------------------------------------------------------------------------
    def _count(self, prefix: str) -> int:
        return int(self._prefix(prefix, "count(*)")[0][0])

    def counts(self) -> dict[str, int]:
        with self._reading():
            out = dict.fromkeys(STATUSES, 0)
            out[PENDING] = self._count("w:")
            out[RUNNING] = self._count("r:")
            for status, code in _STATUS_CODE.items():
                out[status] = self._count(f"x:{code}:")
            return out

    def tasks(self, status: Optional[str] = None, name: Optional[str] = None,
              limit: Optional[int] = None, id_prefix: Optional[str] = None) -> list[TaskRecord]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        out: list[TaskRecord] = []
        if id_prefix:                     # a range of record keys: no need to walk an index
            with self._reading():
                rows = self._prefix(tkey(id_prefix))
            for _, blob in rows:
                try:
                    rec = decode_record(blob)
                except RecordDecodeError:
                    continue
                if (status is None or rec.status == status) and (name is None or rec.name == name):
                    out.append(rec)
            return ordered(out)[:limit]
        with self._reading():
            if status is not None:
                return self._records_of(status, name, limit)
            pending = self._records_of(PENDING, name, limit)
            if limit is not None and len(pending) >= limit:
                return pending
            # the others merged by recency: each status can contribute up to ``limit``
            rest = [r for st in STATUSES if st != PENDING for r in self._records_of(st, name, limit)]
        out = pending + ordered(rest)
        return out[:limit] if limit is not None else out

    def _records_of(self, status: str, name: Optional[str], limit: Optional[int]) -> list[TaskRecord]:
        """Records of one status in its natural order (pending: by eta; running: by id;
        finished: most recent first), up to ``limit``."""
        if status == PENDING:
            ids = [d.id for d in sorted(self._due_from_wkey(k) for (k,) in self._prefix("w:", "key"))]
        elif status == RUNNING:
            ids = [k[2:] for (k,) in self._prefix("r:", "key")]
        else:
            ids = [k.rsplit(":", 1)[1] for (k,) in
                   self._prefix(f"x:{_STATUS_CODE[status]}:", "key", order="DESC")]
        out: list[TaskRecord] = []
        for i in range(0, len(ids), _CHUNK):
            part = ids[i:i + _CHUNK]
            blobs = self._fetch([tkey(x) for x in part])
            for x in part:
                blob = blobs.get(tkey(x))
                if blob is None:
                    continue
                try:
                    rec = decode_record(blob)
                except RecordDecodeError:
                    continue
                if name is None or rec.name == name:
                    out.append(rec)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    def broken(self) -> list[tuple[str, str]]:
        with self._reading():
            return [(k[2:], str(v)) for k, v in self._prefix("b:")]

    def occupancy(self) -> list[tuple[int, int, int]]:
        with self._reading():
            rows = self._q(f'SELECT substr(key, 3, 6), substr(key, 10, 15), count(*) FROM "{TABLE}" '
                           f"WHERE key >= 'w:' AND key < 'w;' GROUP BY 1, 2")
        return [(int(s), int(c), int(n)) for s, c, n in rows]

    # -- CLI helpers ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Journal mode, file sizes and bookkeeping, for ``timewheel inspect``."""
        with self._reading():
            mode = self._q("PRAGMA journal_mode")[0][0]
            st = self.state()
        size = os.path.getsize(self.path)
        wal = self.path + "-wal"
        return {"path": self.path, "journal_mode": mode, "size_bytes": size,
                "wal_bytes": os.path.getsize(wal) if os.path.exists(wal) else 0,
                "slots": self.wheel.slots, "tick": self.wheel.tick,
                "horizon": st.horizon, "done_through": st.done_through, "leader": st.leader}
