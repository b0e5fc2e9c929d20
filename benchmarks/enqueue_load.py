"""The ``enqueue-load`` workload: ``delay()`` inside a busy web app (issue 25).

Two kinds of measurement (``Case.params["kind"]``):

* ``load``: ``procs`` processes x ``threads`` threads, every thread enqueueing one task at a
  time (due in 1 h, durable per call) as fast as it can for ``seconds``, all starting at one
  instant (a go file the parent writes once every process has opened its system and said
  READY).  Each call is timed; the rate is every returned call of every process over
  ``seconds``; the latencies are every call's, pooled.  Then a separate process lists what
  the system stored and compares it with every id the threads got back: *lost* (returned,
  not stored), *extra* (stored, never returned) and *duplicated* ids.
  Systems: the file store (``timewheel``, ``timewheel-fsync``) beside Huey's ``SqliteHuey``
  (default ``synchronous=FULL``: an fsync per commit) and raw sqlite3 (one INSERT per commit,
  WAL, ``synchronous=NORMAL``, SQLite's own busy handler: the storage's limit), and on one
  ``redis-server`` (``appendfsync always``) timewheel's Redis store beside ``RedisHuey``, RQ
  (``enqueue_in``) and a bare redis-py ``ZADD`` per call (the limit of one durable round
  trip).  Threads share their process's system (one ``TimeWheel``, one Huey, one Queue, one
  redis-py client), as a web app's request threads do; raw sqlite3 has a connection per
  thread (a connection is not for threads to share).
* ``lateness``: the file store, its runner started; the process itself enqueues ``n`` tasks
  due evenly from *now* to ``spread`` s later, one ``delay()`` at a time, so that the first
  ones come due while it is still enqueueing; lateness = start (inside the task) - eta.

Like :mod:`benchmarks.scale`, this module holds all three sides: the measurement processes'
(:func:`child`, :func:`child_count`, :func:`child_lateness`), the parent's (:func:`measure`)
and the report's (:func:`section`, :func:`targets`, :func:`plots`).
"""

from __future__ import annotations

import array
import os
import shutil
import threading
import time
from typing import Any, Callable

from . import redis_peers, systems, tasks
from .charts import COLORS, lateness_cdf, median_bars, pyplot, save
from .harness import Case, Runner, await_ready, stop_processes, wait_for_file
from .stats import Stat, errors, group, markdown_table, ok, pct, quantiles, stat, verdict, worst
from .workloads import StallProbe, enqueue_each

WORKLOAD = "enqueue-load"
FILE_SYSTEMS = ("timewheel", "timewheel-fsync", "huey", "sqlite3")
REDIS_SYSTEMS = ("timewheel-redis", "huey-redis", "rq", "redis-py")
SHAPES = ((1, 1), (1, 8), (4, 4), (8, 4))          #: processes x threads

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"seconds": 1.0, "shapes": ((1, 1), (1, 8), (4, 4)), "reps": 1,
              "lateness": {"n": 500, "spread": 3.0, "grace": 5.0}, "lateness_reps": 1},
    "full": {"seconds": 3.0, "shapes": SHAPES, "reps": 3,
             "lateness": {"n": 2000, "spread": 10.0, "grace": 10.0}, "lateness_reps": 5},
}
#: how a Redis system is opened by the adapters of :mod:`benchmarks.redis_peers`
_REDIS_ADAPTER = {"timewheel-redis": "timewheel", "huey-redis": "huey", "rq": "rq", "redis-py": "redis-py"}


def _key(system: str, procs: int, threads: int) -> str:
    return f"{system}@{procs}x{threads}"


def plan(mode: str) -> list[Case]:
    """The cases of one mode: every system at every shape, then the lateness (the harness
    interleaves the repetitions across all of them)."""
    s = SIZES[mode]
    cases = [Case(WORKLOAD, system, {"kind": "load", "procs": p, "threads": t, "seconds": s["seconds"]},
                  s["reps"], _key(system, p, t))
             for p, t in s["shapes"] for system in FILE_SYSTEMS + REDIS_SYSTEMS]
    cases.append(Case(WORKLOAD, "timewheel", dict(s["lateness"], kind="lateness"), s["lateness_reps"],
                      "lateness:timewheel"))
    return cases


# -- measurement processes ----------------------------------------------------------------------
def _enqueuers(spec: dict) -> Callable[[], Callable[[int, float], str]]:
    """A maker of one thread's enqueue function (``enqueue(i, due) -> id``) for the system."""
    name = spec["system"]
    if name in REDIS_SYSTEMS:
        adapter = redis_peers.open_system(_REDIS_ADAPTER[name], spec["url"])
        calls = adapter.enqueue_calls
        return lambda: (lambda i, due: calls([(i, due)])[0])
    if name == "sqlite3":                               # a connection per thread
        return lambda: systems.open_system("sqlite3", spec["store"]).enqueue
    shared = systems.open_system(name, spec["store"])
    return lambda: shared.enqueue


def child(spec: dict) -> dict:
    """One process of a ``load`` measurement: open the system (in each thread what a thread
    opens), say READY, wait for the go file (the start instant), enqueue from ``threads``
    threads until ``seconds`` have passed, write the ids got back and every call's latency,
    and leave."""
    make = _enqueuers(spec)
    n = spec["threads"]
    opened, go = threading.Barrier(n + 1), threading.Event()
    start_at: list[float] = []
    lats = [array.array("d") for _ in range(n)]
    ids: list[list[str]] = [[] for _ in range(n)]
    failed: list[str] = []

    def loop(k: int) -> None:
        try:
            enqueue = make()
            # One call before the start, not timed, its id counted as any: a connection (a
            # store opened lazily, redis-py's per thread) is made at the first call.
            ids[k].append(enqueue(-1, time.time() + 3600.0))
        except BaseException as exc:
            failed.append(f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            opened.wait()
        lat, got = lats[k], ids[k]
        now, clock = time.time, time.perf_counter
        go.wait()
        start = start_at[0]
        end = start + spec["seconds"]
        while now() < start:
            time.sleep(0.0005)
        i = 0
        try:
            while now() < end:
                t0 = clock()
                got.append(enqueue(i, now() + 3600.0))
                lat.append(clock() - t0)
                i += 1
        except BaseException as exc:
            failed.append(f"{exc.__class__.__name__}: {exc}")
            raise

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    opened.wait()
    print("READY", flush=True)
    wait_for_file(spec["go"], poll=0.002)
    with open(spec["go"]) as fh:
        start_at.append(float(fh.read()))
    go.set()
    for th in threads:
        th.join()
    if failed:
        return {"error": failed[0]}
    with open(spec["ids"], "w") as fh:
        fh.writelines(f"{i}\n" for got in ids for i in got)
    with open(spec["lat"], "wb") as fh:
        for lat in lats:
            lat.tofile(fh)
    return {"n": sum(len(lat) for lat in lats), "per_thread": [len(lat) for lat in lats], "pid": os.getpid()}


def _stored(spec: dict) -> list[str]:
    """Every task id the system holds."""
    name = spec["system"]
    if name in ("timewheel", "timewheel-fsync", "sqlite3"):
        import sqlite3  # (stdlib; imported here like every system: see benchmarks.child)
        con = sqlite3.connect(f"file:{spec['store']}?mode=ro", uri=True)
        try:
            if name == "sqlite3":
                return [r[0] for r in con.execute("SELECT id FROM q")]
            return [k[2:] for (k,) in con.execute(
                "SELECT key FROM timewheel WHERE key >= 't:' AND key < 't;'")]
        finally:
            con.close()
    if name in ("huey", "huey-redis"):
        # Huey queues a task with an eta (its consumer moves it to its schedule when it sees it)
        huey = (systems.open_system("huey", spec["store"]) if name == "huey"
                else redis_peers.open_system("huey", spec["url"])).huey
        return [t.id for t in huey.pending()] + [t.id for t in huey.scheduled()]
    if name == "rq":
        from rq.registry import ScheduledJobRegistry
        adapter = redis_peers.open_system("rq", spec["url"])
        return ScheduledJobRegistry(queue=adapter.q).get_job_ids()
    import pickle

    import redis
    r = redis.Redis.from_url(spec["url"])
    if name == "redis-py":
        return [pickle.loads(m)[0] for m in r.zrange("raw:q", 0, -1)]
    cut = len("{timewheel}:t:")
    return [k.decode()[cut:] for k in r.scan_iter(match="{timewheel}:t:*", count=10_000)]


def child_count(spec: dict) -> dict:
    """After a ``load`` measurement: the ids the threads got back against what is stored."""
    returned: list[str] = []
    for path in spec["id_files"]:
        with open(path) as fh:
            returned += fh.read().split()
    stored = _stored(spec)
    got, kept = set(returned), set(stored)
    return {"returned": len(returned), "stored": len(stored), "lost": len(got - kept),
            "extra": len(kept - got), "duplicated": (len(returned) - len(got)) + (len(stored) - len(kept))}


def child_lateness(spec: dict) -> dict:
    """The runner started (and settled), this process enqueues ``n`` tasks due evenly from now
    to ``spread`` s on, one ``delay()`` at a time; lateness of each start."""
    n, spread = spec["n"], spec["spread"]
    system = systems.open_system("timewheel", spec["store"])
    system.start()
    time.sleep(1.0)
    t0 = time.time()
    dues = [t0 + spread * k / n for k in range(n)]
    late_enqueued = enqueue_each(system, dues)
    enqueue_s = time.time() - t0
    deadline = dues[-1] + spec["grace"]
    with StallProbe() as probe:
        while len(tasks.records) < n and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)                    # duplicates, if any, would show now
    recs = list(tasks.records)
    lat = sorted(s - d for _, d, s in recs)
    return {"kind": "lateness", "n": n, "ran": len(recs), "unique": len({i for i, _, _ in recs}),
            "early": sum(1 for x in lat if x < 0), "late_enqueued": late_enqueued, "enqueue_s": enqueue_s,
            "machine_stall_max_ms": probe.worst_ms, "machine_stalls": probe.stalls,
            "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "max_ms": (lat[-1] if lat else float("nan")) * 1e3, "cdf_ms": [x * 1e3 for x in quantiles(lat)]}


CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = {
    "enqueue_load": child, "enqueue_load_count": child_count, "enqueue_load_lateness": child_lateness,
}


# -- the parent ---------------------------------------------------------------------------------
def measure(runner: Runner, case: Case) -> dict:
    p = case.params
    if p["kind"] == "lateness":
        return runner.run(dict(p, workload="enqueue_load_lateness", system=case.system), case.key(),
                          timeout=120)
    d, _, _ = runner.paths(case.key().replace("@", "-"))
    where: dict[str, Any] = {"store": os.path.join(d, "store.db")}
    if case.system in REDIS_SYSTEMS:
        bench = redis_peers.bench_for(runner)
        bench.r.flushall()
        where = {"url": bench.url}
    go, stopfile = os.path.join(d, "go"), os.path.join(d, "stop")
    procs, outs, id_files, lat_files = [], [], [], []
    for k in range(p["procs"]):
        outs.append(os.path.join(d, f"out-{k}.json"))
        id_files.append(os.path.join(d, f"ids-{k}.txt"))
        lat_files.append(os.path.join(d, f"lat-{k}.bin"))
        spec = dict(where, workload="enqueue_load", system=case.system, threads=p["threads"],
                    seconds=p["seconds"], go=go, ids=id_files[-1], lat=lat_files[-1], out=outs[-1])
        procs.append(runner.spawn(spec, d, os.path.join(d, f"spec-{k}.json"), pipe=True))
    if await_ready(procs, timeout=120) is None:
        stop_processes(procs, stopfile)
        return {"error": "a process did not get ready",
                "children": [runner.read(o, d).get("error", "")[-300:] for o in outs]}
    load0 = os.getloadavg()[0]
    with open(go + ".tmp", "w") as fh:
        fh.write(repr(time.time() + 0.3))
    os.replace(go + ".tmp", go)
    for proc in procs:
        try:
            proc.wait(p["seconds"] + 120)
        except Exception:   # noqa: BLE001 - a hung child: killed, reported below
            proc.kill()
            proc.wait()
    children = [runner.read(o, d) for o in outs]
    failed = [c["error"] for c in children if "error" in c]
    if failed:
        return {"error": failed[0], "children": failed}
    lat = array.array("d")
    for path in lat_files:
        with open(path, "rb") as fh:
            lat.frombytes(fh.read())
    count = runner.run(dict(where, workload="enqueue_load_count", system=case.system, id_files=id_files),
                       case.key().replace("@", "-") + "-count", timeout=300)
    s = sorted(lat)
    res = {"kind": "load", "procs": p["procs"], "threads": p["threads"], "seconds": p["seconds"],
           "n": len(s), "rate": len(s) / p["seconds"], "p50_ms": pct(s, 50) * 1e3, "p90_ms": pct(s, 90) * 1e3,
           "p99_ms": pct(s, 99) * 1e3, "max_ms": s[-1] * 1e3 if s else None,
           "cdf_ms": [x * 1e3 for x in quantiles(s)], "per_process": [c["n"] for c in children],
           "loadavg_at_go": load0, "count": count}
    shutil.rmtree(d, ignore_errors=True)
    return res


def brief(r: dict) -> str:
    """One line of the harness's progress output."""
    if r.get("kind") == "lateness":
        return (f"ran {r['unique']}/{r['n']} early {r['early']} p50 {r['p50_ms']:.2f} ms "
                f"p99 {r['p99_ms']:.2f} ms max {r['max_ms']:.1f} ms (enqueue {r['enqueue_s']:.2f} s)")
    c = r["count"]
    lost = (f"lost {c['lost']} dup {c['duplicated']} extra {c['extra']}" if "lost" in c
            else f"count ERROR {str(c.get('error'))[:100]}")
    return f"{r['rate']:,.0f}/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} max {r['max_ms']:.1f} ms; {lost}"


# -- report -------------------------------------------------------------------------------------
TITLE = "Enqueue under load: processes × threads calling delay() at once"
NOTE = (
    "`python -m benchmarks --only enqueue-load`. Every thread of every process enqueues one task "
    "at a time (due in 1 h, durable per call) as fast as it can for the same seconds, all starting "
    "at one instant; threads share their process's system as a web app's request threads do (raw "
    "sqlite3: a connection per thread). *tasks/s*: every returned call of every process over the "
    "window; latencies: every call, pooled. *lost / dup / extra*: afterwards a separate process "
    "lists what the system stored and compares it with every id the calls returned. File: "
    "`timewheel` (default durability, `synchronous=NORMAL`), `timewheel-fsync` "
    "(`durability=\"fsync\"`), Huey's `SqliteHuey` (SQLite's default `synchronous=FULL`: an fsync "
    "per commit), raw `sqlite3` (an INSERT per commit, WAL, NORMAL, SQLite's busy handler). "
    "Redis (one `redis-server`, `appendfsync always`): timewheel's Redis store, `RedisHuey`, RQ "
    "`enqueue_in`, and a bare redis-py `ZADD` per call.")


def _g(doc: dict) -> "dict[str, list[dict]]":
    return group(doc, WORKLOAD)


def _rate(g: "dict[str, list[dict]]", system: str, procs: int, threads: int) -> Stat:
    return stat(g.get(_key(system, procs, threads), []), "rate")


def _lost(rs: list[dict]) -> str:
    counts = [r["count"] for r in rs]
    if any("lost" not in c for c in counts):
        return "count failed"
    return f"{sum(c['lost'] for c in counts)} / {sum(c['duplicated'] for c in counts)} / " \
           f"{sum(c['extra'] for c in counts)}"


def table(doc: dict) -> str:
    g = _g(doc)
    rows = []
    shapes = sorted({(m["params"]["procs"], m["params"]["threads"]) for ms in g.values() for m in ms
                     if m["params"]["kind"] == "load"})
    for systems_ in (FILE_SYSTEMS, REDIS_SYSTEMS):
        for system in systems_:
            one = _rate(g, system, 1, 1)
            for p, t in shapes:
                ms = g.get(_key(system, p, t))
                if not ms:
                    continue
                rs = ok(ms)
                rate = stat(ms, "rate")
                rows.append([system, f"{p} × {t}", rate.fmt() if rate else "; ".join(errors(ms))[:80],
                             f"{rate.med / one.med:.2f}×" if rate and one and one.med else "n/a",
                             stat(ms, "p50_ms").fmt("{:.2f}"), stat(ms, "p99_ms").fmt("{:.2f}"),
                             stat(ms, "max_ms").fmt("{:,.1f}"), _lost(rs) if rs else "n/a",
                             stat(ms, "loadavg_at_go").fmt("{:.1f}"), str(len(rs))])
    return markdown_table(["system", "processes × threads", "tasks/s, all together", "vs its 1 × 1",
                           "delay() p50 ms", "p99 ms", "max ms", "lost / dup / extra (all runs)",
                           "load average at start", "runs"], rows) if rows else ""


def table_lateness(doc: dict) -> str:
    ms = _g(doc).get("lateness:timewheel")
    if not ms:
        return ""
    rs = ok(ms)
    return markdown_table(
        ["system", "ran (unique)", "early (all runs)", "p50 ms", "p99 ms", "max ms", "machine stall, max ms",
         "enqueue took, s", "enqueued after their eta", "runs"],
        [["timewheel", stat(ms, "unique").fmt() + (f" / {rs[0]['n']:,}" if rs else ""),
          str(sum(r["early"] for r in rs)), stat(ms, "p50_ms").fmt("{:.2f}"),
          stat(ms, "p99_ms").fmt("{:.2f}"),
          stat(ms, "max_ms").fmt("{:.1f}"), stat(ms, "machine_stall_max_ms").fmt("{:.1f}"),
          stat(ms, "enqueue_s").fmt("{:.2f}"), str(sum(r["late_enqueued"] for r in rs)), str(len(rs))]])


def _best_peer(g: "dict[str, list[dict]]", peers: tuple[str, ...], p: int, t: int) -> tuple[str, Stat]:
    found = [(s, _rate(g, s, p, t)) for s in peers]
    found = [(s, r) for s, r in found if r]
    return max(found, key=lambda sr: sr[1].med) if found else ("none", Stat([]))


def targets(doc: dict) -> list[list[str]]:
    """The issue's targets that the run covered, judged on medians of the runs."""
    g = _g(doc)
    out: list[list[str]] = []
    one, big = _rate(g, "timewheel", 1, 1), g.get(_key("timewheel", 8, 4))
    if one and one.med and big:
        rate, p99, mx = stat(big, "rate"), stat(big, "p99_ms"), stat(big, "max_ms")
        out.append(["enqueue under load, file store, 8 × 4: all together ≥ its 1 × 1 rate, delay() "
                    "p99 ≤ 5 ms, max ≤ 50 ms",
                    f"{rate.med:,.0f}/s = {rate.med / one.med:.2f}× its 1 × 1 ({one.med:,.0f}/s); "
                    f"p99 {p99.fmt('{:.2f}')} ms{worst(p99, 5.0, 'ms')}; max {mx.fmt('{:.1f}')} ms"
                    f"{worst(mx, 50.0, 'ms')}",
                    verdict(rate.med >= one.med and p99.med <= 5.0 and mx.med <= 50.0)])
    late = g.get("lateness:timewheel")
    if late:
        rs = ok(late)
        p99 = Stat(r["p99_ms"] for r in rs)
        early = sum(r["early"] for r in rs)
        n = rs[0]["n"] if rs else 0
        out.append([f"lateness, the running process enqueueing {n:,} tasks due over the next "
                    f"{late[0]['params']['spread']:g} s one delay() at a time: p99 ≤ 2 ms, 0 early",
                    f"p99 {p99.fmt('{:.2f}')} ms{worst(p99, 2.0, 'ms')}; {early} early in {len(rs)} runs",
                    verdict(bool(rs) and p99.med <= 2.0 and early == 0)])
    f1, f8, h8 = (_rate(g, "timewheel-fsync", 1, 1), _rate(g, "timewheel-fsync", 1, 8),
                  _rate(g, "huey", 1, 8))
    if f1 and f1.med and f8:
        got = f"{f8.med:,.0f}/s = {f8.med / f1.med:.2f}× its 1 × 1 ({f1.med:,.0f}/s)"
        good = f8.med >= 4 * f1.med
        if h8:
            got += f"; {f8.med / h8.med:.2f}× SqliteHuey 1 × 8 ({h8.med:,.0f}/s)"
            good = good and f8.med > h8.med
        out.append(['durability="fsync", 1 × 8: ≥ 4× its own 1 × 1, and above SqliteHuey (an fsync '
                    "per commit) at 1 × 8", got, verdict(good and bool(h8))])
    r1, z1 = _rate(g, "timewheel-redis", 1, 1), _rate(g, "redis-py", 1, 1)
    if r1 and z1 and z1.med:
        out.append(["Redis, 1 × 1: ≥ 0.95× a bare redis-py ZADD per call",
                    f"{r1.med / z1.med:.2f}× ({r1.med:,.0f} vs {z1.med:,.0f}/s)",
                    verdict(r1.med >= 0.95 * z1.med)])
    r8 = _rate(g, "timewheel-redis", 1, 8)
    if r1 and r1.med and r8:
        peer, pr = _best_peer(g, ("huey-redis", "rq"), 1, 8)
        got = f"{r8.med:,.0f}/s = {r8.med / r1.med:.2f}× its 1 × 1"
        if pr and pr.med:
            got += f"; {r8.med / pr.med:.2f}× the fastest peer, {peer} ({pr.med:,.0f}/s)"
        out.append(["Redis, 1 × 8: ≥ 3× its own 1 × 1 and ≥ 1.5× the fastest peer (RedisHuey, RQ) at 1 × 8",
                    got, verdict(r8.med >= 3 * r1.med and bool(pr) and r8.med >= 1.5 * pr.med)])
    loads = [m for case, ms in g.items() if case.startswith("timewheel") for m in ms
             if m["params"]["kind"] == "load"]
    if loads:
        rs = ok(loads)
        clean = sum(1 for r in rs if "lost" in r["count"] and r["count"]["lost"] == r["count"]["duplicated"]
                    == r["count"]["extra"] == 0)
        out.append(["enqueue under load: every id a delay() returned stored once, nothing else stored "
                    "(every timewheel run)", f"{clean}/{len(loads)} runs", verdict(clean == len(loads))])
    return out


def section(doc: dict) -> str:
    """The workload's part of RESULTS.md: targets, the load table, the lateness table."""
    parts = []
    tg = targets(doc)
    if tg:
        parts.append(markdown_table(["target", "measured (timewheel)", "verdict"], tg))
    t = table(doc)
    if t:
        parts.append(t)
    lt = table_lateness(doc)
    if lt:
        parts.append("Lateness while the running process itself enqueues (no lead: the first tasks come "
                     "due while it is still enqueueing); *machine stall*: the longest a process that only "
                     "sleeps 1 ms at a time overslept meanwhile.\n\n" + lt)
    return "\n\n".join(parts)


def plots(doc: dict, outdir: str) -> list[str]:
    """``enqueue_load.png``: rate and p99 latency against processes × threads, per system;
    ``enqueue_load_lateness.png``: the self-enqueue lateness CDF."""
    g = _g(doc)
    made: list[str] = []
    shapes = [s for s in SHAPES if any(_key(sy, *s) in g for sy in FILE_SYSTEMS + REDIS_SYSTEMS)]
    if shapes:
        plt = pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), dpi=100)
        colors = {**COLORS, "timewheel-fsync": "#17becf", "timewheel-redis": "#1f77b4",
                  "huey-redis": "#ff7f0e", "rq": "#d62728", "redis-py": "#7f7f7f"}
        for col, systems_ in enumerate((FILE_SYSTEMS, REDIS_SYSTEMS)):
            for row, key in enumerate(("rate", "p99_ms")):
                ax = axes[row][col]
                for system in systems_:
                    points = [(k, stat(g.get(_key(system, *s), []), key)) for k, s in enumerate(shapes)]
                    median_bars(ax, points, color=colors.get(system), label=system)
                ax.set_xticks(range(len(shapes)))
                ax.set_xticklabels([f"{p} × {t}" for p, t in shapes])
                ax.set_xlabel("processes × threads")
                ax.set_yscale("log")
                ax.set_ylabel("tasks/s, all together (log)" if key == "rate" else "delay() p99, ms (log)")
                ax.set_title(("File store" if col == 0 else "Redis, appendfsync always")
                             + (": throughput" if key == "rate" else ": p99 latency"))
                if key == "p99_ms" and col == 0:
                    ax.axhline(5.0, color="red", ls=":", lw=1)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.suptitle("Enqueue under load: median of runs, bars min–max", fontsize=10)
        save(fig, os.path.join(outdir, "enqueue_load.png"))
        made.append("enqueue_load.png")
    late = g.get("lateness:timewheel")
    if late and ok(late):
        lateness_cdf({"timewheel": late}, "unique", 1e-2, 2.0, "lateness = start − eta, ms (log)",
                     "Lateness while the running process enqueues (all runs pooled)",
                     os.path.join(outdir, "enqueue_load_lateness.png"))
        made.append("enqueue_load_lateness.png")
    return made
