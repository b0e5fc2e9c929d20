"""Big-store measurements (issues 11 and 14): the operator's commands and the web view on a
store of a million pending tasks, and the catch-up after a million tasks came due while no
process ran.

Three workloads of ``python -m benchmarks``:

* ``commands`` -- ``inspect``, ``inspect --json``, ``stats``, ``timeline``, ``tasks --limit 20``
  through the installed ``timewheel`` script on the big store, one fresh process per run, its
  wall time, CPU time and peak RSS measured from outside it; ``python -c pass`` and
  ``python -c 'import click'`` alongside, for scale.
* ``web`` -- ``timewheel web --allow-actions`` on the same store, every page and JSON
  endpoint timed over HTTP (a fresh server per repetition, one warm-up request per URL).
* ``downtime`` -- a store whose ``n`` tasks all came due while no process ran (built by a
  process that never started the wheel, tasks due within ``window`` seconds of its start);
  then ONE process starts (``TimeWheel(path, workers=4)``, or Huey's thread consumer) and
  runs them.  Runs are counted in the O_APPEND log of :mod:`benchmarks.tasks`; the parent
  samples the process's RSS from ``/proc`` meanwhile.

The big store (:func:`build`: four task names, due over a week, plus tasks in every state)
is built once per run into the run's scratch directory; the standalone scripts
``python -m benchmarks.cli_latency`` and ``python -m benchmarks.web_latency`` use the same
pieces (:func:`build`, :func:`run_command`, :func:`measure_web`).

Sizes are per mode in :data:`SIZES`; :mod:`benchmarks.suite` and :mod:`benchmarks.child`
register the workloads through :func:`plan`, :func:`measure`, :data:`CHILD_WORKLOADS` and
:data:`BRIEF`.  timewheel itself is imported by the functions that use it: every measurement
process imports this module (to find its workload), and a peer's process must not load
timewheel (its start-up and RSS are measured).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from . import tasks
from .harness import Case, Runner, wait_for_file
from .machine import loadavg, memory_kib
from .stats import quantiles
from .systems import checkpoint, open_system

# -- sizes ------------------------------------------------------------------------------------
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"store_n": 100_000, "command_reps": 3, "web_reps": 1, "web_repeat": 3,
              # (system, tasks, repetitions, window: seconds over which the tasks come due)
              "downtime": [("timewheel", 50_000, 1, 10.0), ("huey", 50_000, 1, 10.0)]},
    "full": {"store_n": 1_000_000, "command_reps": 7, "web_reps": 3, "web_repeat": 5,
             # Huey's catch-up runs ~2,000 tasks/s here (a 1M drain would take ~8 min, its
             # build ~2.5 min): the peers are compared at 100,000; timewheel's 1M is the target
             "downtime": [("timewheel", 1_000_000, 1, 60.0), ("timewheel", 100_000, 2, 10.0),
                          ("huey", 100_000, 2, 10.0)]},
}
WORKLOADS = ("commands", "web", "downtime")

# -- targets (issues 11 and 14) ---------------------------------------------------------------
#: label -> (arguments after the store, target ms); ``None`` for the references
COMMANDS: dict[str, tuple[list[str], Optional[int]]] = {
    "inspect": (["inspect"], 300), "inspect --json": (["inspect", "--json"], 300),
    "stats": (["stats"], 300), "timeline": (["timeline"], 500),
    "tasks --limit 20": (["tasks", "--limit", "20"], 100),
    "python -c pass": ([], None), "python -c 'import click'": ([], None),
}
COMMAND_MB = 100.0          #: peak RSS of each command, MB (10^6 bytes)
WEB_MS = 200.0              #: every page and JSON endpoint, median
DOWNTIME_MB = 120.0         #: peak RSS of the one process catching up


# -- the big store ----------------------------------------------------------------------------
NAMES = ("emails.send", "reports.build", "billing.charge", "media.thumbnail")


def build(path: str, n: int, chunk: int = 50_000, seed: int = 1) -> float:
    """Fill a new store at ``path`` with ``n`` pending tasks (``hu.batch()`` in chunks, four
    names, due between one minute and seven days from now) and a few dozen in every other
    state (the failed and running pages have something to list); returns seconds taken."""
    from timewheel import TimeWheel  # here: see the module docstring
    from timewheel.store import open_store
    from timewheel.testing import fill

    hu = TimeWheel(path)
    tasks = [hu.task(name=name)(lambda *a: None) for name in NAMES]
    rng = random.Random(seed)
    now = time.time()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        with hu.batch():
            for j in range(k):
                tasks[j % len(tasks)].schedule(args=(done + j,), eta=now + 60 + rng.random() * 7 * 86400)
        done += k
    hu.close()
    elapsed = time.perf_counter() - t0
    store = open_store(path)
    try:
        fill(store, time.time())            # tasks in every state, as the web tests use them
    finally:
        store.close()
    return elapsed


@contextmanager
def store_for(path: Optional[str], n: int, prefix: str) -> Iterator[str]:
    """The standalone scripts' store: ``path`` (built there first if it does not exist, and
    kept), or a store of ``n`` tasks in a scratch directory removed afterwards."""
    scratch = None if path else tempfile.mkdtemp(prefix=prefix)
    path = path or os.path.join(scratch, "tasks.db")     # type: ignore[arg-type]
    try:
        if not os.path.exists(path):
            print(f"building {n:,} pending tasks in {path} ...", file=sys.stderr)
            print(f"built in {build(path, n):.1f} s", file=sys.stderr)
        yield path
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


# -- operator commands ------------------------------------------------------------------------
def compile_timewheel() -> list[str]:
    """Byte-compile the timewheel package the commands import, as pip does when it installs
    one; returns its directories.  Without this, a checkout run with PYTHONDONTWRITEBYTECODE
    set (or with ``.pyc`` files older than an edit) compiles every timewheel module from
    source in every command: ~150 ms more per command on this machine."""
    # imported here: only the parent compiles, and every measurement process imports this
    # module and has its RSS measured
    import compileall
    import importlib.util
    spec = importlib.util.find_spec("timewheel")
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for d in dirs:
        compileall.compile_dir(d, quiet=1)
    return dirs


def command_argv(label: str, store: str) -> list[str]:
    if label == "python -c pass":
        return [sys.executable, "-c", "pass"]
    if label == "python -c 'import click'":
        return [sys.executable, "-c", "import click"]
    from timewheel.testing import console_script  # here: see the module docstring
    args = COMMANDS[label][0]
    return [console_script(), args[0], store, *args[1:]]


def run_command(argv: list[str], timeout: float = 120.0) -> dict[str, Any]:
    """One run of a command in a fresh process: wall and CPU seconds, and its own peak RSS
    (``ru_maxrss`` of that process, read by a helper that forks it) in MB."""
    from timewheel.testing import measured  # here: see the module docstring
    code, _, err, took, peak_mib, cpu = measured(argv, timeout=timeout)
    out: dict[str, Any] = {"wall_s": took, "cpu_s": cpu, "peak_mb": peak_mib * 2**20 / 1e6, "exit": code}
    if code != 0:
        out["error"] = f"exit {code}: {err.strip()[-500:]}"
    return out


def measure_commands(store: str, repeat: int = 5) -> dict[str, dict[str, Any]]:
    """{label: {"median_ms", "cpu_ms", "peak_mb", "target_ms"}}: each command ``repeat`` times
    on ``store``, interleaved (ABCABC...)."""
    runs: dict[str, list[dict]] = {label: [] for label in COMMANDS}
    compile_timewheel()
    for _ in range(repeat):
        for label in COMMANDS:
            r = run_command(command_argv(label, store))
            if "error" in r:
                raise SystemExit(f"{label} failed: {r['error']}")
            runs[label].append(r)
    return {label: {"median_ms": round(statistics.median(r["wall_s"] for r in rs) * 1000),
                    "cpu_ms": round(statistics.median(r["cpu_s"] for r in rs) * 1000),
                    "peak_mb": round(max(r["peak_mb"] for r in rs), 1), "target_ms": COMMANDS[label][1]}
            for label, rs in runs.items()}


# -- the web view -----------------------------------------------------------------------------
def store_facts(path: str) -> dict[str, Any]:
    """A pending task's id (the 500th in due order) and slot, and the pending count."""
    from timewheel.records import PENDING  # here: see the module docstring
    from timewheel.store import open_store
    store = open_store(path, readonly=True)
    try:
        sample = store.scan(PENDING, limit=500)[-1]
        slot = store.wheel.slot(store.wheel.due_tick(sample.eta))
        pending = sum(n for (s, _), n in store.counts().items() if s == PENDING)
    finally:
        store.close()
    return {"sample_id": sample.id, "slot": slot, "pending": pending}


def urls(sample_id: str, slot: int) -> list[str]:
    return ["", "wheel", "wheel?revolutions=1", "timeline", "timeline?hours=168",
            "timeline?name=reports.build", "tasks", "tasks?status=pending",
            "tasks?status=pending&name=billing.charge", f"tasks?status=pending&after={sample_id}",
            f"tasks?id={sample_id}", f"tasks/{sample_id}", "failed", "running", "api/inspect", "api/tasks",
            "api/tasks?status=failed", f"api/tasks/{sample_id}", "api/stats", "api/timeline",
            "api/timeline?hours=168", "api/wheel", f"api/wheel/slots/{slot}", "api/series"]


def _get(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return (time.perf_counter() - t0) * 1000, status, len(body)


def time_urls(base: str, paths: list[str], repeat: int = 7) -> dict[str, dict[str, Any]]:
    """``repeat`` timed GETs of each ``base + path`` after one warm-up: the times (ms), their
    median and worst, the last status and size."""
    out = {}
    for path in paths:
        _get(base + path)
        times = []
        for _ in range(repeat):
            ms, status, size = _get(base + path)
            times.append(ms)
        out["/" + path] = {"times_ms": times, "median_ms": statistics.median(times), "max_ms": max(times),
                           "status": status, "bytes": size}
    return out


def measure_web(path: str, repeat: int = 7) -> dict[str, Any]:
    """Start ``timewheel web --allow-actions`` on ``path`` and time every URL of :func:`urls`."""
    from timewheel.testing import serve  # here: see the module docstring
    facts = store_facts(path)
    with serve(path, "--allow-actions") as server:
        results = time_urls(server.url, urls(facts["sample_id"], facts["slot"]), repeat)
    return dict(facts, repeat=repeat, target_ms=WEB_MS, results=results)


# -- downtime: the measurement processes ------------------------------------------------------
def downtime_build(spec: dict) -> dict:
    """A store of ``n`` tasks due within ``window`` s from ``lead`` s after this process
    opened it, written by a process that never starts the wheel (timewheel: ``hu.batch()`` in
    chunks of 50,000; Huey: one ``schedule()`` each, with ``synchronous=NORMAL`` to build it
    faster -- the file is the same, the consumer later opens it with Huey's defaults)."""
    n, window, lead = spec["n"], spec["window"], spec.get("lead", 1.0)
    rng = random.Random(7)
    system = open_system("huey-normal" if spec["system"] == "huey" else spec["system"], spec["store"])
    opened = time.time()
    due_from = opened + lead
    t0 = time.perf_counter()
    done, chunk = 0, 50_000
    while done < n:
        k = min(chunk, n - done)
        items = [(done + j, due_from + rng.random() * window) for j in range(k)]
        if spec["system"] == "timewheel":
            system.enqueue_batch(items)
        else:
            for i, due in items:
                system.enqueue(i, due)
        done += k
    elapsed = time.perf_counter() - t0
    if spec["system"] == "timewheel":
        system.hu.close()
    else:
        system.huey.storage.close()
    checkpoint(spec["store"])
    return {"n": n, "seconds": elapsed, "rate": n / elapsed, "bytes": os.path.getsize(spec["store"]),
            "due_from": due_from, "due_to": due_from + window, "built_at": time.time()}


def downtime_run(spec: dict) -> dict:
    """The one process that catches up: start the system on the store (4 workers), say when,
    and run until the parent says stop."""
    tasks.log_to(spec["log"])
    out: dict[str, Any] = {"rss_python_kib": memory_kib().get("rss_kib")}
    system = open_system(spec["system"], spec["store"])
    out["rss_opened_kib"] = memory_kib().get("rss_kib")
    t0 = time.time()
    system.start()
    out.update(start_call=t0, start_returned=time.time())
    print(f"STARTED {t0:.6f}", flush=True)
    wait_for_file(spec["stopfile"])
    out.update(memory_kib(), threads=len(os.listdir("/proc/self/task")))
    return out


def web(spec: dict) -> dict:
    return measure_web(spec["store"], spec["repeat"])


def big_build(spec: dict) -> dict:
    seconds = build(spec["store"], spec["n"])
    checkpoint(spec["store"])
    return {"n": spec["n"], "seconds": seconds, "rate": spec["n"] / seconds,
            "bytes": os.path.getsize(spec["store"])}


CHILD_WORKLOADS: dict[str, Callable[[dict], dict]] = {
    "big_build": big_build, "web": web, "downtime_build": downtime_build, "downtime_run": downtime_run,
}


# -- the harness side -------------------------------------------------------------------------
def plan(mode: str) -> dict[str, list[Case]]:
    """The cases of the three workloads for ``mode`` (``"quick"`` or ``"full"``)."""
    size = SIZES[mode]
    n = size["store_n"]
    return {
        "commands": [Case("commands", "timewheel" if COMMANDS[label][1] else "python",
                          {"pending": n, "command": label}, size["command_reps"], label)
                     for label in COMMANDS],
        "web": [Case("web", "timewheel", {"pending": n, "repeat": size["web_repeat"]}, size["web_reps"],
                     f"timewheel@{n}")],
        "downtime": [Case("downtime", system, {"n": k, "window": window}, reps, f"{system}@{k}")
                     for system, k, reps, window in size["downtime"]],
    }


_BUILT: dict[tuple, tuple[str, dict]] = {}


def _base(runner: Runner, key: tuple, spec: dict, what: str) -> tuple[str, dict]:
    """Build a store once per run (in the run's scratch directory), as ``Runner.base_store``
    does; returns its path and what the build reported."""
    key = (runner.run_dir,) + key
    if key not in _BUILT:
        d = os.path.join(runner.run_dir, "bases")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "-".join(str(k) for k in key[1:]) + ".db")
        t0 = time.time()
        res = runner.run(dict(spec, store=path), "build-" + "-".join(str(k) for k in key[1:]), timeout=3600)
        if "error" in res:
            raise RuntimeError(f"building {what} failed: {res}")
        res["wall"] = time.time() - t0
        runner.log(f"  built {what}: {res['rate']:,.0f} tasks/s, {res['bytes'] / 2**20:.0f} MiB, "
                   f"{res['wall']:.0f} s")
        _BUILT[key] = (path, res)
    return _BUILT[key]


def big_store(runner: Runner, n: int) -> tuple[str, dict]:
    return _base(runner, ("big", n), {"workload": "big_build", "n": n},
                 f"the {n:,}-task store of the commands and web view")


def measure(runner: Runner, case: Case) -> dict:
    """One measurement of a case of :func:`plan`."""
    p = case.params
    if case.workload == "commands":
        path, built = big_store(runner, p["pending"])
        compile_timewheel()                        # a no-op unless timewheel/ changed
        res = run_command(command_argv(p["command"], path))
        res["load_during"] = loadavg()
    elif case.workload == "web":
        path, built = big_store(runner, p["pending"])
        res = runner.run({"workload": "web", "store": path, "repeat": p["repeat"]}, case.key(), timeout=1800)
    elif case.workload == "downtime":
        return downtime(runner, case)
    else:
        raise ValueError(case.workload)
    res["build"] = built
    return res


def downtime(runner: Runner, case: Case) -> dict:
    p = case.params
    n = p["n"]
    base, built = _base(runner, ("downtime", case.system, n, p["window"]),
                        {"workload": "downtime_build", "system": case.system, "n": n, "window": p["window"]},
                        f"the {n:,}-task downtime store of {case.system}")
    d, spec_path, out = runner.paths(case.key() + "-downtime")
    store = runner.copy_of(base, d)
    logf, stopfile = os.path.join(d, "runs.log"), os.path.join(d, "stop")
    wait = built["due_to"] + 1.0 - time.time()
    if wait > 0:                                   # every task has come due, and no process ran
        time.sleep(wait)
    spawned = time.time()
    proc = runner.spawn({"workload": "downtime_run", "system": case.system, "store": store, "log": logf,
                         "stopfile": stopfile, "out": out}, d, spec_path, pipe=True)
    samples: list[tuple[float, int, int]] = []     # (s since spawn, RSS KiB, tasks run)
    count, offset, hwm = 0, 0, 0
    last_change = time.time()
    complete_at: Optional[float] = None
    max_wait = p.get("max_wait", 300.0 + n / 500.0)
    linger, stall = p.get("linger", 2.0), p.get("stall", 60.0)
    reason = "timeout"
    while time.time() - spawned < max_wait:
        st = memory_kib(proc.pid)
        hwm = max(hwm, st.get("hwm_kib", 0))
        try:
            with open(logf, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        chunk = chunk[:chunk.rfind(b"\n") + 1]
        offset += len(chunk)
        if chunk:
            count += chunk.count(b"\n")
            last_change = time.time()
        samples.append((time.time() - spawned, st.get("rss_kib", 0), count))
        if proc.poll() is not None:
            reason = f"the process exited ({proc.returncode})"
            break
        if count >= n:
            complete_at = complete_at or time.time()
            if time.time() - complete_at >= linger:        # duplicates would show by now
                reason = "complete"
                break
        elif time.time() - last_change > stall:
            reason = f"no task ran for {stall:g} s"
            break
        time.sleep(0.25)
    hwm = max(hwm, memory_kib(proc.pid).get("hwm_kib", 0))
    open(stopfile, "w").close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    child = runner.read(out, d)
    runs = tasks.read_log(logf)
    shutil.rmtree(d, ignore_errors=True)
    ids = [r[0] for r in runs]
    unique = set(ids)
    start_call = child.get("start_call", spawned)
    offs = sorted(r[3] - start_call for r in runs)
    last = offs[-1] if offs else None
    step = max(1, len(samples) // 300)
    res: dict[str, Any] = {
        "n": n, "system": case.system, "window_s": p["window"], "ended": reason,
        "runs": len(ids), "unique": len(unique), "missing": n - len(unique & set(range(n))),
        "duplicates": len(ids) - len(unique), "early": sum(1 for r in runs if r[3] < r[2]),
        "pids": len({r[1] for r in runs}),
        "downtime_s": start_call - built["due_to"],
        "startup_s": start_call - spawned,
        "first_s": offs[0] if offs else None, "catchup_s": last,
        "total_s": (last + start_call - spawned) if last is not None else None,
        "rate": len(unique) / last if last else None,
        "peak_rss_mb": hwm * 1024 / 1e6, "child": child, "build": built,
        "rss_curve": samples[::step] + samples[-1:],
        "drain_curve_s": quantiles(offs),
    }
    if "error" in child:                            # a task lost or run twice is a result, not this
        res["error"] = f"catch-up process: {child['error']}"
    return res


BRIEF: dict[str, Callable[[dict], str]] = {
    "commands": lambda r: (f"{r['wall_s'] * 1000:.0f} ms, cpu {r['cpu_s'] * 1000:.0f} ms, "
                           f"{r['peak_mb']:.1f} MB"),
    "web": lambda r: (f"{sum(1 for u in r['results'].values() if u['median_ms'] > WEB_MS)} of "
                      f"{len(r['results'])} URLs over {WEB_MS:.0f} ms; slowest "
                      + max(((u, v['median_ms']) for u, v in r['results'].items()), key=lambda x: x[1])[0]
                      + f" {max(v['median_ms'] for v in r['results'].values()):,.0f} ms"),
    "downtime": lambda r: (f"unique {r['unique']:,}/{r['n']:,} dup {r['duplicates']} early {r['early']}; "
                           f"catch-up {r['catchup_s']:.1f} s = {r['rate']:,.0f}/s; "
                           f"peak RSS {r['peak_rss_mb']:.1f} MB"),
}
