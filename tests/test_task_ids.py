"""Task ids the caller chooses: ``delay(..., task_id=...)`` and ``schedule(..., replace=, once=)``.

While a task of that id is pending or running, ``delay()`` adds nothing and returns its
handle; ``replace=True`` swaps a pending one's arguments and eta in one step; a finished one
is replaced by the next ``delay()``; ``once=True`` never adds while any record of the id is
stored.  Two processes racing on one id leave one task that runs once.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

from timewheel import DuplicateTask, TimeWheel
from timewheel.records import SUCCEEDED
from timewheel.testing import processes as procs

from .conftest import check_file_store, records_of, wait_for
from .mp_worker import read_lines

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(mode: str, db: str, out: str, *extra: str) -> subprocess.Popen:
    return procs.popen([sys.executable, os.path.join(HERE, "feature_worker.py"), mode, db, out, *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(out: str) -> list[list[str]]:
    return read_lines(os.path.join(out, "runs.log"))


@pytest.fixture
def wheel(db_path):
    hu = TimeWheel(db_path, workers=2, tick=0.1, slots=600)
    calls: list[tuple] = []

    @hu.task(name="greet", retries=0)
    def greet(user, text="hi", fail=False, pause=0.0):
        calls.append((user, text))
        time.sleep(pause)
        if fail:
            raise RuntimeError("no")
        return f"{text} {user}"

    hu.calls = calls
    yield hu, greet
    hu.close()
    check_file_store(db_path)


@pytest.fixture(params=["sqlite", "redis"])
def shared(request, db_path):
    """A store several processes share: (location, a check of its invariants)."""
    if request.param == "sqlite":
        return db_path, lambda: check_file_store(db_path)
    from .redis_check import check_redis_store
    url = request.getfixturevalue("redis_db")
    return url, lambda: check_redis_store(url, "timewheel")


def test_two_processes_racing_on_one_id_leave_one_task_that_runs_once(tmp_path, shared) -> None:
    db_path, check_store = shared
    out = str(tmp_path)
    procs = [worker("race", db_path, out, "100") for _ in range(2)]
    try:
        time.sleep(1.0)                           # both imported and started (not required)
        eta = time.time() + 1.0
        with open(tmp_path / "go.tmp", "w") as fh:
            fh.write(repr(eta))
        os.rename(tmp_path / "go.tmp", tmp_path / "go")
        results = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr
            results.append(json.loads(stdout))
    finally:
        for p in procs:
            p.kill()
    assert [r["ids"] for r in results] == [["welcome:7"], ["welcome:7"]]
    ran = runs(out)
    assert [r[:3] for r in ran] == [["run", "7", "1"]], ran       # one run, first attempt
    # It ran at its eta and took 2 s, so every delay() returned while it was pending or
    # running: none of the 200 calls may have added a second task.
    assert max(r["last"] for r in results) < eta + 2.0, "the calls were too slow for this test"
    hooks = read_lines(os.path.join(out, "hooks.log"))
    assert sorted(h[0] for h in hooks) == ["started", "succeeded"]
    hu = TimeWheel(db_path, tick=0.1, slots=600)
    try:
        stored = records_of(hu.store)
        assert [(r.id, r.status, r.attempts) for r in stored] == [("welcome:7", SUCCEEDED, 1)]
        assert stored[0].started >= eta
        assert hu.store.counts() == {(SUCCEEDED, "features.welcome"): 1}
    finally:
        hu.close()
    check_store()


def test_replace_while_pending_runs_only_the_new_arguments(tmp_path, db_path) -> None:
    out = str(tmp_path)
    hu = TimeWheel(db_path, tick=0.1, slots=600)         # only enqueues: a subprocess runs
    welcome = hu.task(name="features.welcome")(lambda user, pause=0.0, fail_first=False: user)
    old = welcome.delay(1, task_id="w", count_down=30)
    new = welcome.schedule((2,), task_id="w", replace=True, count_down=0.5)
    rec = new.record
    assert new == old and pickle.loads(rec.payload) == ((2,), {}) and rec.eta < rec.created + 1
    assert hu.store.counts() == {("pending", "features.welcome"): 1}
    p = worker("work", db_path, out)
    try:
        assert new.result(timeout=20) == 2
        time.sleep(0.5)
    finally:
        open(tmp_path / "stop", "w").close()
        p.communicate(timeout=30)
    assert [r[:2] for r in runs(out)] == [["run", "2"]]
    rec = hu.store.get("w")
    assert rec.started >= rec.eta and rec.started < rec.created + 20
    hu.close()


def test_delay_with_a_pending_or_running_id_adds_nothing_and_returns_its_handle(wheel) -> None:
    hu, greet = wheel
    h1 = greet.delay(1, pause=1.0, task_id="greet:1")
    h2 = greet.delay(2, task_id="greet:1")                    # pending: kept
    assert h1 == h2 and hu.store.counts() == {("pending", "greet"): 1}
    hu.start()
    wait_for(lambda: h1.status == "running", timeout=10)
    h3 = greet.delay(3, task_id="greet:1")                    # running: kept
    assert h3 == h1
    with pytest.raises(DuplicateTask):                        # running cannot be replaced
        greet.schedule((4,), task_id="greet:1", replace=True)
    assert h1.result(timeout=10) == "hi 1"
    time.sleep(0.3)
    assert hu.calls == [(1, "hi")]


def test_a_finished_id_is_reused_by_the_next_delay(wheel) -> None:
    hu, greet = wheel
    hu.start()
    first = greet.delay(1, task_id="greet:1")
    assert first.result(timeout=10) == "hi 1"
    rev = first.record.rev
    again = greet.delay(2, text="hello", task_id="greet:1")   # replaces the finished record
    assert again == first and again.result(timeout=10) == "hello 2"
    assert first.result(timeout=1) == "hello 2"               # one id, one record: the newest
    assert hu.store.get("greet:1").rev > rev                  # continues the old rev (fences)
    failed = greet.delay(3, fail=True, task_id="greet:f")
    wait_for(lambda: failed.status == "failed", timeout=10)
    assert greet.delay(3, task_id="greet:f").result(timeout=10) == "hi 3"
    cancelled = greet.delay(4, task_id="greet:c", count_down=60)
    assert cancelled.cancel()
    assert greet.delay(4, task_id="greet:c").result(timeout=10) == "hi 4"
    assert sorted(hu.calls) == [(1, "hi"), (2, "hello"), (3, "hi"), (3, "hi"), (4, "hi")]
    assert sum(hu.store.counts().values()) == 3


def test_a_misfired_id_is_reused(db_path) -> None:
    hu = TimeWheel(db_path, tick=0.1, slots=600)
    late = hu.task(name="late", misfire_grace=0.5)(lambda: "ran")
    hu.start()
    try:
        h = late.delay(task_id="late:1", eta=time.time() - 5)
        wait_for(lambda: h.status == "misfired", timeout=10)
        assert late.delay(task_id="late:1").result(timeout=10) == "ran"
    finally:
        hu.close()


def test_once_adds_nothing_while_any_record_of_the_id_is_stored(wheel) -> None:
    hu, greet = wheel
    hu.start()
    h = greet.schedule((1,), task_id="greet:once", once=True)
    assert h.result(timeout=10) == "hi 1"
    assert greet.schedule((2,), task_id="greet:once", once=True).result(timeout=1) == "hi 1"
    assert hu.calls == [(1, "hi")]
    with pytest.raises(ValueError, match="contradict"):
        greet.schedule((3,), task_id="x", once=True, replace=True)
    with pytest.raises(ValueError, match="task_id"):
        greet.schedule((3,), replace=True)


@pytest.mark.parametrize("bad", ["", " lead", "trail ", "new\nline", "tab\t", "\x00", "x" * 201])
def test_a_bad_id_is_refused_and_nothing_is_written(wheel, bad) -> None:
    hu, greet = wheel
    with pytest.raises(ValueError, match="task_id"):
        greet.delay(1, task_id=bad)
    with pytest.raises(ValueError, match="task_id"):
        greet.schedule((1,), task_id=bad, replace=True)
    with pytest.raises(ValueError, match="task_id"):
        with hu.batch():
            greet.delay(1, task_id="fine")
            greet.delay(2)
            greet.delay(3, task_id=bad)
    assert hu.store.counts() == {} and records_of(hu.store) == []


def test_an_id_that_is_not_a_str_is_a_type_error(wheel) -> None:
    hu, greet = wheel
    for bad in (7, b"bytes", ("t",)):
        with pytest.raises(TypeError, match="task_id must be a str"):
            greet.delay(1, task_id=bad)
    assert hu.store.counts() == {}


def test_ids_in_a_batch(wheel) -> None:
    hu, greet = wheel
    with hu.batch():
        a = greet.delay(1, task_id="b:1")
        b = greet.delay(2, task_id="b:1")                     # the same id twice: one task
        c = greet.delay(3)
    assert a == b and a != c and sum(hu.store.counts().values()) == 2
    with hu.batch():
        greet.delay(4, task_id="b:1")                         # still pending: kept
    hu.start()
    assert a.result(timeout=10) == "hi 1" and c.result(timeout=10) == "hi 3"
    with pytest.raises(ValueError, match="cannot mix"):
        with hu.batch():
            greet.schedule((5,), task_id="b:2", replace=True)
            greet.schedule((6,), task_id="b:3", once=True)
    assert hu.store.get("b:2") is None


def test_task_id_is_reserved_by_delay_but_schedule_passes_any_argument(db_path) -> None:
    hu = TimeWheel(db_path, tick=0.1, slots=600)
    echo = hu.task(name="echo")(lambda task_id: task_id)
    hu.start()
    try:
        assert echo.schedule(kwargs={"task_id": "an argument"}, task_id="the-id").result(timeout=10) \
            == "an argument"
        with pytest.raises(TypeError, match="task_id"):
            echo.delay(task_id="only-the-id")                 # the function misses its argument
    finally:
        hu.close()


def test_immediate_mode_honours_ids() -> None:
    hu = TimeWheel(immediate=True)
    calls = []
    f = hu.task(name="f")(lambda x: calls.append(x) or x)
    assert f.delay(1, task_id="a").result(timeout=1) == 1
    assert f.delay(2, task_id="a").result(timeout=1) == 2      # finished: replaced and run
    assert f.schedule((3,), task_id="a", once=True).result(timeout=1) == 2
    with hu.batch():
        f.delay(4, task_id="b")
        f.delay(5, task_id="b")
    assert calls == [1, 2, 4] and hu.get("b").result(timeout=1) == 4


def test_threads_racing_on_one_id_in_one_process(wheel) -> None:
    hu, greet = wheel
    handles, barrier = [], threading.Barrier(8)

    def race():
        barrier.wait()
        for _ in range(25):
            handles.append(greet.delay(9, task_id="greet:9", count_down=2))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {h.id for h in handles} == {"greet:9"} and hu.store.counts() == {("pending", "greet"): 1}
