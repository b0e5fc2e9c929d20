"""Auto-pipelining of the Redis store (store/redis_pipeline.py, store/combine.py) on a real
``redis-server``: the script calls threads make at once share round trips, each caller gets
its own reply or its own error, and a broken connection fails every call of its round trip,
saying the write may or may not have been made.

Calls are made to pile up for real: ``CLIENT PAUSE ... WRITE`` holds the server's writes for
a moment, so the first call is in flight while the others queue behind it; they then go out
together, as one pipeline.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import redis

from timewheel import StoreError, TimeWheel
from timewheel.errors import DuplicateTask
from timewheel.records import PENDING, SUCCEEDED, Outcome, end_run
from timewheel.store.redis import RedisStore

from .conftest import count_of, make_record, wait_for
from .redis_check import check_redis_store
from .test_group_commit import in_threads


@pytest.fixture
def store(redis_db):
    s = RedisStore(redis_db, namespace="p")
    yield s
    s.close()


def _paused(url: str, ms: int) -> None:
    r = redis.Redis.from_url(url)
    try:
        r.execute_command("CLIENT", "PAUSE", ms, "WRITE")
    finally:
        r.close()


def _together(store: RedisStore, url: str, calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run ``calls`` in threads while the server holds writes for 300 ms: the first goes out
    alone, the rest pile up behind it and go out as one pipeline.  Their outcomes, in order."""
    auto = store._client.auto
    _paused(url, 300)
    first, out = in_threads(calls[:1])
    wait_for(lambda: auto._queue._leading, 5, what="the first call in flight")
    rest, more = in_threads(calls[1:])
    wait_for(lambda: auto._queue.waiting == len(calls) - 1, 5, what="the other calls queued")
    for t in first + rest:
        t.join(30)
    return out + more


def test_concurrent_calls_share_one_round_trip_and_each_gets_its_own_reply(store, redis_db) -> None:
    auto = store._client.auto
    before = (auto.trips, auto.shared, auto.carried)
    now = time.time()
    out = _together(store, redis_db, [lambda i=i: store.add([make_record(f"a{i}", now + 100)])
                                      for i in range(12)])
    assert [k for k, _ in out] == ["ok"] * 12
    assert [v[0].id for _, v in out] == [f"a{i}" for i in range(12)]
    assert (auto.trips - before[0], auto.shared - before[1], auto.carried - before[2]) == (2, 1, 11)
    assert count_of(store, PENDING) == 12
    check_redis_store(redis_db, "p")


def test_a_failing_call_fails_alone_in_a_shared_round_trip(store, redis_db) -> None:
    """A taken id (the script's conflict reply), a script error (arguments it cannot read)
    and good calls in one pipeline: each gets its own outcome."""
    now = time.time()
    store.add([make_record("taken", now + 100)])
    out = _together(store, redis_db, [
        lambda: store.add([make_record("g0", now + 100)]),
        lambda: store.add([make_record("g1", now + 100)]),
        lambda: store.add([make_record("taken", now + 50)]),
        lambda: store._client.scripts([("claim", ["someone", "not a number", 1, "0", 1000, 1])]),
        lambda: store.add([make_record("g2", now + 100)]),
    ])
    assert [k for k, _ in out] == ["ok", "ok", "error", "error", "ok"], out
    assert isinstance(out[2][1], DuplicateTask)
    assert isinstance(out[3][1], StoreError) and not isinstance(out[3][1], DuplicateTask)
    assert {r.id for r in store.scan(PENDING)} == {"taken", "g0", "g1", "g2"}
    assert store.get("taken").eta == pytest.approx(now + 100)
    check_redis_store(redis_db, "p")


def test_flow_controlled_writes_share_a_round_trip_and_keep_their_rules(store, redis_db) -> None:
    """One pipeline holds delay()'s ADD of a limited task, a PUT of a task of another queue, an
    outcome that frees a concurrency slot with the claim of the same round, and a claim of a
    paused queue: each gets what it would alone (issue 21's rules inside issue 25's path)."""
    now = store.now()
    one = ("one", 1, 0, 0.0)
    store.add([make_record("x0", now - 3, limits=(one,)), make_record("x1", now - 2, limits=(one,)),
               make_record("r0", now - 1, queue="reports")])
    store.pause("reports")
    through = store.wheel.current_tick(store.now()) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass
    (x0,) = store.claim("me", store.now(), 5, queues=frozenset({"default"})).records
    t = store.now()
    auto = store._client.auto
    shared = auto.shared
    out = _together(store, redis_db, [
        lambda: store.add([make_record("new", now + 100, limits=(one,))]),
        lambda: store.add([make_record("mail", now + 100, queue="emails", priority=3)]),
        lambda: store.record_and_claim([(x0, end_run(x0, Outcome(True, t, t)))], "me", store.now(), 5,
                                       queues=frozenset({"default"})),
        lambda: store.claim("me", store.now(), 5, queues=frozenset({"reports"})),
    ])
    assert [k for k, _ in out] == ["ok"] * 4, out
    done, got = out[2][1]
    assert done[0].status == SUCCEEDED and [r.id for r in got.records] == ["x1"]   # x0's slot, freed
    assert out[3][1].records == []                                                # paused
    assert auto.shared == shared + 1
    new, mail = store.get("new"), store.get("mail")
    assert new.limits == (one,) and (mail.queue, mail.priority) == ("emails", 3)
    assert {q.queue: q.pending for q in store.queue_states(store.now())} == {
        "default": 1, "emails": 1, "reports": 1}
    assert store.limit_states(["one"])[0].running == 1
    check_redis_store(redis_db, "p")


def test_a_broken_connection_fails_every_call_of_its_round_trip(store, redis_db) -> None:
    """The server closes the connection while a pipeline of 5 calls waits for its replies
    (held by CLIENT PAUSE): each of the 5 gets a StoreError saying its write may or may not
    have been made; the store works again after."""
    now = time.time()
    out: list[Any] = [None] * 6
    auto = store._client.auto

    def run(k: int) -> None:
        try:
            out[k] = ("ok", store.add([make_record(f"b{k}", now + 100)]))
        except BaseException as exc:
            out[k] = ("error", exc)

    def kill_clients() -> None:
        r = redis.Redis.from_url(redis_db)
        r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")   # every one but r
        r.close()

    _paused(redis_db, 3000)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    trips = auto.trips
    threads[0].start()
    wait_for(lambda: auto.trips == trips + 1, 5, what="the first call in flight")
    for t in threads[1:]:
        t.start()
    wait_for(lambda: auto._queue.waiting == 5, 5, what="the other calls queued")
    kill_clients()                              # the first call's connection: it fails ...
    threads[0].join(10)
    wait_for(lambda: auto.trips == trips + 2 and auto._queue.waiting == 0, 5,
             what="the other five sent as one pipeline")     # ... and the five go out together
    time.sleep(0.1)
    kill_clients()
    for t in threads:
        t.join(30)
    assert [k for k, _ in out] == ["error"] * 6, out
    for _, exc in out:
        assert isinstance(exc, StoreError) and "may or may not have been made" in str(exc), exc
    r = redis.Redis.from_url(redis_db)
    r.execute_command("CLIENT", "UNPAUSE")
    r.close()
    store.add([make_record("after", now + 100)])          # a new connection: it works again
    assert store.get("after") is not None
    check_redis_store(redis_db, "p")


def test_scripts_the_server_forgot_are_loaded_and_run_once(store, redis_db) -> None:
    """SCRIPT FLUSH (a server restarted without them): the calls of a pipeline that did not
    run for it run after the scripts are loaded, once each."""
    now = time.time()
    r = redis.Redis.from_url(redis_db)
    r.script_flush()
    r.close()
    out = _together(store, redis_db, [lambda i=i: store.add([make_record(f"f{i}", now + 100)])
                                      for i in range(5)])
    assert [k for k, _ in out] == ["ok"] * 5, out
    assert count_of(store, PENDING) == 5
    check_redis_store(redis_db, "p")


def test_threads_enqueueing_share_round_trips_and_every_task_is_stored_once(redis_db) -> None:
    hu = TimeWheel(redis_db, namespace="q")

    @hu.task(name="t")
    def t(i: int) -> None: ...

    start = threading.Barrier(8)
    got: list[list[str]] = [[] for _ in range(8)]

    def enqueue(k: int) -> None:
        start.wait()
        for i in range(150):
            got[k].append(t.delay(i, count_down=3600).id)

    threads = [threading.Thread(target=enqueue, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    ids = [i for g in got for i in g]
    assert len(ids) == len(set(ids)) == 1200
    r = redis.Redis.from_url(redis_db)
    stored = {k.decode()[len("{q}:t:"):] for k in r.scan_iter(match="{q}:t:*", count=5000)}
    r.close()
    assert stored == set(ids)
    auto = hu.store._client.auto
    assert auto.shared > 0 and auto.trips < 1200, (auto.trips, auto.shared, auto.carried)
    check_redis_store(redis_db, "q")
    hu.close()
