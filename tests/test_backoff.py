"""The one exponential backoff (timewheel/backoff.py) and the one duration parser
(timewheel.text.duration): pure, so tested without sleeping."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.backoff import backoff
from timewheel.records import retry_backoff
from timewheel.text import duration


@given(first=st.floats(1e-6, 10.0), factor=st.integers(1, 10 ** 6), n=st.integers(1, 200))
def test_backoff_doubles_from_first_up_to_most_and_stays(first: float, factor: int, n: int) -> None:
    most = first * factor
    pauses = list(itertools.islice(backoff(first, most), n))
    assert pauses[0] == first and max(pauses) <= most
    for a, b in zip(pauses, pauses[1:]):
        assert b == min(most, 2 * a) or b == pytest.approx(min(most, 2 * a))
    assert pauses == [retry_backoff(first, k + 1, cap=most) for k in range(n)]   # a task's doubling


def test_backoff_as_the_store_and_the_handles_use_it() -> None:
    assert list(itertools.islice(backoff(0.005, 0.1), 8)) == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1, 0.1]
    assert list(itertools.islice(backoff(0.05, 5.0), 9))[-3:] == [3.2, 5.0, 5.0]
    for first, most in ((0, 1), (-1, 1), (2, 1)):
        with pytest.raises(ValueError, match="first <= most"):
            next(backoff(first, most))


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 7 * 86400), ("1w", 7 * 86400), ("1h30m", 5400),
    (" 1.5H ", 5400), ("0s", 0), ("1d12h", 129600), ("36500d", 36500 * 86400)])
def test_durations_people_write(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text, why", [
    ("", "is not a duration"), ("30", "is not a duration"), ("10 m", "is not a duration"),
    ("-5s", "is not a duration"), ("1y", "is not a duration"), ("\x1b[2Jm", r"'\\x1b[2Jm' is not"),
    ("1" * 13 + "s", "is not a duration"), ("36700d", "longer than 100 years")])
def test_anything_else_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[")):
        duration(text)
