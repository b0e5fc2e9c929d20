"""Store conformance: every backend passes the same tests (see ``conftest.BACKENDS``), with
each serializer of the tasks' arguments (``conftest.SERIALIZERS``: the store agrees to it as a
wheel's does, and every payload and result is written with it: issue 26).

Times are real (``time.time()``), a few seconds apart, because a backend may judge due-ness
by its own server's clock; tests of exact instants with a fake clock live with each backend.
"""

from __future__ import annotations

import threading
import time

import pytest

from timewheel.errors import DuplicateTask
from timewheel.records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Outcome,
    RecordDecodeError,
    TaskRecord,
    cancel,
    end_run,
    requeue_crashed,
    reset_for_retry,
)
from timewheel.store.base import BROKEN, Claimed, WheelStore

from .conftest import SERIALIZERS, count_of, flow_backends, make_record, payload_of, result_of


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a store (its fixtures ask for the serializer) runs with each serializer."""
    if "serializer" in metafunc.fixturenames:
        metafunc.parametrize("serializer", SERIALIZERS, indirect=True)


def ready_all(store: WheelStore, ahead: float = 0.0) -> None:
    """Advance the wheel through the tick of ``now + ahead``."""
    through = store.wheel.current_tick(store.now() + ahead) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass


def test_add_get_roundtrip(store: WheelStore, serializer: str, backend: str) -> None:
    now = store.now()
    r = make_record("a", now + 10, retries=2, retry_delay=0.5, misfire_grace=3.0, timeout=7.0)
    assert r.payload[:1] == (b"{" if serializer == "json" else b"\x80")
    assert store.add([r]) == [r]
    assert store.get("a") == r
    if backend != "memory":             # a store kept apart from its wheel records its serializer
        assert store.stored_serializer() == (None if serializer == "pickle" else "json")
    assert store.get("missing") is None
    assert store.counts() == {(PENDING, "t"): 1}


def test_duplicate_id_fails_and_writes_nothing(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now + 10)])
    with pytest.raises(DuplicateTask):
        store.add([make_record("a", now + 20)])
    with pytest.raises(DuplicateTask):               # a batch is all or none
        store.add([make_record("b", now + 10), make_record("a", now + 30)])
    with pytest.raises(DuplicateTask):               # an id twice in one batch
        store.add([make_record("c", now + 10), make_record("c", now + 30)])
    assert store.get("a").eta == now + 10
    assert store.get("b") is None and store.get("c") is None
    assert isinstance(DuplicateTask("x"), KeyError)


def _finish(store: WheelStore, task_id: str, ok: bool = True) -> TaskRecord:
    ready_all(store)
    got = store.claim("me", store.now(), 100).records
    (r,) = [g for g in got if g.id == task_id]
    now = store.now()
    (done,) = store.swap([(r, end_run(r, Outcome(ok=ok, started=now, finished=now,
                                                 error=None if ok else "E: x", retryable=False)))])
    assert done is not None
    return done


def test_existing_keep_reuse_replace(store: WheelStore) -> None:
    now = store.now()
    first = make_record("k", now - 1)
    store.add([first])
    # keep: leave whatever is stored
    (kept,) = store.add([make_record("k", now + 50)], existing="keep")
    assert kept == first and store.get("k").eta == now - 1
    # reuse: keep a pending one ...
    (kept,) = store.add([make_record("k", now + 50)], existing="reuse")
    assert kept.eta == now - 1
    # ... and a running one
    ready_all(store)
    (running,) = store.claim("me", store.now(), 10).records
    assert store.add([make_record("k", now + 50)], existing="reuse") == [running]
    # replace refuses a running one and writes nothing
    with pytest.raises(DuplicateTask):
        store.add([make_record("z", now + 5), make_record("k", now + 50)], existing="replace")
    assert store.get("z") is None
    # reuse replaces a finished one, continuing its rev
    done = store.swap([(running, end_run(running, Outcome(True, now, now)))])[0]
    (again,) = store.add([make_record("k", now + 50, name="other")], existing="reuse")
    assert again.status == PENDING and again.eta == now + 50 and again.rev == done.rev + 1
    assert store.get("k") == again
    # replace replaces a pending one: new arguments and eta, in one step
    (new,) = store.add([make_record("k", now + 70, payload=payload_of(("new",)))], existing="replace")
    assert store.get("k") == new and new.payload == payload_of(("new",)) and new.rev == again.rev + 1
    assert store.counts() == {(PENDING, "t"): 1}
    assert [r.id for r in store.scan(PENDING)] == ["k"]


@pytest.mark.parametrize("existing", ["keep", "reuse", "replace"])
def test_replacing_an_undecodable_record_never_takes_its_rev_back(store: WheelStore, corrupt,
                                                                   existing: str) -> None:
    """A record that cannot be decoded (here: a running one, whose process holds its fence)
    is replaced by every policy but fail, continuing its rev: the stale run's outcome is
    refused, now and after the newcomer's own writes walk its rev up past the old fence."""
    now = store.now()
    store.add([make_record("x", now - 1)])
    ready_all(store)
    (first,) = store.claim("me", store.now(), 1).records          # its run is fenced at first.rev
    corrupt(store, "x")
    with pytest.raises(RecordDecodeError):
        store.get("x")
    with pytest.raises(DuplicateTask):
        store.add([make_record("x", now)])
    (new,) = store.add([make_record("x", now - 0.5, payload=payload_of(("new",)))], existing=existing)
    assert new.payload == payload_of(("new",)) and new.status == PENDING
    assert new.rev == first.rev + 1 and store.get("x") == new
    assert store.counts() == {(PENDING, "t"): 1}
    t = store.now()
    stale = (first, end_run(first, Outcome(True, t, t)))
    assert store.swap([stale]) == [None]
    ready_all(store)
    (again,) = store.claim("me", store.now(), 1).records
    for _ in range(3):                   # writes of the newcomer: its rev moves on, never back
        assert again.rev > first.rev
        assert store.swap([stale]) == [None]
        (again,) = store.swap([(again, again._replace(error="still running"))])
    assert store.get("x") == again and again.status == RUNNING


def test_only_ready_tasks_are_claimed_and_never_before_their_eta(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("past", now - 3), make_record("soon", now + 2.5),
               make_record("later", now + 3600)])
    ready_all(store, ahead=3.0)                # "soon" is ready, but not due yet
    got = store.claim("me", store.now(), 10)
    assert [r.id for r in got.records] == ["past"]
    assert got.next_eta == pytest.approx(now + 2.5, abs=1e-5)
    assert store.claim("me", store.now(), 10).records == []      # nothing claimed twice
    time.sleep(max(0.0, now + 2.6 - store.now()))
    got = store.claim("me", store.now(), 10)
    assert [r.id for r in got.records] == ["soon"]
    assert got.records[0].started >= now + 2.5
    assert got.next_eta is None                 # "later" is in the wheel, not ready
    assert store.get("later").status == PENDING


def test_claim_takes_earliest_first_up_to_the_limit_and_marks_running(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"t{i}", now - 10 + i) for i in range(5)])
    ready_all(store)
    assert store.next_ready_eta() == pytest.approx(now - 10, abs=1e-5)     # a look, no claim
    assert store.claim("me", store.now(), 0) == Claimed([], store.next_ready_eta())   # no room
    got = store.claim("me", store.now(), 3).records
    assert [r.id for r in got] == ["t0", "t1", "t2"]
    for r in got:
        assert r.status == RUNNING and r.owner == "me" and r.attempts == 1
        assert r.started is not None and store.get(r.id) == r
    assert store.counts() == {(PENDING, "t"): 2, (RUNNING, "t"): 3}


def test_claim_can_queue_beyond_the_started_ones(store: WheelStore, dead_owner: str) -> None:
    now = store.now()
    store.add([make_record(f"t{i}", now - 10 + i) for i in range(6)])
    ready_all(store)
    got = store.claim(dead_owner, store.now(), 2, queued=3).records
    assert [r.id for r in got] == ["t0", "t1", "t2", "t3", "t4"]
    assert [r.started is not None for r in got] == [True, True, False, False, False]
    assert all(r.status == RUNNING and r.owner == dead_owner for r in got)
    # the owner dies: the started ones count a crash, the queued ones are handed back free
    lost = {r.id: r for r in store.abandoned(store.now())}
    assert sorted(lost) == ["t0", "t1", "t2", "t3", "t4"]
    back = store.swap([(r, requeue_crashed(r, store.now(), 3)) for r in lost.values()])
    assert {b.id: b.crashes for b in back} == {"t0": 1, "t1": 1, "t2": 0, "t3": 0, "t4": 0}


def test_record_and_claim_is_a_swap_then_a_claim(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"t{i}", now - 10 + i) for i in range(4)])
    ready_all(store)
    first = store.claim("me", store.now(), 2).records
    t = store.now()
    outcomes = [(r, end_run(r, Outcome(True, t, t))) for r in first]
    stale = (first[0], end_run(first[0], Outcome(False, t, t, error="E")))   # its claim's rev is gone
    done, got = store.record_and_claim(outcomes + [stale], "me", store.now(), 5)
    assert [d.status if d else None for d in done] == [SUCCEEDED, SUCCEEDED, None]
    assert [r.id for r in got.records] == ["t2", "t3"] and got.next_eta is None
    assert store.get("t0").status == SUCCEEDED
    done, got = store.record_and_claim([], "me", store.now(), 5)             # nothing to record
    assert done == [] and got.records == []


def test_next_ready_eta_looks_at_the_ready_queue_and_writes_nothing(store: WheelStore) -> None:
    """The earliest ready task's eta, also of one added on its own (delay()) and not yet
    placed by a worker's transaction; tasks in the wheel beyond the horizon are not ready."""
    now = store.now()
    assert store.next_ready_eta() is None
    store.add([make_record("later", now + 3600)])
    assert store.next_ready_eta() is None
    ready_all(store, ahead=30)
    store.add([make_record("soon", now + 20)])              # within the horizon: ready at once
    assert store.next_ready_eta() == pytest.approx(now + 20, abs=1e-5)
    store.add([make_record("a", now + 5), make_record("b", now + 8)])
    counts = store.counts()
    assert store.next_ready_eta() == pytest.approx(now + 5, abs=1e-5)
    assert store.counts() == counts and store.claim("me", store.now(), 10).records == []
    assert store.claim("me", store.now(), 10).next_eta == pytest.approx(now + 5, abs=1e-5)


def test_a_task_added_within_the_horizon_is_ready_at_once(store: WheelStore) -> None:
    now = store.now()
    ready_all(store, ahead=30)                  # horizon half a minute ahead
    store.add([make_record("late", now - 1)])
    store.add([make_record("b1", now - 2), make_record("b2", now + 20)])   # a batch, too
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["b1", "late"]
    assert store.claim("me", store.now(), 10).next_eta == pytest.approx(now + 20, abs=1e-5)


def test_advance_pages_and_raises_the_horizon_once_done(store: WheelStore) -> None:
    now = store.now()
    base = store.wheel.current_tick(now)
    store.add([make_record(f"p{i}", now + 2 + i * 0.25) for i in range(25)])   # ticks base+2..+9
    store.add([make_record(f"f{i}", now + 60 + i) for i in range(5)])         # beyond the page
    h0 = store.state().horizon
    first = store.advance(base + 12, 10, "L1")
    assert (first.moved, first.complete) == (10, False)
    assert h0 <= first.horizon < base + 12
    done = 10
    while True:
        step = store.advance(base + 12, 10, "L1")
        done += step.moved
        if step.complete:
            break
    assert done == 25 and step.horizon == base + 12
    assert store.state().horizon == base + 12 and store.state().leader == "L1"
    assert store.advance(base + 12, 10, "L2").moved == 0          # nothing made ready twice
    assert store.advance(base + 5, 10, "L2").horizon == base + 12  # never lowered
    got = store.claim("me", store.now(), 100)
    assert got.records == [] and got.next_eta == pytest.approx(now + 2, abs=1e-5)
    assert [r.id for r in store.scan(PENDING)][-5:] == [f"f{i}" for i in range(5)]


def test_advance_is_fenced_by_the_ticking_role(store_factory, backend) -> None:
    """A leader that lost the role (it stalled past its lease) advances nothing; the holder
    does.  (The memory store has one process: it always leads.)"""
    a, b = store_factory(), store_factory()
    now = a.now()
    base = a.wheel.current_tick(now)
    a.add([make_record("x", now + 3)])
    assert a.liveness.try_lead()
    holder = a.liveness.token
    if backend == "memory":
        assert a.advance(base + 5, 10, "stale").led
        return
    assert a.liveness.leader() == holder
    stale = b.advance(base + 5, 10, "a stalled leader")
    assert not stale.led and stale.moved == 0 and a.state().horizon < base + 3
    got = a.advance(base + 5, 10, holder)
    assert got.led and got.moved == 1 and a.state().leader == holder
    a.liveness.resign()
    assert a.liveness.leader() is None
    assert b.advance(base + 6, 10, "anyone").led          # nobody holds it: not fenced


def test_swap_is_a_compare_and_set_on_rev(store: WheelStore) -> None:
    now = store.now()
    (r,) = store.add([make_record("a", now + 100)])
    (c,) = store.swap([(r, cancel(r, now))])
    assert c.status == CANCELLED and c.rev == r.rev + 1
    assert store.swap([(r, cancel(r, now))]) == [None]            # stale: refused
    assert store.get("a") == c
    (back,) = store.swap([(c, reset_for_retry(c, now - 1))])
    assert back.status == PENDING and back.rev == c.rev + 1
    ghost = make_record("ghost", now)
    assert store.swap([(ghost, cancel(ghost, now))]) == [None]    # not stored
    assert store.get("ghost") is None
    # pairs of one batch succeed or fail on their own
    (s1, s2) = store.add([make_record("s1", now + 100), make_record("s2", now + 100)])
    out = store.swap([(s1, cancel(s1, now)), (r, cancel(r, now)), (s2, cancel(s2, now))])
    assert [o is not None for o in out] == [True, False, True]


def test_end_run_outcomes_are_placed(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("ok", now - 1), make_record("bad", now - 1, retries=1, retry_delay=30.0),
               make_record("dead", now - 1)])
    ready_all(store)
    got = {r.id: r for r in store.claim("me", store.now(), 10).records}
    t = store.now()
    ok, bad, dead = store.swap([
        (got["ok"], end_run(got["ok"], Outcome(True, t, t, result=result_of(42)))),
        (got["bad"], end_run(got["bad"], Outcome(False, t, t, error="E: x", traceback="tb"))),
        (got["dead"], end_run(got["dead"], Outcome(False, t, t, error="E: y", retryable=False))),
    ])
    assert ok.status == SUCCEEDED and ok.result == result_of(42)
    assert bad.status == PENDING and bad.eta == pytest.approx(t + 30.0)
    assert bad.error == "E: x" and bad.attempts == 1
    assert dead.status == FAILED
    assert [r.id for r in store.scan(PENDING)] == ["bad"]
    assert store.counts() == {(PENDING, "t"): 1, (SUCCEEDED, "t"): 1, (FAILED, "t"): 1}
    assert store.claim("me", store.now(), 10).records == []       # the retry waits its backoff


def test_abandoned_lists_running_tasks_of_dead_owners(store: WheelStore, dead_owner: str) -> None:
    now = store.now()
    store.add([make_record("mine", now - 2), make_record("theirs", now - 1)])
    ready_all(store)
    (mine,) = store.claim(store.liveness.token, store.now(), 1).records
    (theirs,) = store.claim(dead_owner, store.now(), 1).records
    lost = store.abandoned(store.now())
    assert [r.id for r in lost] == ["theirs"]
    (back,) = store.swap([(lost[0], requeue_crashed(lost[0], store.now(), max_crashes=3))])
    assert back.status == PENDING and back.crashes == 1 and back.attempts == 0
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["theirs"]  # ready again
    assert store.get("mine") == mine


def test_purge_deletes_finished_tasks_only(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"s{i}", now - 1) for i in range(3)] + [make_record("f", now - 1),
              make_record("p", now + 100)])
    ready_all(store)
    got = store.claim("me", store.now(), 10).records
    t = store.now()
    store.swap([(r, end_run(r, Outcome(r.id != "f", t, t, error="E", retryable=False)))
                for r in got])
    assert store.purge(t - 10) == 0                   # none finished that long ago
    assert store.purge(t + 1, statuses=[FAILED]) == 1
    assert store.purge(t + 1, limit=2) == 2
    assert store.purge(t + 1) == 1
    assert store.get("p").status == PENDING and store.get("s0") is None
    assert store.counts() == {(PENDING, "t"): 1}
    with pytest.raises(ValueError):
        store.purge(t, statuses=[PENDING])


def test_scan_orders_pages_and_filters(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"p{i}", now + 100 + (7 * i) % 10, name="a" if i % 2 else "b")
               for i in range(10)])
    store.add([make_record(f"q{i}", now + 100000 + i) for i in range(3)])   # a day out
    pending = store.scan(PENDING)
    assert [r.eta for r in pending] == sorted(r.eta for r in pending)
    assert len(pending) == 13
    page1 = store.scan(PENDING, limit=4)
    page2 = store.scan(PENDING, after=page1[-1], limit=4)
    rest = store.scan(PENDING, after=page2[-1])
    assert page1 + page2 + rest == pending
    assert [r.id for r in store.scan(PENDING, name="a")] == [r.id for r in pending if r.name == "a"]
    assert [r.id for r in store.scan(PENDING, id_prefix="q")] == ["q0", "q1", "q2"]
    # by id prefix: in id order, paged by id, whatever the etas
    by_id = store.scan(PENDING, id_prefix="p")
    assert [r.id for r in by_id] == [f"p{i}" for i in range(10)]
    assert [r.id for r in store.scan(PENDING, id_prefix="p", after=by_id[3], limit=2)] == ["p4", "p5"]
    assert store.scan(CANCELLED, id_prefix="p") == []
    # finished: most recently finished first
    store.add([make_record(f"c{i}", now + 500) for i in range(4)])
    for i in range(4):
        r = store.get(f"c{i}")
        store.swap([(r, cancel(r, now + i))])
    cancelled = store.scan(CANCELLED)
    assert [r.id for r in cancelled] == ["c3", "c2", "c1", "c0"]
    assert store.scan(CANCELLED, after=cancelled[1]) == cancelled[2:]
    assert store.scan(MISFIRED) == [] and store.scan(BROKEN) == []
    with pytest.raises(ValueError):
        store.scan("bogus")


def test_observers_follow_the_pending_tasks(store: WheelStore) -> None:
    now = store.now()
    recs = [make_record(f"o{i}", now + 10 + (i % 4) * 3600 + i * 0.001) for i in range(20)]
    store.add(recs[:10])
    for r in recs[10:]:
        store.add([r])                          # one at a time, as delay() does
    w = store.wheel
    expected: dict[int, int] = {}
    for r in recs:
        expected[w.due_tick(r.eta)] = expected.get(w.due_tick(r.eta), 0) + 1
    assert store.ticks() == sorted(expected.items())
    first = min(expected)
    assert store.ticks(first + 1, limit=2) == sorted(expected.items())[1:3]
    assert store.wheel_stats() == (len(expected), len({t % w.slots for t in expected}))
    hist = store.histogram(first, first + 4 * 3600, 3600)
    assert hist == [5, 5, 5, 5]
    assert store.counts() == {(PENDING, "t"): 20}


def test_concurrent_claims_never_take_a_task_twice(store_factory) -> None:
    stores = [store_factory() for _ in range(3)]
    now = stores[0].now()
    stores[0].add([make_record(f"t{i}", now - 1 + i * 1e-4) for i in range(300)])
    ready_all(stores[0])
    seen: list[str] = []
    lock = threading.Lock()

    def work(s: WheelStore) -> None:
        while True:
            got = s.claim("me", s.now(), 7).records
            if not got:
                return
            with lock:
                seen.extend(r.id for r in got)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == sorted(f"t{i}" for i in range(300))


def test_records_returned_are_snapshots(store: WheelStore) -> None:
    now = store.now()
    (r,) = store.add([make_record("a", now + 10)])
    with pytest.raises(AttributeError):
        r.status = RUNNING          # type: ignore[misc]
    assert store.get("a").status == PENDING


# -- flow control (issue 21): queues, priorities, pauses and limits, in the claim ----------------

def _lim(key: str, concurrency: int = 0, rate: int = 0, per: float = 0.0) -> tuple:
    return (key, concurrency, rate, per)


def _done(store: WheelStore, rec: TaskRecord) -> TaskRecord:
    t = store.now()
    (out,) = store.swap([(rec, end_run(rec, Outcome(True, t, t)))])
    assert out is not None
    return out


@flow_backends
def test_claim_serves_only_its_queues_and_takes_the_highest_priority_first(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("low", now - 5, priority=-10), make_record("mid", now - 4),
               make_record("high", now - 1, priority=10), make_record("soon", now + 2.5, priority=100),
               make_record("mail", now - 6, queue="emails", priority=5),
               make_record("report", now - 7, queue="reports")])
    ready_all(store, ahead=3.0)              # "soon" is ready, not due: its priority does not matter
    assert store.claim("me", store.now(), 10, queues=frozenset({"nobody"})).records == []
    got = store.claim("me", store.now(), 10, queues=frozenset({"default", "emails"}))
    assert [r.id for r in got.records] == ["high", "mail", "mid", "low"]
    assert got.next_eta == pytest.approx(now + 2.5, abs=1e-5)      # "report" is not this claimer's
    got = store.claim("me", store.now(), 10)                        # every queue
    assert [r.id for r in got.records] == ["report"]
    time.sleep(max(0.0, now + 2.6 - store.now()))
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["soon"]
    assert {q.queue: (q.pending, q.running) for q in store.queue_states(store.now())} == {
        "default": (0, 4), "emails": (0, 1), "reports": (0, 1)}


@flow_backends
def test_a_priority_orders_only_among_due_tasks_a_page_at_a_time(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"lo{i:02d}", now - 30 + i, priority=-10) for i in range(20)]
              + [make_record(f"hi{i:02d}", now - 10 + i / 10, priority=10) for i in range(20)])
    ready_all(store)
    order = []
    while True:
        got = store.claim("me", store.now(), 3).records
        if not got:
            break
        order += [r.id for r in got]
    assert order == [f"hi{i:02d}" for i in range(20)] + [f"lo{i:02d}" for i in range(20)]


@flow_backends
def test_a_paused_queue_is_not_claimed_until_resumed_and_keeps_its_tasks(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("r1", now - 2, queue="reports"), make_record("d1", now - 1)])
    ready_all(store)
    assert store.pause("reports") is True and store.pause("reports") is False
    assert store.paused() == frozenset({"reports"})
    got = store.claim("me", store.now(), 10)
    assert [r.id for r in got.records] == ["d1"] and got.next_eta is None      # no look at "reports"
    assert store.get("r1").status == PENDING and count_of(store, PENDING) == 1
    assert {q.queue: (q.waiting, q.paused) for q in store.queue_states(store.now())}["reports"] == (1, True)
    assert store.resume("reports") is True and store.paused() == frozenset()
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["r1"]
    store.pause("default")                               # the default queue pauses like any other
    store.add([make_record("d2", store.now() - 1)])
    ready_all(store)
    assert store.claim("me", store.now(), 10).records == []
    store.resume("default")
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["d2"]


@flow_backends
def test_a_concurrency_limit_holds_slots_until_the_outcome_and_parks_the_rest(store: WheelStore) -> None:
    now = store.now()
    lim = _lim("task:x", concurrency=2)
    store.add([make_record(f"x{i}", now - 10 + i, limits=(lim,)) for i in range(5)]
              + [make_record("free", now - 1)])
    ready_all(store)
    got = store.claim("me", store.now(), 10).records
    assert [r.id for r in got] == ["x0", "x1", "free"]
    (state,) = store.limit_states(["task:x"])
    assert (state.running, state.parked, state.concurrency) == (2, 3, 2)
    assert store.claim("me", store.now(), 10).records == []        # parked: nothing to read
    assert all(store.get(f"x{i}").status == PENDING for i in (2, 3, 4))
    assert [(q.queue, q.pending, q.waiting, q.running) for q in store.queue_states(store.now())] == [
        ("default", 3, 3, 3)]
    assert count_of(store, PENDING) == 3
    _done(store, got[0])                                  # a slot frees: the first parked comes back
    got2 = store.claim("me", store.now(), 10).records
    assert [r.id for r in got2] == ["x2"]
    assert store.get("x2").eta == now - 8                  # its eta (and lateness) kept
    # an outcome recorded in the same round as the claim frees its slot for it
    done, got3 = store.record_and_claim([(got[1], end_run(got[1], Outcome(True, now, now)))], "me",
                                        store.now(), 10)
    assert done[0].status == SUCCEEDED and [r.id for r in got3.records] == ["x3"]
    assert store.limit_states(["task:x"])[0].running == 2


@flow_backends
def test_tasks_added_one_at_a_time_keep_their_queue_priority_and_limits(store: WheelStore) -> None:
    """delay()'s path adds one task per call (the Redis store's ADD script, the file store's
    lone INSERT or group commit): flow control's fields go where a batch puts them."""
    now = store.now()
    lim = _lim("one", concurrency=1)
    for rec in [make_record("low", now - 5, priority=-10), make_record("mail", now - 6, queue="emails"),
                make_record("high", now - 1, priority=10), make_record("x0", now - 4, limits=(lim,)),
                make_record("x1", now - 3, limits=(lim,)), make_record("plain", now - 2)]:
        assert store.add([rec]) == [rec]
    ready_all(store)
    got = store.claim("me", store.now(), 10, queues=frozenset({"default"})).records
    assert [r.id for r in got] == ["high", "x0", "plain", "low"]      # x1 parked behind x0's slot
    assert store.get("x1").status == PENDING and store.limit_states(["one"])[0].parked == 1
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["mail"]
    _done(store, got[1])
    assert [r.id for r in store.claim("me", store.now(), 10).records] == ["x1"]
    assert {q.queue: (q.pending, q.running) for q in store.queue_states(store.now())} == {
        "default": (0, 4), "emails": (0, 1)}


@flow_backends
def test_a_crashed_holder_keeps_its_slot_until_it_is_requeued(store: WheelStore, dead_owner: str) -> None:
    now = store.now()
    lim = _lim("k", concurrency=1)
    store.add([make_record("a", now - 2, limits=(lim,)), make_record("b", now - 1, limits=(lim,))])
    ready_all(store)
    (a,) = store.claim(dead_owner, store.now(), 5).records
    assert store.claim("me", store.now(), 5).records == []     # its owner is dead, but not yet found so
    (lost,) = store.abandoned(store.now())
    store.swap([(lost, requeue_crashed(lost, store.now(), 3))])  # the crash is detected: the slot frees
    got = store.claim("me", store.now(), 5).records
    assert [r.id for r in got] == ["a"] and got[0].crashes == 1  # oldest first: the re-run, then b
    assert store.claim("me", store.now(), 5).records == []
    _done(store, got[0])
    assert [r.id for r in store.claim("me", store.now(), 5).records] == ["b"]


@flow_backends
def test_limited_tasks_only_start_now_never_queue(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("lim", now - 2, limits=(_lim("l", concurrency=5),)), make_record("free", now - 1)])
    ready_all(store)
    got = store.claim("me", store.now(), 0, queued=4).records
    assert [r.id for r in got] == ["free"] and got[0].started is None
    assert [r.id for r in store.claim("me", store.now(), 1).records] == ["lim"]


@flow_backends
def test_a_rate_never_admits_more_starts_in_any_window(store: WheelStore) -> None:
    now = store.now()
    lim = _lim("r", rate=3, per=0.6)
    store.add([make_record(f"r{i}", now - 10 + i, limits=(lim,)) for i in range(8)])
    ready_all(store)
    starts = []
    deadline = time.monotonic() + 8
    while len(starts) < 8 and time.monotonic() < deadline:
        got = store.claim("me", store.now(), 10)
        starts += [r.started for r in got.records]
        for r in got.records:
            _done(store, r)
        if got.next_eta is not None:
            assert got.next_eta > store.now() - 0.05 or got.records     # a window, not a busy loop
            time.sleep(max(0.0, min(0.7, got.next_eta - store.now())) + 0.01)
    assert len(starts) == 8
    starts.sort()
    assert all(b - a >= 0.6 - 1e-6 for a, b in zip(starts, starts[3:])), starts   # <= 3 in any 0.6 s
    assert starts[-1] - starts[0] < 0.6 * 3 + 0.5                                  # and no slower


@flow_backends
def test_a_parked_task_stays_pending_listed_and_changeable(store: WheelStore) -> None:
    now = store.now()
    lim = _lim("one", concurrency=1)
    store.add([make_record(f"p{i}", now - 5 + i, limits=(lim,)) for i in range(3)])
    ready_all(store)
    (first,) = store.claim("me", store.now(), 5).records
    assert [r.id for r in store.scan(PENDING)] == ["p1", "p2"]
    rec = store.get("p1")
    (gone,) = store.swap([(rec, cancel(rec, store.now()))])       # cancelled while parked
    assert gone.status == CANCELLED
    _done(store, first)
    assert [r.id for r in store.claim("me", store.now(), 5).records] == ["p2"]
    assert store.counts() == {(SUCCEEDED, "t"): 1, (CANCELLED, "t"): 1, (RUNNING, "t"): 1}


@flow_backends
def test_racing_claimers_never_exceed_a_limit(store_factory) -> None:
    """Four claimers on their own store instances (processes, for the file and Redis stores),
    claiming and finishing as fast as they can: never more than 2 holders at once."""
    stores = [store_factory() for _ in range(4)]
    now = stores[0].now()
    lim = _lim("race", concurrency=2)
    stores[0].add([make_record(f"t{i}", now - 1, limits=(lim,)) for i in range(40)])
    ready_all(stores[0])
    running: set = set()
    lock = threading.Lock()
    worst = []
    done: list = []

    def work(s: WheelStore) -> None:
        deadline = time.monotonic() + 20
        while len(done) < 40 and time.monotonic() < deadline:
            got = s.claim(f"o{id(s)}", s.now(), 3).records
            with lock:
                running.update(r.id for r in got)
                worst.append(len(running))
            time.sleep(0.002)
            for r in got:
                with lock:
                    running.discard(r.id)
                    done.append(r.id)
                _done(s, r)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == sorted(f"t{i}" for i in range(40))
    assert max(worst) <= 2


@flow_backends
def test_a_slot_freed_for_a_task_that_goes_elsewhere_passes_to_the_next(store: WheelStore) -> None:
    """No parked task waits for ever: a slot freed for a task that is then cancelled, or that
    another full limit holds back, goes to the next task parked on the limit."""
    now = store.now()
    one, other = _lim("one", concurrency=1), _lim("other", concurrency=1)
    store.add([make_record("x", now - 9, limits=(one,)), make_record("o", now - 9.5, limits=(other,)),
               make_record("p0", now - 8, limits=(one,)), make_record("both", now - 7.5, limits=(one, other)),
               make_record("p1", now - 7, limits=(one,)), make_record("p2", now - 6, limits=(one,))])
    ready_all(store)
    got = {r.id: r for r in store.claim("me", store.now(), 10).records}
    assert sorted(got) == ["o", "x"]                      # p0, both, p1, p2 parked on "one"
    _done(store, got["x"])                                 # frees "one": p0 comes back ...
    p0 = store.get("p0")
    store.swap([(p0, cancel(p0, store.now()))])            # ... and is cancelled before a claim
    taken = []
    for _ in range(4):             # "both" comes back for the slot, but "other" is full: p1
        taken += store.claim("me", store.now(), 10).records
    assert [r.id for r in taken] == ["p1"], [r.id for r in taken]
    _done(store, taken[0])
    _done(store, store.get("o"))
    ran = []
    for _ in range(8):
        for r in store.claim("me", store.now(), 10).records:
            ran.append(r.id)
            _done(store, r)
    assert sorted(ran) == ["both", "p2"]


@flow_backends
def test_tasks_due_at_one_instant_are_claimed_by_id_page_after_page(store: WheelStore) -> None:
    """Positions tie when etas do: a claim that reads page after page (here: one task at a
    time for its queue) never skips a task that shares its eta with the last one read."""
    now = store.now()
    store.add([make_record("hi", now - 5, priority=7), make_record("lo", now - 9, priority=-3)]
              + [make_record(f"t{i}", now - 1) for i in range(5)])
    ready_all(store)
    assert [r.id for r in store.claim("me", store.now(), 0, queued=4).records] == ["hi", "t0", "t1", "t2"]
    assert [r.id for r in store.claim("me", store.now(), 1, queued=2).records] == ["t3", "t4", "lo"]


def test_the_memory_store_forgets_limits_that_hold_nothing() -> None:
    """As the file and Redis stores do (their own tests): the purge drops the spec and starts
    of a per-key limit once it holds nothing and its window has passed; a held one stays."""
    from timewheel.store.memory import MemoryStore
    clock = [1_000_000.0]
    s = MemoryStore(clock=lambda: clock[0])
    now = clock[0]
    s.add([make_record("busy", now - 2, limits=(("k:busy", 1, 0, 0.0),))] +
          [make_record(f"c{i}", now - 1, limits=((f"k:{i}", 1, 5, 0.2),)) for i in range(50)])
    s.advance(s.wheel.current_tick(now) + 1, 100, "tests")
    got = {r.id: r for r in s.claim("me", now, 100).records}
    assert len(got) == 51
    s.swap([(got[f"c{i}"], end_run(got[f"c{i}"], Outcome(True, now, now))) for i in range(50)])
    s.purge(now - 3600)
    assert len(s._specs) == 51                       # the windows have not passed yet
    clock[0] += 2
    s.purge(now - 3600)
    assert set(s._specs) == {"k:busy"} and not s._starts
