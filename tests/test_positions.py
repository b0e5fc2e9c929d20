"""The file store's position codec (timewheel/store/positions.py), without a store: every
position reads back as what was written, the index's string order is the numbers' order the
store relies on, and the SQL that reads fields in place agrees with the codec.  Each is run
through SQLite itself, the one that orders and slices the positions."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.records import CANCELLED, FAILED, MISFIRED, PENDING, RUNNING, SUCCEEDED
from timewheel.store import positions as P
from timewheel.store.base import eta_us
from timewheel.wheel import MAX_SLOTS, Wheel

from .conftest import make_record

slots_ = st.integers(1, MAX_SLOTS)
ticks = st.integers(0, 10 ** 13)           # past year 9999 at the shortest tick of 1 ms
etas_us = st.integers(0, 253402300799 * 10 ** 6)
#: task names are printable (the API refuses others), owners liveness tokens: no NUL, which
#: SQLite's substr() would cut at
names = st.text(min_size=1, max_size=30).filter(str.isprintable)
owners = st.text(max_size=40).filter(str.isprintable)
finished_statuses = st.sampled_from([SUCCEEDED, FAILED, CANCELLED, MISFIRED])
ms = st.integers(0, 253402300799 * 10 ** 3)


def _sql(expr: str, pos: str, **args: object) -> object:
    """``expr`` evaluated by SQLite on a row whose ``pos`` is ``pos``."""
    con = sqlite3.connect(":memory:")
    try:
        return con.execute(f"SELECT {expr} FROM (SELECT :pos AS pos)", {"pos": pos, **args}).fetchone()[0]
    finally:
        con.close()


@given(slots_, ticks, etas_us, names)
def test_a_fresh_position_reads_back_in_python_and_in_sql(slots: int, tick: int, eta: int, name: str) -> None:
    pos = P.FRESH_AT % (P.fresh_cell(tick, slots), eta, name)
    assert P.parse(pos) == P.Position("n", tick % slots, tick // slots, eta, name)
    assert P.status_of(pos) is None                       # not counted yet
    assert _sql(P.TICK_OF_CELL, pos, slots=slots) == tick
    assert _sql(P.FRESH_ETA, pos) == P.eta_field(eta) and int(P.eta_field(eta)) == eta
    assert _sql(P.FRESH_NAME, pos) == name
    assert _sql(P.READY_OF_FRESH, pos) == P.ready(eta)
    assert _sql(P.WHEEL_OF_FRESH, pos) == P.AT % (P.cell(tick, slots), eta)
    assert _sql(P.IS_FRESH, pos) == 1 and _sql(P.IS_IN_WHEEL, pos) == 0


@given(slots_, ticks, etas_us)
def test_a_wheel_position_reads_back_and_sits_in_its_cells_range(slots: int, tick: int, eta: int) -> None:
    pos = P.AT % (P.cell(tick, slots), eta)
    assert P.parse(pos) == P.Position("p", tick % slots, tick // slots, eta)
    assert P.status_of(pos) == PENDING
    assert _sql(P.TICK_OF_CELL, pos, slots=slots) == tick
    assert _sql(P.READY_OF_CELL, pos) == P.ready(eta)
    lo, hi = P.cell_range(tick, slots)
    assert lo <= pos < hi
    for other in (tick - 1, tick + 1, tick + slots, tick - slots):
        if other >= 0:
            lo, hi = P.cell_range(other, slots)
            assert not lo <= pos < hi


@given(etas_us, owners, finished_statuses, ms)
def test_ready_running_finished_and_broken_positions_read_back(eta: int, owner: str, status: str,
                                                               at: int) -> None:
    assert P.parse(P.ready(eta)) == P.Position("q", eta_us=eta) and P.status_of(P.ready(eta)) == PENDING
    assert P.ready_eta_us(P.ready(eta)) == eta
    assert P.parse(P.running(owner)) == P.Position("r", owner=owner)
    assert P.status_of(P.running(owner)) == RUNNING and _sql(P.OWNER, P.running(owner)) == owner
    assert P.parse(P.finished(status, at)) == P.Position("x", status=status, finished_ms=at)
    assert P.status_of(P.finished(status, at)) == status
    assert P.parse(P.BROKEN_POS) == P.Position("b") and P.status_of(P.BROKEN_POS) == "broken"


def _index_order(positions: list[str]) -> list[str]:
    """The positions in the order SQLite's index (of TEXT, BINARY collation) holds them."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE t (pos TEXT)")
        con.execute("CREATE INDEX t_pos ON t (pos)")
        con.executemany("INSERT INTO t VALUES (?)", [(p,) for p in positions])
        return [p for (p,) in con.execute("SELECT pos FROM t INDEXED BY t_pos WHERE pos > '' ORDER BY pos")]
    finally:
        con.close()


@given(st.lists(etas_us, min_size=2, max_size=40),
       st.sampled_from([Wheel(), Wheel(60, 0.25), Wheel(7, 86400.0)]))
def test_ready_order_is_tick_then_eta_order(etas: list[int], wheel: Wheel) -> None:
    """The ready queue is read in index order: it must be (due tick, eta) order."""
    by_numbers = sorted(etas, key=lambda e: (wheel.due_tick(e / 1e6), e))
    assert _index_order([P.ready(e) for e in etas]) == [P.ready(e) for e in by_numbers]


@given(st.lists(st.tuples(ticks, etas_us), min_size=2, max_size=40), slots_)
def test_wheel_order_is_slot_then_tick_then_eta(cells: list[tuple[int, int]], slots: int) -> None:
    """A slot holds its cycles in tick order and a cell its tasks in eta order, so a cell is
    one range and a slot's cells come due in the order they are read."""
    by_numbers = sorted(cells, key=lambda c: (c[0] % slots, c[0], c[1]))
    assert _index_order([P.AT % (P.cell(t, slots), e) for t, e in cells]) == [
        P.AT % (P.cell(t, slots), e) for t, e in by_numbers]


@given(st.lists(st.tuples(finished_statuses, ms), min_size=2, max_size=40))
def test_finished_order_is_status_then_finish_time(done: list[tuple[str, int]]) -> None:
    """Most recent first is a range of one status read backwards."""
    code = {s: P.CODES[s] for s in P.CODES}
    by_numbers = sorted(done, key=lambda d: (code[d[0]], d[1]))
    assert _index_order([P.finished(s, t) for s, t in done]) == [P.finished(s, t) for s, t in by_numbers]
    for status, t in done:
        lo, hi = P.RANGE[status]
        assert lo <= P.finished(status, t) < hi
        assert all(not P.RANGE[o][0] <= P.finished(status, t) < P.RANGE[o][1] for o in P.RANGE if o != status)


@given(st.sampled_from([Wheel(), Wheel(60, 0.25), Wheel(MAX_SLOTS, 0.001)]),
       st.floats(0, 253402300799.0), st.integers(-5, 5))
def test_a_pending_record_goes_to_its_cell_or_ready_queue(wheel: Wheel, eta: float, ahead: int) -> None:
    rec = make_record("x", eta)
    tick = wheel.due_tick(eta)
    horizon = tick + ahead
    pos = P.of(rec, horizon, wheel)
    if tick <= horizon:
        assert pos == P.ready(eta_us(eta))
    else:
        assert P.parse(pos) == P.Position("p", tick % wheel.slots, tick // wheel.slots, eta_us(eta))
    lo, hi = P.RANGE[PENDING]
    assert lo <= pos < hi


@pytest.mark.parametrize("garbage", ["", "z:1", "q:abc", "q:12", "p:000001:xyz", "p:1:2:3",
                                     "x:z:000000000000001", "x:s:12", "b:x", "n:000001:000000000000000:1",
                                     "q:" + "1" * 19])
def test_anything_else_is_refused(garbage: str) -> None:
    with pytest.raises(ValueError):
        P.parse(garbage)
    if not garbage.startswith("q:"):
        return
    with pytest.raises(ValueError):
        P.ready_eta_us(garbage)
