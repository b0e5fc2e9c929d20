"""Tables, target verdicts and plots of the ``redis`` workload (:mod:`benchmarks.redis_peers`),
for :mod:`benchmarks.report`: :func:`section` (markdown), :func:`targets`, :func:`plots`."""

from __future__ import annotations

import os
from typing import Optional

from .charts import burst_drain, lateness_cdf
from .redis_peers import BULK, PEERS, SETTINGS, SYSTEMS
from .stats import Stat, errors, group, markdown_table, ok, stat, verdict, worst

COLORS = {"timewheel": "#1f77b4", "rq": "#d62728", "rq-fork": "#ff9896", "huey": "#ff7f0e",
          "arq": "#9467bd"}

# How each system gets a SIGKILLed worker's task running again, from its source (versions in
# the server table).
RECOVERY = {
    "timewheel": "a claim takes a lease (10 s) that the owner renews every lease/3; the leader "
                 "requeues a task whose lease ran out: re-run within lease + 1 tick (docs/stores.md, "
                 "\"Never twice, with leases\")",
    "rq": "the job stays in `StartedJobRegistry`; worker maintenance (every 10 min, "
          "`DEFAULT_MAINTENANCE_TASK_INTERVAL`) runs `StartedJobRegistry.cleanup`, which moves an "
          "expired one to `FailedJobRegistry` (`AbandonedJobError`) unless it has retries left "
          "(no `Retry` by default): never re-run",
    "huey": "a worker takes the message off the list with `BRPOP` (`RedisStorage.dequeue`): from then "
            "on it exists only in that process, and dies with it: never re-run",
    "arq": "the job stays in `arq:queue` while it runs, guarded by `arq:in-progress:<id>` set with "
           "`PSETEX` for `job_timeout + 10` s (`Worker.in_progress_timeout_s`, 310 s by default); another "
           "worker starts it once that key expires: ~310 s after it started",
}

KILL_NOTES = {
    "rq": "RQ's scheduler runs in a process forked by the worker that holds "
          "`rq:scheduler-lock:<queue>` (TTL interval + 60 = 61 s, `RQScheduler.acquire_locks`); after "
          "the SIGKILL a new worker tries to take the lock when it starts, then only at its maintenance "
          "(every 10 min), so the scheduled jobs wait (they are still stored: *will run later*). "
          "Jobs a killed worker had started stay in `StartedJobRegistry` and are never re-run (*lost*). "
          "RQ stores an eta in whole seconds (`calendar.timegm(...utctimetuple())`) and its scheduler "
          "compares it with `int(time)`: jobs start up to 1 s *early* (`early` columns).",
}


def _order(cases: list[str]) -> list[str]:
    rank = {s: k for k, s in enumerate(list(SYSTEMS) + ["rq-fork", "redis-py"])}
    return sorted(cases, key=lambda c: rank.get(c.split(":", 1)[1], 99))


def _cases(doc: dict, kind: str) -> dict[str, list[dict]]:
    g = group(doc, "redis")
    return {c.split(":", 1)[1]: g[c] for c in _order([c for c in g if c.split(":", 1)[0] == kind])}


def _server(doc: dict) -> Optional[dict]:
    for m in doc["measurements"]:
        if m["workload"] == "redis" and "server" in m["result"]:
            return m["result"]["server"]
    return None


def _fmt(x: Optional[float], f: str = "{:.2f}") -> str:
    return "n/a" if x is None else f.format(x)


# -- tables -------------------------------------------------------------------------------------
def table_server(doc: dict) -> str:
    srv = _server(doc)
    if not srv:
        return ""
    conf = srv.get("config", {})
    pk = ", ".join(f"{k} {v}" for k, v in srv.get("packages", {}).items() if v)
    return markdown_table(["", ""], [
        ["redis-server", f"{srv.get('redis_version')}, one process started by the harness for the "
                         f"workload, {srv.get('bind')}; `FLUSHALL` before every measurement"],
        ["persistence", f"appendonly {conf.get('appendonly')}, appendfsync {conf.get('appendfsync')} "
                        "(every measurement but the one labelled everysec), "
                        f"save \"{conf.get('save', '')}\", "
                        f"aof-use-rdb-preamble {conf.get('aof-use-rdb-preamble')}"],
        ["memory", f"maxmemory {conf.get('maxmemory')}, maxmemory-policy {conf.get('maxmemory-policy')}"],
        ["data dir", f"a temp dir on {srv.get('filesystem') or '?'} (the disk the SQLite stores use)"],
        ["client libraries", pk],
    ])


def table_settings(doc: dict) -> str:
    if not group(doc, "redis"):
        return ""
    return markdown_table(["system", "settings"], [[s, SETTINGS[s]] for s in SYSTEMS])


def table_enqueue(doc: dict) -> str:
    per = _cases(doc, "enqueue")
    if not per:
        return ""
    tw = stat(per.get("timewheel", []), "rate")
    rows = []
    rowsets = list(per.items()) + [("timewheel, appendfsync everysec", ms)
                                   for ms in _cases(doc, "enqueue-everysec").values()]
    for system, ms in rowsets:
        s = stat(ms, "rate")
        rs = ok(ms)
        cpu = Stat(r["cpu_s"] / r["n"] for r in rs)
        rows.append([system, f"{rs[0]['n']:,}" if rs else "",
                     s.fmt() if s else "; ".join(errors(ms)) or "n/a",
                     f"{tw.med / s.med:.2f}×" if s and tw else "n/a",
                     stat(ms, "server_calls_per_task").fmt("{:.1f}"),
                     stat(ms, "server_usec_per_task").fmt("{:.0f}"), cpu.fmt("{:.0f}", 1e6), str(len(rs))])
    return markdown_table(["system", "tasks", "tasks/s median (min–max)", "timewheel is … faster",
                           "Redis commands per task (incl. inside scripts)", "server µs per task",
                           "client CPU µs per task", "runs"], rows)


def table_batch(doc: dict) -> str:
    per = _cases(doc, "batch")
    if not per:
        return ""
    rows = []
    for system in SYSTEMS + ("redis-py",):
        ms = per.get(system)
        if ms is None:
            rows.append([system, "no bulk enqueue API", "n/a", "", "", ""])
            continue
        rs = ok(ms)
        s = stat(ms, "rate")
        rows.append([system, BULK.get(system) or "", s.fmt() if s else "; ".join(errors(ms)) or "n/a",
                     f"{rs[0]['n']:,}" if rs else "", stat(ms, "server_calls_per_task").fmt("{:.1f}"),
                     str(len(rs))])
    return markdown_table(["system", "API", "tasks/s median (min–max)", "tasks", "Redis commands per task",
                           "runs"], rows)


def table_lateness(doc: dict) -> str:
    per = _cases(doc, "lateness")
    if not per:
        return ""
    rows = []
    for system, ms in per.items():
        rs = ok(ms)
        n = rs[0]["n"] if rs else 0
        wcpu = Stat(r["worker_cpu_s"] / r["n"] for r in rs if "worker_cpu_s" in r)
        scpu = Stat(r["server_cpu_s"] / r["n"] for r in rs if "server_cpu_s" in r)
        rows.append([system, stat(ms, "unique").fmt() + f" / {n:,}",
                     str(sum(r["duplicates"] for r in rs)),
                     f"{sum(r['early'] for r in rs)} ({sum(r['early_over_1ms'] for r in rs)} by > 1 ms)",
                     stat(ms, "p50_ms").fmt("{:,.1f}"), stat(ms, "p99_ms").fmt("{:,.1f}"),
                     stat(ms, "max_ms").fmt("{:,.1f}"), wcpu.fmt("{:.2f}", 1e3), scpu.fmt("{:.2f}", 1e3),
                     _load(ms),
                     stat(ms, "lead_s").fmt("{:.1f}"), str(sum(r["late_enqueued"] for r in rs)),
                     str(len(rs)) + _errs(ms)])
    return markdown_table(["system", "ran (unique)", "duplicates", "early (all runs)", "p50 ms", "p99 ms",
                           "max ms", "worker CPU ms per task", "redis-server CPU ms per task",
                           "load average before → after", "first due after, s", "enqueued after their eta",
                           "runs"], rows)


def _load(ms: list[dict]) -> str:
    """1-min load average before the measurement → after it (when recorded)."""
    before = Stat(m.get("loadavg_before") for m in ms).fmt("{:.1f}")
    after = Stat(r.get("loadavg_after") for r in ok(ms))
    return f"{before} → {after.fmt('{:.1f}')}" if after else before


def _errs(ms: list[dict]) -> str:
    e = errors(ms)
    return f" ({len(e)} failed: {e[0][:80]})" if e else ""


def table_burst(doc: dict) -> str:
    per = _cases(doc, "burst")
    if not per:
        return ""
    rows = []
    for system, ms in per.items():
        rs = ok(ms)
        n = rs[0]["n"] if rs else 0
        done = [r for r in rs if r["unique"] >= r["n"]]
        proj = Stat(r["n"] / r["throughput"] for r in rs if r["unique"] < r["n"] and r.get("throughput"))
        rows.append([system, stat(ms, "unique").fmt() + f" / {n:,}", f"{len(done)}/{len(ms)}",
                     stat(ms, "first_s").fmt("{:.3f}"), stat(ms, "p50_s").fmt("{:.3f}"),
                     stat(ms, "last_s").fmt("{:.2f}"), stat(ms, "throughput").fmt(),
                     (proj.fmt("{:.0f}") + " (projected)") if proj else "",
                     "bulk API" if rs and rs[0]["bulk_api"] else "one call each",
                     stat(ms, "margin_s").fmt("{:.1f}"),
                     stat(ms, "workers_ready_before_due_s").fmt("{:.1f}"),
                     str(sum(r["early"] for r in rs)), str(len(rs)) + _errs(ms)])
    return markdown_table(["system", "ran (unique)", "runs that drained all", "first start after due, s",
                           "median start, s", "last start (drain), s", "tasks/s", "drain of all, s",
                           "enqueued with", "all stored … s before due", "workers ready … s before due",
                           "early", "runs"], rows)


def table_kill(doc: dict) -> str:
    per = _cases(doc, "kill")
    if not per:
        return ""
    rows = []
    for system, ms in per.items():
        rs = ok(ms)
        n = rs[0]["n"] if rs else 0

        def total(key: str, rs: list[dict] = rs) -> str:
            return str(sum(r[key] or 0 for r in rs))
        rows.append([system, f"{sum(1 for r in rs if r['all_ran_once'])}/{len(ms)}",
                     stat(ms, "completed").fmt() + f" / {n:,}", stat(ms, "running_at_kill").fmt(),
                     stat(ms, "not_completed").fmt(), stat(ms, "still_stored").fmt(), total("lost"),
                     total("started_again"), total("duplicates"), total("early"),
                     stat(ms, "restart_to_last_start_s").fmt("{:.1f}"), str(len(rs)) + _errs(ms)])
    return markdown_table(["system", "runs with every task done once", "tasks done (unique)",
                           "running when killed", "not done when the window closed",
                           "of which still stored (will run later)", "lost (all runs)",
                           "started again (all runs)", "done twice (all runs)", "early (all runs)",
                           "restart → last start, s", "runs"], rows)


def table_recovery(doc: dict) -> str:
    per = _cases(doc, "recovery")
    if not per:
        return ""
    rows = []
    for system, ms in per.items():
        rs = ok(ms)
        cap = rs[0]["cap_s"] if rs else 0
        rerun = [r for r in rs if r["rerun"]]
        t = Stat(r["recovery_s"] for r in rerun)
        if rerun and len(rerun) == len(rs):
            cell = t.fmt("{:.1f}")
        elif rerun:
            cell = f"{t.fmt('{:.1f}')}; {len(rs) - len(rerun)} runs > {cap:g} s"
        else:
            cell = f"> {cap:g} s (not re-run)" if rs else "n/a"
        rows.append([system, f"{len(rerun)}/{len(rs)}", cell, RECOVERY.get(system, ""),
                     str(len(rs)) + _errs(ms)])
    return markdown_table(["system", "re-run within the cap", "SIGKILL → task starts again, s",
                           "mechanism (from the source)", "runs"], rows)


def section(doc: dict) -> str:
    """The markdown of the Redis comparison (empty without ``redis`` measurements)."""
    if not group(doc, "redis"):
        return ""
    parts = []
    for title, fn, note in SUBSECTIONS:
        t = fn(doc)
        if t:
            parts += [f"### {title}", ""] + ([note, ""] if note else []) + [t, ""]
    return "\n".join(parts).rstrip()


SUBSECTIONS = [
    ("Server", table_server, ""),
    ("Systems", table_settings,
     "Every measurement starts fresh processes: the system's worker process(es) and, separately, "
     "a client process that enqueues (as a web process would). Runs are counted by the task itself "
     "in an `O_APPEND` log, outside any store; *early* compares the task's start with its eta on "
     "the local clock (one host). A SIGKILL kills the worker process and every process it started "
     "(RQ's work horses and scheduler are forks in their own process groups), as when its host or "
     "container dies. Every system's logging is set to WARNING."),
    ("Enqueue, one call per task, due in 1 h", table_enqueue,
     "One client thread, nothing running tasks, `appendfsync always`: each call returns once Redis "
     "has the task on disk. *Redis commands* counts `INFO commandstats` (commands run inside a Lua "
     "script count too; one script call = one round trip); *server µs* is the time Redis spent "
     "executing them (not the fsync). The everysec row is timewheel with `CONFIG SET appendfsync "
     "everysec` (not a target: it can lose the last second of tasks if the server's host crashes). "
     "`redis-py` is the ceiling of one durable round trip per task: a bare `ZADD` of the pickled "
     "call, no task system around it."),
    ("Enqueue through a bulk API", table_batch, ""),
    ("Lateness (start inside the task − eta)", table_lateness,
     "Workers running; the client enqueues the tasks one call each, due evenly over the window "
     "(first due after *first due after*, longer for a system whose enqueue is slow so that every "
     "task is stored before the first is due). All values over the runs. *CPU per task*: user + "
     "system time of the worker's process tree and of redis-server over the due window, divided by "
     "the tasks: at 200 tasks/s on 2 shared cores this is what other load competes with (the *load "
     "average* column: timewheel's tail grows with it, the peers' poll intervals hide it)."),
    ("Burst: many no-op tasks due at one instant", table_burst,
     "The client stores all the tasks (with the bulk API where there is one) due at one instant; "
     "then the workers are started, and are ready before that instant; they drain the tasks. Times "
     "are task starts relative to the due instant. A system that had not started every task when "
     "the window closed (or after a quiet spell) shows what it ran; *drain of all* is then "
     "projected from its rate."),
    ("SIGKILL of the worker and restart", table_kill,
     "Worker A running; the client enqueues the tasks (each runs 10 ms: it notes its start, sleeps, "
     "notes its end) due over a window; A is SIGKILLed in the middle of the window, tasks due and "
     "some running; worker B starts a few seconds later; the parent waits until every task is done "
     "(then a little longer for duplicates) or the window closes, then counts what the store still "
     "holds. *Lost*: not done and not stored to run later. *Started again*: a task that started "
     "more than once (a task interrupted by the kill and re-run counts here); *done twice*: a task "
     "that ran to its end more than once. "
     + KILL_NOTES["rq"]),
    ("Recovery of a SIGKILLed worker's task", table_recovery,
     "One task that sleeps starts on worker A; worker B starts and is ready; A is SIGKILLed; the time "
     "from the kill until the task starts again (on B). A system that has not re-run it when the cap "
     "runs out is reported as such, with the mechanism from its source instead of waiting for it."),
]


# -- targets ------------------------------------------------------------------------------------
def targets(doc: dict) -> list[list[str]]:
    out: list[list[str]] = []

    per = _cases(doc, "enqueue")
    tw = stat(per.get("timewheel", []), "rate")
    peers = {s: stat(per.get(s, []), "rate") for s in PEERS}
    peers = {s: v for s, v in peers.items() if v}
    if tw and peers:
        best = max(peers, key=lambda s: peers[s].med)
        raw = stat(per.get("redis-py", []), "rate")
        ceiling = (f"; the ceiling of one durable round trip per call, a bare redis-py ZADD, is "
                   f"{raw.med:,.0f}/s = {raw.med / peers[best].med:.2f}× {best}") if raw else ""
        out.append(["Redis, enqueue per call: ≥ 1.5× the fastest of RQ, RedisHuey, arq",
                    f"{tw.med / peers[best].med:.2f}× the fastest, {best} ({tw.med:,.0f} vs "
                    f"{peers[best].med:,.0f}/s){ceiling}", verdict(tw.med >= 1.5 * peers[best].med)])
    ms = _cases(doc, "lateness").get("timewheel")
    if ms:
        p99 = stat(ms, "p99_ms")
        out.append(["Redis, lateness of 2,000 tasks over 10 s: p99 ≤ 10 ms (median of runs)",
                    f"p99 {p99.fmt('{:.1f}')} ms" + worst(p99, 10.0, "ms"),
                    verdict(bool(p99) and p99.med <= 10.0)])
    ms = _cases(doc, "kill").get("timewheel")
    if ms:
        rs = ok(ms)
        lost = sum(r["lost"] or 0 for r in rs)
        good = sum(1 for r in rs if r["completed"] >= r["n"])
        out.append(["Redis, SIGKILL + restart: 0 lost (every task done, every run)",
                    f"{good}/{len(ms)} runs did every task; lost {lost}, not done in the window "
                    f"{sum(r['not_completed'] for r in rs)}; done twice {sum(r['duplicates'] for r in rs)}, "
                    f"started again {sum(r['started_again'] for r in rs)}",
                    verdict(bool(rs) and len(rs) == len(ms) and good == len(ms) and lost == 0)])
    ms = _cases(doc, "recovery").get("timewheel")
    if ms:
        rs = ok(ms)
        t = Stat(r["recovery_s"] for r in rs if r["rerun"])
        missing = sum(1 for r in rs if not r["rerun"])
        out.append(["Redis, recovery of a SIGKILLed worker's task: ≤ 15 s (median of runs)",
                    f"{t.fmt('{:.1f}')} s" + worst(t, 15.0, "s")
                    + (f"; {missing} runs not re-run within the cap" if missing else ""),
                    verdict(bool(t) and not missing and t.med <= 15.0)])
    return out


# -- plots --------------------------------------------------------------------------------------
def plots(doc: dict, outdir: str) -> list[str]:
    per = _cases(doc, "lateness")
    if not per:
        return []
    made = []
    lateness_cdf(per, "unique", 1e-2, 10, "lateness = start − eta, ms (log; early starts drawn at 0.01 ms)",
                 "Redis: lateness CDF, same redis-server (all runs pooled)",
                 os.path.join(outdir, "redis_lateness_cdf.png"), COLORS)
    made.append("redis_lateness_cdf.png")

    per = _cases(doc, "burst")
    if per:
        n = next((r["n"] for ms in per.values() for r in ok(ms)), 0)
        burst_drain(per, f"Redis: burst drain, {n:,} no-op tasks due at once (each run)",
                    os.path.join(outdir, "redis_burst_drain.png"), COLORS)
        made.append("redis_burst_drain.png")
    return made
