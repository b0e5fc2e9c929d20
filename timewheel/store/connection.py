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
  downgrades the file or fails with "database is locked"), set ``synchronous=NORMAL``
  (sqlitedict hard-codes OFF; with WAL, NORMAL survives a process kill without an fsync per
  commit) and a real busy timeout (its ``timeout=`` does not set one);
* the task table (``timewheel``): sqlitedict's ``key``/``value`` columns plus ours, WITHOUT
  ROWID, read and written by the store's own SQL -- its queries need the indexed position
  column, and a dict API would scan (``keys()`` reads every row: 879 ms for 30 keys of 216k).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import Any, Iterable, Iterator, Optional, Sequence
from urllib.parse import quote

import sqlitedict
from sqlitedict import SqliteDict

from ..records import MAX_RECORD_BYTES, load_plain

__all__ = ["TABLE", "META_TABLE", "SCHEMA", "RECORD", "CONNECTING", "Metadata", "MetaDecodeError",
           "decode_meta", "ro_uri", "file_version", "read_header", "track", "abandon"]

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

    def __init__(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool) -> None:
        self.filename = filename
        self.autocommit = True
        self.journal_mode = journal_mode
        self._lock = threading.RLock()
        self._readonly = readonly
        #: reads the file as immutable (no process had it open): blind to later writes
        self.immutable = False
        self._version: Optional[tuple[int, ...]] = None
        with CONNECTING:
            self._connect(filename, journal_mode, busy_timeout, readonly)
            _connections.add(self)

    def _connect(self, filename: str, journal_mode: str, busy_timeout: float, readonly: bool) -> None:
        if readonly:
            # Never creates, converts or writes the file, nor its -wal and -shm (see ro_uri).
            self._version = file_version(filename)     # first: a change after it is seen
            uri = ro_uri(filename)
            self.immutable = uri.endswith("&immutable=1")
            self._con = sqlite3.connect(uri, uri=True, timeout=busy_timeout,
                                        isolation_level=None, check_same_thread=False)
        else:
            self._con = sqlite3.connect(filename, timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
            self._con.execute(f"PRAGMA journal_mode = {journal_mode}")
            self._con.execute("PRAGMA synchronous = NORMAL")

    def outdated(self) -> bool:
        """True if this connection reads the file as immutable and the file has changed
        since: a writer opened it (a ``-wal`` appeared), or came and went."""
        return self.immutable and file_version(self.filename) != self._version

    def execute(self, req: str, arg: Sequence[Any] = (), res: Any = None) -> None:
        if self._readonly and req.startswith("CREATE TABLE IF NOT EXISTS"):
            return
        with self._lock:
            cur = self._con.execute(req, arg or ())
            if res is not None:
                for row in cur:
                    res.put(row)
                res.put("--no more--")

    def executemany(self, req: str, items: Iterable[Sequence[Any]]) -> int:
        with self._lock:
            return self._con.executemany(req, items).rowcount

    def run(self, req: str, arg: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        with self._lock:
            return self._con.execute(req, arg).rowcount

    def select(self, req: str, arg: Sequence[Any] = ()) -> Iterator[tuple]:
        with self._lock:
            return iter(self._con.execute(req, arg or ()).fetchall())

    def select_one(self, req: str, arg: Sequence[Any] = ()) -> Optional[tuple]:
        with self._lock:
            return self._con.execute(req, arg or ()).fetchone()

    def commit(self, blocking: bool = True) -> None:
        """Nothing to do: see the module docstring (sqlitedict calls it after its writes)."""

    def close(self, force: bool = False) -> None:
        with self._lock:
            self._con.close()


_open_files: "weakref.WeakSet[Any]" = weakref.WeakSet()   # StoreFiles, whose locks fork resets
_abandoned: list[Any] = []      # connections inherited through fork(): kept, never touched


def track(file: Any) -> None:
    """Reset ``file.lock`` in a forked child (a parent thread may have held it)."""
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
        file.lock = threading.RLock()


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


class Metadata(SqliteDict):
    """The store's metadata map: a :class:`~sqlitedict.SqliteDict` of ``timewheel_meta`` on a
    :class:`_Connection`, which the store's own statements share (``.conn``).

    Read-only stores are opened with flag "c" on a read-only connection, whose CREATE TABLE
    IF NOT EXISTS is skipped (the file was checked already): flag "r" would make sqlitedict
    list the tables through a read-write connection that it never closes, and whose eventual
    finalisation checkpoints a WAL left by a killed process -- a "read" that rewrites the file.
    """

    def __init__(self, path: str, readonly: bool, busy_timeout: float) -> None:
        self._tw_readonly = readonly
        self._tw_busy_timeout = busy_timeout
        super().__init__(path, tablename=META_TABLE, flag="c", autocommit=False, journal_mode="WAL",
                         encode=sqlitedict.encode, decode=decode_meta, outer_stack=False)

    def _new_conn(self) -> Any:
        return _Connection(self.filename, self.journal_mode, self._tw_busy_timeout, self._tw_readonly)
