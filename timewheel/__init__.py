"""timewheel: an embedded, persistent delayed-task scheduler.

    from timewheel import TimeWheel
    hu = TimeWheel("tasks.db", workers=4)

    @hu.task()
    def send_email(to, subject): ...

    hu.start()
    send_email.delay("a@b.c", "hi", count_down=10)

Tasks live in one SQLite file (or a Redis server), survive restarts and crashes, and run in
bounded thread pools inside the application's own processes.  A task never runs before its
eta, is never lost once ``delay()`` has returned, and runs once (a process killed while
running it is the one documented re-run).
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    BatchClosed,
    BatchNotFound,
    DuplicateTask,
    NotAStore,
    Retry,
    StoreBusy,
    StoreError,
    StoreMismatch,
    TaskAborted,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    TimeWheelError,
)
from .records import STATUSES, TaskRecord

__all__ = [
    "TimeWheel", "Task", "TaskHandle", "Delayed", "Stopped", "Health", "EVENTS", "TaskFailed", "TaskNotFound",
    "TaskTimeout", "DuplicateTask", "TimeWheelError", "StoreError", "StoreBusy", "NotAStore",
    "StoreMismatch", "TaskRecord", "STATUSES", "TaskContext", "current_task", "Retry", "BatchNotFound",
    "BatchClosed", "BatchHandle", "TaskAborted",
]
__version__ = "0.4.0"

# The runtime (api, boss, execute: threads, asyncio) is imported on first use, so that
# `import timewheel.cli` -- a command on a store of a million tasks answers in a few hundred
# milliseconds -- does not pay ~100 ms for machinery it never starts.
_LAZY = {"TimeWheel": "api", "Task": "api", "TaskHandle": "api", "Delayed": "api", "Stopped": "api",
         "EVENTS": "api", "BatchHandle": "batch_api", "Health": "boss", "TaskContext": "execute",
         "current_task": "execute"}

if TYPE_CHECKING:
    from .api import EVENTS, Delayed, Stopped, Task, TaskHandle, TimeWheel
    from .batch_api import BatchHandle
    from .boss import Health
    from .execute import TaskContext, current_task


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'timewheel' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
