"""A worker process for the abort and progress tests (issue 23): ``python tests/abort_worker.py STORE LOG``
starts a wheel on STORE (tick 0.2 s, 3 workers) and runs until killed or until ``LOG.stop``
exists.

The tasks append to LOG (one ``os.write`` per line, O_APPEND): ``start <kind> <id> - <time>``
when a run begins, ``end <kind> <id> <how> <time>`` when it ends (``aborted``: it saw the
abort; ``cancelled``: an async run was cancelled; ``done``: it finished its work).  The test
process registers the same tasks through :func:`make` (same names) to enqueue them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from mp_worker import append_line  # noqa: E402

TICK = 0.2
POLL = 0.05          #: how often the sync task looks at current_task().aborted


def make(store: str, log: str):
    from timewheel import TimeWheel, current_task
    hu = TimeWheel(store, workers=3, tick=TICK)

    def mark(what: str, kind: str, how: str = "-") -> None:
        append_line(log, f"{what} {kind} {current_task().id} {how} {time.time():.6f}")

    @hu.task(name="ab.spin", retries=3)
    def spin(seconds: float) -> str:
        mark("start", "spin")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if current_task().aborted:
                mark("end", "spin", "aborted")
                current_task().check_aborted()
            time.sleep(POLL)
        mark("end", "spin", "done")
        return "done"

    @hu.task(name="ab.aspin", retries=3)
    async def aspin(seconds: float) -> str:
        mark("start", "aspin")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            mark("end", "aspin", "cancelled")
            raise
        mark("end", "aspin", "done")
        return "done"

    @hu.task(name="ab.other")
    def other(seconds: float) -> str:
        mark("start", "other")
        time.sleep(seconds)
        mark("end", "other", "done")
        return "other"

    @hu.task(name="ab.count")
    def count(n: int, step: float) -> int:
        mark("start", "count")
        for i in range(n):
            current_task().progress(i + 1, n, f"row {i + 1}")
            time.sleep(step)
        mark("end", "count", "done")
        return n

    return hu, {"spin": spin, "aspin": aspin, "other": other, "count": count}


def main() -> int:
    from batch_worker import run_until_stopped
    return run_until_stopped(make)


if __name__ == "__main__":
    sys.exit(main())
