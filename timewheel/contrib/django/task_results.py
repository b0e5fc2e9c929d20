"""How a stored task reads as Django's ``TaskResult``: pure functions, no Django import (the
backend in :mod:`timewheel.contrib.django.backend` builds the objects from what they say).

Django's tasks have four statuses; timewheel's seven map onto them as a Django user expects:
a task waiting for its eta or for a retry is ``READY``, a claimed one ``RUNNING``, and a task
that will never run (again) without a ``retry`` -- failed, cancelled, skipped as misfired,
aborted -- is ``FAILED``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ...records import ABORTED, CANCELLED, FAILED, MISFIRED, PENDING, RUNNING, SUCCEEDED, TaskRecord

__all__ = ["DJANGO_STATUS", "StoredError", "error_of", "exception_path"]

#: timewheel's status -> Django's TaskResultStatus value
DJANGO_STATUS = {PENDING: "READY", RUNNING: "RUNNING", SUCCEEDED: "SUCCESSFUL", FAILED: "FAILED",
                 CANCELLED: "FAILED", MISFIRED: "FAILED", ABORTED: "FAILED"}

#: what a failure that raised nothing in the task is reported as (a crash, a cancel, a misfire,
#: a function missing in the worker): the exception ``TaskHandle.result()`` raises for it
NO_EXCEPTION = "timewheel.errors.TaskFailed"


class StoredError(NamedTuple):
    """The fields of Django's ``TaskError`` for a record's last error."""

    exception_class_path: str
    traceback: str


def exception_path(traceback: str) -> Optional[str]:
    """The dotted path of the exception a formatted traceback ends with, or None.

    After the frames of the last exception the traceback module writes
    ``module.QualName: message`` -- the bare ``QualName`` for builtins and ``__main__`` -- so that
    line names the class a worker raised without the class being stored (``builtins.`` is
    added back).  An exception group's tree is not read: None."""
    lines = traceback.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (")]
    # the last exception's own traceback, then its frames (indented), then its line
    rest = [line for line in lines[starts[-1] + 1 if starts else 0:] if line]
    while rest and rest[0][0].isspace():
        rest.pop(0)
    if not rest:
        return None
    head = rest[0].split(":", 1)[0].strip()
    if not head or not all(part.isidentifier() for part in head.split(".")):
        return None
    return head if "." in head else f"builtins.{head}"


def error_of(rec: TaskRecord) -> Optional[StoredError]:
    """Django's view of the record's error: the exception its last failed run raised, with
    the traceback, or (for a run that raised nothing) :data:`NO_EXCEPTION` with the reason.
    A task being retried keeps its last error while it waits and runs again; None when it has
    none (it succeeded, or never failed)."""
    if rec.error is None:
        return None
    path = exception_path(rec.traceback) if rec.traceback else None
    if path is None:
        return StoredError(NO_EXCEPTION, rec.traceback or f"{rec.error}\n")
    return StoredError(path, rec.traceback or "")
