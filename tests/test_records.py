"""The task state machine and the record codec: pure functions, no threads, no files."""

from __future__ import annotations

import pickle
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.records import (
    CANCELLED,
    FAILED,
    MAX_BACKOFF,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Outcome,
    RecordDecodeError,
    TaskRecord,
    cancel,
    decode_record,
    encode_record,
    end_run,
    is_misfire,
    requeue_crashed,
    reset_for_retry,
    retry_backoff,
    skip_misfired,
    start_run,
)

from .conftest import make_record

times = st.floats(0, 2.5e11, allow_nan=False)


def test_retry_backoff_doubles_and_caps() -> None:
    assert [retry_backoff(2.0, n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert retry_backoff(1.0, 10_000) == MAX_BACKOFF
    with pytest.raises(ValueError):
        retry_backoff(1.0, 0)


@given(st.floats(0, 1e6), st.integers(1, 200))
def test_retry_backoff_is_monotonic_and_bounded(base: float, n: int) -> None:
    assert retry_backoff(base, n) <= retry_backoff(base, n + 1) <= MAX_BACKOFF


@given(retries=st.integers(0, 20), delay=st.floats(0, 100), start=times)
def test_a_failing_task_runs_retries_plus_one_times_with_growing_waits(retries: int, delay: float,
                                                                      start: float) -> None:
    rec = make_record("a", start, retries=retries, retry_delay=delay)
    runs, waits, now = 0, [], start
    while rec.status == PENDING:
        assert rec.eta >= now - 1e-6 or runs == 0
        now = max(now, rec.eta)
        rec = start_run(rec, "me", now)
        assert rec.status == RUNNING and rec.owner == "me" and rec.attempts == runs + 1
        runs += 1
        rec = end_run(rec, Outcome(False, now, now + 1, error="E: boom"))
        if rec.status == PENDING:
            waits.append(rec.eta - (now + 1))
            now += 1
    assert runs == retries + 1 and rec.status == FAILED and rec.error == "E: boom"
    assert all(b >= a - 1e-6 for a, b in zip(waits, waits[1:]))
    assert all(w <= MAX_BACKOFF + 1e-6 for w in waits)
    assert rec.owner is None


def test_success_and_unretryable_failure() -> None:
    r = start_run(make_record("a", 10.0, retries=5), "me", 11.0)
    ok = end_run(r, Outcome(True, 11.0, 12.0, result=pickle.dumps(1)))
    assert ok.status == SUCCEEDED and ok.finished == 12.0 and ok.error is None and ok.owner is None
    dead = end_run(r, Outcome(False, 11.0, 12.0, error="E", retryable=False))
    assert dead.status == FAILED


@given(crashes=st.integers(0, 5), max_crashes=st.integers(1, 6))
def test_crash_requeue_forgives_until_max_crashes(crashes: int, max_crashes: int) -> None:
    r = start_run(make_record("a", 10.0, crashes=crashes), "me", 11.0)
    back = requeue_crashed(r, 20.0, max_crashes)
    assert back.crashes == crashes + 1 and back.owner is None
    if crashes + 1 >= max_crashes:
        assert back.status == FAILED and "died" in back.error
    else:
        assert back.status == PENDING and back.attempts == r.attempts - 1 and back.started is None


def test_manual_retry_cancel_and_misfire() -> None:
    r = end_run(start_run(make_record("a", 10.0), "me", 11.0), Outcome(False, 11, 12, error="E"))
    again = reset_for_retry(r, 50.0)
    assert (again.status, again.eta, again.attempts, again.crashes) == (PENDING, 50.0, 0, 0)
    assert again.error == "E"                 # the last error stays visible until the next run
    assert cancel(again, 60.0).status == CANCELLED
    late = make_record("b", 10.0, misfire_grace=5.0)
    assert not is_misfire(late, 15.0) and is_misfire(late, 15.1)
    skipped = skip_misfired(start_run(late, "me", 16.0), 16.0)
    assert skipped.status == MISFIRED and skipped.attempts == 0 and "5s" in skipped.error
    assert not is_misfire(make_record("c", 10.0), 1e9)      # no grace: always run


records = st.builds(
    lambda **fields: TaskRecord(**fields),
    id=st.text(min_size=1, max_size=30), name=st.text(min_size=1, max_size=30),
    eta=times, payload=st.binary(max_size=50),
    status=st.sampled_from([PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, MISFIRED]),
    attempts=st.integers(0, 100), rev=st.integers(0, 10**6),
    timeout=st.none() | st.floats(0.001, 1e5), error=st.none() | st.text(max_size=40))


@given(records)
def test_records_round_trip(rec: TaskRecord) -> None:
    assert decode_record(encode_record(rec)) == rec


def test_a_record_of_timewheel_0_1_is_read() -> None:
    v1 = ("id1", "t", 5.0, b"p", PENDING, 1.0, 0, 0.0, None, 0, 0, None, None, None, None, None, None, 1)
    rec = decode_record(pickle.dumps(v1))
    assert (rec.id, rec.eta, rec.rev, rec.timeout, rec.version) == ("id1", 5.0, 0, None, 2)


@pytest.mark.parametrize("blob", [
    b"", b"\x80\x05garbage", pickle.dumps([1, 2]), pickle.dumps(("a",) * 21),
    pickle.dumps(print),                                        # names a global
    pickle.dumps(("id", ["nested"], 5.0) + (None,) * 18),        # a name that is a list
    pickle.dumps(("id", "t", "soon", b"") + (None,) * 17),       # an eta that is a string
    pickle.dumps(("id", "t", 5.0, b"", "exploded") + (0,) * 16),  # an unknown status
    pickle.dumps(("id", "t", 1e300, b"", PENDING, 0.0, 0, 0.0, None, 0, 0, None, None, None, None,
                  None, None, 2, 0, None, None)),               # an eta no wheel can place
])
def test_what_is_not_a_record_is_refused_with_a_reason(blob: bytes) -> None:
    with pytest.raises(RecordDecodeError, match="not a timewheel record|newer"):
        decode_record(blob)


def test_a_hostile_shared_structure_is_refused_fast() -> None:
    a: list = []
    for _ in range(40):
        a = [a, a]                    # 2**40 paths through 40 objects: repr would never end
    blob = pickle.dumps(("id", "t", 5.0, b"", PENDING, 0.0, a) + (None,) * 14)
    t0 = time.perf_counter()
    with pytest.raises(RecordDecodeError, match="retries"):
        decode_record(blob)
    assert time.perf_counter() - t0 < 1.0


# Values of every kind a plain pickle can hold, at and around each check's edges.
_EDGES = [None, True, False, 0, 1, -1, 2 ** 62 - 1, 2 ** 62, -2 ** 62, 10 ** 30, 0.0, -0.0, 1.5, 1e12, -1e12,
          1e12 + 1, -1e12 - 1, 10 ** 12, 10 ** 12 + 1, float("inf"), float("-inf"), float("nan"), "", "x",
          "x" * 200, "x" * 201, "x" * 500, "x" * 501, PENDING, RUNNING, "bogus", b"", b"x", bytearray(b"x"),
          [], [None], (), {}]


def _slow_check(values: list) -> bool:
    from timewheel.records import _CHECKS, _FIELD_NAMES, _OPTIONAL
    return all(_CHECKS[n](v) if n in _CHECKS else (v is None or _OPTIONAL[n](v))
               for n, v in zip(_FIELD_NAMES, values))


def test_the_quick_field_check_agrees_with_the_field_by_field_one_at_every_edge() -> None:
    """decode_record checks a record's 21 fields in one expression and explains a failure
    field by field: the two agree for every edge value in every field."""
    from timewheel.records import _plausible
    base = list(decode_record(encode_record(start_run(make_record("i", 5.0), "o", 6.0))))
    assert _plausible(*base) and _slow_check(base)
    for i in range(len(base)):
        for v in _EDGES:
            values = base[:i] + [v] + base[i + 1:]
            assert _plausible(*values) == _slow_check(values), (i, v)


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(_EDGES) | st.floats() | st.integers()),
                min_size=1, max_size=4))
def test_the_quick_field_check_agrees_with_the_field_by_field_one(changes: list) -> None:
    from timewheel.records import _plausible
    values = list(decode_record(encode_record(start_run(make_record("i", 5.0), "o", 6.0))))
    for i, v in changes:
        values[i] = v
    assert _plausible(*values) == _slow_check(values), values
