"""Tables, target verdicts and plots of the ``postgres`` workload (:mod:`benchmarks.pg_peers`),
for :mod:`benchmarks.report`: :func:`section` (markdown), :func:`targets`, :func:`plots`.

One table per kind of measurement, a row per system; the goals of issue 22 in :func:`targets`:
per-call enqueue against a bare psycopg ``INSERT; COMMIT`` on the same server, batch against
``executemany`` and ``COPY``, lateness, SIGKILL and restart, recovery."""

from __future__ import annotations

import os
from typing import Optional

from .charts import burst_drain, lateness_cdf
from .pg_peers import BULK, CEILINGS, SETTINGS, SYSTEMS
from .stats import Stat, errors, group, markdown_table, ok, stat, verdict, worst

COLORS = {"timewheel": "#1f77b4", "procrastinate": "#d62728", "pgqueuer": "#2ca02c", "huey": "#ff7f0e"}
ORDER = SYSTEMS + CEILINGS


def cases(doc: dict, kind: str) -> dict[str, list[dict]]:
    """Measurements of ``kind`` by system, in the order of :data:`ORDER`."""
    g = group(doc, "postgres")
    per = {c.split(":", 1)[1]: ms for c, ms in g.items() if c.split(":", 1)[0] == kind}
    return {s: per[s] for s in ORDER if s in per}


def _cell(ms: list[dict], key: str, fmt: str = "{:,.0f}") -> str:
    s = stat(ms, key)
    return s.fmt(fmt) if s else "; ".join(errors(ms)) or "n/a"


def _server(doc: dict) -> Optional[dict]:
    for m in doc["measurements"]:
        if m["workload"] == "postgres" and "server" in m["result"]:
            return m["result"]["server"]
    return None


def table_server(doc: dict) -> str:
    srv = _server(doc)
    if not srv:
        return ""
    conf = srv.get("postgres", {})
    return markdown_table(["", ""], [
        ["PostgreSQL", f"{conf.get('server_version')}, one server started by the harness for the workload "
                       f"(timewheel.testing.PostgresServer), {srv.get('bind')}; database `bench` dropped "
                       "and created again before every measurement"],
        ["durability", f"fsync {conf.get('fsync')}, synchronous_commit {conf.get('synchronous_commit')}, "
                       f"full_page_writes {conf.get('full_page_writes')}, wal_level {conf.get('wal_level')}"],
        ["memory", f"shared_buffers {conf.get('shared_buffers')} (8 kB pages)"],
        ["packages", ", ".join(f"{k} {v}" for k, v in srv.get("packages", {}).items() if v)],
    ])


def table_enqueue(doc: dict, kind: str) -> str:
    per = cases(doc, kind)
    if not per:
        return ""
    base = stat(per.get("timewheel", []), "rate")
    rows = []
    for system, ms in per.items():
        s = stat(ms, "rate")
        api = (BULK.get(system) or "") if kind == "batch" else "one call each"
        rows.append([system, api, _cell(ms, "rate"), f"{s.med / base.med:.2f}" if s and base else "n/a",
                     str(len(ok(ms)))])
    return markdown_table(["system", "API", "tasks/s median (min–max)", "÷ timewheel", "runs"], rows)


def table_lateness(doc: dict) -> str:
    per = cases(doc, "lateness")
    return markdown_table(["system", "ran / n", "early", "p50 ms", "p99 ms", "max ms", "runs"], [
        [s, f"{sum(r['unique'] for r in ok(ms))} / {sum(r['n'] for r in ok(ms))}",
         str(sum(r["early"] for r in ok(ms))), _cell(ms, "p50_ms", "{:.1f}"), _cell(ms, "p99_ms", "{:.1f}"),
         _cell(ms, "max_ms", "{:.1f}"), str(len(ok(ms)))] for s, ms in per.items()]) if per else ""


def table_burst(doc: dict) -> str:
    per = cases(doc, "burst")
    return markdown_table(["system", "ran / n", "first start, s", "last start (drain), s", "tasks/s",
                           "runs"], [
        [s, f"{sum(r['unique'] for r in ok(ms))} / {sum(r['n'] for r in ok(ms))}",
         _cell(ms, "first_s", "{:.3f}"), _cell(ms, "last_s", "{:.2f}"), _cell(ms, "throughput"),
         str(len(ok(ms)))] for s, ms in per.items()]) if per else ""


def table_kill(doc: dict) -> str:
    per = cases(doc, "kill")
    return markdown_table(["system", "runs with every task done once", "lost (all runs)",
                           "done twice (all runs)", "started again (all runs)", "restart → last start, s"], [
        [s, f"{sum(1 for r in ok(ms) if r['all_ran_once'])}/{len(ms)}",
         str(sum(r["lost"] or 0 for r in ok(ms))), str(sum(r["duplicates"] for r in ok(ms))),
         str(sum(r["started_again"] for r in ok(ms))), _cell(ms, "restart_to_last_start_s", "{:.1f}")]
        for s, ms in per.items()]) if per else ""


def table_recovery(doc: dict) -> str:
    per = cases(doc, "recovery")
    rows = []
    for s, ms in per.items():
        rs = ok(ms)
        t = Stat(r["recovery_s"] for r in rs if r["rerun"])
        cap = rs[0]["cap_s"] if rs else 0
        missing = sum(1 for r in rs if not r["rerun"])
        rows.append([s, f"{len(rs) - missing}/{len(rs)}",
                     (t.fmt("{:.1f}") if t else "") + (f" ({missing} runs > {cap:g} s)" if missing else "")])
    return markdown_table(["system", "re-run within the cap", "SIGKILL → task starts again, s"],
                          rows) if rows else ""


def section(doc: dict) -> str:
    """The markdown of the PostgreSQL comparison (empty without ``postgres`` measurements)."""
    if not group(doc, "postgres"):
        return ""
    parts = []
    for title, table in (
            ("Server", table_server(doc)),
            ("Systems", markdown_table(["system", "settings"], [[s, SETTINGS[s]] for s in SYSTEMS])),
            ("Enqueue, one call per task (one commit each), due in 1 h", table_enqueue(doc, "enqueue")),
            ("Enqueue through a bulk API (one transaction)", table_enqueue(doc, "batch")),
            ("Lateness (start inside the task − eta)", table_lateness(doc)),
            ("Burst: no-op tasks due at one instant", table_burst(doc)),
            ("SIGKILL of the worker and restart", table_kill(doc)),
            ("Recovery of a SIGKILLed worker's task", table_recovery(doc))):
        if table:
            parts += [f"### {title}", "", table, ""]
    return "\n".join(parts).rstrip()


def targets(doc: dict) -> list[list[str]]:
    out: list[list[str]] = []
    per, batch = cases(doc, "enqueue"), cases(doc, "batch")
    tw, raw = stat(per.get("timewheel", []), "rate"), stat(per.get("psycopg", []), "rate")
    if tw and raw:
        out.append(["PostgreSQL, enqueue per call: ≥ 90 % of a bare psycopg INSERT; COMMIT",
                    f"{tw.med:,.0f}/s = {tw.med / raw.med:.0%} of {raw.med:,.0f}/s",
                    verdict(tw.med >= 0.9 * raw.med)])
    tw = stat(batch.get("timewheel", []), "rate")
    for ceiling in CEILINGS:
        raw = stat(batch.get(ceiling, []), "rate")
        if tw and raw:
            out.append([f"PostgreSQL, batch: ≥ 50 % of a bare {BULK[ceiling]}",
                        f"{tw.med:,.0f}/s = {tw.med / raw.med:.0%} of {raw.med:,.0f}/s",
                        verdict(tw.med >= 0.5 * raw.med)])
    ms = cases(doc, "lateness").get("timewheel")
    if ms:
        p99 = stat(ms, "p99_ms")
        early = sum(r["early"] for r in ok(ms))
        out.append(["PostgreSQL, lateness of 2,000 tasks over 10 s: p99 ≤ 10 ms, 0 early (median of runs)",
                    f"p99 {p99.fmt('{:.1f}')} ms" + worst(p99, 10.0, "ms") + f"; early {early}",
                    verdict(bool(p99) and p99.med <= 10.0 and early == 0)])
    ms = cases(doc, "kill").get("timewheel")
    if ms:
        rs = ok(ms)
        lost = sum(r["lost"] or 0 for r in rs)
        good = sum(1 for r in rs if r["completed"] >= r["n"])
        out.append(["PostgreSQL, SIGKILL + restart: 0 lost (every task done, every run)",
                    f"{good}/{len(ms)} runs did every task; lost {lost}; done twice "
                    f"{sum(r['duplicates'] for r in rs)} (a task that had ended but whose outcome was "
                    f"not yet recorded at the kill: the documented re-run), started again "
                    f"{sum(r['started_again'] for r in rs)}",
                    verdict(len(rs) == len(ms) and good == len(ms) and lost == 0)])
    ms = cases(doc, "recovery").get("timewheel")
    if ms:
        t = Stat(r["recovery_s"] for r in ok(ms) if r["rerun"])
        out.append(["PostgreSQL, recovery of a SIGKILLed worker's task: ≤ 15 s", f"{t.fmt('{:.1f}')} s",
                    verdict(bool(t) and t.med <= 15.0)])
    return out


def plots(doc: dict, outdir: str) -> list[str]:
    per = cases(doc, "lateness")
    if not per:
        return []
    made = []
    lateness_cdf(per, "unique", 1e-2, 10, "lateness = start − eta, ms (log; early starts drawn at 0.01 ms)",
                 "PostgreSQL: lateness CDF, same server (all runs pooled)",
                 os.path.join(outdir, "pg_lateness_cdf.png"), COLORS)
    made.append("pg_lateness_cdf.png")
    per = cases(doc, "burst")
    if per:
        n = next((r["n"] for ms in per.values() for r in ok(ms)), 0)
        burst_drain(per, f"PostgreSQL: burst drain, {n:,} no-op tasks due at once (each run)",
                    os.path.join(outdir, "pg_burst_drain.png"), COLORS)
        made.append("pg_burst_drain.png")
    return made
