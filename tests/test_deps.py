"""Dependencies and chains (issue 23): the pure rules of timewheel/deps.py without a store or a
clock, then the same contract on every backend that keeps dependencies (memory, file): a
dependent waits parked, is released by the write that records its last dependency's success
and cancelled -- transitively -- by the one that records any other final status; an unknown
dependency writes nothing; the API on top (``depends_on=``, ``then``).  Real processes:
tests/test_deps_processes.py."""

from __future__ import annotations

import contextlib
import pickle
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timewheel import TaskFailed, TaskNotFound, TimeWheel, deps
from timewheel.records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Outcome,
    cancel,
    decode_record,
    encode_record,
    end_run,
    reset_for_retry,
)
from timewheel.store.base import WheelStore
from timewheel.store.rules import claimed

from .conftest import make_record

# -- the pure rules --------------------------------------------------------------------------------

def _rec(task_id: str, status: str = PENDING, **fields) -> "deps.TaskRecord":
    return make_record(task_id, 1.0, status=status, **fields)


@pytest.mark.parametrize("statuses,want", [
    ((SUCCEEDED,), (PENDING, 0)),                      # already succeeded: runs at its eta
    ((PENDING,), (PENDING, 1)),
    ((RUNNING, PENDING, SUCCEEDED), (PENDING, 2)),     # waits for the unfinished ones only
    ((SUCCEEDED, FAILED), (CANCELLED, 0)),             # can never run: cancelled at once
    ((CANCELLED,), (CANCELLED, 0)),
    ((MISFIRED, PENDING), (CANCELLED, 0)),
])
def test_what_a_new_dependent_is(statuses, want) -> None:
    stored = {f"d{i}": _rec(f"d{i}", s) for i, s in enumerate(statuses)}
    new = deps.resolve(_rec("x", depends_on=tuple(stored)), stored.get, 5.0)
    assert (new.status, new.waiting) == want
    if want[0] == CANCELLED:
        bad = next(i for i, r in stored.items() if r.status not in (PENDING, RUNNING, SUCCEEDED))
        assert new.error == deps.reason(bad, stored[bad].status) and bad in new.error and new.finished == 5.0


def test_an_unknown_dependency_is_refused() -> None:
    with pytest.raises(TaskNotFound, match="depends on nope"):
        deps.resolve(_rec("x", depends_on=("nope",)), {}.get, 1.0)


def test_then_takes_the_result_of_a_dependency_that_already_succeeded() -> None:
    done = _rec("d", SUCCEEDED, result=pickle.dumps(7))
    new = deps.resolve(_rec("x", depends_on=("d",), takes_result=True), {"d": done}.get, 1.0)
    assert new.waiting == 0 and new.given == done.result


@pytest.mark.parametrize("status,want", [
    (SUCCEEDED, (PENDING, 1)), (FAILED, (CANCELLED, 0)), (CANCELLED, (CANCELLED, 0)),
    (MISFIRED, (CANCELLED, 0)), ("aborted", (CANCELLED, 0)),   # any final status but succeeded
])
def test_what_an_outcome_does_to_a_dependent(status, want, monkeypatch) -> None:
    monkeypatch.setattr(deps, "TERMINAL", deps.TERMINAL | {"aborted"})
    dep = _rec("d", status, result=b"r")
    new = deps.on_outcome(dep, _rec("x", depends_on=("d", "e"), waiting=2), 9.0)
    assert new is not None and (new.status, new.waiting) == want
    if new.status == CANCELLED:
        assert new.error == deps.reason("d", status) and new.finished == 9.0


@pytest.mark.parametrize("dependent", [
    _rec("x", CANCELLED, depends_on=("d",)),              # cancelled by hand meanwhile
    _rec("x", depends_on=("d",), waiting=0),              # retried by hand: runs without waiting
    _rec("x", depends_on=("other",), waiting=1),          # replaced by a task that waits for another
])
def test_an_outcome_leaves_a_dependent_that_no_longer_waits_for_it(dependent) -> None:
    assert deps.on_outcome(_rec("d", SUCCEEDED), dependent, 1.0) is None


def test_release_copies_the_result_into_a_then_dependent() -> None:
    new = deps.on_outcome(_rec("d", SUCCEEDED, result=b"R"),
                          _rec("x", depends_on=("d",), waiting=1, takes_result=True), 1.0)
    assert new is not None and new.waiting == 0 and new.given == b"R"


def test_check_dependencies_takes_handles_and_ids_each_once() -> None:
    class H:
        id = "h1"
    assert deps.check_dependencies([H(), "b", "h1"]) == ("h1", "b")
    assert deps.check_dependencies("a") == ("a",) and deps.check_dependencies(H()) == ("h1",)
    for bad in ([1], [""], 3, ["x" * 201]):
        with pytest.raises(TypeError):
            deps.check_dependencies(bad)
    with pytest.raises(ValueError, match="at most 1000"):
        deps.check_dependencies([str(i) for i in range(1001)])


class _Dict:
    """A store made of dicts, applying deps.Cascade as a backend does: a pure model."""

    def __init__(self) -> None:
        self.recs: dict = {}
        self.waiters: dict = {}

    def add(self, rec):
        (rec,) = deps.resolve_all([rec], self.recs.get, 0.0)
        self.recs[rec.id] = rec
        for d in deps.edges_of(rec, self.recs.get):
            self.waiters.setdefault(d, []).append(rec.id)
        return rec

    def write(self, new):
        old = self.recs.get(new.id)
        cascade = deps.Cascade(lambda i: self.waiters.pop(i, []), self.recs.get, self._put, 1.0)
        self._cascade = cascade
        self.recs[new.id] = new
        cascade.wrote(old, new)
        return cascade.run()

    def _put(self, old, new):
        self.recs[new.id] = new
        self._cascade.wrote(old, new)


def test_a_chain_of_a_thousand_cancels_in_one_write_without_recursion() -> None:
    s = _Dict()
    s.add(_rec("t0"))
    for i in range(1, 1001):
        s.add(_rec(f"t{i}", depends_on=(f"t{i - 1}",)))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)            # a recursive walk of 1,000 would overflow this
    try:
        changed = s.write(_rec("t0", FAILED))
    finally:
        sys.setrecursionlimit(limit)
    assert changed == 1000 and all(s.recs[f"t{i}"].status == CANCELLED for i in range(1, 1001))
    assert s.recs["t1000"].error == deps.reason("t999", CANCELLED)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 30), max_size=4), st.booleans()), min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(0, 29), st.sampled_from([SUCCEEDED, FAILED, CANCELLED])), max_size=40))
def test_a_dependent_is_released_only_when_every_dependency_succeeded(spec, outcomes) -> None:
    """Any DAG (each task may depend on earlier ones), any outcomes in any order: a task is
    released (pending, not waiting) only once all its dependencies succeeded, and cancelled
    as soon as one ended otherwise; nothing waits whose dependencies are all finished."""
    s = _Dict()
    for i, (on, _) in enumerate(spec):
        s.add(_rec(f"t{i}", depends_on=tuple(dict.fromkeys(f"t{j}" for j in on if j < i))))
    for i, status in outcomes:
        cur = s.recs.get(f"t{i}")
        if cur is None or cur.status != PENDING or cur.waiting:
            continue                      # only a released pending task can run and end
        s.write(cur._replace(status=status))
    for r in s.recs.values():
        ds = [s.recs[d] for d in r.depends_on]
        if r.status == PENDING and r.waiting:
            assert r.waiting == sum(d.status != SUCCEEDED for d in ds) and all(d.status == PENDING for d in ds
                                                                               if d.status != SUCCEEDED)
        elif r.status == PENDING or r.status == SUCCEEDED:
            assert all(d.status == SUCCEEDED for d in ds), r
        if any(d.status in (FAILED, CANCELLED) for d in ds):
            assert r.status == CANCELLED, r


def test_a_record_with_dependencies_round_trips_and_one_without_is_encoded_as_before() -> None:
    plain = make_record("a", 1.0, batch="b")
    assert encode_record(plain) == encode_record(plain._replace(depends_on=()))
    full = make_record("a", 1.0, depends_on=("x", "y"), waiting=2, takes_result=True, given=b"g")
    assert decode_record(encode_record(full)) == full
    assert reset_for_retry(full._replace(status=CANCELLED), 3.0).waiting == 0   # by hand: runs now


# -- the store contract, on every backend that keeps dependencies ----------------------------------

def _run(store: WheelStore, task_id: str, ok: bool = True, result: bytes = b"\x80\x04K\x07."):
    """Claim ``task_id`` (it must be ready) and record its outcome."""
    rec = store.get(task_id)
    running = claimed(rec, "me", store.now())
    (running,) = store.swap([(rec, running)])
    out = Outcome(ok=ok, started=store.now(), finished=store.now(), result=result if ok else None,
                  error=None if ok else "E: no", retryable=False)
    (done,) = store.swap([(running, end_run(running, out))])
    return done


def _ready_ids(store: WheelStore) -> set:
    store.advance(store.wheel.current_tick(store.now() + 5), 10_000, store.liveness.token)
    return {r.id for r in store.claim("peek", store.now() + 5, 100).records}


def test_a_dependent_waits_parked_and_is_released_by_the_last_success(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now), make_record("b", now)])
    (x,) = store.add([make_record("x", now, depends_on=("a", "b"))])
    assert (x.status, x.waiting) == (PENDING, 2)
    store.advance(store.wheel.current_tick(now + 5), 10_000, store.liveness.token)
    got = store.claim("me", now + 5, 100).records
    assert {r.id for r in got} == {"a", "b"}          # parked: never offered to a claim
    for r in got:
        if r.id == "a":
            (done,) = store.swap([(r, end_run(r, Outcome(True, now, now, result=b"R")))])
    assert store.get("x").waiting == 1 and store.claim("me", now + 5, 100).records == []
    b = next(r for r in got if r.id == "b")
    store.swap([(b, end_run(b, Outcome(True, now, now)))])
    x = store.get("x")
    assert (x.status, x.waiting) == (PENDING, 0)         # released by b's outcome, in its write
    assert [r.id for r in store.claim("me", store.now() + 5, 100).records] == ["x"]
    assert store.dependents("a") == ["x"] and store.dependents("x") == []


def test_a_failure_cancels_the_dependents_transitively_in_its_write(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now), make_record("ok", now)])
    store.add([make_record("b", now, depends_on=("a", "ok")), make_record("c", now, depends_on=("b",)),
               make_record("d", now, depends_on=("c",)), make_record("free", now, depends_on=("ok",))])
    _run(store, "a", ok=False)
    assert [store.get(i).status for i in "bcd"] == [CANCELLED] * 3
    assert store.get("b").error == deps.reason("a", FAILED)
    assert store.get("d").error == deps.reason("c", CANCELLED)
    assert store.get("free").status == PENDING and store.get("free").waiting == 1
    _run(store, "ok")
    assert store.get("free").waiting == 0 and "free" in _ready_ids(store)


def test_a_cancel_by_hand_of_a_dependency_cancels_its_dependents(store: WheelStore) -> None:
    now = store.now()
    (a,) = store.add([make_record("a", now + 100)])
    store.add([make_record("x", now, depends_on=("a",))])
    store.swap([(a, cancel(a, now))])
    assert store.get("x").status == CANCELLED and "a" in store.get("x").error


def test_an_unknown_dependency_writes_nothing(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now)])
    with pytest.raises(TaskNotFound):
        store.add([make_record("x", now), make_record("y", now, depends_on=("a", "missing"))])
    assert store.get("x") is None and store.get("y") is None
    with pytest.raises(TaskNotFound):        # must precede its dependent in the same add
        store.add([make_record("p", now, depends_on=("q",)), make_record("q", now)])
    assert store.get("p") is None and store.get("q") is None


def test_dependencies_in_one_add_and_already_finished_ones(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("f", now)])
    _run(store, "f", ok=False)
    store.add([make_record("s", now)])
    _run(store, "s")
    out = store.add([make_record("a", now), make_record("b", now, depends_on=("a", "s")),
                     make_record("late", now, depends_on=("f",)),
                     make_record("then", now, depends_on=("s",), takes_result=True)])
    assert [(r.status, r.waiting) for r in out] == [(PENDING, 0), (PENDING, 1), (CANCELLED, 0), (PENDING, 0)]
    assert store.get("late").error == deps.reason("f", FAILED)
    assert store.get("then").given == store.get("s").result
    assert _ready_ids(store) == {"a", "then"}


def test_a_dependency_with_many_dependents_releases_them_all_in_one_write(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("root", now)])
    store.add([make_record(f"x{i}", now, depends_on=("root",)) for i in range(2000)])
    assert _ready_ids(store) == {"root"}
    done = _run(store, "root")
    assert done.status == SUCCEEDED
    assert sum(1 for i in range(2000) if store.get(f"x{i}").waiting == 0) == 2000


def test_a_task_with_a_hundred_dependencies_is_released_by_the_last(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record(f"d{i}", now) for i in range(100)])
    store.add([make_record("x", now, depends_on=tuple(f"d{i}" for i in range(100)))])
    for i in range(99):
        _run(store, f"d{i}")
    assert store.get("x").waiting == 1 and "x" not in _ready_ids(store)
    _run(store, "d99")
    assert store.get("x").waiting == 0 and "x" in _ready_ids(store)


def test_a_dependent_retried_by_hand_runs_without_waiting(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now)])
    store.add([make_record("x", now, depends_on=("a",))])
    _run(store, "a", ok=False)
    x = store.get("x")
    store.swap([(x, reset_for_retry(x, store.now()))])
    assert "x" in _ready_ids(store)


# -- the API ---------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "file"])
def hu(request, tmp_path):
    w = TimeWheel(None if request.param == "memory" else str(tmp_path / "t.db"), workers=2, tick=0.05)
    yield w
    w.stop(timeout=10)
    w.close()


def test_depends_on_and_then_through_the_api(hu: TimeWheel) -> None:
    order: list[str] = []

    @hu.task()
    def step(name: str, value: int = 0) -> int:
        order.append(name)
        return value + 1

    @hu.task()
    def add(previous: int, more: int, name: str) -> int:
        order.append(name)
        return previous + more

    a = step.delay("a", 1)
    b = step.options(depends_on=[a]).delay("b")
    c = step.schedule(("c",), depends_on=[a, b.id])
    chain = a.then(add, 10, name="t1").then(add, 100, name="t2")
    with pytest.raises(TaskNotFound):
        step.schedule(("z",), depends_on=["no-such-task"])
    with pytest.raises(TypeError):              # then()'s first argument is the result: checked
        a.then(add, 1, 2, 3)
    assert b.record.waiting == 1 and c.depends_on == (a.id, b.id)
    with pytest.raises(ValueError, match="cycle"):      # replacing could close a cycle
        step.schedule(("r",), task_id="r", replace=True, depends_on=[a])
    hu.start()
    assert chain.result(10) == 112 and c.result(10) == 1
    assert order.index("a") < order.index("b") < order.index("c") and order.index("t1") < order.index("t2")


def test_then_with_the_json_serializer(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "j.db"), workers=2, tick=0.05, serializer="json")

    @hu.task()
    def make(n: int) -> dict:
        return {"n": n}

    @hu.task()
    def use(previous: dict, extra: str) -> str:
        return f"{previous['n']}{extra}"

    h = make.delay(4).then(use, "!")
    hu.start()
    try:
        assert h.result(10) == "4!"
    finally:
        hu.stop(timeout=10)
        hu.close()


def test_a_failed_dependency_fails_the_dependents_result(hu: TimeWheel) -> None:
    @hu.task()
    def boom() -> None:
        raise RuntimeError("no")

    @hu.task()
    def after(x: object = None) -> None: ...

    f = boom.delay()
    h = f.then(after).then(after)
    hu.start()
    with pytest.raises(TaskFailed, match="cancelled"):
        h.result(10)
    assert f.id in hu.get(f.id).then(after).record.error        # added after: cancelled at once


def test_postgres_dependents_through_the_applications_transaction(pg_db) -> None:
    """Transactional enqueue (hu.using): a dependent is written with the application's
    transaction -- rolled back with it, committed with it -- and released by its outcome."""
    import psycopg
    hu = TimeWheel(pg_db)

    @hu.task()
    def t(x: object = None) -> None: ...

    a = t.delay()
    with psycopg.connect(pg_db) as conn:
        with hu.using(conn):
            gone = t.options(depends_on=[a]).delay()
        conn.rollback()
        with hu.using(conn):
            kept = a.then(t)
        conn.commit()
    assert hu.store.get(gone.id) is None and hu.store.get(kept.id).waiting == 1
    assert hu.store.dependents(a.id) == [kept.id]
    _run(hu.store, a.id)
    assert hu.store.get(kept.id).waiting == 0 and hu.store.get(kept.id).given is not None
    hu.close()


# -- shown: timewheel show / tasks and the web view ------------------------------------------------

def test_show_tasks_and_the_web_view_list_dependencies_and_dependents(tmp_path) -> None:
    import httpx

    from timewheel.testing import serve

    from .test_cli import as_json, ok

    path = str(tmp_path / "t.db")
    hu = TimeWheel(path)

    @hu.task()
    def t(x: object = None) -> None: ...

    a, b = t.delay(), t.delay()
    c = t.options(depends_on=[a, b]).delay()
    d = c.then(t)
    store = hu.store
    _run(store, a.id)
    hu.close()
    shown = as_json("show", path, c.id)
    assert shown["depends_on"] == [a.id, b.id] and shown["waiting_for"] == 1
    assert shown["dependencies"] == [{"id": a.id, "status": SUCCEEDED}, {"id": b.id, "status": PENDING}]
    assert shown["dependents"] == [{"id": d.id, "status": PENDING}] and not shown["takes_result"]
    assert shown["waiting"] == f"waiting for 1 of its 2 dependencies: {b.id}"
    assert as_json("show", path, a.id)["dependents"] == [{"id": c.id, "status": PENDING}]
    assert as_json("show", path, d.id)["takes_result"] is True
    text = ok("show", path, c.id).stdout
    assert "waiting (on 1 of 2 dependencies)" in text and f"{a.id} (succeeded)" in text
    rows = {r["id"]: r for r in as_json("tasks", path)["tasks"]}
    assert rows[c.id]["waiting_for"] == 1 and rows[b.id]["waiting_for"] == 0
    assert "waiting (on 1 of 2 dependencies)" in ok("tasks", path).stdout
    with serve(path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get(f"tasks/{c.id}").text
        assert 'id="dependencies"' in page and a.id in page and b.id in page
        assert 'id="dependents"' in page and d.id in page
        listing = client.get("tasks", params={"status": "pending"}).text
        assert "waiting" in listing and "(on 1 of 2)" in listing


def test_the_sweep_tells_dependents_an_outcome_left_waiting(store: WheelStore, backend, request) -> None:
    """The backstop of the ticking process (once a minute): a dependency's outcome recorded
    without telling its dependents -- no write of the stores does that; simulated here by
    hiding the dependency index from that one write -- is told by sweep_dependents()."""
    now = store.now()
    store.add([make_record("a", now), make_record("f", now)])
    store.add([make_record("x", now, depends_on=("a",)), make_record("y", now, depends_on=("f",))])
    assert store.sweep_dependents() == 0
    with _hidden_index(store, backend, request, ["a", "f"]):
        _run(store, "a")
        _run(store, "f", ok=False)
    assert store.get("x").waiting == 1 and store.get("y").status == PENDING      # left waiting
    assert sum(store.sweep_dependents() for _ in range(20)) == 2      # (Redis: SCAN steps)
    assert store.get("x").waiting == 0 and "x" in _ready_ids(store)
    assert store.get("y").status == CANCELLED and store.sweep_dependents() == 0


@contextlib.contextmanager
def _hidden_index(store, backend, request, ids):
    """The waiting tasks of ``ids`` hidden from the stores' writes, then put back as they were."""
    if backend in ("memory", "sqlite"):
        saved = store._tell_dependents
        store._tell_dependents = ((lambda *a: store._concluded.clear()) if backend == "memory"
                                  else (lambda *a: None))
        try:
            yield
        finally:
            del store._tell_dependents
            assert store._tell_dependents == saved
    elif backend == "redis":
        import redis
        r = redis.Redis.from_url(request.getfixturevalue("redis_db"))
        keys = {i: store.keys.prefix + "dq:" + i for i in ids}
        saved = {i: r.smembers(k) for i, k in keys.items()}
        r.delete(*keys.values())
        yield
        for i, members in saved.items():
            r.sadd(keys[i], *members)
    else:
        import psycopg
        with psycopg.connect(request.getfixturevalue("pg_db"), autocommit=True) as c:
            c.execute(f"UPDATE {store.s}.deps SET open = false WHERE dep = ANY(%s) AND open", (ids,))
            yield
            c.execute(f"UPDATE {store.s}.deps SET open = true WHERE dep = ANY(%s)", (ids,))


def test_members_of_a_batch_may_depend_on_each_other(store: WheelStore) -> None:
    """A batch with callbacks whose members wait for one another: a member cancelled by its
    dependency's failure counts as cancelled, and the batch finishes when the last one is told."""
    from timewheel import batches as br
    now = store.now()
    cb = make_record("cb", now)
    store.add_batch("B", [make_record("a", now, batch="B"),
                          make_record("b", now, batch="B", depends_on=("a",)),
                          make_record("c", now, batch="B", depends_on=("b",))],
                    callbacks={"on_complete": br.callback_template(cb, "B", "on_complete", now)}, opened=now)
    assert store.batch("B").counts == {"open": 3}
    _run(store, "a", ok=False)
    assert store.get("c").status == CANCELLED and store.get("c").error == deps.reason("b", CANCELLED)
    state = store.batch("B")
    assert state.counts == {"failed": 1, "cancelled": 2} and state.done is not None
    assert store.get(br.callback_id("B", "on_complete")).status == PENDING


def test_purging_a_dependency_forgets_its_dependents_list(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("a", now)])
    store.add([make_record("x", now, depends_on=("a",))])
    _run(store, "a")
    assert store.dependents("a") == ["x"]
    assert store.purge(store.now() + 10, ["succeeded"]) == 1
    assert store.dependents("a") == [] and store.get("x").waiting == 0


def test_an_aborted_dependency_cancels_its_dependents(store: WheelStore) -> None:
    """Any final status other than succeeded -- aborted too (abort: issue 23)."""
    now = store.now()
    store.add([make_record("a", now)])
    store.add([make_record("x", now, depends_on=("a",))])
    rec = store.get("a")
    (running,) = store.swap([(rec, claimed(rec, "me", store.now()))])
    asked = running._replace(abort=store.now())
    out = Outcome(ok=False, started=store.now(), finished=store.now(), error="TaskAborted: stop")
    (done,) = store.swap([(running, end_run(asked, out))])
    assert done.status == "aborted"
    assert store.get("x").status == CANCELLED and store.get("x").error == deps.reason("a", "aborted")
