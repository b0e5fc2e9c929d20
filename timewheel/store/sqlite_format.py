"""The file store's format: creating a store, reading its geometry, converting older ones.

============  ==========================================================================
format        layout
============  ==========================================================================
timewheel/5   batches (issue 23): their tables (store/sqlite_batches.py), and records that
              name their batch in a field timewheel 0.4 cannot read (so it must refuse the file);
              the inbox other tools enqueue through (issue 26: store/sqlite_inbox.py)
timewheel/4   flow control (timewheel 0.4): its tables (store/sqlite_flow.py) and the positions
              of bands and parked tasks (store/positions.py)
timewheel/3   (timewheel 0.3) the bookkeeping in the metadata map (``timewheel_meta``,
              sqlitedict's table, values pickled: see store/connection.py); a ``rev`` column
              beside each record
timewheel/2   (timewheel 0.2) the bookkeeping as raw ``m:<name>`` rows of the task table
timewheel/1   (timewheel 0.1) a record row plus index rows (``w:``, ``l:``, ``r:``, ...) per task
============  ==========================================================================

An older store is converted in place, in one transaction, the first time it is opened for
writing: every process that shares it must run this version (an older process refuses a
converted file by name: 0.2 reads ``m:format``, 0.3 and 0.4 the metadata's ``format``).  From
0.4 the conversion only adds the batches' tables, from 0.3 flow control's too: every position
0.3 and 0.4 wrote means the same in 0.5, and a task without flow options or a batch is stored
as 0.3 stored it.  A read-only open reads a 0.3 or 0.4
store as it is (no queue but "default", no limits, no pauses; no batches).  A read-only open
reads a 0.2 store as it is (:class:`~timewheel.store.sqlite_file.LegacyMeta`) and refuses a 0.1
one until it is converted.  The ``rev`` column is filled as records are written: a row last
written by 0.2 holds NULL there, and its record's ``rev`` (see store/rules.py).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..errors import NotAStore, StoreError, StoreMismatch, shown
from ..records import RecordDecodeError, decode_record, encode_record
from ..wheel import Wheel
from . import positions
from .connection import RECORD, SCHEMA, TABLE
from .sqlite_batches import BATCHES
from .sqlite_batches import SCHEMA as BATCH_SCHEMA
from .sqlite_counters import NAMED_TABLE, SLOTS_TABLE, Counters, counted, slot_schema
from .sqlite_deps import SCHEMA as DEPS_SCHEMA
from .sqlite_file import (
    FORMAT,
    V1_FORMAT,
    V2_FORMAT,
    V3_FORMAT,
    V4_FORMAT,
    LegacyMeta,
    StoreFile,
    stored_format,
)
from .sqlite_flow import SCHEMA as FLOW_SCHEMA
from .sqlite_inbox import INBOX
from .sqlite_inbox import SCHEMA as INBOX_SCHEMA

__all__ = ["set_up", "geometry", "horizon_of", "Layout"]

log = logging.getLogger("timewheel.store")

#: what the bookkeeping holds besides ``format``: the geometry, the horizon, the ticking
#: process's token, its lease and the time of its last advance; plus ``bell:<name>`` (doorbells)
_V2_KEYS = ("slots", "tick", "horizon", "leader", "lease", "advanced")


class Layout:
    """Which of the observers' counter tables a store has (a read-only open of a store
    written before they existed has neither; a write open adds them)."""

    def __init__(self, slot_cells: bool, named_ticks: bool, flow: bool = True, batches: bool = True) -> None:
        self.slot_cells = slot_cells      #: per-slot occupied cells (slot_schema)
        self.named_ticks = named_ticks    #: pending tasks per (name, due tick)
        self.flow = flow                  #: flow control's tables (a read-only open of 0.3: none)
        self.batches = batches            #: the batches' tables (a read-only open of 0.3, 0.4: none)


def set_up(f: StoreFile, wheel: Optional[Wheel], now: float) -> tuple[Wheel, Layout]:
    """Create, convert or check the store in ``f`` as ``wheel`` (None: whatever it was made
    with); its geometry and layout."""
    with f.reading():
        fmt = _format(f)
    if fmt is None:
        if f.readonly:
            raise NotAStore(f"{f.path} is not a timewheel store (no timewheel data in it)")
        stored = _initialise(f, wheel or Wheel(), now)
    else:
        if fmt in (V1_FORMAT, V2_FORMAT, V3_FORMAT, V4_FORMAT) and not f.readonly:
            _convert(f)
        elif fmt == V2_FORMAT:
            f.legacy = True
        elif fmt not in (FORMAT, V4_FORMAT, V3_FORMAT):
            raise NotAStore(f"{f.path} has store format {shown(fmt)}; this timewheel reads {FORMAT!r}")
        with f.reading():
            stored = geometry(f)
    if wheel is not None and wheel != stored:
        raise StoreMismatch(
            f"{f.path} was created with slots={stored.slots}, tick={stored.tick}; "
            f"cannot open it with slots={wheel.slots}, tick={wheel.tick}")
    with f.reading():
        layout = Layout(f.has_table(SLOTS_TABLE), f.has_table(NAMED_TABLE), f.has_table(f"{TABLE}_paused"),
                        f.has_table(BATCHES))
        inbox = f.has_table(INBOX)
    if not (layout.slot_cells and layout.named_ticks) and not f.readonly:
        _add_observer_counters(f, stored)
        layout = Layout(True, True, layout.flow, layout.batches)
    if not f.readonly and not inbox:          # a /5 file made before the inbox (unreleased)
        with f.writing():
            for ddl in INBOX_SCHEMA:
                f.x(ddl)
    return stored, layout


def _format(f: StoreFile) -> Any:
    tables = {r[0] for r in f.q("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return stored_format(f.q, tables)


def geometry(f: StoreFile) -> Wheel:
    """The stored wheel (inside a transaction of ``f``)."""
    meta = f.meta
    try:
        return Wheel(slots=int(meta["slots"]), tick=float(meta["tick"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise NotAStore(f"{f.path}: its wheel geometry is damaged ({exc})") from None


def horizon_of(f: StoreFile) -> int:
    """The stored horizon (inside a transaction of ``f``)."""
    try:
        value = f.meta["horizon"]
    except (KeyError, ValueError) as exc:
        raise StoreError(f"{f.path}: its bookkeeping is damaged (horizon: {exc})") from None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise StoreError(f"{f.path}: its bookkeeping is damaged (horizon {shown(value)})") from None


def _initialise(f: StoreFile, wheel: Wheel, now: float) -> Wheel:
    """Write the schema and bookkeeping of a new store; if another process just did, return
    the geometry it chose instead."""
    f.make_private()
    with f.writing():
        if _format(f) is not None:
            return geometry(f)
        for ddl in (SCHEMA + slot_schema(wheel.slots) + FLOW_SCHEMA + BATCH_SCHEMA + DEPS_SCHEMA
                    + INBOX_SCHEMA):
            f.x(ddl)
        _mark_format(f)
        f.meta.update(slots=wheel.slots, tick=float(wheel.tick), horizon=wheel.current_tick(now),
                      format=FORMAT)
    log.info("created store %s (slots=%d, tick=%gs)", f.path, wheel.slots, wheel.tick)
    return wheel


def _mark_format(f: StoreFile) -> None:
    """The one ``m:`` row of this format: what timewheel 0.1 and 0.2 read to tell the format."""
    f.x(f'INSERT OR REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)', ("m:format", FORMAT))


def _convert(f: StoreFile) -> None:
    """timewheel/1, /2, /3 or /4 -> /5, in one transaction (another process may have done it
    meanwhile: then nothing)."""
    with f.writing():
        fmt = _format(f)
        if fmt in (V3_FORMAT, V4_FORMAT):
            for ddl in (FLOW_SCHEMA if fmt == V3_FORMAT else ()) + BATCH_SCHEMA + DEPS_SCHEMA + INBOX_SCHEMA:
                f.x(ddl)
            _mark_format(f)
            f.meta["format"] = FORMAT
            log.warning("converted %s from the store format of timewheel %s (%s) to %s", f.path,
                        "0.3" if fmt == V3_FORMAT else "0.4", fmt, FORMAT)
            return
        if fmt not in (V1_FORMAT, V2_FORMAT):
            return
        columns = {r[1] for r in f.q(f'PRAGMA table_info("{TABLE}")')}
        for col, kind in (("pos", "TEXT"), ("name", "TEXT"), ("rev", "INTEGER")):
            if col not in columns:
                f.x(f'ALTER TABLE "{TABLE}" ADD COLUMN {col} {kind}')
        for ddl in SCHEMA[1:] + FLOW_SCHEMA + BATCH_SCHEMA + DEPS_SCHEMA + INBOX_SCHEMA:
            f.x(ddl)
        old = LegacyMeta(f)
        if fmt == V1_FORMAT:
            n = _convert_v1(f, old)
            log.warning("converted %s from the store format of timewheel 0.1 (%d tasks)", f.path, n)
        # The bookkeeping moves to the metadata map (pickled, as sqlitedict keeps values): the
        # geometry and horizon as the numbers they are read as, the rest as it was; the m:
        # rows go, but for the format mark.
        f.meta.update({k: old[k] for k in old if k in _V2_KEYS or k.startswith("bell:")})
        wheel = geometry(f)
        f.meta.update(slots=wheel.slots, tick=float(wheel.tick), horizon=horizon_of(f))
        f.x(f'DELETE FROM "{TABLE}" WHERE key >= \'m:\' AND key < \'m;\'')
        _mark_format(f)
        f.meta["format"] = FORMAT
    if fmt == V2_FORMAT:
        log.warning("converted %s from the store format of timewheel 0.2 (%s) to %s", f.path,
                    V2_FORMAT, FORMAT)


def _convert_v1(f: StoreFile, old: LegacyMeta) -> int:
    """The records of 0.1 get their position, name and rev; its index rows go; the counters
    are built.  Returns how many records were converted."""
    try:
        wheel = Wheel(slots=int(old["slots"]), tick=float(old["tick"]))
        horizon = int(old["horizon"])
    except (KeyError, TypeError, ValueError) as exc:
        raise NotAStore(f"{f.path}: its bookkeeping is damaged ({exc})") from None
    counters = Counters()
    n = 0
    after = "t:"
    while True:
        rows = f.q(f'SELECT key, value FROM "{TABLE}" WHERE key > ? AND key < ? ORDER BY key LIMIT 1000',
                   (after, "t;"))
        if not rows:
            break
        updates = []
        for key, blob in rows:
            try:
                rec = decode_record(blob)
            except RecordDecodeError:
                updates.append((blob, positions.BROKEN_POS, None, None, key))
                counters.move(None, counted(positions.BROKEN_POS, "", None, wheel))
                continue
            pos = positions.of(rec, horizon, wheel)
            updates.append((encode_record(rec), pos, rec.name, rec.rev, key))
            counters.move(None, counted(pos, rec.name, rec, wheel))
            n += 1
        f.many(f'UPDATE "{TABLE}" SET value = ?, pos = ?, name = ?, rev = ? WHERE key = ?', updates)
        after = rows[-1][0]
    f.x(f'DELETE FROM "{TABLE}" WHERE key < \'m:\' OR (key > \'m;\' AND key < \'t:\') OR key > \'t;\'')
    f.x(f'DELETE FROM "{TABLE}" WHERE key = \'m:done\'')
    counters.flush(f.x, f.many)
    return n


def _add_observer_counters(f: StoreFile, wheel: Wheel) -> None:
    """Create the per-slot cell counts (see :func:`slot_schema`) and the per-name tick
    counters, filled from what the store holds: on a converted store and one written before
    they existed.  (Rows not yet absorbed are counted when absorbed.)"""
    with f.writing():
        if not f.has_table(SLOTS_TABLE):
            for ddl in slot_schema(wheel.slots):
                f.x(ddl)
            f.x(f'INSERT INTO "{SLOTS_TABLE}" (slot, cells) SELECT tick % ?, count(*) '
                f'FROM "{TABLE}_ticks" GROUP BY 1', (wheel.slots,))
        if not f.has_table(NAMED_TABLE):
            f.x(next(ddl for ddl in SCHEMA if NAMED_TABLE in ddl))
            # Tasks in the wheel carry their tick in their position; the few ready ones
            # (within the horizon) are decoded for theirs.
            f.x(f'INSERT INTO "{NAMED_TABLE}" (name, tick, n) SELECT coalesce(name, \'\'), '
                f'{positions.TICK_OF_CELL}, count(*) FROM "{TABLE}" WHERE {positions.IS_IN_WHEEL} '
                "GROUP BY 1, 2", {"slots": wheel.slots})
            counters = Counters()
            for blob, name in f.q(f'SELECT {RECORD}, name FROM "{TABLE}" WHERE {positions.IS_READY}'):
                try:
                    rec = decode_record(blob)
                except RecordDecodeError:
                    continue
                counters.named[(name or "", wheel.due_tick(rec.eta))] += 1
            counters.flush(f.x, f.many)

