"""The one task every system runs, and where it records that it ran.

``run(i, due)`` notes ``(i, due, started)`` with ``started = time.time()`` taken first thing
inside the task, so lateness (``started - due``) is what the task itself observes.  Within one
process the notes go to a list; for workloads that span processes (kill/restart, several
processes on one file) they go to an ``O_APPEND`` log file, one ``write()`` per line, so runs
are counted outside any store and duplicates cannot hide.

It is a plain module-level function so that APScheduler can store a reference to it
(``benchmarks.tasks:run``) and every process can import it.
"""

from __future__ import annotations

import os
import time
from typing import Optional

records: list[tuple[int, float, float]] = []
_fd: Optional[int] = None


def log_to(path: Optional[str]) -> None:
    """Record runs in the file ``path`` (appending), or in :data:`records` if ``None``."""
    global _fd
    if _fd is not None:
        os.close(_fd)
        _fd = None
    if path is not None:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def run(i: int, due: float) -> None:
    started = time.time()
    if _fd is not None:
        os.write(_fd, f"{i} {os.getpid()} {due:.6f} {started:.6f}\n".encode())
    else:
        records.append((i, due, started))


def read_log(path: str) -> list[tuple[int, int, float, float]]:
    """The runs in a log file: ``(i, pid, due, started)`` per line."""
    out = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 4:
                    out.append((int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])))
    except FileNotFoundError:
        pass
    return out



def note_end(i: int) -> None:
    """``end <i> <pid>`` in the run log, for a task that notes its end too (the Redis
    workload's slow tasks): three fields, which :func:`read_log` skips."""
    if _fd is not None:
        os.write(_fd, f"end {i} {os.getpid()}\n".encode())


def read_ends(path: str) -> list[tuple[int, int]]:
    """``(i, pid)`` of each ``end`` line of a run log."""
    out = []
    try:
        with open(path, "rb") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[0] == b"end":
                    out.append((int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return out
