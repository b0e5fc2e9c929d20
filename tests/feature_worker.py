"""A process of the task-id and hook tests::

    python tests/feature_worker.py work DB DIR        # run tasks until DIR/stop exists
    python tests/feature_worker.py race DB DIR N      # run tasks, and delay() one task id N times

Both register ``features.welcome(user, pause=0, fail_first=False)``, which appends
``run <user> <attempt> <pid>`` to ``DIR/runs.log``, ``features.die()``, which kills its
process, and a hook on every event that appends ``<event> <task id> <attempts> <pid>`` to
``DIR/hooks.log`` (one ``write()`` per line, so the lines of several processes never mix).

``race`` waits for ``DIR/go``, which holds the eta to use, calls
``welcome.delay(7, pause=2, task_id="welcome:7", eta=...)`` N times as fast as it can, and once
that task has finished (plus a second, for a second run to show) prints JSON: the ids the
handles named and when the last ``delay()`` returned.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from timewheel import EVENTS, TimeWheel, current_task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mp_worker import append_line, wait_for  # noqa: E402 - run as a script, not as tests.*

TASK_ID = "welcome:7"


def make_wheel(db: str, out: str) -> tuple[TimeWheel, object]:
    hu = TimeWheel(db, workers=2, tick=0.1, slots=600)

    @hu.task(name="features.welcome", retries=1, retry_delay=0.05)
    def welcome(user: int, pause: float = 0.0, fail_first: bool = False) -> int:
        ctx = current_task()
        append_line(os.path.join(out, "runs.log"), f"run {user} {ctx.attempt} {os.getpid()}")
        time.sleep(pause)
        if fail_first and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return user

    @hu.task(name="features.die")
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)     # a crash mid-run: the process is gone

    for event in EVENTS:
        hu.on(event, lambda rec, exc, event=event: append_line(
            os.path.join(out, "hooks.log"), f"{event} {rec.id} {rec.attempts} {os.getpid()}"))
    return hu, welcome


def main(argv: list[str]) -> int:
    mode, db, out = argv[:3]
    hu, welcome = make_wheel(db, out)
    hu.start()
    if mode == "work":
        wait_for(lambda: os.path.exists(os.path.join(out, "stop")), timeout=60, interval=0.02,
                 what="the stop file")
    else:
        go = os.path.join(out, "go")
        wait_for(lambda: os.path.exists(go) and os.path.getsize(go), timeout=30, interval=0.001,
                 what="the go file")
        with open(go) as fh:
            eta = float(fh.read())
        ids = {welcome.delay(7, pause=2.0, task_id=TASK_ID, eta=eta).id for _ in range(int(argv[3]))}
        last = time.time()
        wait_for(lambda: hu.get(TASK_ID).status == "succeeded", timeout=30, interval=0.02,
                 what="the task to finish")
        time.sleep(1.0)
        print(json.dumps({"ids": sorted(ids), "last": last}))
    hu.stop(wait=True, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
