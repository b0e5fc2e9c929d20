"""Liveness for a store file: POSIX record locks on ``<store>.lock``.

The kernel drops a process's record locks the moment it dies (SIGKILL included), so a lock
is a lease that cannot expire while its holder still works, and needs no heartbeat.

* byte 0: the *ticking lock*.  Its holder advances the wheel, recovers the tasks of dead
  processes and purges; every started process runs tasks.  The first to get the lock after
  its holder dies takes over.  The holder writes its token at bytes 8..63.
* bytes ``64 + 8*slot .. +8``: each started process holds its own 8 bytes for as long as it
  lives and writes a random nonce there.  Its slot is its pid, unless a process with the
  same pid number in another PID namespace (another container sharing the directory) holds
  that one; then a free slot beyond any pid.  A task claimed by ``"pid:nonce:slot"`` whose
  bytes are unlocked, or hold another nonce (the pid was reused), lost its process.

Others are probed with ``F_GETLK``, which takes nothing, so a probe never gets in the way of
a process taking its slot, and the read-only CLI can probe without writing.

``fcntl.lockf`` (POSIX) rather than ``flock``: POSIX locks are not inherited by ``fork()``
children, so a gunicorn worker forked from a leader does not also appear to hold the lock.
Their one trap -- closing *any* descriptor of the file drops all of the process's locks on
it -- is why the file is opened for locking exactly once per process, here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import weakref
from typing import Optional

from ..errors import StoreError
from .base import Liveness

__all__ = ["FileLiveness", "ProcessLocks", "locks_for", "probe"]

_LEADER_AT = 8
_LEADER_LEN = 56
_LIVE_BASE = 64
_LIVE_LEN = 8
_SPARE_SLOTS = 1 << 22        # first slot past any pid (Linux pid_max is at most 2**22)
_FLOCK = "hhqqi4x"            # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid
_instances: "weakref.WeakSet[ProcessLocks]" = weakref.WeakSet()
_shared: dict[str, "ProcessLocks"] = {}
_shared_mutex = threading.Lock()


def locks_for(store_path: str) -> "ProcessLocks":
    """The one :class:`ProcessLocks` of this process for a store file.

    One per process and file, because record locks are per process: two instances would
    both "hold" the ticking lock, and each would take the other's nonce for a dead process.
    """
    key = os.path.realpath(store_path)
    with _shared_mutex:
        inst = _shared.get(key)
        if inst is None:
            inst = _shared[key] = ProcessLocks(key + ".lock")
        return inst


def _locked_by_other(fd: int, offset: int, length: int) -> bool:
    """Whether another process holds a lock on the range (F_GETLK: takes nothing)."""
    req = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0)
    res = fcntl.fcntl(fd, fcntl.F_GETLK, req)
    return struct.unpack(_FLOCK, res)[0] != fcntl.F_UNLCK


def _parse(token: str) -> Optional[tuple[str, int]]:
    """(nonce, slot) of a ``pid:nonce:slot`` token (``pid:nonce`` from 0.1.0), else None."""
    parts = token.split(":")
    try:
        return parts[1], int(parts[2] if len(parts) > 2 else parts[0])
    except (ValueError, IndexError):
        return None


def _slot_offset(slot: int) -> int:
    return _LIVE_BASE + _LIVE_LEN * slot


class probe:
    """Read-only liveness checks of a lock file, for processes that hold no locks (the CLI).

    Opens nothing for writing and creates nothing; a missing lock file means nobody is alive.
    """

    def __init__(self, store_path: str) -> None:
        try:
            self._fd: Optional[int] = os.open(store_path + ".lock", os.O_RDONLY)
        except OSError:
            self._fd = None

    def leader(self) -> Optional[str]:
        if self._fd is None or not _locked_by_other(self._fd, 0, 1):
            return None
        raw = os.pread(self._fd, _LEADER_LEN, _LEADER_AT).rstrip(b"\0")
        return raw.decode("ascii", "replace") or "?"

    def is_dead(self, token: str) -> bool:
        parsed = _parse(token)
        if parsed is None or self._fd is None:
            return True
        nonce, slot = parsed
        off = _slot_offset(slot)
        if not _locked_by_other(self._fd, off, _LIVE_LEN):
            return True
        return os.pread(self._fd, _LIVE_LEN, off).decode("ascii", "replace") != nonce

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ProcessLocks:
    """The ticking lock and this process's liveness lock for one store file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._fd: Optional[int] = None
        self._pid = -1
        self._nonce = ""
        self._slot = -1
        self._holder: Optional[object] = None   # which FileLiveness of this process leads
        _instances.add(self)

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
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot open the lock file ({exc.strerror})") from None
                try:
                    slot = self._take_slot(fd, pid)
                    os.pwrite(fd, nonce.encode(), _slot_offset(slot))
                except OSError as exc:
                    # (a full disk, a file-size limit): closing drops the slot lock taken
                    os.close(fd)
                    raise StoreError(f"{self.path}: cannot write the lock file ({exc.strerror})") from None
                self._fd = fd
                self._pid, self._nonce, self._slot = pid, nonce, slot
            assert self._fd is not None
            return self._fd

    @staticmethod
    def _take_slot(fd: int, pid: int) -> int:
        # Our pid's bytes are held for good only by a same-numbered pid of another PID
        # namespace (probes use F_GETLK and never hold them); then take a spare slot.
        if ProcessLocks._try_lock(fd, _slot_offset(pid), _LIVE_LEN):
            return pid
        while True:
            slot = _SPARE_SLOTS + int.from_bytes(os.urandom(3), "big")
            if ProcessLocks._try_lock(fd, _slot_offset(slot), _LIVE_LEN):
                return slot

    @staticmethod
    def _try_lock(fd: int, offset: int, length: int) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, offset)
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

    def try_lead(self, holder: object) -> bool:
        """Take the ticking lock for ``holder`` if nobody holds it.  Never blocks."""
        fd = self._ensure()
        with self._mutex:
            if self._holder is not None:
                return self._holder is holder
            if not self._try_lock(fd, 0, 1):
                return False
            try:
                os.pwrite(fd, self.token_unlocked().encode().ljust(_LEADER_LEN, b"\0")[:_LEADER_LEN],
                          _LEADER_AT)
            except OSError as exc:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)     # not leading: let another process try
                raise StoreError(f"{self.path}: cannot write the lock file ({exc.strerror})") from None
            self._holder = holder
            return True

    def token_unlocked(self) -> str:
        return f"{self._pid}:{self._nonce}:{self._slot}"

    def resign(self, holder: object) -> None:
        """Give up the ticking lock (another process may take over at once)."""
        with self._mutex:
            if self._holder is not holder:
                return
            if self._fd is not None and self._pid == os.getpid():
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
            self._holder = None

    def leader(self) -> Optional[str]:
        fd = self._ensure()
        with self._mutex:
            if self._holder is not None:
                return self.token_unlocked()
        if not _locked_by_other(fd, 0, 1):
            return None
        return os.pread(fd, _LEADER_LEN, _LEADER_AT).rstrip(b"\0").decode("ascii", "replace") or "?"

    def is_dead(self, token: str) -> bool:
        """True if the process incarnation ``token`` is certainly gone."""
        parsed = _parse(token)
        if parsed is None:
            return True
        nonce, slot = parsed
        fd = self._ensure()
        if slot == self._slot:
            return nonce != self._nonce
        off = _slot_offset(slot)
        if not _locked_by_other(fd, off, _LIVE_LEN):
            return True
        # Held: a live process has that slot.  Is it the same incarnation?
        return os.pread(fd, _LIVE_LEN, off).decode("ascii", "replace") != nonce


class FileLiveness(Liveness):
    """:class:`Liveness` of one store instance over its process's shared :class:`ProcessLocks`."""

    def __init__(self, store_path: str) -> None:
        self._locks = locks_for(store_path)

    @property
    def token(self) -> str:
        return self._locks.token

    def try_lead(self) -> bool:
        return self._locks.try_lead(self)

    def resign(self) -> None:
        self._locks.resign(self)

    def leader(self) -> Optional[str]:
        return self._locks.leader()

    def is_dead(self, token: str) -> bool:
        return self._locks.is_dead(token)

    def close(self) -> None:
        self.resign()


def _after_fork_in_child() -> None:
    global _shared_mutex
    _shared_mutex = threading.Lock()
    for inst in list(_instances):
        inst._holder = None
        inst._mutex = threading.Lock()   # may have been held by a parent thread at fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
