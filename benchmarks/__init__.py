"""Benchmarks: timewheel side by side with Huey, APScheduler and raw sqlite3.

Run ``python -m benchmarks --quick`` (under 3 minutes) or ``python -m benchmarks`` (the full
run, about an hour on 2 cores), ``--only WORKLOAD`` for one workload.  Every measurement
runs in a fresh Python process; repetitions are interleaved (ABCABC...) so that noise from other
work on the machine spreads over all systems alike.  Raw results go to ``benchmarks/results/``
(JSON, git-ignored); ``python -m benchmarks.report`` turns the last full run into
``benchmarks/RESULTS.md`` and the plots in ``benchmarks/plots/``.

Modules, each importing only those above it (``tests/test_layout.py`` checks that there is
no cycle):

* shared, workload-free: :mod:`benchmarks.harness` (``Case``, ``Measurement``, ``Runner``:
  planned measurements, the records of a run, running measurement processes),
  :mod:`benchmarks.stats` (percentiles, quantiles, medians and ranges, ratios, verdicts,
  markdown tables), :mod:`benchmarks.machine` (``/proc``: memory, CPU, process trees; versions
  and commit), :mod:`benchmarks.tasks` (the task every system runs, and its run log),
  :mod:`benchmarks.charts` (plots shared by the reports), :mod:`benchmarks.systems` (one
  adapter per file-store system);
* the workloads, each with its parent's side, its measurement processes' side, and its
  tables, targets and plots: :mod:`benchmarks.sqlite_peers` + :mod:`benchmarks.workloads`
  (enqueue, batch, pending, startup, lateness, burst, kill, multiproc; their report is in
  :mod:`benchmarks.report`), :mod:`benchmarks.scale` (1, 2, 4 processes on one file: all
  three sides in one module), :mod:`benchmarks.bigstore` + :mod:`benchmarks.bigstore_report`
  (commands, web, downtime on a big store), :mod:`benchmarks.redis_peers` +
  :mod:`benchmarks.redis_report` (timewheel's Redis store beside RQ, RedisHuey and arq);
* the wiring: :mod:`benchmarks.suite` (which module plans, measures and summarises each
  workload), :mod:`benchmarks.report` (RESULTS.md and plots from a run's JSON);
* the entry points: :mod:`benchmarks.cli` (``python -m benchmarks``), :mod:`benchmarks.child`
  (one measurement process), :mod:`benchmarks.profiling` (cProfile of timewheel's hot paths),
  :mod:`benchmarks.cli_latency` and :mod:`benchmarks.web_latency` (the commands and the web
  view on a store of your choice).

What tests and benchmarks both need (a real ``redis-server``, a store with tasks in every
state, a live ``timewheel web``, a command's measured cost) is :mod:`timewheel.testing`.
"""
