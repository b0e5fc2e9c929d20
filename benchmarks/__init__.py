"""Benchmarks: timewheel side by side with Huey, APScheduler and raw sqlite3.

Run ``python -m benchmarks --quick`` (under 3 minutes) or ``python -m benchmarks`` (the full
run, about an hour on 2 cores), ``--only WORKLOAD`` for one workload.  Every measurement
runs in a fresh Python process; repetitions are interleaved (ABCABC...) so that noise from other
work on the machine spreads over all systems alike.  Raw results go to ``benchmarks/results/``
(JSON, git-ignored); ``python -m benchmarks.report`` turns the last full run into
``benchmarks/RESULTS.md`` and the plots in ``benchmarks/plots/``.

Modules:

* :mod:`benchmarks.cli` -- the parent: plans, interleaves, spawns, writes JSON.
* :mod:`benchmarks.child` -- the entry point of one measurement process.
* :mod:`benchmarks.systems` -- one adapter per system (enqueue, batch, start a consumer).
* :mod:`benchmarks.workloads` -- what a measurement process does, per workload.
* :mod:`benchmarks.tasks` -- the task function every system runs, and where it records runs.
* :mod:`benchmarks.report` -- statistics, target checks, RESULTS.md and plots.
* :mod:`benchmarks.bigstore` -- the big-store workloads (``commands``, ``web``, ``downtime``);
  :mod:`benchmarks.bigstore_report` their tables and targets.  ``python -m
  benchmarks.cli_latency`` and ``python -m benchmarks.web_latency`` run the first two alone.
* :mod:`benchmarks.profiling` -- cProfile of timewheel's hot paths, for the targets it misses.
* :mod:`benchmarks.scale` -- the ``scale`` workload (1, 2, 4 processes on one file): its
  children, its orchestration and its part of the report.
* :mod:`benchmarks.redis_peers` -- the ``redis`` workload: timewheel's Redis store beside RQ,
  RedisHuey and arq on one redis-server; :mod:`benchmarks.redis_report` -- its tables and targets.
"""
