"""Crash loop: SIGKILL random processes sharing one store while tasks come due.

    python tests/crashloop.py --kills 100 --procs 3 --tasks 3000 [--store redis://...]

``--procs`` worker processes each run ``hu.start()`` on one store (a tasks.db in the work
directory, or ``--store``: any location TimeWheel accepts, e.g. a redis:// URL).  This controller enqueues
``--tasks`` tasks at a steady rate (from a TimeWheel it never starts: a process that only
enqueues), each due 0..1.5 s later and sleeping 0..``--task-sleep`` s, while it SIGKILLs a
random worker at a random moment every 0.25..1.0 s (``--kills`` times) and restarts it
``--restart-delay`` s later (so that a survivor, not the replacement, usually takes over).
Then it lets the workers drain the queue and checks, from the append-only log the tasks
write (``start <tag> <pid> <t>`` / ``end <tag> <pid> <t>``), never from the store:

* lost: enqueued tasks with no ``end`` line;
* duplicates: extra ``start`` lines.  A re-run is *allowed* when the earlier run has no
  ``end`` line and its process was killed (it was running at the kill: the documented
  re-run).  A re-run whose earlier run did log its ``end`` but whose process was killed
  within ``--window`` s after it (before the outcome could be committed) is reported as
  ``after_end`` -- the unavoidable gap between a task's side effects and the commit of its
  outcome; ``lease_lost`` when the earlier run's process logged that it lost the task's lease
  or had its outcome refused (on a server store, a process stalled past its lease -- a busy
  machine, a pause -- counts as crashed: the documented re-run); ``bad_duplicates`` are all
  the others;
* takeover: for each kill of the ticking process, the time until another process ticks
  (``survivor``: one that was already running at the kill).

Prints the figures (``--json`` for one JSON object) and exits 1 if anything was lost or run
twice without excuse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Optional

from timewheel.testing import processes as procs

try:
    from .mp_worker import append_line as _append
    from .mp_worker import read_lines as _lines
    from .mp_worker import record
except ImportError:               # run as a script: tests/ is sys.path[0]
    from mp_worker import append_line as _append  # type: ignore[no-redef]
    from mp_worker import read_lines as _lines
    from mp_worker import record

TASK_NAME = "crashloop.record"


def _wheel(store: str, tick: float, workers: int, max_crashes: int):
    from timewheel import TimeWheel
    hu = TimeWheel(store, workers=workers, tick=tick, slots=600, max_crashes=max_crashes)
    return hu, hu.task(name=TASK_NAME)(record)


# -- one worker process ------------------------------------------------------------------------

def worker(a: argparse.Namespace) -> int:
    import logging

    class ToEvents(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            msg = rec.getMessage().replace("\n", " | ")
            if rec.exc_info and rec.exc_info[1] is not None:
                msg += f" | {rec.exc_info[0].__name__}: {rec.exc_info[1]}"
            _append(a.events, f"log {os.getpid()} {time.time():.6f} {rec.levelname} {msg}")

    logging.getLogger("timewheel").addHandler(ToEvents(logging.WARNING))
    hu, _ = _wheel(a.store, a.tick, a.workers, a.max_crashes)
    hu.start()
    _append(a.events, f"ready {os.getpid()} {time.time():.6f}")
    was = False
    stop = os.path.join(os.path.dirname(a.events), "stop")
    while not os.path.exists(stop):
        now = hu.is_leader
        if now and not was:
            _append(a.events, f"lead {os.getpid()} {time.time():.6f}")
        was = now
        time.sleep(0.005)
    hu.stop(wait=True, timeout=10)
    return 0


# -- the controller ----------------------------------------------------------------------------

class _Procs:
    def __init__(self, d: str, args: list[str]) -> None:
        self.d, self.args = d, args
        self.live: list[subprocess.Popen] = []
        self.all: list[subprocess.Popen] = []
        self.born: dict[int, float] = {}          # pid -> when it was started

    def spawn(self) -> subprocess.Popen:
        out = open(os.path.join(self.d, "workers.out"), "ab")
        p = procs.popen([sys.executable, os.path.abspath(__file__), "--worker", *self.args],
                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.live.append(p)
        self.all.append(p)
        self.born[p.pid] = time.time()
        return p

    def kill(self, p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.live.remove(p)

    def finish(self, timeout: float = 20.0) -> None:
        _append(os.path.join(self.d, "stop"), "stop")
        deadline = time.monotonic() + timeout
        for p in self.all:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.all:
            if p.poll() is None:
                p.kill()
                p.wait(10)


#: A task killed mid-run this many times ends failed (TimeWheel(max_crashes=), the guard against
#: a task that kills its process).  The loop kills a process every 0.25-1 s, far more often than
#: any deployment, and since a queued task's start is recorded (issue 26) a kill counts a crash
#: for every run it interrupts: at the library's default of 3, 2 of 3,000 tasks were interrupted
#: three times in one of four runs and ended failed, which this harness (rightly) counts as lost.
#: The loop checks that kills lose nothing and double nothing, not that guard: it allows more.
MAX_CRASHES = 10


def run(kills: int = 100, procs: int = 3, tasks: int = 3000, *, tick: float = 0.25, workers: int = 4,
        task_sleep: float = 0.05, window: float = 1.0, restart_delay: float = 0.5,
        max_crashes: int = MAX_CRASHES,
        seed: Optional[int] = None, workdir: Optional[str] = None, drain_timeout: float = 30.0,
        quiet: bool = False, store: Optional[str] = None) -> dict:
    """Run the crash loop; return its figures (see the module docstring)."""
    rnd = random.Random(seed)
    own = workdir is None
    d = tempfile.mkdtemp(prefix="crashloop-") if own else workdir
    log, events = (os.path.join(d, n) for n in ("runs.log", "events.log"))
    db = store or os.path.join(d, "tasks.db")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    pool = _Procs(d, ["--store", db, "--log", log, "--events", events, "--tick", str(tick),
                      "--workers", str(workers), "--max-crashes", str(max_crashes)])
    kill_log: list[tuple[float, int, bool]] = []       # (time, pid, was it the ticking one)
    enqueued: dict[str, str] = {}                     # tag -> task id
    delay_errors: list[str] = []
    t_start = time.time()
    try:
        hu, task = _wheel(db, tick, workers, max_crashes)
        hu.store.counts()                          # create the file before the workers race
        for _ in range(procs):
            pool.spawn()
        deadline = time.monotonic() + 30
        while len([p for p in _lines(events) if p[0] == "ready"]) < procs:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start within 30 s")
            time.sleep(0.02)

        intervals = [rnd.uniform(0.25, 1.0) for _ in range(kills)]
        span = max(1.0, sum(intervals))

        frnd = random.Random(rnd.random())       # the feeder thread's own sequence

        def enqueue() -> None:
            t0 = time.monotonic()
            for i in range(tasks):
                target = t0 + span * i / tasks
                pause = target - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                tag = f"t{i}"
                try:
                    h = task.delay(log, tag, frnd.uniform(0, task_sleep), count_down=frnd.uniform(0, 1.5))
                except Exception as exc:
                    delay_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                enqueued[tag] = h.id

        feeder = threading.Thread(target=enqueue, name="crashloop-enqueue", daemon=True)
        feeder.start()
        restarts: list[float] = []         # when to restart the workers killed so far
        for n, pause in enumerate(intervals):
            until = time.monotonic() + pause
            while True:
                now = time.monotonic()
                for r in [r for r in restarts if r <= now]:
                    restarts.remove(r)
                    pool.spawn()
                if now >= until:
                    break
                time.sleep(min(0.01, until - now))
            if not pool.live:              # never leave the store without a process
                restarts.pop(0)
                pool.spawn()
            victim = rnd.choice(pool.live)
            leads = [p for p in _lines(events) if p[0] == "lead"]
            was_leader = bool(leads) and int(leads[-1][1]) == victim.pid
            pool.kill(victim)
            kill_log.append((time.time(), victim.pid, was_leader))
            _append(os.path.join(d, "kills.log"),
                    f"kill {victim.pid} {kill_log[-1][0]:.6f} {int(was_leader)}")
            restarts.append(time.monotonic() + restart_delay)
            say(f"kill {n + 1}/{kills}: pid {victim.pid}{' (ticking)' if was_leader else ''}")
        for _ in restarts:
            pool.spawn()
        feeder.join()

        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            ended = {p[1] for p in _lines(log) if p[0] == "end"}
            if set(enqueued) <= ended:
                break
            time.sleep(0.1)
        time.sleep(3 * tick)      # anything that would wrongly run twice has had its chance
        pool.finish()
        res = _verdict(log, events, enqueued, kill_log, window, pool.born)
        lost_status: dict[str, int] = defaultdict(int)
        if res["lost"]:
            for tag in res.pop("lost_tags"):
                try:
                    lost_status[hu.get(enqueued[tag]).status] += 1
                except Exception as exc:      # diagnosis only
                    lost_status[type(exc).__name__] += 1
        else:
            res.pop("lost_tags")
        hu.close()
        res.update(kills=kills, procs=procs, tasks=tasks, enqueued=len(enqueued), tick=tick,
                   delay_errors=len(delay_errors), seconds=round(time.time() - t_start, 1),
                   lost_store_status=dict(lost_status))
        if delay_errors:
            res["first_delay_error"] = delay_errors[0]
        return res
    finally:
        for p in pool.all:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if own:
            shutil.rmtree(d, ignore_errors=True)


def _verdict(log: str, events: str, enqueued: dict[str, str], kill_log: list[tuple[float, int, bool]],
             window: float, born: dict[int, float]) -> dict:
    starts: dict[str, list[tuple[str, float]]] = defaultdict(list)
    ends: dict[str, dict[str, float]] = defaultdict(dict)
    for parts in _lines(log):
        kind, tag, pid, t = parts[0], parts[1], parts[2], float(parts[3])
        if kind == "start":
            starts[tag].append((pid, t))
        elif kind == "end":
            ends[tag][pid] = t
    killed_at = {str(pid): t for t, pid, _ in kill_log}
    logs = [p for p in _lines(events) if p[0] == "log"]
    # (pid, task) of every run its process was told it no longer held: see the boss's warnings
    fenced = {(p[1], p[5]) for p in logs if len(p) > 6 and p[3] == "WARNING" and p[4] == "task"
              and ("lease was lost" in " ".join(p[6:]) or "outcome was refused" in " ".join(p[6:]))}
    allowed = after_end = lease_lost = bad = 0
    bad_examples: list[str] = []
    for tag, runs in starts.items():
        for pid, _t in runs[:-1]:                  # every run but the last was repeated
            k = killed_at.get(pid)
            end = ends[tag].get(pid)
            if k is not None and end is None:
                allowed += 1
            elif k is not None and end is not None and 0 <= k - end <= window:
                after_end += 1
            elif (pid, tag) in fenced:
                lease_lost += 1
            else:
                bad += 1
                bad_examples.append(f"{tag}: runs {runs}, ends {ends[tag]}, killed {k}")
    lost_tags = sorted(t for t in enqueued if not ends.get(t))
    leads = [(int(p[1]), float(p[2])) for p in _lines(events) if p[0] == "lead"]
    takeovers = []                                  # (seconds, taken over by a survivor?)
    for t, pid, was_leader in kill_log:
        if was_leader:
            nxt = sorted((lt, lp) for lp, lt in leads if lp != pid and lt >= t)
            if nxt:
                takeovers.append((nxt[0][0] - t, born.get(nxt[0][1], 0.0) < t))
            else:
                takeovers.append((float("inf"), False))
    by_survivor = [x for x, surv in takeovers if surv]
    finite = [x for x, _ in takeovers if x != float("inf")]
    res = {
        "runs": sum(len(v) for v in starts.values()),
        "distinct": len(starts),
        "duplicates": sum(len(v) - 1 for v in starts.values()),
        "allowed_duplicates": allowed,
        "after_end": after_end,
        "lease_lost": lease_lost,
        "bad_duplicates": bad,
        "lost": len(lost_tags),
        "lost_tags": lost_tags,
        "leader_kills": len(takeovers),
        "takeovers_missing": len(takeovers) - len(finite),
        "median_takeover_s": round(statistics.median(finite), 3) if finite else None,
        "max_takeover_s": round(max(x for x, _ in takeovers), 3) if takeovers else None,
        "takeovers_by_survivor": len(by_survivor),
        "median_survivor_takeover_s": round(statistics.median(by_survivor), 3) if by_survivor else None,
        "max_survivor_takeover_s": round(max(by_survivor), 3) if by_survivor else None,
        "worker_errors": sum(1 for p in logs if p[3] in ("ERROR", "CRITICAL")),
        "worker_warnings": sum(1 for p in logs if p[3] == "WARNING"),
    }
    if bad_examples:
        res["bad_examples"] = bad_examples[:5]
    errs = [" ".join(p[4:])[:300] for p in logs if p[3] in ("ERROR", "CRITICAL")]
    if errs:
        res["first_worker_error"] = errs[0]
    return res


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs (default 100)")
    ap.add_argument("--procs", type=int, default=3, help="worker processes (default 3)")
    ap.add_argument("--tasks", type=int, default=3000, help="tasks enqueued during the loop (default 3000)")
    ap.add_argument("--tick", type=float, default=0.25, help="wheel tick in seconds (default 0.25)")
    ap.add_argument("--workers", type=int, default=4, help="worker threads per process (default 4)")
    ap.add_argument("--task-sleep", type=float, default=0.05, help="max seconds a task sleeps (default 0.05)")
    ap.add_argument("--window", type=float, default=1.0,
                    help="a kill this soon after a run's end excuses its re-run (default 1.0)")
    ap.add_argument("--restart-delay", type=float, default=0.5,
                    help="seconds before a killed worker is restarted (default 0.5)")
    ap.add_argument("--max-crashes", type=int, default=MAX_CRASHES,
                    help=f"TimeWheel(max_crashes=) (default {MAX_CRASHES})")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--dir", default=None, help="work directory (kept); default: a temp dir, removed")
    ap.add_argument("--store", default=None, help="the store (default: tasks.db in the work directory)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
    res = run(a.kills, a.procs, a.tasks, tick=a.tick, workers=a.workers, task_sleep=a.task_sleep,
              window=a.window, restart_delay=a.restart_delay, max_crashes=a.max_crashes, seed=a.seed,
              workdir=a.dir, quiet=a.json, store=a.store)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>27}: {v}")
    ok = res["lost"] == 0 and res["bad_duplicates"] == 0 and res["delay_errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
