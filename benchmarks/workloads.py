"""What one measurement process does in the file-store workloads (``enqueue``, ``batch``,
``pending``, ``startup``, ``lateness``, ``burst``, ``kill``, ``multiproc``; the parent's side is
:mod:`benchmarks.sqlite_peers`).

Each function takes the spec the parent wrote (a dict) and returns a dict of measurements.
They run in a fresh interpreter (:mod:`benchmarks.child`), one system per process.  Times are
``time.perf_counter()`` for durations and ``time.time()`` for anything compared with an eta.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from typing import Any, Callable

from . import tasks
from .harness import wait_for_file
from .machine import memory_kib
from .stats import pct, quantiles
from .systems import checkpoint, open_system


def _wait_for(cond: Callable[[], bool], timeout: float, poll: float = 0.0005) -> bool:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            return False
        time.sleep(poll)
    return True


# -- enqueue ----------------------------------------------------------------------------------
def enqueue(spec: dict) -> dict:
    """Enqueue ``n`` tasks due ``delay`` s out from one thread, one call each (durable per
    call), or all in one call of the batch API.  Nothing runs tasks meanwhile."""
    n, batch = spec["n"], spec.get("batch", False)
    system = open_system(spec["system"], spec["store"])
    base = time.time() + spec.get("delay", 3600.0)
    cpu0 = time.process_time()
    out: dict[str, Any] = {}
    if batch:
        t0 = time.perf_counter()
        system.enqueue_batch((i, base + i * 1e-3) for i in range(n))
        elapsed = time.perf_counter() - t0
    else:
        step = max(1, n // 20)
        enq = system.enqueue
        marks = []
        t0 = time.perf_counter()
        for i in range(n):
            enq(i, base + i * 1e-3)
            if (i + 1) % step == 0:
                marks.append(time.perf_counter())
        elapsed = time.perf_counter() - t0
        prev, chunk_rates = t0, []
        for m in marks:
            chunk_rates.append(step / (m - prev))
            prev = m
        out["chunk_rates"] = chunk_rates
        out["chunk_size"] = step
    out.update(n=n, seconds=elapsed, rate=n / elapsed, cpu_s=time.process_time() - cpu0,
               pending_before=spec.get("pending", 0))
    return out


def build(spec: dict) -> dict:
    """Fill a store with ``n`` pending tasks (the batch API, 50k per batch), due between
    1 h and 1 h + 7 days from now, then checkpoint the WAL so the file can be copied."""
    n, chunk = spec["n"], 50_000
    rng = random.Random(12345)
    now = time.time()
    system = open_system(spec["system"], spec["store"])
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        system.enqueue_batch((10_000_000 + done + j, now + 3600 + rng.random() * 7 * 86400)
                             for j in range(k))
        done += k
    elapsed = time.perf_counter() - t0
    if spec["system"] == "timewheel":
        system.hu.close()
    else:
        system.stop()
    checkpoint(spec["store"])
    return {"n": n, "seconds": elapsed, "rate": n / elapsed,
            "bytes": os.path.getsize(spec["store"])}


# -- start-up and idle ------------------------------------------------------------------------
def startup(spec: dict) -> dict:
    """start() with ``pending`` tasks in the store: time to the first tick (timewheel: the
    boss has loaded the next tick), time until a task due at once has run, RSS, and the CPU
    the idle process uses in ``idle_s`` seconds (scaled to 10 s)."""
    out: dict[str, Any] = {"rss_python_kib": memory_kib()["rss_kib"]}
    inline = spec.get("inline_pending", 0)
    system = open_system(spec["system"], spec["store"])
    if inline:                         # peers: build the pending set through their own API
        now = time.time()
        if spec["system"] == "timewheel":
            system.enqueue_batch((10_000_000 + j, now + 3600 + j * 60.0) for j in range(inline))
        else:
            for j in range(inline):
                system.enqueue(10_000_000 + j, now + 3600 + j * 60.0)
    out["rss_opened_kib"] = memory_kib()["rss_kib"]
    t0 = time.perf_counter()
    system.start()
    out["start_call_s"] = time.perf_counter() - t0
    system.enqueue(-1, time.time())                     # a probe task, due at once
    out["probe_enqueued_s"] = time.perf_counter() - t0
    if spec["system"] == "timewheel":
        hu = system.hu

        def ticked() -> bool:
            boss = hu._boss            # the leader has made the next tick ready
            horizon = boss._horizon if boss is not None else None
            return horizon is not None and horizon >= hu.wheel.current_tick(time.time()) + 1
        if _wait_for(ticked, 30):
            out["first_tick_s"] = time.perf_counter() - t0
    if _wait_for(lambda: any(r[0] == -1 for r in tasks.records), 30):
        out["first_task_s"] = time.perf_counter() - t0
    time.sleep(1.0)
    idle = spec.get("idle_s", 10.0)
    cpu0, w0 = time.process_time(), time.perf_counter()
    ru0 = os.times()
    time.sleep(idle)
    cpu1, w1 = time.process_time(), time.perf_counter()
    ru1 = os.times()
    out["idle_cpu_s"] = cpu1 - cpu0
    out["idle_cpu_per_10s"] = (cpu1 - cpu0) * 10.0 / (w1 - w0)
    out["idle_user_s"] = ru1.user - ru0.user
    out["idle_sys_s"] = ru1.system - ru0.system
    out.update(memory_kib())
    out["threads"] = len(os.listdir("/proc/self/task"))
    out["pending"] = spec.get("pending", 0) or inline
    return out


# -- lateness ---------------------------------------------------------------------------------
class StallProbe:
    """A separate process that sleeps 1 ms at a time and notes how much longer each sleep took:
    a stall it sees at the same moment as a late task is the machine's (other jobs on the two
    cores, the virtual disk), not the scheduler's.  Used around the lateness window."""

    def __enter__(self) -> "StallProbe":
        code = ("import select, sys, time\nworst, stalls = 0.0, []\n"
                "while not select.select([sys.stdin], [], [], 0)[0]:\n"
                "    t = time.monotonic(); time.sleep(0.001); late = time.monotonic() - t - 0.001\n"
                "    worst = max(worst, late)\n"
                "    if late > 0.02: stalls.append(round(late * 1e3, 1))\n"
                "print(round(worst * 1e3, 1), len(stalls), max(stalls, default=0.0))\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        out, _ = self.proc.communicate("stop\n", timeout=10)
        worst, count, _ = out.split()
        self.worst_ms, self.stalls = float(worst), int(count)


def enqueue_each(system: Any, dues: list[float]) -> int:
    """Task ``k`` due at ``dues[k]``, one enqueue call each, in order; how many were enqueued
    only after their eta had passed."""
    late = 0
    for k, due in enumerate(dues):
        system.enqueue(k, due)
        if time.time() > due:
            late += 1
    return late


def lateness(spec: dict) -> dict:
    """``n`` tasks enqueued up front (consumer running), due evenly from ``lead`` to
    ``lead + spread`` s later; lateness = start (inside the task) - eta."""
    n, lead, spread = spec["n"], spec["lead"], spec["spread"]
    system = open_system(spec["system"], spec["store"])
    system.start()
    # A system whose enqueue is slow (APScheduler: ~1 ms per add_job while running) gets a
    # longer lead, so that every task is stored before the first one is due.
    m = 100
    far = time.time() + 86400
    t = time.perf_counter()
    for j in range(m):
        system.enqueue(-2 - j, far)
    lead = max(lead, (time.perf_counter() - t) / m * n * 1.5 + 0.5)
    t0 = time.time()
    dues = [t0 + lead + spread * k / n for k in range(n)]
    late_enqueued = enqueue_each(system, dues)
    enqueue_s = time.time() - t0
    with StallProbe() as probe:
        _wait_for(lambda: len(tasks.records) >= n, dues[-1] + spec.get("grace", 15.0) - time.time(), 0.01)
        time.sleep(0.3)                   # let duplicates, if any, show up
    recs = list(tasks.records)
    lat = sorted(s - d for _, d, s in recs)
    return {
        "n": n, "lead_s": lead, "ran": len(recs), "unique": len({i for i, _, _ in recs}),
        "early": sum(1 for x in lat if x < 0), "late_enqueued": late_enqueued,
        "enqueue_s": enqueue_s, "machine_stall_max_ms": probe.worst_ms, "machine_stalls": probe.stalls,
        "p50_ms": pct(lat, 50) * 1e3, "p90_ms": pct(lat, 90) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3, "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
        "min_ms": (lat[0] if lat else float("nan")) * 1e3,
        "cdf_ms": [x * 1e3 for x in quantiles(lat)],
    }


# -- burst ------------------------------------------------------------------------------------
def burst(spec: dict) -> dict:
    """``n`` no-op tasks due at one instant; how long until all have started."""
    n = spec["n"]
    batch = spec.get("batch", False)
    system = open_system(spec["system"], spec["store"])
    # The burst is stored first and the consumer started after it (before the due instant), so
    # that a slow enqueue (APScheduler: ~1 ms per add_job) is not slowed further by a running
    # scheduler.  Calibrate: time a few enqueues (due tomorrow, never run here) to pick a lead
    # that lets the whole burst be stored before its due instant, whatever the enqueue rate.
    m = max(100, min(1000, n // 20))
    far = time.time() + 86400
    t = time.perf_counter()
    if batch:
        system.enqueue_batch((-2 - j, far) for j in range(m))
    else:
        for j in range(m):
            system.enqueue(-2 - j, far)
    per_task = (time.perf_counter() - t) / m
    lead = max(spec.get("min_lead", 1.5), per_task * n * 1.4 + 2.0)
    due = time.time() + lead
    t0 = time.time()
    if batch:
        system.enqueue_batch((k, due) for k in range(n))
    else:
        for k in range(n):
            system.enqueue(k, due)
    enqueued = time.time()
    system.start()
    quiet, max_wait = spec.get("quiet", 3.0), spec.get("max_wait", 60.0)
    last_count, last_change = 0, time.time()
    while True:
        now = time.time()
        count = len(tasks.records)
        if count != last_count:
            last_count, last_change = count, now
        if count >= n or now > due + max_wait or (now > due + quiet and now - last_change > quiet):
            break
        time.sleep(0.01)
    time.sleep(0.3)
    recs = list(tasks.records)
    offs = sorted(s - due for _, _, s in recs)
    return {
        "n": n, "ran": len(recs), "unique": len({i for i, _, _ in recs}),
        "early": sum(1 for x in offs if x < 0), "enqueue_s": enqueued - t0,
        "margin_s": due - enqueued, "lead_s": lead,
        "first_s": offs[0] if offs else None, "p50_s": pct(offs, 50) if offs else None,
        "last_s": offs[-1] if offs else None,
        "drain_curve_s": quantiles(offs),
    }


# -- kill / restart ---------------------------------------------------------------------------
def kill_a(spec: dict) -> dict:
    """Phase A: schedule ``n`` tasks due ``due_lo``..``due_hi`` s out, say so, then wait to be
    SIGKILLed by the parent."""
    tasks.log_to(spec["log"])
    system = open_system(spec["system"], spec["store"])
    system.start()
    n, lo, hi = spec["n"], spec["due_lo"], spec["due_hi"]
    t0 = time.time()
    for k in range(n):
        system.enqueue(k, t0 + lo + (hi - lo) * k / max(1, n - 1))
    print(f"SCHEDULED {time.time():.6f} {t0:.6f}", flush=True)
    while True:
        time.sleep(60)


def kill_b(spec: dict) -> dict:
    """Phase B: restart on the same file and run until the parent says stop."""
    tasks.log_to(spec["log"])
    system = open_system(spec["system"], spec["store"])
    t0 = time.time()
    system.start()
    print(f"STARTED {t0:.6f}", flush=True)
    wait_for_file(spec["stopfile"])
    return {"started": t0}


# -- several processes on one file ------------------------------------------------------------
def multi(spec: dict) -> dict:
    """One of several processes on one store: run tasks, and at ``start_at`` enqueue ``n``
    tasks, each due ``delay`` s (0.5) after its enqueue; stay until the parent says stop."""
    tasks.log_to(spec["log"])
    system = open_system(spec["system"], spec["store"])
    system.start()
    print("READY", flush=True)
    delay = spec["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    n, base = spec["n"], spec["index"] * spec["n"]
    t0 = time.time()
    errors = 0
    for j in range(n):
        try:
            system.enqueue(base + j, time.time() + spec.get("delay", 0.5))
        except Exception as exc:     # e.g. "database is locked": counted, reported
            errors += 1
            if errors <= 3:
                print(f"enqueue error: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
    t1 = time.time()
    print("ENQUEUED", flush=True)
    wait_for_file(spec["stopfile"])
    return {"enqueue_start": t0, "enqueue_end": t1, "enqueue_errors": errors, "pid": os.getpid()}


CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = {
    "enqueue": enqueue, "build": build, "startup": startup, "lateness": lateness,
    "burst": burst, "kill_a": kill_a, "kill_b": kill_b, "multi": multi,
}
