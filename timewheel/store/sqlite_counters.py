"""The file store's counters: tasks per state and name, per due tick, per name and due tick, and
occupied cells per slot -- kept by the same transactions that move tasks, so that the CLI and
the web view answer from them without reading the tasks.

A task added on its own (``delay()``) is one INSERT that counts nothing, at an ``n:``
position; :func:`absorb`, in the next transaction of a worker or of the ticking process,
counts such rows in three statements and moves them to the wheel or the ready queue.  Readers
add the few rows not yet absorbed themselves (store/sqlite_read.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

from ..records import PENDING, TaskRecord
from ..wheel import Wheel
from . import positions
from .connection import TABLE

__all__ = ["Counters", "counted", "absorb", "slot_schema", "SLOTS_TABLE", "NAMED_TABLE"]

SLOTS_TABLE = f"{TABLE}_slots"
#: pending tasks per (name, due tick): a timeline of one task name without reading its tasks
NAMED_TABLE = f"{TABLE}_name_ticks"

#: what the counters hold for one row: (state, name, due tick if pending)
Counted = tuple[str, str, Optional[int]]


def counted(pos: Optional[str], name: Optional[str], rec: Optional[TaskRecord],
            wheel: Wheel) -> Optional[Counted]:
    """What the counters hold for a row at ``pos`` (of task ``name``, record ``rec`` if it
    could be decoded, else the tick is read from the position); None for a row not yet
    counted (n:)."""
    state = positions.status_of(pos)
    if state is None:
        return None
    tick = None
    if state == PENDING:
        if rec is not None:
            tick = wheel.due_tick(rec.eta)
        else:
            at = positions.parse(pos or "")
            tick = (at.cycle * wheel.slots + at.slot if at.kind == "p"      # type: ignore[operator]
                    else wheel.due_tick(at.eta_us / 1e6))                   # type: ignore[operator]
    return state, name or "", tick


def slot_schema(slots: int) -> tuple[str, ...]:
    """Occupied (slot, cycle) cells per slot, kept by triggers on the tick counters, so the
    ring's summary reads at most ``slots`` rows instead of every occupied tick (~500,000 on a
    million tasks due over a week).  A tick counter row exists exactly while its tick has
    pending tasks (:class:`Counters` deletes it at zero), so its insert and delete are the
    cell's birth and death.  The slot count is fixed when the store is created, hence a
    literal in the trigger."""
    return (
        f'CREATE TABLE IF NOT EXISTS "{SLOTS_TABLE}" (slot INTEGER PRIMARY KEY, cells INTEGER NOT NULL)',
        f'CREATE TRIGGER IF NOT EXISTS "{TABLE}_cell_added" AFTER INSERT ON "{TABLE}_ticks" BEGIN '
        f'INSERT INTO "{SLOTS_TABLE}" (slot, cells) VALUES (new.tick % {slots}, 1) '
        "ON CONFLICT (slot) DO UPDATE SET cells = cells + 1; END",
        f'CREATE TRIGGER IF NOT EXISTS "{TABLE}_cell_removed" AFTER DELETE ON "{TABLE}_ticks" BEGIN '
        f'UPDATE "{SLOTS_TABLE}" SET cells = cells - 1 WHERE slot = old.tick % {slots}; END',
    )


class Counters:
    """Deltas of the counter tables gathered during one transaction, written at its end."""

    def __init__(self) -> None:
        self.states: Counter[tuple[str, str]] = Counter()
        self.ticks: Counter[int] = Counter()
        self.named: Counter[tuple[str, int]] = Counter()
        #: pending and running tasks of the queues other than "default" (flow control)
        self.queues: Counter[tuple[str, str]] = Counter()

    def queue(self, old: Optional[TaskRecord], new: Optional[TaskRecord]) -> None:
        """A task of another queue than "default" moved from ``old`` to ``new`` (either None)."""
        for rec, d in ((old, -1), (new, 1)):
            if rec is not None and rec.queue != "default" and rec.status in ("pending", "running"):
                self.queues[(rec.queue, rec.status)] += d

    def move(self, old: Optional[Counted], new: Optional[Counted]) -> None:
        for item, d in ((old, -1), (new, 1)):
            if item is None:
                continue
            state, name, tick = item
            self.states[(state, name)] += d
            if tick is not None:
                self.ticks[tick] += d
                self.named[(name, tick)] += d

    def flush(self, x: Callable[..., int], many: Callable[..., int]) -> None:
        """Write the deltas with ``x(sql, params)`` and ``many(sql, rows)``, then forget them."""
        states = [(s, n, d) for (s, n), d in self.states.items() if d]
        ticks = [(t, d) for t, d in self.ticks.items() if d]
        if states:
            many(f'INSERT INTO "{TABLE}_counts" (state, name, n) VALUES (?, ?, ?) '
                 "ON CONFLICT (state, name) DO UPDATE SET n = n + excluded.n", states)
            x(f'DELETE FROM "{TABLE}_counts" WHERE n <= 0')
        if ticks:
            many(f'INSERT INTO "{TABLE}_ticks" (tick, n) VALUES (?, ?) '
                 "ON CONFLICT (tick) DO UPDATE SET n = n + excluded.n", ticks)
            many(f'DELETE FROM "{TABLE}_ticks" WHERE tick = ? AND n <= 0',
                 [(t,) for t, d in ticks if d < 0])
        named = [(name, t, d) for (name, t), d in self.named.items() if d]
        if named:
            many(f'INSERT INTO "{NAMED_TABLE}" (name, tick, n) VALUES (?, ?, ?) '
                 "ON CONFLICT (name, tick) DO UPDATE SET n = n + excluded.n", named)
            many(f'DELETE FROM "{NAMED_TABLE}" WHERE name = ? AND tick = ? AND n <= 0',
                 [(name, t) for name, t, d in named if d < 0])
        queues = [(q, s, d) for (q, s), d in self.queues.items() if d]
        if queues:
            many(f'INSERT INTO "{TABLE}_queues" (queue, state, n) VALUES (?, ?, ?) '
                 "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n", queues)
            x(f'DELETE FROM "{TABLE}_queues" WHERE n <= 0')
        self.states.clear()
        self.ticks.clear()
        self.named.clear()
        self.queues.clear()


def absorb(x: Callable[..., int], q: Callable[..., list], slots: int, horizon: int) -> None:
    """Count the rows added on their own since the last transaction and move them to the
    wheel or, if their tick is within ``horizon``, to ready.  Inside a write transaction."""
    if not q(f'SELECT 1 FROM "{TABLE}" WHERE {positions.IS_FRESH} LIMIT 1'):
        return
    args = {"slots": slots, "horizon": horizon}
    fresh, name, tick = positions.IS_FRESH, positions.FRESH_NAME, positions.TICK_OF_CELL
    x(f'INSERT INTO "{TABLE}_counts" (state, name, n) SELECT \'pending\', {name}, count(*) '
      f'FROM "{TABLE}" WHERE {fresh} GROUP BY 2 '
      "ON CONFLICT (state, name) DO UPDATE SET n = n + excluded.n")
    x(f'INSERT INTO "{TABLE}_ticks" (tick, n) SELECT {tick}, count(*) FROM "{TABLE}" WHERE {fresh} '
      "GROUP BY 1 ON CONFLICT (tick) DO UPDATE SET n = n + excluded.n", args)
    x(f'INSERT INTO "{NAMED_TABLE}" (name, tick, n) SELECT {name}, {tick}, count(*) '
      f'FROM "{TABLE}" WHERE {fresh} GROUP BY 1, 2 '
      "ON CONFLICT (name, tick) DO UPDATE SET n = n + excluded.n", args)
    x(f'UPDATE "{TABLE}" SET pos = CASE WHEN {tick} <= :horizon THEN {positions.READY_OF_FRESH} '
      f"ELSE {positions.WHEEL_OF_FRESH} END WHERE {fresh}", args)
