"""Time and memory of the operator's commands on a big store, each a fresh process.

    python -m benchmarks.cli_latency                      # 1,000,000 pending tasks, 5 runs each
    python -m benchmarks.cli_latency --n 100000 --repeat 9 --json
    python -m benchmarks.cli_latency --store /scratch/m1.db   # reuse (or keep) a built store

Builds the store as the web view's benchmark does (:func:`benchmarks.bigstore.build`:
``hu.batch()`` in chunks of 50,000, due over a week, plus tasks in every state), then runs
each command ``repeat`` times (interleaved) through the installed ``timewheel`` console script
and reports the median wall time, the median CPU time and the largest peak RSS of the
command's own process (measured from outside it; MB = 10^6 bytes).  Targets (issue 11):
inspect, inspect --json, stats <= 300 ms; timeline <= 500 ms; tasks --limit 20 <= 100 ms;
every one <= 100 MB.  Python's start-up and imports are most of each figure: ``python -c
pass`` and ``import click`` are timed alongside, for scale.  ``python -m benchmarks --only
commands`` measures the same inside the benchmark harness (RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .bigstore import COMMAND_MB as TARGET_MB
from .bigstore import measure_commands, store_for
from .machine import loadavg


def measure(store: str, repeat: int = 5) -> dict[str, dict[str, Any]]:
    """{command: {"median_ms", "cpu_ms", "peak_mb", "target_ms"}} of each command on ``store``."""
    return measure_commands(store, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pending tasks in the store")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    parser.add_argument("--store", help="use (or build and keep) the store at this path")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with store_for(args.store, args.n, "cli-latency-") as path:
        load = loadavg()
        results = measure(path, args.repeat)
    if args.json:
        print(json.dumps({"n": args.n, "loadavg": load, "results": results}, indent=2))
        return
    print(f"{args.n:,} pending tasks; {args.repeat} runs each; load average {load:.2f}")
    for label, r in results.items():
        verdict = "" if r["target_ms"] is None else (
            "ok" if r["median_ms"] <= r["target_ms"] and r["peak_mb"] <= TARGET_MB else "MISSED")
        target = "" if r["target_ms"] is None else f"(target {r['target_ms']} ms, {TARGET_MB:.0f} MB)"
        print(f"  {label:26s} {r['median_ms']:5d} ms  cpu {r['cpu_ms']:4d} ms  {r['peak_mb']:5.1f} MB  "
              f"{target} {verdict}")


if __name__ == "__main__":
    main()
