"""The ``scale`` workload: 1, 2 and 4 processes with ``workers=4`` each on one store file,
timewheel beside Huey (``SqliteHuey`` with one in-process thread consumer per process).

Three kinds of measurement, each in fresh processes on a fresh file:

* ``io``: ``n`` tasks that sleep ``seconds`` (10 ms), all due at one instant; drain time =
  from that instant to the end of the last task.
* ``cpu``: ``n`` tasks that spin pure Python until their thread has used ``seconds`` (5 ms)
  of CPU; drain time as above.
* ``lateness``: ``n`` no-op tasks due evenly over ``spread`` seconds; lateness = start (inside
  the task) - eta.

Every process starts its consumer, reports READY, and is then told the due instant (a file
the parent writes); each enqueues its share of the tasks (``k % procs == index``) -- through
the batch API where the system has one, for ``io``/``cpu``, and one call each for
``lateness`` -- and all of it is stored before the first task is due (the lead is calibrated
from each process's own enqueue speed).  Every run is counted outside any store: the task
appends ``i pid due started ended`` to an ``O_APPEND`` log, one ``write()`` per line.

This module holds all three sides: :func:`child` runs in a measurement process,
:func:`measure` is the parent's orchestration (through a :class:`benchmarks.harness.Runner`),
and :func:`table`, :func:`targets`, :func:`plots` are its part of the report.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Optional

from .charts import COLORS, median_bars, pyplot, save
from .harness import Case, Runner, await_ready, stop_processes, wait_for_file
from .machine import cpu_seconds
from .stats import Stat, errors, group, markdown_table, ok, pct, stat, verdict, worst
from .systems import WORKERS, open_system, utc

SYSTEMS = ("timewheel", "huey")
PROCS = (1, 2, 4)
KINDS = ("io", "cpu", "lateness")

# Sizes per mode; the issue fixes the full ones.  ``min_lead``: the shortest time from the
# go signal to the first due instant; ``linger``: how long to keep watching once every task
# has run, so that a second run of one would show.
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"io": {"n": 600, "seconds": 0.01}, "cpu": {"n": 120, "seconds": 0.005},
              "lateness": {"n": 400, "spread": 2.0},
              "min_lead": 1.0, "linger": 0.5, "reps": {"timewheel": 1, "huey": 1}},
    "full": {"io": {"n": 4000, "seconds": 0.01}, "cpu": {"n": 400, "seconds": 0.005},
             "lateness": {"n": 2000, "spread": 10.0},
             "min_lead": 2.0, "linger": 1.0, "reps": {"timewheel": 3, "huey": 2}},
}

TASK_NAME = "benchmarks.scale.work"


def plan(mode: str) -> list[Case]:
    """The cases of one mode, kind by kind, processes 1, 2, 4, timewheel then Huey (the
    harness interleaves the repetitions across all of them)."""
    sizes = SIZES[mode]
    return [Case("scale", system,
                 dict(sizes[kind], kind=kind, procs=procs, min_lead=sizes["min_lead"],
                      linger=sizes["linger"]),
                 sizes["reps"][system], f"{kind}:{system}@{procs}")
            for kind in KINDS for procs in PROCS for system in SYSTEMS]


# -- the task ---------------------------------------------------------------------------------
_fd: Optional[int] = None


def _spin(seconds: float) -> None:
    """Pure Python arithmetic until this thread has used ``seconds`` of CPU.  Thread CPU time,
    not wall time: a thread that waits for the GIL or for a core does no work, and must not
    count that wait (four threads spinning on wall time in one process would all finish in
    about ``seconds`` and fake a 4x parallelism the GIL does not allow)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for _ in range(500):            # ~25 us between clock reads, so the syscall is ~3%
            x = (x * 31 + 7) & 0xFFFF


def work(i: int, due: float, kind: str, seconds: float) -> None:
    """The task: sleep (``io``), spin (``cpu``) or nothing (``lateness``), then log the run."""
    started = time.time()
    if kind == "io":
        time.sleep(seconds)
    elif kind == "cpu":
        _spin(seconds)
    ended = time.time()
    if _fd is not None:
        os.write(_fd, f"{i} {os.getpid()} {due:.6f} {started:.6f} {ended:.6f}\n".encode())


def read_runs(path: str) -> list[tuple[int, int, float, float, float]]:
    """``(i, pid, due, started, ended)`` per logged run, skipping the calibration tasks
    (negative ids; due a day out, they never run) should one ever run."""
    out = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 5 and int(parts[0]) >= 0:
                    out.append((int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]),
                                float(parts[4])))
    except FileNotFoundError:
        pass
    return out


class _Tally:
    """The run log read incrementally: lines and distinct task ids so far.  The parent polls
    it every 50 ms during the drain; re-reading thousands of lines each time would take CPU
    from the measured processes (the machine has 2 cores)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""              # a line not yet complete at the last read
        self.lines = 0
        self.ids: set[int] = set()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        self.lines += len(lines)
        self.ids.update(i for i in (int(line.split(b" ", 1)[0]) for line in lines) if i >= 0)


# -- child side -------------------------------------------------------------------------------
Enqueue = Callable[[int, float], None]
EnqueueMany = Callable[[list[tuple[int, float]]], None]


def _enqueuers(system: Any, name: str, kind: str, seconds: float) -> tuple[Enqueue, EnqueueMany]:
    """Register :func:`work` on ``system`` and return ``one(i, due)`` and ``many(items)``,
    the latter through the system's batch API where it has one."""
    if name == "timewheel":
        hu = system.hu
        delay = hu.task(name=TASK_NAME)(work).delay

        def one(i: int, due: float) -> None:
            delay(i, due, kind, seconds, eta=due)

        def many(items: list[tuple[int, float]]) -> None:
            with hu.batch():
                for i, due in items:
                    delay(i, due, kind, seconds, eta=due)
        return one, many

    schedule = system.huey.task(name=TASK_NAME)(work).schedule

    def one_huey(i: int, due: float) -> None:
        schedule(args=(i, due, kind, seconds), eta=utc(due))

    def many_huey(items: list[tuple[int, float]]) -> None:     # Huey has no batch API
        for i, due in items:
            one_huey(i, due)
    return one_huey, many_huey


def child(spec: dict) -> dict:
    """One of ``procs`` processes: start the consumer, calibrate, say READY with the seconds
    per enqueued task, wait for the go file (the first due instant), enqueue this process's
    share, then run tasks until the parent's stop file appears."""
    global _fd
    _fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    kind, n, procs, index = spec["kind"], spec["n"], spec["procs"], spec["index"]
    system = open_system(spec["system"], spec["store"])
    one, many = _enqueuers(system, spec["system"], kind, spec.get("seconds", 0.0))
    system.start()
    share = list(range(index, n, procs))
    # Calibrate with tasks due a day out (never run here): per call for lateness, as the
    # share will be enqueued; through the batch API otherwise.
    m = max(50, min(500, len(share) // 10))
    far = time.time() + 86400
    t = time.perf_counter()
    if kind == "lateness":
        for j in range(m):
            one(-1 - j, far)
    else:
        many([(-1 - j, far) for j in range(m)])
    per_task = (time.perf_counter() - t) / m
    print(f"READY {per_task:.9f}", flush=True)
    wait_for_file(spec["go"], poll=0.005)
    with open(spec["go"]) as fh:
        due0 = json.load(fh)["due"]
    t0 = time.time()
    late_enqueued = 0
    if kind == "lateness":
        spread = spec["spread"]
        for k in share:
            due = due0 + spread * k / n
            one(k, due)
            if time.time() > due:
                late_enqueued += 1
    else:
        many([(k, due0) for k in share])
        late_enqueued = len(share) if time.time() > due0 else 0
    t1 = time.time()
    wait_for_file(spec["stopfile"])
    return {"pid": os.getpid(), "share": len(share), "enqueue_start": t0, "enqueue_end": t1,
            "late_enqueued": late_enqueued}


# -- parent side ------------------------------------------------------------------------------
def _max_wait(p: dict) -> float:
    """Seconds after the first due instant before giving up: three times the ideal drain of
    one process, plus room for a slow consumer."""
    if p["kind"] == "io":
        return 3 * p["n"] * p["seconds"] / WORKERS + 30
    if p["kind"] == "cpu":
        return 3 * p["n"] * p["seconds"] + 30
    return p["spread"] + 30


def measure(runner: Runner, case: Case) -> dict:
    """Start ``procs`` children on one fresh file, give them the due instant once all are
    ready, watch the run log until every task has run (plus ``linger``), stop them and
    count.  The measurement's directory (store, log, the children's stderr) is kept when
    something went wrong, for ``--keep-scratch``."""
    p = case.params
    d, _, _ = runner.paths(case.key().replace(":", "-"))
    store, logf = os.path.join(d, "store.db"), os.path.join(d, "runs.log")
    gofile, stopfile = os.path.join(d, "go.json"), os.path.join(d, "stop")
    procs, outs = [], []
    for k in range(p["procs"]):
        out = os.path.join(d, f"out-{k}.json")
        outs.append(out)
        spec = dict(p, workload="scale", system=case.system, store=store, log=logf, index=k,
                    go=gofile, stopfile=stopfile, out=out)
        procs.append(runner.spawn(spec, d, os.path.join(d, f"spec-{k}.json"), pipe=True))
    ready = await_ready(procs, timeout=120)
    per_task = None if ready is None else [float(r) for r in ready]
    if per_task is None:
        stop_processes(procs, stopfile)
        errs = [runner.read(o, d) for o in outs]
        return {"error": "a process did not get ready",
                "children": [e.get("error") or e.get("stderr", "")[-500:] for e in errs]}
    share = -(-p["n"] // p["procs"])
    lead = max(p["min_lead"], 1.5 * max(per_task) * share + 0.5)
    due0 = time.time() + lead
    with open(gofile + ".tmp", "w") as fh:
        json.dump({"due": due0}, fh)
    os.replace(gofile + ".tmp", gofile)

    pids = [proc.pid for proc in procs]
    time.sleep(max(0.0, due0 - time.time()))
    cpu_at_due = (time.time(), *cpu_seconds(pids))
    cpu_at_end: Optional[tuple[float, float, float]] = None
    deadline = due0 + _max_wait(p)
    tally = _Tally(logf)
    last_count, last_change = 0, time.time()
    while time.time() < deadline:
        tally.poll()
        if tally.lines != last_count:
            last_count, last_change = tally.lines, time.time()
        if len(tally.ids) >= p["n"]:
            cpu_at_end = cpu_at_end or (time.time(), *cpu_seconds(pids))
            if time.time() - cpu_at_end[0] >= p["linger"]:
                break
        elif time.time() > due0 + 10 and time.time() - last_change > 10:
            break                                   # no progress for 10 s: give up
        time.sleep(0.05)
    cpu_at_end = cpu_at_end or (time.time(), *cpu_seconds(pids))
    stop_processes(procs, stopfile)
    children = [runner.read(o, d) for o in outs]
    res = _count(p, read_runs(logf), due0, children)
    wall = cpu_at_end[0] - cpu_at_due[0]
    res.update(lead_s=lead, calibrated_s_per_task=per_task,
               cores_ours=(cpu_at_end[1] - cpu_at_due[1]) / wall,
               cores_machine=(cpu_at_end[2] - cpu_at_due[2]) / wall)
    if not res["child_errors"] and res["missing"] == 0:
        shutil.rmtree(d, ignore_errors=True)
    return res


def _count(p: dict, runs: list[tuple[int, int, float, float, float]], due0: float,
           children: list[dict]) -> dict:
    """What the log says: runs, lost, duplicates, early starts, drain time, lateness,
    processes that ran tasks; and what the children said about their enqueues."""
    n = p["n"]
    ids = [r[0] for r in runs]
    unique = set(ids)
    per_pid: dict[int, int] = {}
    for r in runs:
        per_pid[r[1]] = per_pid.get(r[1], 0) + 1
    late = sorted(r[3] - r[2] for r in runs)
    index_of = {c["pid"]: k for k, c in enumerate(children) if "pid" in c}
    # the latest starts, with who enqueued (k % procs) and who ran each: a task one process
    # enqueued that another found only at its next tick would stand out here
    worst = [{"id": r[0], "due_s": r[2] - due0, "late_ms": (r[3] - r[2]) * 1e3,
              "enqueued_by": r[0] % p["procs"], "ran_by": index_of.get(r[1])}
             for r in sorted(runs, key=lambda r: r[2] - r[3])[:5]]
    missing = n - len(unique & set(range(n)))
    last_end = max((r[4] for r in runs), default=None)
    drain = last_end - due0 if last_end is not None and not missing else None
    ends = [c["enqueue_end"] for c in children if "enqueue_end" in c]
    return {
        "kind": p["kind"], "n": n, "procs": p["procs"], "runs": len(ids), "unique": len(unique),
        "missing": missing, "duplicates": len(ids) - len(unique),
        "early": sum(1 for x in late if x < 0),
        "drain_s": drain, "throughput": n / drain if drain else None,
        "running_pids": len(per_pid), "runs_per_process": sorted(per_pid.values(), reverse=True),
        "lateness_p50_ms": pct(late, 50) * 1e3, "lateness_p99_ms": pct(late, 99) * 1e3,
        "lateness_max_ms": (late[-1] if late else float("nan")) * 1e3,
        "first_start_ms": (min(r[3] for r in runs) - due0) * 1e3 if runs else None,
        "worst_starts": worst,
        "margin_s": due0 - max(ends) if len(ends) == len(children) else None,
        "late_enqueued": sum(c.get("late_enqueued", 0) for c in children),
        "child_errors": [c["error"] for c in children if "error" in c],
    }


def brief(r: dict) -> str:
    """One line of the harness's progress output."""
    once = f"unique {r['unique']}/{r['n']} dup {r['duplicates']} early {r['early']}"
    if r["kind"] == "lateness":
        return (f"{once} p50 {r['lateness_p50_ms']:.1f} ms p99 {r['lateness_p99_ms']:.1f} ms "
                f"max {r['lateness_max_ms']:.1f} ms pids {r['running_pids']} "
                f"cores {r['cores_ours']:.2f}/{r['cores_machine']:.2f}")
    drain = f"{r['drain_s']:.2f} s ({r['throughput']:,.0f}/s)" if r["drain_s"] else "incomplete"
    return (f"{once} drain {drain} pids {r['running_pids']} margin {r['margin_s']:.2f} s "
            f"cores {r['cores_ours']:.2f}/{r['cores_machine']:.2f}")


# -- report -----------------------------------------------------------------------------------
TITLE = "Scale-out: 1, 2 and 4 processes on one file (`workers=4` each)"
NOTE = (
    "Each measurement starts 1, 2 or 4 fresh processes on one fresh file; each starts its "
    "consumer (timewheel: `hu.start()`; Huey: `SqliteHuey` + an in-process "
    "`create_consumer(workers=4, worker_type='thread')`), and once all are ready each enqueues "
    "its share of the tasks (timewheel through `hu.batch()`, Huey one call each; lateness: one "
    "call each for both), all stored before the first is due (*margin*). *I/O*: tasks that "
    "sleep 10 ms, all due at one instant; *CPU*: tasks that spin pure Python until their "
    "thread has used 5 ms of CPU, all due at one instant; drain = due instant → end of the last "
    "task. *Lateness*: no-op tasks due evenly over the window, lateness = start − eta. Runs "
    "are counted in an O_APPEND log written by the task (outside any store); *processes that "
    "ran tasks* are the distinct pids in it. Speed-up = median drain with 1 process / median "
    "drain with N. *Cores busy*: CPU time (from /proc) of the measured processes and of the "
    "whole machine from the (first) due instant until every task had run, divided by that "
    "time: on a shared machine it shows what the run could get of the cores.")


def _case(kind: str, system: str, procs: int) -> str:
    return f"{kind}:{system}@{procs}"


def _ms_of(doc: dict) -> "dict[str, list[dict]]":
    return group(doc, "scale")


def _once(rs: list[dict]) -> str:
    return (f"{sum(r['missing'] for r in rs)} / {sum(r['duplicates'] for r in rs)} / "
            f"{sum(r['early'] for r in rs)}")


def table(doc: dict) -> str:
    """Two tables: drain time and speed-up (I/O, CPU), and lateness."""
    g = _ms_of(doc)
    if not g:
        return ""
    drain_rows, late_rows = [], []
    for kind in KINDS:
        for system in SYSTEMS:
            one = stat(g.get(_case(kind, system, 1), []), "drain_s")
            for procs in PROCS:
                ms = g.get(_case(kind, system, procs))
                if not ms:
                    continue
                rs = ok(ms)
                ran = (stat(ms, "unique").fmt() + f" / {rs[0]['n']:,}") if rs else "; ".join(errors(ms))
                pids = stat(ms, "running_pids").fmt()
                cores = stat(ms, "cores_ours").fmt("{:.2f}") + " / " + stat(ms, "cores_machine").fmt("{:.2f}")
                runs = str(len(rs)) + (f" ({len(ms) - len(rs)} failed)" if len(ms) > len(rs) else "")
                if kind == "lateness":
                    late_rows.append([system, str(procs), ran, _once(rs),
                                      stat(ms, "lateness_p50_ms").fmt("{:,.1f}"),
                                      stat(ms, "lateness_p99_ms").fmt("{:,.1f}"),
                                      stat(ms, "lateness_max_ms").fmt("{:,.1f}"), pids, cores,
                                      str(sum(r["late_enqueued"] for r in rs)), runs])
                    continue
                drain = stat(ms, "drain_s")
                margin = Stat(r["margin_s"] for r in rs)
                drain_rows.append([
                    "I/O (sleep)" if kind == "io" else "CPU (spin)", system, str(procs), ran,
                    _once(rs), drain.fmt("{:.2f}"), stat(ms, "throughput").fmt(),
                    f"{one.med / drain.med:.2f}×" if one and drain else "n/a", pids,
                    cores,
                    stat(ms, "first_start_ms").fmt("{:,.1f}"), margin.fmt("{:.2f}"), runs])
    out = []
    if drain_rows:
        out.append(markdown_table(["kind", "system", "processes", "tasks run (unique)", "lost / dup / early",
                                   "drain s", "tasks/s", "speed-up vs 1 process", "processes that ran tasks",
                                   "cores busy in the drain: these processes / whole machine",
                                   "first start after due, ms", "margin s", "runs"], drain_rows))
    if late_rows:
        out.append(markdown_table(["system", "processes", "tasks run (unique)", "lost / dup / early",
                                   "p50 ms", "p99 ms", "max ms", "processes that ran tasks",
                                   "cores busy in the window: these processes / whole machine",
                                   "enqueued after their eta", "runs"], late_rows))
    return "\n\n".join(out)


def _speedup(g: "dict[str, list[dict]]", kind: str, procs: int, need: float) -> Optional[list[str]]:
    one, many = g.get(_case(kind, "timewheel", 1)), g.get(_case(kind, "timewheel", procs))
    if not one or not many:
        return None
    params = one[0]["params"]
    t1, tn = stat(one, "drain_s"), stat(many, "drain_s")
    incomplete = sum(1 for m in one + many if m["result"].get("drain_s") is None)
    if t1 and tn:
        got = f"{t1.med / tn.med:.2f}× ({t1.med:.2f} s → {tn.med:.2f} s)"
        good = t1.med / tn.med >= need and not incomplete
    else:
        got, good = "n/a", False
    if incomplete:
        got += f"; {incomplete} runs incomplete or failed"
    what = ("I/O-bound: {n:,} tasks of sleep {ms:g} ms" if kind == "io"
            else "CPU-bound: {n:,} tasks of spin {ms:g} ms").format(n=params["n"], ms=1e3 * params["seconds"])
    return [f"scale, {what}: {procs} processes ≥ {need}× faster than 1 (median drain)",
            got, verdict(good)]


def targets(doc: dict) -> list[list[str]]:
    """The issue's scale targets, judged on medians; exactly-once over every scale run."""
    g = _ms_of(doc)
    out: list[list[str]] = []
    for kind, procs, need in (("io", 4, 3.5), ("cpu", 2, 1.7)):
        row = _speedup(g, kind, procs, need)
        if row:
            out.append(row)
    for procs, limit in ((4, 20.0), (1, 5.0)):
        ms = g.get(_case("lateness", "timewheel", procs))
        if not ms:
            continue
        rs = ok(ms)
        p99 = Stat(r["lateness_p99_ms"] for r in rs)
        n = rs[0]["n"] if rs else 0
        failed = len(ms) - len(rs)
        exact = bool(rs) and not failed and all(r["missing"] == r["duplicates"] == r["early"] == 0
                                                for r in rs)
        out.append([f"scale, lateness: {n:,} tasks over {ms[0]['params']['spread']:g} s, enqueued from "
                    f"and run by {procs} process{'es' if procs > 1 else ''}: 0 early, none lost or twice, "
                    f"p99 ≤ {limit:g} ms (median of runs)",
                    f"lost / dup / early {_once(rs)}; p99 {p99.fmt('{:.1f}')} ms"
                    + worst(p99, limit, "ms") + (f"; {failed} runs failed" if failed else ""),
                    verdict(exact and p99.med <= limit)])
    tw = [m for case, ms in g.items() if case.split(":")[1].startswith("timewheel@") for m in ms]
    if tw:
        good = sum(1 for m in tw if "error" not in m["result"] and not m["result"]["child_errors"]
                   and m["result"]["missing"] == m["result"]["duplicates"] == 0)
        out.append(["scale: every task run exactly once, every run (all kinds, 1/2/4 processes)",
                    f"{good}/{len(tw)} runs", verdict(good == len(tw))])
    return out


def plots(doc: dict, outdir: str) -> list[str]:
    """``scale.png``: throughput against processes (I/O, CPU) and lateness p99 against
    processes, median with min–max bars."""
    g = _ms_of(doc)
    if not g:
        return []
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.0), dpi=100)
    for ax, kind in zip(axes, KINDS):
        key = "lateness_p99_ms" if kind == "lateness" else "throughput"
        for system in SYSTEMS:
            median_bars(ax, [(procs, stat(g.get(_case(kind, system, procs), []), key)) for procs in PROCS],
                        color=COLORS[system], label=system)
        params = next((ms[0]["params"] for c, ms in g.items() if c.startswith(kind + ":")), None)
        if params is None:
            continue
        if kind == "io":
            # the ceiling: every worker of every process sleeping back to back
            ax.plot(PROCS, [p * WORKERS / params["seconds"] for p in PROCS], ls="--", color="gray",
                    lw=1, label=f"processes × {WORKERS} workers / {1e3 * params['seconds']:g} ms")
            ax.set_title(f"I/O-bound: {params['n']:,} × sleep {1e3 * params['seconds']:g} ms")
        elif kind == "cpu":
            cores = doc["machine"].get("cores") or 1
            ax.plot(PROCS, [min(p, cores) / params["seconds"] for p in PROCS], ls="--", color="gray",
                    lw=1, label=f"min(processes, {cores} cores) / {1e3 * params['seconds']:g} ms")
            ax.set_title(f"CPU-bound: {params['n']:,} × spin {1e3 * params['seconds']:g} ms")
        else:
            ax.set_yscale("log")
            for limit, who in ((5, "1 process"), (20, "4 processes")):
                ax.axhline(limit, color="red", ls=":", lw=1)
                ax.text(1.05, limit * 1.08, f"target {who}: {limit} ms", color="red", fontsize=7)
            ax.set_title(f"Lateness p99: {params['n']:,} tasks over {params['spread']:g} s")
        if kind != "lateness":
            ax.set_ylim(bottom=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(PROCS))
        ax.set_xticklabels([str(p) for p in PROCS])
        ax.set_xlabel("processes on one file")
        ax.set_ylabel("p99 lateness, ms (log)" if kind == "lateness" else "tasks/s (from the due instant)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Scale-out: median of runs, bars min–max", fontsize=10)
    save(fig, os.path.join(outdir, "scale.png"))
    return ["scale.png"]
