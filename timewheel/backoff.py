"""Exponential backoff: the pauses between attempts of something that fails for a while (a
store that is busy, full or away; a subscription that dropped; a result not there yet).

Pure: it only counts; the caller sleeps (or waits on an event) as long as it says.
"""

from __future__ import annotations

from typing import Iterator

from .records import retry_backoff

__all__ = ["backoff"]


def backoff(first: float, most: float) -> Iterator[float]:
    """Pauses ``first``, ``2 * first``, ``4 * first``, ... up to ``most``, then ``most``
    forever: ``pauses = backoff(0.05, 5.0)``, then ``time.sleep(next(pauses))`` after each
    failure, and a new iterator once it works again.  The same doubling as a task's retry
    delay (:func:`~timewheel.records.retry_backoff`)."""
    if not 0 < first <= most:
        raise ValueError(f"backoff needs 0 < first <= most, got {first!r} and {most!r}")
    attempt = 1
    while True:
        pause = retry_backoff(first, attempt, cap=most)
        yield pause
        if pause < most:
            attempt += 1
