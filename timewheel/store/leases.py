"""Liveness by leases on a server (Redis, PostgreSQL): what both servers' stores share.

A process proves it is alive by renewing a heartbeat that lapses ``alive_ttl`` after its last
renewal, and holds each claim by a lease of ``store.lease`` seconds; the ticking role is a lease
too, of ``role_ttl``. The bookkeeping on this side (the token of this incarnation, how long we
may still call ourselves leader, which claims were already reported lost) is the same for every
server; how a lease is taken, renewed and given up is one statement or script per server, in
the subclass.
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import time
from typing import Any, Sequence

from ..errors import StoreError
from ..records import TaskRecord
from .base import Liveness

log = logging.getLogger("timewheel")


class LeaseLiveness(Liveness):
    """:class:`Liveness` for a store on a server: heartbeats and leases that lapse on their own.

    ``renew_every`` tells the boss how often to call :meth:`keepalive` while tasks run.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._pid = -1
        self._token = ""
        self._leading_until = 0.0       # monotonic: the role is ours at least until then
        self._lost: dict[str, int] = {}   # id -> rev of claims already reported lost
        self.renew_every = store.lease / 3
        #: the ticking role lapses this long after its holder's last renewal
        self.role_ttl = max(0.5, 2 * store.wheel.tick)
        #: a process's heartbeat lapses this long after its last sign of life
        self.alive_ttl = max(store.lease, 3 * store.wheel.tick)

    @property
    def token(self) -> str:
        pid = os.getpid()
        if pid != self._pid:      # a new process (fork): a new incarnation, nothing inherited
            self._pid, self._leading_until = pid, 0.0
            kind = "readonly" if self._store.readonly else os.urandom(6).hex()
            self._token = f"{socket.gethostname()}:{pid}:{kind}"
            self._new_incarnation()
        return self._token

    def try_lead(self) -> bool:
        if self._store.readonly:
            return False
        now = time.monotonic()
        if now < self._leading_until:
            return True
        got = self._lead(self.token, now)
        # Ours for role_ttl from the renewal; say so for a third of that, measured from
        # before the call, so that we stop saying "leader" well before the lease can lapse.
        self._leading_until = now + self.role_ttl / 3 if got else 0.0
        return got

    def resign(self) -> None:
        self._leading_until = 0.0
        if not self._store.readonly:
            self._resign(self.token, final=False)

    def keepalive(self, running: Sequence[TaskRecord]) -> list[str]:
        """Renew; returns each claim whose lease was lost once (it is not renewed again)."""
        if self._store.readonly or not running:
            return []
        self._lost = {r.id: r.rev for r in running if self._lost.get(r.id) == r.rev}
        lost = self._renew(self.token, [r for r in running if r.id not in self._lost])
        revs = {r.id: r.rev for r in running}
        self._lost.update((i, revs[i]) for i in lost)
        return lost

    def close(self) -> None:
        self._leading_until = 0.0
        if self._store.readonly or self._pid != os.getpid():
            return
        try:
            self._resign(self._token, final=True)
        except StoreError as exc:
            log.debug("could not resign %s: %s", self._token, exc)

    # -- one statement or script each, on the server --------------------------------------

    def _new_incarnation(self) -> None:
        """Called once per process when its token is made (a fork makes a new one)."""

    @abc.abstractmethod
    def _lead(self, token: str, now: float) -> bool:
        """Take or renew the ticking role for ``role_ttl`` (and our heartbeat); True if ours."""

    @abc.abstractmethod
    def _renew(self, token: str, live: Sequence[TaskRecord]) -> list[str]:
        """Renew our heartbeat and the leases of ``live``; returns the ids whose lease was lost."""

    @abc.abstractmethod
    def _resign(self, token: str, final: bool) -> None:
        """Give the ticking role up; ``final``: the process is closing, drop its heartbeat too."""
