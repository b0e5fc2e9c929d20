"""Pure arithmetic of the hashed timing wheel: no I/O, no threads, no clock.

Time is absolute (unix seconds).  Tick ``T`` covers the half-open interval
``((T - 1) * tick, T * tick]``; a task due at ``eta`` belongs to the smallest tick whose end
is not before ``eta`` (rounding *up*, as Linux timers do, never down as Kafka's wheel can).
The ring has ``slots`` entries; tick ``T`` lives in slot ``T % slots`` under cycle
``T // slots``.  Storing the absolute cycle instead of Netty's "remaining rounds" counter means
an entry is written once and never touched again as the wheel turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import shown

__all__ = ["Wheel"]


MAX_SLOTS = 999_999        #: slot numbers are six digits in the store's keys
MIN_TICK, MAX_TICK = 0.001, 86400.0


@dataclass(frozen=True)
class Wheel:
    """Geometry of the ring: how many slots and how long one tick lasts."""

    slots: int = 3600
    tick: float = 1.0

    def __post_init__(self) -> None:
        slots = self.slots
        if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be an int from 1 to {MAX_SLOTS}, got {shown(self.slots)}")
        if not isinstance(self.tick, (int, float)) or isinstance(self.tick, bool):
            raise ValueError(f"tick must be a number of seconds, got {shown(self.tick)}")
        # nan and inf fail the comparison; a huge int too, where math.isfinite() would overflow
        if not MIN_TICK <= self.tick <= MAX_TICK:
            raise ValueError(f"tick must be from {MIN_TICK:g} to {MAX_TICK:g} seconds, "
                             f"got {shown(self.tick)}")

    def tick_end(self, tick: int) -> float:
        """The instant at which tick ``tick`` ends (and the next begins)."""
        return tick * self.tick

    def due_tick(self, eta: float) -> int:
        """The tick a task due at ``eta`` belongs to: the first whose end is >= eta.

        Floating-point division can land one off either way (0.3 / 0.1 == 2.999...), so the
        estimate is corrected against :meth:`tick_end`, which is what the boss compares with.
        (``tick_end`` is inlined here: this runs once per enqueued task.)
        """
        if not -1e12 <= eta <= 1e12:      # also refuses NaN: see _check_time
            _check_time(eta)
        tick = self.tick
        t = math.ceil(eta / tick)
        while t * tick < eta:
            t += 1
        while (t - 1) * tick >= eta:
            t -= 1
        return t

    def current_tick(self, now: float) -> int:
        """The last tick that has fully ended at ``now`` (its end is <= now)."""
        if not -1e12 <= now <= 1e12:
            _check_time(now)
        t = math.floor(now / self.tick)
        while self.tick_end(t) > now:
            t -= 1
        while self.tick_end(t + 1) <= now:
            t += 1
        return t

    def slot(self, tick: int) -> int:
        return tick % self.slots

    def cycle(self, tick: int) -> int:
        return tick // self.slots


def _check_time(t: float) -> None:
    # Beyond ~2**53 ticks a float step is larger than one tick and the corrections above
    # would never end: refuse times no caller can mean (the API stops at year 9999).
    raise ValueError(f"time {shown(t)} is outside what the wheel can place (|t| <= 1e12 s)")
