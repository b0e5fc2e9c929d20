"""Response times of the web view on a big store: every page and JSON endpoint, over HTTP.

    python -m benchmarks.web_latency                      # 1,000,000 pending tasks, 7 requests each
    python -m benchmarks.web_latency --n 100000 --repeat 15 --json
    python -m benchmarks.web_latency --store /scratch/m1.db   # reuse (or keep) a built store

Builds a store of ``n`` pending tasks (:func:`benchmarks.bigstore.build`: chunks of 50,000
through ``hu.batch()``, due between one minute and seven days from now, four task names, plus
a few dozen finished, failed and running ones), starts ``timewheel web --allow-actions`` on it
and times each URL ``repeat`` times after one warm-up request (client side: the full HTTP
round trip on loopback).  The target is at most 200 ms each (issue 14).  ``python -m
benchmarks --only web`` measures the same inside the benchmark harness (RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from .bigstore import NAMES, WEB_MS, build, measure_web, store_for, time_urls, urls

TARGET_MS = WEB_MS
measure = time_urls            # (base, paths, repeat) -> {url: {"median_ms", "max_ms", ...}}
__all__ = ["NAMES", "TARGET_MS", "build", "measure", "urls", "main"]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="pending tasks (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed requests per URL (default 7)")
    ap.add_argument("--store", help="use this store file; built there first if it does not exist")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    with store_for(args.store, args.n, "timewheel-web-bench-") as path:
        out = measure_web(path, args.repeat)
    results = out["results"]
    if args.json:
        print(json.dumps({"pending": out["pending"], "target_ms": TARGET_MS, "results": results}, indent=2))
    else:
        print(f"{out['pending']:,} pending tasks; {args.repeat} requests per URL; target {TARGET_MS:.0f} ms")
        print(f"{'url':52} {'median ms':>10} {'max ms':>8} {'status':>6} {'bytes':>9}")
        for url, r in results.items():
            flag = "" if r["median_ms"] <= TARGET_MS else "  OVER"
            print(f"{url:52} {r['median_ms']:10.1f} {r['max_ms']:8.1f} {r['status']:6} {r['bytes']:9,}{flag}")
    return 0 if all(r["median_ms"] <= TARGET_MS and r["status"] == 200 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
