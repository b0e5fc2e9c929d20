"""A worker process for the batch tests (issue 23): ``python tests/batch_worker.py STORE LOG``
starts a wheel on STORE and runs until killed or until ``LOG.stop`` exists.

The tasks append to LOG (one ``os.write`` per line, O_APPEND: lines from several processes
never interleave): ``start <tag> <pid> <time>`` and ``end <tag> <pid> <time>``; a callback
logs ``cb-start <event> <batch id> <task id> <pid> <time>`` and ``cb-end ...``.  The test
process registers the same tasks through :func:`make` (same names) to enqueue them.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from mp_worker import append_line  # noqa: E402


def make(store: str, log: str, *, workers: int = 4):
    """The wheel on ``store`` and its tasks: member, grower (a member that adds members) and
    the three callbacks."""
    from timewheel import TimeWheel, current_task
    hu = TimeWheel(store, workers=workers, tick=0.1, max_crashes=50)

    @hu.task(name="bw.member")
    def member(tag: str, sleep: float, fail: bool) -> str:
        append_line(log, f"start {tag} {os.getpid()} {time.time():.6f}")
        time.sleep(sleep)
        append_line(log, f"end {tag} {os.getpid()} {time.time():.6f}")
        if fail:
            raise ValueError(f"member {tag} fails for good")
        return tag

    @hu.task(name="bw.grower")
    def grower(tag: str, children: int, sleep: float) -> str:
        append_line(log, f"start {tag} {os.getpid()} {time.time():.6f}")
        batch = current_task().batch
        for i in range(children):
            batch.add(member, f"{tag}.{i}", sleep, False)
        append_line(log, f"end {tag} {os.getpid()} {time.time():.6f}")
        return tag

    def callback(event: str):
        def run(batch_id: str) -> None:
            ctx = current_task()
            append_line(log, f"cb-start {event} {batch_id} {ctx.id} {os.getpid()} {time.time():.6f}")
            append_line(log, f"cb-end {event} {batch_id} {ctx.id} {os.getpid()} {time.time():.6f}")
        return run

    tasks = {"member": member, "grower": grower}
    for event in ("on_complete", "on_success", "on_failure"):
        tasks[event] = hu.task(name=f"bw.{event}")(callback(event))
    return hu, tasks


def main() -> int:
    return run_until_stopped(make)


def run_until_stopped(make) -> int:
    """``argv``: STORE LOG.  Start the wheel ``make(STORE, LOG)`` returns, log ``ready``, run
    until ``LOG.stop`` exists (a worker process of the tests)."""
    import logging
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {os.getpid()} %(name)s %(message)s")
    store, log = sys.argv[1], sys.argv[2]
    hu, _ = make(store, log)
    hu.start()
    append_line(log, f"ready {os.getpid()} {time.time():.6f}")
    while not os.path.exists(log + ".stop"):
        time.sleep(0.05)
    hu.stop(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
