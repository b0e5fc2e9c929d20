"""A worker process of the hand-back test::

    python tests/handback_worker.py STORE DIR WORKERS DEPTH   # run tasks until SIGTERM (as timewheel run)

``hb.work(i, pause)`` appends ``start <i> <pid> <time>`` and ``end <i> <pid> <time>`` to
``DIR/runs.log``.  In a backlog the boss queues ``DEPTH`` claimed tasks beyond its workers
(boss.queue_depth, the policy that sizes that queue, is set to DEPTH here so the test knows how
many are queued when it sends SIGTERM); after ``timewheel.serve.serve`` returns it prints a
JSON line: when the signal came, when serve returned, and what stop() reported.
"""

from __future__ import annotations

import json
import os
import sys
import time

import timewheel.boss
from timewheel import TimeWheel
from timewheel.serve import serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mp_worker import append_line  # noqa: E402 - run as a script, not as tests.*


def make_wheel(store: str, out: str, workers: int = 4) -> tuple[TimeWheel, object]:
    hu = TimeWheel(store, workers=workers, tick=0.1, slots=600)

    @hu.task(name="hb.work")
    def work(i: int, pause: float) -> int:
        append_line(os.path.join(out, "runs.log"), f"start {i} {os.getpid()} {time.time()}")
        time.sleep(pause)
        append_line(os.path.join(out, "runs.log"), f"end {i} {os.getpid()} {time.time()}")
        return i

    return hu, work


def main(store: str, out: str, workers: str, depth: str) -> int:
    timewheel.boss.queue_depth = lambda workers, round_s, task_s: int(depth)
    hu, _ = make_wheel(store, out, int(workers))
    signalled: list[float] = []
    stopped = serve(hu, grace=60, log_level="WARNING", on_signal=lambda name: signalled.append(time.time()))
    print(json.dumps({"signalled": signalled[0], "returned": time.time(), "unfinished": stopped.unfinished}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
