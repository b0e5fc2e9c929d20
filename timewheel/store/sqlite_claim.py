"""The file store's claim, inside its write transaction: the ready bands of the served queues
read highest priority first (one index range per band, a page at a time), each candidate
decided by :class:`timewheel.flow.Admission`, what it takes made running and counted, what a
full limit holds back parked (store/sqlite_flow.py), and the next eta to look at.

Kept apart from store/sqlite.py, which runs it in a transaction of a group commit (shared with
the other writes of its process meanwhile: store/sqlite_group.py): this is the one place where
the file store applies flow control to a claim (issue 21).
"""

from __future__ import annotations

from typing import Callable, Optional

from .. import flow
from ..records import PENDING, RUNNING, RecordDecodeError, TaskRecord, decode_record, encode_record
from ..wheel import Wheel
from . import positions, rules
from .base import Claimed
from .connection import RECORD, TABLE
from .sqlite_counters import Counters, absorb, counted
from .sqlite_file import StoreFile
from .sqlite_flow import LIMITS, PAUSED, FileFlow

__all__ = ["claim_due", "LOOK", "LOOK_INSIDE", "HEADS", "CLAIM_PAGE", "SET_RECORD"]

CLAIM_PAGE = 1000    #: most candidates one claim offers (parking a backlog held by a limit: pages)
#: a record rewritten: value, position, name, rev, by key
SET_RECORD = f'UPDATE "{TABLE}" SET value = ?, pos = ?, name = ?, rev = ? WHERE key = ?'
#: the default band's head, whether other bands have ready rows, the earliest reopening window
HEADS = (f'(SELECT pos FROM "{TABLE}" WHERE pos >= \'{positions.READY}\' AND pos < \'{positions.BANDS}\' '
         "ORDER BY pos LIMIT 1), "
         f'(SELECT 1 FROM "{TABLE}" WHERE pos >= \'{positions.BANDS}\' AND pos < \'{positions.READY_END}\' '
         f'LIMIT 1), (SELECT min(reopen) FROM "{LIMITS}")')
_PAUSED = f'(SELECT group_concat(queue, \',\') FROM "{PAUSED}")'
#: what a claim looks at before it takes the write lock: rows added on their own, the heads,
#: the reopening windows, the pauses
LOOK = f'SELECT (SELECT 1 FROM "{TABLE}" WHERE {positions.IS_FRESH} LIMIT 1), {HEADS}, {_PAUSED}'
LOOK_INSIDE = f"SELECT {HEADS}, {_PAUSED}"      # (the claim's absorb() looks at the fresh rows)


def claim_due(f: StoreFile, wheel: Wheel, owner: str, now: float, limit: int, queued: int, horizon: int,
              queues: Optional[frozenset], fl: FileFlow, saw_horizon: Callable[[int], None]) -> Claimed:
    """A claim of the file store, inside its write transaction (see WheelStore.claim and the
    module's docstring); ``now`` is the clock read under the write lock."""
    absorb(f.x, f.q, wheel.slots, horizon)
    counters = Counters()
    head, others, reopen, paused = f.q(LOOK_INSIDE)[0]
    if reopen is not None and reopen <= now * 1e6:
        fl.release_reopened(now, horizon)
        others = True
    paused = frozenset((paused or "").split(",")) - {""}
    bands = fl.bands(queues, paused, head, others)
    adm = flow.Admission(lambda lim: fl.usage(lim, now), now, limit, queued)
    taken: list[TaskRecord] = []
    updates, broken = [], []
    at = positions.running(owner)
    offered = 0
    # Bands by priority (highest first); within one priority, by eta across queues.
    prios = {b: positions.parse(pos).priority or 0 if b else 0 for b, pos in bands}
    for prio in sorted(set(prios.values()), reverse=True):
        group = [b for b in prios if prios[b] == prio]
        after = dict.fromkeys(group, ("", ""))         # (pos, key) of the last row read
        page = max(1, limit + queued)
        while group and not adm.full and offered < CLAIM_PAGE:
            rows = []
            for b in list(group):
                # (positions tie when etas do: a page goes on after the last (pos, key))
                last_pos, last_key = after[b]
                got = f.q(f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" WHERE pos >= ? AND pos <= ? '
                          "AND (pos > ? OR (pos = ? AND key > ?)) ORDER BY pos, key LIMIT ?",
                          (positions.band_ready(b), positions.band_bound(b, now), last_pos, last_pos,
                           last_key, page))
                if len(got) < page:
                    group.remove(b)              # this band has no more due rows after these
                if got:
                    after[b] = (got[-1][2], got[-1][0])
                rows += got
            if len(after) > 1:
                rows.sort(key=lambda r: r[2][-positions.ETA_W:])
            for key, blob, pos, name in rows:
                if adm.full:
                    break
                offered += 1
                try:
                    rec = decode_record(blob)
                except RecordDecodeError as exc:
                    if rules.set_aside(key[2:], exc):
                        broken.append(key)
                        counters.move(counted(pos, name, None, wheel),
                                      counted(positions.BROKEN_POS, name, None, wheel))
                    continue
                if rec.eta > now:          # the key's microseconds rounded up past a float
                    continue
                if rec.limits:
                    verdict = adm.offer(rec.limits)
                    if verdict.kind == flow.PARK:
                        fl.park(rec, verdict)
                        continue
                    if verdict.kind == flow.LEAVE:
                        continue
                    waits = False
                elif adm.room > 0:                 # (Admission.offer's own rule, inline:
                    adm.room -= 1                  # most tasks have no limit)
                    waits = False
                elif adm.queued > 0:
                    adm.queued -= 1
                    waits = True
                else:
                    continue
                new = rules.claimed(rec, owner, now, queued=waits)
                updates.append((encode_record(new), at, new.name, new.rev, key))
                counters.move((PENDING, rec.name, wheel.due_tick(rec.eta)),
                              (RUNNING, rec.name, None))
                if rec.queue != "default":
                    counters.queue(rec, new)
                if rec.limits:
                    fl.took(rec, now)
                taken.append(new)
    f.many(SET_RECORD, updates)
    if broken:
        f.many(f'UPDATE "{TABLE}" SET pos = ? WHERE key = ?', [(positions.BROKEN_POS, k) for k in broken])
    fl.finish(list(adm.taken), now)
    for key, free in adm.free_slots().items():
        fl.release(key, free, horizon)
    counters.flush(f.x, f.many)
    saw_horizon(horizon)
    head, others, reopen = f.q("SELECT " + HEADS)[0]
    etas = [positions.ready_eta_us(pos) for _, pos in fl.bands(queues, paused, head, others)]
    if reopen is not None:
        etas.append(reopen)
    return Claimed(taken, min(etas) / 1e6 if etas else None)
