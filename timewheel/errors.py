"""Exceptions raised by timewheel."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "TimeWheelError", "TaskFailed", "StoreError", "StoreBusy", "NotAStore", "StoreMismatch",
    "TaskNotFound", "DuplicateTask", "TaskTimeout",
]


class TimeWheelError(Exception):
    """Base class of every timewheel error."""


class TaskFailed(TimeWheelError):
    """The task ended without a result: it failed, was cancelled or was skipped as misfired.

    ``status`` says which; the message holds the task's error text.
    """

    def __init__(self, task_id: str, status: str, error: str | None,
                 traceback: str | None = None) -> None:
        self.task_id = task_id
        self.status = status
        self.error = error
        self.traceback = traceback
        super().__init__(f"task {task_id} {status}: {error}" if error else f"task {task_id} {status}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, like filelock's Timeout
        return (self.__class__, (self.task_id, self.status, self.error, self.traceback))


class StoreError(TimeWheelError):
    """The store could not be read or written."""


class StoreBusy(StoreError):
    """Another process held the store's write lock for longer than ``busy_timeout``."""


class NotAStore(StoreError):
    """The file exists but is not a timewheel store."""


class StoreMismatch(StoreError):
    """The store was created with another wheel geometry (slots, tick)."""


class TaskNotFound(TimeWheelError, KeyError):
    """No task with that id is in the store (never enqueued, or purged after its TTL)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not found"


class DuplicateTask(TimeWheelError, KeyError):
    """A task with that id is already stored (and the requested add may not replace it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task id already exists"


class TaskTimeout(TimeWheelError):
    """A run took longer than its task's ``timeout``; raised inside the task, recorded as its
    error, and retried like any other failure while attempts remain."""


class _Bounded(reprlib.Repr):
    """reprlib's repr, cut to a few items and characters, that never raises for a big int
    inside a container and never sorts a big set or dict (reprlib sorts them: 0.4 s for a
    set of a million strings)."""

    def repr1(self, x: Any, level: int) -> str:
        if type(x) in (set, frozenset, dict) and len(x) > 1000:
            return f"<{type(x).__name__} of {len(x)} items>"
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        bits = int.bit_length(x)
        return f"<int of {bits} bits>" if bits > 64 else int.__repr__(x)


_BOUNDED = _Bounded()


def shown(value: Any) -> str:
    """A short repr of a user's value for an error message, safe for hostile values: a huge
    int (whose repr raises past 4300 digits), a huge container, a repr or even a
    ``__class__`` that raises, a repr with control characters.  It never raises."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and int.bit_length(value) > 64:
            return f"an int of {int.bit_length(value)} bits"
        text = _BOUNDED.repr(value)
    except Exception:  # noqa: BLE001 - any object may come in
        try:
            return f"a {type(value).__name__} that cannot be shown"
        except Exception:  # noqa: BLE001 - a metaclass's __name__ may raise too
            return "a value that cannot be shown"
    if not text.isprintable():      # a __repr__ of the user's may return escape sequences
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text
