"""The Redis store on a real ``redis-server`` started by the tests (see ``redis_server.py``).

The conformance suite (test_store.py) runs on Redis too; here are what only a networked store
has -- the server's clock, leases and their fencing, the ticking role, pub/sub wake-ups, TTLs,
URLs, faults -- and the promises proved with real processes: a crash loop, the server itself
SIGKILLed and restarted on its AOF, hosts whose clocks are 30 s off, a worker SIGSTOPped past
its lease.  Figures are printed (``pytest -s``) and attached with ``record_property``.
"""

from __future__ import annotations

import logging
import pickle
import signal
import subprocess
import threading
import time

import pytest
import redis

from timewheel import StoreBusy, StoreError, TimeWheel
from timewheel.errors import DuplicateTask, NotAStore, StoreMismatch
from timewheel.records import PENDING, RUNNING, SUCCEEDED, Outcome, RecordDecodeError, end_run
from timewheel.store import open_store
from timewheel.store.base import BROKEN
from timewheel.store.redis import RedisStore
from timewheel.store.rules import UNKNOWN_REV
from timewheel.testing import RedisServer, free_port
from timewheel.testing import processes as procs
from timewheel.wheel import Wheel

from . import crashloop, mp_worker
from .conftest import make_record, wait_for
from .mp_worker import Runs, events_of
from .redis_check import check_redis_store
from .test_multiprocess import Cluster, _crashloop_check

TICK = 0.25


def _ready_all(store: RedisStore, ahead: float = 0.0) -> None:
    through = store.wheel.current_tick(store.now() + ahead) + 1
    while not store.advance(through, 10_000, "test").complete:
        pass


@pytest.fixture
def opened():
    """Close every store a test opened."""
    stores: list[RedisStore] = []
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def open_redis(redis_db, opened):
    def make(**kw) -> RedisStore:
        kw.setdefault("namespace", "t")
        wheel = kw.pop("wheel", Wheel())
        s = RedisStore(kw.pop("url", redis_db), wheel, **kw)
        opened.append(s)
        return s
    return make


# -- opening ------------------------------------------------------------------------------------

def test_geometry_is_stored_and_checked(open_redis):
    first = open_redis(wheel=Wheel(slots=60, tick=0.5))
    assert first.wheel == Wheel(slots=60, tick=0.5)
    info = first.info()
    assert info["namespace"] == "t" and info["redis_version"].startswith("7") and info["slots"] == 60
    assert open_redis(wheel=None).wheel == Wheel(slots=60, tick=0.5)      # read back
    with pytest.raises(StoreMismatch, match="slots=60"):
        open_redis(wheel=Wheel(slots=3600, tick=1.0))
    with pytest.raises(NotAStore, match="namespace 'other'"):
        open_redis(namespace="other", readonly=True)                       # nothing there


def test_namespaces_and_databases_are_apart(open_redis, redis_db):
    a, b = open_redis(namespace="app-a"), open_redis(namespace="app-b")
    c = open_redis(namespace="app-a", url=redis_db[:-1] + "1")
    now = a.now()
    a.add([make_record("x", now - 1)])
    assert b.get("x") is None and c.get("x") is None and b.counts() == {} and c.counts() == {}
    with pytest.raises(DuplicateTask):
        a.add([make_record("x", now)])
    b.add([make_record("x", now)])                 # the same id in another namespace is another task
    _ready_all(a)
    _ready_all(b)
    assert [r.id for r in b.claim(b.liveness.token, b.now(), 10).records] == ["x"]
    assert a.get("x").status == PENDING
    r = redis.Redis.from_url(redis_db)
    assert all(k.startswith(b"{app-a}:") or k.startswith(b"{app-b}:") for k in r.keys("*"))
    with pytest.raises(ValueError, match="braces"):
        RedisStore(redis_db, namespace="a}b")


def test_location_hides_the_password_and_lease_comes_from_the_url(redis_server, redis_db, opened):
    r = redis.Redis.from_url(redis_db)
    r.acl_setuser("app", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"],
                  commands=["+@all"])
    url = f"redis://app:s3cret@127.0.0.1:{redis_server.port}/0?lease=2.5"
    s = RedisStore(url, Wheel(), namespace="t")
    opened.append(s)
    assert "s3cret" not in s.location and "***" in s.location
    assert s.lease == 2.5 and s.liveness.renew_every == pytest.approx(2.5 / 3)
    with pytest.raises(StoreError) as ei:
        RedisStore(f"redis://app:wrong@127.0.0.1:{redis_server.port}/0", namespace="t")
    assert "wrong" not in str(ei.value) and "credentials" in str(ei.value)
    with pytest.raises(ValueError, match="lease"):
        RedisStore(redis_db + "?lease=0", namespace="t")
    with pytest.raises(ValueError, match="lease= in the URL must be seconds"):
        RedisStore(redis_db + "?lease=soon", namespace="t")


def test_unix_socket_url(redis_server, opened):
    s = RedisStore(redis_server.unix_url, Wheel(), namespace="t")
    opened.append(s)
    s.add([make_record("u", s.now() - 1)])
    _ready_all(s)
    assert [r.id for r in s.claim(s.liveness.token, s.now(), 1).records] == ["u"]


def test_tls_url(tmp_path, opened):
    """rediss:// to a TLS-only server whose certificate the client checks."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    procs.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
               "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
               "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    port = free_port()
    server = RedisServer(tmp_path / "tls", extra=[
        "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
        "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"])
    with server:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        s = RedisStore(url, Wheel(), namespace="t")
        opened.append(s)
        s.add([make_record("secure", s.now() + 5)])
        assert s.get("secure").status == PENDING
        with pytest.raises(StoreError):       # plain TCP to the TLS port is refused
            RedisStore(f"redis://127.0.0.1:{port}/0", namespace="t", timeout=2)


def test_warns_about_settings_that_lose_tasks(redis_db, open_redis, caplog):
    r = redis.Redis.from_url(redis_db)
    with caplog.at_level(logging.WARNING, logger="timewheel.store"):
        open_redis()
    assert not [m for m in caplog.messages if "appendonly" in m or "maxmemory" in m]
    r.config_set("appendonly", "no")
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="timewheel.store"):
            open_redis()
            open_redis(readonly=True)       # a reader changes nothing, so says nothing
    finally:
        r.config_set("appendonly", "yes")
        r.config_set("maxmemory-policy", "noeviction")
    assert sum("appendonly no" in m for m in caplog.messages) == 1, caplog.messages
    assert sum("maxmemory-policy allkeys-lru" in m for m in caplog.messages) == 1, caplog.messages


def test_readonly_store_needs_only_a_read_only_user(redis_server, redis_db, open_redis):
    """A read-only store works with a Redis user that may not write anything: so it never
    writes (any write, script or CONFIG SET would fail with NOPERM)."""
    w = open_redis()
    now = w.now()
    w.add([make_record(f"p{i}", now + 30 + i) for i in range(5)] + [make_record("due", now - 1)])
    _ready_all(w)
    (run,) = w.claim(w.liveness.token, w.now(), 1).records
    w.liveness.try_lead()
    r = redis.Redis.from_url(redis_db)
    r.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"],
                  commands=["-@all", "+@read", "+@connection", "+time", "+info"])
    ro = open_redis(url=f"redis://reader:pw@127.0.0.1:{redis_server.port}/0", readonly=True, wheel=None)
    assert ro.get("due") == run
    assert [x.id for x in ro.scan(PENDING)] == [f"p{i}" for i in range(5)]
    assert ro.scan(RUNNING) == [run] and ro.counts() == w.counts()
    assert ro.ticks() == w.ticks() and ro.wheel_stats() == w.wheel_stats()
    assert ro.state() == w.state() and ro.liveness.leader() == w.liveness.token
    assert not ro.liveness.is_dead(w.liveness.token) and ro.liveness.is_dead("gone:1:x")
    assert ro.abandoned(ro.now()) == [] and not ro.liveness.try_lead()
    with pytest.raises(StoreError, match="read-only"):
        ro.add([make_record("nope", now)])
    with pytest.raises(StoreError, match="read-only"):
        ro.swap([(run, end_run(run, Outcome(True, now, now)))])
    assert ro.liveness.keepalive([run]) == []
    ro.close()
    assert w.get("due") == run


# -- time -----------------------------------------------------------------------------------------

def test_now_is_the_servers_clock_whatever_the_local_one_says(open_redis, redis_db):
    fast = open_redis(clock=lambda: time.time() + 30)
    slow = open_redis(clock=lambda: time.time() - 30)
    sec, usec = redis.Redis.from_url(redis_db).time()
    server_now = sec + usec / 1e6
    assert abs(fast.now() - server_now) < 0.2 and abs(slow.now() - server_now) < 0.2


def test_now_never_falls_below_a_server_time_seen(open_redis):
    """The local clock steps back 0.5 s after the offset was measured (NTP, a VM resumed):
    until the next measurement now() is behind the server -- but never behind a claim, so a
    task is never recorded as started before its eta."""
    step = [0.0]
    s = open_redis(clock=lambda: time.time() + step[0])
    s.add([make_record("a", s.now() - 0.01)])
    _ready_all(s)
    time.sleep(0.7)
    step[0] = -0.5            # (still after the last measurement: no new one before 10 s)
    (rec,) = s.claim(s.liveness.token, s.now(), 1).records
    assert rec.started >= rec.eta and s.now() >= rec.started


def test_a_claim_is_judged_by_the_servers_clock_not_the_callers(open_redis):
    s = open_redis(clock=lambda: time.time() + 3600)
    now = s.now()
    s.add([make_record("soon", now + 1.0)])
    _ready_all(s, ahead=2)
    got = s.claim(s.liveness.token, now + 3600, 10)     # the caller claims it is an hour later
    assert got.records == [] and got.next_eta == pytest.approx(now + 1.0, abs=1e-5)
    time.sleep(1.05)
    (rec,) = s.claim(s.liveness.token, 0.0, 10).records  # and here that it is 1970
    assert rec.started >= rec.eta


def test_count_down_counts_from_the_servers_now(redis_db):
    for offset in (-30.0, 30.0):
        hu = TimeWheel(redis_db, clock=lambda o=offset: time.time() + o, namespace="cd")
        h = hu.task(name="noop")(lambda: None).delay(count_down=5)
        assert abs(h.record.eta - (time.time() + 5)) < 0.5, offset
        hu.close()


def test_the_api_works_unchanged_on_redis(redis_db):
    """Retries, async tasks, periodic tasks (two wheels: each occurrence runs once), cancel,
    retry and results, through TimeWheel on a Redis URL."""
    import asyncio
    runs: list[str] = []
    lock = threading.Lock()
    tries = {"n": 0}            # shared: a retry may run in either wheel

    def wheel() -> TimeWheel:
        hu = TimeWheel(redis_db, workers=2, tick=0.25, slots=60, namespace="api")

        @hu.task(name="flaky", retries=2, retry_delay=0.05)
        def flaky() -> str:
            tries["n"] += 1
            if tries["n"] < 3:
                raise ValueError("not yet")
            return "third time"

        @hu.task(name="later")
        async def later(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * 2

        @hu.periodic(every=0.5, name="beat")
        def beat() -> None:
            from timewheel.execute import current_task
            with lock:
                runs.append(current_task().id)
        return hu

    a, b = wheel(), wheel()
    a.start()
    b.start()
    try:
        flaky, later = a.tasks["flaky"], a.tasks["later"]
        assert flaky.delay().result(timeout=10) == "third time"
        assert later.delay(21).result(timeout=10) == 42
        h = later.delay(1, count_down=60)
        assert h.cancel() and h.status == "cancelled" and a.retry(h.id)
        assert h.result(timeout=10) == 2
        time.sleep(2.2)
    finally:
        a.close()
        b.close()
    assert len(runs) >= 3 and len(runs) == len(set(runs)), runs     # each occurrence once


# -- leases, the ticking role, heartbeats ---------------------------------------------------------

def test_a_lease_runs_out_unless_renewed_and_is_never_revived(open_redis):
    s = open_redis(lease=1.0)
    other = open_redis(lease=1.0)
    now = s.now()
    s.add([make_record("a", now - 2), make_record("b", now - 1)])
    _ready_all(s)
    a, b = s.claim(s.liveness.token, s.now(), 2).records
    assert a.lease == pytest.approx(a.started + 1.0, abs=1e-3) and s.abandoned(s.now()) == []
    for _ in range(4):                       # renewed past its first deadline: "a" stays
        time.sleep(0.3)
        assert s.liveness.keepalive([a]) == []
    lost = other.abandoned(other.now())
    assert [r.id for r in lost] == ["b"]     # "b" was not renewed
    assert s.liveness.keepalive([a, b]) == ["b"]     # an expired lease is not renewed ...
    assert [r.id for r in other.abandoned(other.now())] == ["b"]   # ... so it stays abandoned
    assert s.liveness.keepalive([a, b]) == []        # (and is reported once)
    from timewheel.records import requeue_crashed
    (back,) = other.swap([(lost[0], requeue_crashed(lost[0], other.now(), 3))])
    assert back.status == PENDING and back.crashes == 1
    # b's first owner finishes late: fenced out, the stored record is the requeued one
    t = s.now()
    assert s.swap([(b, end_run(b, Outcome(True, t, t)))]) == [None]
    assert s.get("b") == back
    (b2,) = other.claim(other.liveness.token, other.now(), 1).records
    assert b2.rev > back.rev and s.liveness.keepalive([b2]) == ["b"]   # not s's task any more
    assert other.liveness.keepalive([b2]) == []


def test_claims_by_an_owner_that_is_not_alive_are_abandoned_at_once(open_redis):
    s = open_redis()
    now = s.now()
    s.add([make_record("x", now - 1)])
    _ready_all(s)
    (x,) = s.claim("ghost:1:dead", s.now(), 1).records
    assert s.liveness.is_dead("ghost:1:dead") and not s.liveness.is_dead(s.liveness.token)
    assert [r.id for r in s.abandoned(s.now())] == ["x"]


def test_one_leader_at_a_time_renewed_only_by_its_holder(open_redis):
    a, b = open_redis(wheel=Wheel(tick=0.5)), open_redis(wheel=Wheel(tick=0.5))
    assert a.liveness.role_ttl == 1.0
    assert a.liveness.try_lead() and not b.liveness.try_lead()
    assert a.liveness.leader() == b.liveness.leader() == a.liveness.token
    for _ in range(5):                        # a renews: b never gets it
        time.sleep(0.3)
        assert a.liveness.try_lead() and not b.liveness.try_lead()
    time.sleep(1.2)                           # a stops renewing: the role lapses
    assert b.liveness.try_lead() and b.liveness.leader() == b.liveness.token
    a.liveness._leading_until = 0.0           # a's cached belief is gone: it asks again
    assert not a.liveness.try_lead()
    b.liveness.resign()
    assert b.liveness.leader() is None and a.liveness.try_lead()


def test_a_closed_or_killed_process_is_dead(open_redis, redis_db, python):
    s = open_redis(namespace="dead", wheel=Wheel(tick=0.1), lease=0.5)     # heartbeats last 0.5 s
    gone = open_redis(namespace="dead", wheel=Wheel(tick=0.1), lease=0.5)
    token = gone.liveness.token
    assert not s.liveness.is_dead(token)
    gone.close()
    assert s.liveness.is_dead(token)
    code = ("import sys, time; from timewheel.store.redis import RedisStore\n"
            "s = RedisStore(sys.argv[1], namespace='dead', lease=0.5)\n"
            "print(s.liveness.token, flush=True); time.sleep(60)\n")
    p = procs.popen([python, "-c", code, redis_db], stdout=subprocess.PIPE, text=True)
    try:
        token = p.stdout.readline().strip()
        assert not s.liveness.is_dead(token)
        p.kill()
        p.wait(10)
        wait_for(lambda: s.liveness.is_dead(token), timeout=5, what="the heartbeat to lapse")
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()


# -- waking runners -------------------------------------------------------------------------------

def test_a_ready_task_rings_runners_of_other_stores_and_poke_stays_local(open_redis):
    a, b = open_redis(), open_redis()
    bell_a, bell_b = a.doorbell(), b.doorbell()
    try:
        assert bell_a.wait(2.0) and bell_b.wait(2.0)     # each rings itself once subscribed
        a.add([make_record("r", a.now() + 60)])          # in the wheel: nobody needs waking
        assert not bell_b.wait(0.3)
        _ready_all(a, ahead=120)                         # made ready: every runner looks
        assert bell_b.wait(2.0) and bell_a.wait(2.0)
        a.add([make_record("s", a.now() + 30)])          # ready at once, ahead of "r"
        t0 = time.monotonic()
        assert bell_b.wait(2.0)
        woke = time.monotonic() - t0
        a.add([make_record("t", a.now() + 50)])          # behind "s": the runners know
        assert not bell_b.wait(0.3)
        bell_a.poke()
        assert bell_a.wait(1.0) and not bell_b.wait(0.3)
        print(f"\npub/sub wake-up across stores: {woke * 1e3:.2f} ms")
        assert woke < 1.0
    finally:
        bell_a.close()
        bell_b.close()


# -- results expire -------------------------------------------------------------------------------

def test_finished_tasks_expire_with_result_ttl_and_purge_cleans_up(open_redis, redis_db):
    s = open_redis(result_ttl=1.0)
    now = s.now()
    s.add([make_record(f"e{i}", now - 1) for i in range(3)] + [make_record("keep", now + 60)])
    _ready_all(s)
    got = s.claim(s.liveness.token, s.now(), 3).records
    t = s.now()
    s.swap([(r, end_run(r, Outcome(True, t, t, result=pickle.dumps(i)))) for i, r in enumerate(got)])
    r = redis.Redis.from_url(redis_db)
    assert 0 < r.pttl("{t}:t:e0") <= 1000
    assert s.counts()[(SUCCEEDED, "t")] == 3
    wait_for(lambda: s.get("e0") is None, timeout=5, what="the result to expire")
    assert [x.id for x in s.scan(SUCCEEDED)] == []          # expired ones are not listed
    check_redis_store(redis_db, "t")                        # indexes still count them ...
    assert s.purge(s.now() + 1) == 3                        # ... until purge takes them out
    assert s.counts() == {(PENDING, "t"): 1} and r.hlen("{t}:xn") == 0
    check_redis_store(redis_db, "t")
    # an id whose finished record expired can be reused (its stale entries go with it)
    s.add([make_record("keep2", now - 1)])
    _ready_all(s)
    (k,) = s.claim(s.liveness.token, s.now(), 1).records
    s.swap([(k, end_run(k, Outcome(True, t, t)))])
    wait_for(lambda: s.get("keep2") is None, timeout=5, what="the result to expire")
    (again,) = s.add([make_record("keep2", now + 10)], existing="reuse")
    assert again.status == PENDING and s.counts() == {(PENDING, "t"): 2}
    check_redis_store(redis_db, "t")


def test_a_new_task_with_the_id_of_an_expired_one_is_added_and_its_old_entries_go(open_redis, redis_db):
    """delay()'s script (redis_lua.ADD) leaves an id whose finished record expired while its
    index entries stay (until purge) to PUT, which takes them out: the counters stay right."""
    s = open_redis(result_ttl=1.0)
    now = s.now()
    s.add([make_record("old", now - 1)])
    _ready_all(s)
    (k,) = s.claim(s.liveness.token, s.now(), 1).records
    t = s.now()
    s.swap([(k, end_run(k, Outcome(True, t, t)))])
    wait_for(lambda: s.get("old") is None, timeout=5, what="the result to expire")
    r = redis.Redis.from_url(redis_db)
    assert r.hexists("{t}:xn", "old")
    (new,) = s.add([make_record("old", now + 60)])          # existing="fail", one task: ADD
    assert new.status == PENDING and s.get("old").eta == pytest.approx(now + 60)
    assert s.counts() == {(PENDING, "t"): 1} and not r.hexists("{t}:xn", "old")
    with pytest.raises(DuplicateTask):
        s.add([make_record("old", now + 90)])
    check_redis_store(redis_db, "t")


# -- the layout -----------------------------------------------------------------------------------

def test_cells_are_named_alike_by_python_and_lua_far_out(open_redis, redis_db):
    """Etas up to year 9999 on an odd geometry: the scripts' slot/cycle arithmetic places each
    task in the cell the Python side (and the checker) names."""
    s = open_redis(wheel=Wheel(slots=7, tick=0.001))
    now = s.now()
    etas = [now + 0.5, now + 3600.25, now + 86400 * 365 * 100, 253402300799.0, now + 1e6 + 0.0005]
    s.add([make_record(f"f{i}", eta) for i, eta in enumerate(etas)])
    check_redis_store(redis_db, "t")
    assert [r.id for r in s.scan(PENDING)] == [f"f{i}" for i in (0, 1, 4, 2, 3)]
    assert s.ticks() == sorted((s.wheel.due_tick(e), 1) for e in etas)
    assert s.wheel_stats() == (5, len({s.wheel.due_tick(e) % 7 for e in etas}))
    step = s.advance(s.wheel.due_tick(now + 3600.25), 10, "L")
    assert step.moved == 2 and step.complete
    check_redis_store(redis_db, "t")
    for i, eta in enumerate(etas):       # one at a time: delay()'s script (ADD) places them alike
        s.add([make_record(f"g{i}", eta)])
    check_redis_store(redis_db, "t")
    assert [r.id for r in s.scan(PENDING)] == [f"{c}{i}" for i in (0, 1, 4, 2, 3) for c in "fg"]
    assert s.ticks() == sorted((s.wheel.due_tick(e), 2) for e in etas)


def test_a_deleted_store_fails_cleanly(open_redis, redis_db):
    s = open_redis()
    s.add([make_record("a", s.now() - 1)])
    redis.Redis.from_url(redis_db).flushdb()
    for call in (lambda: s.add([make_record("b", s.now())]), lambda: s.claim(s.liveness.token, 0, 1),
                 lambda: s.advance(10 ** 10, 10, "x"), lambda: s.purge(s.now())):
        with pytest.raises(StoreError, match="no timewheel store here"):
            call()
    assert redis.Redis.from_url(redis_db).dbsize() == 0          # nothing half-written


def test_a_broken_record_is_set_aside(open_redis, redis_db):
    s = open_redis()
    now = s.now()
    s.add([make_record("bad", now - 1), make_record("good", now - 0.5), make_record("next", now - 0.4)])
    r = redis.Redis.from_url(redis_db)
    r.hset("{t}:t:bad", "r", b"\x80\x04not a pickle")
    with pytest.raises(RecordDecodeError):
        s.get("bad")
    _ready_all(s)
    # one to start, one queued: the broken one took the started place, both good ones queue
    got = s.claim(s.liveness.token, s.now(), 1, queued=2).records
    assert [x.id for x in got] == ["good", "next"]
    assert [s.get(x.id) for x in got] == got and all(x.started is None for x in got)
    (b,) = s.scan(BROKEN)
    assert b.id == "bad" and b.status == BROKEN and "not a timewheel record" in b.error
    assert s.counts() == {(RUNNING, "t"): 2, (BROKEN, "t"): 1}
    check_redis_store(redis_db, "t")


@pytest.mark.timeout(30)
def test_a_broken_record_whose_rev_cannot_be_read_is_replaced_past_any_fence(open_redis, redis_db):
    """A hash whose rev field is damaged too: the replacement jumps to UNKNOWN_REV (it used to
    expect rev 0 there and plan again for ever)."""
    s = open_redis()
    now = s.now()
    s.add([make_record("x", now - 1)])
    _ready_all(s)
    (first,) = s.claim(s.liveness.token, s.now(), 1).records
    r = redis.Redis.from_url(redis_db)
    r.hset("{t}:t:x", mapping={"r": b"garbage", "v": b"not a number"})
    r.close()
    (new,) = s.add([make_record("x", now)], existing="replace")
    assert new.rev == UNKNOWN_REV and s.get("x") == new
    assert s.swap([(first, end_run(first, Outcome(True, now, now)))]) == [None]
    assert s.counts() == {(PENDING, "t"): 1}
    check_redis_store(redis_db, "t")


def test_scripts_run_on_redis_cluster(tmp_path, opened):
    """A one-node Redis Cluster owning every slot: each script touches keys of one hash slot
    only (the server refuses a script that crosses slots)."""
    server = RedisServer(tmp_path / "cluster", port=free_port(below=55536), extra=[
        "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf")])
    with server:
        r = redis.Redis(port=server.port)
        r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: b"cluster_state:ok" in r.execute_command("CLUSTER", "INFO"), 10, what="cluster ok")
        s = RedisStore(server.url, Wheel(tick=0.25), namespace="c")
        opened.append(s)
        now = s.now()
        s.add([make_record(f"c{i}", now - 1 + i * 0.01) for i in range(5)])
        s.add([make_record("k", now + 100)], existing="reuse")
        _ready_all(s)
        got = s.claim(s.liveness.token, s.now(), 10).records
        assert len(got) == 5 and s.liveness.try_lead() and s.liveness.keepalive(got) == []
        t = s.now()
        s.swap([(g, end_run(g, Outcome(True, t, t))) for g in got])
        assert s.purge(t + 1) == 5 and s.abandoned(s.now()) == []
        keyslots = {r.execute_command("CLUSTER", "KEYSLOT", k) for k in r.keys("*")}
        assert len(keyslots) == 1


# -- faults ---------------------------------------------------------------------------------------

def test_an_unreachable_server_raises_store_errors_naming_it(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    s = RedisStore(server.url, Wheel(), namespace="t", timeout=0.5)
    now = s.now()
    (kept,) = s.add([make_record("kept", now + 60)])
    server.pause()                                    # SIGSTOP: connections hang
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreBusy) as ei:
            s.add([make_record("x", now + 5)])      # sent: it may run once the server goes on
        assert time.monotonic() - t0 < 3 and str(server.port) in str(ei.value)
        assert "may or may not" in str(ei.value)
    finally:
        server.resume()
    server.kill()                                     # gone: refused at once
    calls = {"add": lambda: s.add([make_record("y", now + 5)]), "get": lambda: s.get("kept"),
             "swap": lambda: s.swap([(kept, kept)]), "claim": lambda: s.claim(s.liveness.token, now, 1),
             "advance": lambda: s.advance(1, 1, "x"), "abandoned": lambda: s.abandoned(now),
             "purge": lambda: s.purge(now), "state": s.state, "counts": s.counts,
             "scan": lambda: s.scan(PENDING), "ticks": s.ticks, "try_lead": s.liveness.try_lead,
             "keepalive": lambda: s.liveness.keepalive([kept])}
    for what, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(StoreError) as ei:
            call()
        msg = str(ei.value)
        assert f"127.0.0.1:{server.port}" in msg and "\n" not in msg, (what, msg)
        assert time.monotonic() - t0 < 2, what
    assert abs(s.now() - time.time()) < 1          # the clock keeps working on its last offset
    server.start()                                 # back: it works again, nothing half-written
    assert s.get("kept") == kept and s.get("y") is None
    check_redis_store(server.url, "t")           # "x" is either wholly there or not at all
    s.close()
    server.stop()


def test_a_full_server_refuses_writes_whole(open_redis, redis_db):
    """At maxmemory with noeviction a write fails up front (the scripts declare that they
    write): delay() raises StoreError, nothing of it is stored, and reads go on."""
    s = open_redis()
    now = s.now()
    s.add([make_record("before", now + 60)])
    r = redis.Redis.from_url(redis_db)
    r.config_set("maxmemory", r.info("memory")["used_memory"] + 200_000)
    try:
        with pytest.raises(StoreError, match="out of memory") as ei:
            for i in range(2000):
                s.add([make_record(f"b{i}-{k}", now + 60, payload=b"x" * 2000) for k in range(20)])
        assert "nothing was written" in str(ei.value)
        failed = i
        assert s.get("before").status == PENDING and s.counts()[(PENDING, "t")] == 1 + 20 * failed
        assert s.get(f"b{failed}-0") is None
    finally:
        r.config_set("maxmemory", 0)
    check_redis_store(redis_db, "t")


# -- real processes -------------------------------------------------------------------------------

@pytest.fixture
def redis_cluster(tmp_path):
    """A redis-server of this test's own, and mp_worker processes on it (lease 1 s)."""
    server = RedisServer(tmp_path / "redis").start()
    c = Cluster(tmp_path)
    c.db = server.url + "?lease=1"
    c.server = server
    yield c
    c.close()
    server.stop()


def test_crash_loop_on_redis(tmp_path, record_property):
    """3 workers, random SIGKILLs of any of them while 3,000 tasks come due: 0 lost, the only
    duplicates are tasks running at a kill."""
    with RedisServer(tmp_path / "redis") as server:
        res = crashloop.run(kills=20, procs=3, tasks=3000, workdir=str(tmp_path), seed=13, quiet=True,
                            store=server.url + "?lease=1")
    for k, v in res.items():
        record_property(k, v)
    print("\ncrash loop on Redis:", res)
    _crashloop_check(res)
    assert res["enqueued"] == 3000


@pytest.mark.slow
def test_crash_loop_on_redis_long(tmp_path, record_property):
    with RedisServer(tmp_path / "redis") as server:
        res = crashloop.run(kills=110, procs=3, tasks=3000, workdir=str(tmp_path), seed=44, quiet=True,
                            store=server.url + "?lease=1")
    for k, v in res.items():
        record_property(k, v)
    _crashloop_check(res)


def test_redis_sigkilled_while_tasks_run_then_restarted_on_its_aof(redis_cluster, record_property):
    """Two workers run tasks while this process keeps calling delay(); the server is SIGKILLed
    and restarted on its AOF 1 s later.  Every task whose delay() returned runs exactly once;
    the outcomes of tasks that ended during the outage are recorded once it is back."""
    c = redis_cluster
    c.db = c.server.url + "?lease=6"            # longer than the outage plus the boss's backoff
    procs = [c.worker("--workers", "4") for _ in range(2)]
    c.ready(2)
    hu, task = mp_worker.make_wheel(c.db, busy_timeout=0.5)
    returned: dict[str, str] = {}
    failed: list[str] = []

    def feed() -> None:
        t0 = time.monotonic()
        for i in range(300):
            time.sleep(max(0.0, t0 + i * 0.01 - time.monotonic()))
            try:
                returned[f"k-{i}"] = task.delay(c.log, f"k-{i}", 0.3, count_down=0.2).id
            except StoreError as exc:
                failed.append(f"k-{i}: {exc}")

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(1.5)
    killed_at = time.time()
    c.server.kill()
    time.sleep(1.0)
    c.server.start()
    back_at = time.time()
    feeder.join()
    wait_for(lambda: set(returned) <= Runs(c.log).finished(), 30, what="every returned task to run")
    time.sleep(1.0)
    runs = Runs(c.log)
    ended = {p[1]: float(p[3]) for p in mp_worker.read_lines(c.log) if p[0] == "end"}
    running_at_kill = [t for t in returned if runs.start_times[t][0] < killed_at < ended[t]]
    dups = {t: n for t, n in runs.duplicates().items() if t in returned}
    statuses = {hu.get(i).status for i in returned.values()}
    print(f"\nserver down {back_at - killed_at:.2f}s: {len(returned)} delay() returned, {len(failed)} "
          f"raised, {len(running_at_kill)} tasks were running at the kill, duplicates {dups}")
    record_property("delay_failed", len(failed))
    record_property("running_at_kill", len(running_at_kill))
    assert failed and len(returned) + len(failed) == 300         # the outage was felt
    assert all("127.0.0.1" in f for f in failed)
    assert running_at_kill, "no task was running at the kill"
    assert dups == {}
    assert statuses == {SUCCEEDED}
    check_redis_store(c.server.url, "timewheel")
    hu.close()
    mp_worker.stop_all(procs, c.stop_file)


def test_clock_skew_of_30s_either_way_never_starts_a_task_early(redis_cluster, record_property):
    """Three workers whose clocks are -30 s, 0 and +30 s off each enqueue 100 tasks and run
    tasks: none starts before its eta by the server's clock (here: this host's), and
    count_down counts from the server's now (no task runs ~30 s late)."""
    c = redis_cluster
    procs = [c.worker("--clock-offset", str(off), "--enqueue", "100", "--count-down", "0.5",
                      "--spread", "2", "--tag", f"o{i}", "--go-file", c.go_file)
             for i, off in enumerate((-30.0, 0.0, 30.0))]
    c.ready(3)
    mp_worker.append_line(c.go_file, "go")
    wait_for(lambda: len(events_of(c.events, "enqueued")) == 3, 30, what="enqueueing")
    ids = {p[3]: p[2] for p in events_of(c.events, "enq")}
    wait_for(lambda: set(ids) <= Runs(c.log).finished(), 30, what="300 runs")
    runs = Runs(c.log)
    store = open_store(c.db, readonly=True)
    early, late, by_pid = [], [], set()
    for tag, task_id in ids.items():
        rec = store.get(task_id)
        (start,) = runs.start_times[tag]
        by_pid.update(runs.starts[tag])
        if start < rec.eta or rec.started < rec.eta:
            early.append((tag, start - rec.eta))
        late.append(start - rec.eta)
    store.close()
    late.sort()
    print(f"\nskewed clocks: {len(early)} of 300 early; lateness p50 {late[150] * 1e3:.1f} ms, "
          f"p99 {late[297] * 1e3:.1f} ms, max {late[-1] * 1e3:.1f} ms")
    record_property("max_lateness_ms", round(max(late) * 1e3, 1))
    assert len(ids) == 300 and early == []
    assert max(late) < 2.0
    assert len(by_pid) >= 2
    mp_worker.stop_all(procs, c.stop_file)


def test_a_worker_sigstopped_past_its_lease_is_fenced_out(redis_cluster, record_property):
    """A's task runs again on B after A's lease runs out; when A is continued its run ends
    too, but its outcome is refused: the stored outcome is B's."""
    c = redis_cluster
    a = c.worker("--workers", "1")
    c.ready(1)
    c.enqueue(1, "--tag", "slow", "--task-sleep", "2.0")
    wait_for(lambda: Runs(c.log).starts.get("slow-0"), 10, what="A to start the task")
    b = c.worker("--workers", "1")
    c.ready(2)
    stopped_at = time.time()
    a.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len(Runs(c.log).starts.get("slow-0", [])) == 2, 15, what="B to run it again")
        rerun_after = Runs(c.log).start_times["slow-0"][1] - stopped_at
        wait_for(lambda: str(b.pid) in Runs(c.log).ends.get("slow-0", []), 10, what="B to finish")
        (task_id,) = [p[2] for p in events_of(c.events, "enq")]
        store = open_store(c.db, readonly=True)
        # B's task logs its end before it returns; B's boss records the outcome just after.
        by_b = wait_for(lambda: (r := store.get(task_id)).status == SUCCEEDED and r, 10,
                        what="B's outcome to be recorded")
        assert by_b.crashes == 1
    finally:
        a.send_signal(signal.SIGCONT)
    wait_for(lambda: str(a.pid) in Runs(c.log).ends.get("slow-0", []), 10, what="A's run to end")
    wait_for(lambda: [e for e in c.errors() if "refused" in e and str(a.pid) in e], 10,
             what="A's outcome to be refused")
    runs = Runs(c.log)
    assert runs.starts["slow-0"] == [str(a.pid), str(b.pid)]
    assert store.get(task_id) == by_b                   # B's outcome stands
    assert by_b.finished < max(float(p[3]) for p in mp_worker.read_lines(c.log)
                               if p[0] == "end" and p[2] == str(a.pid))
    lost_lease = [e for e in c.errors() if "lease was lost" in e]
    print(f"\nSIGSTOP: re-run on B {rerun_after:.2f}s after A stopped (lease 1 s, tick {TICK}s); "
          f"A warned: {bool(lost_lease)}")
    record_property("rerun_after_s", round(rerun_after, 3))
    assert rerun_after < 1.0 + 2 * TICK + 1.5
    store.close()
    mp_worker.stop_all([a, b], c.stop_file)


def test_recovery_of_a_sigkilled_workers_task_within_lease_plus_a_tick(redis_cluster, record_property):
    """The task of a SIGKILLed worker runs again elsewhere within lease + one tick (the default
    10 s lease and 1 s tick: <= 15 s).  Measured with lease 1 s, tick 0.25 s; the killed
    worker was also the ticking one, so a survivor first takes the role over."""
    c = redis_cluster
    a = c.worker("--workers", "1")
    c.ready(1)
    c.leader()
    b = c.worker("--workers", "2")
    c.ready(2)
    c.enqueue(1, "--tag", "victim", "--task-sleep", "2.0", "--count-down", "0.5")
    wait_for(lambda: Runs(c.log).starts.get("victim-0"), 10, what="the task to start")
    if Runs(c.log).starts["victim-0"] != [str(a.pid)]:
        a, b = b, a                              # b took it: kill b, a recovers it
    killed_at = time.time()
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    wait_for(lambda: len(Runs(c.log).starts.get("victim-0", [])) == 2, 10, what="the re-run")
    took = Runs(c.log).start_times["victim-0"][1] - killed_at
    print(f"\nrecovery of a SIGKILLed worker's task: {took:.2f}s (lease 1 s, tick {TICK}s)")
    record_property("recovery_s", round(took, 3))
    assert took < 1.0 + TICK + 0.75
    mp_worker.stop_all([b], c.stop_file)


def test_limits_that_hold_nothing_are_forgotten_by_the_purge(open_redis, redis_db) -> None:
    """Per-key limits (one per customer) do not pile up on the server: once a limit holds no
    slot, no parked task, no start in its window and no window to reopen, the ticking
    process's purge drops its spec and its log of starts; a held one stays, and a forgotten
    key that comes back is limited as before."""
    from timewheel.records import Outcome, end_run
    s = open_redis()
    now = s.now()
    s.add([make_record("busy", now - 2, limits=(("k:busy", 1, 0, 0.0),))] +
          [make_record(f"c{i}", now - 1, limits=((f"k:{i}", 1, 5, 0.2),)) for i in range(300)])
    _ready_all(s)
    got = {r.id: r for r in s.claim("me", s.now(), 400).records}
    assert len(got) == 301
    s.swap([(got[f"c{i}"], end_run(got[f"c{i}"], Outcome(True, now, now))) for i in range(300)])
    r = redis.Redis.from_url(redis_db)
    assert r.hlen("{t}:limits") == 301 and len(r.keys("{t}:starts:*")) == 300
    time.sleep(0.3)                                   # the 0.2 s windows pass
    s.purge(now - 3600)
    assert [k.decode() for k in r.hkeys("{t}:limits")] == ["k:busy"]
    assert r.keys("{t}:starts:*") == [] and r.keys("{t}:held:*") == [b"{t}:held:k:busy"]
    s.add([make_record("again1", s.now() - 1, limits=(("k:7", 1, 5, 0.2),)),
           make_record("again2", s.now() - 1, limits=(("k:7", 1, 5, 0.2),))])
    _ready_all(s)
    assert [x.id for x in s.claim("me", s.now(), 10).records] == ["again1"]   # one per key, still
    assert r.hkeys("{t}:limits") and b"k:7" in r.hkeys("{t}:limits")
