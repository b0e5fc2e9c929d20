"""The default store: one SQLite file, opened through sqlitedict.

The file holds sqlitedict's table ``timewheel`` -- ``key``/``value`` as sqlitedict keeps them,
plus two columns of ours -- and two small tables of counters.  One row per task:

=================  ============================================================================
``key``            ``t:<id>`` (``m:<name>`` rows hold shared bookkeeping: geometry, horizon, ...)
``value``          the record (:func:`timewheel.records.encode_record`)
``name``           the task's name, for the counters and ``--name`` filters
``pos``            where the task is, indexed (``timewheel_pos``):

                   ``n:<slot>:<cycle>:<eta>``   just added, not yet counted (see below)
                   ``p:<slot>:<cycle>:<eta>``   pending in the wheel: slot ``tick % slots`` of
                                                cycle ``tick // slots``
                   ``q:<eta>``                  ready: its tick is within the horizon
                   ``r:<owner>``                running, claimed by the process ``owner``
                   ``x:<s|f|c|m>:<finished>``   succeeded / failed / cancelled / misfired
                   ``b:``                       a record that cannot be decoded
=================  ============================================================================

Numbers in ``pos`` are zero-padded to a fixed width (etas in microseconds, finish times in
milliseconds), so the index's order is their numeric order: "the tasks of slot 12, cycle 480"
is an index range, "ready and due at ``now``" is the range below ``q:<now>``, "succeeded,
most recent first" is a range read backwards.  ``timewheel_counts`` (tasks per state and
name) and ``timewheel_ticks`` (pending tasks per due tick) are updated in the same
transactions that move tasks, so the CLI and the web view answer from them without reading
the tasks.

One exception keeps ``delay()`` as cheap as a bare INSERT: a task added on its own is one
statement that writes one row, at ``n:``, uncounted.  The next transaction of a worker or of
the ticking process *absorbs* such rows -- counts them and moves them to ``p:`` or ``q:`` --
in three SQL statements; readers add the few ``n:`` rows to the counters themselves.

How the file is opened through sqlitedict, and why its connection thread is replaced:
see :mod:`timewheel.store.connection`.

Stores written by timewheel 0.1 (format ``timewheel/1``: a record row plus index rows per
task) are converted in place, in one transaction, the first time they are opened for writing.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import sqlite3
import stat
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from sqlitedict import SqliteDict

from ..errors import DuplicateTask, NotAStore, StoreBusy, StoreError, StoreMismatch
from ..records import (
    CANCELLED,
    FAILED,
    MAX_RECORD_BYTES,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    RecordDecodeError,
    TaskRecord,
    decode_record,
    encode_record,
    start_run,
)
from ..wheel import Wheel
from .base import (
    BROKEN,
    Advanced,
    Claimed,
    Doorbell,
    Liveness,
    StoreState,
    WheelStore,
    broken_record,
    check_existing,
    check_listable,
    eta_us,
    finished_ms,
    page,
    purge_statuses,
)
from .connection import CONNECTING, SCHEMA, TABLE, SqlitedictFile, abandon, read_header, ro_uri, track
from .locks import FileLiveness, check_owner, locks_for, probe

__all__ = ["SqliteDictStore"]

log = logging.getLogger("timewheel.store")

FORMAT = "timewheel/2"
OLD_FORMAT = "timewheel/1"
_CODE = {SUCCEEDED: "s", FAILED: "f", CANCELLED: "c", MISFIRED: "m"}
_STATUS_OF_CODE = {c: s for s, c in _CODE.items()}
_CHUNK = 400          # rows per multi-row statement (SQLite allows 32766 bound variables)
_PAGE = 20_000        # tasks made ready per advance() call: bounds a transaction's length
#: a record read is never larger than this in memory: bigger rows read as broken
_VALUE = f"CASE WHEN length(value) <= {MAX_RECORD_BYTES} THEN value END"
_ADD = f'INSERT INTO "{TABLE}" (key, value, pos, name) VALUES (?, ?, ?, ?)'
_SET = f'UPDATE "{TABLE}" SET value = ?, pos = ?, name = ? WHERE key = ?'
_FRESH = "pos >= 'n:' AND pos < 'n;'"
#: the ``pos`` range of each status (pending: the n:, p: and q: rows; no position starts with o)
_POS_RANGE = {PENDING: ("n:", "q;"), RUNNING: ("r:", "r;"),
              **{status: (f"x:{code}:", f"x:{code};") for status, code in _CODE.items()}}
_TICK_OF_CELL = "CAST(substr(pos, 10, 15) AS INTEGER) * :slots + CAST(substr(pos, 3, 6) AS INTEGER)"
#: an unabsorbed row's position ends with its task's name: counted from the index alone
_FRESH_NAME = "substr(pos, 45)"
_SLOTS_TABLE = f"{TABLE}_slots"
#: pending tasks per (name, due tick): a timeline of one task name without reading its tasks
_NAMED_TABLE = f"{TABLE}_name_ticks"


def _slot_schema(slots: int) -> tuple[str, ...]:
    """Occupied (slot, cycle) cells per slot, kept by triggers on the tick counters, so the
    ring's summary reads at most ``slots`` rows instead of every occupied tick (~500,000 on a
    million tasks due over a week).  A tick counter row exists exactly while its tick has
    pending tasks (:class:`_Counters` deletes it at zero), so its insert and delete are the
    cell's birth and death.  The slot count is fixed when the store is created, hence a
    literal in the trigger."""
    return (
        f'CREATE TABLE IF NOT EXISTS "{_SLOTS_TABLE}" (slot INTEGER PRIMARY KEY, cells INTEGER NOT NULL)',
        f'CREATE TRIGGER IF NOT EXISTS "{TABLE}_cell_added" AFTER INSERT ON "{TABLE}_ticks" BEGIN '
        f'INSERT INTO "{_SLOTS_TABLE}" (slot, cells) VALUES (new.tick % {slots}, 1) '
        "ON CONFLICT (slot) DO UPDATE SET cells = cells + 1; END",
        f'CREATE TRIGGER IF NOT EXISTS "{TABLE}_cell_removed" AFTER DELETE ON "{TABLE}_ticks" BEGIN '
        f'UPDATE "{_SLOTS_TABLE}" SET cells = cells - 1 WHERE slot = old.tick % {slots}; END',
    )


@functools.lru_cache(maxsize=64)
def _fresh_cell(tick: int, slots: int) -> str:
    """How the position of a row added on its own begins: ``n:<slot>:<cycle>:``, then come its
    eta and its task's name (see _absorb).  Cached: tasks added one by one mostly share ticks."""
    return "n:%06d:%015d:" % (tick % slots, tick // slots)


@functools.lru_cache(maxsize=None)
def _insert_rows(n: int) -> str:
    """An INSERT of ``n`` rows (key, value, pos, name): one statement per _CHUNK rows."""
    return f'INSERT INTO "{TABLE}" (key, value, pos, name) VALUES ' + ",".join(["(?,?,?,?)"] * n)


class _ReadOnlyLiveness(Liveness):
    """What a read-only opener may know of liveness: probes, never locks (see locks.probe)."""

    def __init__(self, store: "SqliteDictStore") -> None:
        self._store = store
        self._probe = probe(store.path)

    @property
    def token(self) -> str:
        return f"{os.getpid()}:readonly:0"

    def try_lead(self) -> bool:
        return False

    def resign(self) -> None:
        pass

    def leader(self) -> Optional[str]:
        holder = self._store.role_holder(self._store.now())
        return None if holder is None or self._probe.is_dead(holder) else holder

    def is_dead(self, token: str) -> bool:
        return self._probe.is_dead(token)

    def close(self) -> None:
        self._probe.close()


class _SocketBell(Doorbell):
    """A doorbell that crosses processes: an abstract unix datagram socket per runner.

    Its name is registered in the store (``m:bell:<name>`` -> owner token), so whoever adds a
    task that is due within the horizon can ring every runner; the ticking process forgets
    the names of dead owners.  Linux only (abstract names); elsewhere the in-process bell is
    used and other processes find new work at their next look, within one tick.
    """

    def __init__(self, store: "SqliteDictStore") -> None:
        super().__init__(store)
        self._store: SqliteDictStore = store
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"{store._bell_prefix}{os.urandom(6).hex()}"
        self._sock.bind("\0" + self.name)
        self._sock.setblocking(False)
        try:
            store._register_bell(self.name)
        except BaseException:
            self._sock.close()
            raise

    def ring(self) -> None:
        self._store.ring()

    def poke(self) -> None:
        try:
            self._sock.sendto(b"!", "\0" + self.name)
        except OSError:
            pass

    def wait(self, timeout: Optional[float]) -> bool:
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
        except (OSError, ValueError):       # closed meanwhile
            return False
        if not ready:
            return False
        try:
            while True:
                self._sock.recv(64)
        except (BlockingIOError, OSError):
            pass
        return True

    def close(self) -> None:
        try:
            self._store._unregister_bell(self.name)
        except StoreError:
            log.debug("could not unregister doorbell %s", self.name, exc_info=True)
        self._sock.close()


class _Counters:
    """Deltas of the counter tables gathered during one transaction, written at its end."""

    def __init__(self) -> None:
        self.states: Counter[tuple[str, str]] = Counter()
        self.ticks: Counter[int] = Counter()
        self.named: Counter[tuple[str, int]] = Counter()

    def move(self, old: Optional[tuple[str, str, Optional[int]]],
             new: Optional[tuple[str, str, Optional[int]]]) -> None:
        for item, d in ((old, -1), (new, 1)):
            if item is None:
                continue
            state, name, tick = item
            self.states[(state, name)] += d
            if tick is not None:
                self.ticks[tick] += d
                self.named[(name, tick)] += d

    def flush(self, x: Callable[..., int], many: Callable[..., int]) -> None:
        states = [(s, n, d) for (s, n), d in self.states.items() if d]
        ticks = [(t, d) for t, d in self.ticks.items() if d]
        if states:
            many(f'INSERT INTO "{TABLE}_counts" (state, name, n) VALUES (?, ?, ?) '
                 "ON CONFLICT (state, name) DO UPDATE SET n = n + excluded.n", states)
            x(f'DELETE FROM "{TABLE}_counts" WHERE n <= 0')
        if ticks:
            many(f'INSERT INTO "{TABLE}_ticks" (tick, n) VALUES (?, ?) '
                 "ON CONFLICT (tick) DO UPDATE SET n = n + excluded.n", ticks)
            many(f'DELETE FROM "{TABLE}_ticks" WHERE tick = ? AND n <= 0',
                 [(t,) for t, d in ticks if d < 0])
        named = [(name, t, d) for (name, t), d in self.named.items() if d]
        if named:
            many(f'INSERT INTO "{_NAMED_TABLE}" (name, tick, n) VALUES (?, ?, ?) '
                 "ON CONFLICT (name, tick) DO UPDATE SET n = n + excluded.n", named)
            many(f'DELETE FROM "{_NAMED_TABLE}" WHERE name = ? AND tick = ? AND n <= 0',
                 [(name, t) for name, t, d in named if d < 0])
        self.states.clear()
        self.ticks.clear()
        self.named.clear()


class SqliteDictStore(WheelStore):
    """A :class:`WheelStore` in one SQLite file.  Thread-safe; one instance per process.

    :param path: the store file; created (mode 0600) unless ``readonly``.
    :param readonly: open an existing store for reading only (the CLI's read commands): the
        file is never created, converted or written, nor are files created beside it.
    :param busy_timeout: seconds a write waits for another process's transaction before
        :class:`StoreBusy` is raised.
    """

    def __init__(self, path: "str | os.PathLike[str]", wheel: Optional[Wheel] = None, *,
                 readonly: bool = False, busy_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.location = self.path
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self._clock = clock            # type: ignore[assignment]
        self._lock = threading.RLock()
        self._db: Optional[SqliteDict] = None
        self._pid = -1
        self._bells: tuple[float, list[str]] = (-1e9, [])
        self._horizon_hint: tuple[float, int] = (-1e9, 0)
        self._slot_cells = False       # the per-slot cell counts exist (see _slot_schema)
        self._named_ticks = False      # the per-name tick counters exist
        self._file: Optional[tuple[int, int]] = None   # (dev, ino) of the file opened
        self._gone: Optional[str] = None     # why the file opened is not the store any more
        track(self)
        if not readonly:
            self._check_owners()
        self._check_file()
        self._file = self._identity()
        if not readonly:
            locks_for(self.path).check_store()   # not a file replaced under live processes
        self._open()
        self.wheel = self._set_up(wheel)
        self.liveness: Liveness = (_ReadOnlyLiveness(self) if readonly
                                   else FileLiveness(self.path, self, self.wheel.tick))

    @functools.cached_property
    def _bell_prefix(self) -> str:
        """The start of the names of this store's doorbells (sockets in the abstract
        namespace, one per runner), the same in every process that opens the file.  Only
        runners need it: hashlib (OpenSSL) is imported here, not by the CLI's start-up."""
        import hashlib
        return "timewheel-" + hashlib.sha1(os.path.realpath(self.path).encode()).hexdigest()[:16] + "-"

    # -- opening ----------------------------------------------------------------------------
    def _check_file(self) -> None:
        """Refuse files that are not ours before sqlitedict touches them (it would add a table
        to any SQLite file and switch its journal mode)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.readonly:
                raise StoreError(f"{self.path}: no such file") from None
            self._create_file()
            return
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read ({exc.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise NotAStore(f"{self.path} is a directory, not a timewheel store")
        if not stat.S_ISREG(st.st_mode):
            raise NotAStore(f"{self.path} is not a regular file, so not a timewheel store")
        if st.st_size == 0:
            if self.readonly:
                raise NotAStore(f"{self.path} is empty, not a timewheel store")
            self._make_private()      # an empty file we adopt (`touch tasks.db`) becomes 0600
            return
        if not os.access(self.path, os.R_OK):
            raise StoreError(f"{self.path}: cannot read (permission denied)")
        # Everything below reads the file through SQLite, never through a descriptor of our
        # own: closing one would drop this process's locks on a store it may have open
        # already (see connection.read_header).
        try:
            with CONNECTING:
                con = sqlite3.connect(ro_uri(self.path), uri=True, timeout=self.busy_timeout)
                try:
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    fmt = rows = None
                    if TABLE in tables:
                        fmt = con.execute(f'SELECT value FROM "{TABLE}" WHERE key = ?',
                                          ("m:format",)).fetchone()
                        rows = con.execute(f'SELECT 1 FROM "{TABLE}" LIMIT 1').fetchone()
                finally:
                    con.close()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", None) == "SQLITE_NOTADB":
                raise NotAStore(f"{self.path} is not a timewheel store (not an SQLite file)") from None
            raise NotAStore(f"{self.path} is not a readable timewheel store ({exc})") from None
        ours = fmt is not None
        if self.readonly and not ours:
            raise NotAStore(f"{self.path} is not a timewheel store (no timewheel data in it)")
        # Our table alone, and empty: another process is creating the store right now.
        if not ours and (tables - {TABLE, f"{TABLE}_counts", f"{TABLE}_ticks", _NAMED_TABLE, _SLOTS_TABLE}
                         or rows is not None):
            raise NotAStore(f"{self.path} is an SQLite file but not a timewheel store "
                            f"(tables: {', '.join(sorted(tables))})")
        if ours and self.readonly and fmt[0] == OLD_FORMAT:
            raise NotAStore(f"{self.path} is in the store format of timewheel 0.1 ({OLD_FORMAT}); "
                            "it is converted when an application or a write command "
                            "(timewheel cancel, retry, purge) opens it")

    def _check_owners(self) -> None:
        """A writer refuses a store file, or the -wal and -shm beside it, that another user
        owns (an empty file another user made for us is theirs: they could write pickles into
        it, which our workers would run).  Before anything opens them."""
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                check_owner(path, os.stat(path))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"{path}: cannot read ({exc.strerror})") from None

    def _identity(self) -> tuple[int, int]:
        """(dev, ino) of the store file: what :meth:`_check_still_there` compares with."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read ({exc.strerror})") from None
        return st.st_dev, st.st_ino

    def _create_file(self) -> None:
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

    def _make_private(self) -> None:
        try:
            if os.stat(self.path).st_mode & 0o077:
                os.chmod(self.path, 0o600)
                log.warning("%s was readable by other users; made it private (0600): the store "
                            "holds pickles", self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot make the store private ({exc.strerror})") from None

    def _open(self) -> None:
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                self._db = SqlitedictFile(self.path, self.readonly, self.busy_timeout)
                break
            except sqlite3.OperationalError as exc:
                # Two processes switching a new file to WAL at once: the loser gets "database
                # is locked" at once, without SQLite's busy handler.  Wait like a busy write.
                if isinstance(self._translate(exc), StoreBusy) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
                    continue
                raise self._translate(exc) from None
            except (sqlite3.Error, RuntimeError) as exc:
                raise StoreError(f"{self.path}: cannot open the store ({exc})") from None
        self._pid = os.getpid()

    def _follow_writers(self) -> None:
        """Reopen a read-only store read as immutable once the file has changed.

        A read-only store opened while no process had the file open reads it as immutable
        (connection.ro_uri), which never sees a later write: the web view, started before
        the application, would show that moment for good (issue 19.5).  Once a writer has
        opened the file (a ``-wal`` appeared) or came and went (the file changed), reopen:
        with a ``-wal`` beside it the connection reads through the WAL as any reader does.
        Costs two stat() calls per read while immutable, nothing after.
        """
        old = self._db
        if old is None or self._pid != os.getpid() or not old.conn.outdated():
            return
        self._open()          # (if this raises, the read fails and the next one tries again)
        try:
            old.close()
        except Exception:  # noqa: BLE001 - a read-only connection has nothing to lose
            log.debug("closing %s failed", self.path, exc_info=True)

    def _conn(self) -> Any:
        if self._pid != os.getpid():
            # Forked: an SQLite connection must not cross fork().  Abandon the parent's and
            # open our own.  Never close or even garbage-collect it here: closing may try a
            # checkpoint on the parent's file, and its lock may be held by a parent thread
            # that does not exist in this process (sqlitedict's __del__ would wait forever).
            if self._db is not None:
                abandon(self._db)
            self._db = None
            self._bells = (-1e9, [])
            self._open()
        if self._db is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._db.conn

    def close(self) -> None:
        with self._lock:
            self.liveness.close()
            if self._db is not None and self._pid == os.getpid():
                try:
                    self._db.close()
                except Exception:  # noqa: BLE001 - closing must not raise; nothing is pending
                    log.debug("closing %s failed", self.path, exc_info=True)
            self._db = None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreBusy(f"{self.path} stayed locked by another process for more than "
                             f"{self.busy_timeout:g}s ({text})")
        if "disk is full" in text:
            return StoreError(f"{self.path}: the disk is full ({text}); nothing was written")
        if "disk I/O error" in text:
            # SQLite reports a full disk so when it hits it outside a page write (the -shm
            # index, a new -wal): say which it is, or at least which call failed.
            free = _free_bytes(self.path)
            if free is not None and free < _NEARLY_FULL:
                return StoreError(f"{self.path}: the disk is full ({text}, {free} bytes free); "
                                  "nothing was written")
            name = getattr(exc, "sqlite_errorname", None) or "SQLITE_IOERR"
            return StoreError(f"{self.path}: {text} ({name}); nothing was written")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path}: cannot write the store ({text}): check the "
                              "permissions of the file and its directory")
        return StoreError(f"{self.path}: {text}")

    # -- set-up and migration ---------------------------------------------------------------
    def _set_up(self, wheel: Optional[Wheel]) -> Wheel:
        with self._reading():
            fmt = self._meta("format")
            stored = self._geometry() if fmt is not None else None
        if fmt is None:
            if self.readonly:
                raise NotAStore(f"{self.path} is not a timewheel store (no timewheel data in it)")
            stored = self._initialise(wheel or Wheel())
        elif fmt == OLD_FORMAT and not self.readonly:
            self._migrate()
        elif fmt not in (FORMAT, OLD_FORMAT):
            raise NotAStore(f"{self.path} has store format {fmt!r}; this timewheel reads {FORMAT!r}")
        if wheel is not None and wheel != stored:
            raise StoreMismatch(
                f"{self.path} was created with slots={stored.slots}, tick={stored.tick}; "
                f"cannot open it with slots={wheel.slots}, tick={wheel.tick}")
        self._slot_cells = self._has_table(_SLOTS_TABLE)
        self._named_ticks = self._has_table(_NAMED_TABLE)
        if not (self._slot_cells and self._named_ticks) and not self.readonly:
            self._add_observer_counters(stored)
        return stored

    def _has_table(self, name: str) -> bool:
        with self._reading():
            return bool(self._q("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def _add_observer_counters(self, wheel: Wheel) -> None:
        """Create the per-slot cell counts (see :func:`_slot_schema`) and the per-name tick
        counters, filled from what the store holds: on a new store, a converted 0.1 store, and
        one written before they existed.  (Rows not yet absorbed are counted when absorbed.)"""
        with self._writing():
            if not self._has_table(_SLOTS_TABLE):
                for ddl in _slot_schema(wheel.slots):
                    self._x(ddl)
                self._x(f'INSERT INTO "{_SLOTS_TABLE}" (slot, cells) SELECT tick % ?, count(*) '
                        f'FROM "{TABLE}_ticks" GROUP BY 1', (wheel.slots,))
            if not self._has_table(_NAMED_TABLE):
                self._x(next(ddl for ddl in SCHEMA if _NAMED_TABLE in ddl))
                # Tasks in the wheel carry their tick in their position; the few ready ones
                # (within the horizon) are decoded for theirs.
                self._x(f'INSERT INTO "{_NAMED_TABLE}" (name, tick, n) SELECT coalesce(name, \'\'), '
                        f'{_TICK_OF_CELL}, count(*) FROM "{TABLE}" WHERE pos >= \'p:\' AND pos < \'p;\' '
                        "GROUP BY 1, 2", {"slots": wheel.slots})
                counters = _Counters()
                for blob, name in self._q(f'SELECT {_VALUE}, name FROM "{TABLE}" '
                                          "WHERE pos >= 'q:' AND pos < 'q;'"):
                    try:
                        rec = decode_record(blob)
                    except RecordDecodeError:
                        continue
                    counters.named[(name or "", wheel.due_tick(rec.eta))] += 1
                counters.flush(self._x, self._many)
        self._slot_cells = self._named_ticks = True

    def _geometry(self) -> Wheel:
        try:
            return Wheel(slots=int(self._meta("slots")), tick=float(self._meta("tick")))
        except (TypeError, ValueError) as exc:
            raise NotAStore(f"{self.path}: its wheel geometry is damaged ({exc})") from None

    def _initialise(self, wheel: Wheel) -> Wheel:
        """Write the schema and bookkeeping of a new store; if another process just did,
        return the geometry it chose instead."""
        self._make_private()
        t = wheel.current_tick(self.now())
        with self._writing():
            if self._meta("format") is not None:
                return self._geometry()
            for ddl in SCHEMA[1:]:
                self._x(ddl)
            self._x(f'INSERT INTO "{TABLE}" (key, value) VALUES (?,?),(?,?),(?,?),(?,?)',
                    ("m:slots", wheel.slots, "m:tick", wheel.tick, "m:horizon", t, "m:format", FORMAT))
        log.info("created store %s (slots=%d, tick=%gs)", self.path, wheel.slots, wheel.tick)
        return wheel

    def _migrate(self) -> None:
        """timewheel/1 -> /2, in one transaction: every ``t:`` record gets its ``pos`` and
        ``name``, the index rows of 0.1 go, the counters are built."""
        with self._writing():
            if self._meta("format") != OLD_FORMAT:
                return                      # another process converted it meanwhile
            columns = {r[1] for r in self._q(f'PRAGMA table_info("{TABLE}")')}
            for col in ("pos", "name"):
                if col not in columns:
                    self._x(f'ALTER TABLE "{TABLE}" ADD COLUMN {col} TEXT')
            for ddl in SCHEMA[1:]:
                self._x(ddl)
            wheel = self._geometry()
            horizon = int(self._meta("horizon"))
            counters = _Counters()
            n = 0
            after = "t:"
            while True:
                rows = self._q(f'SELECT key, {_VALUE} FROM "{TABLE}" WHERE key > ? AND key < ? '
                               "ORDER BY key LIMIT 1000", (after, "t;"))
                if not rows:
                    break
                updates = []
                for key, blob in rows:
                    try:
                        rec = decode_record(blob)
                    except RecordDecodeError:
                        updates.append((blob, "b:", None, key))
                        counters.move(None, (BROKEN, "", None))
                        continue
                    pos = self._pos(rec, horizon, wheel)
                    updates.append((encode_record(rec), pos, rec.name, key))
                    counters.move(None, self._state(pos, rec.name, rec, wheel))
                    n += 1
                self._many(_SET, updates)
                after = rows[-1][0]
            self._x(f'DELETE FROM "{TABLE}" WHERE key < \'m:\' OR (key > \'m;\' AND key < \'t:\') '
                    "OR key > 't;'")
            self._x(f'DELETE FROM "{TABLE}" WHERE key = \'m:done\'')
            counters.flush(self._x, self._many)
            self._upsert_meta(format=FORMAT)
        log.warning("converted %s from the store format of timewheel 0.1 (%d tasks)", self.path, n)

    # -- statements -------------------------------------------------------------------------
    def _x(self, sql: str, params: Any = ()) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return self._conn().run(sql, params)

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self._conn().executemany(sql, rows)

    def _q(self, sql: str, params: Any = ()) -> list[tuple]:
        """Run a statement and wait for its rows."""
        return list(self._conn().select(sql, params))

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            if self.readonly:
                self._follow_writers()
            try:
                yield
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            except (ValueError, OverflowError) as exc:
                if isinstance(exc, RecordDecodeError):      # one record: the caller's to report
                    raise
                # a position or a counter that no write of ours makes: a tampered file
                raise StoreError(f"{self.path}: the store's data is damaged ({exc})") from None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, committed when the block ends, rolled back on any error.

        BEGIN IMMEDIATE takes the write lock up front, so a read-modify-write (a claim)
        cannot interleave with another process's.
        """
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        self._check_still_there()
        with self._lock:
            try:
                self._x("BEGIN IMMEDIATE")
                yield
                self._x("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from None
                raise

    def _check_still_there(self) -> None:
        """Refuse to write once the path no longer names the file this process has open: it
        was deleted, moved or replaced (a backup restored) under the running processes.
        Written to, the old file loses what it gets when the last process closes it, and a
        new one beside it would never see it.  One ``stat`` (~1 us) per write transaction."""
        if self._gone is None:
            try:
                st = os.stat(self.path)
                if self._file is None or (st.st_dev, st.st_ino) == self._file:
                    return
                what = "replaced by another file (a backup restored? a file moved over it?)"
            except FileNotFoundError:
                what = "deleted or moved away"
            except OSError:
                return          # (cannot look: the write itself will say what is wrong)
            self._gone = (f"{self.path} was {what} while this process had it open: this process "
                          "writes nothing more to it (tasks added meanwhile would be lost) and "
                          "runs no more tasks -- restart every process that uses the store")
        raise StoreError(self._gone)     # (a started wheel logs it once: see Boss._failing)

    def _rollback(self) -> None:
        try:
            self._x("ROLLBACK")
        except sqlite3.Error:
            pass   # "no transaction is active": BEGIN itself failed

    def _meta(self, name: str) -> Any:
        rows = self._q(f'SELECT value FROM "{TABLE}" WHERE key = ?', ("m:" + name,))
        return rows[0][0] if rows else None

    def _upsert_meta(self, **values: Any) -> None:
        self._many(f'INSERT OR REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)',
                   [("m:" + k, v) for k, v in values.items()])

    def _horizon(self) -> int:
        value = self._meta("horizon")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: its bookkeeping is damaged (horizon {value!r})") from None

    def _fetch(self, keys: Sequence[str]) -> dict[str, tuple[Any, Optional[str], Optional[str]]]:
        """key -> (value, pos, name) for the keys that exist."""
        out: dict[str, tuple[Any, Optional[str], Optional[str]]] = {}
        for i in range(0, len(keys), _CHUNK):
            part = list(keys[i:i + _CHUNK])
            for key, value, pos, name in self._q(
                    f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" WHERE key IN '
                    f'({",".join("?" * len(part))})', part):
                out[key] = (value, pos, name)
        return out

    # -- positions and counters -------------------------------------------------------------
    def _pos(self, rec: TaskRecord, horizon: int, wheel: Optional[Wheel] = None) -> str:
        """Where ``rec`` belongs, given the horizon (a counted position, never ``n:``)."""
        w = wheel or self.wheel
        if rec.status == PENDING:
            t = w.due_tick(rec.eta)
            if t <= horizon:
                return f"q:{eta_us(rec.eta):018d}"
            return f"p:{t % w.slots:06d}:{t // w.slots:015d}:{eta_us(rec.eta):018d}"
        if rec.status == RUNNING:
            return "r:" + (rec.owner or "")
        return f"x:{_CODE[rec.status]}:{finished_ms(rec.finished):015d}"

    def _state(self, pos: Optional[str], name: Optional[str], rec: Optional[TaskRecord],
               wheel: Optional[Wheel] = None) -> Optional[tuple[str, str, Optional[int]]]:
        """(state, name, due tick if pending) that the counters hold for a row at ``pos``;
        None for an uncounted (``n:``) row."""
        if not pos or pos[0] == "n":
            return None
        kind = pos[0]
        name = name or ""
        if kind in "pq":
            tick = (wheel or self.wheel).due_tick(rec.eta) if rec is not None else None
            return PENDING, name, tick
        if kind == "r":
            return RUNNING, name, None
        if kind == "x":
            return _STATUS_OF_CODE[pos[2]], name, None
        return BROKEN, name, None

    def _absorb(self) -> None:
        """Count the rows added on their own since the last transaction and move them to the
        wheel or, if their tick is within the horizon, to ready.  Three statements."""
        if not self._q(f'SELECT 1 FROM "{TABLE}" WHERE {_FRESH} LIMIT 1'):
            return
        args = {"slots": self.wheel.slots, "horizon": self._horizon()}
        self._x(f'INSERT INTO "{TABLE}_counts" (state, name, n) SELECT \'pending\', '
                f'{_FRESH_NAME}, count(*) FROM "{TABLE}" WHERE {_FRESH} GROUP BY 2 '
                "ON CONFLICT (state, name) DO UPDATE SET n = n + excluded.n")
        self._x(f'INSERT INTO "{TABLE}_ticks" (tick, n) SELECT {_TICK_OF_CELL}, count(*) '
                f'FROM "{TABLE}" WHERE {_FRESH} GROUP BY 1 '
                "ON CONFLICT (tick) DO UPDATE SET n = n + excluded.n", args)
        self._x(f'INSERT INTO "{_NAMED_TABLE}" (name, tick, n) SELECT {_FRESH_NAME}, {_TICK_OF_CELL}, '
                f'count(*) FROM "{TABLE}" WHERE {_FRESH} GROUP BY 1, 2 '
                "ON CONFLICT (name, tick) DO UPDATE SET n = n + excluded.n", args)
        self._x(f'UPDATE "{TABLE}" SET pos = CASE WHEN {_TICK_OF_CELL} <= :horizon '
                "THEN 'q:' || substr(pos, 26, 18) ELSE 'p:' || substr(pos, 3, 41) END "
                f"WHERE {_FRESH}", args)

    # -- tasks ------------------------------------------------------------------------------
    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        if not records:
            return []
        if len(records) == 1 and existing == "fail":
            # The hot path of delay(): one statement, one row, uncounted until absorbed.
            rec = records[0]
            t = self.wheel.due_tick(rec.eta)
            row = ("t:" + rec.id, bytearray(encode_record(rec)),   # a bytearray: see _insert
                   "%s%018d:%s" % (_fresh_cell(t, self.wheel.slots), eta_us(rec.eta), rec.name), rec.name)
            self._check_still_there()
            with self._lock:
                try:
                    self._conn().run(_ADD, row)
                except sqlite3.IntegrityError:
                    raise DuplicateTask(f"task id {rec.id!r} already exists; nothing was added") from None
                except sqlite3.Error as exc:
                    raise self._translate(exc) from None
            self._ring_if_tick_near(t)
            return [rec]
        with self._writing():
            out, earliest = self._add_in_transaction(records, existing)
        self._ring_if_tick_near(earliest)
        return out

    def _add_in_transaction(self, records: Sequence[TaskRecord], existing: str
                            ) -> tuple[list[TaskRecord], Optional[int]]:
        """What is stored for each record, and the earliest tick of a task it made pending."""
        horizon = self._horizon()
        counters = _Counters()
        if existing == "fail":
            ticks = self._insert(records, horizon, counters)
            counters.flush(self._x, self._many)
            return list(records), min(ticks)
        stored = self._fetch(["t:" + r.id for r in records])
        inserts: list[tuple[str, bytes, str, str]] = []
        updates: list[tuple[bytes, str, str, str]] = []
        out: list[TaskRecord] = []
        seen: dict[str, TaskRecord] = {}
        for rec in records:
            key = "t:" + rec.id
            if rec.id in seen or key in stored:
                old, old_pos, old_name = self._current(seen.get(rec.id), stored.get(key))
                if existing == "fail":
                    raise DuplicateTask(f"task id {rec.id!r} already exists; nothing was added")
                if existing == "replace" and old is not None and old.status == RUNNING:
                    raise DuplicateTask(f"task {rec.id!r} is running and cannot be replaced; "
                                        "nothing was added")
                finished = old is None or old.status in TERMINAL
                if old is not None and (existing == "keep" or (existing == "reuse" and not finished)):
                    out.append(old)
                    continue
                new = rec._replace(rev=(old.rev + 1) if old is not None else 0)
                pos = self._pos(new, horizon)
                counters.move(self._state(old_pos, old_name, old), self._state(pos, new.name, new))
                updates.append((encode_record(new), pos, new.name, key))
                stored[key] = (None, pos, new.name)
                seen[rec.id] = new
                out.append(new)
                continue
            inserts.append(rec)
            seen[rec.id] = rec
            out.append(rec)
        self._insert(inserts, horizon, counters)
        self._many(_SET, updates)
        counters.flush(self._x, self._many)
        earliest = min((r.eta for r in out if r.status == PENDING), default=None)
        return out, None if earliest is None else self.wheel.due_tick(earliest)

    def _insert(self, records: Sequence[TaskRecord], horizon: int, counters: "_Counters") -> Iterable[int]:
        """INSERT new pending records, counted; the batch path of delay(), kept tight.

        Per task it pickles the record and formats its eta; what depends on the tick (the
        wheel cell in the position) is worked out once per tick, as the tasks of a batch
        mostly share ticks, and the counters are summed per name and tick before they go
        into the _Counters.  Rows go out _CHUNK at a time in multi-row INSERTs, which SQLite
        runs faster than executemany() of the same rows.
        """
        wheel = self.wheel
        slots = wheel.slots
        cells: dict[tuple[str, int], int] = defaultdict(int)     # tasks per (name, due tick)
        lo = hi = 0.0      # the interval (lo, hi] of the last task's tick, as due_tick() defines it
        t, cell = 0, ""
        try:
            for start in range(0, len(records), _CHUNK):
                params: list[Any] = []
                for rec in records[start:start + _CHUNK]:
                    eta = rec.eta
                    if not lo < eta <= hi:
                        t = wheel.due_tick(eta)
                        lo, hi = wheel.tick_end(t - 1), wheel.tick_end(t)
                        cell = "q:" if t <= horizon else "p:%06d:%015d:" % (t % slots, t // slots)
                    # A bytearray: the sqlite3 module passes a bytes parameter through its
                    # adaptation protocol (a registry lookup, then attribute lookups that raise
                    # and clear an AttributeError: 0.25-0.6 us on CPython 3.9-3.13) but binds a
                    # bytearray at once.  Both are stored as the same BLOB, read back as bytes.
                    params += ("t:" + rec.id, bytearray(encode_record(rec)),
                               "%s%018d" % (cell, eta_us(eta)), rec.name)
                    cells[(rec.name, t)] += 1
                self._x(_insert_rows(len(params) // 4), params)
        except sqlite3.IntegrityError:
            raise DuplicateTask("a task id is given twice or already exists; nothing was added") from None
        for (name, t), n in cells.items():
            counters.states[(PENDING, name)] += n
            counters.ticks[t] += n
            counters.named[(name, t)] += n
        return {t for _, t in cells}

    def _current(self, planned: Optional[TaskRecord], row: Optional[tuple]) -> tuple:
        """(record or None if broken, pos, name) of an id met again during an add."""
        if planned is not None:
            return planned, self._pos(planned, self._horizon()), planned.name
        value, pos, name = row
        try:
            return decode_record(value), pos, name
        except RecordDecodeError:
            return None, pos, name

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self._reading():
            rows = self._q(f'SELECT {_VALUE} FROM "{TABLE}" WHERE key = ?', ("t:" + task_id,))
        return decode_record(rows[0][0]) if rows else None

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        if not changes:
            return []
        with self._writing():
            out = self._swap_in_transaction(changes)
        self._ring_if_near(min((r.eta for r in out if r is not None and r.status == PENDING), default=None))
        return out

    def _swap_in_transaction(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]
                             ) -> list[Optional[TaskRecord]]:
        out: list[Optional[TaskRecord]] = []
        rows = self._fetch(["t:" + old.id for old, _ in changes])
        horizon = self._horizon()
        counters = _Counters()
        updates = []
        for old, new in changes:
            key = "t:" + old.id
            row = rows.get(key)
            cur = None
            if row is not None and new.id == old.id:
                try:
                    cur = decode_record(row[0])
                except RecordDecodeError:
                    cur = None
            if cur is None or cur.rev != old.rev:
                out.append(None)
                continue
            stored = new._replace(rev=old.rev + 1)
            pos = self._pos(stored, horizon)
            counters.move(self._state(row[1], row[2], cur), self._state(pos, stored.name, stored))
            updates.append((encode_record(stored), pos, stored.name, key))
            rows[key] = (updates[-1][0], pos, stored.name)
            out.append(stored)
        self._many(_SET, updates)
        counters.flush(self._x, self._many)
        return out

    # -- workers ----------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0) -> Claimed:
        bound = f"q:{int(now * 1e6):018d}"
        with self._reading():
            fresh, head = self._q(
                f'SELECT (SELECT 1 FROM "{TABLE}" WHERE {_FRESH} LIMIT 1), '
                f'(SELECT pos FROM "{TABLE}" WHERE pos >= \'q:\' AND pos < \'q;\' ORDER BY pos LIMIT 1)')[0]
        # Rows added on their own are not in the ready index until absorbed: with any, even a
        # probe (limit=0) absorbs them, or its next_eta would miss them.
        if not fresh and (limit + queued <= 0 or head is None or head > bound):
            return Claimed([], None if head is None else int(head[2:]) / 1e6)
        with self._writing():
            return self._claim_in_transaction(owner, now, limit, queued)

    def record_and_claim(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], owner: str, now: float,
                         limit: int, queued: int = 0) -> tuple[list[Optional[TaskRecord]], Claimed]:
        """:meth:`swap` then :meth:`claim`, in one transaction: a worker's round costs one."""
        with self._writing():
            out = self._swap_in_transaction(changes) if changes else []
            got = self._claim_in_transaction(owner, now, limit, queued)
        self._ring_if_near(min((r.eta for r in out if r is not None and r.status == PENDING), default=None))
        return out, got

    def _claim_in_transaction(self, owner: str, now: float, limit: int, queued: int) -> Claimed:
        bound = f"q:{int(now * 1e6):018d}"
        taken: list[TaskRecord] = []
        self._absorb()
        counters = _Counters()
        updates = []
        for key, blob, pos, name in self._q(
                f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" WHERE pos >= \'q:\' AND pos <= ? '
                "ORDER BY pos LIMIT ?", (bound, limit + queued)):
            try:
                rec = decode_record(blob)
            except RecordDecodeError as exc:
                # Never dropped, never retried in a loop: off the wheel, kept, reported.
                log.error("task %s: %s; left in the store as broken", key[2:], exc)
                updates.append((blob, "b:", name, key))
                counters.move((PENDING, name or "", self.wheel.due_tick(int(pos[2:]) / 1e6)),
                              (BROKEN, name or "", None))
                continue
            if rec.eta > now:          # the key's microseconds rounded up past a float
                continue
            new = start_run(rec, owner, now, queued=len(taken) >= limit)._replace(rev=rec.rev + 1)
            updates.append((encode_record(new), "r:" + owner, new.name, key))
            counters.move((PENDING, rec.name, self.wheel.due_tick(rec.eta)), (RUNNING, rec.name, None))
            taken.append(new)
        self._many(_SET, updates)
        counters.flush(self._x, self._many)
        head_rows = self._q(f'SELECT pos FROM "{TABLE}" WHERE pos >= \'q:\' AND pos < \'q;\' '
                            "ORDER BY pos LIMIT 1")
        self._horizon_hint = (time.monotonic(), self._horizon())
        return Claimed(taken, int(head_rows[0][0][2:]) / 1e6 if head_rows else None)

    # -- the ticking process ----------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        moved = 0
        with self._writing():
            holder = self._role_holder_in_transaction(self.now())
            if holder is not None and holder != leader:
                return Advanced(self._horizon(), 0, True, led=False)
            self._absorb()
            horizon = reached = self._horizon()
            complete = True
            while reached < through and complete:
                ticks = [t for (t,) in self._q(
                    f'SELECT tick FROM "{TABLE}_ticks" WHERE tick > ? AND tick <= ? ORDER BY tick LIMIT 1000',
                    (reached, through))]
                if not ticks:
                    reached = through
                    break
                for t in ticks:
                    lo = f"p:{t % self.wheel.slots:06d}:{t // self.wheel.slots:015d}:"
                    if moved < limit:
                        moved += self._x(
                            f'UPDATE "{TABLE}" SET pos = \'q:\' || substr(pos, 26) WHERE key IN '
                            f'(SELECT key FROM "{TABLE}" WHERE pos >= ? AND pos < ? LIMIT ?)',
                            (lo, lo[:-1] + ";", limit - moved))
                    if moved >= limit and self._q(f'SELECT 1 FROM "{TABLE}" WHERE pos >= ? AND pos < ? '
                                                  "LIMIT 1", (lo, lo[:-1] + ";")):
                        complete = False        # the page is full: the rest of this cell next time
                        reached = t - 1
                        break
                    reached = t
            if reached > horizon:
                self._upsert_meta(horizon=reached)
            self._upsert_meta(leader=leader, advanced=self.now())
            self._forget_dead_bells()
        self._horizon_hint = (time.monotonic(), max(horizon, reached))
        if moved:
            self.ring()
        return Advanced(max(horizon, reached), moved, reached >= through)

    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        with self._reading():
            owners = [o for (o,) in self._q(
                f'SELECT DISTINCT substr(pos, 3) FROM "{TABLE}" WHERE pos >= \'r:\' AND pos < \'r;\'')]
        out: list[TaskRecord] = []
        for owner in owners:
            if len(out) >= limit or not self.liveness.is_dead(owner):
                continue
            with self._reading():
                rows = self._q(f'SELECT key, {_VALUE} FROM "{TABLE}" WHERE pos = ? LIMIT ?',
                               ("r:" + owner, limit - len(out)))
            for key, blob in rows:
                try:
                    out.append(decode_record(blob))
                except RecordDecodeError as exc:
                    log.error("task %s: %s; its process died; left in the store as broken", key[2:], exc)
                    self._mark_broken(key, RUNNING)
        return out

    def _mark_broken(self, key: str, state: str) -> None:
        with self._writing():
            rows = self._q(f'SELECT name FROM "{TABLE}" WHERE key = ?', (key,))
            if not rows:
                return
            counters = _Counters()
            counters.move((state, rows[0][0] or "", None), (BROKEN, rows[0][0] or "", None))
            self._x(f'UPDATE "{TABLE}" SET pos = \'b:\' WHERE key = ?', (key,))
            counters.flush(self._x, self._many)

    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        wanted = purge_statuses(statuses)
        bound = f"{finished_ms(finished_before):015d}"
        n = 0
        with self._writing():
            counters = _Counters()
            for status in wanted:
                prefix = f"x:{_CODE[status]}:"
                rows = self._q(f'SELECT key, name FROM "{TABLE}" WHERE pos >= ? AND pos < ? '
                               "ORDER BY pos LIMIT ?", (prefix, prefix + bound, limit - n))
                self._many(f'DELETE FROM "{TABLE}" WHERE key = ?', [(k,) for k, _ in rows])
                for _, name in rows:
                    counters.move((status, name or "", None), None)
                n += len(rows)
                if n >= limit:
                    break
            counters.flush(self._x, self._many)
        return n

    # -- the ticking role (a lease in the metadata: see locks.FileLiveness) ------------------
    def take_role(self, token: str, now: float, ttl: float, is_dead: Callable[[str], bool]) -> bool:
        def free(holder: Optional[str]) -> bool:
            return holder is None or holder == token or is_dead(holder)

        with self._reading():                  # the common case, a look without the write lock
            if not free(self._role_holder_in_transaction(now)):
                return False
        with self._writing():
            if not free(self._role_holder_in_transaction(now)):
                return False
            self._upsert_meta(leader=token, lease=now + ttl)
        return True

    def drop_role(self, token: str) -> None:
        with self._writing():
            if self._meta("leader") == token:
                self._upsert_meta(lease=0.0)

    def role_holder(self, now: float) -> Optional[str]:
        with self._reading():
            return self._role_holder_in_transaction(now)

    def _role_holder_in_transaction(self, now: float) -> Optional[str]:
        rows = dict(self._q(f'SELECT key, value FROM "{TABLE}" WHERE key IN (\'m:leader\', \'m:lease\')'))
        holder, until = rows.get("m:leader"), rows.get("m:lease")
        if not isinstance(holder, str) or not isinstance(until, (int, float)) or until <= now:
            return None
        return holder

    # -- observers --------------------------------------------------------------------------
    def state(self) -> StoreState:
        with self._reading():
            rows = dict(self._q(f'SELECT key, value FROM "{TABLE}" WHERE key IN '
                                "('m:horizon', 'm:leader', 'm:advanced')"))
        try:
            horizon = int(rows["m:horizon"])
            advanced = rows.get("m:advanced")
            advanced = None if advanced is None else float(advanced)
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{self.path}: its bookkeeping is damaged (horizon "
                             f"{rows.get('m:horizon')!r})") from None
        leader = rows.get("m:leader")
        return StoreState(horizon, leader if isinstance(leader, str) else None, advanced)

    def counts(self) -> dict[tuple[str, str], int]:
        with self._reading():
            out = {(s, n): c for s, n, c in self._q(
                f'SELECT state, name, n FROM "{TABLE}_counts" WHERE n > 0')}
            for name, c in self._q(f'SELECT {_FRESH_NAME}, count(*) FROM "{TABLE}" '
                                   f"WHERE {_FRESH} GROUP BY 1"):
                out[(PENDING, name)] = out.get((PENDING, name), 0) + c
        return out

    # The rows not yet absorbed are counted here in SQL, grouped by tick, never pulled into
    # Python one by one: a store that took many single adds while no worker ran holds many.
    _FRESH_TICKS = f'SELECT {_TICK_OF_CELL} AS tick FROM "{TABLE}" WHERE {_FRESH}'

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        args = {"lo": -1 if start is None else start, "hi": 2 ** 62 if stop is None else stop,
                "limit": -1 if limit is None else limit, "slots": self.wheel.slots}
        # The first ``limit`` ticks of the two sources together are among the first ``limit``
        # of each: two range reads that stop early, merged here (a GROUP BY over their UNION
        # read every counter first: 120 ms for the first 10 on a million tasks).
        with self._reading():
            merged = Counter(dict(self._q(
                f'SELECT tick, n FROM "{TABLE}_ticks" WHERE tick >= :lo AND tick < :hi AND n > 0 '
                "ORDER BY tick LIMIT :limit", args)))
            merged.update(dict(self._q(
                f"SELECT tick, count(*) FROM ({self._FRESH_TICKS}) WHERE tick >= :lo AND tick < :hi "
                "GROUP BY tick ORDER BY tick LIMIT :limit", args)))
            out = sorted((int(t), int(n)) for t, n in merged.items())   # damaged counters: StoreError
        return out if limit is None else out[:limit]

    def histogram(self, start: int, stop: int, bucket: int, *, name: Optional[str] = None) -> list[int]:
        if name is not None and not self._named_ticks:   # a read-only open of an older store
            return super().histogram(start, stop, bucket, name=name)
        out = [0] * max(0, -(-(stop - start) // bucket))
        args = {"start": start, "stop": stop, "bucket": bucket, "slots": self.wheel.slots, "name": name}
        if name is None:
            counted = f'SELECT tick, n FROM "{TABLE}_ticks"'
            fresh = self._FRESH_TICKS
        else:
            counted = f'SELECT tick, n FROM "{_NAMED_TABLE}" WHERE name = :name'
            fresh = f"{self._FRESH_TICKS} AND {_FRESH_NAME} = :name"
        with self._reading():
            rows = self._q("SELECT (tick - :start) / :bucket, sum(n) FROM "
                           f"({counted} UNION ALL SELECT tick, 1 FROM ({fresh})) "
                           "WHERE tick >= :start AND tick < :stop GROUP BY 1", args)
        for i, n in rows:
            out[int(i)] += int(n)
        return out

    def wheel_stats(self) -> tuple[int, int]:
        args = {"slots": self.wheel.slots}
        with self._reading():
            if not self._slot_cells:      # a read-only open of a store written before them
                cells, slots = self._q(
                    f'SELECT count(*), count(DISTINCT tick % :slots) FROM (SELECT tick FROM '
                    f'"{TABLE}_ticks" WHERE n > 0 UNION SELECT tick FROM ({self._FRESH_TICKS}))', args)[0]
                return int(cells), int(slots)
            # Counted cells from the counters (a tick row exists only while n > 0), plus the
            # ticks of rows not yet absorbed that no counter holds yet.
            cells, slots = self._q(
                f"WITH fresh AS (SELECT DISTINCT tick FROM ({self._FRESH_TICKS}) "
                f'WHERE tick NOT IN (SELECT tick FROM "{TABLE}_ticks")) '
                f'SELECT (SELECT count(*) FROM "{TABLE}_ticks") + (SELECT count(*) FROM fresh), '
                f'(SELECT count(*) FROM (SELECT slot FROM "{_SLOTS_TABLE}" WHERE cells > 0 '
                "UNION SELECT tick % :slots FROM fresh))", args)[0]
        return int(cells), int(slots)

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        check_listable(status)
        if limit is not None and limit <= 0:
            return []
        with self._reading():
            if status == BROKEN:
                lo = "t:" + (id_prefix or "")
                hi = lo + "\U0010ffff" if id_prefix else "t;"
                rows = self._q(f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" WHERE pos = \'b:\' '
                               "AND key >= ? AND key < ? " + ("AND name = ? " if name else "")
                               + "ORDER BY key LIMIT ?",
                               (lo, hi) + ((name,) if name else ()) + (-1 if limit is None else limit,))
                return [_broken(key, blob, rname) for key, blob, _, rname in rows
                        if after is None or key > "t:" + after.id]
            if id_prefix:
                # The primary key's range of those ids, in key order, the status's positions
                # filtered on the way: never the whole status (a prefix is anyone's input).
                lo, hi = "t:" + id_prefix, "t:" + id_prefix + "\U0010ffff"
                if after is not None:
                    lo = max(lo, "t:" + after.id + "\0")
                rows = self._q(f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" NOT INDEXED '
                               "WHERE key >= ? AND key < ? AND pos >= ? AND pos < ?"
                               + (" AND name = ?" if name else "") + " ORDER BY key LIMIT ?",
                               [lo, hi, *_POS_RANGE[status]] + ([name] if name else [])
                               + [-1 if limit is None else limit])
                return self._records(rows, status)
            if status == PENDING:
                return self._pending(name, after, limit)
            if status == RUNNING:
                rows = self._q(f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" WHERE pos >= \'r:\' '
                               "AND pos < 'r;'" + (" AND name = ?" if name else ""),
                               (name,) if name else ())
                return page(self._records(rows, status), status, after, limit)
            prefix = f"x:{_CODE[status]}:"
            sql = (f'SELECT key, {_VALUE}, pos, name FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                   + (" AND name = ?" if name else ""))
            params: list[Any] = [prefix, prefix[:-1] + ";"] + ([name] if name else [])
            if after is not None:
                mark = f"{prefix}{finished_ms(after.finished):015d}"
                sql += " AND (pos < ? OR (pos = ? AND key < ?))"
                params += [mark, mark, "t:" + after.id]
            rows = self._q(sql + " ORDER BY pos DESC, key DESC LIMIT ?",
                           params + [-1 if limit is None else limit])
            return self._records(rows, status)

    def _records(self, rows: Iterable[tuple], status: str) -> list[TaskRecord]:
        """Decode (key, value, pos[, name]) rows of ``status``.  An undecodable row of a
        running or finished task comes as a placeholder in its place (nobody else would ever
        notice it); a pending one is skipped: the claim that meets it marks it broken."""
        out = []
        for key, blob, pos, *name in rows:
            state = self._state(pos, None, None)
            if (state is None and status != PENDING) or (state is not None and state[0] != status):
                continue
            try:
                out.append(decode_record(blob))
            except RecordDecodeError:
                if status != PENDING:
                    out.append(_broken(key, blob, name[0] if name else None, pos))
        return out

    def _pending(self, name: Optional[str], after: Optional[TaskRecord],
                 limit: Optional[int]) -> list[TaskRecord]:
        """Pending tasks in due order: the ready ones, then the wheel's cells tick by tick
        (from the tick counters), merged with the rows not yet absorbed."""
        want = None if limit is None else limit
        mark = None if after is None else (eta_us(after.eta), after.id)
        only = " AND name = ?" if name else ""
        named = [name] if name else []
        out: list[TaskRecord] = []

        def keep(rows: Iterable[tuple]) -> bool:
            for rec in self._records(rows, PENDING):
                if mark is None or (eta_us(rec.eta), rec.id) > mark:
                    out.append(rec)
            return want is not None and len(out) >= want

        # The rows not yet absorbed: ordered and cut by the eta in their position, read from
        # the index alone, and only the records that can be shown are fetched and decoded.
        after_mark = "" if mark is None else (" AND (substr(pos, 26, 18) > ? OR "
                                              "(substr(pos, 26, 18) = ? AND key > ?))")
        marked = [] if mark is None else [f"{mark[0]:018d}", f"{mark[0]:018d}", "t:" + mark[1]]
        keys = [k for (k,) in self._q(
            f'SELECT key FROM "{TABLE}" WHERE {_FRESH}' + (f" AND {_FRESH_NAME} = ?" if name else "")
            + f"{after_mark} ORDER BY substr(pos, 26, 18), key" + ("" if want is None else " LIMIT ?"),
            named + marked + ([] if want is None else [want]))]
        rows = self._fetch(keys)
        fresh = self._records([(k, rows[k][0], rows[k][1]) for k in keys if k in rows], PENDING)
        start = "q:" if mark is None else f"q:{mark[0]:018d}"
        if not keep(self._q(f'SELECT key, {_VALUE}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < \'q;\''
                            f"{only} ORDER BY pos, key" + ("" if want is None else " LIMIT ?"),
                            [start] + named + ([] if want is None else [want + 1]))):
            first = self._horizon() + 1
            if mark is not None:
                first = max(first, self.wheel.due_tick(mark[0] / 1e6))
            while True:
                ticks = [t for (t,) in self._q(f'SELECT tick FROM "{TABLE}_ticks" WHERE tick >= ? AND n > 0 '
                                               "ORDER BY tick LIMIT 256", (first,))]
                if not ticks:
                    break
                done = False
                for t in ticks:
                    lo = f"p:{t % self.wheel.slots:06d}:{t // self.wheel.slots:015d}:"
                    left = [] if want is None else [want - len(out) + 1]
                    if keep(self._q(f'SELECT key, {_VALUE}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                                    f"{only} ORDER BY pos, key" + (" LIMIT ?" if left else ""),
                                    [lo, lo[:-1] + ";"] + named + left)):
                        done = True
                        break
                if done:
                    break
                first = ticks[-1] + 1
        merged = sorted(out + [r for r in fresh if mark is None or (eta_us(r.eta), r.id) > mark],
                        key=lambda r: (eta_us(r.eta), r.id))
        return merged[:want]

    # -- the doorbell -----------------------------------------------------------------------
    def doorbell(self) -> Doorbell:
        if sys.platform != "linux" or self.readonly:
            return Doorbell()
        return _SocketBell(self)

    def _register_bell(self, name: str) -> None:
        with self._writing():
            self._upsert_meta(**{"bell:" + name: self.liveness.token})
        self._bells = (-1e9, [])

    def _unregister_bell(self, name: str) -> None:
        if self._db is None:
            return
        with self._writing():
            self._x(f'DELETE FROM "{TABLE}" WHERE key = ?', ("m:bell:" + name,))

    def _forget_dead_bells(self) -> None:
        rows = self._q(f'SELECT key, value FROM "{TABLE}" WHERE key >= \'m:bell:\' AND key < \'m:bell;\'')
        dead = [(k,) for k, owner in rows if not isinstance(owner, str) or self.liveness.is_dead(owner)]
        self._many(f'DELETE FROM "{TABLE}" WHERE key = ?', dead)

    def ring(self) -> None:
        """Wake every runner of this store, in any process on this host."""
        if sys.platform != "linux":
            return
        at, names = self._bells
        if time.monotonic() - at > 1.0:
            try:
                with self._reading():
                    names = [k[7:] for (k,) in self._q(
                        f'SELECT key FROM "{TABLE}" WHERE key >= \'m:bell:\' AND key < \'m:bell;\'')]
            except StoreError:
                return
            self._bells = (time.monotonic(), names)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for name in names:
                try:
                    s.sendto(b"!", "\0" + name)
                except OSError:          # gone, or its queue is full: it will look anyway
                    pass

    def _ring_if_near(self, eta: Optional[float]) -> None:
        """Ring if a task just became pending (the earliest at ``eta``) in a tick that is, or
        is about to be, ready."""
        if eta is not None:
            self._ring_if_tick_near(self.wheel.due_tick(eta))

    def _ring_if_tick_near(self, tick: Optional[int]) -> None:
        """:meth:`_ring_if_near` for a caller that has the earliest task's tick already."""
        if tick is None:
            return
        at, horizon = self._horizon_hint
        if time.monotonic() - at > 1.0:
            try:
                horizon = self.state().horizon
            except StoreError:
                return
            self._horizon_hint = (time.monotonic(), horizon)
        # Two ticks of slack: the hint may be a tick old, and the ticker about to advance.
        if tick <= horizon + 2:
            self.ring()

    # -- for the CLI ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Journal mode and file sizes, for ``timewheel inspect``."""
        with self._reading():
            mode = self._q("PRAGMA journal_mode")[0][0]
            immutable = self._conn().immutable
        if immutable:
            # an immutable connection (see connection.ro_uri) says "delete" whatever the file
            # is in; the file header says what it is: read/write versions 2 mean WAL
            header = read_header(self.path)
            if header is not None and header[18:20] == b"\x02\x02":
                mode = "wal"
        wal = self.path + "-wal"
        return {"path": self.path, "journal_mode": mode, "size_bytes": os.path.getsize(self.path),
                "wal_bytes": os.path.getsize(wal) if os.path.exists(wal) else 0,
                "slots": self.wheel.slots, "tick": self.wheel.tick}


_NEARLY_FULL = 1 << 20        #: bytes free below which an I/O error is taken for a full disk


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _broken(key: str, blob: Any, name: Optional[str], pos: Optional[str] = None) -> TaskRecord:
    """The placeholder of an undecodable row: when it finished (or who runs it) as its
    position says, so that it sorts where it sits."""
    finished = owner = None
    if pos and pos.startswith("x:"):
        try:
            finished = int(pos[4:]) / 1000
        except ValueError:
            pass
    elif pos and pos.startswith("r:"):
        owner = pos[2:]
    return broken_record(key[2:], blob, name, finished=finished, owner=owner)
