"""Retry rules (issue 26) and retry jitter (issue 24): ``retry_on`` / ``dont_retry_on`` decide
which exceptions use up a retry, ``raise Retry(count_down=...)`` asks for one at a chosen
time (``max_retries`` its own budget), and a backoff waits a fraction of itself drawn from the
task id and attempt.  Pure decisions first (exact, no sleeping), then the same decisions
through ``execute()`` on a fake clock and stored by every backend, then real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import timewheel
from timewheel import Retry, TaskFailed, TimeWheel, current_task
from timewheel.execute import execute
from timewheel.records import (
    FAILED,
    MAX_ETA,
    PENDING,
    SUCCEEDED,
    Outcome,
    end_run,
    is_retryable,
    jitter_fraction,
    retry_backoff,
    start_run,
)
from timewheel.testing import processes as procs

from . import retry_worker
from .conftest import make_record
from .mp_worker import stop_all
from .test_boss import FakeClock
from .test_store import ready_all

HERE = os.path.dirname(os.path.abspath(__file__))
#: the workers note times by the store's clock, as etas are; on a server that is this host's
#: clock plus the offset each process measured to the server's, which may differ by a few ms
SKEW = 0.01
T0 = 1_800_000_000.0


# -- the pure decisions ------------------------------------------------------------------------

def running(task_id: str = "t1", attempts: int = 1, retries: int = 3, retry_delay: float = 10.0):
    rec = make_record(task_id, T0, retries=retries, retry_delay=retry_delay, attempts=attempts - 1)
    return start_run(rec, "me", T0)


def failure(finished: float = T0 + 1, **kw) -> Outcome:
    return Outcome(ok=False, started=T0, finished=finished, error="E: x", **kw)


@given(st.text(max_size=40), st.integers(1, 10_000))
def test_jitter_is_a_fraction_drawn_from_the_task_id_and_attempt(task_id: str, attempt: int) -> None:
    f = jitter_fraction(task_id, attempt)
    assert 0.0 <= f < 1.0 and f == jitter_fraction(task_id, attempt)     # the same in any process


def test_jitter_spreads_tasks_that_fail_together() -> None:
    fractions = [jitter_fraction(f"task-{i}", 1) for i in range(2000)]
    assert len(set(fractions)) == 2000
    # full jitter: spread over the whole backoff (each tenth holds about 200 of them)
    deciles = [sum(1 for f in fractions if k / 10 <= f < (k + 1) / 10) for k in range(10)]
    assert min(deciles) > 120 and max(deciles) < 280, deciles
    assert jitter_fraction("a", 1) != jitter_fraction("a", 2)


@given(st.text(max_size=20), st.integers(1, 30), st.floats(0, 86400), st.floats(0, 1e10))
def test_a_jittered_retry_waits_exactly_its_fraction_of_the_backoff(task_id: str, attempt: int,
                                                                    delay: float, finished: float) -> None:
    rec = running(task_id, attempt, retries=1000, retry_delay=delay)
    want = min(MAX_ETA, finished + retry_backoff(delay, attempt) * jitter_fraction(task_id, attempt))
    after = end_run(rec, failure(finished, jitter=True))
    assert after.status == PENDING and after.eta == want
    assert finished <= after.eta <= finished + retry_backoff(delay, attempt)
    # without jitter: the whole backoff, as before
    assert end_run(rec, failure(finished)).eta == min(MAX_ETA, finished + retry_backoff(delay, attempt))


def test_retry_on_and_dont_retry_on_decide_by_exception_type() -> None:
    assert is_retryable(ValueError()) and is_retryable(KeyboardInterrupt())
    assert is_retryable(ConnectionResetError(), retry_on=(ConnectionError, TimeoutError))
    assert is_retryable(TimeoutError(), retry_on=(ConnectionError, TimeoutError))
    assert not is_retryable(ValueError(), retry_on=(ConnectionError, TimeoutError))
    assert not is_retryable(ValueError(), dont_retry_on=(ValueError,))
    assert not is_retryable(UnicodeDecodeError("utf-8", b"", 0, 1, "x"), dont_retry_on=(ValueError,))
    assert is_retryable(KeyError(), dont_retry_on=(ValueError,))
    # both: retry_on's, but not those
    assert is_retryable(ConnectionResetError(), (OSError,), (FileNotFoundError,))
    assert not is_retryable(FileNotFoundError(), (OSError,), (FileNotFoundError,))


@given(st.integers(1, 20), st.integers(0, 20), st.one_of(st.none(), st.integers(0, 20)),
       st.floats(0, 1e6))
def test_a_retry_asked_for_is_due_when_asked_and_counts_against_its_budget(
        attempt: int, retries: int, max_retries, count_down: float) -> None:
    rec = running("asks", attempt, retries=retries)
    finished = T0 + 1
    after = end_run(rec, failure(finished, retry_at=finished + count_down, max_retries=max_retries,
                                 jitter=True))
    budget = retries if max_retries is None else max_retries
    if attempt <= budget:
        assert after.status == PENDING and after.eta == finished + count_down     # no jitter
    else:
        assert after.status == FAILED and after.eta == rec.eta
        assert f"{attempt} attempts used up {budget} retries" in after.error


def test_a_retry_asked_for_in_the_past_is_due_at_once_never_before_the_failure() -> None:
    after = end_run(running(), failure(T0 + 5, retry_at=T0 - 100))
    assert after.status == PENDING and after.eta == T0 + 5
    assert end_run(running(), failure(T0 + 5, retry_at=MAX_ETA * 2)).eta == MAX_ETA


def test_an_exception_not_to_retry_fails_at_once_whatever_attempts_are_left() -> None:
    after = end_run(running(retries=5), failure(retryable=False, jitter=True))
    assert after.status == FAILED and after.error == "E: x"


# -- execute() turns exceptions into those decisions, on a fake clock ----------------------------

def rules_wheel(clock: FakeClock) -> TimeWheel:
    hu = TimeWheel(None, clock=clock)

    @hu.task(name="net", retries=3, retry_delay=10.0, retry_on=(ConnectionError, TimeoutError))
    def net(kind: str):
        clock.now += 2.0                                  # the run takes 2 s
        raise {"conn": ConnectionResetError, "value": ValueError, "timeout": TimeoutError}[kind]("no")

    @hu.task(name="picky", retries=3, retry_delay=10.0, dont_retry_on=ValueError, retry_jitter=False)
    def picky(kind: str):
        raise {"key": KeyError, "value": ValueError}[kind]("no")

    @hu.task(name="asks", retries=1)
    def asks(how: str):
        clock.now += 1.0
        if how == "count_down":
            raise Retry("busy", count_down=30)
        if how == "eta":
            current_task().retry(eta=dt.datetime.fromtimestamp(T0 + 500, dt.timezone.utc))
        if how == "budget":
            raise Retry(count_down=5, max_retries=4)
        if how == "backoff":
            raise Retry()
        try:
            raise OSError("upstream")
        except OSError as exc:
            raise Retry(count_down=7) from exc

    return hu


def run_once(hu: TimeWheel, clock: FakeClock, rec):
    """Claim ``rec`` at the clock's time, run it through execute(), and apply its outcome."""
    rec = start_run(rec, "me", clock.now)
    return rec, end_run(rec, execute(hu._registry, rec, clock))


def task_record(name: str, arg: str, task_id: str, attempts: int = 0, eta: float = T0, **fields):
    return make_record(task_id, eta, name=name, payload=pickle.dumps(((arg,), {})),
                       attempts=attempts, **fields)


def test_retry_on_decides_attempts_and_jittered_etas_exactly() -> None:
    clock = FakeClock(T0)
    hu = rules_wheel(clock)
    rec = task_record("net", "conn", "n1", retries=3, retry_delay=10.0)
    etas = []
    for attempt in (1, 2, 3, 4):
        ran, rec = run_once(hu, clock, rec)
        finished = ran.started + 2.0
        if attempt < 4:
            wait = retry_backoff(10.0, attempt) * jitter_fraction("n1", attempt)
            assert (rec.status, rec.attempts, rec.eta) == (PENDING, attempt, finished + wait)
            assert rec.error == "ConnectionResetError: no"
            etas.append(rec.eta)
            clock.now = rec.eta
        else:
            assert (rec.status, rec.attempts) == (FAILED, 4)      # retries + 1 runs
    assert etas == sorted(etas) and len(set(etas)) == 3
    # another exception than retry_on's fails at once, with retries left
    clock.now = T0
    _, rec = run_once(hu, clock, task_record("net", "value", "n2", retries=3, retry_delay=10.0))
    assert (rec.status, rec.attempts, rec.error) == (FAILED, 1, "ValueError: no")
    _, rec = run_once(hu, clock, task_record("net", "timeout", "n3", retries=3, retry_delay=10.0))
    assert rec.status == PENDING


def test_dont_retry_on_fails_at_once_and_other_exceptions_back_off_exactly() -> None:
    clock = FakeClock(T0)
    hu = rules_wheel(clock)
    _, rec = run_once(hu, clock, task_record("picky", "key", "p1", retries=3, retry_delay=10.0))
    assert (rec.status, rec.eta) == (PENDING, T0 + 10.0)             # retry_jitter=False
    _, rec = run_once(hu, clock, task_record("picky", "value", "p2", retries=3, retry_delay=10.0))
    assert (rec.status, rec.attempts, rec.error) == (FAILED, 1, "ValueError: no")


def test_retry_asked_for_by_the_task_decides_its_eta_and_budget_exactly() -> None:
    clock = FakeClock(T0)
    hu = rules_wheel(clock)
    _, rec = run_once(hu, clock, task_record("asks", "count_down", "a1", retries=1))
    assert (rec.status, rec.eta) == (PENDING, T0 + 1 + 30)
    assert rec.error == "Retry: busy; it asked for a retry in 30s"
    clock.now = rec.eta
    _, rec = run_once(hu, clock, rec)                 # attempt 2 of retries=1 + 1: no retry left
    assert rec.status == FAILED and rec.attempts == 2
    assert rec.error.endswith("(a retry was asked for, but 2 attempts used up 1 retries)")

    clock.now = T0
    _, rec = run_once(hu, clock, task_record("asks", "eta", "a2", retries=1))
    assert (rec.status, rec.eta) == (PENDING, T0 + 500)             # current_task().retry(eta=)

    rec = task_record("asks", "budget", "a3", retries=1)
    for attempt in range(1, 6):                       # max_retries=4: five runs, not two
        clock.now = rec.eta
        _, rec = run_once(hu, clock, rec)
        assert rec.attempts == attempt
        assert (rec.status, rec.eta) == ((PENDING, clock.now + 5) if attempt <= 4 else (FAILED, rec.eta))

    clock.now = T0
    _, rec = run_once(hu, clock, task_record("asks", "backoff", "a4", retries=1, retry_delay=8.0))
    assert rec.eta == T0 + 1 + 8.0 * jitter_fraction("a4", 1)        # Retry(): the backoff

    clock.now = T0
    _, rec = run_once(hu, clock, task_record("asks", "cause", "a5", retries=1))
    assert rec.eta == T0 + 1 + 7
    assert rec.error == "Retry: it asked for a retry in 7s (after OSError: upstream)"


def test_bad_rules_and_bad_retries_are_refused_with_what_is_wrong() -> None:
    hu = TimeWheel(None)
    with pytest.raises(TypeError, match="retry_on takes exception classes, got 'x'"):
        hu.task(retry_on="x")
    with pytest.raises(TypeError, match="dont_retry_on takes exception classes, got <class 'int'>"):
        hu.task(dont_retry_on=(ValueError, int))
    with pytest.raises(TypeError, match="retry_jitter must be True or False, got 1"):
        hu.task(retry_jitter=1)
    with pytest.raises(TypeError, match="retry_jitter must be True or False"):
        TimeWheel(None, retry_jitter="yes")
    with pytest.raises(ValueError, match="count_down or eta, not both"):
        Retry(count_down=1, eta=T0)
    with pytest.raises(ValueError, match="count_down must be seconds from 0, got -1"):
        Retry(count_down=-1)
    with pytest.raises(ValueError, match="count_down must be seconds from 0, got nan"):
        Retry(count_down=float("nan"))
    with pytest.raises(ValueError, match="eta must be a datetime or unix seconds"):
        Retry(eta="tomorrow")
    with pytest.raises(ValueError, match="max_retries must be an int from 0 to 1000, got True"):
        Retry(max_retries=True)
    assert Retry(count_down=dt.timedelta(minutes=2)).count_down == 120.0
    again = pickle.loads(pickle.dumps(Retry("m", count_down=3, max_retries=2)))
    assert (again.message, again.count_down, again.eta, again.max_retries) == ("m", 3.0, None, 2)
    assert timewheel.Retry is Retry and issubclass(Retry, timewheel.TimeWheelError)


def test_jitter_is_on_by_default_and_the_wheel_sets_its_tasks_default() -> None:
    assert TimeWheel(None).task(name="a")(lambda: 1).retry_jitter is True
    hu = TimeWheel(None, retry_jitter=False)
    assert hu.task(name="b")(lambda: 1).retry_jitter is False
    assert hu.task(name="c", retry_jitter=True)(lambda: 1).retry_jitter is True


def test_immediate_mode_follows_the_rules() -> None:
    hu = TimeWheel(immediate=True)
    calls = []

    @hu.task(retries=5, retry_on=ConnectionError)
    def flaky():
        calls.append(current_task().attempt)
        raise (ConnectionError if len(calls) < 2 else LookupError)("no")

    with pytest.raises(TaskFailed, match="LookupError: no"):
        flaky.delay().result(timeout=1)
    assert calls == [1, 2]


# -- every backend stores what the rules decided -------------------------------------------------

def test_every_backend_stores_the_decided_etas_and_statuses(store) -> None:
    clock = FakeClock(store.now())
    hu = rules_wheel(clock)
    now = clock.now
    store.add([task_record("asks", "count_down", "s1", eta=now - 1, retries=1),
               task_record("net", "value", "s2", eta=now - 1, retries=3),
               task_record("net", "conn", "s3", eta=now - 1, retries=3, retry_delay=10.0)])
    ready_all(store)
    got = {r.id: r for r in store.claim("me", store.now(), 10).records}
    assert sorted(got) == ["s1", "s2", "s3"]
    decided = {}
    for task_id, rec in got.items():
        clock.now = now
        out = execute(hu._registry, rec, clock)
        decided[task_id] = end_run(rec, out)
    stored = dict(zip(got, store.swap([(got[i], decided[i]) for i in got])))
    for task_id, rec in stored.items():
        assert rec is not None and store.get(task_id) == rec
        assert (rec.status, rec.eta, rec.error, rec.attempts) == (
            decided[task_id].status, decided[task_id].eta, decided[task_id].error, 1)
    assert stored["s1"].status == PENDING and stored["s1"].eta == now + 1 + 30
    assert stored["s2"].status == FAILED
    assert stored["s3"].eta == now + 2 + 10.0 * jitter_fraction("s3", 1)   # the run took 2 s
    assert sorted(r.id for r in store.scan(PENDING)) == ["s1", "s3"]


# -- across processes ---------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared(request, db_path) -> str:
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db")


def test_rules_decide_attempts_and_etas_across_processes(tmp_path, shared) -> None:
    """Two worker processes run the tasks; this one enqueues and reads what they stored."""
    out = str(tmp_path)
    enqueuer = TimeWheel(shared, tick=0.1, slots=600)
    tasks = retry_worker.register(enqueuer, out)
    net, asks, jittered = tasks["net"], tasks["asks"], tasks["jittered"]
    # a task id whose jitter is well inside the backoff: it shows the retry did not wait it all
    jid = next(f"j{i}" for i in range(100) if 0.2 < jitter_fraction(f"j{i}", 1) < 0.6)
    workers = [procs.popen([sys.executable, os.path.join(HERE, "retry_worker.py"), shared, out],
                           stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        h_net = net.delay("conn-then-value")
        h_asks = asks.delay()
        h_jit = jittered.delay(task_id=jid)
        with pytest.raises(TaskFailed, match="ValueError: second"):
            h_net.result(timeout=30)
        assert h_asks.result(timeout=30) == 3
        assert h_jit.result(timeout=30) == 2
        recs = {h.id: h.record for h in (h_net, h_asks, h_jit)}
    finally:
        codes = stop_all(workers, str(tmp_path / "stop"), timeout=30)
        enqueuer.close()
    assert codes == [0, 0], [p.stderr.read() for p in workers]
    runs = [json.loads(line) for line in open(os.path.join(out, "runs.jsonl"))]
    by = {name: [r for r in runs if r["name"] == name] for name in ("net", "asks", "jittered")}
    # net: ConnectionError (retry_on) retried, then ValueError (not retry_on) failed with 3 left
    assert [r["attempt"] for r in by["net"]] == [1, 2]
    assert recs[h_net.id].status == FAILED and recs[h_net.id].attempts == 2
    # asks: Retry(count_down=0.5, max_retries=2) twice with retries=0: three runs, each due
    # 0.5 s after the failure before it, and never started before that
    assert [r["attempt"] for r in by["asks"]] == [1, 2, 3] and recs[h_asks.id].status == SUCCEEDED
    for before, after in zip(by["asks"], by["asks"][1:]):
        assert before["raised"] + 0.5 - SKEW <= after["eta"] < before["raised"] + 0.5 + 1.0
        assert after["started"] >= after["eta"] - SKEW
    # jittered: retry_delay=4, jitter on: due a drawn fraction of 4 s after the failure
    first, second = by["jittered"]
    wait = 4.0 * jitter_fraction(jid, 1)
    assert first["raised"] + wait - SKEW <= second["eta"] < first["raised"] + wait + 1.0
    assert second["started"] >= second["eta"] - SKEW          # and < raised + 3.4: not the whole 4 s
    assert all(r["pid"] != os.getpid() for r in runs)
