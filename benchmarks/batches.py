"""Batches (issue 23): a large batch from enqueue to its callback, beside Celery's chord.

``python -m benchmarks.batches [--n N] [--reps R] [--quick] [--only timewheel|celery]``

=============  ================================================================================
``timewheel``  one measurement process opens ``with hu.batch(on_complete=cb)`` around ``N``
               no-op ``delay()`` calls (one commit), then starts 8 workers; until the callback
               runs: the enqueue time, the time to the callback, how many callbacks ran (1),
               the process's peak RSS.  On the file store and on a Redis server (``appendfsync
               always``) of its own
``celery``     Celery 5.4 (Redis broker and result backend: its chord counts finished members
               on the server): a client enqueues ``chord(member.s(i) for i in range(N))
               (summary.s())``, one ``celery worker -P threads -c 8`` runs it; the same
               figures, RSS of the client and of the worker
=============  ================================================================================

Huey has no chord (a result group has no completion callback), so it is not in the table.
Results print and go to ``benchmarks/results/batches-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from .harness import RESULTS, ROOT, SCRATCH, Runner

# -- the measurement process (registered in benchmarks.child) ----------------------------------

def batch(spec: dict) -> dict:
    """``spec["n"]`` members in one batch on ``spec["store"]``, 8 workers, to the callback."""
    from timewheel import TimeWheel
    hu = TimeWheel(spec["store"], workers=8, tick=0.1)
    ran: list[float] = []

    @hu.task(name="bench.member")
    def member(i: int) -> int:
        return i

    @hu.task(name="bench.summary")
    def summary(batch_id: str) -> None:
        ran.append(time.time())

    t0 = time.perf_counter()
    w0 = time.time()
    with hu.batch(on_complete=summary) as b:
        for i in range(spec["n"]):
            member.delay(i)
    enqueued = time.perf_counter() - t0
    hu.start()
    deadline = time.time() + spec.get("timeout", 1200)
    while not ran and time.time() < deadline:
        time.sleep(0.01)
    done = (ran[0] - w0) if ran else None
    time.sleep(1.0)                            # a second callback, if any were added, runs meanwhile
    hu.stop(wait=True, timeout=10)
    st = b.state
    callbacks = sum(n for (status, name), n in hu.store.counts().items() if name == "bench.summary")
    hu.close()
    return {"n": spec["n"], "enqueue_s": enqueued, "to_callback_s": done, "callbacks_ran": len(ran),
            "callback_tasks": callbacks, "status": st.status, "succeeded": st.counts.get("succeeded", 0),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


CHILD_WORKLOADS = {"batch": batch}


# -- the parent ---------------------------------------------------------------------------------

def _peak_rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def celery(runner: Runner, redis_url: str, n: int) -> dict:
    """Celery's chord of ``n`` no-op members on a Redis broker and backend, one worker."""
    d, _, _ = runner.paths("celery")
    log = os.path.join(d, "callbacks.log")
    env = {**Runner.env(), "BENCH_CELERY_BROKER": redis_url, "BENCH_CELERY_LOG": log}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "benchmarks.celery_chord_app", "worker",
                               "-P", "threads", "-c", "8", "--loglevel", "WARNING", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(d, "worker.txt"), "w"))
    try:
        time.sleep(6)                                  # the worker connects
        code = ("import json, resource, sys, time; from celery import chord; "
                "from benchmarks.celery_chord_app import member, summary; t0 = time.perf_counter(); "
                f"w0 = time.time(); chord(member.s(i) for i in range({n}))(summary.s()); "
                "json.dump({'w0': w0, 'enqueue_s': time.perf_counter() - t0, "
                "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, sys.stdout)")
        client = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=1200,
                                capture_output=True, text=True)
        sent = json.loads(client.stdout)
        deadline = time.time() + 1200
        while time.time() < deadline and not _lines(log):
            time.sleep(0.1)
        time.sleep(2.0)                                # a second callback, if any, meanwhile
        worker_rss = _peak_rss_mb(worker.pid)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    lines = _lines(log)
    return {"n": n, "enqueue_s": sent["enqueue_s"],
            "to_callback_s": float(lines[0][0]) - sent["w0"] if lines else None,
            "callbacks_ran": len(lines), "results_in_callback": int(lines[0][1]) if lines else None,
            "client_rss_mb": sent["rss_mb"], "worker_rss_mb": worker_rss}


def _lines(path: str) -> list[list[str]]:
    try:
        with open(path) as fh:
            return [ln.split() for ln in fh.read().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batches", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="10,000 members")
    ap.add_argument("--only", action="append", choices=("timewheel", "celery"))
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    only = set(args.only or ("timewheel", "celery"))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(SCRATCH, f"batches-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    runner = Runner(run_dir)
    doc: dict[str, Any] = {"run": stamp, "n": n, "timewheel_file": [], "timewheel_redis": [], "celery": []}
    from timewheel.testing import RedisServer
    tmp = tempfile.mkdtemp(prefix="batches-redis-")
    server = RedisServer(tmp).start()
    try:
        base = server.url.rsplit("/", 1)[0]
        for rep in range(args.reps):
            if "timewheel" in only:
                res = runner.run({"workload": "batch", "n": n}, "timewheel-file", timeout=1500)
                doc["timewheel_file"].append(res)
                runner.log(f"timewheel, file store, rep {rep}: {res}")
                res = runner.run({"workload": "batch", "n": n, "store": f"{base}/{1 + rep}"},
                                 "timewheel-redis", timeout=1500)
                doc["timewheel_redis"].append(res)
                runner.log(f"timewheel, Redis store, rep {rep}: {res}")
            if "celery" in only:
                res = celery(runner, f"{base}/{8 + rep}", n)
                doc["celery"].append(res)
                runner.log(f"celery chord, rep {rep}: {res}")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = os.path.join(RESULTS, f"batches-{stamp}.json")
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    runner.log(f"-> {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
