"""The clock of a server that keeps the store's time (Redis, PostgreSQL), read in a client.

Etas, claims and leases are judged by the server's clock, so that hosts whose clocks are off
neither start a task early nor count ``count_down`` from the wrong now.  Asking the server at
every ``now()`` would cost a round trip; :class:`ServerClock` measures the offset of the
server's clock to the local one (the best of three round trips: the shortest bounds the error
best, +-half of it), re-measures it every ``resync`` seconds, and never answers less than a
server time already seen (a task claimed at the server's time is never recorded as started
before it).
"""

from __future__ import annotations

import math
from typing import Callable

from ..errors import StoreError

__all__ = ["ServerClock"]


class ServerClock:
    """``now()`` on the server's clock, from ``read_server()`` (one round trip: the server's
    time in unix seconds) and the local ``clock``."""

    def __init__(self, read_server: Callable[[], float], clock: Callable[[], float],
                 resync: float = 10.0) -> None:
        self._read, self._clock, self._resync = read_server, clock, resync
        self._offset = 0.0
        self._sync_at = -math.inf
        self._floor = -math.inf        # the latest server time seen

    def sync(self) -> None:
        """Measure the offset of the server's clock to ours."""
        best = None
        for _ in range(3):
            before = self._clock()
            server = self._read()
            after = self._clock()
            if best is None or after - before < best[0]:
                best = (after - before, server - (before + after) / 2)
            self.saw(server)
        assert best is not None
        self._offset = best[1]
        self._sync_at = self._clock()

    def saw(self, server_time: float) -> None:
        """A time the server said (a claim's): ``now()`` never answers less from now on."""
        self._floor = max(self._floor, server_time)

    def now(self) -> float:
        t = self._clock()
        if not self._sync_at <= t < self._sync_at + self._resync:
            try:
                self.sync()
                t = self._clock()
            except StoreError:
                self._sync_at = t - self._resync + 1.0    # keep the old offset; look again in 1 s
        return max(t + self._offset, self._floor)
