"""Deliberate type errors: mypy and pyright must each report every line marked as an error
(its comment), and no other.  Checked, never run, by tests/test_typing.py."""

from __future__ import annotations

from timewheel import TimeWheel

hu = TimeWheel("tasks.db")


@hu.task(retries=3)
def send_email(to: str, subject: str) -> int:
    return len(to)


@hu.task()
async def fetch(url: str) -> bytes:
    return url.encode()


send_email.delay(42, "hi")  # error: an int for a str
send_email.delay("a@b.c")  # error: a missing argument
send_email.delay("a@b.c", "hi", "extra")  # error: one argument too many
send_email.delay("a@b.c", subjet="hi")  # error: a misspelt keyword
send_email.call_local(to=1, subject="hi")  # error: an int for a str, by keyword
send_email("a@b.c", b"hi")  # error: bytes for a str
send_email.options(count_down=10).delay(42, "hi")  # error: checked through options() too
send_email.options(count_down="soon")  # error: count_down is a number
send_email.options(eta="tomorrow")  # error: eta is a datetime or a number
fetch.delay(b"https://example.com")  # error: bytes for a str
n: str = send_email.delay("a@b.c", "hi").result()  # error: the result is an int
b: str = fetch.delay("https://example.com").result()  # error: the result is bytes
c: bytes = fetch.call_local("https://example.com")  # error: a coroutine, not awaited
hu.task(retries="3")  # error: retries is an int
