"""Group commit for the file store: the concurrent writes of one process share a transaction.

``delay()`` in a web app runs in many threads at once, and so do the claims and outcomes of the
boss.  One transaction each means one write lock taken (against every other process) and one
commit (an fsync with ``durability="fsync"``) each.  Here they are batched leader/follower
(store/combine.py): the leader takes the store's lock, takes the writes queued, waits for
SQLite's write lock (``BEGIN IMMEDIATE``: see :func:`~timewheel.store.connection.busy_pause`),
takes the writes queued while it waited too, runs each under a savepoint, commits once, and
hands each writer its own result or its own error.  Each caller returns only once its own
write is committed (or has failed): ``delay()`` still means "stored".

An error reaches exactly the callers it concerns.  A write that fails (a duplicate id, a
conflict) is rolled back to its savepoint and raises in its caller; the others commit.  When
SQLite drops the whole transaction (a full disk, an I/O error), the write that hit it fails and
the others run again in a new transaction; when COMMIT itself fails, each write of the group is
tried again on its own, so that one too large for the disk fails alone.  Nothing is ever
half-written: every write is all or nothing, by its savepoint.

A write with no other writer of this process around costs what it did before group commit:
one ``INSERT`` for ``delay()`` (:meth:`GroupCommit.insert`), with no queue, no ``BEGIN`` and no
savepoint; the savepoints are only for groups of two or more.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Optional, Sequence, TypeVar

from ..errors import StoreError
from .combine import Call, Combiner
from .connection import is_busy

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Write(Call):
    """One caller's write: a row to insert (``sql``, ``row``) or a function to run in the
    transaction (``work``)."""

    __slots__ = ("sql", "row", "work")

    def __init__(self, sql: Optional[str] = None, row: Sequence[Any] = (),
                 work: Optional[Callable[[], Any]] = None) -> None:
        super().__init__()
        self.sql = sql
        self.row = row
        self.work = work


class GroupCommit:
    """The writes of one :class:`~timewheel.store.sqlite_file.StoreFile`, leader/follower
    (:class:`~timewheel.store.combine.Combiner`).  Thread-safe.

    :param file: the store file: its lock (held while a group's transaction runs), its
        connection, :meth:`~timewheel.store.sqlite_file.StoreFile.check_still_there` and
        :meth:`~timewheel.store.sqlite_file.StoreFile.translate`.
    """

    def __init__(self, file: Any) -> None:
        self._file = file
        self._queue = Combiner(self._serve, lambda exc: StoreError(
            f"{file.path}: the write was interrupted ({exc.__class__.__name__}); nothing was written"))
        #: for tests and benchmarks: commits of this process's task writes, and of them the
        #: transactions shared by several writes and the writes they held
        self.commits = self.groups = self.grouped = 0

    def reset(self) -> None:
        """In a forked child: the parent's writers and leader are not in this process."""
        self._queue.reset()

    @property
    def waiting(self) -> int:
        """Writes queued for the next group (none has started to run)."""
        return self._queue.waiting

    def insert(self, sql: str, row: Sequence[Any]) -> None:
        """Insert one row (``sql``: one INSERT) in a transaction of its own or of the group.
        SQLite's errors are raised as they are (an IntegrityError: the key is taken)."""
        f = self._file
        if f.readonly:
            raise StoreError(f"{f.path} is open read-only")
        # Alone (no other writer around, the lock free): one autocommitted INSERT, as cheap as
        # before group commit.  Found locked by another process, it queues instead.
        if self._queue.idle() and f.lock.acquire(blocking=False):
            try:
                f.conn().run(sql, row, wait=False)
                f.checkpoints.committed()
                self.commits += 1
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
            finally:
                f.lock.release()
        self._queue.submit(_Write(sql, row))

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a write transaction (shared with the other writers of this process),
        committed before this returns; if it raises, nothing it wrote is kept and the
        exception is raised here (SQLite's as :class:`StoreError`)."""
        if self._file.readonly:
            raise StoreError(f"{self._file.path} is open read-only")
        try:
            return self._queue.submit(_Write(work=work))
        except sqlite3.Error as exc:
            raise self._file.translate(exc) from None

    # -- the leader ---------------------------------------------------------------------------
    def _serve(self, writes: list[_Write]) -> None:
        """Run the queued writes as one group, holding the file's lock."""
        f = self._file
        with f.lock:
            self._queue.take(writes)
            try:
                self._group(writes)
            except BaseException:
                self._rollback()
                raise

    def _group(self, writes: list[_Write]) -> None:
        f = self._file
        try:
            f.check_still_there()
        except StoreError as exc:
            for w in writes:
                w.error = StoreError(str(exc))
            return
        conn = f.conn()
        if len(writes) == 1 and writes[0].sql is not None:
            w = writes[0]                # alone after all: one INSERT, as in insert()
            try:
                conn.run(w.sql, w.row, wait=False)
                f.checkpoints.committed()
                self.commits += 1
                return
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    w.error = exc
                    return
        if self._begin(writes):
            self._queue.take(writes)            # those that queued while it waited
            self._transaction(writes)

    def _begin(self, writes: list[_Write]) -> bool:
        """BEGIN IMMEDIATE, waiting for the write lock up to ``busy_timeout``; on failure every
        write gets the error (its own copy: each is raised in another thread)."""
        try:
            self._file.conn().run("BEGIN IMMEDIATE")
            return True
        except sqlite3.Error as exc:
            for w in writes:
                w.error = _copy(exc)
            return False

    def _transaction(self, writes: list[_Write]) -> None:
        """Run ``writes`` in the open transaction and commit it: each ends with its result or
        its own error."""
        conn = self._file.conn()
        grouped = len(writes) > 1
        kept: list[_Write] = []
        for k, w in enumerate(writes):
            self._apply(w, grouped)
            if not conn.in_transaction:
                # SQLite dropped the transaction (a full disk, an I/O error): this write's
                # error is its own; the others, kept or not yet run, go again in a new one.
                if w.error is None:
                    w.error = StoreError(f"{self._file.path}: the transaction was rolled back; "
                                         "nothing was written")
                rest = [x for x in kept + writes[k + 1:] if x.error is None]
                for x in rest:
                    x.value = None
                if rest and self._begin(rest):
                    self._transaction(rest)
                return
            if w.error is None:
                kept.append(w)
        if not kept:
            self._rollback()
            return
        try:
            conn.run("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            if len(kept) == 1:
                kept[0].error = exc
                return
            # Whose write made it fail (a full disk) is not known: each on its own.
            for w in kept:
                w.value = None
                if self._begin([w]):
                    self._transaction([w])
            return
        self._file.checkpoints.committed()
        self.commits += 1
        if len(kept) > 1:
            self.groups += 1
            self.grouped += len(kept)

    def _apply(self, w: _Write, grouped: bool) -> None:
        """Run one write in the open transaction, under a savepoint when it shares it."""
        conn = self._file.conn()
        if w.sql is not None:              # one statement: SQLite undoes it alone if it fails
            try:
                conn.run(w.sql, w.row)
            except sqlite3.Error as exc:
                w.error = exc
            return
        assert w.work is not None
        if grouped:
            conn.run("SAVEPOINT tw_write")
        try:
            w.value = w.work()
        except Exception as exc:  # noqa: BLE001 - it is the caller's, raised in its thread
            w.error = exc
            if grouped and conn.in_transaction:
                try:
                    conn.run("ROLLBACK TO tw_write")
                    conn.run("RELEASE tw_write")
                except sqlite3.Error:
                    self._rollback()         # (the others go again: see _transaction)
            elif not grouped:
                self._rollback()
            return
        if grouped:
            conn.run("RELEASE tw_write")

    def _rollback(self) -> None:
        try:
            self._file.conn().run("ROLLBACK")
        except sqlite3.Error:
            pass          # "no transaction is active": SQLite rolled it back already


def _copy(exc: BaseException) -> BaseException:
    """The same error for another thread to raise (one object raised in several threads at
    once would share, and overwrite, its traceback)."""
    try:
        new = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception class with another signature
        return StoreError(str(exc))
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, attr):
            try:
                setattr(new, attr, getattr(exc, attr))
            except AttributeError:
                pass
    return new
