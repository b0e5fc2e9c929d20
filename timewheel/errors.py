"""Exceptions raised by timewheel."""

from __future__ import annotations

import datetime as _dt
import math
import reprlib
from typing import Any, Optional, Union

__all__ = [
    "TimeWheelError", "TaskFailed", "StoreError", "StoreBusy", "NotAStore", "StoreMismatch",
    "TaskNotFound", "DuplicateTask", "TaskTimeout", "TaskAborted", "Retry",
]


class TimeWheelError(Exception):
    """Base class of every timewheel error."""


class TaskFailed(TimeWheelError):
    """The task ended without a result: it failed, was cancelled, was skipped as misfired or
    was aborted.

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


class BatchNotFound(TimeWheelError, KeyError):
    """No batch with that id is in the store (issue 23)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "batch not found"


class BatchClosed(TimeWheelError):
    """A batch that is done (its callbacks were added) takes no more members; nor can a batch
    id be opened twice."""


class TaskTimeout(TimeWheelError):
    """A run took longer than its task's ``timeout``; raised inside the task, recorded as its
    error, and retried like any other failure while attempts remain."""


class TaskAborted(TimeWheelError):
    """Raised inside a sync task by ``current_task().check_aborted()`` once an abort of its run
    was asked for (``TaskHandle.abort()``, ``timewheel abort``, the web view): the run ends
    ``aborted``, never retried.  (An ``async def`` task is cancelled instead.)"""


class Retry(TimeWheelError):
    """Raised inside a task to ask for a retry: ``raise Retry(count_down=30)`` runs it again
    30 s after this run ends (``eta=``: at that datetime or unix time; neither: after the
    task's backoff, as for any failure).  It counts against the task's ``retries`` unless
    ``max_retries`` gives another budget; once the budget is used up the task fails.  It
    retries whatever ``retry_on`` / ``dont_retry_on`` say: the task asked.  ``message`` (and
    the exception it is raised ``from``) become the attempt's error.
    ``current_task().retry(...)`` raises it."""

    def __init__(self, message: Optional[str] = None, *,
                 count_down: Union[float, _dt.timedelta, None] = None,
                 eta: Union[float, _dt.datetime, None] = None,
                 max_retries: Optional[int] = None) -> None:
        if count_down is not None and eta is not None:
            raise ValueError("Retry takes count_down or eta, not both")
        if isinstance(count_down, _dt.timedelta):
            count_down = count_down.total_seconds()
        if count_down is not None and not (_is_real(count_down) and 0 <= count_down <= 1e10):
            raise ValueError(f"Retry's count_down must be seconds from 0, got {shown(count_down)}")
        if isinstance(eta, _dt.datetime):
            try:
                eta = eta.timestamp()           # naive: local time, as delay(eta=) reads it
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"Retry's eta {shown(eta)} cannot be turned into a time") from None
        if eta is not None and not (_is_real(eta) and 0 <= eta <= 253402300799.0):
            raise ValueError(f"Retry's eta must be a datetime or unix seconds in 1970..9999, "
                             f"got {shown(eta)}")
        if max_retries is not None and (type(max_retries) is not int or not 0 <= max_retries <= 1000):
            raise ValueError(f"Retry's max_retries must be an int from 0 to 1000, got {shown(max_retries)}")
        self.message = message
        self.count_down: Optional[float] = None if count_down is None else float(count_down)
        self.eta: Optional[float] = None if eta is None else float(eta)
        self.max_retries = max_retries
        super().__init__(message) if message is not None else super().__init__()

    def __str__(self) -> str:
        when = ("after its backoff" if self.count_down is None and self.eta is None
                else f"in {self.count_down:g}s" if self.eta is None else f"at {self.eta:.3f}")
        said = f"{self.message}; " if self.message is not None else ""
        return f"{said}it asked for a retry {when}"

    def due(self, finished: float) -> Optional[float]:
        """When the retry asked for is due, for a run that ended at ``finished`` (None: after
        the task's backoff)."""
        if self.eta is not None:
            return self.eta
        return None if self.count_down is None else finished + self.count_down

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its keywords
        return (_retry, (self.message, self.count_down, self.eta, self.max_retries))


def _retry(message: Optional[str], count_down: Optional[float], eta: Optional[float],
           max_retries: Optional[int]) -> Retry:
    return Retry(message, count_down=count_down, eta=eta, max_retries=max_retries)


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (not isinstance(value, float) or math.isfinite(value)))


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
