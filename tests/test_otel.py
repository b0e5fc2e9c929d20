"""OpenTelemetry (timewheel/tracing.py): the enqueuing span's trace continues into each run,
across processes, on every backend (the SDK's in-memory exporter in each process); without
OpenTelemetry nothing of it is imported."""

from __future__ import annotations

import json
import os
import pickle
import sys

import pytest

from timewheel.decode import show_call
from timewheel.records import call_of
from timewheel.testing import processes as procs

from .conftest import ROOT

SCRIPT = os.path.join(ROOT, "tests", "otel_procs.py")


def spans(*args: str) -> list[dict]:
    out = procs.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60,
                    env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(params=["file", "redis", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_db")
    if request.param == "postgres":
        return request.getfixturevalue("pg_db") + "?schema=otel"
    return str(tmp_path / "tasks.db")


def test_each_run_is_a_span_in_the_trace_that_enqueued_it(store_url) -> None:
    (request,) = spans("enqueue", store_url)
    assert request["name"] == "request"
    # 2 flaky tasks x 2 attempts, the child each second attempt enqueues, and plain
    worker = spans("work", store_url, "7")
    runs = [s for s in worker if s["name"].startswith("run ")]
    flaky = [s for s in runs if s["name"] == "run otel.flaky"]
    assert len(flaky) == 4 and len(runs) == 7
    for s in flaky:     # children of the request span, in the other process: each attempt too
        assert (s["trace"], s["parent"], s["parent_remote"]) == (request["trace"], request["id"], True)
        assert s["kind"] == "CONSUMER"
        a = s["attributes"]
        assert a["timewheel.task.name"] == "otel.flaky" and a["timewheel.task.queue"] == "default"
        assert a["messaging.system"] == "timewheel" and a["messaging.message.id"] == a["timewheel.task.id"]
        assert a["timewheel.task.lateness"] >= 0
    by_task: dict[str, list[dict]] = {}
    for s in flaky:
        by_task.setdefault(s["attributes"]["timewheel.task.id"], []).append(s)
    assert "two" in by_task and len(by_task) == 2
    for attempts in by_task.values():       # the retry: a new span in the same trace
        first, second = sorted(attempts, key=lambda s: s["attributes"]["timewheel.task.attempt"])
        assert [s["attributes"]["timewheel.task.attempt"] for s in (first, second)] == [1, 2]
        assert first["status"] == "ERROR" and "exception" in first["events"]
        assert second["status"] != "ERROR" and first["id"] != second["id"]
    # the run's span is current in the task: its own span, and the task it enqueues, go on
    by_id = {s["id"]: s for s in worker}
    children = [s for s in runs if s["name"] == "run otel.child"]
    assert len(children) == 2
    for s in children:
        inside = by_id[s["parent"]]
        assert inside["name"] == "inside" and by_id[inside["parent"]]["name"] == "run otel.flaky"
        assert s["trace"] == request["trace"]
    # enqueued outside any span: a trace of its own
    (plain,) = [s for s in runs if s["name"] == "run otel.plain"]
    assert plain["parent"] is None and plain["trace"] != request["trace"]


WITHOUT_OTEL = r'''
import asyncio, json, sys

class NoOpenTelemetry:
    """As if opentelemetry were not installed; and every attempt to import it is noted."""
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            self.tried.append(name)
            raise ImportError(f"no module named {name!r}")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
from timewheel import TimeWheel
hu = TimeWheel(sys.argv[1], workers=2, tick=0.1)

@hu.task()
def add(a, b):
    return a + b

@hu.task()
async def later(x):
    await asyncio.sleep(0)
    return x

with hu:
    results = [add.delay(1, 2).result(timeout=20), later.delay("x").result(timeout=20),
               add.options(count_down=0.1).delay(3, 4).result(timeout=20)]
print(json.dumps({"results": results, "tried": NoOpenTelemetry.tried,
                  "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
'''


def test_without_opentelemetry_nothing_of_it_is_imported(tmp_path) -> None:
    out = procs.run([sys.executable, "-c", WITHOUT_OTEL, str(tmp_path / "tasks.db")], capture_output=True,
                    text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    assert seen == {"results": [3, "x", 7], "tried": [], "imported": []}


def test_a_payload_with_a_trace_context_reads_as_its_call() -> None:
    plain = pickle.dumps(((1, "a"), {"k": 2}))
    traced = pickle.dumps(((1, "a"), {"k": 2}, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}))
    assert call_of(plain) == ((1, "a"), {"k": 2}, None)
    assert call_of(traced)[:2] == ((1, "a"), {"k": 2}) and call_of(traced)[2]["traceparent"].startswith("00-")
    # the web view and the CLI show its arguments as those of any task
    assert [s.text for s in show_call(traced)] == [s.text for s in show_call(plain)]
    assert all(s.text is not None for s in show_call(traced))
