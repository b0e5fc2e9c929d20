"""Tables, targets and a plot for the big-store workloads of :mod:`benchmarks.bigstore`
(``commands``, ``web``, ``downtime``); :mod:`benchmarks.report` adds them to its own."""

from __future__ import annotations

import os
import statistics
from typing import Any, Callable

from .bigstore import COMMAND_MB, COMMANDS, DOWNTIME_MB, WEB_MS
from .charts import COLORS, pyplot, save
from .stats import Stat, case_number, case_system, errors, group, markdown_table, ok, stat, verdict


def _built(ms: list[dict]) -> str:
    b = next((m["result"]["build"] for m in ms if m["result"].get("build")), None)
    if not b:
        return ""
    return (f"{b['n']:,} tasks built in {b['seconds']:.0f} s ({b['rate']:,.0f} tasks/s), "
            f"{b['bytes'] / 2**20:,.0f} MiB")


# -- tables -----------------------------------------------------------------------------------
def table_commands(doc: dict) -> str:
    g = group(doc, "commands")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        wall, cpu, peak = stat(ms, "wall_s"), stat(ms, "cpu_s"), stat(ms, "peak_mb")
        target = COMMANDS.get(case, ([], None))[1]
        rows.append([f"`{case}`", wall.fmt("{:,.0f}", 1e3) if wall else "; ".join(errors(ms)) or "n/a",
                     cpu.fmt("{:,.0f}", 1e3), peak.fmt("{:.1f}"),
                     f"≤ {target} ms, ≤ {COMMAND_MB:.0f} MB" if target else "(for scale)",
                     str(len(ok(ms)))])
    n = next(iter(g.values()))[0]["params"]["pending"]
    head = f"Store: {n:,} pending tasks ({_built(sum(g.values(), []))}).\n\n"
    return head + markdown_table(["command", "wall ms median (min–max)", "CPU ms", "peak RSS MB", "target",
                                  "runs"], rows)


def _web_urls(ms: list[dict]) -> dict[str, dict[str, Any]]:
    """Per URL, the requests of every repetition pooled."""
    out: dict[str, dict[str, Any]] = {}
    for r in ok(ms):
        for url, u in r["results"].items():
            o = out.setdefault(url, {"times": [], "status": set(), "bytes": u["bytes"]})
            o["times"] += u["times_ms"]
            o["status"].add(u["status"])
    return out


def table_web(doc: dict) -> str:
    g = group(doc, "web")
    if not g:
        return ""
    parts = []
    for case, ms in g.items():
        rs = ok(ms)
        if not rs:
            parts.append(f"{case}: " + "; ".join(errors(ms)))
            continue
        rows = []
        for url, u in _web_urls(ms).items():
            med = statistics.median(u["times"])
            rows.append([f"`{url}`", f"{med:,.1f}", f"{max(u['times']):,.1f}",
                         ", ".join(str(s) for s in sorted(u["status"])), f"{u['bytes']:,}",
                         "**over**" if med > WEB_MS else ""])
        parts.append(f"Store: {rs[0]['pending']:,} pending tasks ({_built(ms)}); {len(rs)} server(s) × "
                     f"{rs[0]['repeat']} timed requests per URL (after one warm-up each).\n\n"
                     + markdown_table(["URL", "median ms", "worst ms", "status", "bytes",
                                       f"> {WEB_MS:.0f} ms"], rows))
    return "\n\n".join(parts)


def table_downtime(doc: dict) -> str:
    g = group(doc, "downtime")
    if not g:
        return ""
    rows = []
    for case, ms in g.items():
        rs = ok(ms)
        exact = sum(1 for r in rs if r["missing"] == 0 and r["duplicates"] == 0)
        b = next((r["build"] for r in rs if r.get("build")), None)
        rows.append([case_system(case), f"{case_number(case):,}", f"{exact}/{len(ms)}",
                     str(sum(r["missing"] for r in rs)), str(sum(r["duplicates"] for r in rs)),
                     str(sum(r["early"] for r in rs)), stat(ms, "first_s").fmt("{:.2f}"),
                     stat(ms, "catchup_s").fmt("{:,.1f}"), stat(ms, "rate").fmt(),
                     stat(ms, "total_s").fmt("{:,.1f}"), stat(ms, "peak_rss_mb").fmt("{:.1f}"),
                     f"{b['rate']:,.0f} ({b['seconds']:.0f} s)" if b else "n/a"])
    return markdown_table(["system", "tasks", "runs with every task once", "lost", "duplicate runs", "early",
                           "start() → first run, s", "start() → last run, s", "drain tasks/s",
                           "spawn → last run, s", "peak RSS MB", "build tasks/s (s)"], rows)


# -- targets ----------------------------------------------------------------------------------
def _worst_ms(s: Stat, limit_ms: float) -> str:
    over = sum(1 for v in s.values if v * 1e3 > limit_ms)
    return f"; {over} of {len(s.values)} runs over (worst {s.hi * 1e3:,.0f} ms)" if over else ""


def targets(doc: dict) -> list[list[str]]:
    out: list[list[str]] = []

    g = group(doc, "commands")
    for case, ms in g.items():
        target = COMMANDS.get(case, ([], None))[1]
        wall, peak = stat(ms, "wall_s"), stat(ms, "peak_mb")
        if not target:
            continue
        n = ms[0]["params"]["pending"]
        out.append([f"`timewheel {case}` on {n:,} pending: ≤ {target} ms, ≤ {COMMAND_MB:.0f} MB",
                    f"{wall.fmt('{:,.0f}', 1e3)} ms"
                    + _worst_ms(wall, target)
                    + f"; peak {peak.hi:.1f} MB" if wall else "; ".join(errors(ms)) or "n/a",
                    verdict(bool(wall) and wall.med * 1e3 <= target and peak.hi <= COMMAND_MB)])
    g = group(doc, "web")
    for ms in g.values():
        rs = ok(ms)
        if not rs:
            out.append(["web view: every URL ≤ 200 ms", "; ".join(errors(ms)), verdict(False)])
            continue
        meds = {url: statistics.median(u["times"]) for url, u in _web_urls(ms).items()}
        over = sorted(((m, url) for url, m in meds.items() if m > WEB_MS), reverse=True)
        bad = [url for url, u in _web_urls(ms).items() if u["status"] != {200}]
        slowest = max(meds, key=lambda u: meds[u])
        text = (f"{len(over)} of {len(meds)} over: " + ", ".join(f"`{u}` {m:,.0f} ms" for m, u in over)
                if over else f"all {len(meds)} met; slowest `{slowest}` {meds[slowest]:,.0f} ms")
        if bad:
            text += "; not 200: " + ", ".join(f"`{u}`" for u in bad)
        n = ms[0]["params"]["pending"]
        out.append([f"web view on {n:,} pending: every URL ≤ {WEB_MS:.0f} ms (median)",
                    text, verdict(not over and not bad)])
    g = group(doc, "downtime")
    big = max((case_number(c) for c in g if case_system(c) == "timewheel"), default=0)
    ms = g.get(f"timewheel@{big}", [])
    if ms:
        rs = ok(ms)
        exact = sum(1 for r in rs if r["missing"] == 0 and r["duplicates"] == 0 and r["early"] == 0)
        peak, rate, took = stat(ms, "peak_rss_mb"), stat(ms, "rate"), stat(ms, "catchup_s")
        out.append([f"downtime: {big:,} tasks came due while down; one process restarts: every task "
                    "runs exactly once",
                    f"{exact}/{len(ms)} runs; lost {sum(r['missing'] for r in rs)}, duplicates "
                    f"{sum(r['duplicates'] for r in rs)}, early {sum(r['early'] for r in rs)}",
                    verdict(exact == len(ms) and exact > 0)])
        out.append([f"downtime catch-up of {big:,}: peak RSS ≤ {DOWNTIME_MB:.0f} MB (drain rate reported)",
                    f"{peak.fmt('{:.1f}')} MB; drained in {took.fmt('{:,.1f}')} s = {rate.fmt()} tasks/s",
                    verdict(bool(peak) and peak.hi <= DOWNTIME_MB)])
    return out


# -- plot -------------------------------------------------------------------------------------
def plots(doc: dict, outdir: str) -> list[str]:
    g = group(doc, "downtime")
    if not g:
        return []
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    styles = ["-", "--", ":", "-."]
    for k, (case, ms) in enumerate(g.items()):
        color = COLORS.get(case_system(case), "#333")
        ls = styles[k % len(styles)]
        for j, r in enumerate(ok(ms)):
            curve = r["drain_curve_s"]
            label = case if j == 0 else None
            if curve:
                ax1.plot(curve, [100 * q / (len(curve) - 1) for q in range(len(curve))], color=color, ls=ls,
                         lw=1.4, alpha=0.8, label=label)
            pts = r["rss_curve"]
            t0 = r["startup_s"]
            ax2.plot([p[0] - t0 for p in pts], [p[1] * 1024 / 1e6 for p in pts], color=color, ls=ls, lw=1.4,
                     alpha=0.8, label=label)
    ax1.set_xlabel("seconds after start()")
    ax1.set_ylabel("% of the tasks started")
    ax1.set_title("Catch-up after downtime: tasks run")
    ax2.axhline(DOWNTIME_MB, color="red", ls=":", lw=1)
    ax2.set_xlabel("seconds after start()")
    ax2.set_ylabel("RSS, MB (sampled from /proc)")
    ax2.set_title("RSS of the one process catching up")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, os.path.join(outdir, "downtime_catchup.png"))
    return ["downtime_catchup.png"]


# -- sections ---------------------------------------------------------------------------------
SECTIONS: list[tuple[str, str, Callable[[dict], str], str]] = [
    ("commands", "Operator commands on a big store", table_commands,
     "Each run is a fresh process of the installed `timewheel` script on a store of pending tasks "
     "due over a week under four names (plus a few dozen in every other state), built with "
     "`hu.batch()`; wall and CPU time and the command's own peak RSS (`ru_maxrss`) are measured "
     "from outside it. Runs of the commands are interleaved. `python -c pass` and "
     "`python -c 'import click'` show how much of each figure is Python starting up. The timewheel "
     "package is byte-compiled first, as an installed one is (compiling it from source adds ~150 ms "
     "to every command). "
     "MB = 10^6 bytes."),
    ("web", "Web view on a big store", table_web,
     "`timewheel web --allow-actions` on the same store, each URL requested over loopback HTTP after "
     "one warm-up request; the requests of every repetition (a fresh server each) are pooled."),
    ("downtime", "Catch-up after downtime", table_downtime,
     "A store whose tasks all came due while no process ran: a process that never starts the wheel "
     "enqueues them due within a short window after it opened the store (timewheel with "
     "`hu.batch()`, Huey one `schedule()` each with `synchronous=NORMAL` to build it faster) and "
     "exits; once the last is due, ONE process starts (`TimeWheel(path, workers=4)`; Huey's "
     "in-process thread consumer, 4 workers, defaults) on a copy of that file. Every task is a no-op "
     "that appends `(id, pid, due, started)` to an O_APPEND log; the parent counts runs there and "
     "samples the process's RSS from `/proc` (peak = `VmHWM`). Huey keeps a scheduled task in its "
     "queue until a worker dequeues it, so its catch-up is its workers dequeuing."),
]
