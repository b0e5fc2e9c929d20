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

from .api import EVENTS, Stopped, Task, TaskHandle, TimeWheel
from .boss import Health
from .errors import (
    DuplicateTask,
    NotAStore,
    StoreBusy,
    StoreError,
    StoreMismatch,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    TimeWheelError,
)
from .execute import TaskContext, current_task
from .records import STATUSES, TaskRecord

__all__ = [
    "TimeWheel", "Task", "TaskHandle", "Stopped", "Health", "EVENTS", "TaskFailed", "TaskNotFound",
    "TaskTimeout", "DuplicateTask", "TimeWheelError", "StoreError", "StoreBusy", "NotAStore",
    "StoreMismatch", "TaskRecord", "STATUSES", "TaskContext", "current_task",
]
__version__ = "0.2.0"
