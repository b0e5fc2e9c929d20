"""Flow control (issue 21): what limits cost and whether they hold, side by side in one run.

``python -m benchmarks.flow [--base CHECKOUT] [--reps N] [--quick]``

=================  ===========================================================================
``ab``             the claim path without limits, before and after: the ``burst`` (20,000 no-op
                   tasks due at once: time to start them all) and per-call ``enqueue``
                   workloads of :mod:`benchmarks.workloads`, run alternately from ``--base`` (a
                   checkout of the code before flow control) and from this one, interleaved
``rate``           a rate-limited burst: 20,000 tasks with ``rate="2000/s"`` due at once, run by
                   3 worker processes of 32 workers on one file store (and one Redis server):
                   the rate held (starts by the store's clock), the worst 1-second window
``idle``           one process whose limit (``concurrency=1``) is held by a running task: CPU
                   seconds it uses in 10 s with 10,000 due tasks parked behind it, and with none
``--pg``           the same on one PostgreSQL server (``timewheel.testing.PostgresServer``): the
                   A/B of the claim path (``pg_ab``: per-call enqueue, and a store-level drain of
                   20,000 due tasks in worker rounds of 32 -- outcomes recorded and the next
                   claim made in one statement), the rate-limited burst and the idle CPU
``celery``         Celery 5.4 (Redis broker) with ``rate_limit="10/s"`` on the task, 3 worker
                   processes (8 threads each): Celery counts the rate per worker, so 3 workers
                   start up to 3x the rate; the same 200 tasks with timewheel's ``rate=`` over 3
                   processes, for comparison
=================  ===========================================================================

Results print as a table and go to ``benchmarks/results/flow-<stamp>.json``.  The measurement
processes are ``python -m benchmarks.child`` (``flow_worker``, ``flow_idle``) and, for Celery,
``celery worker`` on :mod:`benchmarks.celery_app`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from . import tasks
from .harness import RESULTS, ROOT, SCRATCH, Runner, stop_processes, wait_for_file
from .stats import pct

TASK = "benchmarks.flow"


# -- measurement processes (registered in benchmarks.child) ------------------------------------

def worker(spec: dict) -> dict:
    """A worker process: runs the flow task (``rate``/``concurrency`` as the spec says) on
    ``store`` until ``stopfile`` exists."""
    from timewheel import TimeWheel  # on open: see benchmarks.systems
    hu = TimeWheel(spec["store"], workers=spec.get("workers", 8))
    hu.task(name=TASK, rate=spec.get("rate"))(tasks.run)
    hu.start()
    open(spec["ready"], "w").close()
    wait_for_file(spec["stopfile"])
    hu.stop(wait=True, timeout=10)
    return {"pid": os.getpid()}


def idle(spec: dict) -> dict:
    """CPU seconds this process uses over ``window`` s while a running task holds its limit
    and ``n`` due tasks are parked behind it."""
    from timewheel import TimeWheel
    hu = TimeWheel(spec["store"], workers=4)
    one = hu.limit("one", concurrency=1)
    hold = hu.task(name="benchmarks.hold", limit=one)(time.sleep)
    blocked = hu.task(name="benchmarks.blocked", limit=one)(tasks.run)
    now = time.time()
    hold.schedule((spec["window"] + 30,), eta=now - 1)
    with hu.batch():
        for i in range(spec["n"]):
            blocked.delay(i, now, eta=now)
    hu.start()
    deadline = time.time() + 60
    while time.time() < deadline:            # every blocked task parked (a few claims of 1000)
        states = hu.store.limit_states(["limit:one"])
        if states and states[0].running == 1 and states[0].parked >= spec["n"]:
            break
        time.sleep(0.2)
    parked = hu.store.limit_states(["limit:one"])[0].parked
    time.sleep(1.0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(spec["window"])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    hu.stop(wait=False)
    return {"n": spec["n"], "parked": parked, "cpu_s": cpu, "wall_s": wall}


CHILD_WORKLOADS = {"flow_worker": worker, "flow_idle": idle}


# -- the parent --------------------------------------------------------------------------------

def _spawn(runner: Runner, spec: dict, tag: str, cwd: str = ROOT) -> tuple[subprocess.Popen, str]:
    d, spec_path, out = runner.paths(tag)
    spec = dict(spec, out=out)
    with open(spec_path, "w") as fh:
        json.dump(spec, fh)
    env = Runner.env()
    env["PYTHONPATH"] = cwd
    err = open(os.path.join(d, "stderr.txt"), "w")
    return subprocess.Popen([sys.executable, "-m", "benchmarks.child", spec_path], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=err), out


def _result(proc: subprocess.Popen, out: str, timeout: float) -> dict:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"error": f"timed out after {timeout:g}s"}
    try:
        with open(out) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {"error": "no result"}


def ab(runner: Runner, base: str, reps: int, quick: bool) -> list[dict]:
    """The claim path without limits: ``burst`` and per-call ``enqueue``, alternately from the
    base checkout and this one."""
    n_burst, n_enq = (2000, 2000) if quick else (20_000, 20_000)
    rows = []
    for rep in range(reps):
        order = (("base", base), ("this", ROOT))
        for side, cwd in order if rep % 2 == 0 else order[::-1]:
            for what, spec in (("burst", {"workload": "burst", "n": n_burst, "batch": True}),
                               ("enqueue", {"workload": "enqueue", "n": n_enq})):
                d, _, _ = runner.paths(f"ab-{side}-{what}")
                spec = dict(spec, system="timewheel", store=os.path.join(d, "store.db"))
                subprocess.run(["sync"], check=False)
                proc, out = _spawn(runner, spec, f"ab-{side}-{what}", cwd)
                res = _result(proc, out, 300)
                rows.append({"side": side, "what": what, "rep": rep, **res})
                runner.log(f"  ab {side:4s} {what:7s} rep {rep}: "
                           + (f"last start {res['last_s']:.3f} s" if what == "burst" and "last_s" in res
                              else f"{res.get('rate', 0):,.0f} tasks/s" if "rate" in res else str(res)[:120]))
    return rows


#: one side of the PostgreSQL A/B, run in a checkout (``python -c``, cwd the checkout):
#: per-call enqueue, or a drain of due tasks by worker rounds (the claim path without limits)
_PG_AB = r"""
import json, sys, time
from timewheel import TimeWheel
from timewheel.records import Outcome, end_run, new_task
url, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hu = TimeWheel(url)
store = hu.store
if what == "enqueue":
    noop = hu.task(name="bench.noop")(lambda i: None)
    t0 = time.perf_counter()
    for i in range(n):
        noop.delay(i, count_down=3600)
    print(json.dumps({"rate": n / (time.perf_counter() - t0)}))
else:
    now = store.now()
    store.add([new_task(f"b{i}", "bench.noop", now - 1, b"x", now, 0, 0.0, None, None) for i in range(n)])
    while not store.advance(store.wheel.current_tick(store.now()) + 1, 100_000, "bench").complete:
        pass
    me, pairs, done, t0 = store.liveness.token, [], 0, time.perf_counter()
    while done < n:
        _, got = store.record_and_claim(pairs, me, store.now(), 32)
        t = store.now()
        pairs = [(r, end_run(r, Outcome(True, t, t))) for r in got.records]
        done += len(got.records)
    store.swap(pairs)
    print(json.dumps({"rate": n / (time.perf_counter() - t0)}))
hu.close()
"""


#: fills one side's schema with due tasks (run in that side's checkout)
_PG_FILL = r"""
import sys
from timewheel.records import new_task
from timewheel.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
now, n = store.now(), int(sys.argv[2])
store.add([new_task(f"c{i}", "bench.noop", now - 1, b"x", now, 0, 0.0, None, None) for i in range(n)])
while not store.advance(store.wheel.current_tick(store.now()) + 1, 100_000, "bench").complete:
    pass
store.close()
"""


def pg_claim_ab(runner: Runner, url: str, base: str, n: int) -> dict:
    """The claim statement alone, base and this side by side: each side's store filled with
    ``n`` due tasks by its own code, then one connection calls the two claim functions in
    turn (32 tasks a call, left running) until both are drained -- the server's noise falls
    on both alike.  Milliseconds per claim."""
    import psycopg
    for side, cwd in (("base", base), ("this", ROOT)):
        subprocess.run([sys.executable, "-c", _PG_FILL, f"{url}?schema=claim_{side}", str(n)], cwd=cwd,
                       env=dict(Runner.env(), PYTHONPATH=cwd), check=True, timeout=600)
    calls = {"base": 'SELECT count(*) FROM claim_base.claim(%s, true, 32, 32, 10.0)',
             "this": 'SELECT count(*) FROM claim_this.claim(%s, true, 32, 32, 10.0, NULL, NULL)'}
    ms: dict[str, list[float]] = {"base": [], "this": []}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as c:
        for k in range(n // 32 + 1):
            for side in ("base", "this") if k % 2 == 0 else ("this", "base"):
                t0 = time.perf_counter()
                c.execute(calls[side], ("bench",)).fetchall()
                ms[side].append((time.perf_counter() - t0) * 1000)
    out = {side: {"median_ms": pct(sorted(v), 50), "p90_ms": pct(sorted(v), 90), "claims": len(v)}
           for side, v in ms.items()}
    ratios = sorted(t / b for b, t in zip(ms["base"], ms["this"]))
    out["paired_ratio_median"] = pct(ratios, 50)
    runner.log(f"  pg claim A/B: {out}")
    return out


def pg_ab(runner: Runner, url: str, base: str, reps: int, quick: bool) -> list[dict]:
    """The PostgreSQL claim path without limits, base and this checkout alternately, each in
    a fresh schema of one server."""
    sizes = {"enqueue": 1000 if quick else 5000, "drain": 2000 if quick else 20_000}
    rows = []
    for rep in range(reps):
        order = (("base", base), ("this", ROOT))
        for side, cwd in order if rep % 2 == 0 else order[::-1]:
            for what, n in sizes.items():
                schema = f"ab_{side}_{what}_{rep}"
                env = dict(Runner.env(), PYTHONPATH=cwd)
                out = subprocess.run([sys.executable, "-c", _PG_AB, f"{url}?schema={schema}", what, str(n)],
                                     cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
                res = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else \
                    {"error": out.stderr[-300:]}
                rows.append({"side": side, "what": what, "rep": rep, "n": n, **res})
                runner.log(f"  pg ab {side:4s} {what:7s} rep {rep}: {res}")
    return rows


def _windows(starts: list[float], per: float = 1.0) -> int:
    """The most starts in any window [s, s + per)."""
    j, most = 0, 0
    for i, s in enumerate(starts):
        while j < len(starts) and starts[j] < s + per:
            j += 1
        most = max(most, j - i)
    return most


def rate(runner: Runner, store_url: Optional[str], n: int, limit: str, processes: int = 3,
         workers: int = 32) -> dict:
    """``n`` tasks of ``rate=limit`` due at once, ``processes`` worker processes: the rate
    held by the claims' stamps (the store's clock), the worst window, the drain time."""
    from timewheel import TimeWheel
    d, _, _ = runner.paths("rate")
    store = store_url or os.path.join(d, "store.db")
    hu = TimeWheel(store)
    task = hu.task(name=TASK, rate=limit)(tasks.run)
    due = time.time() + 3
    with hu.batch():
        ids = [task.delay(i, due, eta=due).id for i in range(n)]
    stopfile = os.path.join(d, "stop")
    procs = []
    for k in range(processes):
        ready = os.path.join(d, f"ready{k}")
        wd, spec_path, out = runner.paths(f"rate-worker{k}")
        proc = runner.spawn({"workload": "flow_worker", "store": store, "rate": limit, "workers": workers,
                             "ready": ready, "stopfile": stopfile, "out": out}, wd, spec_path)
        procs.append(proc)
        wait_for_file(ready)
    deadline = due + n / float(limit.split("/")[0]) * 3 + 60
    while time.time() < deadline:
        counts = hu.store.counts()
        if counts.get(("succeeded", TASK), 0) >= n:
            break
        time.sleep(0.2)
    stop_processes(procs, stopfile)
    starts, early = [], 0
    for chunk in range(0, len(ids), 500):
        for task_id in ids[chunk:chunk + 500]:
            rec = hu.store.get(task_id)
            if rec is not None and rec.status == "succeeded":
                starts.append(rec.started)
                early += rec.started < rec.eta
    hu.close()
    starts.sort()
    per_s = int(limit.split("/")[0])
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    # the steady rate: starts after the first full window, per second
    steady = [s for s in starts if s >= starts[0] + 1.0]
    held = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None
    over = sum(1 for i in range(len(starts)) if _count_from(starts, i) > per_s)
    return {"n": n, "ran": len(starts), "early": early, "limit": limit, "processes": processes,
            "workers": workers,
            "drain_s": span, "rate_held": held,
            "rate_error_pct": None if held is None else (held / per_s - 1) * 100,
            "worst_window": _windows(starts), "windows_over": over}


def _count_from(starts: list[float], i: int, per: float = 1.0) -> int:
    import bisect
    return bisect.bisect_left(starts, starts[i] + per) - i


def idle_cpu(runner: Runner, blocked: int, window: float) -> dict:
    return runner.run({"workload": "flow_idle", "n": blocked, "window": window}, f"idle-{blocked}",
                      timeout=window + 180)


def celery(runner: Runner, redis_url: str, n: int, limit: str, workers: int = 3) -> dict:
    """Celery's per-worker ``rate_limit`` with ``workers`` worker processes: the rate the
    starts actually reach (from the run log) against the rate asked for."""
    d, _, _ = runner.paths("celery")
    log = os.path.join(d, "runs.log")
    env = {**Runner.env(), "BENCH_CELERY_BROKER": redis_url, "BENCH_CELERY_RATE": limit,
           "BENCH_CELERY_LOG": log}
    procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker",
                               "-P", "threads", "-c", "8", "-n", f"w{k}@%h", "--loglevel", "WARNING",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(d, f"celery{k}.txt"), "w"))
             for k in range(workers)]
    try:
        time.sleep(6)                                      # the workers connect
        code = ("import time; from benchmarks.celery_app import run; "
                f"due = time.time(); [run.delay(i, due) for i in range({n})]")
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
        deadline = time.time() + 120
        while time.time() < deadline and len(tasks.read_log(log)) < n:
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    runs = tasks.read_log(log)
    starts = sorted(s for _, _, _, s in runs)
    per_s = int(limit.split("/")[0])
    steady = [s for s in starts if s >= starts[0] + 1.0] if starts else []
    held = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None
    return {"n": n, "ran": len(runs), "unique": len({i for i, _, _, _ in runs}), "limit": limit,
            "workers": workers, "rate_reached": held,
            "over_pct": None if held is None else (held / per_s - 1) * 100,
            "worst_window": _windows(starts), "drain_s": starts[-1] - starts[0] if starts else None}


def _pg(runner: Runner, args: argparse.Namespace, only: set) -> dict:
    """Every measurement on one PostgreSQL server of our own."""
    from timewheel.testing import PostgresServer
    doc: dict[str, Any] = {}
    with PostgresServer() as server:
        url = server.url
        if "ab" in only and args.base:
            doc["pg_ab"] = pg_ab(runner, url, os.path.abspath(args.base), args.reps, args.quick)
            doc["pg_ab_summary"] = _summary(doc["pg_ab"], (("drain", "rate"), ("enqueue", "rate")))
            runner.log(json.dumps(doc["pg_ab_summary"], indent=1))
            doc["pg_claim_ab"] = pg_claim_ab(runner, url, os.path.abspath(args.base),
                                             2000 if args.quick else 20_000)
        n = 2000 if args.quick else 20_000
        if "rate" in only:
            doc["rate_pg"] = rate(runner, url + "?schema=rate", n, "2000/s")
            runner.log(f"rate, PostgreSQL store: {doc['rate_pg']}")
        if "idle" in only:
            window = 5.0 if args.quick else 10.0
            doc["idle_pg"] = [runner.run({"workload": "flow_idle", "n": b, "window": window,
                                          "store": f"{url}?schema=idle{k}"}, f"idle-pg-{k}",
                                         timeout=window + 180)
                              for k, b in enumerate((0, 10_000, 0, 10_000))]
            runner.log(f"idle, PostgreSQL store: {doc['idle_pg']}")
    return doc


def _summary(ab_rows: list[dict], keys: tuple = (("burst", "last_s"), ("enqueue", "rate"))) -> dict:
    out: dict[str, Any] = {}
    for what, key in keys:
        for side in ("base", "this"):
            xs = sorted(r[key] for r in ab_rows if r["what"] == what and r["side"] == side and key in r)
            out[f"{what}_{side}"] = {"median": pct(xs, 50) if xs else None, "all": xs}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.flow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="a checkout of the code before flow control (for the A/B)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=("ab", "rate", "idle", "celery"))
    ap.add_argument("--pg", action="store_true", help="on one PostgreSQL server instead of the file store "
                    "and Redis (no Celery)")
    args = ap.parse_args(argv)
    only = set(args.only or ("ab", "rate", "idle", "celery"))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(SCRATCH, f"flow-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    runner = Runner(run_dir)
    doc: dict[str, Any] = {"run": stamp}
    if args.pg:
        doc.update(_pg(runner, args, only))
    elif "ab" in only and args.base:
        doc["ab"] = ab(runner, os.path.abspath(args.base), args.reps, args.quick)
        doc["ab_summary"] = _summary(doc["ab"])
        runner.log(json.dumps(doc["ab_summary"], indent=1))
    n = 2000 if args.quick else 20_000
    if "rate" in only and not args.pg:
        doc["rate_file"] = rate(runner, None, n, "2000/s")
        runner.log(f"rate, file store: {doc['rate_file']}")
    if "idle" in only and not args.pg:
        window = 5.0 if args.quick else 10.0
        doc["idle"] = [idle_cpu(runner, b, window) for b in (0, 10_000, 0, 10_000)]
        runner.log(f"idle: {doc['idle']}")
    if {"rate", "celery"} & only and not args.pg:
        from timewheel.testing import RedisServer
        tmp = tempfile.mkdtemp(prefix="flow-redis-")
        server = RedisServer(tmp).start()
        try:
            if "rate" in only:
                # (64 workers: every claim round trip waits for the server's fsync)
                doc["rate_redis"] = rate(runner, server.url, n, "2000/s", workers=64)
                runner.log(f"rate, Redis store: {doc['rate_redis']}")
            if "celery" in only:
                m = 100 if args.quick else 200
                server_db = server.url.rsplit("/", 1)[0] + "/1"
                doc["celery"] = celery(runner, server_db, m, "10/s")
                runner.log(f"celery: {doc['celery']}")
                doc["celery_timewheel"] = rate(runner, server.url.rsplit("/", 1)[0] + "/2", m, "10/s")
                runner.log(f"timewheel, the same: {doc['celery_timewheel']}")
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    out = os.path.join(RESULTS, f"flow-{stamp}.json")
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    runner.log(f"-> {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
