"""timewheel's file store beside Huey, APScheduler and raw sqlite3: the parent's side of the
eight workloads ``enqueue``, ``batch``, ``pending``, ``startup``, ``lateness``, ``burst``,
``kill`` and ``multiproc`` -- their sizes per mode, their cases, how each is measured (the
measurement processes' side is :mod:`benchmarks.workloads`) and its line in the progress output.
Their tables, targets and plots are in :mod:`benchmarks.report`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .harness import Case, Runner, stop_processes
from .systems import RUNNERS
from .tasks import read_log

WORKLOADS = ("enqueue", "batch", "pending", "startup", "lateness", "burst", "kill", "multiproc")


@dataclass
class Sizes:
    """The sizes and repetitions of the eight workloads in one mode (the run's JSON keeps them as
    ``doc["params"]``)."""

    name: str
    enqueue_n: list[int]
    enqueue_reps: dict[int, int]
    slow_peer_reps: dict[int, int]          # reps for huey/apscheduler at that n
    batch_n: list[int]
    pending_levels: list[int]
    pending_n: int
    pending_reps: int
    startup_pending: int
    startup_inline: int
    startup_reps: int
    idle_s: float
    lateness: dict
    lateness_reps: int
    burst_n: int
    burst_reps: int
    burst_aps_reps: int
    kill: dict
    kill_reps: int
    kill_peer_reps: int
    multi_n: int
    multi_reps: int
    extra: dict = field(default_factory=dict)


QUICK = Sizes(
    name="quick", enqueue_n=[2000], enqueue_reps={2000: 1}, slow_peer_reps={2000: 1},
    batch_n=[10_000], pending_levels=[0, 100_000], pending_n=2000, pending_reps=1,
    startup_pending=100_000, startup_inline=500, startup_reps=1, idle_s=3.0,
    lateness={"n": 500, "lead": 1.0, "spread": 3.0, "grace": 10.0}, lateness_reps=1,
    burst_n=1000, burst_reps=1, burst_aps_reps=1,
    kill={"n": 200, "due_lo": 2.0, "due_hi": 3.0, "kill_after": 0.5, "restart_after": 2.0, "linger": 1.0},
    kill_reps=1, kill_peer_reps=1, multi_n=300, multi_reps=1, extra={"multi": {"setup": 2.5, "linger": 1.0}})

FULL = Sizes(
    name="full", enqueue_n=[10_000, 100_000], enqueue_reps={10_000: 5, 100_000: 3},
    slow_peer_reps={10_000: 3, 100_000: 1},
    batch_n=[10_000, 100_000], pending_levels=[0, 10_000, 100_000, 1_000_000], pending_n=10_000,
    pending_reps=3, startup_pending=1_000_000, startup_inline=10_000, startup_reps=3, idle_s=10.0,
    lateness={"n": 2000, "lead": 2.0, "spread": 10.0, "grace": 15.0}, lateness_reps=3,
    burst_n=20_000, burst_reps=3, burst_aps_reps=2,
    kill={"n": 1000, "due_lo": 3.0, "due_hi": 6.0, "kill_after": 1.0, "restart_after": 8.0},
    kill_reps=5, kill_peer_reps=2, multi_n=2000, multi_reps=3)

SIZES = {"quick": QUICK, "full": FULL}


def plan(mode: str) -> dict[str, list[Case]]:
    """The cases of the eight workloads for ``mode`` (``"quick"`` or ``"full"``), by workload."""
    m = SIZES[mode]
    p: dict[str, list[Case]] = {}
    cases = []
    for n in m.enqueue_n:
        for system in ("timewheel", "huey", "huey-normal", "apscheduler", "sqlite3"):
            reps = m.enqueue_reps[n] if system in ("timewheel", "sqlite3") else m.slow_peer_reps[n]
            if system == "huey-normal" or (system == "huey" and n >= 100_000):
                reps = max(reps, m.enqueue_reps[n])      # cheap enough for the full count
            cases.append(Case("enqueue", system, {"n": n}, reps, f"{system}@{n}"))
    p["enqueue"] = cases
    p["batch"] = [Case("batch", system, {"n": n, "batch": True}, m.enqueue_reps.get(n, 3),
                       f"{system}@{n}")
                  for n in m.batch_n for system in ("timewheel", "sqlite3")]
    p["pending"] = [Case("pending", system, {"n": m.pending_n, "pending": level},
                         m.pending_reps, f"{system}@{level}")
                    for level in m.pending_levels for system in ("timewheel", "sqlite3")]
    p["startup"] = ([Case("startup", "timewheel", {"pending": m.startup_pending, "idle_s": m.idle_s},
                          m.startup_reps, f"timewheel@{m.startup_pending}")]
                    + [Case("startup", system, {"inline_pending": m.startup_inline, "idle_s": m.idle_s},
                            max(1, m.startup_reps - 1), f"{system}@{m.startup_inline}")
                       for system in ("timewheel", "huey", "apscheduler-nograce")])
    p["lateness"] = [Case("lateness", s, dict(m.lateness), m.lateness_reps) for s in RUNNERS]
    p["burst"] = [Case("burst", s, {"n": m.burst_n, "batch": s == "timewheel"},
                       m.burst_reps if not s.startswith("apscheduler") else m.burst_aps_reps)
                  for s in RUNNERS]
    p["kill"] = [Case("kill", s, dict(m.kill), m.kill_reps if s == "timewheel" else m.kill_peer_reps)
                 for s in RUNNERS]
    p["multiproc"] = [Case("multiproc", s, dict(m.extra.get("multi", {}), n=m.multi_n, procs=3),
                           m.multi_reps) for s in RUNNERS]
    return p


def measure(runner: Runner, case: Case) -> dict:
    """One measurement of a case of :func:`plan`."""
    w = case.workload
    if w in ("enqueue", "batch"):
        return runner.run(dict(case.params, workload="enqueue", system=case.system), case.key())
    if w in ("pending", "startup"):
        spec = dict(case.params, workload="enqueue" if w == "pending" else "startup",
                    system=case.system)
        if not case.params.get("pending"):
            return runner.run(spec, case.key())
        # measured on a copy of the prebuilt store, so every repetition starts the same
        d, _, _ = runner.paths(case.key() + "-copy")
        spec["store"] = runner.copy_of(runner.base_store(case.system, case.params["pending"]), d)
        try:
            return runner.run(spec, case.key())
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if w in ("lateness", "burst"):
        return runner.run(dict(case.params, workload=w, system=case.system), case.key(), timeout=600)
    if w == "kill":
        return kill_restart(runner, case)
    if w == "multiproc":
        return multiproc(runner, case)
    raise ValueError(w)


def kill_restart(runner: Runner, case: Case) -> dict:
    """Process A schedules the tasks and is SIGKILLed; process B starts on the same file later
    and runs until every task has run (and ``linger`` more): lost, duplicated, early, recovery."""
    p = case.params
    d, spec_a, out_a = runner.paths(case.key() + "-kill")
    store, logf = os.path.join(d, "store.db"), os.path.join(d, "runs.log")
    stopfile = os.path.join(d, "stop")
    base = {"system": case.system, "store": store, "log": logf}
    a = runner.spawn(dict(base, workload="kill_a", n=p["n"], due_lo=p["due_lo"], due_hi=p["due_hi"],
                          out=out_a), d, spec_a, pipe=True)
    line = a.stdout.readline() if a.stdout else ""
    if not line.startswith("SCHEDULED"):
        a.kill()
        a.wait()
        return {"error": "phase A did not schedule", "stdout": line, **runner.read(out_a, d)}
    scheduled_at, t0 = (float(x) for x in line.split()[1:3])
    time.sleep(max(0.0, scheduled_at + p["kill_after"] - time.time()))
    a.send_signal(signal.SIGKILL)
    killed_at = time.time()
    a.wait()
    runs_before = len(read_log(logf))
    time.sleep(p["restart_after"])
    spec_b = os.path.join(d, "spec-b.json")
    b = runner.spawn(dict(base, workload="kill_b", stopfile=stopfile, out=os.path.join(d, "out-b.json")),
                     d, spec_b, pipe=True)
    restart_at = time.time()
    deadline = restart_at + p.get("max_wait", 30.0)
    complete_at = None
    while time.time() < deadline:
        runs = read_log(logf)
        if len({r[0] for r in runs}) >= p["n"]:
            complete_at = complete_at or time.time()
            if time.time() - complete_at >= p.get("linger", 2.0):   # duplicates would show now
                break
        time.sleep(0.05)
    open(stopfile, "w").close()
    try:
        b.wait(15)
    except subprocess.TimeoutExpired:
        b.kill()
        b.wait()
    runs = read_log(logf)
    ids = [r[0] for r in runs]
    unique = set(ids)
    last = max((r[3] for r in runs), default=None)
    res = {
        "n": p["n"], "runs": len(ids), "unique": len(unique),
        "missing": p["n"] - len(unique & set(range(p["n"]))),
        "duplicates": len(ids) - len(unique), "runs_before_kill": runs_before,
        "early": sum(1 for r in runs if r[3] < r[2]),
        "schedule_s": scheduled_at - t0, "killed_after_s": killed_at - scheduled_at,
        "recovery_s": (last - restart_at) if last is not None and last > restart_at else None,
        "all_ran": len(unique) >= p["n"] and len(ids) == len(unique),
    }
    shutil.rmtree(d, ignore_errors=True)
    return res


def multiproc(runner: Runner, case: Case) -> dict:
    """``procs`` processes on one file, each enqueuing its share at one instant and running
    tasks: exactly once, throughput, lateness, enqueue rate."""
    p = case.params
    d, _, _ = runner.paths(case.key() + "-multi")
    store, logf = os.path.join(d, "store.db"), os.path.join(d, "runs.log")
    stopfile = os.path.join(d, "stop")
    procs, outs = [], []
    start_at = time.time() + p.get("setup", 4.0)     # every process has opened its store by then
    for k in range(p["procs"]):
        out = os.path.join(d, f"out-{k}.json")
        outs.append(out)
        spec = {"workload": "multi", "system": case.system, "store": store, "log": logf, "n": p["n"],
                "index": k, "start_at": start_at, "stopfile": stopfile, "out": out}
        procs.append(runner.spawn(spec, d, os.path.join(d, f"spec-{k}.json"), pipe=True))
    total = p["n"] * p["procs"]
    deadline = start_at + p.get("max_wait", 45.0)
    complete_at = None
    last_count, last_change = 0, time.time()
    while time.time() < deadline:
        runs = read_log(logf)
        if len(runs) != last_count:
            last_count, last_change = len(runs), time.time()
        if len({r[0] for r in runs}) >= total:
            complete_at = complete_at or time.time()
            if time.time() - complete_at >= p.get("linger", 2.0):
                break
        elif time.time() > start_at + 10 and time.time() - last_change > 8.0:
            break                                      # no progress for 8 s: give up
        time.sleep(0.05)
    stop_processes(procs, stopfile)
    children = [runner.read(o, d) for o in outs]
    runs = read_log(logf)
    ids = [r[0] for r in runs]
    unique = set(ids)
    per_id: dict[int, int] = {}
    for i in ids:
        per_id[i] = per_id.get(i, 0) + 1
    hist: dict[str, int] = {}
    for c in per_id.values():
        hist[str(c)] = hist.get(str(c), 0) + 1
    ends = [c.get("enqueue_end") for c in children if c.get("enqueue_end")]
    last = max((r[3] for r in runs), default=None)
    lat = sorted(r[3] - r[2] for r in runs)

    def pct(q: float) -> Optional[float]:
        # rank floor(q * n), as every run so far was reported (stats.pct is nearest-rank)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else None
    res = {
        "n": total, "procs": p["procs"], "runs": len(ids), "unique": len(unique),
        "missing": total - len(unique), "duplicates": len(ids) - len(unique),
        "runs_per_task_histogram": hist,
        "early": sum(1 for r in runs if r[3] < r[2]),
        "enqueue_rate": total / (max(ends) - start_at) if len(ends) == p["procs"] else None,
        "enqueue_errors": sum(c.get("enqueue_errors", 0) for c in children),
        "throughput": len(unique) / (last - start_at) if last else None,
        "last_run_after_s": (last - start_at) if last else None,
        "running_pids": len({r[1] for r in runs}),
        "lateness_p50_ms": pct(0.50), "lateness_p99_ms": pct(0.99), "lateness_max_ms": pct(1.0),
        "child_errors": [c["error"] for c in children if "error" in c],
    }
    shutil.rmtree(d, ignore_errors=True)
    return res


#: workload -> one line of the harness's progress output from a result
BRIEF: dict[str, Callable[[dict], str]] = {
    "enqueue": lambda r: f"{r['rate']:,.0f}/s",
    "batch": lambda r: f"{r['rate']:,.0f}/s",
    "pending": lambda r: f"{r['rate']:,.0f}/s",
    "startup": lambda r: (f"tick {r.get('first_tick_s', float('nan')) * 1e3:.0f} ms, first task "
                          f"{r.get('first_task_s', float('nan')) * 1e3:.0f} ms, rss "
                          f"{r['rss_kib'] / 1024:.0f} MiB, idle {r['idle_cpu_per_10s']:.3f} cpu-s/10s"),
    "lateness": lambda r: (f"ran {r['ran']}/{r['n']} early {r['early']} p50 {r['p50_ms']:.1f} ms "
                           f"p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.1f} ms"),
    "burst": lambda r: (f"ran {r['ran']}/{r['n']} last {r['last_s']} s "
                        f"(margin {r['margin_s']:.1f} s)"),
    "kill": lambda r: (f"unique {r['unique']}/{r['n']} dup {r['duplicates']} "
                       f"recovery {r['recovery_s']}"),
    "multiproc": lambda r: (f"unique {r['unique']}/{r['n']} runs {r['runs']} dup {r['duplicates']} "
                            f"thr {r['throughput']}"),
}
