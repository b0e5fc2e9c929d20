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
from typing import Iterator, NamedTuple

__all__ = ["Wheel", "SlotRange", "retry_backoff"]


class SlotRange(NamedTuple):
    """A run of ticks that share one slot: ``cycle_lo..cycle_hi`` inclusive."""

    slot: int
    cycle_lo: int
    cycle_hi: int


@dataclass(frozen=True)
class Wheel:
    """Geometry of the ring: how many slots and how long one tick lasts."""

    slots: int = 3600
    tick: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.slots, int) or isinstance(self.slots, bool) or self.slots < 1:
            raise ValueError(f"slots must be a positive int, got {self.slots!r}")
        if not isinstance(self.tick, (int, float)) or isinstance(self.tick, bool):
            raise ValueError(f"tick must be a number of seconds, got {self.tick!r}")
        if not (math.isfinite(self.tick) and self.tick > 0):
            raise ValueError(f"tick must be a positive number of seconds, got {self.tick!r}")

    def tick_end(self, tick: int) -> float:
        """The instant at which tick ``tick`` ends (and the next begins)."""
        return tick * self.tick

    def due_tick(self, eta: float) -> int:
        """The tick a task due at ``eta`` belongs to: the first whose end is >= eta.

        Floating-point division can land one off either way (0.3 / 0.1 == 2.999...), so the
        estimate is corrected against :meth:`tick_end`, which is what the boss compares with.
        """
        t = math.ceil(eta / self.tick)
        while self.tick_end(t) < eta:
            t += 1
        while self.tick_end(t - 1) >= eta:
            t -= 1
        return t

    def current_tick(self, now: float) -> int:
        """The last tick that has fully ended at ``now`` (its end is <= now)."""
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

    def ranges(self, after: int, through: int) -> Iterator[SlotRange]:
        """Slot ranges covering exactly the ticks in ``(after, through]``.

        A short gap is walked tick by tick, in time order.  A gap longer than one revolution
        (downtime, a clock jump) is covered slot by slot, so catching up after a week off
        costs ``slots`` range reads instead of 604,800.
        """
        if through <= after:
            return
        if through - after <= self.slots:
            for t in range(after + 1, through + 1):
                c = t // self.slots
                yield SlotRange(t % self.slots, c, c)
            return
        first = after + 1
        for s in range(self.slots):
            t0 = first + (s - first) % self.slots
            t1 = through - (through - s) % self.slots
            if t0 <= t1:
                yield SlotRange(s, t0 // self.slots, t1 // self.slots)


def retry_backoff(retry_delay: float, attempt: int, factor: float = 2.0,
                  cap: float = 6 * 3600.0) -> float:
    """Seconds to wait before re-running after failed attempt number ``attempt`` (1-based).

    ``retry_delay * factor ** (attempt - 1)``, capped at ``cap`` (6 h) so a long retry chain
    cannot push a task years out.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    try:
        return min(cap, retry_delay * factor ** (attempt - 1))
    except OverflowError:
        return cap
