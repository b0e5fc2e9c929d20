"""Benchmarks of timewheel side by side with Huey, APScheduler and raw sqlite3: one fresh
process per measurement, repetitions interleaved across systems, raw results as JSON in
benchmarks/results/, RESULTS.md and plots regenerated after a complete full run.

This module is the parent process: it plans the measurements, interleaves them, spawns the
measurement processes (:mod:`benchmarks.child`) and writes the JSON.

``python -m benchmarks [--quick] [--only WORKLOAD ...] [--reps N] [--no-report]``
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import bigstore, redis_peers, scale

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
SCRATCH = os.path.join(HERE, "scratch")

WORKLOAD_ORDER = ("enqueue", "batch", "pending", "startup", "lateness", "burst", "kill", "multiproc",
                  "scale", *bigstore.WORKLOADS, "redis")


@dataclass
class Case:
    workload: str
    system: str
    params: dict
    reps: int
    label: str = ""

    def key(self) -> str:
        return self.label or self.system


@dataclass
class Mode:
    name: str
    enqueue_n: list[int]
    enqueue_reps: dict[int, int]
    slow_peer_reps: dict[int, int]          # reps for huey/apscheduler at that n
    batch_n: list[int]
    pending_levels: list[int]
    pending_n: int
    pending_reps: int
    startup_pending: int
    startup_inline: int
    startup_reps: int
    idle_s: float
    lateness: dict
    lateness_reps: int
    burst_n: int
    burst_reps: int
    burst_aps_reps: int
    kill: dict
    kill_reps: int
    kill_peer_reps: int
    multi_n: int
    multi_reps: int
    extra: dict = field(default_factory=dict)


QUICK = Mode(
    name="quick", enqueue_n=[2000], enqueue_reps={2000: 1}, slow_peer_reps={2000: 1},
    batch_n=[10_000], pending_levels=[0, 100_000], pending_n=2000, pending_reps=1,
    startup_pending=100_000, startup_inline=500, startup_reps=1, idle_s=3.0,
    lateness={"n": 500, "lead": 1.0, "spread": 3.0, "grace": 10.0}, lateness_reps=1,
    burst_n=1000, burst_reps=1, burst_aps_reps=1,
    kill={"n": 200, "due_lo": 2.0, "due_hi": 3.0, "kill_after": 0.5, "restart_after": 2.0, "linger": 1.0},
    kill_reps=1, kill_peer_reps=1, multi_n=300, multi_reps=1, extra={"multi": {"setup": 2.5, "linger": 1.0}})

FULL = Mode(
    name="full", enqueue_n=[10_000, 100_000], enqueue_reps={10_000: 5, 100_000: 3},
    slow_peer_reps={10_000: 3, 100_000: 1},
    batch_n=[10_000, 100_000], pending_levels=[0, 10_000, 100_000, 1_000_000], pending_n=10_000,
    pending_reps=3, startup_pending=1_000_000, startup_inline=10_000, startup_reps=3, idle_s=10.0,
    lateness={"n": 2000, "lead": 2.0, "spread": 10.0, "grace": 15.0}, lateness_reps=3,
    burst_n=20_000, burst_reps=3, burst_aps_reps=2,
    kill={"n": 1000, "due_lo": 3.0, "due_hi": 6.0, "kill_after": 1.0, "restart_after": 8.0},
    kill_reps=5, kill_peer_reps=2, multi_n=2000, multi_reps=3)

RUNNERS = ("timewheel", "huey", "apscheduler", "apscheduler-nograce")


def plan(mode: Mode) -> dict[str, list[Case]]:
    p: dict[str, list[Case]] = {}
    cases = []
    for n in mode.enqueue_n:
        for system in ("timewheel", "huey", "huey-normal", "apscheduler", "sqlite3"):
            reps = mode.enqueue_reps[n] if system in ("timewheel", "sqlite3") else mode.slow_peer_reps[n]
            if system == "huey-normal" or (system == "huey" and n >= 100_000):
                reps = max(reps, mode.enqueue_reps[n])      # cheap enough for the full count
            cases.append(Case("enqueue", system, {"n": n}, reps, f"{system}@{n}"))
    p["enqueue"] = cases
    p["batch"] = [Case("batch", system, {"n": n, "batch": True}, mode.enqueue_reps.get(n, 3),
                       f"{system}@{n}")
                  for n in mode.batch_n for system in ("timewheel", "sqlite3")]
    p["pending"] = [Case("pending", system, {"n": mode.pending_n, "pending": level},
                         mode.pending_reps, f"{system}@{level}")
                    for level in mode.pending_levels for system in ("timewheel", "sqlite3")]
    p["startup"] = ([Case("startup", "timewheel", {"pending": mode.startup_pending, "idle_s": mode.idle_s},
                          mode.startup_reps, f"timewheel@{mode.startup_pending}")]
                    + [Case("startup", system, {"inline_pending": mode.startup_inline, "idle_s": mode.idle_s},
                            max(1, mode.startup_reps - 1), f"{system}@{mode.startup_inline}")
                       for system in ("timewheel", "huey", "apscheduler-nograce")])
    p["lateness"] = [Case("lateness", s, dict(mode.lateness), mode.lateness_reps) for s in RUNNERS]
    p["burst"] = [Case("burst", s, {"n": mode.burst_n, "batch": s == "timewheel"},
                       mode.burst_reps if not s.startswith("apscheduler") else mode.burst_aps_reps)
                  for s in RUNNERS]
    p["kill"] = [Case("kill", s, dict(mode.kill), mode.kill_reps if s == "timewheel" else mode.kill_peer_reps)
                 for s in RUNNERS]
    p["multiproc"] = [Case("multiproc", s, dict(mode.extra.get("multi", {}), n=mode.multi_n, procs=3),
                           mode.multi_reps) for s in RUNNERS]
    p["scale"] = scale.plan(mode.name)
    p.update(bigstore.plan(mode))
    p["redis"] = redis_peers.plan(mode)         # timewheel's Redis store vs RQ, RedisHuey, arq
    return p


# -- machine facts ----------------------------------------------------------------------------
def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def timewheel_rev() -> str:
    """The commit of the checkout, with ``+dirty`` if timewheel/ has uncommitted changes: the
    checkout is shared, so the code under test can change during a run."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "timewheel"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:
        return ""


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except Exception:
        commit = ""
    return {
        "cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
        "packages": {m: _version(m) for m in
                     ("timewheel", "sqlitedict", "huey", "APScheduler", "SQLAlchemy", "matplotlib")},
        "git_commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


# -- running children -------------------------------------------------------------------------
class Runner:
    def __init__(self, run_dir: str, verbose: bool = True) -> None:
        self.run_dir = run_dir
        self.verbose = verbose
        self._seq = 0
        self.bases: dict[tuple[str, int], str] = {}
        self.builds: list[dict] = []

    def _paths(self, tag: str) -> tuple[str, str, str]:
        self._seq += 1
        d = os.path.join(self.run_dir, f"{self._seq:04d}-{tag}")
        os.makedirs(d, exist_ok=True)
        return d, os.path.join(d, "spec.json"), os.path.join(d, "out.json")

    @staticmethod
    def _env() -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONHASHSEED"] = "0"
        return env

    def spawn(self, spec: dict, d: str, spec_path: str, pipe: bool = False) -> subprocess.Popen:
        with open(spec_path, "w") as fh:
            json.dump(spec, fh)
        err = open(os.path.join(d, f"stderr-{os.path.basename(spec_path)}.txt"), "w")
        return subprocess.Popen([sys.executable, "-m", "benchmarks.child", spec_path], cwd=ROOT,
                                env=self._env(), stdout=subprocess.PIPE if pipe else subprocess.DEVNULL,
                                stderr=err, text=True)

    def run(self, spec: dict, tag: str, timeout: float = 900.0) -> dict:
        d, spec_path, out = self._paths(tag)
        spec = dict(spec, out=out)
        spec.setdefault("store", os.path.join(d, "store.db"))
        proc = self.spawn(spec, d, spec_path)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout:g}s"}
        res = self._read(out, d)
        self._clean(d)
        return res

    def _read(self, out: str, d: str) -> dict:
        try:
            with open(out) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            tail = ""
            for name in os.listdir(d):
                if name.startswith("stderr"):
                    with open(os.path.join(d, name)) as fh:
                        tail += fh.read()[-2000:]
            return {"error": "no result", "stderr": tail}

    @staticmethod
    def _clean(d: str) -> None:
        for name in os.listdir(d):
            if name.endswith((".db", ".db-wal", ".db-shm", ".db.lock")):
                os.remove(os.path.join(d, name))

    # -- pre-built stores -------------------------------------------------------------------
    def base_store(self, system: str, n: int) -> str:
        key = (system, n)
        if key not in self.bases:
            d = os.path.join(self.run_dir, "bases")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{system}-{n}.db")
            t0 = time.time()
            res = self.run({"workload": "build", "system": system, "n": n, "store": path},
                           f"build-{system}-{n}", timeout=1800)
            if "error" in res:
                raise RuntimeError(f"building the {n}-task {system} store failed: {res}")
            res.update(system=system, wall=time.time() - t0)
            self.builds.append(res)
            self.log(f"  built {system} store with {n:,} pending: {res['rate']:,.0f} tasks/s, "
                     f"{res['bytes'] / 2**20:.0f} MiB")
            self.bases[key] = path
        return self.bases[key]

    def copy_of(self, base: str, d: str) -> str:
        """A copy of a prebuilt store, written to disk before it is measured: otherwise the
        first checkpoint's fsync in the measured process writes back the whole copy (350 MB
        for timewheel's 1M store, 130 MB for sqlite3's), inside the enqueue rate."""
        dst = os.path.join(d, "store.db")
        shutil.copyfile(base, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return dst

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    # -- one measurement per workload kind --------------------------------------------------
    def measure(self, case: Case) -> dict:
        w = case.workload
        if w in ("enqueue", "batch"):
            return self.run(dict(case.params, workload="enqueue", system=case.system), case.key())
        if w in ("pending", "startup"):
            spec = dict(case.params, workload="enqueue" if w == "pending" else "startup",
                        system=case.system)
            if not case.params.get("pending"):
                return self.run(spec, case.key())
            # measured on a copy of the prebuilt store, so every repetition starts the same
            d, _, _ = self._paths(case.key() + "-copy")
            spec["store"] = self.copy_of(self.base_store(case.system, case.params["pending"]), d)
            try:
                return self.run(spec, case.key())
            finally:
                shutil.rmtree(d, ignore_errors=True)
        if w in ("lateness", "burst"):
            return self.run(dict(case.params, workload=w, system=case.system), case.key(), timeout=600)
        if w == "kill":
            return self.kill_restart(case)
        if w == "multiproc":
            return self.multiproc(case)
        if w == "scale":
            return scale.measure(self, case)
        if w in bigstore.WORKLOADS:
            return bigstore.measure(self, case)
        if w == "redis":
            return redis_peers.measure(self, case)
        raise ValueError(w)

    def kill_restart(self, case: Case) -> dict:
        p = case.params
        d, spec_a, out_a = self._paths(case.key() + "-kill")
        store, logf = os.path.join(d, "store.db"), os.path.join(d, "runs.log")
        stopfile = os.path.join(d, "stop")
        base = {"system": case.system, "store": store, "log": logf}
        a = self.spawn(dict(base, workload="kill_a", n=p["n"], due_lo=p["due_lo"], due_hi=p["due_hi"],
                            out=out_a), d, spec_a, pipe=True)
        line = a.stdout.readline() if a.stdout else ""
        if not line.startswith("SCHEDULED"):
            a.kill()
            a.wait()
            return {"error": "phase A did not schedule", "stdout": line, **self._read(out_a, d)}
        scheduled_at, t0 = (float(x) for x in line.split()[1:3])
        time.sleep(max(0.0, scheduled_at + p["kill_after"] - time.time()))
        a.send_signal(signal.SIGKILL)
        killed_at = time.time()
        a.wait()
        runs_before = len(_read_runs(logf))
        time.sleep(p["restart_after"])
        spec_b = os.path.join(d, "spec-b.json")
        b = self.spawn(dict(base, workload="kill_b", stopfile=stopfile, out=os.path.join(d, "out-b.json")),
                       d, spec_b, pipe=True)
        restart_at = time.time()
        deadline = restart_at + p.get("max_wait", 30.0)
        complete_at = None
        while time.time() < deadline:
            runs = _read_runs(logf)
            if len({r[0] for r in runs}) >= p["n"]:
                complete_at = complete_at or time.time()
                if time.time() - complete_at >= p.get("linger", 2.0):   # duplicates would show now
                    break
            time.sleep(0.05)
        open(stopfile, "w").close()
        try:
            b.wait(15)
        except subprocess.TimeoutExpired:
            b.kill()
            b.wait()
        runs = _read_runs(logf)
        ids = [r[0] for r in runs]
        unique = set(ids)
        last = max((r[3] for r in runs), default=None)
        res = {
            "n": p["n"], "runs": len(ids), "unique": len(unique),
            "missing": p["n"] - len(unique & set(range(p["n"]))),
            "duplicates": len(ids) - len(unique), "runs_before_kill": runs_before,
            "early": sum(1 for r in runs if r[3] < r[2]),
            "schedule_s": scheduled_at - t0, "killed_after_s": killed_at - scheduled_at,
            "recovery_s": (last - restart_at) if last is not None and last > restart_at else None,
            "all_ran": len(unique) >= p["n"] and len(ids) == len(unique),
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def multiproc(self, case: Case) -> dict:
        p = case.params
        d, _, _ = self._paths(case.key() + "-multi")
        store, logf = os.path.join(d, "store.db"), os.path.join(d, "runs.log")
        stopfile = os.path.join(d, "stop")
        procs, outs = [], []
        start_at = time.time() + p.get("setup", 4.0)     # every process has opened its store by then
        for k in range(p["procs"]):
            out = os.path.join(d, f"out-{k}.json")
            outs.append(out)
            spec = {"workload": "multi", "system": case.system, "store": store, "log": logf, "n": p["n"],
                    "index": k, "start_at": start_at, "stopfile": stopfile, "out": out}
            procs.append(self.spawn(spec, d, os.path.join(d, f"spec-{k}.json"), pipe=True))
        total = p["n"] * p["procs"]
        deadline = start_at + p.get("max_wait", 45.0)
        complete_at = None
        last_count, last_change = 0, time.time()
        while time.time() < deadline:
            runs = _read_runs(logf)
            if len(runs) != last_count:
                last_count, last_change = len(runs), time.time()
            if len({r[0] for r in runs}) >= total:
                complete_at = complete_at or time.time()
                if time.time() - complete_at >= p.get("linger", 2.0):
                    break
            elif time.time() > start_at + 10 and time.time() - last_change > 8.0:
                break                                      # no progress for 8 s: give up
            time.sleep(0.05)
        scale.stop_processes(procs, stopfile)
        children = [self._read(o, d) for o in outs]
        runs = _read_runs(logf)
        ids = [r[0] for r in runs]
        unique = set(ids)
        per_id: dict[int, int] = {}
        for i in ids:
            per_id[i] = per_id.get(i, 0) + 1
        hist: dict[str, int] = {}
        for c in per_id.values():
            hist[str(c)] = hist.get(str(c), 0) + 1
        ends = [c.get("enqueue_end") for c in children if c.get("enqueue_end")]
        last = max((r[3] for r in runs), default=None)
        lat = sorted(r[3] - r[2] for r in runs)

        def pct(q: float) -> Optional[float]:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else None
        res = {
            "n": total, "procs": p["procs"], "runs": len(ids), "unique": len(unique),
            "missing": total - len(unique), "duplicates": len(ids) - len(unique),
            "runs_per_task_histogram": hist,
            "early": sum(1 for r in runs if r[3] < r[2]),
            "enqueue_rate": total / (max(ends) - start_at) if len(ends) == p["procs"] else None,
            "enqueue_errors": sum(c.get("enqueue_errors", 0) for c in children),
            "throughput": len(unique) / (last - start_at) if last else None,
            "last_run_after_s": (last - start_at) if last else None,
            "running_pids": len({r[1] for r in runs}),
            "lateness_p50_ms": pct(0.50), "lateness_p99_ms": pct(0.99), "lateness_max_ms": pct(1.0),
            "child_errors": [c["error"] for c in children if "error" in c],
        }
        shutil.rmtree(d, ignore_errors=True)
        return res


def _read_runs(path: str) -> list[tuple[int, int, float, float]]:
    from .tasks import read_log
    return read_log(path)


# -- main -------------------------------------------------------------------------------------
def _brief(workload: str, res: dict) -> str:
    if "error" in res:
        return "ERROR " + str(res["error"])[:200]
    keys: dict[str, Callable[[dict], str]] = {
        "enqueue": lambda r: f"{r['rate']:,.0f}/s",
        "batch": lambda r: f"{r['rate']:,.0f}/s",
        "pending": lambda r: f"{r['rate']:,.0f}/s",
        "startup": lambda r: (f"tick {r.get('first_tick_s', float('nan')) * 1e3:.0f} ms, first task "
                              f"{r.get('first_task_s', float('nan')) * 1e3:.0f} ms, rss "
                              f"{r['rss_kib'] / 1024:.0f} MiB, idle {r['idle_cpu_per_10s']:.3f} cpu-s/10s"),
        "lateness": lambda r: (f"ran {r['ran']}/{r['n']} early {r['early']} p50 {r['p50_ms']:.1f} ms "
                               f"p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.1f} ms"),
        "burst": lambda r: (f"ran {r['ran']}/{r['n']} last {r['last_s']} s "
                            f"(margin {r['margin_s']:.1f} s)"),
        "kill": lambda r: (f"unique {r['unique']}/{r['n']} dup {r['duplicates']} "
                           f"recovery {r['recovery_s']}"),
        "multiproc": lambda r: (f"unique {r['unique']}/{r['n']} runs {r['runs']} dup {r['duplicates']} "
                                f"thr {r['throughput']}"),
        "scale": scale.brief,
        "redis": redis_peers.brief,
    }
    keys.update(bigstore.BRIEF)
    try:
        return keys[workload](res)
    except Exception as exc:
        return f"({exc.__class__.__name__}: {exc})"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (< 3 minutes)")
    ap.add_argument("--only", action="append", choices=WORKLOAD_ORDER, metavar="WORKLOAD",
                    help=f"run only this workload (repeatable): {', '.join(WORKLOAD_ORDER)}")
    ap.add_argument("--reps", type=int, help="override the number of repetitions of every case")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md and plots")
    ap.add_argument("--keep-scratch", action="store_true",
                    help="keep stores and logs under benchmarks/scratch")
    args = ap.parse_args(argv)

    mode = QUICK if args.quick else FULL
    cases_by_workload = plan(mode)
    selected = args.only or list(WORKLOAD_ORDER)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{mode.name}" + ("-only-" + "-".join(selected) if args.only else "")
    run_dir = os.path.join(SCRATCH, run_id)
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    out_path = os.path.join(RESULTS, f"{run_id}.json")
    doc: dict[str, Any] = {"run_id": run_id, "mode": mode.name, "partial": bool(args.only),
                           "machine": machine(), "params": mode.__dict__, "measurements": [],
                           "builds": []}
    runner = Runner(run_dir)
    t_start = time.time()
    print(f"benchmarks: {mode.name} run {run_id} -> {os.path.relpath(out_path, ROOT)}", flush=True)

    def save() -> None:
        doc["builds"] = runner.builds
        doc["elapsed_s"] = time.time() - t_start
        tmp = out_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, out_path)

    try:
        for workload in WORKLOAD_ORDER:
            if workload not in selected:
                continue
            cases = cases_by_workload[workload]
            if args.reps:
                for c in cases:
                    c.reps = args.reps
            print(f"== {workload}", flush=True)
            for rep in range(max(c.reps for c in cases)):       # interleaved: ABCABC...
                for case in cases:
                    if rep >= case.reps:
                        continue
                    # What earlier measurements wrote (stores of a million tasks, say) is
                    # written back now, not during this one: a disk busy with it stalled
                    # fsyncs (and the commits waiting on them) for up to 0.8 s.
                    t0 = time.time()
                    os.sync()
                    sync_s = time.time() - t0
                    load = os.getloadavg()[0]
                    rev = timewheel_rev()
                    t0 = time.time()
                    res = runner.measure(case)
                    doc["measurements"].append({
                        "workload": workload, "system": case.system, "case": case.key(),
                        "params": case.params, "rep": rep, "loadavg_before": load, "rev": rev,
                        "sync_before_s": sync_s, "seconds": time.time() - t0, "result": res})
                    print(f"  [{rep + 1}/{case.reps}] {case.key():32s} {_brief(workload, res)}", flush=True)
                    save()
    finally:
        save()
        if not args.keep_scratch:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"done in {time.time() - t_start:.0f} s; raw results in {os.path.relpath(out_path, ROOT)}")
    from . import report
    print()
    print(report.summary_text(doc))
    if mode.name == "full" and not args.only and not args.no_report:
        report.write_all(out_path)
        print("RESULTS.md and plots regenerated")
    return 0
