"""Hooks: ``hu.on(event, fn)`` runs ``fn(record, exception)`` once per transition, after the
change is durable, in the process that made it; a hook that raises changes nothing."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from timewheel import EVENTS, TimeWheel
from timewheel.records import decode_record
from timewheel.store import open_store
from timewheel.testing import processes as procs

from .conftest import wait_for
from .mp_worker import read_lines

HERE = os.path.dirname(os.path.abspath(__file__))


def stored_elsewhere(location: str, task_id: str):
    """The record as another connection sees it: what is committed to the store."""
    if location.startswith("redis://"):
        other = open_store(location)
        try:
            return other.get(task_id)
        finally:
            other.close()
    con = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
    try:
        (blob,) = con.execute("SELECT value FROM timewheel WHERE key = ?", ("t:" + task_id,)).fetchone()
        return decode_record(blob)
    finally:
        con.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared(request, db_path) -> str:
    """The location of a store several processes share (Redis: claims lease 1 s)."""
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db") + "?lease=1"


def recorder(hu: TimeWheel, db: "str | None" = None) -> list[tuple]:
    """Hooks on every event appending (event, attempts, status, exception); with ``db`` each
    also checks that the change it was told of is committed to the file: the store holds that
    very record, or a later one (hooks run on their own thread: the task may have moved on)."""
    seen: list[tuple] = []
    for event in EVENTS:
        def hook(rec, exc, event=event):
            if db is not None:
                stored = stored_elsewhere(db, rec.id)
                assert stored == rec or stored.rev > rec.rev, event
            seen.append((event, rec.attempts, rec.status, exc))
        hu.on(event, hook)
    return seen


@pytest.fixture
def hu(db_path):
    wheel = TimeWheel(db_path, workers=2, tick=0.1, slots=600)
    yield wheel
    wheel.close()


def flaky_task(hu: TimeWheel, fails: int, retries: int):
    errors = []

    @hu.task(name="flaky", retries=retries, retry_delay=0.05)
    def flaky():
        if len(errors) < fails:
            errors.append(RuntimeError(f"failure {len(errors) + 1}"))
            raise errors[-1]
        return "ok"

    return flaky, errors


def test_failing_twice_then_succeeding_fires_two_retrying_one_succeeded(hu, db_path) -> None:
    seen = recorder(hu, db_path)
    flaky, errors = flaky_task(hu, fails=2, retries=3)
    hu.start()
    assert flaky.delay().result(timeout=10) == "ok"
    time.sleep(0.2)                    # any extra event would show by now
    assert [s[:3] for s in seen] == [
        ("started", 1, "running"), ("retrying", 1, "pending"),
        ("started", 2, "running"), ("retrying", 2, "pending"),
        ("started", 3, "running"), ("succeeded", 3, "succeeded")]
    assert [s[3] for s in seen if s[0] == "retrying"] == errors      # the exceptions themselves
    assert [s[3] for s in seen if s[0] != "retrying"] == [None] * 4


def test_failed_for_good_and_misfired(hu, db_path) -> None:
    seen = recorder(hu, db_path)
    flaky, errors = flaky_task(hu, fails=5, retries=1)
    late = hu.task(name="late", misfire_grace=0.5)(lambda: None)
    hu.start()
    h = flaky.delay()
    wait_for(lambda: h.status == "failed", timeout=10)
    m = late.delay(eta=time.time() - 10)
    wait_for(lambda: m.status == "misfired", timeout=10)
    time.sleep(0.2)
    assert [s[:3] for s in seen] == [
        ("started", 1, "running"), ("retrying", 1, "pending"),
        ("started", 2, "running"), ("failed", 2, "failed"), ("misfired", 0, "misfired")]
    assert seen[3][3] is errors[1] and seen[4][3] is None


def test_a_raising_hook_is_logged_and_changes_nothing(hu, caplog) -> None:
    def bad(rec, exc):
        raise ValueError(f"hook broke on {rec.status}")

    def exits(rec, exc):
        sys.exit(3)                    # would end the boss thread if it got through

    for event in EVENTS:
        hu.on(event, bad)
        hu.on(event, exits)
    seen = recorder(hu)                # hooks after the broken ones still run
    flaky, _ = flaky_task(hu, fails=1, retries=1)
    hu.start()
    with caplog.at_level(logging.ERROR, logger="timewheel"):
        handles = [flaky.delay() for _ in range(3)]
        assert [h.result(timeout=10) for h in handles] == ["ok"] * 3
        time.sleep(0.2)
    assert Counter(s[0] for s in seen) == {"started": 4, "retrying": 1, "succeeded": 3}
    assert all(h.record.attempts == (2 if h.id == handles[0].id else 1) for h in handles)
    assert hu.health().ok
    messages = [r.getMessage() for r in caplog.records]
    assert sum("hook" in m and "raised for task" in m for m in messages) == 2 * 8
    assert any("hook broke on running" in (r.exc_text or "") for r in caplog.records)


def test_the_decorator_and_bad_arguments(hu) -> None:
    got = []

    @hu.on("succeeded")
    def note(rec, exc):
        got.append(rec.id)

    assert callable(note) and note.__name__ == "note"
    with pytest.raises(ValueError, match="unknown event 'done'"):
        hu.on("done", note)
    with pytest.raises(TypeError, match="callable"):
        hu.on("failed", 42)
    hu.start()
    h = hu.task(name="x")(lambda: 1).delay()
    h.result(timeout=10)
    wait_for(lambda: got == [h.id], timeout=5)


def test_immediate_mode_fires_the_same_events() -> None:
    hu = TimeWheel(immediate=True)
    seen = recorder(hu)
    flaky, errors = flaky_task(hu, fails=2, retries=3)
    assert flaky.delay().result(timeout=1) == "ok"
    assert [s[:2] for s in seen] == [("started", 1), ("retrying", 1), ("started", 2), ("retrying", 2),
                                     ("started", 3), ("succeeded", 3)]
    assert [s[3] for s in seen if s[0] == "retrying"] == errors


def test_across_processes_hooks_fire_once_in_the_process_that_made_the_change(tmp_path, shared) -> None:
    db_path, out = shared, str(tmp_path)
    enqueuer = TimeWheel(db_path, tick=0.1, slots=600)    # never starts: its hooks never fire
    mine = recorder(enqueuer)
    welcome = enqueuer.task(name="features.welcome", retries=1, retry_delay=0.05)(
        lambda user, pause=0.0, fail_first=False: user)
    workers = [procs.popen([sys.executable, os.path.join(HERE, "feature_worker.py"), "work", db_path, out],
                           stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        with enqueuer.batch():
            handles = [welcome.delay(i, pause=0.05, fail_first=i % 4 == 0) for i in range(24)]
        for h in handles:
            h.result(timeout=30)
        time.sleep(0.5)
    finally:
        open(tmp_path / "stop", "w").close()
        try:
            for p in workers:
                _, err = p.communicate(timeout=30)
                assert p.returncode == 0, err
        finally:
            for p in workers:
                p.kill()
                p.wait(10)
    assert mine == []
    lines = read_lines(os.path.join(out, "hooks.log"))
    per: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for event, task_id, attempts, pid in lines:
        per[task_id].append((event, int(attempts), pid))
    assert sorted(per) == sorted(h.id for h in handles)
    ran = read_lines(os.path.join(out, "runs.log"))
    pid_of = {(int(user), int(attempt)): pid for _, user, attempt, pid in ran}
    assert len(pid_of) == len(ran) == 24 + 6                     # every attempt ran once
    for i, h in enumerate(handles):
        events = per[h.id]
        if i % 4:
            assert [e[:2] for e in events] == [("started", 1), ("succeeded", 1)], events
        else:
            assert sorted(e[:2] for e in events) == [("retrying", 1), ("started", 1), ("started", 2),
                                                     ("succeeded", 2)], events
        # each event came from the process that ran that attempt (and recorded its outcome)
        for _event, attempt, pid in events:
            assert pid == pid_of[i, attempt], (h.id, events)
    assert len({pid for *_, pid in lines}) == 2, "both processes should have run tasks"


def test_a_task_whose_process_died_too_often_fires_failed_in_the_process_that_recovered_it(
        tmp_path, shared) -> None:
    db_path = shared
    hu = TimeWheel(db_path, tick=0.1, slots=600, max_crashes=1)
    seen = recorder(hu, db_path)
    die = hu.task(name="features.die")(lambda: None)
    h = die.delay()
    p = procs.popen([sys.executable, os.path.join(HERE, "feature_worker.py"), "work", db_path,
                     str(tmp_path)], stderr=subprocess.PIPE, text=True)
    try:
        assert p.wait(timeout=30) == -9                   # it claimed the task and died running it
    finally:
        p.kill()
        p.communicate(timeout=10)
    assert h.status == "running"
    hu.start()                                            # takes over, recovers the dead one's task
    try:
        wait_for(lambda: h.status == "failed", timeout=10)
        time.sleep(0.2)
        assert [s[:3] for s in seen] == [("failed", 1, "failed")] and seen[0][3] is None
        assert "died 1 times" in h.record.error
    finally:
        hu.close()
