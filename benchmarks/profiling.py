"""cProfile of timewheel's enqueue paths, to explain the targets it misses.

``python -m benchmarks.profiling [--n N] [--batch-n N] [--lateness RUNS] [--only-lateness]`` runs,
each in a fresh process like the benchmarks, (1) ``N`` per-call ``delay()`` and (2) one
``hu.batch()`` of ``batch-n`` tasks, under cProfile, and for comparison the same with raw
sqlite3.  It writes the top functions to ``benchmarks/results/profile-*.txt`` and prints where
the time goes: inside SQLite (``execute``/``executemany``) versus Python around it; then the
same paths timed piece by piece without the profiler, SQLite statements alone, and a lateness
probe that times every SQLite call and boss phase to find what delays late tasks.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import sys
from typing import Callable

from .cli import RESULTS, SCRATCH, Runner

_SQLITE_CALLS = ("execute' of 'sqlite3.Connection", "executemany' of 'sqlite3.Connection",
                 "execute' of 'sqlite3.Cursor", "executemany' of 'sqlite3.Cursor")


def _sqlite_time(stats: pstats.Stats) -> float:
    total = 0.0
    for (_file, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if any(s in name for s in _SQLITE_CALLS):
            total += tt
    return total


def profile(runner: Runner, system: str, n: int, batch: bool, tag: str) -> dict:
    d = os.path.join(runner.run_dir, tag)
    os.makedirs(d, exist_ok=True)
    prof = os.path.join(RESULTS, f"profile-{tag}.prof")
    res = runner.run({"workload": "enqueue", "system": system, "n": n, "batch": batch,
                      "profile": prof, "store": os.path.join(d, "store.db")}, tag)
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    in_sqlite = _sqlite_time(st)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    head = (f"# {tag}: {system}, {n:,} tasks, {'batch' if batch else 'per call'}\n"
            f"# rate under the profiler {res.get('rate', 0):,.0f}/s; profiled total {total:.3f}s, "
            f"inside sqlite3 execute/executemany {in_sqlite:.3f}s ({100 * in_sqlite / total:.0f}%), "
            f"per task: total {1e6 * total / n:.1f} us, sqlite {1e6 * in_sqlite / n:.1f} us, "
            f"python {1e6 * (total - in_sqlite) / n:.1f} us\n\n")
    with open(os.path.join(RESULTS, f"profile-{tag}.txt"), "w") as fh:
        fh.write(head + buf.getvalue())
    print(head.strip())
    return {"total": total, "sqlite": in_sqlite}


def breakdown(n: int, store_dir: str) -> list[str]:
    """Where one enqueue's time goes, measured without a profiler (which inflates Python
    calls far more than the C calls into SQLite), in this process, on a fresh store."""
    import pickle
    import time

    from timewheel import TimeWheel
    from timewheel.store import sqlite as tws

    from . import tasks

    def per(fn: "Callable[[int], object]", k: int = n) -> float:
        t0 = time.perf_counter()
        for i in range(k):
            fn(i)
        return (time.perf_counter() - t0) / k * 1e6

    path = os.path.join(store_dir, "breakdown.db")
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    hu = TimeWheel(path, workers=4)
    t = hu.task(name="benchmarks.run")(tasks.run)
    due = time.time() + 3600
    store = hu.store
    lines = []
    full = per(lambda i: t.delay(i, due + i * 1e-3, eta=due + i * 1e-3))
    lines.append(f"delay(), per call, whole: {full:.1f} us")
    sig = t._signature
    lines.append(f"  inspect.Signature.bind: {per(lambda i: sig.bind(i, due)):.1f} us")
    lines.append(f"  pickle of (args, kwargs): "
                 f"{per(lambda i: pickle.dumps(((i, due), {}), protocol=5)):.1f} us")
    real_add = store.add
    store.add = lambda recs: None        # type: ignore[method-assign]
    py = per(lambda i: t.delay(i, due + i * 1e-3, eta=due + i * 1e-3))
    store.add = real_add                 # type: ignore[method-assign]
    lines.append(f"  everything but store.add (Python): {py:.1f} us")
    recs = []
    store.add = lambda r: recs.extend(r)  # type: ignore[method-assign]
    per(lambda i: t.delay(i, due + 100 + i * 1e-3, eta=due + 100 + i * 1e-3))
    store.add = real_add                 # type: ignore[method-assign]
    params = [(tws.tkey(r.id), tws.encode_record(r), store._wkey(r.id, r.eta, store.wheel.due_tick(r.eta)),
               "l:" + r.id, r.eta, store.wheel.due_tick(r.eta)) for r in recs]
    con = store._conn()
    sql = per(lambda i: con.execute(tws._ADD_ONE, params[i]))
    lines.append(f"  store.add's one INSERT..SELECT (2 rows + horizon check), SQLite only: {sql:.1f} us")
    lines.append(f"  so store.add's own Python (encode, keys, due_tick, locks, context managers): "
                 f"~{full - py - sql:.1f} us")
    # batch
    recs.clear()
    store.add = lambda r: recs.extend(r)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    with hu.batch():
        for i in range(n):
            t.delay(i, due + 200 + i * 1e-3, eta=due + 200 + i * 1e-3)
    py_batch = (time.perf_counter() - t0) / n * 1e6
    store.add = real_add                 # type: ignore[method-assign]
    t0 = time.perf_counter()
    store.add(recs)
    add_batch = (time.perf_counter() - t0) / n * 1e6
    lines.append(f"batch: delay() inside hu.batch() (Python, records only): {py_batch:.1f} us per task")
    lines.append(f"batch: store.add(records) (encode + keys + multi-row INSERTs): "
                 f"{add_batch:.1f} us per task")
    hu.close()
    return lines


def sql_variants(n: int, store_dir: str, reps: int = 5) -> list[str]:
    """SQLite alone (parameters prepared up front): timewheel's statements on its table shape
    (sqlitedict's rowid table + an automatic index on ``key``) versus a ``WITHOUT ROWID``
    table, versus the raw benchmark's one row per task.  Interleaved, median of ``reps``."""
    import sqlite3
    import statistics
    import time

    from timewheel.store import sqlite as tws

    blob = bytes(200)                 # about the size of an encoded record with small args
    now = time.time() + 3600
    rows = []
    for i in range(n):
        eta = now + i * 1e-3
        t = int(eta) + 1
        tid = f"{i:016x}{i:08x}"
        rows.append((f"t:{tid}", blob, f"w:{t % 3600:06d}:{t // 3600:015d}:{round(eta * 1e6):018d}:{tid}",
                     "l:" + tid, eta, t))

    def fresh(name: str, ddl: list[str]) -> sqlite3.Connection:
        path = os.path.join(store_dir, name + ".db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        for stmt in ddl:
            con.execute(stmt)
        return con

    kv = ['CREATE TABLE "timewheel" (key TEXT PRIMARY KEY, value BLOB)',
          "INSERT INTO \"timewheel\" VALUES ('m:horizon', 0)"]
    kv_wr = [kv[0] + " WITHOUT ROWID", kv[1]]
    raw = ["CREATE TABLE q (id TEXT PRIMARY KEY, eta REAL NOT NULL, payload BLOB NOT NULL)",
           "CREATE INDEX q_eta ON q (eta)"]
    two = 'INSERT INTO "timewheel" (key, value) VALUES (?,?),(?,?)'

    def multi_row(con: sqlite3.Connection) -> None:
        con.execute("BEGIN")
        for i in range(0, n, 200):          # 200 tasks = 400 rows per statement, as store.add does
            part = rows[i:i + 200]
            sql = 'INSERT INTO "timewheel" (key, value) VALUES ' + ",".join(["(?,?)"] * (2 * len(part)))
            con.execute(sql, [v for r in part for v in (r[0], r[1], r[2], b"")])
        con.execute("COMMIT")

    def em(con: sqlite3.Connection) -> None:
        con.execute("BEGIN")
        con.executemany('INSERT INTO "timewheel" (key, value) VALUES (?,?)',
                        (kv_ for r in rows for kv_ in ((r[0], r[1]), (r[2], b""))))
        con.execute("COMMIT")

    def raw_em(con: sqlite3.Connection) -> None:
        con.execute("BEGIN")
        con.executemany("INSERT INTO q VALUES (?,?,?)", ((r[0], r[4], r[1]) for r in rows))
        con.execute("COMMIT")

    variants: dict[str, tuple[list[str], Callable[[sqlite3.Connection], None]]] = {
        "per call: store.add's INSERT..SELECT (2 rows + horizon check), sqlitedict table":
            (kv, lambda c: [c.execute(tws._ADD_ONE, r) for r in rows] and None),
        "per call: same statement, WITHOUT ROWID table":
            (kv_wr, lambda c: [c.execute(tws._ADD_ONE, r) for r in rows] and None),
        "per call: plain 2-row INSERT, sqlitedict table":
            (kv, lambda c: [c.execute(two, (r[0], r[1], r[2], b"")) for r in rows] and None),
        "per call: raw benchmark's 1-row INSERT (pk + eta index)":
            (raw, lambda c: [c.execute("INSERT INTO q VALUES (?,?,?)", (r[0], r[4], r[1])) for r in rows]
             and None),
        "batch: store.add's 400-row INSERTs, sqlitedict table": (kv, multi_row),
        "batch: same, WITHOUT ROWID table": (kv_wr, multi_row),
        "batch: executemany 2 rows per task, sqlitedict table": (kv, em),
        "batch: executemany 2 rows per task, WITHOUT ROWID": (kv_wr, em),
        "batch: raw benchmark's executemany (1 row per task)": (raw, raw_em),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, (ddl, fn) in variants.items():
            con = fresh("variant", ddl)
            t0 = time.perf_counter()
            fn(con)
            times[k].append(time.perf_counter() - t0)
            con.close()
    out = [f"SQLite only, {n:,} tasks, median of {reps} interleaved runs (us per task, tasks/s):"]
    for k, ts in times.items():
        med = statistics.median(ts)
        out.append(f"  {k}: {1e6 * med / n:.1f} us  ({n / med:,.0f}/s)")
    return out


def lateness_probe(runs: int = 3, n: int = 2000, spread: float = 10.0, slow_ms: float = 5.0) -> list[str]:
    """The lateness workload on timewheel, in this process, with every SQLite call of the store
    and every phase of the boss's step timed (wall clock, lock waits included): which calls are
    slow when a task starts more than ``slow_ms`` late."""
    import statistics
    import tempfile
    import time
    from collections import defaultdict

    from timewheel import TimeWheel
    from timewheel import boss as twboss
    from timewheel.store import sqlite as tws

    from . import tasks

    slow: list[tuple[float, str, float]] = []      # (when, what, ms)

    def timed(fn: Callable, what: Callable[..., str]) -> Callable:
        def wrapper(*a: object, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                ms = (time.perf_counter() - t0) * 1e3
                if ms >= slow_ms:
                    slow.append((time.time(), what(*a), ms))
        return wrapper

    conn = tws._Connection
    patched = {}
    for name in ("execute", "select", "select_one", "executemany"):
        if hasattr(conn, name):
            patched[(conn, name)] = getattr(conn, name)
            setattr(conn, name, timed(getattr(conn, name),
                                      lambda self, req, *a, _n=name: f"sql {_n}: {str(req)[:60]}"))
    for name in ("_record_outcomes", "_maintain", "_load", "_dispatch"):
        if hasattr(twboss.Boss, name):
            patched[(twboss.Boss, name)] = getattr(twboss.Boss, name)
            setattr(twboss.Boss, name, timed(getattr(twboss.Boss, name),
                                             lambda self, *a, _n=name: f"boss.{_n}"))
    out = [f"lateness probe: {runs} runs of {n} tasks over {spread:g} s, calls >= {slow_ms:g} ms:"]
    try:
        for r in range(runs):
            slow.clear()
            tasks.records.clear()
            with tempfile.TemporaryDirectory(dir=os.path.join(SCRATCH)) as d:
                hu = TimeWheel(os.path.join(d, "probe.db"), workers=4)
                t = hu.task(name="benchmarks.run")(tasks.run)
                hu.start()
                t0 = time.time()
                dues = [t0 + 2.0 + spread * k / n for k in range(n)]
                for k, due in enumerate(dues):
                    t.delay(k, due, eta=due)
                while len(tasks.records) < n and time.time() < dues[-1] + 10:
                    time.sleep(0.05)
                hu.stop(wait=True)
                hu.close()
            lat = sorted((s_ - d_) * 1e3 for _, d_, s_ in tasks.records)
            late = [(s_, (s_ - d_) * 1e3) for _, d_, s_ in tasks.records if (s_ - d_) * 1e3 >= slow_ms]
            out.append(f"  run {r + 1}: p50 {statistics.median(lat):.2f} ms, p99 "
                       f"{lat[int(0.99 * len(lat)) - 1]:.2f} ms, max {lat[-1]:.1f} ms, "
                       f"{len(late)} tasks >= {slow_ms:g} ms late")
            groups: dict[str, list[float]] = defaultdict(list)
            for _, what, ms in slow:
                groups[what].append(ms)
            for what, mss in sorted(groups.items(), key=lambda kv: -max(kv[1]))[:8]:
                out.append(f"      {len(mss):4d}x max {max(mss):7.1f} ms  {what}")
            if late:
                worst = max(late, key=lambda x: x[1])
                near = [f"{what} {ms:.0f} ms" for when, what, ms in slow if abs(when - worst[0]) < 0.3]
                out.append(f"      worst task ({worst[1]:.1f} ms late) coincides with: "
                           f"{'; '.join(near[:6]) or 'no slow call within 0.3 s'}")
    finally:
        for (owner, name), fn in patched.items():
            setattr(owner, name, fn)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch-n", type=int, default=100_000)
    ap.add_argument("--lateness", type=int, default=3, metavar="RUNS",
                    help="runs of the lateness probe (0: skip)")
    ap.add_argument("--only-lateness", action="store_true", help="run only the lateness probe")
    args = ap.parse_args(argv[1:])
    os.makedirs(RESULTS, exist_ok=True)
    if args.only_lateness:
        os.makedirs(SCRATCH, exist_ok=True)
        lines = lateness_probe(args.lateness or 3)
        with open(os.path.join(RESULTS, "profile-lateness.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    runner = Runner(os.path.join(SCRATCH, "profiling"))
    os.makedirs(runner.run_dir, exist_ok=True)
    for system in ("timewheel", "sqlite3"):
        profile(runner, system, args.n, False, f"{system}-per-call")
        profile(runner, system, args.batch_n, True, f"{system}-batch")
    lines = breakdown(args.n, runner.run_dir) + sql_variants(args.n, runner.run_dir)
    if args.lateness:
        lines += lateness_probe(args.lateness)
    with open(os.path.join(RESULTS, "profile-breakdown.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(runner.run_dir, ignore_errors=True)
    print(f"details: {os.path.relpath(RESULTS)}/profile-*.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
