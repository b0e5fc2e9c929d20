"""timewheel.query: the data of the CLI and the web view, on every backend."""

from __future__ import annotations

import math
import time

import pytest

from timewheel import query
from timewheel.errors import StoreError, TaskNotFound
from timewheel.records import FAILED, Outcome, end_run
from timewheel.store import MemoryStore

from .cli_fixtures import populate, rec

ALL = ["p-soon", "p-evil", "p-later", "p-far", "run", "late", "gone", "bad", "ok"]


@pytest.fixture
def filled(store, dead_owner):
    now = time.time()
    populate(store, now, dead_owner)
    return store, now


def ok_lateness(store) -> float:
    """The lateness of the fixture's "ok" task, due 5 s before it was claimed: a server store
    stamps the start by its own clock, a little after the fixture's ``now`` on a busy machine."""
    ok = store.get("ok")
    assert 5 - 0.02 <= ok.started - ok.eta < 6, ok
    return ok.started - ok.eta


def test_inspect_data(filled, dead_owner) -> None:
    store, now = filled
    data = query.inspect_data(store, now)
    assert set(data) == {"store", "counts", "ticker", "next_due", "running", "pending_by_name", "ring",
                         "queues", "limits", "processes", "inbox"}
    assert data["inbox"] == (None if isinstance(store, MemoryStore) else {"waiting": 0, "set_aside": 0})
    assert data["counts"] == {"pending": 4, "running": 1, "succeeded": 1, "failed": 1,
                              "cancelled": 1, "misfired": 1, "aborted": 0, "broken": 0, "claimed": 0}
    assert {"path", "journal_mode", "size_bytes", "wal_bytes", "slots", "tick"} <= set(data["store"])
    ticker = data["ticker"]
    assert {"now", "current_tick", "horizon", "done_through", "lag_ticks", "lag_seconds", "ticking",
            "leader"} <= set(ticker)
    assert ticker["current_tick"] == store.wheel.current_tick(now)
    assert ticker["lag_ticks"] == 0 and ticker["last_leader"] == "tests"
    assert [d["id"] for d in data["next_due"]] == ["p-soon", "p-evil", "p-later", "p-far"]
    assert data["next_due"][0]["due_in"] == pytest.approx(90)
    (running,) = data["running"]
    assert running["id"] == "run" and running["owner"] == dead_owner and running["owner_alive"] is False
    assert data["pending_by_name"] == {"emails.send": 2, "reports.build": 2}
    ring = data["ring"]
    assert ring["occupied_cells"] == 4 and ring["complete"] is True
    assert [c["tick"] for c in ring["cells"]] == sorted(c["tick"] for c in ring["cells"])
    assert all(c["slot"] == c["tick"] % 3600 and c["cycle"] == c["tick"] // 3600 for c in ring["cells"])
    assert query.inspect_data(store, now, next_n=2)["next_due"][1]["id"] == "p-evil"


def test_inspect_lists_ten_cells_unless_all_slots(store) -> None:
    now = time.time()
    store.add([rec(f"t{i:02d}", "x", now + 100 + 7 * i) for i in range(25)])
    short = query.inspect_data(store, now)["ring"]
    assert len(short["cells"]) == 10 and short["complete"] is False and short["occupied_cells"] == 25
    full = query.inspect_data(store, now, all_slots=True)["ring"]
    assert len(full["cells"]) == 25 and full["complete"] is True


def test_lag_counts_ticks_whose_ready_tasks_nobody_claimed(store) -> None:
    now = time.time()
    store.add([rec("waiting", "x", now - 30)])
    store.advance(store.wheel.current_tick(now) + 4, 1000, "tests")
    ticker = query.inspect_data(store, now)["ticker"]
    assert ticker["done_through"] == store.wheel.due_tick(now - 30) - 1
    assert ticker["lag_ticks"] == store.wheel.current_tick(now) - ticker["done_through"]
    assert 29 <= ticker["lag_seconds"] <= 32


def test_tasks_data_order_filters_and_rows(filled) -> None:
    store, now = filled
    data = query.tasks_data(store, now)
    assert [t["id"] for t in data["tasks"]] == ALL and data["next_after"] is None
    assert set(data["tasks"][0]) == {"id", "name", "status", "eta", "due_in", "attempts", "max_attempts",
                                     "crashes", "created", "started", "finished", "owner", "owner_alive",
                                     "lease", "error", "queue", "priority", "retrying",
                                     "abort_requested", "progress", "depends_on", "waiting_for"}
    assert [t["id"] for t in query.tasks_data(store, now, status=FAILED)["tasks"]] == ["bad"]
    named = query.tasks_data(store, now, name="reports.build", status="pending")["tasks"]
    assert [t["id"] for t in named] == ["p-evil", "p-far"]
    # by id prefix: the same tasks, in id order within a status (read from the index of ids)
    assert [t["id"] for t in query.tasks_data(store, now, id_prefix="p-")["tasks"]] == sorted(ALL[:4])
    (running,) = query.tasks_data(store, now, status="running")["tasks"]
    assert running["owner_alive"] is False
    assert query.tasks_data(store, now, status="broken")["tasks"] == []
    with pytest.raises(ValueError, match="unknown status"):
        query.tasks_data(store, now, status="done")
    with pytest.raises(ValueError, match="limit"):
        query.tasks_data(store, now, limit=-1)


@pytest.mark.parametrize("status", [None, "pending", "cancelled"])
def test_pages_list_every_task_once(filled, status) -> None:
    store, now = filled
    expected = [t["id"] for t in query.tasks_data(store, now, status=status, limit=None)["tasks"]]
    for size in range(1, 11):
        seen, after = [], None
        while True:
            page = query.tasks_data(store, now, status=status, limit=size, after=after)
            seen += [t["id"] for t in page["tasks"]]
            after = page["next_after"]
            if after is None:
                break
        assert seen == expected, size
    with pytest.raises(TaskNotFound):
        query.tasks_data(store, now, after="no-such-task")


def test_show_data(filled) -> None:
    store, now = filled
    data = query.show_data(store, "p-soon", now)
    assert data["args"] == "(<tests.cli_fixtures.Account name='ann'>, 'hi')"
    assert data["kwargs"] == "{'urgent': True}" and data["args_error"] is None
    done = query.show_data(store, "ok", now)
    assert "'sent': 3" in done["result"] and done["lateness"] == pytest.approx(ok_lateness(store))
    failed = query.show_data(store, "bad", now)
    assert failed["error"] == "ValueError: no such mailbox" and failed["traceback"].startswith("Traceback")
    cut = query.show_data(store, "p-later", now)
    assert cut["args_truncated"] is True and len(cut["args"]) < 600
    assert "x" * 1000 in query.show_data(store, "p-later", now, full=True)["args"]
    with pytest.raises(TaskNotFound, match="no task nope"):
        query.show_data(store, "nope", now)


def test_stats_data(filled) -> None:
    store, now = filled
    data = query.stats_data(store, now)
    assert data["counts"]["pending"] == 4
    assert data["by_name"]["emails.send"]["failed"] == 1
    assert data["lateness"]["runs"] == 3 and data["lateness"]["max"] == pytest.approx(ok_lateness(store))
    assert data["lateness_by_name"]["reports.build"]["runs"] == 1
    assert query.stats_data(store, now, recent=1)["lateness"]["runs"] == 1
    for bad in (0, -1, query.MAX_RECENT + 1, 1.5, True):
        with pytest.raises(ValueError):
            query.stats_data(store, now, recent=bad)


def test_stats_ignores_the_old_start_of_a_task_waiting_for_its_retry(store, dead_owner) -> None:
    now = time.time()
    store.add([rec("r", "x", now - 1, retries=1)])
    store.advance(store.wheel.current_tick(now), 100, "tests")
    (claimed,) = store.claim(dead_owner, now, 1).records
    (back,) = store.swap([(claimed, end_run(claimed, Outcome(False, now, now, error="boom")))])
    assert back.status == "pending" and back.started is not None
    assert query.stats_data(store, now)["lateness"]["runs"] == 0


def test_timeline_data(filled) -> None:
    store, now = filled
    data = query.timeline_data(store, now, hours=24)
    assert data["bucket_seconds"] == 3600 and data["overdue"] == 0 and data["later"] == 1
    assert sum(b["count"] for b in data["buckets"]) == 3
    assert data["buckets"][0]["start"] <= now < data["buckets"][0]["end"]
    assert query.timeline_data(store, now, hours=4)["bucket_seconds"] == 600
    only = query.timeline_data(store, now, hours=1, name="reports.build")
    assert sum(b["count"] for b in only["buckets"]) == 1 and only["later"] == 1 and only["pending"] == 2
    for bad in (0, -1, math.inf, math.nan, 1e12, query.MAX_HOURS * 2, "24", True):
        with pytest.raises(ValueError, match="hours"):
            query.timeline_data(store, now, hours=bad)
    longest = query.timeline_data(store, now, hours=query.MAX_HOURS)
    assert len(longest["buckets"]) <= 2000 and longest["later"] == 0


def test_timeline_counts_overdue_tasks_apart(store) -> None:
    now = time.time()
    store.add([rec("o1", "x", now - 3600), rec("o2", "x", now - 2), rec("f", "x", now + 30)])
    for name in (None, "x"):
        data = query.timeline_data(store, now, hours=1, name=name)
        assert data["overdue"] == 2 and sum(b["count"] for b in data["buckets"]) == 1, name
        assert data["overdue"] + data["later"] + sum(b["count"] for b in data["buckets"]) == data["pending"]


def test_change_tasks(filled) -> None:
    store, now = filled
    assert query.change_tasks(store, ["p-soon", "p-soon"], "cancel") == {
        "cancelled": ["p-soon"], "skipped": [], "unknown": []}
    assert store.get("p-soon").status == "cancelled"
    assert query.change_tasks(store, ["p-far", "ok", "nope"], "cancel") == {
        "cancelled": ["p-far"], "skipped": [{"id": "ok", "status": "succeeded"}], "unknown": ["nope"]}
    assert query.change_tasks(store, ["bad", "late", "gone", "p-later"], "retry") == {
        "retried": ["bad", "late", "gone"], "skipped": [{"id": "p-later", "status": "pending"}],
        "unknown": []}
    back = store.get("bad")
    assert back.status == "pending" and back.attempts == 0 and back.eta <= time.time()
    with pytest.raises(ValueError):
        query.change_tasks(store, ["bad"], "delete")


def test_retry_failed(store, dead_owner) -> None:
    now = time.time()
    store.add([rec(f"f{i}", "x" if i % 2 else "y", now - 1) for i in range(6)])
    store.advance(store.wheel.current_tick(now), 100, "tests")
    claimed = store.claim(dead_owner, now, 10).records
    store.swap([(r, end_run(r, Outcome(False, now, now, error="boom"))) for r in claimed])
    assert sorted(query.retry_failed(store, name="x")["retried"]) == ["f1", "f3", "f5"]
    assert sorted(query.retry_failed(store)["retried"]) == ["f0", "f2", "f4"]
    assert query.retry_failed(store)["retried"] == []


def test_purge_data(filled) -> None:
    store, now = filled
    later = now + 3600
    dry = query.purge_data(store, later, older_than=0, statuses=["failed", "misfired"], dry_run=True)
    assert dry == {"purged": 0, "matching": 2, "finished_before": later, "statuses": ["failed", "misfired"],
                   "dry_run": True}
    assert store.get("bad") is not None
    assert query.purge_data(store, later, older_than=7200)["purged"] == 0
    done = query.purge_data(store, later, older_than=0, statuses=["failed", "misfired"])
    assert done["purged"] == done["matching"] == 2 and store.get("bad") is None
    assert query.purge_data(store, later, older_than=0)["purged"] == 2        # succeeded, cancelled
    assert query.inspect_data(store, later)["counts"] == {**dict.fromkeys(query.COUNTED, 0), "pending": 4,
                                                          "running": 1}
    with pytest.raises(ValueError, match="pending"):
        query.purge_data(store, now, older_than=0, statuses=["pending"])
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match="older_than"):
            query.purge_data(store, now, older_than=bad)


class _RepeatingIndex(MemoryStore):
    """A store whose listing index is damaged: every page starts from the top again, whatever
    ``after`` says (as a corrupt b-tree can)."""

    def scan(self, status, *, name=None, id_prefix=None, after=None, limit=None):
        return super().scan(status, name=name, id_prefix=id_prefix, limit=limit)


@pytest.mark.timeout(30)     # on a loop that never ends: fail, not hang
def test_paged_loops_end_on_a_store_whose_pages_do_not_advance() -> None:
    """Issue 19 item 3: every loop over pages ends, whatever the store hands back."""
    store = _RepeatingIndex()
    now = time.time()
    ended = {"finished": now - 50, "started": now - 60}
    finished = [rec(f"s{i:04d}", "x", now - 100)._replace(status="succeeded", **ended) for i in range(1500)]
    pending = [rec(f"p{i:04d}", "x", now + 100 + i) for i in range(1500)]
    failed = [rec(f"f{i:04d}", "x", now - 100)._replace(status=FAILED, **ended) for i in range(1500)]
    store.add(finished + pending + failed)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="(failed|succeeded) index is out of order"):
        query.purge_data(store, now, older_than=0, dry_run=True)
    with pytest.raises(StoreError, match="pending index is out of order"):
        start = store.wheel.current_tick(now)
        store.histogram(start, start + 3600, 60, name="x")
    done = query.retry_failed(store)
    assert sorted(done["retried"]) == sorted(r.id for r in failed)      # each once
    assert time.monotonic() - t0 < 10
