"""Liveness for a store file: POSIX record locks on ``<store>.lock``.

The kernel drops a process's record locks the moment it dies (SIGKILL included), so a lock
is a sign of life that cannot lapse while its holder still works, and needs no heartbeat.
(Who *ticks* is not decided here but by a lease in the store itself: a lock held by a
stopped process would stop the wheel for everyone -- see :class:`FileLiveness`.)

Layout of the lock file:

* bytes 8..63: its header, ``tw2 <file id> <store dev>:<store ino>``: a random id naming this
  lock file (a deleted one's inode number is often reused at once, so the inode alone cannot
  tell two lock files apart) and the identity of the store file its processes have open.
* bytes ``64 + 8*slot .. +8``: each process holds its own 8 bytes for as long as it lives and
  writes a random nonce there.  Its slot is its pid, unless a process with the same pid
  number in another PID namespace (another container sharing the directory) holds that one;
  then a free slot beyond any pid.  A task claimed by ``"pid:nonce:slot:file:ino"`` whose
  bytes are unlocked, or hold another nonce (the pid was reused), lost its process.

Others are probed with ``F_GETLK``, which takes nothing, so a probe never gets in the way of
a process taking its slot, and the read-only CLI can probe without writing.

**The lock file deleted or replaced** while processes run (a tmp cleaner, a deploy script): a
process started afterwards creates a new file, on which the old processes' slots are not
locked -- taken for dead, their running tasks would be run again, over and over.  So every
process checks once a tick (:meth:`ProcessLocks.verify`) that the path still names the file
it holds, and if not, moves to the file that is there: it takes a slot in it and *carries
its live tokens over* (locks their slots in the new file and writes their nonces), and keeps
the old file's locks until no task of its runs under an old token.  A token naming another
lock file that nobody carried over is judged by the old file's locks as ``/proc/locks`` lists
them (Linux); where that cannot be read, by whether its pid exists.

``fcntl.lockf`` (POSIX) rather than ``flock``: POSIX locks are not inherited by ``fork()``
children, so a gunicorn worker forked from a parent does not also appear to hold its slot.
Their one trap -- closing *any* descriptor of the file drops all of the process's locks on
it -- is why the file is opened for locking exactly once per process, here.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import threading
import weakref
from typing import Callable, Iterable, NamedTuple, Optional, Protocol, Sequence

from ..errors import StoreError
from ..records import TaskRecord
from .base import Liveness

__all__ = ["FileLiveness", "ProcessLocks", "locks_for", "probe", "check_owner"]

log = logging.getLogger("timewheel.store")

_HEADER_AT = 8
_HEADER_LEN = 56
_HEADER_TAG = "tw2"
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
    each take the other's nonce for a dead process.
    """
    key = os.path.realpath(store_path)
    with _shared_mutex:
        inst = _shared.get(key)
        if inst is None:
            inst = _shared[key] = ProcessLocks(key + ".lock")
        return inst


def check_owner(path: str, st: os.stat_result) -> None:
    """Refuse a file of the store that another user owns: whoever owns it can write pickles
    into it, which this process would run (``chmod`` cannot take that away from its owner)."""
    euid = os.geteuid()
    if st.st_uid != euid:
        raise StoreError(f"{path} belongs to user {_user(st.st_uid)}, not to {_user(euid)} who "
                         "runs this process: refusing it (its owner could make this process run "
                         "any code); use a store in a directory of your own")


def _user(uid: int) -> str:
    try:
        import pwd
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


class Token(NamedTuple):
    """The parts of an owner token ``pid:nonce:slot:file:ino``."""

    pid: int
    nonce: str
    slot: int
    file: Optional[str]     #: the id of the lock file it was issued on (None: before 0.3)
    ino: Optional[int]      #: that lock file's inode number

    @property
    def text(self) -> str:
        return f"{self.pid}:{self.nonce}:{self.slot}:{self.file}:{self.ino}"


def parse_token(token: str) -> Optional[Token]:
    """A token's parts; ``pid:nonce:slot`` (0.2) and ``pid:nonce`` (0.1) still parse."""
    parts = token.split(":")
    try:
        pid = int(parts[0])
        if len(parts) == 2:
            return Token(pid, parts[1], pid, None, None)
        if len(parts) == 3:
            return Token(pid, parts[1], int(parts[2]), None, None)
        if len(parts) == 5:
            return Token(pid, parts[1], int(parts[2]), parts[3], int(parts[4]))
    except ValueError:
        pass
    return None


def _locked_by_other(fd: int, offset: int, length: int) -> bool:
    """Whether another process holds a lock on the range (F_GETLK: takes nothing)."""
    req = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0)
    res = fcntl.fcntl(fd, fcntl.F_GETLK, req)
    return struct.unpack(_FLOCK, res)[0] != fcntl.F_UNLCK


def _slot_offset(slot: int) -> int:
    return _LIVE_BASE + _LIVE_LEN * slot


def _try_lock(fd: int, offset: int, length: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, offset)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _nonce_at(fd: int, slot: int) -> str:
    return os.pread(fd, _LIVE_LEN, _slot_offset(slot)).decode("ascii", "replace")


def _alive_on(fd: int, tok: Token) -> bool:
    """Whether ``tok``'s slot in the lock file ``fd`` is held by another process with its
    nonce (the incarnation itself, or a process that carried the token over)."""
    return (_locked_by_other(fd, _slot_offset(tok.slot), _LIVE_LEN)
            and _nonce_at(fd, tok.slot) == tok.nonce)


def _held_in_gone_file(dev: int, tok: Token) -> bool:
    """Whether a process holds ``tok``'s slot in the lock file ``tok.ino`` that the path no
    longer names (deleted or replaced): read from ``/proc/locks`` (Linux).  Where that cannot
    be read, whether the token's pid still exists -- if it does, it is taken for alive, so a
    task is never run twice on a guess, only perhaps recovered late."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{tok.ino}"
    lo = _slot_offset(tok.slot)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        try:
            os.kill(tok.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 8 or parts[1] != "POSIX" or parts[5] != want:
            continue
        start, end = int(parts[6]), parts[7]
        if start <= lo and (end == "EOF" or int(end) >= lo + _LIVE_LEN - 1):
            return True
    return False


class _Header(NamedTuple):
    file: str
    store: str          #: "dev:ino" of the store file


def _read_header(fd: int) -> Optional[_Header]:
    raw = os.pread(fd, _HEADER_LEN, _HEADER_AT).rstrip(b"\0").decode("ascii", "replace").split()
    if len(raw) == 3 and raw[0] == _HEADER_TAG:
        return _Header(raw[1], raw[2])
    return None     # a new file (or one a timewheel 0.2 leader wrote its token into)


def _write_header(fd: int, header: _Header) -> None:
    text = f"{_HEADER_TAG} {header.file} {header.store}".encode()
    os.pwrite(fd, text.ljust(_HEADER_LEN, b"\0")[:_HEADER_LEN], _HEADER_AT)


def _identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


class _Bound(NamedTuple):
    """This process's hold on one lock file."""

    fd: int
    dev: int
    ino: int
    file: str           #: the file's id (its header)
    slot: int
    nonce: str


class ProcessLocks:
    """This process's liveness slot (and those it carried over) in one store's lock file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.store_path = path[:-len(".lock")]
        self._mutex = threading.Lock()
        self._pid = -1
        self._cur: Optional[_Bound] = None
        #: tokens of this process issued on earlier lock files -> (the old file's hold, the
        #: slot carried into the current file or None): kept while tasks run under them
        self._retired: dict[str, tuple[_Bound, Optional[int]]] = {}
        #: per FileLiveness: the tokens its tasks still run under (see in_use)
        self._users: "weakref.WeakKeyDictionary[object, frozenset[str]]" = weakref.WeakKeyDictionary()
        #: the FileLiveness of this process that ticks, if one does: one per process and file
        #: (the store's lease names the process, whose store instances share its token)
        self.leading: "Optional[weakref.ref[object]]" = None
        _instances.add(self)

    @property
    def token(self) -> str:
        """``"pid:nonce:slot:file:ino"``: names this process incarnation as the owner of a
        claimed task (a new one after the lock file was replaced)."""
        cur = self._ensure()
        return Token(self._pid, cur.nonce, cur.slot, cur.file, cur.ino).text

    def _ensure(self) -> _Bound:
        with self._mutex:
            if self._pid != os.getpid() or self._cur is None:
                self._reset_after_fork()
                self._cur = self._bind(os.getpid())
                self._pid = os.getpid()
            return self._cur

    def _bind(self, pid: int, nonce: Optional[str] = None) -> _Bound:
        """Open the lock file that the path names now, check it, take a slot (and write
        ``nonce`` there: a new one, or this incarnation's, moving to a new file)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the lock file ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{self.path} is not a regular file: it cannot be the store's lock file")
            check_owner(self.path, st)
            header = self._check_header(fd)
            slot = self._take_slot(fd, pid)
            nonce = nonce or os.urandom(_LIVE_LEN // 2).hex()
            os.pwrite(fd, nonce.encode(), _slot_offset(slot))
        except OSError as exc:
            # (a full disk, a file-size limit): closing drops whatever lock was taken
            os.close(fd)
            full = "the disk is full, " if exc.errno == errno.ENOSPC else ""
            raise StoreError(f"{self.path}: cannot write the lock file ({full}{exc.strerror})") from None
        except BaseException:
            os.close(fd)
            raise
        return _Bound(fd, st.st_dev, st.st_ino, header.file, slot, nonce)

    def _check_header(self, fd: int) -> _Header:
        """Read (or write, for a new file) the header, refusing a store file that is not the
        one the live processes of this lock file have open (see :meth:`check_store`)."""
        store = self._store_identity()
        fcntl.lockf(fd, fcntl.LOCK_EX, _HEADER_LEN, _HEADER_AT)     # held for microseconds
        try:
            header = _read_header(fd)
            if header is None:
                header = _Header(os.urandom(8).hex(), store)
                _write_header(fd, header)
            elif header.store != store:
                self._refuse_if_others_live(fd)
                header = header._replace(store=store)
                _write_header(fd, header)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, _HEADER_LEN, _HEADER_AT)
        return header

    def _store_identity(self) -> str:
        try:
            return _identity(os.stat(self.store_path))
        except OSError as exc:
            raise StoreError(f"{self.store_path}: cannot read ({exc.strerror})") from None

    def _refuse_if_others_live(self, fd: int) -> None:
        if _locked_by_other(fd, _LIVE_BASE, 0):
            raise StoreError(
                f"{self.store_path} was replaced or deleted while processes still had the old "
                "file open (they stopped using it and say so in their logs): stop every process "
                "using the store, then start them again")

    def check_store(self) -> None:
        """Before SQLite opens the store file: refuse it if it is not the file the live
        processes of the lock file have open -- it was replaced (a backup restored, a file
        moved over it) or deleted and made anew while they ran, and SQLite would pair it with
        their write-ahead log ("database disk image is malformed").  Creates nothing and
        takes no slot (a process that only enqueues never does); refuses a lock file that
        another user owns."""
        with self._mutex:
            if self._cur is not None and self._pid == os.getpid():
                fd, opened = self._cur.fd, False     # never open and close a second descriptor
            else:
                try:
                    fd, opened = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW), True
                except FileNotFoundError:
                    return
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot open the lock file ({exc.strerror})") from None
            try:
                check_owner(self.path, os.fstat(fd))
                header = _read_header(fd)
                if header is not None and header.store != self._store_identity():
                    self._refuse_if_others_live(fd)
            finally:
                if opened:
                    os.close(fd)      # no lock of ours on that file: closing drops nothing

    @staticmethod
    def _take_slot(fd: int, pid: int) -> int:
        # Our pid's bytes are held for good only by a same-numbered pid of another PID
        # namespace (probes use F_GETLK and never hold them); then take a spare slot.
        if _try_lock(fd, _slot_offset(pid), _LIVE_LEN):
            return pid
        while True:
            slot = _SPARE_SLOTS + int.from_bytes(os.urandom(3), "big")
            if _try_lock(fd, _slot_offset(slot), _LIVE_LEN):
                return slot

    def _reset_after_fork(self) -> None:
        # The descriptors came from the parent; our process holds no locks through them.
        # (Closing them drops no lock of the parent's: record locks belong to a process.)
        for bound in [self._cur] + [b for b, _ in self._retired.values()]:
            if bound is not None:
                try:
                    os.close(bound.fd)
                except OSError:
                    pass
        self._cur = None
        self._retired = {}

    # -- the lock file that is there ----------------------------------------------------------
    def verify(self) -> Optional[str]:
        """Check that the path still names the lock file this process holds; if it was
        deleted or replaced, move to the one there now (creating it) and return what
        happened, for the log.  Cheap: one ``stat``.  Call it once a tick."""
        with self._mutex:
            cur = self._cur
            if cur is None or self._pid != os.getpid():
                return None
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == (cur.dev, cur.ino):
                    return None
                what = "replaced"
            except FileNotFoundError:
                what = "deleted"
            except OSError:
                return None      # (a directory we cannot search any more: nothing to do)
            old = Token(self._pid, cur.nonce, cur.slot, cur.file, cur.ino).text
            # The same nonce in the new file: in the same slot (our pid's, normally), the old
            # tokens are alive there as they are.
            new = self._bind(self._pid, cur.nonce)
            carried = []
            for token, bound in [(old, cur)] + [(t, b) for t, (b, _) in self._retired.items()]:
                slot = new.slot if bound.slot == new.slot else self._carry(new.fd, bound)
                self._retired[token] = (bound, slot)
                carried.append(token)
            self._cur = new
        return (f"{self.path} was {what} while this process used it; it moved to the lock file "
                f"there now and carried its {len(carried)} live token(s) over, so that no "
                "process takes its running tasks for abandoned")

    @staticmethod
    def _carry(fd: int, bound: _Bound) -> Optional[int]:
        """Hold ``bound``'s slot with its nonce in the lock file ``fd`` too, if it is free
        (a slot of ours in a file we moved from, other than the one we have in ``fd``)."""
        if _locked_by_other(fd, _slot_offset(bound.slot), _LIVE_LEN):
            return None
        if not _try_lock(fd, _slot_offset(bound.slot), _LIVE_LEN):
            return None
        os.pwrite(fd, bound.nonce.encode(), _slot_offset(bound.slot))
        return bound.slot

    def in_use(self, user: object, tokens: Iterable[str]) -> None:
        """``user`` (a FileLiveness) still runs tasks under ``tokens``.  Old lock files and
        carried slots that no user needs any more are released."""
        with self._mutex:
            self._users[user] = frozenset(tokens)
            if not self._retired or self._pid != os.getpid():
                return
            needed = set().union(*self._users.values())
            for token in [t for t in self._retired if t not in needed]:
                bound, slot = self._retired.pop(token)
                if slot is not None and self._cur is not None and slot != self._cur.slot:
                    fcntl.lockf(self._cur.fd, fcntl.LOCK_UN, _LIVE_LEN, _slot_offset(slot))
                if not any(b.fd == bound.fd for b, _ in self._retired.values()):
                    os.close(bound.fd)

    # -- probes ---------------------------------------------------------------------------------
    def is_dead(self, token: str) -> bool:
        """True if the process incarnation ``token`` is certainly gone."""
        tok = parse_token(token)
        if tok is None:
            return True
        cur = self._ensure()
        with self._mutex:
            if token in self._retired or (tok.nonce == cur.nonce and tok.slot == cur.slot):
                return False
            if tok.slot == cur.slot and tok.file in (None, cur.file):
                return True          # our own slot under another nonce: a previous incarnation
        return _judge(cur.fd, cur.file, cur.dev, tok)


def _judge(fd: int, file: str, dev: int, tok: Token) -> bool:
    """Whether ``tok`` is dead, probed through the lock file ``fd`` (id ``file``)."""
    if _alive_on(fd, tok):
        return False
    if tok.file is None or tok.file == file:
        return True          # issued on this very file, and its slot is not held
    return not _held_in_gone_file(dev, tok)


class probe:
    """Read-only liveness checks of a lock file, for processes that hold no locks (the CLI).

    Opens nothing for writing and creates nothing; a missing lock file means nobody is alive.
    """

    def __init__(self, store_path: str) -> None:
        try:
            self._fd: Optional[int] = os.open(store_path + ".lock", os.O_RDONLY | os.O_NOFOLLOW)
            st = os.fstat(self._fd)
            header = _read_header(self._fd)
            self._file, self._dev = (header.file if header else ""), st.st_dev
        except OSError:
            self._fd = None

    def is_dead(self, token: str) -> bool:
        tok = parse_token(token)
        if tok is None or self._fd is None:
            return True
        return _judge(self._fd, self._file, self._dev, tok)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileLiveness(Liveness):
    """:class:`Liveness` of one store instance: its process's :class:`ProcessLocks` for who is
    alive, and a lease kept in the store (``role``) for who ticks.

    The ticking role is a lease rather than a lock because a lock lasts as long as its holder
    *exists*: a leader stopped by SIGSTOP, a debugger or a frozen VM would hold the wheel for
    everyone.  The lease lapses ``role_ttl`` after its holder's last renewal (immediately once
    its holder is dead), the next process takes it, and the store refuses to advance for a
    holder that lost it (see :meth:`~timewheel.store.WheelStore.advance`).
    """

    def __init__(self, store_path: str, role: "RoleLease", tick: float) -> None:
        self._locks = locks_for(store_path)
        self._role = role
        #: the role lapses this long after its holder's last renewal
        self.role_ttl = max(0.5, 2 * tick)
        self.renew_every = tick
        self._leading_until = 0.0       # the store's clock: the role is ours at least until then
        self._pid = os.getpid()

    @property
    def token(self) -> str:
        return self._locks.token

    def try_lead(self) -> bool:
        now = self._role.now()
        if self._pid != os.getpid():          # forked: the role stayed with the parent
            self._pid, self._leading_until = os.getpid(), 0.0
        if now < self._leading_until:
            return True
        other = self._locks.leading and self._locks.leading()
        if other is not None and other is not self:
            return False                      # another store instance of this process ticks
        got = self._role.take_role(self.token, now, self.role_ttl, self.is_dead)
        # Ours until now + role_ttl; say so for a third of that, so that a renewal late by a
        # busy store still comes before anyone else may take it.
        self._leading_until = now + self.role_ttl / 3 if got else 0.0
        self._locks.leading = weakref.ref(self) if got else None
        return got

    def resign(self) -> None:
        if self._locks.leading is not None and self._locks.leading() is self:
            self._locks.leading = None
        if self._leading_until:
            self._leading_until = 0.0
            self._role.drop_role(self.token)

    def leader(self) -> Optional[str]:
        holder = self._role.role_holder(self._role.now())
        return None if holder is None or self.is_dead(holder) else holder

    def is_dead(self, token: str) -> bool:
        return self._locks.is_dead(token)

    def verify(self) -> Optional[str]:
        return self._locks.verify()

    def keepalive(self, running: Sequence[TaskRecord]) -> list[str]:
        """Nothing to renew (a lock cannot lapse); tells which tokens the tasks still run
        under, so that old lock files can be let go (see ProcessLocks.verify)."""
        self._locks.in_use(self, {r.owner for r in running if r.owner})
        return []

    def close(self) -> None:
        try:
            self.resign()
        except StoreError as exc:
            log.debug("could not give up the ticking role: %s", exc)
        self._locks.in_use(self, ())


class RoleLease(Protocol):
    """What :class:`FileLiveness` needs of its store for the ticking role (the file store
    keeps it in its metadata, one write transaction per change)."""

    def now(self) -> float: ...

    def take_role(self, token: str, now: float, ttl: float, is_dead: Callable[[str], bool]) -> bool:
        """Make ``token`` the holder until ``now + ttl`` if it holds the role already, nobody
        does, the lease ran out, or its holder ``is_dead``; True if it is the holder."""

    def drop_role(self, token: str) -> None:
        """End ``token``'s lease at once, if it holds the role."""

    def role_holder(self, now: float) -> Optional[str]:
        """Who holds an unexpired lease, if anyone."""


def _after_fork_in_child() -> None:
    global _shared_mutex
    _shared_mutex = threading.Lock()
    for inst in list(_instances):
        inst._mutex = threading.Lock()   # may have been held by a parent thread at fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
