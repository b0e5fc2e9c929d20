"""Schedule a few tasks a few seconds out, watch them run, print their results.

    python examples/quickstart.py [path/to/tasks.db]
"""

import logging
import os
import shlex
import sys
import tempfile
import time

from timewheel import TaskFailed, TimeWheel

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "tasks.db")
hu = TimeWheel(path, workers=4)


@hu.task()
def send_email(to: str, subject: str) -> str:
    print(f"  {time.strftime('%H:%M:%S')}  sending {subject!r} to {to}")
    return f"sent to {to}"


@hu.task(retries=2, retry_delay=0.5)
def flaky_webhook(url: str) -> None:
    raise ConnectionError(f"{url} is down")


with hu:                                   # start(); stop(wait=True) at the end
    t0 = time.time()
    print(f"store: {path}")
    # send_email.delay("a@b.c", "hi", count_down=1) does the same; .options() keeps the call
    # checked by type checkers (mypy, pyright) against send_email's parameters
    handles = [send_email.options(count_down=i).delay(f"user{i}@example.com", "welcome") for i in (1, 2, 3)]
    hook = flaky_webhook.options(count_down=0.5).delay("https://example.com/hook")
    late = send_email.options(count_down=3600).delay("later@example.com", "reminder")
    print(f"scheduled {len(handles) + 2} tasks; one is due in an hour and is cancelled:", late.cancel())

    for h in handles:
        print(f"  {h.id}: {h.result(timeout=10)!r} after {time.time() - t0:.2f}s")
    try:
        hook.result(timeout=10)
    except TaskFailed as exc:
        print(f"  {hook.id}: failed after {hook.record.attempts} attempts: {exc.error}")
    print("statuses:", {h.id: h.status for h in handles + [hook, late]})
# The console script sits next to this interpreter (.venv/bin/timewheel after the README's
# set-up), and a venv that was never activated is not on PATH: name it by its path.
cli = os.path.join(os.path.dirname(sys.executable), "timewheel")
if not os.path.relpath(cli).startswith(".."):
    cli = os.path.relpath(cli)
print("done; inspect the store with: ", shlex.join([cli, "inspect", path]))
