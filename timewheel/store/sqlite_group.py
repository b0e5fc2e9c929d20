"""Group commit for the file store: the concurrent writes of one process share a transaction.

``delay()`` in a web app runs in many threads at once, and so do the claims and outcomes of the
boss.  One transaction each means one write lock taken (against every other process) and one
commit (an fsync with ``durability="fsync"``) each.  Here they queue instead, leader/follower:

* a writer puts its work in the queue; if no other thread is leading, it leads;
* the leader takes the store's lock, waits for SQLite's write lock (``BEGIN IMMEDIATE``: see
  :func:`~timewheel.store.connection.busy_pause`), takes every work queued by then -- the
  followers that arrived while it waited --, runs each under a savepoint, commits once, and
  hands each follower its own result or its own error; then one of the writers that queued
  meanwhile leads the next group;
* each caller returns only once its own work is committed (or has failed): ``delay()`` still
  means "stored".

An error reaches exactly the callers it concerns.  A work that fails (a duplicate id, a
conflict) is rolled back to its savepoint and raises in its caller; the others commit.  When
SQLite drops the whole transaction (a full disk, an I/O error), the work that hit it fails and
the others run again in a new transaction; when COMMIT itself fails, each work of the group is
tried again on its own, so that one too large for the disk fails alone.  Nothing is ever
half-written: every work is all or nothing, by its savepoint.

A write with no other writer of this process around costs what it did before group commit:
one ``INSERT`` for ``delay()`` (:meth:`GroupCommit.insert`), with no queue, no ``BEGIN`` and no
savepoint; the savepoints are only for groups of two or more.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from _thread import allocate_lock as _allocate_lock
from typing import Any, Callable, Optional, Sequence, TypeVar

from ..errors import StoreError
from .connection import is_busy

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Write:
    """One caller's work in the queue: a row to insert (``sql``, ``row``) or a function to run
    in the transaction (``work``); then its result or its error."""

    __slots__ = ("sql", "row", "work", "value", "error", "done", "wake")

    def __init__(self, sql: Optional[str] = None, row: Sequence[Any] = (),
                 work: Optional[Callable[[], Any]] = None) -> None:
        self.sql = sql
        self.row = row
        self.work = work
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.done = False
        #: held until the write is done or its caller is to lead: its caller waits on it
        self.wake = _allocate_lock()
        self.wake.acquire()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class GroupCommit:
    """The queue of one :class:`~timewheel.store.sqlite_file.StoreFile`'s writes.  Thread-safe.

    :param file: the store file: its lock (held while a group's transaction runs), its
        connection, :meth:`~timewheel.store.sqlite_file.StoreFile.check_still_there` and
        :meth:`~timewheel.store.sqlite_file.StoreFile.translate`.
    """

    def __init__(self, file: Any) -> None:
        self._file = file
        self.reset()
        #: for tests and benchmarks: commits of this process's task writes, and of them the
        #: transactions shared by several writes and the writes they held
        self.commits = self.groups = self.grouped = 0

    def reset(self) -> None:
        """A new, empty queue (and in a forked child: the parent's queue and its leader are
        not in this process)."""
        self._mutex = threading.Lock()                      # the queue and the lead
        self._grown = threading.Condition(self._mutex)     # the queue reached _crowd writes
        self._queue: list[_Write] = []
        self._leading = False
        self._crowd = 0              # writes in the last group committed ...
        self._crowd_at = 0.0         # ... and when (time.monotonic())
        self._commit_s = 0.0         # how long a group's transaction takes (moving average)

    def insert(self, sql: str, row: Sequence[Any]) -> None:
        """Insert one row (``sql``: one INSERT) in a transaction of its own or of the group.
        SQLite's errors are raised as they are (an IntegrityError: the key is taken)."""
        f = self._file
        if f.readonly:
            raise StoreError(f"{f.path} is open read-only")
        # Alone (nobody queued, nobody leading, the lock free): one autocommitted INSERT, as
        # cheap as before group commit.  Found locked by another process, it queues instead.
        if (not self._queue and not self._leading and not self._crowded()
                and f.lock.acquire(blocking=False)):
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
        self._submit(_Write(sql, row))

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a write transaction (shared with the other writers of this process),
        committed before this returns; if it raises, nothing it wrote is kept and the
        exception is raised here (SQLite's as :class:`StoreError`)."""
        if self._file.readonly:
            raise StoreError(f"{self._file.path} is open read-only")
        try:
            return self._submit(_Write(work=work))
        except sqlite3.Error as exc:
            raise self._file.translate(exc) from None

    # -- leader and followers -----------------------------------------------------------------
    def _submit(self, write: _Write) -> Any:
        """Queue ``write``; lead if nobody does, else wait until it is done or the leader
        hands over to it.  Each waiter is woken once, by its own lock: the leader wakes the
        writers of its group and the first writer queued after it, which leads next."""
        with self._mutex:
            self._queue.append(write)
            if len(self._queue) >= self._crowd:
                self._grown.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            write.wake.acquire()
            if write.done:
                return write.outcome()
        self._lead()
        return write.outcome()

    @property
    def waiting(self) -> int:
        """Writes queued for the next group (none has started to run)."""
        return len(self._queue)

    def _take(self) -> list[_Write]:
        with self._mutex:
            taken, self._queue = self._queue, []
        return taken

    def _lead(self) -> None:
        """Run the queued writes as one group (holding the file's lock), then wake their
        writers and hand the lead to the first writer queued meanwhile, if any."""
        f = self._file
        writes: list[_Write] = []
        try:
            with f.lock:
                self._gather()
                writes = self._take()
                self._group(writes)
        except BaseException as exc:          # the leader interrupted: nobody's is committed
            self._rollback()
            for w in writes:
                if w.error is None:
                    w.error = StoreError(f"{f.path}: the write was interrupted "
                                         f"({exc.__class__.__name__}); nothing was written")
            raise
        finally:
            with self._mutex:
                for w in writes:
                    w.done = True
                after = self._queue[0] if self._queue else None
                self._leading = after is not None
            for w in writes:
                w.wake.release()
            if after is not None:
                after.wake.release()

    def _crowded(self) -> bool:
        """Whether the last group had company and ended a moment ago: its writers are
        likely coming back (a web app's threads under load, a benchmark's loop)."""
        return self._crowd > 1 and time.monotonic() - self._crowd_at < 0.002

    def _gather(self) -> None:
        """Before a group's transaction: after a crowded group, wait a moment (half a
        transaction's time, at most 1 ms) for as many writers to queue again.  Without it the
        first writer back commits alone and the others queue behind it: groups of 1 and N-1
        instead of N, twice the commits (and fsyncs)."""
        if not self._crowded():
            return
        with self._mutex:
            if len(self._queue) < self._crowd:
                self._grown.wait(min(0.001, self._commit_s / 2))

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
            self._crowd = 1
            try:
                conn.run(w.sql, w.row, wait=False)
                f.checkpoints.committed()
                self.commits += 1
                return
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    w.error = exc
                    return
        t0 = time.monotonic()
        if self._begin(writes):
            writes += self._take()
            self._transaction(writes)
            t1 = time.monotonic()
            self._commit_s += 0.2 * (t1 - t0 - self._commit_s)
            self._crowd, self._crowd_at = len(writes), t1

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
