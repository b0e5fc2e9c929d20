"""Uses of the public API that mypy --strict and pyright must accept, with the types they must
infer (``assert_type``).  Checked, never run, by tests/test_typing.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from typing_extensions import assert_type

from timewheel import Delayed, Task, TaskHandle, TimeWheel

hu = TimeWheel("tasks.db")


@hu.task(retries=3, queue="emails", priority=5)
def send_email(to: str, subject: str, *, html: bool = False) -> int:
    return len(to)


@hu.task
def bare(n: int) -> list[int]:
    return [n]


@hu.task()
async def fetch(url: str, timeout: float = 10.0) -> bytes:
    return url.encode()


@hu.periodic(every=900)
def report() -> dict[str, int]:
    return {}


typed: Task[[int], list[int]] = bare
assert_type(send_email("a@b.c", "hi"), int)
assert_type(send_email.call_local("a@b.c", "hi", html=True), int)
h = send_email.delay("a@b.c", "hi")
assert_type(h, TaskHandle[int])
assert_type(h.result(timeout=5), int)
assert_type(send_email.delay(to="a@b.c", subject="hi", html=True).result(), int)
assert_type(bare.delay(3).result(), list[int])
assert_type(report.delay().result(), dict[str, int])

# options: the timing and the id, the call still checked
later = send_email.options(count_down=10, task_id="welcome:7").delay("a@b.c", "hi")
assert_type(later, TaskHandle[int])
at = send_email.options(eta=dt.datetime(2030, 1, 1)).delay("a@b.c", subject="hi")
options: Delayed[[int], list[int]] = bare.options(eta=1.9e9)

# async def: calling it gives the coroutine, its handle what the coroutine returns
assert_type(fetch.delay("https://example.com").result(), bytes)
assert_type(fetch.options(count_down=1).delay("https://example.com", timeout=2.0).result(), bytes)


async def awaits() -> bytes:
    data = await fetch.call_local("https://example.com")
    assert_type(data, bytes)
    return await fetch.delay("https://example.com").aresult(timeout=30)

# a handle from an id, and schedule(): the value is not known
assert_type(hu.get("welcome:7"), TaskHandle[Any])
assert_type(send_email.schedule(("a@b.c", "hi"), count_down=5, priority=9), TaskHandle[Any])
handles: list[TaskHandle[object]] = [h, later, at, bare.delay(1)]
