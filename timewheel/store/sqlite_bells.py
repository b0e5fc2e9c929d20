"""The file store's doorbells: waking the runners of every process on this host.

Each runner listens on an abstract unix datagram socket (:class:`SocketBell`) whose name is
registered in the store's metadata map (``bell:<name>`` -> the owner's liveness token), so
whoever adds a task that is due within the horizon can ring every runner; the ticking process
forgets the names of dead owners.  Linux only (abstract names); elsewhere the in-process bell
is used and other processes find new work at their next look, within one tick.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import sys
import time
from typing import Callable, Optional

from ..errors import StoreError
from .base import Doorbell
from .sqlite_file import StoreFile

__all__ = ["Doorbells", "SocketBell"]

log = logging.getLogger("timewheel.store")

_PREFIX = "bell:"
_REFRESH = 1.0            #: seconds the list of bells (and the horizon) is read again after


class Doorbells:
    """The registry of a store's bells and the ringing of them.

    :param file: the store's file (its metadata map holds the registry).
    :param horizon: reads the stored horizon (in a transaction of ``file``).
    """

    def __init__(self, file: StoreFile, horizon: Callable[[], int]) -> None:
        self._file = file
        self._horizon = horizon
        self._names: tuple[float, list[str]] = (-1e9, [])
        self._horizon_hint: tuple[float, int] = (-1e9, 0)

    @functools.cached_property
    def prefix(self) -> str:
        """The start of the names of this store's bells, the same in every process that opens
        the file.  Only runners need it: hashlib (OpenSSL) is imported here, not by the CLI's
        start-up."""
        import hashlib
        return "timewheel-" + hashlib.sha1(os.path.realpath(self._file.path).encode()).hexdigest()[:16] + "-"

    def bell(self, owner: str) -> Doorbell:
        """A bell for one runner of the process ``owner``; close it when done."""
        if sys.platform != "linux" or self._file.readonly:
            return Doorbell()
        return SocketBell(self, owner)

    def register(self, name: str, owner: str) -> None:
        with self._file.writing():
            self._file.meta[_PREFIX + name] = owner
        self._names = (-1e9, [])

    def unregister(self, name: str) -> None:
        with self._file.writing():
            meta = self._file.meta
            if _PREFIX + name in meta:
                del meta[_PREFIX + name]

    def forget_dead(self, is_dead: Callable[[str], bool]) -> None:
        """Unregister the bells of dead owners (and any whose owner cannot be read); inside a
        write transaction of the store."""
        meta = self._file.meta
        for key in [k for k in meta.keys() if k.startswith(_PREFIX)]:
            try:
                owner = meta[key]
            except ValueError:            # not a value we wrote: nobody's
                owner = None
            if not isinstance(owner, str) or is_dead(owner):
                del meta[key]

    def ring(self) -> None:
        """Wake every runner of the store, in any process on this host."""
        if sys.platform != "linux":
            return
        at, names = self._names
        if time.monotonic() - at > _REFRESH:
            try:
                with self._file.reading():
                    names = [k[len(_PREFIX):] for k in self._file.meta.keys() if k.startswith(_PREFIX)]
            except StoreError:
                return
            self._names = (time.monotonic(), names)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for name in names:
                try:
                    s.sendto(b"!", "\0" + name)
                except OSError:          # gone, or its queue is full: it will look anyway
                    pass

    def saw_horizon(self, horizon: int) -> None:
        """The horizon just read in a transaction: ring_if_near() needs no read for a while."""
        self._horizon_hint = (time.monotonic(), horizon)

    def ring_if_near(self, tick: Optional[int]) -> None:
        """Ring if a task just became pending (the earliest in tick ``tick``) in a tick that
        is, or is about to be, ready."""
        if tick is None:
            return
        at, horizon = self._horizon_hint
        if time.monotonic() - at > _REFRESH:
            try:
                with self._file.reading():
                    horizon = self._horizon()
            except StoreError:
                return
            self.saw_horizon(horizon)
        # Two ticks of slack: the hint may be a tick old, and the ticker about to advance.
        if tick <= horizon + 2:
            self.ring()


class SocketBell(Doorbell):
    """A doorbell that crosses processes: an abstract unix datagram socket of one runner."""

    def __init__(self, bells: Doorbells, owner: str) -> None:
        super().__init__()
        self._bells = bells
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"{bells.prefix}{os.urandom(6).hex()}"
        self._sock.bind("\0" + self.name)
        self._sock.setblocking(False)
        try:
            bells.register(self.name, owner)
        except BaseException:
            self._sock.close()
            raise

    def ring(self) -> None:
        self._bells.ring()

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
            self._bells.unregister(self.name)
        except StoreError:
            log.debug("could not unregister doorbell %s", self.name, exc_info=True)
        self._sock.close()
