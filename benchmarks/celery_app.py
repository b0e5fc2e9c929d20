"""The Celery app of :mod:`benchmarks.flow`'s comparison: ``celery -A benchmarks.celery_app
worker`` in each worker process, its broker, rate limit and run log from the environment
(``BENCH_CELERY_BROKER``, ``BENCH_CELERY_RATE``, ``BENCH_CELERY_LOG``).  Only Celery's worker
processes and the enqueueing client import it (a measurement process never does)."""

from __future__ import annotations

import os

from celery import Celery

from . import tasks

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER"])
app.conf.worker_prefetch_multiplier = 4
# Rate-limited tasks wait on the worker's timer, which looks once a second by default: at
# 0.1 s a worker can reach its rate_limit (each worker counts its own)
app.conf.worker_timer_precision = 0.1
app.conf.broker_connection_retry_on_startup = True
tasks.log_to(os.environ.get("BENCH_CELERY_LOG"))


@app.task(name="bench.run", rate_limit=os.environ.get("BENCH_CELERY_RATE"), ignore_result=True)
def run(i: int, due: float) -> None:
    tasks.run(i, due)
