"""Who ticks, and who is alive: POSIX record locks on ``<store>.lock``.

The kernel drops a process's record locks the moment it dies (SIGKILL included), so a lock
is a lease that cannot expire while its holder still works, and needs no heartbeat.

* byte 0: the *ticking lock*.  Its holder is the one process that advances the wheel and runs
  due tasks; the others keep trying, and the first to get it after the holder dies takes over.
* bytes ``64 + 8*slot .. +8``: each process that runs tasks holds its own 8 bytes for as long
  as it lives and writes a random nonce there.  Its slot is its pid, unless a process with the
  same pid number in another PID namespace (another container sharing the directory) holds
  that one; then a free slot beyond any pid.  A task claimed by ``"pid:nonce:slot"`` whose
  bytes are unlocked, or hold another nonce (the pid was reused), lost its process.

``fcntl.lockf`` (POSIX) rather than ``flock``: POSIX locks are not inherited by ``fork()``
children, so a gunicorn worker forked from a leader does not also appear to hold the lock.
Their one trap -- closing *any* descriptor of the file drops all of the process's locks on
it -- is why the file is opened exactly once per process, here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
import weakref
from typing import Optional

__all__ = ["ProcessLocks", "locks_for"]

_LIVE_BASE = 64
_LIVE_LEN = 8
_SPARE_SLOTS = 1 << 22        # first slot past any pid (Linux pid_max is at most 2**22)
_instances: "weakref.WeakSet[ProcessLocks]" = weakref.WeakSet()
_shared: dict[str, "ProcessLocks"] = {}
_shared_mutex = threading.Lock()


def locks_for(store_path: Optional[str]) -> "ProcessLocks":
    """The one :class:`ProcessLocks` of this process for a store (None: a memory store).

    One per process and file, because record locks are per process: two instances would
    both "hold" the ticking lock, and each would take the other's nonce for a dead process.
    """
    if store_path is None:
        return ProcessLocks(None)
    key = os.path.realpath(store_path)
    with _shared_mutex:
        inst = _shared.get(key)
        if inst is None:
            inst = _shared[key] = ProcessLocks(key)
        return inst


class ProcessLocks:
    """The ticking lock and this process's liveness lock for one store.

    With ``store_path=None`` (a memory store, one process by nature) no file is used.
    """

    def __init__(self, store_path: Optional[str]) -> None:
        self.path = None if store_path is None else store_path + ".lock"
        self._mutex = threading.Lock()
        self._fd: Optional[int] = None
        self._pid = -1
        self._nonce = ""
        self._slot = -1
        self._holder: Optional[object] = None   # which boss of this process leads
        _instances.add(self)

    @property
    def leading(self) -> bool:
        return self._holder is not None

    @property
    def token(self) -> str:
        """``"pid:nonce:slot"``: names this process incarnation as the owner of a claimed task."""
        self._ensure()
        return f"{self._pid}:{self._nonce}:{self._slot}"

    def _ensure(self) -> int:
        with self._mutex:
            if self._pid != os.getpid():
                self._reset_after_fork()
                pid = os.getpid()
                nonce = os.urandom(_LIVE_LEN // 2).hex()
                slot = pid
                if self.path is not None:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                    slot = self._take_slot(fd, pid)
                    os.pwrite(fd, nonce.encode(), self._offset(slot))
                    self._fd = fd
                self._pid, self._nonce, self._slot = pid, nonce, slot
            return -1 if self._fd is None else self._fd

    def _take_slot(self, fd: int, pid: int) -> int:
        # Our pid's bytes can be held for an instant by a process probing whether their previous
        # owner died (is_dead), or for good by a same-numbered pid of another PID namespace.
        for _ in range(20):
            if self._try_lock(fd, self._offset(pid)):
                return pid
            time.sleep(0.005)
        while True:
            slot = _SPARE_SLOTS + int.from_bytes(os.urandom(3), "big")
            if self._try_lock(fd, self._offset(slot)):
                return slot

    @staticmethod
    def _try_lock(fd: int, offset: int) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _LIVE_LEN, offset)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def _reset_after_fork(self) -> None:
        # The descriptor came from the parent; our process holds no locks through it.
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        self._holder = None

    @staticmethod
    def _offset(slot: int) -> int:
        return _LIVE_BASE + _LIVE_LEN * slot

    def try_lead(self, holder: object) -> bool:
        """Take the ticking lock for ``holder`` (a boss) if nobody holds it.  Never blocks."""
        fd = self._ensure()
        with self._mutex:
            if self._holder is not None:
                return self._holder is holder
            if fd >= 0:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        return False
                    raise
            self._holder = holder
            return True

    def resign(self, holder: object) -> None:
        """Give up the ticking lock (another process may take over at once)."""
        with self._mutex:
            if self._holder is not holder:
                return
            if self._fd is not None and self._pid == os.getpid():
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
            self._holder = None

    def is_dead(self, token: str) -> bool:
        """True if the process incarnation ``token`` is certainly gone."""
        try:
            parts = token.split(":")
            nonce = parts[1]
            slot = int(parts[2] if len(parts) > 2 else parts[0])
        except (ValueError, IndexError):
            return True
        fd = self._ensure()
        if slot == self._slot:
            return nonce != self._nonce
        if fd < 0:
            return True        # a memory store: no other process can own its tasks
        off = self._offset(slot)
        if not self._try_lock(fd, off):
            # Held: a live process has that slot.  Is it the same incarnation?
            return os.pread(fd, _LIVE_LEN, off).decode("ascii", "replace") != nonce
        fcntl.lockf(fd, fcntl.LOCK_UN, _LIVE_LEN, off)
        return True


def _after_fork_in_child() -> None:
    global _shared_mutex
    _shared_mutex = threading.Lock()
    for inst in list(_instances):
        inst._holder = None
        inst._mutex = threading.Lock()   # may have been held by a parent thread at fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
