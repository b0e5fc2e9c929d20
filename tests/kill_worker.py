"""Child process for test_durability.py: enqueues or runs tasks until it is SIGKILLed.

    python kill_worker.py enqueue DB LOG [batch]     delay() forever; log each id once returned
    python kill_worker.py run DB LOG                 start() and run tasks; log start/end
"""

from __future__ import annotations

import os
import random
import sys
import time

from timewheel import TimeWheel

mode, db, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def log(line: str) -> None:
    os.write(log_fd, (line + "\n").encode())     # one write(2) with O_APPEND: never torn


hu = TimeWheel(db, workers=4)


@hu.task(name="work")
def work(i: int) -> int:
    log(f"start {i}")
    time.sleep(random.uniform(0.0, 0.3))
    log(f"end {i}")
    return i


if mode == "enqueue":
    batch = len(sys.argv) > 4 and sys.argv[4] == "batch"
    n = 0
    while True:
        if batch:
            with hu.batch():
                ids = [work.delay(n + k, count_down=3600).id for k in range(50)]
            log(" ".join(ids))
            n += 50
        else:
            log(work.delay(n, count_down=3600).id)
            n += 1
elif mode == "run":
    hu.start()
    log("ready")
    while True:
        time.sleep(1)
