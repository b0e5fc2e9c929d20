"""The file behind a file store: vetting it, creating it, opening it (again after ``fork()``),
its transactions, what its errors mean, and its metadata map.

:class:`StoreFile` knows nothing of tasks: the store (store/sqlite.py) runs its statements
through :meth:`StoreFile.reading` and :meth:`StoreFile.writing`, and keeps its bookkeeping in
:attr:`StoreFile.meta`, a :class:`~timewheel.store.connection.Metadata` (a SqliteDict: see
store/connection.py), read and written in the same transactions as the tasks::

    with file.writing():                  # BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error
        horizon = file.meta["horizon"]
        file.meta.update(horizon=horizon + 1, leader=token)

The writes of tasks, which many threads make at once, go through :attr:`StoreFile.group`
instead (store/sqlite_group.py): they share transactions.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Collection, Iterable, Iterator, MutableMapping, Optional, Sequence

from ..backoff import backoff
from ..errors import NotAStore, StoreBusy, StoreError
from ..records import RecordDecodeError
from .connection import (
    CONNECTING,
    DURABILITY,
    META_TABLE,
    TABLE,
    Metadata,
    abandon,
    connect,
    decode_meta,
    ro_uri,
    track,
)
from .locks import check_owner, locks_for
from .sqlite_checkpoint import Checkpointer
from .sqlite_group import GroupCommit

__all__ = ["StoreFile", "LegacyMeta", "stored_format", "FORMAT", "V4_FORMAT", "V3_FORMAT", "V2_FORMAT",
           "V1_FORMAT"]

log = logging.getLogger("timewheel.store")

FORMAT = "timewheel/5"      #: batches' tables (store/sqlite_batches.py); records with a batch
V4_FORMAT = "timewheel/4"   #: timewheel 0.4: flow control's tables and positions (store/sqlite_flow.py)
V3_FORMAT = "timewheel/3"   #: timewheel 0.3: the bookkeeping in the metadata map, a rev column
V2_FORMAT = "timewheel/2"   #: timewheel 0.2: the bookkeeping as raw ``m:`` rows of the task table
V1_FORMAT = "timewheel/1"   #: timewheel 0.1: a record row plus index rows per task
#: every table a store has (an SQLite file holding only these, empty, is being created)
OUR_TABLES = frozenset({TABLE, META_TABLE, f"{TABLE}_counts", f"{TABLE}_ticks", f"{TABLE}_name_ticks",
                        f"{TABLE}_slots", f"{TABLE}_held", f"{TABLE}_starts", f"{TABLE}_limits",
                        f"{TABLE}_paused", f"{TABLE}_queues", f"{TABLE}_batches", f"{TABLE}_members"})
_NEARLY_FULL = 1 << 20        #: bytes free below which an I/O error is taken for a full disk


def stored_format(select: Callable[[str, Sequence[Any]], list], tables: Collection[str]) -> Any:
    """The store format a file holds, read with ``select(sql, params)``: its metadata's, else
    (a store of timewheel 0.1 or 0.2) the task table's ``m:format`` row; None if neither.

    Read with plain SQL, not through sqlitedict: this runs before sqlitedict may touch the
    file (it would add its table to any SQLite file).  A store of this format keeps a copy of
    its format as ``m:format`` too, for older versions, which read only that and so refuse the
    file by name; that copy is not the format."""
    if META_TABLE in tables:
        rows = select(f'SELECT value FROM "{META_TABLE}" WHERE key = ?', ("format",))
        if rows:
            return decode_meta(rows[0][0])
    if TABLE in tables:
        rows = select(f'SELECT value FROM "{TABLE}" WHERE key = ?', ("m:format",))
        if rows and rows[0][0] != FORMAT:
            return rows[0][0]
    return None


class LegacyMeta(Mapping):
    """The bookkeeping of a store of timewheel 0.1 or 0.2: raw ``m:<name>`` rows of the task
    table.  Read-only: such a store is read so (``timewheel inspect`` before the first writer
    converts it) and while it is converted."""

    def __init__(self, file: "StoreFile") -> None:
        self._file = file

    def __getitem__(self, name: str) -> Any:
        rows = self._file.q(f'SELECT value FROM "{TABLE}" WHERE key = ?', ("m:" + name,))
        if not rows:
            raise KeyError(name)
        return rows[0][0]

    def __iter__(self) -> Iterator[str]:
        return iter([k[2:] for (k,) in self._file.q(f'SELECT key FROM "{TABLE}" WHERE key >= \'m:\' '
                                                     "AND key < 'm;'")])

    def __len__(self) -> int:
        return len(list(self))


class StoreFile:
    """One store file, open in this process.  Thread-safe.

    :param path: the file (absolute); created (mode 0600) unless ``readonly``.
    :param readonly: never create, convert or write the file, nor files beside it.
    :param busy_timeout: seconds a write waits for another process's transaction before
        :class:`~timewheel.errors.StoreBusy`.
    :param durability: ``"normal"`` or ``"fsync"`` (see :data:`~timewheel.store.connection.DURABILITY`).
    """

    def __init__(self, path: str, *, readonly: bool, busy_timeout: float, durability: str = "normal") -> None:
        self.path = path
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self.durability = durability
        #: held by every statement of a transaction (reset in a forked child: see track)
        self.lock = threading.RLock()
        #: the writes of tasks, leader/follower: concurrent ones share a transaction
        self.group = GroupCommit(self)
        #: the WAL's checkpoints, on a thread of their own (told of every commit)
        self.checkpoints = self._checkpointer()
        self._db: Optional[Metadata] = None
        self._pid = -1
        self.legacy = False           #: True: read-only on a store of 0.2 (see LegacyMeta)
        self._gone: Optional[str] = None     # why the file opened is not the store any more
        track(self)
        if not readonly:
            self._check_owners()
        #: the format found when the file was vetted (None: a new store)
        self.found_format = self._vet()
        self._identity = self._stat_identity()
        if not readonly:
            locks_for(self.path).check_store()   # not a file replaced under live processes
        self._open()

    # -- vetting and creating -----------------------------------------------------------------
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

    def _stat_identity(self) -> tuple[int, int]:
        """(dev, ino) of the store file: what :meth:`check_still_there` compares with."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read ({exc.strerror})") from None
        return st.st_dev, st.st_ino

    def check_still_there(self) -> None:
        """Refuse to write once the path no longer names the file this process has open: it
        was deleted, moved or replaced (a backup restored) under the running processes.
        Written to, the old file loses what it gets when the last process closes it, and a
        new one beside it would never see it.  One ``stat`` (~1 us) per write transaction."""
        if self._gone is None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
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

    def _vet(self) -> Any:
        """Refuse files that are not ours before sqlitedict touches them (it would add a table
        to any SQLite file and switch its journal mode); the format found."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.readonly:
                raise StoreError(f"{self.path}: no such file") from None
            self._create()
            return None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read ({exc.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise NotAStore(f"{self.path} is a directory, not a timewheel store")
        if not stat.S_ISREG(st.st_mode):
            raise NotAStore(f"{self.path} is not a regular file, so not a timewheel store")
        if st.st_size == 0:
            if self.readonly:
                raise NotAStore(f"{self.path} is empty, not a timewheel store")
            self.make_private()      # an empty file we adopt (`touch tasks.db`) becomes 0600
            return None
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
                    fmt = stored_format(lambda sql, args: con.execute(sql, args).fetchall(), tables)
                    rows = any(con.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()
                               for t in (TABLE, META_TABLE) if t in tables)
                finally:
                    con.close()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", None) == "SQLITE_NOTADB":
                raise NotAStore(f"{self.path} is not a timewheel store (not an SQLite file)") from None
            raise _wal_deleted(self.path, exc) or NotAStore(f"{self.path} is not a readable timewheel "
                                                            f"store ({exc})") from None
        except ValueError as exc:
            raise NotAStore(f"{self.path}: its metadata is damaged (format: {exc})") from None
        if self.readonly and fmt is None:
            raise NotAStore(f"{self.path} is not a timewheel store (no timewheel data in it)")
        # Our tables alone, and empty: another process is creating the store right now.
        if fmt is None and (tables - OUR_TABLES or rows):
            raise NotAStore(f"{self.path} is an SQLite file but not a timewheel store "
                            f"(tables: {', '.join(sorted(tables))})")
        if self.readonly and fmt == V1_FORMAT:
            raise NotAStore(f"{self.path} is in the store format of timewheel 0.1 ({V1_FORMAT}); "
                            "it is converted when an application or a write command "
                            "(timewheel cancel, retry, purge) opens it")
        return fmt

    def _create(self) -> None:
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

    def make_private(self) -> None:
        try:
            if os.stat(self.path).st_mode & 0o077:
                os.chmod(self.path, 0o600)
                log.warning("%s was readable by other users; made it private (0600): the store "
                            "holds pickles", self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot make the store private ({exc.strerror})") from None

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> None:
        deadline = time.monotonic() + self.busy_timeout
        pauses = backoff(0.005, 0.1)
        while True:
            try:
                self._db = Metadata(self.path, self.readonly, self.busy_timeout,
                                    DURABILITY[self.durability])
                break
            except sqlite3.OperationalError as exc:
                # Two processes switching a new file to WAL at once: the loser gets "database
                # is locked" at once, without SQLite's busy handler.  Wait like a busy write.
                if isinstance(self.translate(exc), StoreBusy) and time.monotonic() < deadline:
                    time.sleep(next(pauses))
                    continue
                raise self.translate(exc) from None
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

    def _dict(self) -> Metadata:
        if self._pid != os.getpid():
            # Forked: an SQLite connection must not cross fork().  Abandon the parent's and
            # open our own.  Never close or even garbage-collect it here: closing may try a
            # checkpoint on the parent's file, and its lock may be held by a parent thread
            # that does not exist in this process (sqlitedict's __del__ would wait forever).
            if self._db is not None:
                abandon(self._db)
            self._db = None
            self._open()
        if self._db is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._db

    def conn(self) -> Any:
        """The connection (:class:`~timewheel.store.connection._Connection`) of this process."""
        db = self._db
        if db is None or self._pid != os.getpid():       # (inline: a claim round runs ~35 statements)
            db = self._dict()
        return db.conn

    @property
    def meta(self) -> MutableMapping[str, Any]:
        """The metadata map (:class:`~timewheel.store.connection.Metadata`): read it inside
        :meth:`reading` or :meth:`writing`, write it inside :meth:`writing`."""
        if self.legacy:
            # Read-only on a store of 0.2: until a writer converts it under us (then the new
            # layout; a few queries more per read, while the conversion is pending only).
            tables = {r[0] for r in self.q("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self.legacy = stored_format(self.q, tables) == V2_FORMAT
            if self.legacy:
                return LegacyMeta(self)    # type: ignore[return-value]
        return self._dict()

    def close(self) -> None:
        self.checkpoints.close()       # first: the last connection to close removes the WAL
        with self.lock:
            if self._db is not None and self._pid == os.getpid():
                try:
                    self._db.close()
                except Exception:  # noqa: BLE001 - closing must not raise; nothing is pending
                    log.debug("closing %s failed", self.path, exc_info=True)
            self._db = None

    def _checkpointer(self) -> Checkpointer:
        def inline(on: bool) -> None:
            with self.lock:
                self.conn().run(f"PRAGMA wal_autocheckpoint = {1000 if on else 0}")
        return Checkpointer(lambda: connect(self.path, self.busy_timeout, DURABILITY[self.durability]),
                            inline)

    def reset_locks(self) -> None:
        """In a forked child: a lock held by a thread of the parent at fork() would stay held
        forever here, the parent's queued writes are not this process's, nor is its
        checkpoints' thread (whose connection is abandoned, as the store's own: see _dict)."""
        self.lock = threading.RLock()
        self.group.reset()
        abandon(self.checkpoints)
        self.checkpoints = self._checkpointer()

    # -- statements and transactions ----------------------------------------------------------
    def x(self, sql: str, params: Any = ()) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return self.conn().run(sql, params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self.conn().executemany(sql, rows)

    def q(self, sql: str, params: Any = ()) -> list[tuple]:
        """Run a statement and wait for its rows."""
        return list(self.conn().select(sql, params))

    def has_table(self, name: str) -> bool:
        return bool(self.q("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Statements under the lock, their errors turned into StoreError."""
        with self.lock:
            if self.readonly:
                self._follow_writers()
            try:
                yield
            except sqlite3.Error as exc:
                raise self.translate(exc) from None
            except (ValueError, OverflowError) as exc:
                if isinstance(exc, RecordDecodeError):      # one record: the caller's to report
                    raise
                # a position, counter or metadata value no write of ours makes: a tampered file
                raise StoreError(f"{self.path}: the store's data is damaged ({exc})") from None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction, committed when the block ends, rolled back on any error.

        BEGIN IMMEDIATE takes the write lock up front, so a read-modify-write (a claim)
        cannot interleave with another process's; it waits for it as every write does (see
        :func:`~timewheel.store.connection.busy_pause`).  The block has the transaction to
        itself: for the rarer writes (the ticking process's, the doorbells', conversions);
        the writes of tasks share theirs (:attr:`group`).
        """
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")
        self.check_still_there()
        with self.lock:
            try:
                self.x("BEGIN IMMEDIATE")
                yield
                self.x("COMMIT")
                self.checkpoints.committed()
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self.translate(exc) from None
                raise

    def _rollback(self) -> None:
        try:
            self.x("ROLLBACK")
        except sqlite3.Error:
            pass   # "no transaction is active": BEGIN itself failed

    def translate(self, exc: sqlite3.Error) -> StoreError:
        """The StoreError (StoreBusy when locked) that tells what ``exc`` means for the file."""
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
            return _wal_deleted(self.path, exc) or StoreError(f"{self.path}: {text} ({name}); "
                                                              "nothing was written")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path}: cannot write the store ({text}): check the "
                              "permissions of the file and its directory")
        return StoreError(f"{self.path}: {text}")


def _wal_deleted(path: str, exc: sqlite3.Error) -> Optional[StoreError]:
    """The error for a ``-wal`` deleted while processes had the store open (issue 19 item 14):
    their index (``-shm``) still counts its frames, so a new connection reads past the end of
    the empty ``-wal`` it made.  Told by stat() alone: opening the ``-shm`` here would drop
    this process's SQLite locks on it (POSIX locks go with any descriptor's close)."""
    if getattr(exc, "sqlite_errorname", None) != "SQLITE_IOERR_SHORT_READ" \
            or not os.path.exists(path + "-shm"):
        return None
    try:
        if os.stat(path + "-wal").st_size >= 32:        # it has a header: not an empty new one
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    return StoreError(f"{path}: its -wal file was deleted while processes had the store open (SQLite says "
                      f"\"{exc}\"): stop every process that uses the store -- the last to exit writes their "
                      "commits into the file -- and start them again; never delete a store's -wal or -shm")


def _free_bytes(path: str) -> Optional[int]:
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
