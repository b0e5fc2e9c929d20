"""Flow control with real processes (issue 21, "What it must show"): worker processes
(tests/flow_worker.py) on one file store, on a real redis-server and on a real PostgreSQL
server, run tasks whose limits, priorities, queues, pauses and debounce the test set; the
run log the tasks append to (one line per start and end, with pid and time) and the store's
records say what happened.

In every scenario: no task starts before its eta (by the store's clock), none is lost, none
runs twice (a run cut short by SIGKILL is the one documented re-run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from timewheel import TimeWheel
from timewheel.testing import processes as procs

from . import flow_worker, mp_worker
from .mp_worker import Runs, events_of, read_lines, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = 0.25


class Cluster:
    """Worker processes on one store; every one is SIGKILLed when the test ends."""

    def __init__(self, store: str, d: Any, namespace: str) -> None:
        self.store, self.dir, self.namespace = store, d, namespace
        self.log = str(d / "runs.log")
        self.events = str(d / "events.log")
        self.stop_file = str(d / "stop")
        self.procs: list[subprocess.Popen] = []
        self.hu = flow_worker.wheel(store, namespace, tick=TICK)     # the test's own: enqueues only

    def worker(self, *extra: str, workers: int = 4, wait: bool = True) -> subprocess.Popen:
        out = open(str(self.dir / f"worker{len(self.procs)}.out"), "ab")
        p = procs.popen([sys.executable, os.path.join(HERE, "flow_worker.py"), self.store,
                         "--namespace", self.namespace, "--events", self.events,
                         "--workers", str(workers), "--tick", str(TICK), "--stop-file",
                         self.stop_file, "--lifetime", "60", *extra],
                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(p)
        if wait:
            wait_for(lambda: any(e[1] == str(p.pid) for e in events_of(self.events, "ready")), 30,
                     what=f"worker {p.pid} ready")
        return p

    def runs(self) -> Runs:
        return Runs(self.log)

    def spans(self) -> dict[str, list[tuple[float, float, str]]]:
        """tag -> [(start, end, pid)] of every finished run, from the run log."""
        opened: dict[tuple[str, str], float] = {}
        out: dict[str, list[tuple[float, float, str]]] = {}
        for kind, tag, pid, t in (p[:4] for p in read_lines(self.log)):
            if kind == "start":
                opened[(tag, pid)] = float(t)
            elif (tag, pid) in opened:
                out.setdefault(tag, []).append((opened.pop((tag, pid)), float(t), pid))
        return out

    def errors(self) -> list[str]:
        return [" ".join(e) for e in events_of(self.events, "error")]

    def stop(self) -> list[int]:
        return mp_worker.stop_all(self.procs, self.stop_file)

    def close(self) -> None:
        mp_worker.kill_all(self.procs)
        self.hu.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def cluster(request, tmp_path) -> Iterator[Cluster]:
    if request.param == "sqlite":
        store = str(tmp_path / "tasks.db")
    else:        # (a server's store recovers a killed process's tasks with its lease)
        url = request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db")
        store = url + ("&" if "?" in url else "?") + "lease=2"
    c = Cluster(store, tmp_path, "flow")
    try:
        yield c
    finally:
        c.close()


def _enqueue(c: Cluster, name: str, tags: list[str], *args: Any, **options: Any) -> dict[str, str]:
    """tag -> task id; each task records into the run log."""
    task = c.hu.tasks[name]
    with c.hu.batch():
        return {tag: task.schedule((c.log, tag) + args, **options).id for tag in tags}


def _check_once_and_never_early(c: Cluster, ids: dict[str, str], runs: Runs) -> None:
    """Every task ran exactly once, and started (by the store's clock) at or after its eta."""
    assert runs.duplicates() == {}
    assert set(runs.ends) == set(ids), set(ids) ^ set(runs.ends)
    for tag, task_id in ids.items():
        rec = c.hu.store.get(task_id)
        assert rec.status == "succeeded", (tag, rec.status, rec.error)
        assert rec.started >= rec.eta, (tag, rec.started - rec.eta)


def _most_at_once(spans: list[tuple[float, float, str]]) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    most = now = 0
    for _, d in edges:            # an end before a start at the same instant
        now += d
        most = max(most, now)
    return most


def test_a_concurrency_limit_holds_across_three_processes(cluster: Cluster) -> None:
    for _ in range(3):
        cluster.worker()
    t0 = time.time()
    ids = _enqueue(cluster, "flow.two", [f"c{i}" for i in range(40)], 0.3)
    wait_for(lambda: len(cluster.runs().ends) >= 40, 20, what="40 runs")
    took = time.time() - t0
    spans = cluster.spans()
    assert _most_at_once([s for v in spans.values() for s in v]) <= 2
    assert took < 10, took
    assert cluster.stop() == [0, 0, 0]
    _check_once_and_never_early(cluster, ids, cluster.runs())
    assert cluster.errors() == []


def test_a_per_key_limit_runs_one_per_key_and_keys_in_parallel(cluster: Cluster) -> None:
    for _ in range(3):
        cluster.worker()
    task = cluster.hu.tasks["flow.per_key"]
    with cluster.hu.batch():
        ids = {f"k{i}": task.schedule((cluster.log, f"k{i}", 0.3, f"customer{i % 4}")).id for i in range(40)}
    wait_for(lambda: len(cluster.runs().ends) >= 40, 20, what="40 runs")
    spans = cluster.spans()
    for key in range(4):
        assert _most_at_once([s for t, v in spans.items() if int(t[1:]) % 4 == key for s in v]) == 1
    assert _most_at_once([s for v in spans.values() for s in v]) > 1
    assert cluster.stop() == [0, 0, 0]
    _check_once_and_never_early(cluster, ids, cluster.runs())


def test_a_slot_held_by_a_killed_process_frees_when_its_crash_is_detected(cluster: Cluster) -> None:
    victim = cluster.worker(workers=1)
    task = cluster.hu.tasks["flow.per_key"]
    first = task.schedule((cluster.log, "first", 3.0, "one")).id
    wait_for(lambda: "first" in cluster.runs().starts, 10, what="the first run")
    second = task.schedule((cluster.log, "second", 0.0, "one")).id
    cluster.worker()                                      # a live process, free to run "second"
    time.sleep(1.0)
    assert "second" not in cluster.runs().starts          # the slot is held by the running one
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = time.time()
    # when the killed run stops counting: at once for the file store (the kernel drops its
    # lock), at the end of its last renewed lease for Redis and PostgreSQL
    lease = cluster.hu.store.get(first).lease or killed
    wait_for(lambda: len(cluster.runs().starts.get("first", [])) >= 2
             or "second" in cluster.runs().starts, 10, what="the key's next run")
    runs = cluster.runs()
    nxt = min(t for tag in ("first", "second") for t in runs.start_times.get(tag, [])[int(tag == "first"):])
    assert nxt >= lease, nxt - lease                     # never while it could still count
    assert nxt - lease < 4 * TICK + 1.0, nxt - lease       # recovered within the documented time
    assert cluster.hu.store.get(first).crashes == 1
    wait_for(lambda: cluster.hu.store.get(second).status == "succeeded", 15, what="second")
    assert runs.starts["first"][0] == str(victim.pid)
    assert all(pid != str(victim.pid) for pid in runs.starts["first"][1:] + cluster.runs().starts["second"])


def test_a_rate_holds_in_every_window_across_two_processes(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.worker()
    t0 = time.time()
    ids = _enqueue(cluster, "flow.rate", [f"r{i}" for i in range(30)])
    wait_for(lambda: len(cluster.runs().ends) >= 30, 15, what="30 runs")
    took = time.time() - t0
    starts = sorted(cluster.hu.store.get(i).started for i in ids.values())     # the store's clock
    worst = max(sum(1 for x in starts[i:] if x < s + 1.0) for i, s in enumerate(starts))
    assert worst <= 5, [round(x - starts[0], 4) for x in starts]
    assert took < 8, took
    assert len({p for v in cluster.spans().values() for _, _, p in v}) == 2     # both processes started some
    assert cluster.stop() == [0, 0]
    _check_once_and_never_early(cluster, ids, cluster.runs())


def test_higher_priorities_run_first_among_due_tasks(cluster: Cluster) -> None:
    low = _enqueue(cluster, "flow.plain", [f"low{i:02d}" for i in range(20)], priority=-10)
    high = _enqueue(cluster, "flow.plain", [f"high{i:02d}" for i in range(20)], priority=10)
    cluster.worker(workers=1)
    wait_for(lambda: len(cluster.runs().ends) >= 40, 20, what="40 runs")
    order = [p[1] for p in read_lines(cluster.log) if p[0] == "start"]
    assert order == sorted(high) + sorted(low)
    assert cluster.stop() == [0]
    _check_once_and_never_early(cluster, {**low, **high}, cluster.runs())


def test_queues_are_served_only_where_asked_and_a_pause_holds_until_resumed(cluster: Cluster) -> None:
    mails = cluster.worker("--queues", "emails")
    emails = _enqueue(cluster, "flow.email", [f"e{i}" for i in range(10)])
    reports = _enqueue(cluster, "flow.report", [f"r{i}" for i in range(10)])
    wait_for(lambda: len(cluster.runs().ends) >= 10, 10, what="the emails")
    time.sleep(1.0)
    runs = cluster.runs()
    assert set(runs.starts) == set(emails)
    assert {p for v in runs.starts.values() for p in v} == {str(mails.pid)}
    assert {q.queue: q.waiting for q in cluster.hu.store.queue_states(time.time())}["reports"] == 10
    assert cluster.hu.pause("reports") is True
    cluster.worker()                                   # serves every queue, but "reports" is paused
    time.sleep(1.5)
    assert set(cluster.runs().starts) == set(emails)
    assert all(cluster.hu.store.get(i).status == "pending" for i in reports.values())
    cluster.hu.resume("reports")
    wait_for(lambda: len(cluster.runs().ends) >= 20, 10, what="the reports after the resume")
    assert cluster.stop() == [0, 0]
    runs = cluster.runs()
    assert all(p != str(mails.pid) for tag in reports for p in runs.starts[tag])
    _check_once_and_never_early(cluster, {**emails, **reports}, runs)


def test_a_shared_limit_counts_every_task_that_uses_it(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.worker()
    ids = {**_enqueue(cluster, "flow.smtp_a", [f"a{i}" for i in range(6)], 0.1),
           **_enqueue(cluster, "flow.smtp_b", [f"b{i}" for i in range(6)], 0.1)}
    wait_for(lambda: len(cluster.runs().ends) >= 12, 15, what="12 runs")
    assert _most_at_once([s for v in cluster.spans().values() for s in v]) == 1
    assert cluster.stop() == [0, 0]
    _check_once_and_never_early(cluster, ids, cluster.runs())


def test_debounce_merges_calls_into_one_run_with_the_last_arguments(cluster: Cluster) -> None:
    cluster.worker()
    task = cluster.hu.tasks["flow.debounced"]
    for i in range(10):
        last = time.time()                                # (the call's instant: before it)
        h = task.schedule((cluster.log, f"call{i}"), task_id="merge", debounce=2.0)
        if i < 9:
            time.sleep(0.3)
    assert h.id == "merge"
    wait_for(lambda: cluster.runs().ends, 10, what="the run")
    time.sleep(0.5)
    runs = cluster.runs()
    assert list(runs.starts) == ["call9"] and len(runs.starts["call9"]) == 1
    assert runs.start_times["call9"][0] >= last + 2.0
    rec = cluster.hu.store.get("merge")
    assert rec.status == "succeeded" and rec.started >= rec.eta
    # max_wait: calls every 0.4 s for 5 s; the first run starts within 2.5 s (+ a tick)
    first = time.time()
    calls = 0
    while time.time() - first < 5.0:
        task.schedule((cluster.log, f"w{calls}"), task_id="wait", debounce=2.0, max_wait=2.5)
        calls += 1
        time.sleep(0.4)
    wait_for(lambda: sum(1 for t in cluster.runs().starts if t.startswith("w")) >= 2, 10,
             what="the follow-up run")
    runs = cluster.runs()
    ws = sorted((t, tag) for tag, ts in runs.start_times.items() if tag.startswith("w") for t in ts)
    assert ws[0][0] - first <= 2.5 + TICK + 0.3, ws[0][0] - first
    assert runs.duplicates() == {}
    assert ws[-1][1] == f"w{calls - 1}"                  # no call lost: the last one's arguments ran
    assert cluster.stop() == [0]


@pytest.mark.parametrize("bad", [dict(priority=1000), dict(rate="5/fortnight"), dict(concurrency=0),
                                 dict(key="nope", concurrency=1), dict(queue="no:colon"),
                                 dict(queue="x" * 100)])
def test_bad_flow_options_are_refused_at_decoration(bad: dict) -> None:
    hu = TimeWheel(None)
    with pytest.raises(ValueError):
        hu.task(**bad)(lambda a: a)


def test_bad_call_options_are_refused_and_nothing_is_written(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "t.db"))
    task = hu.task(name="t")(lambda a=1: a)
    for bad in (dict(priority=101), dict(queue=""), dict(debounce=2.0), dict(debounce=-1, task_id="x"),
                dict(max_wait=2.0, task_id="x"), dict(debounce=1.0, task_id="x~next"),
                dict(debounce=1.0, task_id="x", count_down=3)):
        with pytest.raises(ValueError):
            task.schedule((), **bad)
    with pytest.raises(ValueError):
        hu.start(queues="emails")
    assert hu.store.counts() == {}
    hu.close()


def test_a_store_without_flow_control_refuses_flow_tasks_rather_than_ignore_them(tmp_path) -> None:
    """A backend whose claim does not enforce queues, priorities and limits (one added before
    it learns them) refuses such tasks and a start on named queues; plain tasks still go."""
    hu = TimeWheel(str(tmp_path / "t.db"))
    limited = hu.task(name="limited", concurrency=1)(lambda: 0)
    plain = hu.task(name="plain")(lambda: 0)
    hu.store.flow_control = False                     # (as a store without it says)
    with pytest.raises(ValueError, match="flow control"):
        limited.delay()
    with pytest.raises(ValueError, match="flow control"):
        plain.schedule(priority=5)
    with pytest.raises(ValueError, match="flow control"):
        hu.start(queues=["emails"])
    assert plain.delay().status == "pending" and hu.store.counts() == {("pending", "plain"): 1}
    hu.close()
