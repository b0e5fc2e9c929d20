"""Where a task sits in the file store: the keys of the ``pos`` column, built and read here only.

=====================================  ========================================================
``n:<slot>:<cycle>:<eta>:<name>``      added on its own, not yet counted (see sqlite.py)
``p:<slot>:<cycle>:<eta>``             pending in the wheel: slot ``tick % slots`` of cycle
                                       ``tick // slots``
``q:<eta>``                            ready: its tick is within the horizon
``p:...:<eta>:~<queue>:<p>``,          the same for a task of another queue or priority than
``q:~<queue>:<p>:<eta>``               ("default", 0): its *band*, ``<p>`` = ``100 - priority``
                                       in 3 digits, so that higher priorities sort first
``l:<limit>:<p>:<eta>:<queue>``        due, parked on a full limit (``<limit>``: 16 hex digits
                                       of the SHA-1 of its key), until a slot frees or its rate
                                       window reopens (store/sqlite.py); ``<limit>`` 16 zeros
                                       (:data:`WAITING`): waiting for its dependencies until the
                                       last one succeeds (store/sqlite_deps.py)
``r:<owner>``                          running, claimed by the process ``owner``
``x:<s|f|c|m|a>:<finished>``           succeeded / failed / cancelled / misfired / aborted
``b:``                                 a record that cannot be decoded
=====================================  ========================================================

Numbers are zero-padded to fixed widths (:data:`SLOT_W`, :data:`CYCLE_W`; etas in whole
microseconds, :func:`~timewheel.store.base.eta_us`, :data:`ETA_W`; finish times in
milliseconds, :data:`FINISHED_W`), so that the index orders positions as their numbers: one
cell of the wheel is a key range ordered by eta, "ready and due at ``now``" is the range up to
:func:`ready_bound`, "succeeded, most recent first" a range read backwards.  The SQL that reads
fields out of a position in place (:data:`TICK_OF_CELL`, ...) is built from the same widths.

The ready queue is one key range per band: ``q:`` + digits (queue "default", priority 0: the
positions of timewheel 0.3, so its stores need no conversion) sorts before every
``q:~<queue>:<p>:`` range, and a claim reads the due part of each band it serves, highest
priority first, never the bands of other queues (flow control, issue 21).  Rows added on their
own (``n:``) are always of the default band: a task of another band is added counted.

Pure: no I/O.  The format strings are constants so that the store's batch insert formats its
rows inline: a call per task (15-60 ns) would add up to 3% to its ~2 us of Python per task.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

from ..records import ABORTED, CANCELLED, FAILED, MISFIRED, PENDING, RUNNING, SUCCEEDED, TaskRecord
from ..wheel import Wheel
from .base import BROKEN, eta_us, finished_ms

__all__ = ["Position", "parse", "ready_eta_us", "status_of", "of", "fresh_cell", "cell", "cell_range",
           "ready", "ready_bound", "running", "finished", "BROKEN_POS", "AT", "FRESH_AT", "RANGE",
           "IS_FRESH", "IS_READY", "IS_RUNNING", "IS_IN_WHEEL", "TICK_OF_CELL", "FRESH_ETA",
           "FRESH_NAME", "READY_OF_CELL", "WHEEL_OF_FRESH", "OWNER", "READY_ETA", "READY", "READY_END",
           "eta_field", "READY_OF_FRESH", "BANDS", "PARKED", "PARKED_END", "band", "band_ready",
           "band_bound", "band_of_ready", "limit_hash", "parked", "parked_range", "PARKED_LIMIT",
           "PARKED_QUEUE", "IS_PARKED", "WAITING", "IS_FINISHED"]

SLOT_W, CYCLE_W, ETA_W, FINISHED_W = 6, 15, 18, 15
CODES = {SUCCEEDED: "s", FAILED: "f", CANCELLED: "c", MISFIRED: "m", ABORTED: "a"}
_STATUS_OF_CODE = {c: s for s, c in CODES.items()}
BROKEN_POS = "b:"
#: the ready queue's range: its positions are ``READY`` followed by the eta
READY, READY_END = "q:", "q;"
#: where the default band's ready rows end and the other bands' begin
BANDS = "q:~"
PARKED, PARKED_END = "l:", "l;"
_P_LEN = len("p:") + SLOT_W + 1 + CYCLE_W + 1 + ETA_W      # a p: position of the default band

_CELL = f"%0{SLOT_W}d:%0{CYCLE_W}d:"           # slot, cycle
#: a counted position: a cell's (or ``"q:"``'s) prefix, then the eta in microseconds
AT = f"%s%0{ETA_W}d"
#: the position of a row added on its own: its cell, its eta, its task's name
FRESH_AT = f"%s%0{ETA_W}d:%s"
_FINISHED = f"x:%s:%0{FINISHED_W}d"

# 1-based offsets of the fields of n: and p: positions, as SQL's substr() counts
_SLOT_AT = len("p:") + 1
_CYCLE_AT = _SLOT_AT + SLOT_W + 1
_ETA_AT = _CYCLE_AT + CYCLE_W + 1
_NAME_AT = _ETA_AT + ETA_W + 1

#: SQL: the due tick of an n: or p: row (bind ``:slots``)
TICK_OF_CELL = (f"CAST(substr(pos, {_CYCLE_AT}, {CYCLE_W}) AS INTEGER) * :slots "
                f"+ CAST(substr(pos, {_SLOT_AT}, {SLOT_W}) AS INTEGER)")
#: SQL: the eta field of an n: row, as text (compare it with :func:`eta_field`)
FRESH_ETA = f"substr(pos, {_ETA_AT}, {ETA_W})"
#: SQL: the task name at the end of an n: row: counted from the index alone
FRESH_NAME = f"substr(pos, {_NAME_AT})"
#: SQL: the ready position of a p: row (its band, if any, moves before the eta)
READY_OF_CELL = (f"'{READY}' || CASE WHEN length(pos) > {_P_LEN} THEN substr(pos, {_P_LEN + 2}) || ':' "
                 f"ELSE '' END || substr(pos, {_ETA_AT}, {ETA_W})")
#: SQL: the ready position of an n: row (always of the default band)
READY_OF_FRESH = f"'{READY}' || substr(pos, {_ETA_AT}, {ETA_W})"
#: SQL: the wheel position of an n: row (its name dropped)
WHEEL_OF_FRESH = f"'p:' || substr(pos, {_SLOT_AT}, {_NAME_AT - 1 - _SLOT_AT})"
#: SQL: the owner of an r: row
OWNER = "substr(pos, 3)"
#: SQL: the eta field of a q: row (of any band: the last digits)
READY_ETA = f"substr(pos, -{ETA_W})"

#: SQL: the hash of the limit an l: row is parked on, and its queue
PARKED_LIMIT = "substr(pos, 3, 16)"
PARKED_QUEUE = f"substr(pos, {len('l:') + 16 + 1 + 3 + 1 + ETA_W + 1 + 1})"
IS_PARKED = "pos >= 'l:' AND pos < 'l;'"
IS_FRESH = "pos >= 'n:' AND pos < 'n;'"
IS_IN_WHEEL = "pos >= 'p:' AND pos < 'p;'"
IS_READY = f"pos >= '{READY}' AND pos < '{READY_END}'"
IS_RUNNING = "pos >= 'r:' AND pos < 'r;'"
IS_FINISHED = "pos >= 'x:' AND pos < 'x;'"
#: the ``pos`` range of each status (pending: the n:, p: and q: rows; no position starts with o)
RANGE = {PENDING: ("n:", "q;"), RUNNING: ("r:", "r;"),
         **{status: (f"x:{code}:", f"x:{code};") for status, code in CODES.items()}}


class Position(NamedTuple):
    """The fields of a position; those its kind does not have are None."""

    kind: str                        #: n, p, q, l, r, x or b
    slot: Optional[int] = None       #: n, p
    cycle: Optional[int] = None      #: n, p
    eta_us: Optional[int] = None     #: n, p, q, l
    name: Optional[str] = None       #: n
    owner: Optional[str] = None      #: r
    status: Optional[str] = None     #: x
    finished_ms: Optional[int] = None  #: x
    queue: Optional[str] = None      #: p, q, l (a band's; None: the default band)
    priority: Optional[int] = None   #: p, q, l (the same)
    limit: Optional[str] = None      #: l: the hash of the limit it is parked on


def _number(text: str, width: int) -> int:
    if len(text) != width or not text.isascii() or not text.isdigit():
        raise ValueError(f"position field {text[:30]!r} is not {width} digits")
    return int(text)


def parse(pos: str) -> Position:
    """The fields of ``pos``; ValueError if it is not a position any write of ours makes."""
    kind, body = pos[:1], pos[2:]
    if pos[1:2] != ":" or kind not in "npqlrxb":
        raise ValueError(f"unknown position {pos[:40]!r}")
    if kind == "n":
        parts = body.split(":", 3)
        if len(parts) != 4:
            raise ValueError(f"position {pos[:40]!r} has not the fields of its kind")
        return Position(kind, _number(parts[0], SLOT_W), _number(parts[1], CYCLE_W),
                        _number(parts[2], ETA_W), parts[3])
    if kind == "p":
        parts = body.split(":", 3)
        if len(parts) not in (3, 4):
            raise ValueError(f"position {pos[:40]!r} has not the fields of its kind")
        queue, priority = _band_of(parts[3]) if len(parts) == 4 else (None, None)
        return Position(kind, _number(parts[0], SLOT_W), _number(parts[1], CYCLE_W),
                        _number(parts[2], ETA_W), queue=queue, priority=priority)
    if kind == "q":
        if body[:1] == "~":
            band, _, eta = body.rpartition(":")
            queue, priority = _band_of(band)
            return Position(kind, eta_us=_number(eta, ETA_W), queue=queue, priority=priority)
        return Position(kind, eta_us=_number(body, ETA_W))
    if kind == "l":
        parts = body.split(":", 3)
        if len(parts) != 4 or len(parts[0]) != 16:
            raise ValueError(f"position {pos[:40]!r} has not the fields of its kind")
        return Position(kind, eta_us=_number(parts[2], ETA_W), queue=parts[3],
                        priority=100 - _number(parts[1], 3), limit=parts[0])
    if kind == "r":
        return Position(kind, owner=body)
    if kind == "x":
        status = _STATUS_OF_CODE.get(body[:1])
        if status is None or body[1:2] != ":":
            raise ValueError(f"unknown position {pos[:40]!r}")
        return Position(kind, status=status, finished_ms=_number(body[2:], FINISHED_W))
    if body:
        raise ValueError(f"unknown position {pos[:40]!r}")
    return Position(kind)


def _band_of(band: str) -> tuple[str, int]:
    """(queue, priority) of a band ``~<queue>:<p>``."""
    queue, _, code = band[1:].rpartition(":")
    if band[:1] != "~" or not queue:
        raise ValueError(f"unknown band {band[:40]!r}")
    return queue, 100 - _number(code, 3)


def ready_eta_us(pos: str) -> int:
    """The eta of a ready (q:) position, in microseconds: :func:`parse` cut short for the
    claim, which reads the ready queue's head at every round (a damaged one: ValueError)."""
    if not pos.startswith(READY) or not (len(pos) == len(READY) + ETA_W or (
            pos[2:3] == "~" and pos[-ETA_W - 1:-ETA_W] == ":")):
        raise ValueError(f"{pos[:40]!r} is not a ready position")
    return _number(pos[-ETA_W:], ETA_W)


def band(queue: str, priority: int) -> str:
    """The band of (queue, priority): ``""`` for the default one, else ``~<queue>:<p>``."""
    return "" if queue == "default" and priority == 0 else "~%s:%03d" % (queue, 100 - priority)


def band_ready(band_: str) -> str:
    """The start of a band's ready positions (then comes the eta)."""
    return READY + band_ + ":" if band_ else READY


def band_bound(band_: str, now: float) -> str:
    """The last ready position of ``band_`` due at ``now``."""
    return AT % (band_ready(band_), int(now * 1e6))


def band_of_ready(pos: str) -> str:
    """The band of a ready position (``""``: the default one)."""
    return pos[2:-ETA_W - 1] if pos[2:3] == "~" else ""


def limit_hash(key: str) -> str:
    """The 16 hex digits that name a limit in parked positions."""
    import hashlib
    return hashlib.sha1(key.encode()).hexdigest()[:16]


#: the limit hash of the tasks waiting for their dependencies (no limit's key hashes to it)
WAITING = "0" * 16


def parked(limit: str, rec: TaskRecord) -> str:
    """Where ``rec`` waits for the limit of hash ``limit``: by priority, then eta."""
    return "l:%s:%03d:%0*d:%s" % (limit, 100 - rec.priority, ETA_W, eta_us(rec.eta), rec.queue)


def parked_range(limit: str) -> tuple[str, str]:
    return f"l:{limit}:", f"l:{limit};"


def status_of(pos: Optional[str]) -> Optional[str]:
    """The status the counters hold for a row at ``pos``: None for a row not yet counted (n:),
    ``"broken"`` for b: (and a row without a position)."""
    kind = pos[:1] if pos else "b"
    if kind == "n":
        return None
    if kind in "pql":
        return PENDING
    if kind == "r":
        return RUNNING
    if kind == "x":
        status = _STATUS_OF_CODE.get(pos[2:3])
        if status is None:
            raise ValueError(f"unknown position {pos[:40]!r}")
        return status
    return BROKEN


@functools.lru_cache(maxsize=64)
def fresh_cell(tick: int, slots: int) -> str:
    """How the position of a row added on its own begins: then come its eta and its task's
    name (:data:`FRESH_AT`).  Cached: tasks added one by one mostly share ticks."""
    return "n:" + _CELL % (tick % slots, tick // slots)


def cell(tick: int, slots: int) -> str:
    """The prefix of the positions of tick ``tick``'s cell of the wheel (its slot and cycle)."""
    return "p:" + _CELL % (tick % slots, tick // slots)


def cell_range(tick: int, slots: int) -> tuple[str, str]:
    """The ``pos`` range [lo, hi) of tick ``tick``'s cell, in eta order."""
    lo = cell(tick, slots)
    return lo, lo[:-1] + ";"


def eta_field(us: int) -> str:
    """An eta in microseconds as positions hold it (to compare with :data:`FRESH_ETA`)."""
    return "%0*d" % (ETA_W, us)


def ready(us: int) -> str:
    return AT % (READY, us)


def ready_bound(now: float) -> str:
    """The last ready position due at ``now``: ``pos <= ready_bound(now)``."""
    return AT % (READY, int(now * 1e6))


def running(owner: str) -> str:
    return "r:" + owner


def finished(status: str, ms: int) -> str:
    return _FINISHED % (CODES[status], ms)


def of(rec: TaskRecord, horizon: int, wheel: Wheel) -> str:
    """Where ``rec`` belongs, given the horizon: a counted position, never n: (nor l:,
    which only a claim gives)."""
    if rec.status == PENDING:
        if rec.waiting:                  # waiting for its dependencies (issue 23): parked apart
            return parked(WAITING, rec)
        t = wheel.due_tick(rec.eta)
        b = band(rec.queue, rec.priority)
        if not b:
            return AT % (READY if t <= horizon else cell(t, wheel.slots), eta_us(rec.eta))
        if t <= horizon:
            return AT % (band_ready(b), eta_us(rec.eta))
        return AT % (cell(t, wheel.slots), eta_us(rec.eta)) + ":" + b
    if rec.status == RUNNING:
        return "r:" + (rec.owner or "")
    return _FINISHED % (CODES[rec.status], finished_ms(rec.finished))     # (inline: once per write)
