"""How the file store talks to SQLite: its bookkeeping through sqlitedict, on one synchronous,
fork-safe connection.

What is borrowed from sqlitedict (2.1.0, pinned): the store's metadata map -- format,
geometry, horizon, the ticking role's lease, doorbells (``timewheel_meta``) -- *is* a
:class:`~sqlitedict.SqliteDict`: sqlitedict creates its table (``key TEXT PRIMARY KEY, value
BLOB``), and the store reads and writes it through the dict API (``[]``, ``update()``,
``del``, ``keys()``), whose SELECT and REPLACE statements run in the store's own transactions.
Values are pickled by sqlitedict's own ``encode``, so a plain ``SqliteDict(path,
tablename="timewheel_meta", flag="r")`` reads them, and a value sqlitedict writes the wheel
reads; they are read back by :func:`decode_meta`, which never unpickles a global: the file may
have been written by anyone.

What is not borrowed, with the measurements (shared/NOTES-sqlitedict-and-wheels.md):

* its connection layer -- one background thread per dict, to which every call is queued --
  is replaced by :class:`_Connection`, which runs each call synchronously in the caller's
  thread (overriding ``SqliteDict._new_conn``, the one private method we depend on).  That
  thread is what makes sqlitedict slow and unsafe for a durable queue: a round trip costs
  ~65 us (10k commits/s at best against 41k for sqlite3), write errors surface at some later
  call, ``commit()`` hangs forever when COMMIT raises (piskvorky/sqlitedict#108), and a dict
  opened before ``fork()`` hangs in the child;
* its commits: the connection is in autocommit mode, a statement outside a store transaction
  commits itself and a transaction commits when the store's block ends (``commit()`` is a
  no-op here, so no dict call can commit a transaction half-way);
* its pragmas: we pass ``journal_mode="WAL"`` on *every* open (a second opener without it
  downgrades the file or fails with "database is locked") and set ``synchronous`` (sqlitedict
  hard-codes OFF): NORMAL by default (with WAL it survives a process kill without an fsync per
  commit), FULL for ``durability="fsync"`` (the WAL is fsynced at every commit: it survives a
  power cut too);
* its waiting for the write lock (its ``timeout=`` sets none): a writer's connection has no
  SQLite busy handler (``timeout=0``); a statement outside a transaction that finds the file
  locked -- the ``BEGIN IMMEDIATE`` of every write transaction among them -- is retried here
  after short, jittered pauses (:func:`busy_pause`) until ``busy_timeout`` has passed.  SQLite's
  own handler (``sqlite3_busy_timeout``) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then
  100 ms at a time: a writer that lost the lock a few times sleeps through many transactions
  of others (measured with 8 processes of raw sqlite3 writing at once on 2 cores: the longest
  wait of each run, ~70,000 transactions, 0.7-2.3 s; the file store's delay() under 8 x 4
  threads: 0.6-1.7 s);
* the task table (``timewheel``): sqlitedict's ``key``/``value`` columns plus ours, WITHOUT
  ROWID, read and written by the store's own SQL -- its queries need the indexed position
  column, and a dict API would scan (``keys()`` reads every row: 879 ms for 30 keys of 216k).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar
from urllib.parse import quote

import sqlitedict
from sqlitedict import SqliteDict

from ..records import MAX_RECORD_BYTES, load_plain

__all__ = ["TABLE", "META_TABLE", "SCHEMA", "RECORD", "CONNECTING", "DURABILITY", "Metadata",
           "MetaDecodeError", "decode_meta", "ro_uri", "file_version", "read_header", "track", "abandon",
           "is_busy", "busy_pause", "connect"]

TABLE = "timewheel"
#: the metadata map's table, made by sqlitedict (see Metadata)
META_TABLE = f"{TABLE}_meta"
#: the task table (sqlitedict's key and value, our position, name and revision: see
#: store/sqlite.py), its index, and the counters (per state and name, per due tick, per name
#: and due tick; the per-slot ones: store/sqlite_counters.py)
SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB, pos TEXT, name TEXT, '
    "rev INTEGER) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{TABLE}_pos" ON "{TABLE}" (pos) WHERE pos IS NOT NULL',
    f'CREATE TABLE IF NOT EXISTS "{TABLE}_counts" (state TEXT NOT NULL, name TEXT NOT NULL, '
    "n INTEGER NOT NULL, PRIMARY KEY (state, name)) WITHOUT ROWID",
    f'CREATE TABLE IF NOT EXISTS "{TABLE}_ticks" (tick INTEGER PRIMARY KEY, n INTEGER NOT NULL)',
    f'CREATE TABLE IF NOT EXISTS "{TABLE}_name_ticks" (name TEXT NOT NULL, tick INTEGER NOT NULL, '
    "n INTEGER NOT NULL, PRIMARY KEY (name, tick)) WITHOUT ROWID",
)

#: SQL: a task's record, never larger than any record in memory (bigger rows read as broken)
RECORD = f"CASE WHEN length(value) <= {MAX_RECORD_BYTES} THEN value END"
#: ``durability`` -> the ``synchronous`` setting of a writer's connection (WAL mode): "normal"
#: fsyncs only at checkpoints (a power cut can lose the last commits, a process kill none);
#: "fsync" fsyncs the WAL at every commit (a group commit shares one: store/sqlite_group.py)
DURABILITY = {"normal": "NORMAL", "fsync": "FULL"}


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "the file is locked by another connection" (SQLITE_BUSY or
    SQLITE_LOCKED, any extended code): nothing was done, the statement may be tried again."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)        # (Python >= 3.11)
    if code is not None:
        return code & 0xFF in (5, 6)
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text


def busy_pause(waited: float, rnd: float) -> float:
    """How long to sleep before trying a locked file again, having waited ``waited`` seconds
    so far; ``rnd`` is uniform in [0, 1).  Pure.

    Short and jittered: 50-150 us, growing slowly to 0.5-1.5 ms once the wait passes 20 ms.
    Another process's transaction holds the lock for 0.05-1 ms, so SQLite's own pauses (up to
    100 ms) mostly sleep while the lock is free; the jitter keeps processes that found the lock
    taken at the same moment from trying again in step; the slow growth keeps a long wait from
    costing a core in tries (each is a system call and a few us of Python).
    """
    base = 100e-6 * (1.0 + min(waited, 0.02) * 450.0)     # 100 us, 1 ms after 20 ms
    return base * (0.5 + rnd)


def ro_uri(path: str) -> str:
    """The URI of a read-only connection that creates nothing beside the file.

    With no ``-wal`` file no process has the store open, and ``immutable=1`` reads it
    without the ``-shm`` index or locks (so also in a directory we cannot write) -- blind to
    later writes, so a store reading this way reopens once the file changes
    (:meth:`_Connection.outdated`).  Otherwise a writer may be live: ``mode=ro`` reads
    through its WAL like any reader.
    """
    uri = f"file:{quote(path, safe='/')}?mode=ro"
    return uri if os.path.exists(path + "-wal") else uri + "&immutable=1"


def file_version(path: str) -> Optional[tuple[int, ...]]:
    """What changes when another process writes the file: its identity, size and change
    time, and whether a ``-wal`` is beside it (None: no file).  Read with stat(), never
    through a descriptor (see :func:`read_header`)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, os.path.exists(path + "-wal")


def read_header(path: str) -> Optional[bytes]:
    """The file's first 100 bytes, or None while reading them could harm this process.

    Closing *any* descriptor of a file drops every POSIX lock the process holds on it, the
    locks of its SQLite connections included; a WAL connection holds one as long as it is
    open, and once it is gone the last other process to close the store deletes the WAL
    under it: a reader freezes, a writer's commits go to a deleted file (issue 19.5).  So
    the header is read only while no connection here can hold a lock on the file: no
    ``-wal`` beside it (no process has it open in WAL mode) and no connection of ours but
    immutable ones (which take no locks) on it -- and under CONNECTING, so none opens
    meanwhile.  A file with its own SQLite connection asks SQLite instead.
    """
    with CONNECTING:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if os.path.exists(path + "-wal"):
            return None
        for conn in list(_connections):
            if not conn.immutable and os.path.exists(conn.filename) and \
                    os.path.samestat(st, os.stat(conn.filename)):
                return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.pread(fd, 100, 0)
        finally:
            os.close(fd)


_T = TypeVar("_T")

# Every call into SQLite from this module holds its connection's lock (or CONNECTING while
# opening), and fork() waits for all of them (see the at-fork handlers below): SQLite keeps
# process-wide mutexes, and a child forked while another thread was inside SQLite inherits
# them locked -- its first open then hangs forever.
CONNECTING = threading.RLock()
_connections: "weakref.WeakSet[_Connection]" = weakref.WeakSet()


class _Connection:
    """sqlitedict's connection interface (``SqliteMultithread``), run in the calling thread.

    Autocommit mode: a statement outside an explicit BEGIN is its own durable transaction.
    Thread-safe through one lock; the store's own lock spans multi-statement transactions.
    """

    def __init__(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool,
                 synchronous: str = "NORMAL") -> None:
        self.filename = filename
        self.autocommit = True
        self.journal_mode = journal_mode
        self.busy_timeout = busy_timeout
        #: when a statement last found the file locked by another connection (monotonic)
        self.contended_at = -1e9
        self._lock = threading.RLock()
        self._readonly = readonly
        #: reads the file as immutable (no process had it open): blind to later writes
        self.immutable = False
        self._version: Optional[tuple[int, ...]] = None
        with CONNECTING:
            self._connect(filename, journal_mode, busy_timeout, readonly, synchronous)
            _connections.add(self)

    def _connect(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool,
                 synchronous: str) -> None:
        if readonly:
            # Never creates, converts or writes the file, nor its -wal and -shm (see ro_uri).
            self._version = file_version(filename)     # first: a change after it is seen
            uri = ro_uri(filename)
            self.immutable = uri.endswith("&immutable=1")
            self._con = sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                                        isolation_level=None, check_same_thread=False)
        else:
            # No busy handler of SQLite's: this module waits for the lock (see busy_pause).
            self._con = sqlite3.connect(filename, timeout=0, isolation_level=None,
                                        check_same_thread=False)
            self._waiting(self._con.execute, f"PRAGMA journal_mode = {journal_mode}", ())
            self._con.execute(f"PRAGMA synchronous = {synchronous}")

    def outdated(self) -> bool:
        """True if this connection reads the file as immutable and the file has changed
        since: a writer opened it (a ``-wal`` appeared), or came and went."""
        return self.immutable and file_version(self.filename) != self._version

    def _waiting(self, call: Callable[..., _T], req: str, arg: Any) -> _T:
        """``call(req, arg)``, tried again while the file is locked by another connection and
        this one is in no transaction (so the failed try changed nothing), until
        ``busy_timeout`` has passed; then the last "database is locked" is raised."""
        try:
            return call(req, arg)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or self._con.in_transaction:
                raise
        t0 = self.contended_at = time.monotonic()
        waited = 0.0
        while True:
            time.sleep(min(busy_pause(waited, random.random()), max(0.0, self.busy_timeout - waited)))
            try:
                return call(req, arg)
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - t0
                if not is_busy(exc) or self._con.in_transaction or waited >= self.busy_timeout:
                    raise

    def _rows(self, req: str, arg: Any) -> list:
        return self._con.execute(req, arg).fetchall()

    def execute(self, req: str, arg: Sequence[Any] = (), res: Any = None) -> None:
        if self._readonly and req.startswith("CREATE TABLE IF NOT EXISTS"):
            return
        with self._lock:
            rows = self._waiting(self._rows, req, arg or ())
            if res is not None:
                for row in rows:
                    res.put(row)
                res.put("--no more--")

    def executemany(self, req: str, items: Iterable[Sequence[Any]]) -> int:
        with self._lock:
            return self._con.executemany(req, items).rowcount

    def run(self, req: str, arg: Sequence[Any] = (), wait: bool = True) -> int:
        """Run a statement; the number of rows it changed.  ``wait=False``: raise at once if
        the file is locked by another connection (:func:`is_busy`)."""
        with self._lock:
            if not wait:
                return self._con.execute(req, arg).rowcount
            return self._waiting(self._con.execute, req, arg).rowcount

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (SQLite may have rolled it back after an error)."""
        return self._con.in_transaction

    def select(self, req: str, arg: Sequence[Any] = ()) -> Iterator[tuple]:
        with self._lock:
            return iter(self._waiting(self._rows, req, arg or ()))

    def select_one(self, req: str, arg: Sequence[Any] = ()) -> Optional[tuple]:
        with self._lock:
            rows = self._waiting(self._rows, req, arg or ())
            return rows[0] if rows else None

    def commit(self, blocking: bool = True) -> None:
        """Nothing to do: see the module docstring (sqlitedict calls it after its writes)."""

    def close(self, force: bool = False) -> None:
        with self._lock:
            self._con.close()
        _connections.discard(self)          # (it holds no lock on the file any more)


_open_files: "weakref.WeakSet[Any]" = weakref.WeakSet()   # StoreFiles, whose locks fork resets
_abandoned: list[Any] = []      # connections inherited through fork(): kept, never touched


def track(file: Any) -> None:
    """Call ``file.reset_locks()`` in a forked child (a parent thread may have held them)."""
    _open_files.add(file)


def abandon(db: Any) -> None:
    """Keep a connection inherited through fork() referenced forever: never closed, never even
    garbage-collected (closing may checkpoint the parent's file; its lock may be held by a
    parent thread that does not exist here, and sqlitedict's __del__ would wait forever)."""
    _abandoned.append(db)


_held_for_fork: list[Any] = []


def _before_fork() -> None:
    CONNECTING.acquire()
    for conn in sorted(_connections, key=id):
        conn._lock.acquire()
        _held_for_fork.append(conn._lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()
    CONNECTING.release()


def _after_fork_in_child() -> None:
    _after_fork_in_parent()
    # A lock held by another thread of the parent at fork() stays held forever in the child.
    for file in list(_open_files):
        file.reset_locks()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


MAX_META_BYTES = 1 << 16       #: a metadata value larger than this is damaged


class MetaDecodeError(ValueError):
    """A metadata value is not one timewheel (or sqlitedict) wrote: the file is damaged."""


def decode_meta(blob: Any) -> Any:
    """A metadata value, as sqlitedict's ``encode`` pickled it, read without running anything
    (:func:`~timewheel.records.load_plain`): the file may have been written by anyone."""
    if not isinstance(blob, bytes) or len(blob) > MAX_META_BYTES:
        raise MetaDecodeError(f"a {type(blob).__name__} of {len(blob) if isinstance(blob, bytes) else 0} "
                              "bytes is not a metadata value")
    try:
        return load_plain(blob)
    except Exception as exc:  # noqa: BLE001 - hostile input can raise anything
        raise MetaDecodeError(f"not a metadata value ({exc.__class__.__name__}: {exc})") from None


def connect(path: str, busy_timeout: float, synchronous: str) -> _Connection:
    """A writer's connection of our own to a store file (the WAL checkpoints' thread)."""
    return _Connection(path, "WAL", busy_timeout, False, synchronous)


class Metadata(SqliteDict):
    """The store's metadata map: a :class:`~sqlitedict.SqliteDict` of ``timewheel_meta`` on a
    :class:`_Connection`, which the store's own statements share (``.conn``).

    Read-only stores are opened with flag "c" on a read-only connection, whose CREATE TABLE
    IF NOT EXISTS is skipped (the file was checked already): flag "r" would make sqlitedict
    list the tables through a read-write connection that it never closes, and whose eventual
    finalisation checkpoints a WAL left by a killed process -- a "read" that rewrites the file.
    """

    def __init__(self, path: str, readonly: bool, busy_timeout: float, synchronous: str = "NORMAL") -> None:
        self._tw_readonly = readonly
        self._tw_busy_timeout = busy_timeout
        self._tw_synchronous = synchronous
        super().__init__(path, tablename=META_TABLE, flag="c", autocommit=False, journal_mode="WAL",
                         encode=sqlitedict.encode, decode=decode_meta, outer_stack=False)

    def _new_conn(self) -> Any:
        return _Connection(self.filename, self.journal_mode, self._tw_busy_timeout, self._tw_readonly,
                           self._tw_synchronous)
