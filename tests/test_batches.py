"""Batches (issue 23): the pure rules of timewheel/batches.py without a store or a clock, then
the same contract on every backend that keeps batches (memory, file, a real redis-server):
counts kept by the members' own writes, callbacks added exactly once under deterministic ids
by the write that records the last outcome, members kept until then whatever the TTL, and
errors that write nothing.  The API on top (``hu.batch(on_complete=...)``, handles, results).
Real processes killed at random: tests/test_batch_processes.py."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timewheel import BatchClosed, BatchNotFound, DuplicateTask, TaskFailed, TimeWheel, current_task
from timewheel import batches as br
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
from timewheel.store import SqliteDictStore
from timewheel.store.base import WheelStore
from timewheel.store.rules import claimed

from .conftest import examples, make_record

# -- the pure rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("old,new,want", [
    (PENDING, RUNNING, {}),                                   # a claim moves nothing
    (RUNNING, PENDING, {}),                                   # nor a retry or a crash requeue
    (RUNNING, SUCCEEDED, {"open": -1, "succeeded": 1}),
    (RUNNING, FAILED, {"open": -1, "failed": 1}),
    (PENDING, CANCELLED, {"open": -1, "cancelled": 1}),
    (PENDING, MISFIRED, {"open": -1, "misfired": 1}),
    (FAILED, PENDING, {"failed": -1, "open": 1}),             # retried by hand
    (None, PENDING, {"open": 1}),                             # added
    (SUCCEEDED, None, {"succeeded": -1}),                     # gone
])
def test_what_a_members_change_moves(old, new, want) -> None:
    a = None if old is None else make_record("m", 1.0, status=old, batch="b")
    b = None if new is None else make_record("m", 1.0, status=new, batch="b")
    assert br.moves([(a, b)]) == ({"b": want} if want else {})


def test_tasks_of_no_batch_move_nothing_and_leaving_a_batch_counts() -> None:
    plain = make_record("m", 1.0)
    assert br.moves([(plain, plain._replace(status=SUCCEEDED))]) == {}
    member = make_record("m", 1.0, batch="b", status=SUCCEEDED)
    assert br.moves([(member, plain)]) == {"b": {"succeeded": -1}}


@pytest.mark.parametrize("counts,done,events,status", [
    ({"succeeded": 3}, True, ("on_complete", "on_success"), SUCCEEDED),
    ({"succeeded": 2, "failed": 1}, True, ("on_complete", "on_failure"), FAILED),
    ({"succeeded": 2, "cancelled": 1}, True, ("on_complete", "on_failure"), FAILED),
    ({"misfired": 1}, True, ("on_complete", "on_failure"), FAILED),
    ({}, True, ("on_complete", "on_success"), SUCCEEDED),        # an empty batch
    ({"open": 1, "succeeded": 2}, False, None, RUNNING),
])
def test_when_a_batch_has_finished_and_which_callbacks_apply(counts, done, events, status) -> None:
    assert br.finished(counts) is done
    if events is not None:
        assert br.events(counts) == events
    assert br.batch_status(counts, 1.0 if done else None) == status


def test_callbacks_have_deterministic_ids_and_only_applicable_ones_are_added() -> None:
    tpl = {e: br.callback_template(make_record("x", 5.0, misfire_grace=1.0, batch="zz"), "B", e, 2.0)
           for e in ("on_complete", "on_failure")}
    assert {r.id for r in tpl.values()} == {"batch:B:on_complete", "batch:B:on_failure"}
    assert all(r.eta == 2.0 and r.misfire_grace is None and r.batch is None for r in tpl.values())
    assert [r.id for r in br.callback_records(tpl, {"succeeded": 1})] == ["batch:B:on_complete"]
    assert [r.id for r in br.callback_records(tpl, {"failed": 1})] == [
        "batch:B:on_complete", "batch:B:on_failure"]
    assert br.decode_callbacks(br.encode_callbacks(tpl)) == tpl
    with pytest.raises(ValueError):
        br.decode_callbacks(b"\x80\x05K\x01.")


def test_a_members_record_keeps_its_batch_and_an_old_record_reads_without_one() -> None:
    rec = make_record("m", 1.0, batch="b1")
    assert decode_record(encode_record(rec)) == rec
    plain = make_record("m", 1.0)
    assert len(encode_record(plain)) == len(encode_record(plain._replace(batch=None)))
    assert decode_record(encode_record(plain)).batch is None


_STEPS = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["claim", "ok", "fail", "retry", "cancel",
                                                                "reset", "crash"])), max_size=60)


@settings(max_examples=examples(200))
@given(_STEPS)
def test_counts_kept_by_moves_equal_a_recount_and_the_batch_finishes_once(steps) -> None:
    """Any sequence of member transitions (as records.py makes them): the counts summed from
    moves() always equal a recount of the members, and finished() turns true at most once
    per stretch with no open member."""
    members = {i: make_record(f"m{i}", 0.0, batch="B", retries=1) for i in range(6)}
    counts = br.moves([(None, r) for r in members.values()])["B"]
    finishes = 0
    for i, step in steps:
        old = members[i]
        new = old
        if step == "claim" and old.status == PENDING:
            new = claimed(old, "w", 1.0)
        elif step in ("ok", "fail", "retry") and old.status == RUNNING:
            out = Outcome(ok=step == "ok", started=1.0, finished=2.0, error=None if step == "ok" else "E",
                          retryable=step == "retry")
            new = end_run(old, out)
        elif step == "cancel" and old.status == PENDING:
            new = cancel(old, 3.0)
        elif step == "reset" and old.done:
            new = reset_for_retry(old, 4.0)
        elif step == "crash" and old.status == RUNNING:
            new = old._replace(status=PENDING, owner=None)
        was = br.finished(counts)
        for c, d in br.moves([(old, new)]).get("B", {}).items():
            counts[c] = counts.get(c, 0) + d
        members[i] = new
        recount: dict[str, int] = {}
        for r in members.values():
            recount[br.class_of(r.status)] = recount.get(br.class_of(r.status), 0) + 1
        assert {c: n for c, n in counts.items() if n} == recount
        finishes += br.finished(counts) and not was
    assert finishes <= 1 + sum(1 for _, s in steps if s == "reset")


# -- every backend that keeps batches --------------------------------------------------------------

def _members(batch_id: str, n: int, eta: float) -> list:
    return [make_record(f"{batch_id}-{i}", eta, batch=batch_id) for i in range(n)]


def _templates(batch_id: str, opened: float, events=br.EVENTS) -> dict:
    return {e: br.callback_template(make_record("cb", opened, name=f"cb.{e}"), batch_id, e, opened)
            for e in events}


def _run_all(store: WheelStore, ok=lambda rec: True) -> list:
    """Claim every ready member and record its outcome (``ok(rec)``: succeeded, else failed)."""
    through = store.wheel.current_tick(store.now()) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass
    done = []
    while True:
        got = store.claim("w", store.now(), 50).records
        if not got:
            return done
        outs = [(r, end_run(r, Outcome(ok=ok(r), started=r.started or 0.0, finished=store.now(),
                                       error=None if ok(r) else "E", retryable=False))) for r in got]
        done += [x for x in store.swap(outs) if x is not None]


def _callbacks(store: WheelStore, batch_id: str) -> dict:
    return {e: r for e in br.EVENTS if (r := store.get(br.callback_id(batch_id, e))) is not None}


def test_the_last_outcome_adds_the_callbacks_once(store: WheelStore) -> None:
    now = store.now() - 1
    store.add_batch("B", _members("B", 20, now), callbacks=_templates("B", now), opened=now)
    assert store.batch("B").counts == {"open": 20} and store.batch("B").done is None
    ran = _run_all(store, ok=lambda r: r.id != "B-7")     # the callbacks too, once ready
    assert sum(r.batch == "B" for r in ran) == 20
    st = store.batch("B")
    assert st.counts == {"succeeded": 19, "failed": 1} and st.done is not None and st.status == FAILED
    cbs = _callbacks(store, "B")
    assert set(cbs) == {"on_complete", "on_failure"}
    assert all(r.status == SUCCEEDED and r.payload == cbs[e].payload and r.rev == 2 for e, r in cbs.items())
    # the callbacks are ordinary tasks, each claimed and run once
    assert sorted(r.id for r in ran if r.batch is None) == sorted(
        br.callback_id("B", e) for e in ("on_complete", "on_failure"))
    assert [x[0] for x in st.callbacks] == list(br.EVENTS)
    assert store.batch_members("B") == [f"B-{i}" for i in range(20)]
    assert store.batch_members("B", 5, 3) == ["B-5", "B-6", "B-7"]
    # retrying a member by hand counts again but never adds the callbacks twice
    failed = store.get("B-7")
    store.swap([(failed, reset_for_retry(failed, store.now()))])
    assert store.batch("B").counts == {"succeeded": 19, "open": 1}
    _run_all(store)
    assert store.batch("B").counts == {"succeeded": 20}
    assert all(r.status == SUCCEEDED for r in _callbacks(store, "B").values())
    assert store.get(br.callback_id("B", "on_success")) is None


def test_an_empty_batch_is_done_at_once(store: WheelStore) -> None:
    now = store.now()
    store.add_batch("E", [], callbacks=_templates("E", now, ("on_complete", "on_success")), opened=now)
    assert store.batch("E").status == SUCCEEDED
    assert set(_callbacks(store, "E")) == {"on_complete", "on_success"}


def test_errors_write_nothing(store: WheelStore) -> None:
    now = store.now()
    store.add([make_record("taken", now + 60)])
    with pytest.raises(DuplicateTask):
        store.add_batch("D", [*_members("D", 3, now), make_record("taken", now, batch="D")],
                        callbacks=_templates("D", now), opened=now)
    assert store.batch("D") is None and store.get("D-0") is None
    with pytest.raises(BatchNotFound):
        store.add_batch("nope", _members("nope", 1, now))
    assert store.get("nope-0") is None
    store.add_batch("O", _members("O", 1, now), callbacks=_templates("O", now), opened=now)
    with pytest.raises(BatchClosed):
        store.add_batch("O", [], callbacks=_templates("O", now), opened=now)
    _run_all(store)
    with pytest.raises(BatchClosed):
        store.add_batch("O", [make_record("late", now, batch="O")])
    assert store.get("late") is None and store.batch("O").counts == {"succeeded": 1}


def test_members_added_later_hold_the_batch_open(store: WheelStore) -> None:
    now = store.now() - 1
    store.add_batch("G", _members("G", 2, now), callbacks=_templates("G", now), opened=now)
    store.add_batch("G", [make_record("G-extra", now + 3600, batch="G")])
    _run_all(store)
    assert store.batch("G").counts == {"succeeded": 2, "open": 1} and not _callbacks(store, "G")
    extra = store.get("G-extra")
    store.swap([(extra, cancel(extra, store.now()))])
    assert store.batch("G").status == FAILED
    assert set(_callbacks(store, "G")) == {"on_complete", "on_failure"}
    assert store.batch_members("G")[-1] == "G-extra"


def test_members_are_kept_until_the_batch_is_done_whatever_the_ttl(store: WheelStore) -> None:
    now = store.now() - 1
    members = _members("K", 3, now)
    members[2] = members[2]._replace(eta=now + 3600)     # one member stays open
    store.add_batch("K", members, callbacks=_templates("K", now), opened=now)
    store.add([make_record("plain", now)])
    ran = _run_all(store)
    assert {r.id for r in ran} == {"K-0", "K-1", "plain"}
    assert store.purge(store.now() + 3600) == 1          # plain; K-0 and K-1 wait for their batch
    assert store.get("K-0").status == SUCCEEDED and store.get("plain") is None
    last = store.get("K-2")
    store.swap([(last, cancel(last, store.now()))])
    assert store.batch("K").done is not None
    assert store.purge(store.now() + 3600) == 3          # the members, now; not the pending callbacks
    assert store.get("K-0") is None and store.batch("K").counts == {"succeeded": 2, "cancelled": 1}
    assert {r.status for r in _callbacks(store, "K").values()} == {PENDING}


def test_racing_last_outcomes_add_one_set_of_callbacks(store_factory) -> None:
    """Two instances (other processes, for the file and Redis stores) record the last two
    outcomes at the same moment, many times over: every batch gets one set of callbacks."""
    a, b = store_factory(), store_factory()
    now = a.now() - 1
    for k in range(15):
        a.add_batch(f"R{k}", _members(f"R{k}", 2, now), callbacks=_templates(f"R{k}", now), opened=now)
    through = a.wheel.current_tick(a.now()) + 1
    while not a.advance(through, 10_000, "test").complete:
        pass
    running = a.claim("w", a.now(), 100).records
    by_batch: dict = {}
    for r in running:
        by_batch.setdefault(r.batch, []).append(r)
    for k in range(15):
        x, y = by_batch[f"R{k}"]
        gate = threading.Barrier(2)

        def finish(store, rec, gate=gate):
            gate.wait()
            out = Outcome(ok=True, started=1.0, finished=store.now(), result=None)
            store.swap([(rec, end_run(rec, out))])
        ts = [threading.Thread(target=finish, args=(s, r)) for s, r in ((a, x), (b, y))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert a.batch(f"R{k}").status == SUCCEEDED
        cbs = _callbacks(a, f"R{k}")
        assert set(cbs) == {"on_complete", "on_success"} and all(r.rev == 0 for r in cbs.values())
    assert a.counts()[(PENDING, "cb.on_complete")] == 15


def _undo(store: WheelStore, batch_id: str) -> None:
    """Make the finished batch ``batch_id`` look not done, as no write of ours leaves one (a
    crash between its last outcome and its callbacks, in a store that could have one)."""
    from timewheel.store.memory import MemoryStore
    from timewheel.store.redis import RedisStore
    if isinstance(store, MemoryStore):
        store._batches[batch_id].done = None
    elif isinstance(store, RedisStore):
        store._io(lambda c: c.hdel(store.keys.prefix + "b:" + batch_id, "d"), write=True)
        store._io(lambda c: c.sadd(store.keys.prefix + "bopen", batch_id), write=True)
    elif hasattr(store, "file"):
        with store.file.writing():
            store.file.x('UPDATE "timewheel_batches" SET done = NULL WHERE id = ?', (batch_id,))
    else:
        store._call(f"UPDATE {store.s}.batches SET done = NULL WHERE id = %s", (batch_id,), write=True)


def test_the_sweep_finishes_a_batch_left_unfinished(store: WheelStore) -> None:
    """The backstop: a batch whose counts say finished but that is not done is finished by
    sweep_batches (the ticking process calls it), once, its callbacks never twice."""
    now = store.now()
    store.add_batch("S", [], callbacks=_templates("S", now), opened=now)
    store.add_batch("T", _members("T", 1, now + 3600), callbacks=_templates("T", now), opened=now)
    assert store.sweep_batches() == 0
    before = _callbacks(store, "S")
    _undo(store, "S")
    assert store.batch("S").done is None
    assert store.sweep_batches() == 1
    assert store.batch("S").status == SUCCEEDED and _callbacks(store, "S") == before
    assert store.batch("T").done is None and not _callbacks(store, "T")
    assert store.sweep_batches() == 0


def test_batches_are_listed_newest_first(store: WheelStore) -> None:
    now = store.now()
    for k, at in enumerate((now - 30, now - 10, now - 20)):
        store.add_batch(f"L{k}", _members(f"L{k}", 1, now + 60), callbacks=_templates(f"L{k}", at), opened=at)
    assert [b.id for b in store.batches()] == ["L1", "L2", "L0"]
    assert [b.id for b in store.batches(limit=1)] == ["L1"]
    assert store.batch("L0").total == 1 and store.batch("L0").finished_members == 0


# -- the API -----------------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "sqlite"])
def wheel(request, tmp_path):
    hu = TimeWheel(None if request.param == "memory" else str(tmp_path / "t.db"), workers=4, tick=0.05)
    yield hu
    hu.close()


def test_a_batch_through_the_api(wheel) -> None:
    hu = wheel
    seen: list = []
    lock = threading.Lock()

    @hu.task()
    def square(x):
        if x == 3:
            raise ValueError("three")
        return x * x

    @hu.task()
    def summarise(batch_id):
        with lock:
            seen.append(("complete", batch_id, hu.get_batch(batch_id).results(errors=True)))

    @hu.task()
    def alert(batch_id):
        with lock:
            seen.append(("failure", batch_id, None))

    @hu.task()
    def notify(batch_id):
        with lock:
            seen.append(("success", batch_id, None))

    with hu.batch(on_complete=summarise, on_success=notify, on_failure=alert) as b:
        handles = [square.delay(i) for i in range(6)]
    assert b.status == RUNNING and b.counts == {"open": 6} and b.ids == [h.id for h in handles]
    hu.start()
    from .conftest import wait_for
    wait_for(lambda: len(seen) == 2, 10)
    assert sorted(s[0] for s in seen) == ["complete", "failure"]
    results = next(s[2] for s in seen if s[0] == "complete")
    assert results[:3] == [0, 1, 4] and isinstance(results[3], TaskFailed) and results[4:] == [16, 25]
    assert b.status == FAILED and b.counts == {"succeeded": 5, "failed": 1}
    with pytest.raises(TaskFailed):
        b.results()
    assert hu.get_batch(b.id) == b
    with pytest.raises(BatchNotFound):
        hu.get_batch("no-such-batch")


def test_members_add_members_from_inside(wheel) -> None:
    hu = wheel
    done = threading.Event()

    @hu.task()
    def leaf(x):
        return x

    @hu.task()
    def branch(n):
        for i in range(n):
            current_task().batch.add(leaf, i)
        return n

    @hu.task()
    def finished(batch_id):
        done.set()

    with hu.batch(on_complete=finished) as b:
        branch.delay(3)
        branch.delay(2)
    hu.start()
    assert done.wait(10)
    assert b.state.counts == {"succeeded": 7} and len(b.ids) == 7
    with pytest.raises(BatchClosed):
        b.add(leaf, 99)


def test_batch_options_are_checked_and_nothing_is_written(wheel) -> None:
    hu = wheel

    @hu.task()
    def work(x):
        return x

    other = TimeWheel(None)
    foreign = other.task()(lambda b: b)
    with pytest.raises(TypeError, match="on_complete must be a task of this wheel"):
        with hu.batch(on_complete=foreign):
            work.delay(1)
    with pytest.raises(TypeError, match="on_success"):
        with hu.batch(on_success=print):
            pass
    with pytest.raises(ValueError, match="existing="):
        with hu.batch(on_complete=work):
            work.schedule((1,), task_id="x", once=True)
    with pytest.raises(ValueError, match="batch id"):
        with hu.batch(on_complete=work, batch_id="x" * 181):
            pass
    with pytest.raises(ValueError, match="inside another"):
        with hu.batch():
            with hu.batch(on_complete=work):
                pass
    assert sum(hu.store.counts().values()) == 0 and hu.store.batches() == []
    other.close()


def test_immediate_mode_runs_members_then_callbacks() -> None:
    hu = TimeWheel(None, immediate=True)
    calls: list = []

    @hu.task()
    def work(x):
        calls.append(x)
        return x

    @hu.task()
    def cb(batch_id):
        calls.append(("cb", batch_id))

    with hu.batch(on_complete=cb, on_success=cb) as b:
        work.delay(1)
        work.delay(2)
    assert calls == [1, 2, ("cb", b.id), ("cb", b.id)]
    assert b.results() == [1, 2]


# -- the command line ----------------------------------------------------------------------------

def test_the_cli_lists_batches_and_shows_one(tmp_path) -> None:
    import json

    from .cli_fixtures import invoke
    db = str(tmp_path / "t.db")
    store = SqliteDictStore(db)
    now = store.now() - 1
    members = _members("demo", 3, now)
    members[2] = members[2]._replace(eta=now + 3600)
    store.add_batch("demo", members, callbacks=_templates("demo", now, ("on_complete", "on_failure")),
                    opened=now)
    _run_all(store, ok=lambda r: r.id != "demo-1")
    store.close()
    out = invoke("batches", db, "--json")
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)["batches"]
    assert row["id"] == "demo" and row["status"] == RUNNING and (row["finished"], row["total"]) == (2, 3)
    assert row["counts"] == {"open": 1, "succeeded": 1, "failed": 1, "cancelled": 0, "misfired": 0,
                             "aborted": 0}
    shown = json.loads(invoke("batch", db, "demo", "--json", "--limit", "2").output)
    assert [m["id"] for m in shown["members"]] == ["demo-0", "demo-1"] and shown["next_start"] == 2
    assert [m["status"] for m in shown["members"]] == [SUCCEEDED, FAILED]
    assert [(c["event"], c["status"]) for c in shown["callbacks"]] == [
        ("on_complete", None), ("on_failure", None)]
    text = invoke("batch", db, "demo").output
    assert "2 of 3 finished" in text and "not added yet" in text and "demo-2" in text
    assert "demo" in invoke("batches", db).output
    missing = invoke("batch", db, "nope")
    assert missing.exit_code == 1 and "no batch nope" in missing.output and "Traceback" not in missing.output


# -- PostgreSQL: a store of schema version 1 (before batches) -------------------------------------

def test_a_postgres_store_of_version_1_is_migrated_and_keeps_its_tasks(request) -> None:
    """A schema written by the code before batches (tests/fixtures/pg_store_v1.sql, pg_dump of
    what that code made): a read-only open says how to migrate it; a write open migrates it in
    place (its functions replaced, a batch column and tables added), every task reads as it
    was, the dead owner's task runs again, and a new batch completes beside them."""
    import os

    import psycopg

    from timewheel import NotAStore
    from timewheel.store.postgres import PostgresStore
    url = request.getfixturevalue("pg_db")
    dump = open(os.path.join(os.path.dirname(__file__), "fixtures", "pg_store_v1.sql")).read()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("\n".join(ln for ln in dump.splitlines() if not ln.startswith("\\")))
        c.execute("SELECT pg_catalog.set_config('search_path', 'public', false)")
        before = dict(c.execute("SELECT id, status FROM old.tasks").fetchall())
    assert before == {"ok": SUCCEEDED, "failed": FAILED, "running": RUNNING, "hour": PENDING, "due": PENDING}
    with pytest.raises(NotAStore, match="timewheel migrate"):
        PostgresStore(url, namespace="old", readonly=True)
    store = PostgresStore(url, namespace="old")
    try:
        assert {i: store.get(i).status for i in before} == before
        assert store.get("failed").error == "RuntimeError: boom" and store.get("ok").batch is None
    finally:
        store.close()
    hu = TimeWheel(url + "?schema=old", workers=2)
    ran: list = []

    @hu.task(name="fixture.add")
    def add(a, b):
        ran.append(current_task().id)
        return a + b

    @hu.task()
    def summary(batch_id):
        ran.append(batch_id)

    with hu.batch(on_complete=summary) as b:
        add.delay(2, 3)
    hu.start()
    try:
        from .conftest import wait_for
        wait_for(lambda: b.id in ran and "due" in ran and "running" in ran, 30)
    finally:
        hu.stop()
    assert b.results() == [5] and b.status == SUCCEEDED
    hu.close()


# -- the web view ----------------------------------------------------------------------------------

def test_the_web_view_lists_batches_and_shows_one(tmp_path) -> None:
    import httpx

    from timewheel.testing import serve
    db = str(tmp_path / "t.db")
    store = SqliteDictStore(db)
    now = store.now() - 1
    members = _members("web<b>", 3, now)
    members[2] = members[2]._replace(eta=now + 3600)
    store.add_batch("web<b>", members, callbacks=_templates("web<b>", now, ("on_complete",)),
                    opened=now)
    _run_all(store, ok=lambda r: r.id != "web<b>-1")
    with serve(db) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        listing = client.get("batches")
        assert listing.status_code == 200 and 'data-id="web&lt;b&gt;"' in listing.text
        assert "2/3" in listing.text and "web<b>" not in listing.text          # escaped
        page = client.get("batches/web%3Cb%3E")
        assert page.status_code == 200, page.text[:300]
        assert "2 of 3 finished" in page.text and "not added yet" in page.text
        assert 'data-id="web&lt;b&gt;-1" data-status="failed"' in page.text
        api = client.get("api/batches/web%3Cb%3E", params={"limit": 1}).json()
        assert [m["id"] for m in api["members"]] == ["web<b>-0"] and api["next_start"] == 1
        assert client.get("api/batches").json()["batches"][0]["counts"]["failed"] == 1
        missing = client.get("api/batches/nope")
        assert missing.status_code == 404 and "no batch nope" in missing.json()["error"]
        assert client.get("batches/nope").status_code == 404
    store.close()


def test_on_redis_members_expire_only_once_their_batch_is_done(request) -> None:
    """A Redis store gives finished hashes a TTL (``result_ttl``); a member's hash gets none
    while its batch runs, and one when the batch is done -- so ``.results()`` in a callback
    reads every member, however long the batch took."""
    from timewheel.store.redis import RedisStore
    from timewheel.wheel import Wheel
    store = RedisStore(request.getfixturevalue("redis_db"), Wheel(), namespace="ttl", result_ttl=3600)
    try:
        now = store.now() - 1
        members = _members("X", 2, now)
        members[1] = members[1]._replace(eta=now + 3600)
        store.add_batch("X", members, callbacks=_templates("X", now, ("on_complete",)), opened=now)
        store.add([make_record("plain", now)])
        _run_all(store)

        def ttl(task_id):
            return store._io(lambda c: c.pttl(store.keys.task(task_id)))
        assert ttl("X-0") == -1 and 0 < ttl("plain") <= 3600_000
        last = store.get("X-1")
        store.swap([(last, cancel(last, store.now()))])
        assert store.batch("X").done is not None
        assert 0 < ttl("X-0") <= 3600_000 and 0 < ttl("X-1") <= 3600_000
        assert ttl(br.callback_id("X", "on_complete")) == -1          # pending: no TTL
    finally:
        store.close()
