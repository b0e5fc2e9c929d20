"""The public API with real threads and real files."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import random
import threading
import time

import pytest

from timewheel import TaskFailed, TaskNotFound, TimeWheel
from timewheel.records import TaskRecord
from timewheel.testing import processes as procs

from .conftest import wait_for


@pytest.fixture
def hu(db_path):
    wheel = TimeWheel(db_path, workers=4)
    yield wheel
    wheel.close()


# -- delay(): bad input is refused and nothing is written ---------------------------------------

def test_bad_delay_arguments_raise_and_write_nothing(hu) -> None:
    @hu.task()
    def f(a, b=1):
        return a + b

    cases = [
        (dict(count_down=1, eta=time.time()), ValueError, "not both"),
        (dict(count_down=-1), ValueError, "count_down must be >= 0"),
        (dict(count_down=float("nan")), ValueError, "finite"),
        (dict(count_down=float("inf")), ValueError, "finite"),
        (dict(count_down="10"), TypeError, "count_down must be a number"),
        (dict(count_down=True), TypeError, "count_down must be a number"),
        (dict(eta="tomorrow"), TypeError, "eta must be a datetime"),
        (dict(eta=-5.0), ValueError, "outside"),
    ]
    for kwargs, exc, text in cases:
        with pytest.raises(exc, match=text):
            f.delay(1, **kwargs)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        f.delay()
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        f.delay(1, c=3)
    with pytest.raises(TypeError, match="cannot be serialised"):
        f.delay(lambda: None)
    with pytest.raises(TypeError, match="cannot be serialised"):
        f.delay(threading.Lock())
    assert sum(hu.store.counts().values()) == 0


def test_bad_task_options_are_rejected(hu) -> None:
    with pytest.raises(TypeError):
        hu.task(retires=3)                  # a typo is an error, not a silent attribute
    with pytest.raises(ValueError, match="retries"):
        hu.task(retries=-1)
    with pytest.raises(TypeError, match="retry_delay"):
        hu.task(retry_delay="soon")
    with pytest.raises(TypeError, match="needs a function"):
        hu.task()(42)

    @hu.task(name="dup")
    def one():
        pass
    with pytest.raises(ValueError, match="already registered"):
        @hu.task(name="dup")
        def two():
            pass


def test_direct_call_and_call_local_just_call(hu) -> None:
    @hu.task()
    def double(x):
        return 2 * x
    assert double(4) == 8 and double.call_local(5) == 10
    assert sum(hu.store.counts().values()) == 0


# -- running ----------------------------------------------------------------------------------

def test_delay_runs_and_returns_the_result(hu) -> None:
    @hu.task()
    def add(a, b):
        return {"sum": a + b}
    hu.start()
    h = add.delay(2, 3, count_down=0.2)
    assert h.status in ("pending", "running", "succeeded")
    assert h.result(timeout=10) == {"sum": 5}
    assert h.status == "succeeded"
    assert hu.get(h.id).result() == {"sum": 5}


def test_eta_accepts_naive_local_and_aware_datetimes(hu) -> None:
    @hu.task()
    def f():
        return time.time()
    when = time.time() + 0.5
    naive = dt.datetime.fromtimestamp(when)                           # local time
    aware = dt.datetime.fromtimestamp(when, tz=dt.timezone(dt.timedelta(hours=5)))
    h1, h2 = f.delay(eta=naive), f.delay(eta=aware)
    assert h1.record.eta == pytest.approx(when, abs=1e-5)
    assert h2.record.eta == pytest.approx(when, abs=1e-5)
    hu.start()
    assert h1.result(timeout=10) >= h1.record.eta
    assert h2.result(timeout=10) >= h2.record.eta


def test_never_early_and_precise_under_light_load(hu) -> None:
    starts: dict[int, float] = {}

    @hu.task()
    def mark(i):
        starts[i] = time.time()
    hu.start()
    base = time.time() + 0.5
    etas = {i: base + random.random() * 2.5 for i in range(300)}
    with hu.batch():
        handles = [mark.delay(i, eta=e) for i, e in etas.items()]
    for h in handles:
        h.result(timeout=20)
    lateness = sorted(starts[i] - etas[i] for i in etas)
    assert lateness[0] >= 0, "a task started before its eta"
    assert lateness[int(0.99 * len(lateness))] < 0.1     # generous: measured p99 is ~4 ms


def test_retries_back_off_exponentially_then_bury(hu) -> None:
    calls: list[float] = []

    @hu.task(retries=2, retry_delay=0.2, retry_jitter=False)     # the whole backoff
    def flaky():
        calls.append(time.time())
        raise ConnectionError("down")
    hu.start()
    h = flaky.delay()
    with pytest.raises(TaskFailed, match="ConnectionError: down") as info:
        h.result(timeout=15)
    assert len(calls) == 3                                 # retries + 1 calls, no more
    assert calls[1] - calls[0] >= 0.2 and calls[2] - calls[1] >= 0.4
    rec = h.record
    assert rec.status == "failed" and rec.attempts == 3
    assert "ConnectionError" in rec.traceback and info.value.status == "failed"
    # buried, not lost: retry() puts it back
    assert hu.retry(h.id) is True
    wait_for(lambda: len(calls) >= 6, timeout=15)
    wait_for(lambda: h.status == "failed", timeout=5)
    assert hu.retry("no-such-id") is False


def test_cancel_a_pending_task(hu) -> None:
    ran: list[str] = []

    @hu.task()
    def job(name):
        ran.append(name)
    hu.start()
    doomed = job.delay("doomed", count_down=0.6)
    barrier = job.delay("barrier", count_down=1.0)
    assert doomed.cancel() is True
    assert doomed.cancel() is False
    barrier.result(timeout=10)                          # runs after the cancelled one's eta
    assert ran == ["barrier"]
    assert doomed.status == "cancelled"
    with pytest.raises(TaskFailed, match="cancelled"):
        doomed.result(timeout=1)
    assert barrier.cancel() is False                    # already done


def test_result_timeout_and_unknown_ids(hu) -> None:
    @hu.task()
    def later():
        pass
    h = later.delay(count_down=60)
    with pytest.raises(TimeoutError, match="still pending"):
        h.result(timeout=0.1)
    with pytest.raises(TaskNotFound):
        hu.get("nope")


def test_unregistered_or_undecodable_tasks_fail_visibly(db_path) -> None:
    producer = TimeWheel(db_path)

    @producer.task(name="only.in.producer")
    def f():
        pass
    h = f.delay()
    producer.store.add([TaskRecord(id="bad-payload", name="known", eta=time.time(),
                                   payload=b"\x80\x05garbage")])
    producer.close()

    worker = TimeWheel(db_path)                         # does not know "only.in.producer"
    worker.task(name="known")(lambda: None)
    with worker:
        with pytest.raises(TaskFailed, match="not registered"):
            worker.get(h.id).result(timeout=10)
        worker.task(name="only.in.producer")(lambda: None)
        with pytest.raises(TaskFailed, match="cannot decode its arguments"):
            worker.get("bad-payload").result(timeout=10)
    assert worker.retry(h.id)                           # registered now: it can be retried
    with worker:
        assert worker.get(h.id).result(timeout=10) is None
    worker.close()


def test_misfire_grace_skips_late_tasks_visibly(hu) -> None:
    @hu.task(misfire_grace=1.0)
    def strict():
        return "ran"
    h_late = strict.delay(eta=time.time() - 5)          # already 5 s late when queued
    h_ok = strict.delay(eta=time.time() - 0.2)
    h_override = strict.schedule(eta=time.time() - 5, misfire_grace=None)
    hu.start()
    assert h_ok.result(timeout=10) == "ran"
    assert h_override.result(timeout=10) == "ran"
    with pytest.raises(TaskFailed) as info:
        h_late.result(timeout=10)
    assert info.value.status == "misfired" and "misfire_grace" in info.value.error


def test_schedule_takes_arguments_named_like_options(hu) -> None:
    @hu.task()
    def f(count_down, eta):
        return count_down + eta
    hu.start()
    assert f.schedule((1, 2), count_down=0.1).result(timeout=10) == 3
    assert f.schedule(kwargs={"count_down": 5, "eta": 6}).result(timeout=10) == 11


NEAR_MISSES = {"countdown": "count_down", "countDown": "count_down", "count_down_s": "count_down",
               "CountDownSeconds": "count_down", "ETA": "eta", "eta_seconds": "eta", "etaSeconds": "eta",
               "taskid": "task_id", "task_Id": "task_id", "taskId": "task_id", "TASK_ID": "task_id"}


@pytest.mark.parametrize("key", sorted(NEAR_MISSES))
def test_delay_refuses_misspelt_options_even_for_kwargs_tasks(hu, key: str) -> None:
    """Issue 19 item 12: Celery's delay(x, countdown=30) on a task taking **kwargs was passed
    on as an argument, and the task ran at once; elsewhere the TypeError gave no hint."""
    @hu.task(name="anything")
    def anything(x, **kw):
        return kw

    @hu.task(name="plain")
    def plain(x):
        return x

    for task in (anything, plain):
        with pytest.raises(TypeError) as info:
            task.delay(1, **{key: 30})
        text = str(info.value)
        assert f"did you mean {NEAR_MISSES[key]}=?" in text and f"{key}=" in text, text
        assert f"schedule(args, kwargs={{{key!r}: ...}})" in text, text
        assert "\n" not in text
    assert hu.store.counts() == {}                        # nothing was written
    hu.start()     # a function that takes such a parameter gets it through schedule()
    assert anything.schedule((1,), {key: 30}).result(timeout=10) == {key: 30}


def test_delay_passes_related_names_on_as_arguments(hu) -> None:
    @hu.task(name="anything")
    def anything(x, **kw):
        return kw

    hu.start()
    given = {"id": 1, "job_id": 2, "delay": 3, "expires": 4, "tasks": 5, "countdown_label": 6}
    assert anything.delay(1, **given).result(timeout=10) == given


def test_batch_is_all_or_nothing(hu) -> None:
    @hu.task()
    def f(i):
        return i
    with pytest.raises(RuntimeError):
        with hu.batch():
            for i in range(10):
                f.delay(i, count_down=60)
            raise RuntimeError("changed my mind")
    assert sum(hu.store.counts().values()) == 0
    with hu.batch():
        hs = [f.delay(i, count_down=0.1) for i in range(50)]
        with hu.batch():                                # nested: the outer one commits
            hs.append(f.delay(50))
        assert sum(hu.store.counts().values()) == 0     # not yet committed
    assert hu.store.counts() == {("pending", f.name): 51}
    hu.start()
    assert [h.result(timeout=10) for h in hs] == list(range(51))


def test_results_are_purged_after_their_ttl(db_path) -> None:
    hu = TimeWheel(db_path, result_ttl=0.5)

    @hu.task()
    def f():
        return 1
    with hu:
        h = f.delay()
        assert h.result(timeout=10) == 1
        wait_for(lambda: hu.store.get(h.id) is None, timeout=10)
    with pytest.raises(TaskNotFound):
        _ = h.status
    hu.close()


def test_stop_reports_what_is_left_and_tasks_survive_restart(db_path) -> None:
    hu = TimeWheel(db_path)

    @hu.task(name="later")
    def later():
        return "later"
    hu.start()
    h = later.delay(count_down=1.5)
    assert hu.stop() == (1, 0, 0)
    hu.close()
    hu2 = TimeWheel(db_path)
    hu2.task(name="later")(lambda: "again")
    with hu2:
        assert hu2.get(h.id).result(timeout=10) == "again"
    hu2.close()


def test_task_exceptions_and_system_exit_do_not_kill_workers(hu, capsys) -> None:
    @hu.task()
    def bad(kind):
        if kind == "exit":
            raise SystemExit(3)
        raise KeyError(kind)

    @hu.task()
    def good():
        return "ok"
    hu.start()
    hs = [bad.delay("exit") for _ in range(8)] + [bad.delay("key") for _ in range(8)]
    for h in hs:
        with pytest.raises(TaskFailed):
            h.result(timeout=10)
    assert good.delay().result(timeout=10) == "ok"
    workers = [t for t in threading.enumerate() if t.name.startswith("timewheel-worker")]
    assert len(workers) == 4 and all(t.is_alive() for t in workers)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""             # logging only, never print


def test_two_wheels_on_one_file_in_one_process_run_each_task_once(db_path) -> None:
    runs: list[int] = []
    lock = threading.Lock()
    wheels = [TimeWheel(db_path), TimeWheel(db_path)]
    for w in wheels:
        @w.task(name="count")
        def count(i):
            with lock:
                runs.append(i)
        w.start()
    handles = [wheels[i % 2].tasks["count"].delay(i, count_down=0.1) for i in range(200)]
    for h in handles:
        h.result(timeout=20)
    assert sorted(runs) == list(range(200))
    assert sum(w.is_leader for w in wheels) == 1
    for w in wheels:
        w.close()


def test_immediate_mode_runs_inline_without_a_file(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "never.db"), immediate=True)
    calls = []

    @hu.task(retries=2, retry_delay=100)
    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise ValueError("not yet")
        return x * 2
    h = flaky.delay(21, count_down=3600)                # no waiting in immediate mode
    assert h.result(timeout=0) == 42 and calls == [21, 21, 21]
    assert not os.path.exists(tmp_path / "never.db")
    with hu.batch():
        h2 = flaky.delay(1)
    assert h2.result() == 2


def test_async_tasks_run(hu) -> None:
    import asyncio

    @hu.task()
    async def slow_add(a, b):
        await asyncio.sleep(0.01)
        return a + b
    hu.start()
    assert slow_add.delay(1, 2).result(timeout=10) == 3


def test_store_file_is_private(db_path) -> None:
    hu = TimeWheel(db_path)

    @hu.task()
    def f():
        pass
    with hu:
        f.delay().result(timeout=10)
        for suffix in ("", "-wal", "-shm", ".lock"):    # all four exist while the wheel runs
            assert os.stat(db_path + suffix).st_mode & 0o077 == 0, suffix
    hu.close()


def test_result_values_round_trip_through_pickle(hu) -> None:
    @hu.task()
    def make():
        return {"when": dt.datetime(2026, 1, 2), "data": b"\x00\x01", "n": [1, 2.5, None]}
    hu.start()
    assert make.delay().result(timeout=10) == pickle.loads(pickle.dumps(make()))


def test_a_normal_interpreter_exit_lets_running_tasks_finish(tmp_path) -> None:
    import sys
    import textwrap
    db = str(tmp_path / "tasks.db")
    script = textwrap.dedent("""
        import sys, time
        from timewheel import TimeWheel
        hu = TimeWheel(sys.argv[1])
        @hu.task(name="slow")
        def slow():
            time.sleep(0.5)
            return "done"
        hu.start()
        h = slow.delay()
        while h.status != "running":
            time.sleep(0.01)
        print(h.id)              # and exit without stop(): the atexit hook waits for it
    """)
    out = procs.run([sys.executable, "-c", script, db], capture_output=True, text=True,
                    timeout=60, check=True)
    hu = TimeWheel(db)
    rec = hu.get(out.stdout.strip()).record
    assert rec.status == "succeeded" and rec.crashes == 0
    hu.close()


def test_stop_timeout_bounds_the_whole_wait(hu) -> None:
    release = threading.Event()

    @hu.task()
    def stuck():
        release.wait(30)
    hu.start()
    hs = [stuck.delay() for _ in range(3)]
    wait_for(lambda: all(h.status == "running" for h in hs), timeout=10)
    t0 = time.monotonic()
    stopped = hu.stop(wait=True, timeout=0.5)
    assert time.monotonic() - t0 < 2.0            # not 0.5 s per worker
    assert stopped.unfinished == 3 and stopped.running == 3
    release.set()
    wait_for(lambda: all(h.status == "succeeded" for h in hs), timeout=10)   # recorded anyway
