"""Pure wheel arithmetic: never early, right slot and cycle, no skipped or repeated ticks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.wheel import Wheel

etas = st.floats(min_value=0, max_value=2.5e11, allow_nan=False, allow_infinity=False)
wheels = st.builds(Wheel, slots=st.integers(1, 999_999),
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


@pytest.mark.parametrize("kwargs", [dict(slots=0), dict(slots=-1), dict(slots=1.5), dict(tick=0),
                                    dict(tick=-1), dict(tick=float("nan")), dict(tick=True)])
def test_bad_geometry_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Wheel(**kwargs)


@pytest.mark.parametrize("t", [float("nan"), float("inf"), 1e300, -1e300, 1e13])
def test_times_no_caller_can_mean_are_refused_not_spun_on(t: float) -> None:
    with pytest.raises(ValueError):
        Wheel().due_tick(t)
    with pytest.raises(ValueError):
        Wheel().current_tick(t)
