"""A run's progress (issue 23): the value checked and kept (pure), the cost of reporting it,
the bound on how often it is written whatever the task does, and the store's note that writes
it without disturbing the run's fence or an abort asked for meanwhile -- on every backend.
(Another process reading it while the task runs: tests/test_abort_processes.py.)"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel import TimeWheel, current_task
from timewheel.execute import PROGRESS_EVERY
from timewheel.records import (
    RUNNING,
    SUCCEEDED,
    Outcome,
    Progress,
    decode_record,
    encode_record,
    end_run,
    progress_value,
    request_abort,
    reset_for_retry,
    with_progress,
)
from timewheel.store.base import WheelStore
from timewheel.store.rules import noted
from timewheel.text import progress as progress_text

from .conftest import make_record
from .test_abort_store import OWNER, _claim

BAD = [
    ((-1, None, ""), ValueError, "progress done must be a finite number"),
    ((math.nan, None, ""), ValueError, "progress done"),
    ((1, 0, ""), ValueError, "progress total must be a finite number from 0 to 1e15 (not 0)"),
    ((1, math.inf, ""), ValueError, "progress total"),
    (("3", None, ""), TypeError, "progress done must be an int or a float, got str"),
    ((True, None, ""), TypeError, "got bool"),
    ((1, None, None), TypeError, "progress note must be a str, got NoneType"),
]


@pytest.mark.parametrize("args, exc, message", BAD)
def test_a_bad_progress_is_refused_naming_what_is_wrong(args, exc, message) -> None:
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        progress_value(*args, at=1.0)


@given(st.integers(0, 10 ** 15) | st.floats(0, 1e15), st.none() | st.floats(0.5, 1e15),
       st.text(max_size=300))
def test_a_progress_round_trips_in_the_record_and_keeps_its_note_short(done, total, note) -> None:
    value = progress_value(done, total, note, 5.0)
    assert len(value[2]) <= 200 and value[2] == note[:200]
    rec = make_record("x", 1.0, status=RUNNING, owner="p", progress=value)
    assert decode_record(encode_record(rec)) == rec
    p = Progress._make(value)
    assert p.fraction is None if total is None else 0 <= p.fraction <= 1


def test_the_last_progress_goes_with_the_outcome_and_a_manual_retry_forgets_it() -> None:
    run = make_record("x", 1.0, status=RUNNING, owner="p", started=2.0, attempts=1, retries=2)
    noted_run = with_progress(run, (3, 10, "a", 2.5))
    done = end_run(noted_run, Outcome(True, 2.0, 3.0, progress=(10, 10, "b", 2.9)))
    assert done.status == SUCCEEDED and done.progress == (10, 10, "b", 2.9)
    kept = end_run(noted_run, Outcome(False, 2.0, 3.0, error="E"))      # none reported at the end
    assert kept.progress == (3, 10, "a", 2.5)
    assert reset_for_retry(done._replace(status="failed"), 9.0).progress is None
    with pytest.raises(ValueError, match="only a running task reports progress"):
        with_progress(done, (1, None, "", 1.0))
    assert progress_text({"done": 3, "total": 10, "note": "rows", "at": 1.0}) == "3/10 (30%) rows"
    assert progress_text({"done": 7, "total": None, "note": "", "at": 1.0}) == "7"


def test_a_note_changes_only_what_it_says() -> None:
    run = make_record("x", 1.0, status=RUNNING, owner="p", rev=3)
    assert noted(run, with_progress(run, (1, None, "", 1.0))) == {"progress": (1, None, "", 1.0)}
    assert noted(run, request_abort(run, 2.0)) == {"abort": 2.0}
    with pytest.raises(ValueError, match="changes more than abort, progress"):
        noted(run, run._replace(rev=4, progress=(1, None, "", 1.0)))


def test_progress_keeps_the_fence_and_never_undoes_an_abort(store: WheelStore) -> None:
    now = store.now() - 1
    run = _claim(store, make_record("a", now))["a"]
    assert store.note(run, with_progress(run, (1, 4, "one", now))) is True
    assert store.get("a").progress == (1, 4, "one", now) and store.get("a").rev == run.rev
    assert store.note(run, request_abort(run, now)) is True           # from a record without progress
    assert store.note(run, with_progress(run, (2, 4, "two", now))) is True   # from one without abort
    got = store.get("a")
    assert (got.abort, got.progress, got.rev) == (now, (2, 4, "two", now), run.rev)
    assert set(store.aborting(OWNER, [run])) == {"a"}
    (done,) = store.swap([(run, end_run(run, Outcome(True, now, now + 1, progress=(4, 4, "end", now))))])
    assert done is not None and store.get("a").progress == (4, 4, "end", now)
    assert store.note(run, with_progress(run, (3, 4, "late", now))) is False   # the run is over
    assert store.get("a").progress == (4, 4, "end", now)


def test_100000_reports_cost_under_a_second_and_writes_stay_bounded(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "tasks.db"), workers=1, tick=0.2)
    writes: list[float] = []
    real_note = hu.store.note

    def counted(old, new):                   # the real store's note, counted
        if new.progress != old.progress:
            writes.append(time.monotonic())
        return real_note(old, new)
    hu.store.note = counted                  # type: ignore[method-assign]

    @hu.task()
    def busy(n: int, seconds: float) -> float:
        ctx = current_task()
        t0 = time.perf_counter()
        for i in range(n):
            ctx.progress(i, n, "rows")
        took = time.perf_counter() - t0
        end = time.monotonic() + seconds     # then report as fast as it can for a while
        i = 0
        while time.monotonic() < end:
            i += 1
            ctx.progress(i, None, "more")
        return took

    hu.start()
    try:
        h = busy.delay(100_000, 3.0)
        took = h.result(timeout=60)
    finally:
        hu.stop()
    assert took < 1.0, f"100,000 progress() calls took {took:.2f}s"
    span = writes[-1] - writes[0] if len(writes) > 1 else 0.0
    assert len(writes) >= 3, "no progress was written while the task ran"
    assert len(writes) <= span / PROGRESS_EVERY + 2, (len(writes), span)   # at most 4 a second
    gaps = [b - a for a, b in zip(writes, writes[1:])]
    assert min(gaps) >= PROGRESS_EVERY * 0.9, gaps
    assert h.progress.note == "more" and h.progress.done > 100     # the last one, with the outcome


def test_the_cli_shows_a_running_tasks_progress_and_abort_request(tmp_path) -> None:
    import json

    from .cli_fixtures import invoke
    from .test_abort_web import _running_store
    path = str(tmp_path / "tasks.db")
    store, run = _running_store(path)
    try:
        at = store.now()
        store.note(run, with_progress(run, (30, 120, "rows", at)))
        store.note(run, request_abort(run, at))
    finally:
        store.close()
    listed = invoke("tasks", path)
    assert listed.exit_code == 0 and "running 30/120 (25%) rows (asked to abort)" in listed.output
    shown = invoke("show", path, "r1")
    assert "30/120 (25%) rows at " in shown.output
    row = json.loads(invoke("show", path, "r1", "--json").output)
    assert row["progress"] == {"done": 30, "total": 120, "note": "rows", "at": at}
    assert row["abort_requested"] == at
