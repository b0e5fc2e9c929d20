"""Aborting a running task in every store (issue 23): the request is kept with the running
record in one write that keeps its ``rev`` (the run's fence, lease and outcome stay valid),
is refused once the record changed, is read back for all of a process's runs at once, and
``aborted`` is a final status like the others -- counted, listed, purged, a failure of its
batch.  On the memory store, the file store, a real redis-server and a real PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from timewheel import TaskFailed, TimeWheel, current_task
from timewheel import batches as br
from timewheel.records import (
    ABORTED,
    RUNNING,
    SUCCEEDED,
    Outcome,
    end_run,
    progress_value,
    request_abort,
    start_queued,
    with_progress,
)
from timewheel.store.base import WheelStore

from .conftest import make_record
from .test_batches import _members, _templates

OWNER = "host:1:abcd"


def _claim(store: WheelStore, *recs):
    store.add(list(recs))
    through = store.wheel.current_tick(store.now()) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass
    got = store.claim(OWNER, store.now(), len(recs)).records
    assert sorted(r.id for r in got) == sorted(r.id for r in recs)
    return {r.id: r for r in got}


def test_an_abort_request_keeps_the_fence_and_is_read_for_all_runs_at_once(store: WheelStore) -> None:
    now = store.now() - 1
    runs = _claim(store, make_record("a", now), make_record("b", now), make_record("c", now))
    a, b = runs["a"], runs["b"]
    assert store.aborting(OWNER, list(runs.values())) == {}
    assert store.note(a, request_abort(a, now + 0.5)) is True
    got = store.get("a")
    assert (got.status, got.rev, got.owner, got.abort) == (RUNNING, a.rev, OWNER, now + 0.5)
    asked = store.aborting(OWNER, list(runs.values()))
    assert set(asked) == {"a"}
    assert store.aborting("host:2:other", list(runs.values())) == {}      # another owner's runs: no
    assert store.aborting(OWNER, [a._replace(rev=a.rev - 1)]) == {}       # another run of it: no
    # the run's outcome, written from the claim's record, still lands (and ends the request)
    (done,) = store.swap([(a, end_run(a._replace(abort=now + 0.5),
                                      Outcome(False, now, now + 1, error="TaskAborted: x")))])
    assert done is not None and done.status == ABORTED and done.rev == a.rev + 1
    assert store.aborting(OWNER, [a]) == {}
    # refused once the record changed: its outcome recorded, or finished
    (ended,) = store.swap([(b, end_run(b, Outcome(True, now, now + 1)))])
    assert ended.status == SUCCEEDED
    assert store.note(b, request_abort(b, now)) is False
    assert store.get("b").abort is None
    assert store.abort("b") == (store.get("b"), "refused")
    assert store.abort("nope") == (None, "refused")
    # through WheelStore.abort: a running one asked (once), a pending one cancelled
    c = runs["c"]
    assert store.abort("c")[1] == "asked" and store.abort("c")[1] == "asked already"
    assert store.get("c").rev == c.rev
    store.add([make_record("p", now + 3600)])
    assert store.abort("p")[1] == "cancelled" and store.get("p").status == "cancelled"


def test_an_abort_asked_just_before_a_queued_tasks_start_is_recorded_is_kept(store: WheelStore) -> None:
    """The start of a task that waited in its process's queue is written from the claim's copy
    of the record (records.start_queued), which lacks an abort asked for meanwhile: the write
    keeps the request (and the progress written), so the process still learns of it."""
    now = store.now() - 1
    store.add([make_record("q", now)])
    through = store.wheel.current_tick(store.now()) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass
    (q,) = store.claim(OWNER, store.now(), 0, queued=1).records
    assert q.started is None
    assert store.note(q, request_abort(q, now + 0.5)) is True
    assert store.note(q, with_progress(q, progress_value(3, 10, "so far", now + 0.6))) is True
    (started,) = store.swap([(q, start_queued(q, now + 0.7))])     # the boss's copy: no notes
    assert started is not None and started.started == now + 0.7 and started.rev == q.rev + 1
    assert set(store.aborting(OWNER, [started])) == {"q"}
    got = store.get("q")
    assert got.rev == started.rev and got.started == now + 0.7
    assert tuple(got.progress) == (3, 10, "so far", now + 0.6)
    # a write that ends the run takes what it says: the notes do not outlive the run
    (done,) = store.swap([(started, end_run(started, Outcome(True, now + 0.7, now + 1)))])
    assert done is not None and done.status == SUCCEEDED and store.aborting(OWNER, [started]) == {}


def test_aborted_is_counted_listed_and_purged_like_any_final_status(store: WheelStore) -> None:
    now = store.now() - 1
    a = _claim(store, make_record("a", now, name="job"))["a"]
    store.note(a, request_abort(a, now))
    store.swap([(a, end_run(a._replace(abort=now), Outcome(False, now, now + 0.5, error="E")))])
    assert store.counts().get((ABORTED, "job")) == 1
    assert store.counts().get((RUNNING, "job"), 0) == 0
    assert [r.id for r in store.scan(ABORTED)] == ["a"]
    assert store.purge(now + 10, statuses=["succeeded"]) == 0
    assert store.purge(now + 10) == 1                       # the default: every final status
    assert store.get("a") is None and store.counts().get((ABORTED, "job"), 0) == 0


def test_an_aborted_member_finishes_its_batch_as_a_failure(store: WheelStore) -> None:
    now = store.now() - 1
    store.add_batch("B", _members("B", 3, now), callbacks=_templates("B", now), opened=now)
    through = store.wheel.current_tick(store.now()) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass
    runs = store.claim(OWNER, store.now(), 3).records
    first, *rest = sorted(runs, key=lambda r: r.id)
    store.note(first, request_abort(first, now))
    outs = [(first, end_run(first._replace(abort=now), Outcome(False, now, now + 0.5, error="E")))]
    outs += [(r, end_run(r, Outcome(True, now, now + 0.5))) for r in rest]
    assert all(x is not None for x in store.swap(outs))
    st = store.batch("B")
    assert st.counts == {SUCCEEDED: 2, ABORTED: 1} and st.done is not None and st.status == "failed"
    assert {e for e in br.EVENTS if store.get(br.callback_id("B", e))} == {"on_complete", "on_failure"}


def test_in_one_process_the_aborted_hook_fires_once_and_result_raises() -> None:
    hu = TimeWheel(None, workers=2, tick=0.1)
    events: list[tuple[str, str]] = []
    started = threading.Event()
    hu.on("aborted", lambda rec, exc: events.append((rec.id, type(exc).__name__)))

    @hu.task(retries=5)
    def wait_for_it() -> str:
        started.set()
        while True:
            current_task().check_aborted()
            threading.Event().wait(0.01)

    hu.start()
    try:
        h = wait_for_it.delay()
        assert started.wait(10)
        assert h.abort() is True
        with pytest.raises(TaskFailed) as err:
            h.result(timeout=10)
        assert err.value.status == ABORTED and "TaskAborted" in err.value.error
    finally:
        hu.stop()
    assert events == [(h.id, "TaskAborted")]
    assert h.record.attempts == 1
