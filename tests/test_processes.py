"""The processes registry (issue 26): every started process reports itself (host, pid, start,
queues, workers, busy, claimed-but-queued, heartbeat); ``timewheel processes`` and the web
view's Processes page list live ones and those stopped or dead in the last hour."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace

import httpx
import pytest

from timewheel import processes
from timewheel.processes import ProcessReport, decode_report, encode_report
from timewheel.query import processes_data
from timewheel.records import RUNNING
from timewheel.store import open_store
from timewheel.testing import processes as procs
from timewheel.testing.web import serve

from . import handback_worker
from .conftest import wait_for
from .test_handback import worker

T0 = 1_800_000_000.0
#: the lease on a server store: a killed process is dead once it runs out (short, for the test;
#: long enough that a loaded machine's stalls do not lose the live processes' claims)
LEASE = 3.0
REPORT = ProcessReport(host="h", pid=7, started=T0, queues=("a", "b"), workers=4, busy=2, queued=3,
                       heartbeat=T0 + 5)


def test_a_report_round_trips_and_anything_else_is_not_one() -> None:
    assert decode_report(encode_report(REPORT)) == REPORT
    assert decode_report(encode_report(REPORT).encode()) == REPORT
    every = replace(REPORT, queues=None, stopped=T0 + 9)
    assert decode_report(encode_report(every)) == every
    good = json.loads(encode_report(REPORT))
    for bad in ["", "[]", "{", "x" * 5000, b"\xff", 3, None, json.dumps({**good, "pid": -1}),
                json.dumps({**good, "pid": True}), json.dumps({**good, "extra": 1}),
                json.dumps({k: v for k, v in good.items() if k != "busy"}),
                json.dumps({**good, "queues": [1]}), json.dumps({**good, "heartbeat": 1e300}),
                json.dumps({**good, "host": "h" * 300})]:
        assert decode_report(bad) is None, bad


def test_state_order_and_what_is_forgotten() -> None:
    reports = {"live": encode_report(REPORT), "gone": encode_report(replace(REPORT, started=T0 + 1)),
               "stopped": encode_report(replace(REPORT, stopped=T0 + 5, started=T0 - 1)), "junk": "not json"}
    dead = {"gone"}.__contains__
    assert [(t, s) for t, _, s in processes.listed(reports, dead)] == [
        ("live", "alive"), ("gone", "dead"), ("stopped", "stopped")]
    assert processes.gone_long_ago(reports, T0 + 100, dead) == ["junk"]
    later = T0 + 5 + processes.KEEP_GONE + 1
    assert sorted(processes.gone_long_ago(reports, later, dead)) == ["gone", "junk", "stopped"]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def location(request, db_path) -> str:
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db") + f"?lease={LEASE:g}"


def test_three_live_processes_and_one_killed_are_listed(tmp_path, location) -> None:
    out = str(tmp_path)
    enqueuer, work = handback_worker.make_wheel(location, out)
    with enqueuer.batch():
        handles = [work.delay(i, 6.0) for i in range(10)]
    started = time.time()
    a = worker(location, out, 4, 6)                         # claims all 10: 4 busy, 6 queued
    others: list = []
    store = open_store(location)
    try:
        wait_for(lambda: len(list(store.scan(RUNNING))) == 10, timeout=30, what="10 claimed")
        others += [worker(location, out, 3, 0) for _ in range(3)]     # idle: nothing left to claim

        def listing() -> dict:
            return {p["pid"]: p for p in processes_data(store, store.now())["processes"]}

        pids = {p.pid for p in [a, *others]}
        wait_for(lambda: {pid for pid, p in listing().items() if p["state"] == "alive"} == pids, timeout=30,
                 what="four live processes")
        wait_for(lambda: (listing()[a.pid]["busy"], listing()[a.pid]["queued"]) == (4, 6), timeout=20,
                 what="a: 4 busy, 6 queued")
        row = listing()[a.pid]
        assert (row["workers"], row["queues"], row["host"]) == (4, None, os.uname().nodename)
        assert started - 1 < row["started"] < time.time()
        assert row["heartbeat_age"] < 3 * processes.REPORT_EVERY
        victim = others[2]
        victim.kill()
        victim.wait(10)
        killed = time.time()
        wait_for(lambda: listing()[victim.pid]["state"] == "dead", timeout=15, what="the killed one dead")
        # at once on a file store (its lock is gone); within the lease on a server
        assert time.time() - killed < (1.0 if location == str(tmp_path / "tasks.db") else LEASE + 2.5)
        shown = json.loads(procs.run([sys.executable, "-m", "timewheel.cli", "processes", location, "--json"],
                                     capture_output=True, text=True, timeout=60).stdout)
        assert sorted((p["pid"], p["state"]) for p in shown["processes"]) == sorted(
            [(p.pid, "alive") for p in [a, *others[:2]]] + [(victim.pid, "dead")])
        text = procs.run([sys.executable, "-m", "timewheel.cli", "processes", location], capture_output=True,
                         text=True, timeout=60).stdout
        assert text.count("alive") == 3 and text.count("dead") == 1, text
        a.send_signal(signal.SIGTERM)                 # its queued tasks go to the other two
        assert a.wait(30) == 0
        assert [h.result(timeout=60) for h in handles] == list(range(10))
        for p in others[:2]:
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
        assert sorted(p["state"] for p in listing().values()) == ["dead", "stopped", "stopped", "stopped"]
    finally:
        for p in [a, *others]:
            p.kill()
            p.wait(10)
        store.close()
        enqueuer.close()


def test_the_processes_page_lists_them(tmp_path, db_path) -> None:
    hu, _ = handback_worker.make_wheel(db_path, str(tmp_path))     # the store, as the workers make it
    a = worker(db_path, str(tmp_path), 3, 0)
    try:
        wait_for(lambda: any(p["pid"] == a.pid for p in processes_data(hu.store, hu.now())["processes"]),
                 timeout=30, what="the worker's report")
        hu.close()
        with serve(db_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            page = client.get("/processes").text
            assert page.count('data-state="alive"') == 1 and f">{a.pid}<" in page
            assert [p["workers"] for p in client.get("/api/processes").json()["processes"]] == [3]
    finally:
        a.kill()
        a.wait(10)
