"""The processes of tests/test_otel.py, each with OpenTelemetry's SDK and an in-memory exporter::

    python tests/otel_procs.py enqueue STORE     # delay() tasks inside a span; print the span
    python tests/otel_procs.py work STORE N      # run tasks until N runs ended; print the spans

Both register ``otel.flaky(n)``, which fails its first attempt (``retries=1``), opens a span of
its own and enqueues ``otel.child(n)`` (the trace goes on from the run into that task).
``enqueue`` enqueues ``flaky(1)`` and ``flaky(2)`` inside one ``request`` span, and
``plain(3)`` outside any span.  What each prints is JSON: its finished spans.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from timewheel import TimeWheel, current_task

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tests.otel")


def make_wheel(store: str) -> TimeWheel:
    hu = TimeWheel(store, workers=2, tick=0.1)

    @hu.task(name="otel.flaky", retries=1, retry_delay=0.05)
    def flaky(n: int) -> int:
        ctx = current_task()
        assert ctx is not None
        if ctx.attempt == 1:
            raise RuntimeError(f"attempt 1 of {n} fails")
        with tracer.start_as_current_span("inside"):
            child.delay(n)
        return n

    @hu.task(name="otel.child")
    def child(n: int) -> int:
        return n

    @hu.task(name="otel.plain")
    def plain(n: int) -> int:
        return n

    return hu


def shown(span) -> dict:
    ctx = span.get_span_context()
    return {"name": span.name, "trace": f"{ctx.trace_id:032x}", "id": f"{ctx.span_id:016x}",
            "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
            "parent_remote": None if span.parent is None else span.parent.is_remote,
            "kind": span.kind.name, "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}),
            "events": [event.name for event in span.events]}


def main(mode: str, store: str, runs: int = 0) -> None:
    hu = make_wheel(store)
    if mode == "enqueue":
        flaky, plain = hu.tasks["otel.flaky"], hu.tasks["otel.plain"]
        with tracer.start_as_current_span("request"):
            flaky.delay(1)
            flaky.options(task_id="two").delay(2)
        plain.delay(3)
        hu.close()
    else:
        ended = threading.Semaphore(0)
        for event in ("succeeded", "failed", "retrying"):
            hu.on(event, lambda rec, exc: ended.release())
        hu.start()
        deadline = time.monotonic() + 30
        for _ in range(runs):
            assert ended.acquire(timeout=max(0.0, deadline - time.monotonic())), "runs did not end"
        hu.stop(wait=True, timeout=10)
    provider.force_flush()
    print(json.dumps([shown(s) for s in exporter.get_finished_spans()]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
