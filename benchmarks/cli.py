"""Benchmarks of timewheel side by side with Huey, APScheduler and raw sqlite3: one fresh
process per measurement, repetitions interleaved across systems, raw results as JSON in
benchmarks/results/, RESULTS.md and plots regenerated after a complete full run.

This module is the parent process's entry point: it reads the command line, takes the plan
from :mod:`benchmarks.suite`, runs the repetitions interleaved through a
:class:`benchmarks.harness.Runner`, writes the JSON and hands it to :mod:`benchmarks.report`.

``python -m benchmarks [--quick] [--only WORKLOAD ...] [--reps N] [--no-report]``
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import time
from typing import Any, Optional

from . import machine, report, sqlite_peers, suite
from .harness import RESULTS, ROOT, SCRATCH, Measurement, Runner


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (< 3 minutes)")
    ap.add_argument("--only", action="append", choices=suite.WORKLOAD_ORDER, metavar="WORKLOAD",
                    help=f"run only this workload (repeatable): {', '.join(suite.WORKLOAD_ORDER)}")
    ap.add_argument("--reps", type=int, help="override the number of repetitions of every case")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md and plots")
    ap.add_argument("--keep-scratch", action="store_true",
                    help="keep stores and logs under benchmarks/scratch")
    args = ap.parse_args(argv)

    mode = "quick" if args.quick else "full"
    cases_by_workload = suite.plan(mode)
    selected = args.only or list(suite.WORKLOAD_ORDER)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{mode}" + ("-only-" + "-".join(selected) if args.only else "")
    run_dir = os.path.join(SCRATCH, run_id)
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    out_path = os.path.join(RESULTS, f"{run_id}.json")
    doc: dict[str, Any] = {"run_id": run_id, "mode": mode, "partial": bool(args.only),
                           "machine": machine.facts(), "params": sqlite_peers.SIZES[mode].__dict__,
                           "measurements": [], "builds": []}
    runner = Runner(run_dir)
    t_start = time.time()
    print(f"benchmarks: {mode} run {run_id} -> {os.path.relpath(out_path, ROOT)}", flush=True)

    def save() -> None:
        doc["builds"] = runner.builds
        doc["elapsed_s"] = time.time() - t_start
        tmp = out_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, out_path)

    try:
        for workload in suite.WORKLOAD_ORDER:
            if workload not in selected:
                continue
            cases = cases_by_workload[workload]
            if args.reps:
                for c in cases:
                    c.reps = args.reps
            print(f"== {workload}", flush=True)
            for rep in range(max(c.reps for c in cases)):       # interleaved: ABCABC...
                for case in cases:
                    if rep >= case.reps:
                        continue
                    # What earlier measurements wrote (stores of a million tasks, say) is
                    # written back now, not during this one: a disk busy with it stalled
                    # fsyncs (and the commits waiting on them) for up to 0.8 s.
                    t0 = time.time()
                    os.sync()
                    sync_s = time.time() - t0
                    load = machine.loadavg()
                    rev = machine.timewheel_rev()
                    t0 = time.time()
                    res = suite.measure(runner, case)
                    doc["measurements"].append(Measurement(
                        workload=workload, system=case.system, case=case.key(), params=case.params, rep=rep,
                        loadavg_before=load, rev=rev, sync_before_s=sync_s, seconds=time.time() - t0,
                        result=res))
                    print(f"  [{rep + 1}/{case.reps}] {case.key():32s} {suite.brief(workload, res)}",
                          flush=True)
                    save()
    finally:
        save()
        if not args.keep_scratch:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"done in {time.time() - t_start:.0f} s; raw results in {os.path.relpath(out_path, ROOT)}")
    print()
    print(report.summary_text(doc))
    if mode == "full" and not args.only and not args.no_report:
        report.write_all(out_path)
        print("RESULTS.md and plots regenerated")
    elif mode == "full" and not args.no_report:
        for workload in selected:
            if workload in report.PARTIAL:
                report.write_section(out_path, workload)
                print(f"the {workload} section of RESULTS.md and its plots regenerated")
    return 0
