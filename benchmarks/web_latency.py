"""Response times of the web view on a big store: every page and JSON endpoint, over HTTP.

    python -m benchmarks.web_latency                      # 1,000,000 pending tasks, 7 requests each
    python -m benchmarks.web_latency --n 100000 --repeat 15 --json
    python -m benchmarks.web_latency --store /scratch/m1.db   # reuse (or keep) a built store

Builds a store of ``n`` pending tasks in chunks of 50,000 (``hu.batch()``, due between one
minute and seven days from now, four task names) plus a few hundred finished, failed and
running ones, starts ``timewheel web --allow-actions`` on it and times each URL ``repeat``
times after one warm-up request (client side: the full HTTP round trip on loopback).  The
target is at most 200 ms each (issue 14).  :func:`measure` is the piece to call from another
harness; it returns ``{url: {"median_ms", "max_ms", "status", "bytes"}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("emails.send", "reports.build", "billing.charge", "media.thumbnail")
TARGET_MS = 200.0


def build(path: str, n: int, chunk: int = 50_000, seed: int = 1) -> float:
    """Fill a new store at ``path`` with ``n`` pending tasks, and some finished ones
    (the failed and misfired pages have something to list); returns seconds taken."""
    from timewheel import TimeWheel
    from timewheel.store import open_store

    hu = TimeWheel(path)
    tasks = [hu.task(name=name)(lambda *a: None) for name in NAMES]
    rng = random.Random(seed)
    now = time.time()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        with hu.batch():
            for j in range(k):
                tasks[j % len(tasks)].schedule(args=(done + j,), eta=now + 60 + rng.random() * 7 * 86400)
        done += k
    hu.close()
    elapsed = time.perf_counter() - t0
    sys.path.insert(0, ROOT)
    from tests.web_server import fill  # tasks in every state, as the web tests use them
    store = open_store(path)
    try:
        fill(store, time.time())
    finally:
        store.close()
    return elapsed


def urls(sample_id: str, slot: int) -> list[str]:
    return ["", "wheel", "wheel?revolutions=1", "timeline", "timeline?hours=168",
            "timeline?name=reports.build", "tasks", "tasks?status=pending",
            "tasks?status=pending&name=billing.charge", f"tasks?status=pending&after={sample_id}",
            f"tasks?id={sample_id}", f"tasks/{sample_id}", "failed", "running", "api/inspect", "api/tasks",
            "api/tasks?status=failed", f"api/tasks/{sample_id}", "api/stats", "api/timeline",
            "api/timeline?hours=168", "api/wheel", f"api/wheel/slots/{slot}", "api/series"]


def _get(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return (time.perf_counter() - t0) * 1000, status, len(body)


def measure(base: str, paths: list[str], repeat: int = 7) -> dict[str, dict[str, Any]]:
    """Median and worst of ``repeat`` timed GETs of each ``base + path`` (after a warm-up)."""
    out = {}
    for path in paths:
        _get(base + path)
        times = []
        for _ in range(repeat):
            ms, status, size = _get(base + path)
            times.append(ms)
        out["/" + path] = {"median_ms": statistics.median(times), "max_ms": max(times), "status": status,
                           "bytes": size}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="pending tasks (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed requests per URL (default 7)")
    ap.add_argument("--store", help="use this store file; built there first if it does not exist")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from tests.web_server import serve
    from timewheel.records import PENDING
    from timewheel.store import open_store

    scratch = None if args.store else tempfile.mkdtemp(prefix="timewheel-web-bench-")
    path = args.store or os.path.join(scratch, "tasks.db")
    try:
        if not os.path.exists(path):
            print(f"building {args.n:,} pending tasks in {path} ...", file=sys.stderr)
            print(f"built in {build(path, args.n):.1f} s", file=sys.stderr)
        store = open_store(path, readonly=True)
        try:
            sample = store.scan(PENDING, limit=500)[-1]
            slot = store.wheel.slot(store.wheel.due_tick(sample.eta))
            pending = sum(n for (s, _), n in store.counts().items() if s == PENDING)
        finally:
            store.close()
        with serve(path, "--allow-actions") as server:
            results = measure(server.url, urls(sample.id, slot), args.repeat)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"pending": pending, "target_ms": TARGET_MS, "results": results}, indent=2))
    else:
        print(f"{pending:,} pending tasks; {args.repeat} requests per URL; target {TARGET_MS:.0f} ms")
        print(f"{'url':52} {'median ms':>10} {'max ms':>8} {'status':>6} {'bytes':>9}")
        for url, r in results.items():
            flag = "" if r["median_ms"] <= TARGET_MS else "  OVER"
            print(f"{url:52} {r['median_ms']:10.1f} {r['max_ms']:8.1f} {r['status']:6} {r['bytes']:9,}{flag}")
    return 0 if all(r["median_ms"] <= TARGET_MS and r["status"] == 200 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
