"""WAL checkpoints of the file store, off the write path.

SQLite copies the WAL back into the database file (a *checkpoint*, with an fsync of the file)
inside the COMMIT that makes the WAL reach 1000 pages.  That COMMIT -- here a group's, with
every writer of the process waiting for it -- then takes as long as the fsync: measured with 8
processes x 4 threads enqueueing on 2 cores, transactions took 0.08 ms at the median and
25-200 ms at worst, all of it in checkpoints (with them turned off: 5 ms at worst).

So once a process writes much, a thread of it takes the checkpoints over: the store's
connection no longer checkpoints at its commits, and the thread, on a connection of its own,
checkpoints after every :data:`EVERY` commits of the process (about SQLite's 1000 pages): see
:meth:`Checkpointer._checkpoint`.  A process that writes little (a command, a pre-fork master)
starts no thread and checkpoints as SQLite does.  The thread is stopped by
:meth:`Checkpointer.close`; should it fail, the commits checkpoint again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any, Callable, Optional

__all__ = ["Checkpointer", "EVERY"]

log = logging.getLogger("timewheel.store")

EVERY = 400          #: commits between checkpoints (~2.5 WAL pages each: SQLite's 1000 pages)
RESTART_AT = 4096    #: WAL pages (16 MiB) from which the WAL is copied back whole, to start over
_LEFT = 512          #: pages appended meanwhile that the writers may wait for (~2 MiB)
_CATCH_UP_PASSES = 3


class Checkpointer:
    """The checkpoints of one store file in this process.

    :param connect: opens a connection of the thread's own (a
        :class:`~timewheel.store.connection._Connection`, so that fork() waits for a
        checkpoint in progress).
    :param inline: ``inline(False)`` stops the store's connection from checkpointing at its
        commits, ``inline(True)`` makes it do so again (it takes the store's lock).
    """

    def __init__(self, connect: Callable[[], Any], inline: Callable[[bool], None]) -> None:
        self._connect = connect
        self._inline = inline
        self._wake = threading.Event()
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        #: the thread's connections (kept referenced: see abandon in store/connection.py)
        self.conns: tuple[Any, ...] = ()
        #: commits since the last checkpoint (counted under the store file's lock)
        self.commits = 0

    def committed(self) -> None:
        """A commit of this process (called under the store file's lock): every
        :data:`EVERY`, wake the thread (starting it the first time)."""
        if self._thread is None:
            self._start()
        self.commits += 1
        if self.commits >= EVERY:
            self.commits = 0
            self._wake.set()

    def _start(self) -> None:
        """Start the thread, then turn the commits' checkpoints off.  Never raises: this runs
        right after a commit, which must not look failed."""
        thread = self._thread = threading.Thread(target=self._run, name="timewheel-checkpoint",
                                                 daemon=True)
        if self._closed:
            return
        try:
            thread.start()
            self._inline(False)
        except Exception as exc:  # noqa: BLE001 - no thread (a limit), or the store failed
            log.warning("no thread for the WAL checkpoints of the store (%s); commits checkpoint it", exc)
            self._closed = True
            self._wake.set()

    def _run(self) -> None:
        try:
            self.conns = (self._connect(), self._connect())
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closed:
                    break
                self._checkpoint(*self.conns)
        except Exception as exc:  # noqa: BLE001 - a thread must not die silently
            log.warning("the WAL checkpoints' thread stopped (%s); commits checkpoint again", exc)
            self._closed = True
            try:
                self._inline(True)
            except Exception:  # noqa: BLE001 - the store may be closed or broken meanwhile
                log.debug("could not turn checkpoints at commits back on", exc_info=True)
        finally:
            for conn in self.conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

    def _checkpoint(self, conn: Any, holder: Any) -> None:
        """A PASSIVE checkpoint: the bulk, while writers go on.  Then, once the WAL is long,
        more while writers appended much meanwhile, and then ``holder`` takes the write lock
        (an empty transaction, waiting as every writer does) while a last one copies back the
        rest -- writers wait for that moment, 2-8 ms measured on 2 cores -- so that the WAL
        is wholly copied back and the next writer starts it over.  With writers appending all
        the time, checkpoints alone never get there and the WAL grows without bound: measured
        before this module, with 8 processes enqueueing, 0.5-1.2 GB in 5 s, and past 1000
        pages every commit ran a checkpoint of its own.  (SQLite's FULL checkpoint would do
        this in one call, but waits for the lock with SQLite's coarse pauses and, holding it,
        for every reader of an older snapshot.)"""
        try:
            busy, frames, _ = conn.select_one("PRAGMA wal_checkpoint(PASSIVE)")
            if busy or frames < RESTART_AT:
                return
            for _ in range(_CATCH_UP_PASSES):      # while writers appended much meanwhile
                busy, now, _ = conn.select_one("PRAGMA wal_checkpoint(PASSIVE)")
                if busy:
                    return
                if now - frames <= _LEFT:
                    break
                frames = now
            holder.run("BEGIN IMMEDIATE")
            try:
                conn.select_one("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                holder.run("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint failed: %s", exc)

    @property
    def running(self) -> bool:
        """Whether the thread has been started (and is not closed)."""
        return self._thread is not None and not self._closed

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after a checkpoint in progress) and close its connection."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.ident is not None and thread is not threading.current_thread():
            thread.join(timeout)
