"""A store holding tasks in every status, written through the store interface (so on every
backend): what the web view's and the CLI's tests look at, and what the benchmarks add to a
store of a million pending tasks.

    demo = fill(store, time.time())
    demo.running        # ids of the running tasks (their owner, DEAD_OWNER, is not alive)

Names and errors include :data:`HOSTILE_NAME` and :data:`HOSTILE_ERROR` (markup, terminal
escapes, a right-to-left override): whatever shows the store must print them inert.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Optional

from ..records import Outcome, TaskRecord, cancel, end_run, skip_misfired
from ..store.base import WheelStore
from ..store.rules import claimed

__all__ = ["DEAD_OWNER", "HOSTILE_ERROR", "HOSTILE_NAME", "Demo", "fill", "record", "run_as_worker"]

HOSTILE_NAME = "<script>alert('name')</script>\x1b[31mred\u202e"
HOSTILE_ERROR = "ValueError: <img src=x onerror=alert('error')> \x1b]0;pwned\x07"
DEAD_OWNER = "999999999:deadbeef:999999999"


@dataclass
class Demo:
    """What :func:`fill` put in the store, by state (ids)."""

    pending: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    misfired: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    hostile: str = ""
    #: due tick -> ids of pending tasks placed there on purpose (for the ring)
    placed: dict[int, list[str]] = field(default_factory=dict)


def record(task_id: str, eta: float, name: str = "emails.send", **fields: Any) -> TaskRecord:
    """A pending task record due at ``eta`` (created a minute before), its arguments pickled;
    ``fields`` set any other :class:`TaskRecord` field."""
    fields.setdefault("payload", pickle.dumps(((task_id, 42), {"to": "ann@example.com"})))
    fields.setdefault("created", eta - 60)
    return TaskRecord(id=task_id, name=name, eta=eta, **fields)


def _swap(store: WheelStore, old: TaskRecord, new: TaskRecord) -> TaskRecord:
    (done,) = store.swap([(old, new)])
    if done is None:
        raise RuntimeError(f"the store refused to update {old.id!r}: it changed meanwhile")
    return done


def run_as_worker(store: WheelStore, rec: TaskRecord, owner: str, ok: Optional[bool], late: float = 0.25,
                  error: str = HOSTILE_ERROR) -> TaskRecord:
    """Take ``rec`` through a run as a worker ``owner`` would, started ``late`` seconds after
    its eta: start it; then, unless ``ok`` is None (left running), record its outcome (a
    failure with ``error``)."""
    started = rec.eta + late
    running = _swap(store, rec, claimed(rec, owner, started))
    if ok is None:
        return running
    out = (Outcome(ok=True, started=started, finished=started + 0.1, result=pickle.dumps({"sent": rec.id}))
           if ok else Outcome(ok=False, started=started, finished=started + 0.1, error=error,
                              traceback="Traceback (most recent call last):\n  File \"app.py\", line 7\n"
                                        + error))
    return _swap(store, running, end_run(running, out))


def fill(store: WheelStore, now: float, *, owner: str = DEAD_OWNER) -> Demo:
    """Tasks in every state; the running ones belong to ``owner``.  Pending tasks sit at
    known ticks (two in one tick, one a revolution later in the same slot)."""
    demo = Demo()
    w = store.wheel
    current = w.current_tick(now)
    placed = [current + 120, current + 120, current + 120 + w.slots, current + 900, current + 2500]
    recs = []
    for i, tick in enumerate(placed):
        r = record(f"p{i:03d}", w.tick_end(tick) - 0.5, name="reports.build")
        recs.append(r)
        demo.placed.setdefault(tick, []).append(r.id)
    for i in range(20):
        recs.append(record(f"q{i:03d}", now + 4000 + 600 * i, name="billing.charge"))
    hostile = record("h<b>1</b>", now + 7000, name=HOSTILE_NAME)
    recs.append(hostile)
    store.add(recs)
    demo.pending = [r.id for r in recs]
    demo.hostile = hostile.id
    finished = [record(f"s{i:03d}", now - 1500 + 30 * i) for i in range(12)]
    finished += [record(f"f{i:03d}", now - 900 + 30 * i) for i in range(6)]
    finished += [record(f"m{i:03d}", now - 600 + 30 * i, misfire_grace=0.01) for i in range(3)]
    finished += [record(f"r{i:03d}", now - 300 + 30 * i) for i in range(3)]
    finished += [record("c000", now + 50000)]
    store.add(finished)
    for r in finished:
        kind = r.id[0]
        if kind == "s":
            run_as_worker(store, r, owner, True)
            demo.succeeded.append(r.id)
        elif kind == "f":
            run_as_worker(store, r, owner, False)
            demo.failed.append(r.id)
        elif kind == "m":
            running = _swap(store, r, claimed(r, owner, r.eta + 0.5))
            _swap(store, running, skip_misfired(running, r.eta + 0.5))
            demo.misfired.append(r.id)
        elif kind == "r":
            run_as_worker(store, r, owner, None)
            demo.running.append(r.id)
        else:
            _swap(store, r, cancel(r, now))
            demo.cancelled.append(r.id)
    return demo
