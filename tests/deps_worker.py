"""A worker process for the dependency tests (issue 23): ``python tests/deps_worker.py STORE LOG``
starts a wheel on STORE and runs until killed or until ``LOG.stop`` exists.

The tasks append to LOG (one ``os.write`` per line, O_APPEND): ``start <tag> <pid> <time>``
and ``end <tag> <pid> <time>``.  The test process registers the same tasks through
:func:`make` (same names) to enqueue them.
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
    """The wheel on ``store`` and its tasks: ``step`` (sleeps, maybe fails) and ``add`` (a
    ``then`` step: adds to the result it is given)."""
    from timewheel import TimeWheel
    hu = TimeWheel(store, workers=workers, tick=0.1, max_crashes=50)

    @hu.task(name="dw.step")
    def step(tag: str, sleep: float, fail: bool) -> str:
        append_line(log, f"start {tag} {os.getpid()} {time.time():.6f}")
        time.sleep(sleep)
        append_line(log, f"end {tag} {os.getpid()} {time.time():.6f}")
        if fail:
            raise ValueError(f"step {tag} fails for good")
        return tag

    @hu.task(name="dw.add")
    def add(previous: int, more: int, tag: str) -> int:
        append_line(log, f"start {tag} {os.getpid()} {time.time():.6f}")
        append_line(log, f"end {tag} {os.getpid()} {time.time():.6f}")
        return previous + more

    return hu, {"step": step, "add": add}


def main() -> int:
    from batch_worker import run_until_stopped
    return run_until_stopped(make)


if __name__ == "__main__":
    sys.exit(main())
