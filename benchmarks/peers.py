"""What the server workloads share (:mod:`benchmarks.redis_peers`, :mod:`benchmarks.pg_peers`):
the task every system runs slowly, the measurement processes' functions (a client that
enqueues, a worker that runs, a look at what is left), the parent's :class:`Child` processes
and :class:`ServerBench`, whose measurements of lateness, a burst, a SIGKILL and a recovery
are the same whatever the server; and the progress line of a result (:func:`brief`).

Each workload module has its systems' adapters (``enqueue_calls``, ``enqueue_batch``,
``enqueue_slow``, ``serve``, ``left``), an ``open_system(name, url)``, and a
:class:`ServerBench` subclass that starts its server.
"""

from __future__ import annotations

import functools
import json
import os
import queue as _queue
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

from . import tasks
from .harness import ROOT, Case, Runner
from .machine import kill_tree, tree_cpu_s
from .stats import pct, quantiles

#: ``open_system(name, url)`` of a workload: an adapter of that system
Opener = Callable[[str, str], Any]


# -- task functions (imported by every system's workers) ----------------------------------------
def slow(i: int, due: float, seconds: float) -> None:
    """Note the start (like :func:`tasks.run`), run for ``seconds``, note the end."""
    tasks.run(i, due)
    time.sleep(seconds)
    tasks.note_end(i)


def forever() -> None:
    while True:
        time.sleep(60)



# -- what the child processes do ---------------------------------------------------------------
def child_enqueue(spec: dict, open_system: Opener) -> dict:
    """``n`` tasks due ``delay`` s out (1 h), one call each or through the bulk API."""
    n, batch = spec["n"], spec.get("batch", False)
    system = open_system(spec["system"], spec["url"])
    base = time.time() + spec.get("delay", 3600.0)
    items = [(i, base + i * 1e-3) for i in range(n)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if batch:
        system.enqueue_batch(items)
    else:
        system.enqueue_calls(items)
    elapsed = time.perf_counter() - t0
    return {"n": n, "seconds": elapsed, "rate": n / elapsed, "cpu_s": time.process_time() - cpu0}


def child_worker(spec: dict, open_system: Opener) -> dict:
    """Run the system's workers until SIGKILLed by the parent; ``READY`` on stdout once started."""
    tasks.log_to(spec["log"])
    system = open_system(spec["system"], spec["url"])
    system.serve(lambda: print(f"READY {time.time():.6f}", flush=True))
    return {}


def _say(what: str, **info: Any) -> None:
    print(f"{what} {json.dumps(info)}", flush=True)


def child_client(spec: dict, open_system: Opener) -> dict:
    """Enqueue what the measurement needs (``spec["plan"]``), print ``SCHEDULED {json}``."""
    system = open_system(spec["system"], spec["url"])
    plan = spec["plan"]
    out: dict[str, Any] = {"plan": plan}
    if plan in ("spread", "burst"):
        # A system whose enqueue is slow gets a longer lead, so that every task is stored before
        # the first one is due: time a few enqueues first (due tomorrow, never run here).
        batch = plan == "burst" and spec.get("batch", False)
        m = spec.get("calibrate", 50)
        far = time.time() + 86400
        system.enqueue_calls([(-1, far)])             # connect, load scripts: not part of the rate
        t = time.perf_counter()
        cal = [(-2 - j, far + j) for j in range(m)]
        if batch:
            system.enqueue_batch(cal)
        else:
            system.enqueue_calls(cal)
        per_task = (time.perf_counter() - t) / m
        n = spec["n"]
        out.update(calibration_tasks=m, per_task_s=per_task, batch=batch)
        if plan == "spread":
            lead = max(spec["lead"], per_task * n * 1.5 + 0.5)
            t0 = time.time()
            dues = [t0 + lead + spec["spread"] * k / n for k in range(n)]
            late = 0
            for k, due in enumerate(dues):
                system.enqueue_calls([(k, due)])
                if time.time() > due:
                    late += 1
            out.update(lead_s=lead, t0=t0, first_due=dues[0], last_due=dues[-1], late_enqueued=late)
        else:
            # the workers start once the tasks are stored: leave them time to start
            lead = max(spec.get("min_lead", 1.5), per_task * n * 1.3 + 1.0) + spec.get("start_allowance", 0.0)
            t0 = time.time()
            due = t0 + lead
            items = [(k, due) for k in range(n)]
            if batch:
                system.enqueue_batch(items)
            else:
                system.enqueue_calls(items)
            out.update(lead_s=lead, t0=t0, due=due, first_due=due, last_due=due)
    elif plan == "window":
        n, lo, hi, task_s = spec["n"], spec["due_lo"], spec["due_hi"], spec["task_s"]
        t0 = time.time()
        for k in range(n):
            system.enqueue_slow(k, t0 + lo + (hi - lo) * k / max(1, n - 1), task_s)
        out.update(t0=t0, first_due=t0 + lo, last_due=t0 + hi)
    elif plan == "slow":
        t0 = time.time()
        system.enqueue_slow(0, t0, spec["sleep"])
        out.update(t0=t0, first_due=t0, last_due=t0)
    else:
        raise ValueError(plan)
    out["enqueued_at"] = time.time()
    out["enqueue_s"] = out["enqueued_at"] - out["t0"]
    _say("SCHEDULED", **out)
    return out


def child_left(spec: dict, open_system: Opener) -> dict:
    """How many tasks the store still holds, not yet run (pending, queued, running)."""
    return open_system(spec["system"], spec["url"]).left()


def child_workloads(prefix: str, open_system: Opener) -> dict[str, Callable[[dict], dict]]:
    """The measurement processes' functions of a workload whose systems ``open_system`` opens,
    named ``<prefix>_enqueue``, ``_worker``, ``_client`` and ``_left`` (benchmarks.child)."""
    return {f"{prefix}_{name}": functools.partial(fn, open_system=open_system)
            for name, fn in (("enqueue", child_enqueue), ("worker", child_worker), ("client", child_client),
                             ("left", child_left))}


# -- the parent side ----------------------------------------------------------------------------
class Child:
    """A child process (``python -m benchmarks.child``) in its own session, its stdout lines
    read by a thread so that the parent can wait for one with a timeout."""

    def __init__(self, runner: Runner, d: str, name: str, spec: dict) -> None:
        path = os.path.join(d, f"spec-{name}.json")
        self.out = os.path.join(d, f"out-{name}.json")
        spec = dict(spec, out=self.out)
        with open(path, "w") as fh:
            json.dump(spec, fh)
        self.err_path = os.path.join(d, f"stderr-{name}.txt")
        err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.child", path], cwd=ROOT,
                                     env=runner.env(), stdout=subprocess.PIPE, stderr=err, text=True,
                                     start_new_session=True)
        err.close()
        self.lines: "_queue.Queue[str]" = _queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> Optional[str]:
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except _queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    return None
                continue
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def info(self, prefix: str, timeout: float) -> Optional[dict]:
        line = self.expect(prefix, timeout)
        return json.loads(line) if line else None

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"error": f"timed out after {timeout:g}s"}
        try:
            with open(self.out) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {"error": "no result", "stderr": self.stderr_tail()}

    def kill(self) -> int:
        n = 0
        if self.proc.poll() is None:
            n = kill_tree(self.proc.pid)
        self.proc.wait()
        return n

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            with open(self.err_path) as fh:
                return fh.read()[-n:]
        except OSError:
            return ""


def pct_or_none(s: list[float], p: float) -> Optional[float]:
    """:func:`benchmarks.stats.pct`, None (JSON null) for no values."""
    return pct(s, p) if s else None


class ServerBench:
    """The parent side of a workload on one server: the measurements every system gets
    (lateness, burst, kill, recovery), in fresh worker and client processes.  A subclass starts
    the server and says how to empty it (:meth:`reset`), what it costs (:meth:`server_cpu_s`)
    and how to measure its enqueue; ``PREFIX`` names its child workloads."""

    PREFIX = ""
    BULK: dict[str, Optional[str]] = {}     #: system -> its bulk enqueue API, if it has one
    SETTLE = 0.5      # s after a worker says READY (RQ's pool forks its workers after that)

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.url = ""
        self.info: dict = {}

    def reset(self) -> None:
        """Empty the server before a measurement."""
        raise NotImplementedError

    def server_cpu_s(self) -> float:
        """CPU seconds the server has used so far."""
        raise NotImplementedError

    def enqueue(self, case: Case) -> dict:
        raise NotImplementedError

    def measure(self, case: Case) -> dict:
        self.reset()
        kind = case.params["kind"]
        fn = {"lateness": self.lateness, "burst": self.burst, "kill": self.kill,
              "recovery": self.recovery}.get(kind, self.enqueue)
        res = fn(case)
        res.update(kind=kind, system=case.system, server=self.info)
        return res


    # -- helpers ----------------------------------------------------------------------------
    def _dir(self, case: Case) -> str:
        d, _, _ = self.runner.paths(case.key().replace(":", "-"))
        return d

    def _worker(self, d: str, name: str, system: str, log: str) -> tuple[Child, Optional[float]]:
        w = Child(self.runner, d, name, {"workload": f"{self.PREFIX}_worker", "system": system,
                                         "url": self.url, "log": log})
        line = w.expect("READY", 30)
        if line is None:
            return w, None
        time.sleep(self.SETTLE)
        return w, float(line)

    def _client(self, d: str, system: str, **plan: Any) -> tuple[Child, Optional[dict]]:
        c = Child(self.runner, d, "client", dict(plan, workload=f"{self.PREFIX}_client", system=system,
                                                 url=self.url))
        return c, c.info("SCHEDULED", 600)

    def _left(self, d: str, system: str) -> dict:
        c = Child(self.runner, d, "left", {"workload": f"{self.PREFIX}_left", "system": system,
                                           "url": self.url})
        return c.wait(60)

    @staticmethod
    def _failed(what: str, *children: Child) -> dict:
        return {"error": what, "stderr": "\n".join(c.stderr_tail() for c in children)}

    # -- the measurements ---------------------------------------------------------------------
    def _collect(self, log: str, n: int, deadline: float, linger: float,
                 quiet: Optional[float] = None, quiet_after: float = 0.0, ends: bool = False) -> list:
        """Poll the run log until ``n`` distinct tasks started (``ends``: ended), then ``linger``
        more for duplicates; or ``deadline``; or (with ``quiet``) no new run for ``quiet`` s after
        ``quiet_after``."""
        complete_at = None
        last_count, last_change = 0, time.time()
        while True:
            now = time.time()
            runs = tasks.read_log(log)
            if len(runs) != last_count:
                last_count, last_change = len(runs), now
            done = {r[0] for r in tasks.read_ends(log)} if ends else {r[0] for r in runs if r[0] >= 0}
            if len(done) >= n:
                complete_at = complete_at or now
                if now - complete_at >= linger:
                    break
            if now > deadline:
                break
            if quiet is not None and now > quiet_after and now - max(last_change, quiet_after) > quiet:
                break
            time.sleep(0.05)
        return tasks.read_log(log)

    def lateness(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        w, _ = self._worker(d, "worker", case.system, log)
        try:
            c, info = self._client(d, case.system, plan="spread", n=p["n"], lead=p["lead"],
                                   spread=p["spread"])
            if info is None:
                return self._failed("the client did not schedule", c, w)
            c.wait(30)
            # CPU over the due window: the worker's process tree and the server
            time.sleep(max(0.0, info["first_due"] - time.time()))
            cpu0, srv0, t0 = tree_cpu_s(w.proc.pid), self.server_cpu_s(), time.time()
            runs = self._collect(log, p["n"], info["last_due"] + p["grace"], 0.5)
            cpu1, srv1, t1 = tree_cpu_s(w.proc.pid), self.server_cpu_s(), time.time()
        finally:
            w.kill()
        runs = [r for r in runs if r[0] >= 0]
        lat = sorted(r[3] - r[2] for r in runs)
        ids = [r[0] for r in runs]
        res = {
            "n": p["n"], "ran": len(ids), "unique": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
            "early": sum(1 for x in lat if x < 0), "early_over_1ms": sum(1 for x in lat if x < -1e-3),
            "late_enqueued": info["late_enqueued"], "lead_s": info["lead_s"], "enqueue_s": info["enqueue_s"],
            "enqueued_before_first_due_s": info["first_due"] - info["enqueued_at"],
            "p50_ms": ms(pct_or_none(lat, 50)), "p90_ms": ms(pct_or_none(lat, 90)),
            "p99_ms": ms(pct_or_none(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None), "min_ms": ms(lat[0] if lat else None),
            "cdf_ms": [x * 1e3 for x in quantiles(lat)],
            "worker_cpu_s": cpu1 - cpu0, "server_cpu_s": srv1 - srv0, "cpu_window_s": t1 - t0,
            "loadavg_after": os.getloadavg()[0],
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def burst(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        w = None
        try:
            # the tasks are stored first, the workers started after (before the due instant), so
            # that neither the enqueue rate nor the lead depends on workers competing for the CPU
            c, info = self._client(d, case.system, plan="burst", n=p["n"],
                                   batch=bool(self.BULK.get(case.system)), calibrate=200,
                                   start_allowance=p["start_allowance"])
            if info is None:
                return self._failed("the client did not schedule", c)
            c.wait(30)
            due = info["due"]
            w, ready = self._worker(d, "worker", case.system, log)
            ready_at = time.time()
            runs = self._collect(log, p["n"], due + p["max_wait"], 0.5, quiet=p["quiet"], quiet_after=due)
        finally:
            if w is not None:
                w.kill()
        runs = [r for r in runs if r[0] >= 0]
        offs = sorted(r[3] - due for r in runs)
        ids = [r[0] for r in runs]
        last = offs[-1] if offs else None
        res = {
            "n": p["n"], "ran": len(ids), "unique": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
            "early": sum(1 for x in offs if x < 0), "bulk_api": info["batch"],
            "enqueue_s": info["enqueue_s"], "margin_s": due - info["enqueued_at"], "lead_s": info["lead_s"],
            "workers_ready_before_due_s": due - ready_at,
            "first_s": offs[0] if offs else None, "p50_s": pct_or_none(offs, 50), "last_s": last,
            "throughput": len(set(ids)) / last if last and last > 0 else None,
            "drain_curve_s": quantiles(offs), "max_wait_s": p["max_wait"],
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def kill(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        a, _ = self._worker(d, "worker-a", case.system, log)
        b = None
        try:
            c, info = self._client(d, case.system, plan="window", n=p["n"], due_lo=p["due_lo"],
                                   due_hi=p["due_hi"], task_s=p["task_s"])
            if info is None:
                a.kill()
                return self._failed("the client did not schedule", c, a)
            c.wait(30)
            time.sleep(max(0.0, info["t0"] + p["kill_at"] - time.time()))
            killed_at = time.time()
            killed_procs = a.kill()
            starts_before, ends_before = tasks.read_log(log), tasks.read_ends(log)
            time.sleep(p["restart_after"])
            restart_at = time.time()
            b, _ = self._worker(d, "worker-b", case.system, log)
            runs = self._collect(log, p["n"], restart_at + p["max_wait"], p["linger"], ends=True)
        finally:
            a.kill()
            if b is not None:
                b.kill()
        left = self._left(d, case.system)
        ends = tasks.read_ends(log)
        started: dict[int, int] = {}
        for r in runs:
            started[r[0]] = started.get(r[0], 0) + 1
        ended: dict[int, int] = {}
        for i, _pid in ends:
            ended[i] = ended.get(i, 0) + 1
        completed = len(set(ended) & set(range(p["n"])))
        not_completed = p["n"] - completed
        stored = left.get("will_run")
        last = max((r[3] for r in runs), default=None)
        res = {
            "n": p["n"], "task_s": p["task_s"], "starts": len(runs), "started": len(started),
            "completed": completed, "not_completed": not_completed,
            "not_done_ids": ranges(sorted(set(range(p["n"])) - set(ended))),
            "running_at_kill": len({r[0] for r in starts_before} - {i for i, _ in ends_before}),
            "completed_before_kill": len({i for i, _ in ends_before}),
            "still_stored": stored, "left": left,
            "lost": max(0, not_completed - stored) if isinstance(stored, int) else None,
            "started_again": sum(1 for c in started.values() if c > 1),
            "duplicates": sum(c - 1 for c in ended.values() if c > 1),
            "early": sum(1 for r in runs if r[3] < r[2]),
            "schedule_s": info["enqueue_s"], "killed_after_t0_s": killed_at - info["t0"],
            "killed_processes": killed_procs,
            "due_window_s": [p["due_lo"], p["due_hi"]], "waited_after_restart_s": p["max_wait"],
            "restart_to_last_start_s": (last - restart_at) if last is not None and last > restart_at
            else None,
            "all_ran_once": completed >= p["n"] and not any(c > 1 for c in ended.values()),
        }
        shutil.rmtree(d, ignore_errors=True)
        return res

    def recovery(self, case: Case) -> dict:
        p = case.params
        d = self._dir(case)
        log = os.path.join(d, "runs.log")
        a, _ = self._worker(d, "worker-a", case.system, log)
        b = None
        try:
            c, info = self._client(d, case.system, plan="slow", sleep=p["sleep"])
            if info is None:
                a.kill()
                return self._failed("the client did not schedule", c, a)
            c.wait(30)
            end = time.time() + 20
            while time.time() < end and not tasks.read_log(log):
                time.sleep(0.01)
            first = tasks.read_log(log)
            if not first:
                return self._failed("the task did not start on worker A", a)
            started_a = first[0][3]
            b, _ = self._worker(d, "worker-b", case.system, log)      # ready while A runs the task
            if time.time() - started_a > p["sleep"] - 0.2:
                return {"error": f"worker B took too long to start ({time.time() - started_a:.1f} s "
                                 f"after the task started on A; it runs {p['sleep']} s)"}
            killed_at = time.time()
            a.kill()
            rerun = None
            while time.time() < killed_at + p["cap"]:
                runs = tasks.read_log(log)
                if len(runs) > 1:
                    rerun = runs[1]
                    break
                time.sleep(0.02)
        finally:
            a.kill()
            if b is not None:
                b.kill()
        res = {
            "sleep_s": p["sleep"], "cap_s": p["cap"], "started_on_a_before_kill_s": killed_at - started_a,
            "rerun": rerun is not None,
            "recovery_s": (rerun[3] - killed_at) if rerun is not None else None,
            "rerun_pid_differs": (rerun[1] != first[0][1]) if rerun is not None else None,
        }
        shutil.rmtree(d, ignore_errors=True)
        return res


def ranges(ids: list[int], cap: int = 20) -> str:
    """``"3-7, 12, 40-41"``: which tasks (by their due order), the first ``cap`` runs of them."""
    out: list[str] = []
    k = 0
    while k < len(ids) and len(out) < cap:
        j = k
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[k]) if j == k else f"{ids[k]}-{ids[j]}")
        k = j + 1
    return ", ".join(out) + (", ..." if k < len(ids) else "")


def fmt_s(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


def ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else x * 1e3



def brief(res: dict) -> str:
    """One line per measurement for the harness's progress output."""
    if "error" in res:
        return "ERROR " + str(res["error"])[:200]
    k = res.get("kind")
    if k in ("enqueue", "enqueue-everysec", "batch", "batch-copy") and "server_calls_per_task" in res:
        return (f"{res['rate']:,.0f}/s ({res['server_calls_per_task']:.1f} cmds, "
                f"{res['server_usec_per_task']:.0f} us server per task)")
    if k in ("enqueue", "batch", "batch-copy"):
        return f"{res['rate']:,.0f}/s"
    if k == "lateness":
        return (f"ran {res['unique']}/{res['n']} dup {res['duplicates']} early {res['early']} "
                f"p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms max {res['max_ms']:.1f} ms")
    if k == "burst":
        return (f"ran {res['unique']}/{res['n']} first {res['first_s']:.3f} s last {res['last_s']:.3f} s "
                f"(margin {res['margin_s']:.1f} s)")
    if k == "kill":
        return (f"done {res['completed']}/{res['n']}, running at the kill {res['running_at_kill']}, "
                f"not done {res['not_completed']} (will run later {res['still_stored']}, lost "
                f"{res['lost']}), started again {res['started_again']}, done twice {res['duplicates']}, "
                f"restart->last start {fmt_s(res['restart_to_last_start_s'])}")
    if k == "recovery":
        return (f"re-run after {res['recovery_s']:.2f} s" if res["rerun"]
                else f"not re-run within {res['cap_s']:g} s")
    return json.dumps(res)[:200]
