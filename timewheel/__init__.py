"""timewheel: an embedded, persistent delayed-task scheduler.

    from timewheel import TimeWheel
    hu = TimeWheel("tasks.db", workers=4)

    @hu.task()
    def send_email(to, subject): ...

    hu.start()
    send_email.delay("a@b.c", "hi", count_down=10)

Tasks live in one SQLite file, survive restarts and crashes, and run in a bounded thread
pool inside the application.  A task never runs before its eta, is never lost once
``delay()`` has returned, and runs once (a process killed while running it is the one
documented re-run).
"""

from .api import Stopped, Task, TaskHandle, TimeWheel
from .errors import (
    NotAStore,
    StoreBusy,
    StoreError,
    StoreMismatch,
    TaskFailed,
    TaskNotFound,
    TimeWheelError,
)
from .records import STATUSES, TaskRecord

__all__ = [
    "TimeWheel", "Task", "TaskHandle", "Stopped", "TaskFailed", "TaskNotFound", "TimeWheelError",
    "StoreError", "StoreBusy", "NotAStore", "StoreMismatch", "TaskRecord", "STATUSES",
]
__version__ = "0.1.0"
