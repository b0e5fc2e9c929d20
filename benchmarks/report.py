"""Turn a results JSON into tables, target verdicts, ``RESULTS.md`` and plots.

``python -m benchmarks.report [RESULTS.json]`` -- default: the newest complete full run in
``benchmarks/results/``.  ``benchmarks/ANALYSIS.md`` (hand-written: profiling of the targets
timewheel misses) is appended to RESULTS.md verbatim when present.

``python -m benchmarks.report --only WORKLOAD RESULTS.json`` rewrites only that workload's
section of RESULTS.md (and its plots) from a run of it alone (``python -m benchmarks --only
WORKLOAD`` does so itself), for the workloads of :data:`PARTIAL`: their section stands on its
own (targets included) between ``<!-- section:... -->`` marks, and says which run it is from.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Callable, Optional

from . import bigstore_report, enqueue_load, pg_report, redis_report, scale
from .charts import COLORS, burst_drain, lateness_cdf, median_bars, pyplot, save
from .harness import HERE, RESULTS
from .stats import (
    Stat,
    case_number,
    case_system,
    errors,
    group,
    markdown_table,
    ok,
    ratio,
    stat,
    verdict,
    worst,
)
from .suite import WORKLOAD_ORDER

PLOTS_DIR = os.path.join(HERE, "plots")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
ANALYSIS_MD = os.path.join(HERE, "ANALYSIS.md")


# -- per-workload tables ----------------------------------------------------------------------
def table_enqueue(doc: dict, workload: str) -> str:
    g = group(doc, workload)
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        tw = stat(g.get(f"timewheel@{case_number(case)}", []), "rate")
        s = stat(ms, "rate")
        rows.append([case_system(case), f"{case_number(case):,}",
                     s.fmt() if s else "; ".join(errors(ms)) or "n/a", ratio(s.med, tw.med),
                     f"{tw.med / s.med:.2f}×" if s and tw else "n/a", str(len(ok(ms)))])
    return markdown_table(["system", "tasks", "tasks/s median (min–max)", "rate vs timewheel",
                           "timewheel is … faster", "runs"], rows)


def table_pending(doc: dict) -> str:
    g = group(doc, "pending")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        s = stat(ms, "rate")
        empty = stat(g.get(f"{case_system(case)}@0", []), "rate")
        rows.append([case_system(case), f"{case_number(case):,}", s.fmt(),
                     f"{empty.med / s.med:.2f}×" if s and empty else "n/a", str(len(ok(ms)))])
    return markdown_table(["system", "already pending", "enqueue tasks/s median (min–max)",
                           "slower than empty store by", "runs"], rows)


def table_builds(doc: dict) -> str:
    if not doc.get("builds"):
        return ""
    rows = [[b["system"], f"{b['n']:,}", f"{b['rate']:,.0f}", f"{b['seconds']:.1f}",
             f"{b['bytes'] / 2**20:,.0f}"] for b in doc["builds"]]
    return markdown_table(["system", "tasks", "tasks/s", "seconds", "file MiB"], rows)


def table_startup(doc: dict) -> str:
    g = group(doc, "startup")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rows.append([case_system(case), f"{case_number(case):,}",
                     stat(ms, "first_tick_s").fmt("{:.1f}", 1e3) if stat(ms, "first_tick_s") else "n/a",
                     stat(ms, "first_task_s").fmt("{:.1f}", 1e3),
                     stat(ms, "rss_kib").fmt("{:.1f}", 1 / 1024), stat(ms, "hwm_kib").fmt("{:.1f}", 1 / 1024),
                     stat(ms, "rss_python_kib").fmt("{:.1f}", 1 / 1024),
                     stat(ms, "idle_cpu_per_10s").fmt("{:.4f}"), stat(ms, "threads").fmt("{:.0f}"),
                     str(len(ok(ms)))])
    return markdown_table(["system", "pending", "start() → first tick, ms", "start() → first task run, ms",
                           "RSS MiB", "peak RSS MiB", "bare interpreter MiB", "idle CPU-s per 10 s",
                           "threads", "runs"], rows)


def table_lateness(doc: dict) -> str:
    g = group(doc, "lateness")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rs = ok(ms)
        rows.append([case, stat(ms, "ran").fmt() + f" / {rs[0]['n']:,}" if rs else "n/a",
                     str(sum(r["early"] for r in rs)), stat(ms, "p50_ms").fmt("{:,.1f}"),
                     stat(ms, "p99_ms").fmt("{:,.1f}"), stat(ms, "max_ms").fmt("{:,.1f}"),
                     stat(ms, "machine_stall_max_ms").fmt("{:,.1f}"),
                     str(sum(r["late_enqueued"] for r in rs)), str(len(rs))])
    return markdown_table(["system", "ran", "early (all runs)", "p50 ms", "p99 ms", "max ms",
                           "machine stall, max ms", "enqueued after their eta", "runs"], rows)


def table_burst(doc: dict) -> str:
    g = group(doc, "burst")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rs = ok(ms)
        rows.append([case, stat(ms, "ran").fmt() + (f" / {rs[0]['n']:,}" if rs else ""),
                     stat(ms, "first_s").fmt("{:.3f}"), stat(ms, "p50_s").fmt("{:.3f}"),
                     stat(ms, "last_s").fmt("{:.3f}"), stat(ms, "enqueue_s").fmt("{:.2f}"),
                     stat(ms, "margin_s").fmt("{:.2f}"), str(sum(r["early"] for r in rs)), str(len(rs))])
    return markdown_table(["system", "ran", "first start after due, s", "median start, s", "last start, s",
                           "enqueue took, s", "stored this long before due, s", "early", "runs"], rows)


def table_kill(doc: dict) -> str:
    g = group(doc, "kill")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rs = ok(ms)
        rows.append([case, f"{sum(1 for r in rs if r['all_ran'])}/{len(ms)}",
                     stat(ms, "unique").fmt() + (f" / {rs[0]['n']:,}" if rs else ""),
                     stat(ms, "missing").fmt(), stat(ms, "duplicates").fmt(),
                     str(sum(r["runs_before_kill"] for r in rs)), str(sum(r["early"] for r in rs)),
                     stat(ms, "recovery_s").fmt("{:.2f}")])
    return markdown_table(["system", "runs with every task once", "tasks run (unique)", "lost",
                           "duplicate runs", "ran before the kill", "early", "restart → last run, s"], rows)


def table_multi(doc: dict) -> str:
    g = group(doc, "multiproc")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rs = ok(ms)
        hist: dict[str, int] = {}
        for r in rs:
            for k, v in r["runs_per_task_histogram"].items():
                hist[k] = hist.get(k, 0) + v
        hist_s = ", ".join(f"{k}×: {v:,}" for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))
        exact = sum(1 for r in rs if r["missing"] == 0 and r["duplicates"] == 0)
        rows.append([case, f"{exact}/{len(ms)}",
                     stat(ms, "unique").fmt() + (f" / {rs[0]['n']:,}" if rs else ""),
                     stat(ms, "runs").fmt(), hist_s or "n/a", stat(ms, "throughput").fmt(),
                     stat(ms, "enqueue_rate").fmt(), stat(ms, "running_pids").fmt(),
                     stat(ms, "lateness_p50_ms").fmt("{:,.0f}"), stat(ms, "lateness_p99_ms").fmt("{:,.0f}"),
                     str(sum(r["enqueue_errors"] for r in rs))])
    return markdown_table(["system", "exactly-once runs", "tasks run (unique)", "runs",
                           "runs per task (all runs)", "throughput tasks/s", "enqueue tasks/s (3 procs)",
                           "processes running tasks", "lateness p50 ms", "lateness p99 ms", "enqueue errors"],
                          rows)


# -- targets ----------------------------------------------------------------------------------
def targets(doc: dict) -> list[list[str]]:
    """[target, measured, verdict] for each of the issue's targets that the run covered."""
    out: list[list[str]] = []

    g = group(doc, "enqueue")
    for n in sorted({case_number(c) for c in g}):
        tw, hu, raw = (stat(g.get(f"{s}@{n}", []), "rate") for s in ("timewheel", "huey", "sqlite3"))
        if tw and hu:
            out.append([f"enqueue {n:,}, per call: ≥ 4× Huey", f"{tw.med / hu.med:.2f}× "
                        f"({tw.med:,.0f} vs {hu.med:,.0f}/s)", verdict(tw.med >= 4 * hu.med)])
        if tw and raw:
            out.append([f"enqueue {n:,}, per call: ≥ 80% of raw sqlite3 per-commit",
                        f"{100 * tw.med / raw.med:.0f}% ({tw.med:,.0f} vs {raw.med:,.0f}/s)",
                        verdict(tw.med >= 0.8 * raw.med)])
    g = group(doc, "batch")
    for n in sorted({case_number(c) for c in g}):
        tw, raw = (stat(g.get(f"{s}@{n}", []), "rate") for s in ("timewheel", "sqlite3"))
        if tw and raw:
            out.append([f"enqueue {n:,}, batch API: ≥ 50% of raw executemany",
                        f"{100 * tw.med / raw.med:.0f}% ({tw.med:,.0f} vs {raw.med:,.0f}/s)",
                        verdict(tw.med >= 0.5 * raw.med)])
    g = group(doc, "pending")
    levels = sorted(case_number(c) for c in g if case_system(c) == "timewheel")
    if len(levels) > 1:
        empty, full = stat(g["timewheel@0"], "rate"), stat(g[f"timewheel@{levels[-1]}"], "rate")
        if empty and full:
            out.append([f"enqueue with {levels[-1]:,} pending: ≤ 1.3× slower than empty",
                        f"{empty.med / full.med:.2f}× slower ({full.med:,.0f} vs {empty.med:,.0f}/s)",
                        verdict(empty.med / full.med <= 1.3)])
    g = group(doc, "lateness")
    if "timewheel" in g:
        rs = ok(g["timewheel"])
        early = sum(r["early"] for r in rs)
        p99 = Stat(r["p99_ms"] for r in rs)
        out.append(["lateness: 0 early", f"{early} early in {len(rs)} runs",
                    verdict(early == 0 and bool(rs))])
        out.append(["lateness: p99 ≤ 5 ms (median of runs)",
                    f"p99 {p99.fmt('{:.1f}')} ms" + worst(p99, 5.0, "ms"),
                    verdict(bool(p99) and p99.med <= 5.0)])
    g = group(doc, "burst")
    if "timewheel" in g:
        rs = ok(g["timewheel"])
        last = Stat(r["last_s"] for r in rs)
        allran = all(r["ran"] >= r["n"] for r in rs) and bool(rs)
        out.append([f"burst of {rs[0]['n']:,} due at once: all run, last ≤ 1 s after due" if rs else "burst",
                    f"ran all: {'yes' if allran else 'no'}; last {last.fmt('{:.3f}')} s"
                    + worst(last, 1.0, "s"),
                    verdict(allran and bool(last) and last.med <= 1.0)])
    g = group(doc, "startup")
    big = [c for c in g if c.startswith("timewheel@") and case_number(c) >= max(case_number(x) for x in g)]
    if big:
        ms = g[big[0]]
        tick, rss, idle = stat(ms, "first_tick_s"), stat(ms, "rss_kib"), stat(ms, "idle_cpu_per_10s")
        n = case_number(big[0])
        out.append([f"{n:,} pending: start() → first tick < 100 ms",
                    f"{tick.fmt('{:.1f}', 1e3)} ms" + worst(tick, 0.1, "s"),
                    verdict(bool(tick) and tick.med < 0.1)])
        out.append([f"{n:,} pending: RSS < 60 MB", f"{rss.fmt('{:.1f}', 1024 / 1e6)} MB",
                    verdict(bool(rss) and rss.med * 1024 < 60e6)])
        out.append([f"{n:,} pending: idle CPU < 0.05 CPU-s per 10 s",
                    f"{idle.fmt('{:.4f}')} CPU-s" + worst(idle, 0.05, "CPU-s"),
                    verdict(bool(idle) and idle.med < 0.05)])
    g = group(doc, "kill")
    if "timewheel" in g:
        rs = ok(g["timewheel"])
        good = sum(1 for r in rs if r["all_ran"])
        n = rs[0]["n"] if rs else 0
        out.append([f"SIGKILL + restart: {n:,}/{n:,} run, 0 duplicates, every run",
                    f"{good}/{len(g['timewheel'])} runs; lost {sum(r['missing'] for r in rs)}, "
                    f"duplicates {sum(r['duplicates'] for r in rs)}",
                    verdict(good == len(g["timewheel"]) and good > 0)])
    g = group(doc, "multiproc")
    if "timewheel" in g:
        rs = ok(g["timewheel"])
        exact = sum(1 for r in rs if r["missing"] == 0 and r["duplicates"] == 0)
        thr = Stat(r["throughput"] for r in rs)
        out.append(["3 processes on one file: exactly-once (throughput reported)",
                    f"{exact}/{len(g['timewheel'])} runs exactly-once; {thr.fmt()} tasks/s",
                    verdict(exact == len(g["timewheel"]) and exact > 0)])
    out += scale.targets(doc)
    out += bigstore_report.targets(doc)
    out += redis_report.targets(doc)
    out += pg_report.targets(doc)
    out += enqueue_load.targets(doc)
    return out


# -- text -------------------------------------------------------------------------------------
SECTIONS: list[tuple[str, str, Callable[[dict], str], str]] = [
    ("enqueue", "Enqueue, one call per task (durable per call), tasks due in 1 h",
     lambda d: table_enqueue(d, "enqueue"),
     "One thread, nothing consuming. Huey's default `synchronous` is FULL (an fsync per commit); "
     "`huey-normal` is the same code with timewheel's `synchronous=NORMAL`. APScheduler's job "
     "store is SQLAlchemy on SQLite with its defaults (rollback journal, FULL), scheduler "
     "started paused so that `add_job` writes through to the store."),
    ("batch", "Enqueue through the batch API (one transaction)", lambda d: table_enqueue(d, "batch"),
     "timewheel: `with hu.batch():` around all the `delay()` calls; sqlite3: `executemany` in one "
     "transaction. Huey and APScheduler have no batch API (not applicable)."),
    ("pending", "Enqueue rate with tasks already pending", table_pending,
     "Per-call enqueues into a copy of a store pre-filled through the batch API with tasks due "
     "1 h – 7 days out. The stores are built once per run:"),
    ("startup", "Start-up, memory and idle CPU with many tasks pending", table_startup,
     "timewheel is measured on a copy of the large pre-built store and, like the peers, on a small "
     "store filled through its own API in the same process. *First tick*: the boss has loaded the "
     "next tick (timewheel only); *first task*: a task due at once, enqueued right after "
     "`start()` returned, has started. RSS is VmRSS after the idle window; idle CPU is "
     "`time.process_time()` over the window, scaled to 10 s."),
    ("lateness", "Lateness (start inside the task − eta)", table_lateness,
     "Tasks enqueued up front with the consumer running, due evenly over the window; all values "
     "over the runs. APScheduler's default 1 s misfire grace skips tasks that would start later "
     "than that (they never run). *Machine stall*: the longest a separate process that only "
     "sleeps 1 ms at a time overslept during the window: a stall it saw is "
     "the machine's, not the scheduler's."),
    ("burst", "Burst: many no-op tasks due at the same instant", table_burst,
     "All tasks are stored first (timewheel with `hu.batch()`, the peers one call each), then the "
     "consumer is started, before the due instant (the *stored … before due* column is > 0). Times "
     "are task start times relative to the due instant."),
    ("kill", "SIGKILL and restart", table_kill,
     "Schedule the tasks (due 3–6 s out) with the consumer running, SIGKILL the process 1 s "
     "after the last enqueue returned, start a new process on the same file 8 s later. Runs are "
     "counted in an O_APPEND log written by the task, outside any store. APScheduler's "
     "`add_job` is slow enough (~1–3 ms each with the scheduler running) that its first tasks "
     "were already due, and ran, before the kill (*ran before the kill*); with the default 1 s "
     "grace the overdue rest is skipped after the restart, and that counts as *lost*."),
    ("multiproc", "Three processes enqueuing and running on one file", table_multi,
     "Each of 3 processes starts its consumer on the same file, then at the same instant enqueues "
     "its share, one call each, each task due 0.5 s after its enqueue. Throughput: distinct tasks "
     "run per second from the common start to the last run. APScheduler documents that a job store "
     "cannot be shared between processes: the table shows what it does anyway."),
    ("scale", scale.TITLE, scale.table, scale.NOTE),
    ("redis", "Redis: timewheel's Redis store vs RQ, RedisHuey and arq, on one redis-server",
     redis_report.section,
     "`python -m benchmarks --only redis` (`--quick`: small sizes). The harness starts one "
     "`redis-server` for the workload and every system uses it."),
    ("postgres", "PostgreSQL: timewheel's PostgreSQL store vs Procrastinate, pgqueuer and Huey's SqlHuey, "
     "on one server", pg_report.section,
     "`python -m benchmarks --only postgres` (`--quick`: small sizes). The harness starts one "
     "PostgreSQL server for the workload (fsync on, synchronous_commit on) and every system uses it. "
     "The ceilings are psycopg alone: an `INSERT` of the pickled call into a table with a primary "
     "key and an index on the eta, one commit per task; in bulk, `executemany` or `COPY` in one "
     "transaction."),
    (enqueue_load.WORKLOAD, enqueue_load.TITLE, enqueue_load.section, enqueue_load.NOTE),
]
#: workloads whose section RESULTS.md can take from a run of them alone, and their plots
PARTIAL: dict[str, Callable[[dict, str], list[str]]] = {enqueue_load.WORKLOAD: enqueue_load.plots}
SECTIONS += bigstore_report.SECTIONS


def summary_text(doc: dict) -> str:
    parts = []
    for _key, title, fn, _ in SECTIONS:
        t = fn(doc)
        if t:
            parts.append(f"## {title}\n\n{t}\n")
    tg = targets(doc)
    if tg:
        parts.append("## Targets (timewheel)\n\n" + markdown_table(["target", "measured", "verdict"], tg)
                     + "\n")
    return "\n".join(parts)


def results_md(doc: dict, json_name: str, plots: list[str]) -> str:
    m = doc["machine"]
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [
        "# Benchmarks: timewheel vs Huey, APScheduler and raw sqlite3",
        "",
        "Generated by `python -m benchmarks.report` from the last full run "
        f"(`benchmarks/results/{json_name}`, not committed). Re-run with `python -m benchmarks` "
        "(full, about an hour) or `python -m benchmarks --quick` (< 3 min); `--only WORKLOAD` runs one of "
        f"`{' '.join(WORKLOAD_ORDER)}`.",
        "",
        "Every measurement runs in a fresh process; repetitions are interleaved across systems "
        "(ABCABC…)"
        + (", each after a `sync` (what the previous one wrote is on the disk before it starts)"
           if all("sync_before_s" in x for x in doc["measurements"]) else "")
        + "; cells are **median (min–max)** over the runs. The machine is a shared 2-core "
        "VM, so single numbers are noisy (load average before each measurement is in the JSON).",
        "",
        "## Machine",
        "",
        markdown_table(["", ""], [
            ["date", m["date"]], ["cores", str(m["cores"])], ["cpu", m.get("cpu", "")],
            ["memory", f"{m.get('mem_gib', '?')} GiB"], ["python", m["python"]],
            ["SQLite", m["sqlite"]], ["packages", pk], ["platform", m["platform"]],
            ["commit at start", m.get("git_commit", "")],
            ["timewheel revisions measured", ", ".join(sorted({x["rev"] for x in doc["measurements"]
                                                               if x.get("rev")})) or "not recorded"],
            ["run took", f"{doc.get('elapsed_s', 0) / 60:.1f} min"],
        ]),
        "",
        "Systems: `timewheel` = `TimeWheel(path, workers=4)`; `huey` = `SqliteHuey` + in-process thread "
        "consumer, 4 workers (defaults otherwise); `apscheduler` = `BackgroundScheduler` + "
        "`SQLAlchemyJobStore('sqlite:///…')` + 4 threads, default `misfire_grace_time` (1 s); "
        "`apscheduler-nograce` = same with `misfire_grace_time=None`; `sqlite3` = raw sqlite3, WAL, "
        "`synchronous=NORMAL`, one table with a primary key and an eta index (the storage ceiling).",
        "",
    ]
    tg = targets(doc)
    if tg:
        lines += ["## Targets", "", markdown_table(["target", "measured (timewheel)", "verdict"], tg), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    for key, title, fn, note in SECTIONS:
        t = fn(doc)
        if not t:
            continue
        lines += [_mark(key), f"## {title}", "", note, ""]
        if key == "pending" and doc.get("builds"):
            lines += [table_builds(doc), ""]
        lines += [t, _mark(key, end=True), ""]
    if os.path.exists(ANALYSIS_MD):
        with open(ANALYSIS_MD) as fh:
            lines += [fh.read().rstrip(), ""]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------
def plots(doc: dict, outdir: str = PLOTS_DIR) -> list[str]:
    plt = pyplot()
    os.makedirs(outdir, exist_ok=True)
    made = []

    # 1. enqueue rate vs pending count
    g = group(doc, "pending")
    if g:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for system in ("timewheel", "sqlite3"):
            cases = sorted((c for c in g if case_system(c) == system), key=case_number)
            median_bars(ax, [(max(case_number(c), 1), stat(g[c], "rate")) for c in cases],
                        color=COLORS[system], label=f"{system} (per call, into a pre-filled store)")
        e = group(doc, "enqueue")
        big = max((case_number(c) for c in e if case_system(c) == "timewheel"), default=0)
        for system in ("timewheel", "sqlite3", "huey"):
            for m in e.get(f"{system}@{big}", []):
                r = m["result"]
                if "chunk_rates" not in r:
                    continue
                xs = [(k + 0.5) * r["chunk_size"] for k in range(len(r["chunk_rates"]))]
                ax.plot(xs, r["chunk_rates"], color=COLORS[system], alpha=0.35, lw=1,
                        label=f"{system}: during the {big:,}-task enqueue run" if m["rep"] == 0 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tasks already pending (1 = empty store); thin lines: 5% chunks of one run")
        ax.set_ylabel("enqueue rate, tasks/s")
        ax.set_title("Enqueue rate vs pending count (one thread, durable per call)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, os.path.join(outdir, "enqueue_vs_pending.png"))
        made.append("enqueue_vs_pending.png")

    # 2. lateness CDF
    g = group(doc, "lateness")
    if g:
        lateness_cdf(g, "ran", 1e-3, 5, "lateness = start − eta, ms (log)", "Lateness CDF (all runs pooled)",
                     os.path.join(outdir, "lateness_cdf.png"))
        made.append("lateness_cdf.png")

    # 3. burst drain
    g = group(doc, "burst")
    if g:
        n = next((r["n"] for ms in g.values() for r in ok(ms)), 0)
        burst_drain(g, f"Burst drain: {n:,} no-op tasks due at once (each run)",
                    os.path.join(outdir, "burst_drain.png"), target_s=1.0)
        made.append("burst_drain.png")

    # 4. enqueue rates, side by side
    g = group(doc, "enqueue")
    b = group(doc, "batch")
    if g:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        labels, vals, errs, cols = [], [], [[], []], []
        for case, ms in list(g.items()) + [(c + " batch", v) for c, v in b.items()]:
            s = stat(ms, "rate")
            if not s:
                continue
            labels.append(case.replace("@", "\n"))
            vals.append(s.med)
            errs[0].append(s.med - s.lo)
            errs[1].append(s.hi - s.med)
            cols.append(COLORS.get(case_system(case), "#333"))
        ax.bar(range(len(vals)), vals, yerr=errs, color=cols, capsize=3)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, fontsize=6, rotation=90)
        ax.set_yscale("log")
        ax.set_ylabel("tasks/s (log)")
        ax.set_title("Enqueue rate (median, min–max), per call and batch")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        save(fig, os.path.join(outdir, "enqueue_rates.png"))
        made.append("enqueue_rates.png")
    made += scale.plots(doc, outdir)
    made += bigstore_report.plots(doc, outdir)
    made += redis_report.plots(doc, outdir)
    made += pg_report.plots(doc, outdir)
    made += enqueue_load.plots(doc, outdir)
    return made


# -- one section --------------------------------------------------------------------------------
def _mark(key: str, end: bool = False) -> str:
    return f"<!-- {'/' if end else ''}section:{key} -->"


def section_md(doc: dict, json_name: str, key: str, plots: list[str]) -> str:
    """The section of workload ``key`` as RESULTS.md holds it, marks included; it names the
    run it comes from (which may not be the full run the rest of the file comes from)."""
    title, fn, note = next((t, f, n) for k, t, f, n in SECTIONS if k == key)
    loads = [m["loadavg_before"] for m in doc["measurements"] if m["workload"] == key]
    run = (f"*From `benchmarks/results/{json_name}` ({doc['machine']['date']}, "
           f"{'this workload alone' if doc.get('partial') else 'a full run'}, {doc['mode']} sizes; "
           f"timewheel {', '.join(sorted({m['rev'] for m in doc['measurements'] if m.get('rev')}))}; "
           f"load average before its measurements {min(loads, default=0):.1f}–{max(loads, default=0):.1f} "
           f"on {doc['machine']['cores']} cores).*")
    lines = [_mark(key), f"## {title}", "", note, "", run, "", fn(doc), ""]
    lines += [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines + [_mark(key, end=True)])


def write_section(path: str, key: str) -> None:
    """Rewrite workload ``key``'s section of RESULTS.md (and its plots) from the run in
    ``path``, and the hand-written analysis at its end from ANALYSIS.md (new sections are
    added at its end); the rest of the file stays as it is.  A file without the section gets
    it before the analysis (or at its end)."""
    with open(path) as fh:
        doc = json.load(fh)
    os.makedirs(PLOTS_DIR, exist_ok=True)
    block = section_md(doc, os.path.basename(path), key, PARTIAL[key](doc, PLOTS_DIR))
    with open(RESULTS_MD) as fh:
        text = fh.read()
    start, end = _mark(key), _mark(key, end=True)
    analysis = ""
    if os.path.exists(ANALYSIS_MD):
        with open(ANALYSIS_MD) as fh:
            analysis = fh.read().rstrip() + "\n"
    first = analysis.split("\n", 1)[0]
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        at = text.find(first) if first else -1
        if at >= 0:
            text = text[:at] + block + "\n\n" + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    if first and first in text:                 # the hand-written analysis, as it is now
        text = text[:text.index(first)] + analysis
    with open(RESULTS_MD, "w") as fh:
        fh.write(text)


# -- entry points -----------------------------------------------------------------------------
def latest_full() -> Optional[str]:
    files = sorted(glob.glob(os.path.join(RESULTS, "*-full.json")))
    return files[-1] if files else None


def write_all(path: str) -> None:
    with open(path) as fh:
        doc = json.load(fh)
    made = plots(doc)
    with open(RESULTS_MD, "w") as fh:
        fh.write(results_md(doc, os.path.basename(path), made))


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--only" and argv[2] in PARTIAL:
        write_section(argv[3], argv[2])
        print(f"wrote the {argv[2]} section of {os.path.relpath(RESULTS_MD)} from {argv[3]}")
        return 0
    path = argv[1] if len(argv) > 1 else latest_full()
    if not path:
        print("no full run in benchmarks/results/: run `python -m benchmarks` first", file=sys.stderr)
        return 1
    write_all(path)
    print(f"wrote {os.path.relpath(RESULTS_MD)} and plots from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
