"""A worker process of the retry-rule tests::

    python tests/retry_worker.py STORE DIR        # run tasks until DIR/stop exists

Each run of its tasks appends a JSON line to ``DIR/runs.jsonl`` (name, attempt, eta, when it
started, when it raised, pid; times by the store's clock, as etas are), so the test sees what
each process decided and when.
"""

from __future__ import annotations

import json
import os
import sys

from timewheel import Retry, TimeWheel, current_task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mp_worker import append_line, wait_for  # noqa: E402 - run as a script, not as tests.*


def register(hu: TimeWheel, out: str) -> dict:
    """The tasks, declared alike in the workers and the test that enqueues them."""
    def note(name: str) -> dict:
        ctx = current_task()
        return {"name": name, "attempt": ctx.attempt, "eta": ctx.eta, "started": hu.now(),
                "pid": os.getpid()}

    def log(run: dict) -> None:
        run["raised"] = hu.now()
        append_line(os.path.join(out, "runs.jsonl"), json.dumps(run))

    @hu.task(name="rules.net", retries=4, retry_delay=0.05, retry_on=ConnectionError)
    def net(plan: str) -> None:
        run = note("net")
        log(run)
        raise (ConnectionResetError("first") if run["attempt"] == 1 else ValueError("second"))

    @hu.task(name="rules.asks")                      # retries=0: max_retries=2 is its budget
    def asks() -> int:
        run = note("asks")
        if run["attempt"] < 3:
            log(run)
            raise Retry("not yet", count_down=0.5, max_retries=2)
        log(run)
        return run["attempt"]

    @hu.task(name="rules.jittered", retries=1, retry_delay=4.0)
    def jittered() -> int:
        run = note("jittered")
        log(run)
        if run["attempt"] == 1:
            raise ConnectionError("down")
        return run["attempt"]

    return {"net": net, "asks": asks, "jittered": jittered}


def main(store: str, out: str) -> int:
    hu = TimeWheel(store, workers=2, tick=0.1, slots=600)
    register(hu, out)
    hu.start()
    wait_for(lambda: os.path.exists(os.path.join(out, "stop")), timeout=60, interval=0.02,
             what="the stop file")
    hu.stop(wait=True, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
