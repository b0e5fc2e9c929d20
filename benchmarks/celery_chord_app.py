"""The Celery app of :mod:`benchmarks.batches`' comparison: a chord of no-op tasks whose
callback notes when it ran.  Broker and result backend from ``BENCH_CELERY_BROKER`` (a Redis
URL: Celery's Redis backend counts a chord's finished members itself), the callback's log from
``BENCH_CELERY_LOG``.  Only Celery's worker and the enqueueing client import it."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench_chord", broker=os.environ["BENCH_CELERY_BROKER"],
             backend=os.environ["BENCH_CELERY_BROKER"])
app.conf.worker_prefetch_multiplier = 16
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.member")
def member(i: int) -> int:
    return i


@app.task(name="bench.summary")
def summary(results: list) -> None:
    with open(os.environ["BENCH_CELERY_LOG"], "a") as fh:
        fh.write(f"{time.time():.6f} {len(results)}\n")
