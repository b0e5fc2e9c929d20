"""Time and memory of the operator's commands on a big store, each a fresh process.

    python -m benchmarks.cli_latency                      # 1,000,000 pending tasks, 5 runs each
    python -m benchmarks.cli_latency --n 100000 --repeat 9 --json
    python -m benchmarks.cli_latency --store /scratch/m1.db   # reuse (or keep) a built store

Builds the store as :mod:`benchmarks.web_latency` does (``hu.batch()`` in chunks of 50,000,
due over a week, plus tasks in every state), then runs each command ``repeat`` times through
the installed ``timewheel`` console script and reports the median wall time, the median CPU
time and the largest peak RSS of the command's own process (measured from outside it).
Targets (issue 11): inspect, inspect --json, stats <= 300 ms; timeline <= 500 ms;
tasks --limit 20 <= 100 ms; every one <= 100 MB.  Python's start-up and imports are most of
each figure: ``python -c pass`` and ``import click`` are timed alongside, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"inspect": (["inspect"], 300), "inspect --json": (["inspect", "--json"], 300),
            "stats": (["stats"], 300), "timeline": (["timeline"], 500),
            "tasks --limit 20": (["tasks", "--limit", "20"], 100)}
TARGET_MB = 100


def measure(store: str, repeat: int = 5) -> dict[str, dict[str, Any]]:
    """{command: {"median_ms", "cpu_ms", "peak_mb", "target_ms"}} of each command on ``store``."""
    sys.path.insert(0, ROOT)
    from tests.cli_fixtures import console_script, measured

    runs: dict[str, list[str]] = {label: [console_script(), args[0], store, *args[1:]]
                                  for label, (args, _) in COMMANDS.items()}
    runs["python -c pass"] = [sys.executable, "-c", "pass"]
    runs["python -c 'import click'"] = [sys.executable, "-c", "import click"]
    out: dict[str, dict[str, Any]] = {}
    for label, args in runs.items():
        walls, cpus, peaks = [], [], []
        for _ in range(repeat):
            code, _, err, took, peak, cpu = measured(args, timeout=120)
            if code != 0:
                raise SystemExit(f"{label} failed: {err.strip()}")
            walls.append(took)
            cpus.append(cpu)
            peaks.append(peak)
        out[label] = {"median_ms": round(statistics.median(walls) * 1000),
                      "cpu_ms": round(statistics.median(cpus) * 1000), "peak_mb": round(max(peaks), 1),
                      "target_ms": COMMANDS[label][1] if label in COMMANDS else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pending tasks in the store")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    parser.add_argument("--store", help="use (or build and keep) the store at this path")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    from benchmarks.web_latency import build

    scratch = None
    path = args.store
    if path is None:
        scratch = tempfile.mkdtemp(prefix="cli-latency-")
        path = os.path.join(scratch, "tasks.db")
    try:
        if not os.path.exists(path):
            print(f"building {args.n:,} tasks in {path} ...", file=sys.stderr)
            print(f"  built in {build(path, args.n):.0f}s", file=sys.stderr)
        with open("/proc/loadavg") as fh:
            load = fh.read().split()[0]
        results = measure(path, args.repeat)
        if args.json:
            print(json.dumps({"n": args.n, "loadavg": load, "results": results}, indent=2))
            return
        print(f"{args.n:,} pending tasks; {args.repeat} runs each; load average {load}")
        for label, r in results.items():
            verdict = "" if r["target_ms"] is None else (
                "ok" if r["median_ms"] <= r["target_ms"] and r["peak_mb"] <= TARGET_MB else "MISSED")
            target = "" if r["target_ms"] is None else f"(target {r['target_ms']} ms, {TARGET_MB} MB)"
            print(f"  {label:26s} {r['median_ms']:5d} ms  cpu {r['cpu_ms']:4d} ms  {r['peak_mb']:5.1f} MB  "
                  f"{target} {verdict}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
