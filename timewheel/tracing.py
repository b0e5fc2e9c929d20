"""OpenTelemetry (issue 24): the trace a task was enqueued in continues into its runs.

In an application that uses OpenTelemetry (``pip install 'timewheel[otel]'``: only
``opentelemetry-api`` is needed here; the application configures its SDK and exporter as for
any instrumentation), ``delay()`` stores the current trace context with the task (the global
propagator's fields: W3C ``traceparent``, ``tracestate``, baggage), and each run is a span --
a child of the span the task was enqueued in, in another process or on another host as well.
A retry is another span under the same parent: one trace holds every attempt.

The run's span is ``run <task name>`` (kind CONSUMER), current while the function runs (its
own spans, and tasks it enqueues, continue the trace), with the task's id, attempt, queue and
lateness (seconds past its eta when it started) as attributes, and the exception and an
error status when the run fails.

timewheel never imports opentelemetry itself.  Until the application has imported its API
there can be no current span to continue and no SDK to record a span, so enqueueing and
running skip all of this at the cost of one ``sys.modules`` lookup each.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from .records import TaskRecord

__all__ = ["API", "RUN_SPAN_ATTRIBUTES", "carried", "run_in_span"]

#: the module whose presence in sys.modules says the application uses OpenTelemetry
API = "opentelemetry.trace"
#: the span attributes of a run (besides the messaging conventions' own)
RUN_SPAN_ATTRIBUTES = ("timewheel.task.name", "timewheel.task.id", "timewheel.task.attempt",
                       "timewheel.task.queue", "timewheel.task.lateness")


def carried() -> Optional[dict[str, str]]:
    """The current trace context as the propagator's fields, to store with a task: None
    outside a valid span (nothing to continue) or without OpenTelemetry imported."""
    if API not in sys.modules:
        return None
    from opentelemetry import propagate, trace
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    fields: dict[str, str] = {}
    propagate.inject(fields)
    return fields or None


def run_in_span(rec: TaskRecord, fields: Optional[dict[str, str]], started: float,
                call: Callable[[], Any]) -> Any:
    """``call()`` (the run of ``rec``) inside its span, the child of the enqueuing span whose
    ``fields`` were stored with the task (a new trace without them).  What ``call`` raises is
    recorded on the span and raised again."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    from . import __version__
    parent = propagate.extract(fields) if fields else None
    tracer = trace.get_tracer("timewheel", __version__)
    attributes: dict[str, Any] = {
        "messaging.system": "timewheel", "messaging.operation.type": "process",
        "messaging.destination.name": rec.queue, "messaging.message.id": rec.id,
        "timewheel.task.name": rec.name, "timewheel.task.id": rec.id,
        "timewheel.task.attempt": rec.attempts, "timewheel.task.queue": rec.queue,
        "timewheel.task.lateness": max(0.0, started - rec.eta)}
    with tracer.start_as_current_span(f"run {rec.name}", context=parent, kind=SpanKind.CONSUMER,
                                      attributes=attributes):
        return call()
