"""Pure wheel arithmetic: never early, right slot and cycle, no skipped or repeated ticks."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from timewheel.wheel import SlotRange, Wheel, retry_backoff

etas = st.floats(min_value=0, max_value=2.5e11, allow_nan=False, allow_infinity=False)
wheels = st.builds(Wheel, slots=st.integers(1, 5000),
                   tick=st.sampled_from([1.0, 0.5, 0.1, 0.25, 2.0, 3600.0, 0.001]))


@given(wheels, etas)
def test_due_tick_is_the_first_tick_ending_at_or_after_eta(w: Wheel, eta: float) -> None:
    t = w.due_tick(eta)
    assert w.tick_end(t) >= eta          # loaded no later than its eta: never early, never missed
    assert w.tick_end(t - 1) < eta       # and not a tick too late


@given(wheels, etas)
def test_current_tick_has_ended(w: Wheel, now: float) -> None:
    t = w.current_tick(now)
    assert w.tick_end(t) <= now < w.tick_end(t + 1)


@given(wheels, etas)
def test_a_task_is_loaded_before_its_eta(w: Wheel, eta: float) -> None:
    # The boss loads tick current+1 at each boundary: at the boundary just before eta, the
    # task's tick is already loaded.
    t = w.due_tick(eta)
    boundary = w.tick_end(t - 1)
    assert boundary < eta
    assert w.current_tick(boundary) + 1 >= t


@given(wheels, st.integers(0, 10**9))
def test_slot_and_cycle_recompose_the_tick(w: Wheel, t: int) -> None:
    assert w.cycle(t) * w.slots + w.slot(t) == t
    assert 0 <= w.slot(t) < w.slots


@pytest.mark.parametrize("count_down,expected_ticks",
                         [(0, 0), (1, 1), (3599, 3599), (3600, 3600), (7201, 7201)])
def test_count_down_edges_on_a_tick_boundary(count_down: int, expected_ticks: int) -> None:
    w = Wheel()
    now = 1_700_000_000.0                     # on a boundary
    t = w.due_tick(now + count_down)
    assert t - w.current_tick(now) == expected_ticks
    assert w.slot(t) == (w.slot(w.current_tick(now)) + expected_ticks) % 3600
    assert w.cycle(t) == (1_700_000_000 + expected_ticks) // 3600


@pytest.mark.parametrize("count_down", [0.001, 0.5, 0.999, 1.001, 3599.5, 3600.2, 7200.9])
def test_fractional_count_down_rounds_up(count_down: float) -> None:
    w = Wheel()
    now = 1_700_000_000.25
    t = w.due_tick(now + count_down)
    assert t == math.ceil(now + count_down)


@given(st.integers(1, 50), st.integers(0, 10**7), st.integers(0, 300))
@settings(max_examples=300)
def test_ranges_cover_every_tick_exactly_once(slots: int, after: int, gap: int) -> None:
    w = Wheel(slots=slots)
    through = after + gap
    covered: list[int] = []
    for r in w.ranges(after, through):
        assert isinstance(r, SlotRange)
        for c in range(r.cycle_lo, r.cycle_hi + 1):
            covered.append(c * slots + r.slot)
    assert sorted(covered) == list(range(after + 1, through + 1))


def test_ranges_after_long_downtime_cost_one_read_per_slot() -> None:
    w = Wheel()
    week = 7 * 86400
    ranges = list(w.ranges(1_700_000_000, 1_700_000_000 + week))
    assert len(ranges) == 3600
    assert sum(r.cycle_hi - r.cycle_lo + 1 for r in ranges) == week


def test_ranges_short_gap_is_in_time_order() -> None:
    w = Wheel()
    ticks = [r.cycle_lo * 3600 + r.slot for r in w.ranges(100, 110)]
    assert ticks == list(range(101, 111))


def test_clock_going_back_gives_no_ranges() -> None:
    assert list(Wheel().ranges(500, 400)) == []
    assert list(Wheel().ranges(500, 500)) == []


@pytest.mark.parametrize("kwargs", [dict(slots=0), dict(slots=-1), dict(slots=1.5), dict(tick=0),
                                    dict(tick=-1), dict(tick=float("nan")), dict(tick=True)])
def test_bad_geometry_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Wheel(**kwargs)


def test_retry_backoff_doubles_and_caps() -> None:
    assert [retry_backoff(2.0, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert retry_backoff(1.0, 10_000) == 6 * 3600.0
    with pytest.raises(ValueError):
        retry_backoff(1.0, 0)


@given(st.floats(0, 1e6), st.integers(1, 200))
def test_retry_backoff_is_monotonic_and_bounded(base: float, n: int) -> None:
    assume(base >= 0)
    assert retry_backoff(base, n) <= retry_backoff(base, n + 1) <= 6 * 3600.0
