"""A store written by timewheel 0.1.0 (format timewheel/1) is converted in place, nothing lost.

The fixture (tests/fixtures/, see its README) was written by 0.1.0 itself; store_v1.json says
what each record held then.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest

from timewheel import NotAStore, TimeWheel
from timewheel.store import SqliteDictStore

from .conftest import check_file_store, count_of, records_of

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture
def old_store(tmp_path) -> str:
    db = str(tmp_path / "tasks.db")
    with gzip.open(os.path.join(FIXTURES, "store_v1.sqlite.gz"), "rb") as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(db, 0o600)
    return db


def expected() -> dict:
    with open(os.path.join(FIXTURES, "store_v1.json")) as fh:
        return json.load(fh)


def test_read_only_opens_say_the_store_needs_converting(old_store) -> None:
    before = open(old_store, "rb").read()
    with pytest.raises(NotAStore, match="timewheel 0.1"):
        SqliteDictStore(old_store, readonly=True)
    assert open(old_store, "rb").read() == before


def test_every_task_survives_the_conversion_in_its_state(old_store) -> None:
    want = expected()
    store = SqliteDictStore(old_store)
    for task_id, old in want.items():
        if old["status"] == "broken":
            continue
        rec = store.get(task_id)
        assert rec is not None, task_id
        for field in ("status", "name", "eta", "attempts", "owner", "error"):
            assert getattr(rec, field) == old[field], (task_id, field)
    broken = store.scan("broken")
    assert [b.id for b in broken] == [i for i, o in want.items() if o["status"] == "broken"]
    statuses = {}
    for o in want.values():
        statuses[o["status"]] = statuses.get(o["status"], 0) + 1
    for status, n in statuses.items():
        assert count_of(store, status) == n, status
    store.close()
    check_file_store(old_store)
    # converting again is a no-op
    store = SqliteDictStore(old_store)
    assert len(records_of(store)) == sum(n for s, n in statuses.items() if s != "broken")
    store.close()


def test_the_converted_pending_tasks_run_once_and_the_dead_owners_task_again(old_store) -> None:
    want = expected()
    ran: list[tuple] = []
    hu = TimeWheel(old_store, workers=4)

    @hu.task(name="fixture.add")
    def add(a, b):
        ran.append((a, b))
        return a + b

    @hu.task(name="fixture.boom", retries=2, retry_delay=5)
    def boom():
        raise RuntimeError("boom")

    pending = [i for i, o in want.items() if o["status"] == "pending"]
    running = [i for i, o in want.items() if o["status"] == "running"]
    assert len(pending) == 24 and len(running) == 1
    hu.start()
    try:
        # every pending task of 0.1 is overdue by now except the ones a week out
        due = [i for i in pending if want[i]["eta"] <= hu.now()] + running
        for i in due:
            assert hu.get(i).result(timeout=30) is not None
    finally:
        hu.stop()
    assert len(ran) == len(due)           # each once (the dead owner's task: its documented re-run)
    assert hu.get(running[0]).record.crashes == 1
    hu.close()
    check_file_store(old_store)
