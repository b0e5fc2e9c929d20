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
import pickle
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Callable

from timewheel import TimeWheel
from timewheel import boss as twboss
from timewheel.records import encode_record
from timewheel.store import connection as twconn
from timewheel.store import sqlite as tws
from timewheel.store.base import eta_us
from timewheel.store.connection import SCHEMA
from timewheel.store.sqlite_format import horizon_of

from . import tasks
from .harness import RESULTS, SCRATCH, Runner
from .systems import SqliteSystem

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


def breakdown(n: int, batch_n: int, store_dir: str, reps: int = 5) -> list[str]:
    """Where one enqueue's time goes, measured without a profiler (which inflates Python
    calls far more than the C calls into SQLite), in this process, each piece on a fresh
    store, pieces interleaved, median of ``reps``; raw sqlite3 measured alongside."""
    seq = [0]

    def fresh() -> tuple[TimeWheel, object]:
        seq[0] += 1
        path = os.path.join(store_dir, f"breakdown-{seq[0]}.db")
        hu = TimeWheel(path, workers=4)
        t = hu.task(name="benchmarks.run")(tasks.run)
        hu.now()                         # opens the store: not part of any piece
        return hu, t

    def records(k: int, base: float) -> list:
        """The records delay() builds, store.add stubbed."""
        hu, t = fresh()
        out: list = []
        hu.store.add = lambda recs, existing="fail": out.extend(recs) or list(recs)  # type: ignore[method-assign]
        with hu.batch():
            for i in range(k):
                t.delay(i, base + i * 1e-3, eta=base + i * 1e-3)
        hu.close()
        return out

    def rows(st: object, recs: list, fresh_pos: bool) -> list[tuple]:
        """(key, value, pos, name) as SqliteDictStore.add writes them."""
        w = st.wheel  # type: ignore[attr-defined]
        with st.file.reading():  # type: ignore[attr-defined]
            horizon = horizon_of(st.file)  # type: ignore[attr-defined]
        out = []
        for r in recs:
            t = w.due_tick(r.eta)
            cell = (f"n:{t % w.slots:06d}:{t // w.slots:015d}:" if fresh_pos else
                    "q:" if t <= horizon else f"p:{t % w.slots:06d}:{t // w.slots:015d}:")
            out.append(("t:" + r.id, bytearray(encode_record(r)),
                        f"{cell}{eta_us(r.eta):018d}" + (":" + r.name if fresh_pos else ""), r.name))
        return out

    def timed(fn: "Callable[[], object]", k: int) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / k * 1e6

    pieces: dict[str, list[float]] = {}

    def note(name: str, us: float) -> None:
        pieces.setdefault(name, []).append(us)

    def measure(base: float) -> None:
        # -- per call: delay() committed on its own
        hu, t = fresh()
        note("call: delay(), whole", timed(lambda: [t.delay(i, base + i * 1e-3, eta=base + i * 1e-3)
                                                   for i in range(n)], n))
        hu.close()
        hu, t = fresh()
        hu.store.add = lambda recs, existing="fail": list(recs)  # type: ignore[method-assign]
        note("call: delay() with store.add stubbed (the API: checks, pickle, record, handle)",
             timed(lambda: [t.delay(i, base + i * 1e-3, eta=base + i * 1e-3) for i in range(n)], n))
        hu.close()
        recs = records(n, base)
        hu, t = fresh()
        st = hu.store
        note("call: store.add([rec]) (SqliteDictStore.add, SQLite included)",
             timed(lambda: [st.add([r]) for r in recs], n))
        hu.close()
        hu, t = fresh()
        con = hu.store.file.conn()._con                          # type: ignore[attr-defined]
        params = rows(hu.store, recs, fresh_pos=True)
        note("call: its INSERT alone, autocommitted (SQLite, commit included)",
             timed(lambda: [con.execute(tws._ADD, p) for p in params], n))
        hu.close()
        raw = SqliteSystem(os.path.join(store_dir, f"raw-call-{seq[0]}.db"))
        note("call: raw sqlite3, one autocommitted INSERT (benchmarks.systems)",
             timed(lambda: [raw.enqueue(i, base + i * 1e-3) for i in range(n)], n))
        raw.stop()
        # -- batch: one with hu.batch() block
        hu, t = fresh()

        def whole() -> None:
            with hu.batch():
                for i in range(batch_n):
                    t.delay(i, base + i * 1e-3, eta=base + i * 1e-3)
        note("batch: with hu.batch(): delay()..., whole", timed(whole, batch_n))
        hu.close()
        hu, t = fresh()
        hu.store.add = lambda recs, existing="fail": list(recs)  # type: ignore[method-assign]
        note("batch: the same with store.add stubbed (the API)", timed(whole, batch_n))
        hu.close()
        recs = records(batch_n, base)
        hu, t = fresh()
        st = hu.store
        note("batch: store.add(records) (SqliteDictStore.add, SQLite included)",
             timed(lambda: st.add(recs), batch_n))
        hu.close()
        hu, t = fresh()
        st = hu.store
        real_x = st.file.x                                       # type: ignore[attr-defined]
        insert = f'INSERT INTO "{tws.TABLE}" (key'
        st.file.x = lambda sql, p=(): 0 if sql.startswith(insert) else real_x(sql, p)  # type: ignore[attr-defined]
        note("batch: store.add(records) with its row INSERTs stubbed (its Python)",
             timed(lambda: st.add(recs), batch_n))
        hu.close()
        hu, t = fresh()
        con = hu.store.file.conn()._con                          # type: ignore[attr-defined]
        flat = [v for row in rows(hu.store, recs, fresh_pos=False) for v in row]

        def sql_only() -> None:
            con.execute("BEGIN IMMEDIATE")
            for i in range(0, len(flat), 4 * tws._CHUNK):
                part = flat[i:i + 4 * tws._CHUNK]
                con.execute(tws._insert_rows(len(part) // 4), part)
            con.execute("COMMIT")
        note("batch: its 400-row INSERTs alone, one transaction (SQLite, commit included)",
             timed(sql_only, batch_n))
        hu.close()
        raw = SqliteSystem(os.path.join(store_dir, f"raw-batch-{seq[0]}.db"))
        note("batch: raw sqlite3 executemany, one transaction (benchmarks.systems)",
             timed(lambda: raw.enqueue_batch((i, base + i * 1e-3) for i in range(batch_n)), batch_n))
        raw.stop()
        t0 = time.perf_counter()
        for i in range(batch_n):
            pickle.dumps(((i, base), {}), protocol=5)
        note("batch: of which pickling the arguments (both do it)",
             (time.perf_counter() - t0) / batch_n * 1e6)
        for name in os.listdir(store_dir):
            if name.startswith(("breakdown-", "raw-")):
                os.remove(os.path.join(store_dir, name))

    for _ in range(reps):
        measure(time.time() + 3600)
    out = [f"Per task, us, median of {reps} interleaved runs ({n:,} per-call tasks, {batch_n:,} in a batch); "
           "sqlite3 " + sqlite3.sqlite_version + ":"]
    for name, values in pieces.items():
        out.append(f"  {statistics.median(values):6.2f}  {name}")
    return out


def sql_variants(n: int, store_dir: str, reps: int = 5) -> list[str]:
    """SQLite alone (parameters prepared up front), timewheel's row against the raw benchmark's:
    per call and in one transaction, the record bound as bytes or as a bytearray.
    Interleaved, median of ``reps``."""
    blob = bytes(150)                 # about the size of an encoded record with small args
    now = time.time() + 3600
    rows = []
    for i in range(n):
        eta = now + i * 1e-3
        t = int(eta) + 1
        tid = f"{i:016x}{i:08x}"
        rows.append((f"t:{tid}", blob, f"p:{t % 3600:06d}:{t // 3600:015d}:{round(eta * 1e6):018d}",
                     "benchmarks.run", eta))

    def fresh(ddl: "list[str] | tuple[str, ...]") -> sqlite3.Connection:
        path = os.path.join(store_dir, "variant.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        for stmt in ddl:
            con.execute(stmt)
        return con

    raw = ["CREATE TABLE q (id TEXT PRIMARY KEY, eta REAL NOT NULL, payload BLOB NOT NULL)",
           "CREATE INDEX q_eta ON q (eta)"]

    def multi_row(as_bytearray: bool) -> "Callable[[sqlite3.Connection], None]":
        def run(con: sqlite3.Connection) -> None:
            con.execute("BEGIN")
            for i in range(0, n, tws._CHUNK):
                con.execute(tws._insert_rows(len(rows[i:i + tws._CHUNK])),
                            [v for r in rows[i:i + tws._CHUNK]
                             for v in (r[0], bytearray(r[1]) if as_bytearray else r[1], r[2], r[3])])
            con.execute("COMMIT")
        return run

    def em(sql: str, make: "Callable[[tuple], tuple]") -> "Callable[[sqlite3.Connection], None]":
        def run(con: sqlite3.Connection) -> None:
            con.execute("BEGIN")
            con.executemany(sql, (make(r) for r in rows))
            con.execute("COMMIT")
        return run

    variants: dict[str, tuple] = {
        "per call: timewheel's 1-row INSERT (key pk + pos index), bytes": (
            SCHEMA[:2], lambda c: [c.execute(tws._ADD, r[:4]) for r in rows] and None),
        "per call: the same, bytearray": (
            SCHEMA[:2], lambda c: [c.execute(tws._ADD, (r[0], bytearray(r[1]), r[2], r[3])) for r in rows]
            and None),
        "per call: raw benchmark's 1-row INSERT (rowid + pk + eta index)": (
            raw, lambda c: [c.execute("INSERT INTO q VALUES (?,?,?)", (r[0], r[4], r[1][:40])) for r in rows]
            and None),
        "batch: timewheel's 400-row INSERTs, bytes": (SCHEMA[:2], multi_row(False)),
        "batch: the same, bytearray (as store.add)": (SCHEMA[:2], multi_row(True)),
        "batch: executemany of timewheel's rows, bytearray": (
            SCHEMA[:2], em(tws._ADD, lambda r: (r[0], bytearray(r[1]), r[2], r[3]))),
        "batch: raw benchmark's executemany (payload ~40 bytes, bytes)": (
            raw, em("INSERT INTO q VALUES (?,?,?)", lambda r: (r[0], r[4], r[1][:40]))),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, (ddl, fn) in variants.items():
            con = fresh(ddl)
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

    # timewheel's internals, by name: a name that is gone (renamed since) is reported, not timed
    conn = twconn._Connection
    patched = {}
    missing = []
    for name in ("execute", "run", "select", "select_one", "executemany", "commit"):
        if hasattr(conn, name):
            patched[(conn, name)] = getattr(conn, name)
            setattr(conn, name, timed(getattr(conn, name),
                                      lambda self, req, *a, _n=name: f"sql {_n}: {str(req)[:60]}"))
        else:
            missing.append(f"{conn.__name__}.{name}")
    for name in ("_lead", "_tick", "_work", "_renew"):     # the phases of Boss.step
        if hasattr(twboss.Boss, name):
            patched[(twboss.Boss, name)] = getattr(twboss.Boss, name)
            setattr(twboss.Boss, name, timed(getattr(twboss.Boss, name),
                                             lambda self, *a, _n=name: f"boss.{_n}"))
        else:
            missing.append(f"Boss.{name}")
    out = [f"lateness probe: {runs} runs of {n} tasks over {spread:g} s, calls >= {slow_ms:g} ms:"]
    if missing:
        out.append(f"  not timed (no longer in timewheel): {', '.join(missing)}")
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
    lines = breakdown(args.n, args.batch_n, runner.run_dir) + sql_variants(args.n, runner.run_dir)
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
