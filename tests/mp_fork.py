"""Fork-safety scenarios, each run in a fresh interpreter by test_multiprocess.py::

    python tests/mp_fork.py MODE DIR [CHILD_TIMEOUT]

MODE is one of

* ``os-fork``: the parent creates a TimeWheel, enqueues with it (so its store is open), never
  starts it, and ``os.fork()``s 3 children; each child calls ``start()``, enqueues its own
  tasks and waits for every task's result.
* ``mp-fork`` / ``mp-spawn``: the same with ``multiprocessing`` and that start method (spawn
  children build their own TimeWheel on the same file: nothing is inherited).
* ``busy-parent``: the parent has *started* its TimeWheel and a thread of it keeps reading
  task statuses (as a web app's request threads do) while it forks children that start.
* ``first-open``: 30 times, 3 forked processes open one brand-new store file at the same
  instant and ``delay()`` (the first requests of freshly booted gunicorn workers).

The parent prints one line of JSON: how each child ended (``exit``, or ``hung`` if it had
to be killed after CHILD_TIMEOUT seconds).  Every child exits through ``os._exit``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mp_worker import make_wheel  # noqa: E402

from timewheel.testing.processes import die_with_parent  # noqa: E402

CHILDREN = 3
PER_PROCESS = 20
CHILD_TIMEOUT = 20.0


def _child_body(hu, task, log: str, parent_ids: list[str], name: str) -> int:
    hu.start()
    handles = [task.delay(log, f"{name}-{i}", count_down=0.2 + i * 0.02) for i in range(PER_PROCESS)]
    deadline = time.monotonic() + CHILD_TIMEOUT - 5
    for h in handles + [hu.get(i) for i in parent_ids]:
        h.result(timeout=max(0.1, deadline - time.monotonic()))
    hu.stop(wait=True, timeout=10)     # resign cleanly: tasks of the other children go on
    return 0


def child_after_fork(hu, task, log: str, parent_ids: list[str], name: str) -> None:
    """Target for os.fork and multiprocessing 'fork': uses the parent's TimeWheel object."""
    die_with_parent()
    code = 1
    try:
        code = _child_body(hu, task, log, parent_ids, name)
    except BaseException as exc:  # reported through the exit code and stderr
        print(f"child {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def child_spawned(db: str, log: str, parent_ids: list[str], name: str) -> None:
    """Target for multiprocessing 'spawn': builds its own TimeWheel on the same file."""
    hu, task = make_wheel(db)
    child_after_fork(hu, task, log, parent_ids, name)


def _wait_pid(pid: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return f"exit {os.waitstatus_to_exitcode(status)}"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


def first_open(d: str, rounds: int = 30, k: int = 3) -> dict:
    from timewheel import StoreBusy

    def child(db: str, at: float) -> None:
        die_with_parent()
        hu, task = make_wheel(db)
        time.sleep(max(0.0, at - time.time() - 0.002))
        while time.time() < at:
            pass
        t0 = time.monotonic()
        code = 0
        try:
            task.delay(os.path.join(d, "runs.log"), "x", count_down=600)
        except StoreBusy as exc:
            code = 3
            print(f"StoreBusy after {time.monotonic() - t0:.3f}s: {exc}", file=sys.stderr, flush=True)
        except BaseException as exc:
            code = 4
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(code)

    failed = 0
    for r in range(rounds):
        db = os.path.join(d, f"new{r}.db")
        at = time.time() + 0.15
        pids = []
        for _ in range(k):
            pid = os.fork()
            if pid == 0:
                child(db, at)
            pids.append(pid)
        deadline = time.monotonic() + CHILD_TIMEOUT
        failed += sum(_wait_pid(p, deadline) != "exit 0" for p in pids)
    return {"mode": "first-open", "opens": rounds * k, "failed": failed}


def main(mode: str, d: str) -> dict:
    if mode == "first-open":
        return first_open(d)
    db, log = os.path.join(d, "tasks.db"), os.path.join(d, "runs.log")
    hu, task = make_wheel(db)
    parent = [task.delay(log, f"parent-{i}", count_down=0.3 + i * 0.02) for i in range(PER_PROCESS)]
    ids = [h.id for h in parent]
    outcome: list[str] = []
    stop = threading.Event()
    if mode == "busy-parent":
        hu.start()

        def poll_statuses() -> None:
            while not stop.is_set():
                assert hu.get(ids[0]).status
        threading.Thread(target=poll_statuses, daemon=True).start()
        time.sleep(0.2)

    if mode in ("os-fork", "busy-parent"):
        pids = []
        for n in range(CHILDREN):
            pid = os.fork()
            if pid == 0:
                child_after_fork(hu, task, log, ids, f"child{n}")
            pids.append(pid)
        deadline = time.monotonic() + CHILD_TIMEOUT
        outcome = [_wait_pid(p, deadline) for p in pids]
    else:
        ctx = multiprocessing.get_context("fork" if mode == "mp-fork" else "spawn")
        if mode == "mp-fork":
            procs = [ctx.Process(target=child_after_fork, args=(hu, task, log, ids, f"child{n}"))
                     for n in range(CHILDREN)]
        else:
            procs = [ctx.Process(target=child_spawned, args=(db, log, ids, f"child{n}"))
                     for n in range(CHILDREN)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + CHILD_TIMEOUT
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(10)
                outcome.append("hung")
            else:
                outcome.append(f"exit {p.exitcode}")
    stop.set()
    if mode == "busy-parent":
        hu.stop(wait=True, timeout=5)
    return {"mode": mode, "children": outcome, "parent_pid": os.getpid()}


if __name__ == "__main__":
    if len(sys.argv) > 3:
        CHILD_TIMEOUT = float(sys.argv[3])
    print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
