"""Hostile values in error messages (issue 19 item 4): every public entry point that validates
a value refuses a huge int, a huge container, an object whose repr raises and a str whose repr
raises with its documented exception (ValueError or TypeError) and a short, one-line,
printable message naming the parameter -- never with the error of formatting the bad value
("Exceeds the limit (4300 digits) for integer string conversion", or the repr's own).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pytest

from timewheel import TimeWheel, query
from timewheel.errors import shown
from timewheel.store import MemoryStore
from timewheel.store.redis import RedisStore
from timewheel.wheel import Wheel

HUGE = 10 ** 5000                       # its repr() raises ValueError past 4300 digits


class Unshowable:
    """An object whose repr (and str) raise."""

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    __str__ = __repr__


class UnshowableStr(str):
    """A str whose repr raises (given as " {x} ": no valid label, namespace, zone or cron)."""

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class UnshowableFloat(float):
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class UnshowableDatetime(dt.datetime):
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    def timestamp(self) -> float:
        raise OverflowError("no timestamp")


HOSTILE = {"huge int": HUGE, "huge negative int": -HUGE, "huge container": [HUGE] * 100_000,
           "repr raises": Unshowable(), "str whose repr raises": UnshowableStr(" {x} "),
           "nan whose repr raises": UnshowableFloat("nan")}


def readable_refusal(exc: BaseException, *words: str) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert "4300 digits" not in text and "repr refused" not in text, text
    assert "\n" not in text and len(text) < 300 and text.isprintable(), text
    assert any(w in text for w in words), f"{text!r} does not name {words}"


def _wheel(**options: Any) -> TimeWheel:
    return TimeWheel(None, **options)


def _task() -> Any:
    return _wheel().task(name="f")(lambda a=None: a)


def _cron(**options: Any) -> Any:
    return _wheel().periodic(**options)(lambda: None)


#: (entry point, the word its refusal names): each is called with every hostile value
ENTRY_POINTS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    **{f"TimeWheel({k}=)": ((lambda v, k=k: _wheel(**{k: v})), k)
       for k in ("workers", "tick", "slots", "result_ttl", "misfire_grace", "timeout", "busy_timeout",
                 "immediate", "clock", "max_crashes", "exit_grace", "lookahead", "namespace")},
    **{f"hu.task({k}=)": ((lambda v, k=k: _wheel().task(**{k: v})(lambda: None)), k)
       for k in ("retries", "retry_delay", "misfire_grace", "timeout")},
    "hu.task(name=)": (lambda v: _wheel().task(name=v)(lambda: None), "task name"),
    "hu.task()(fn)": (lambda v: _wheel().task()(v), "@task"),
    "delay(count_down=)": (lambda v: _task().delay(count_down=v), "count_down"),
    "delay(eta=)": (lambda v: _task().delay(eta=v), "eta"),
    "delay(task_id=)": (lambda v: _task().delay(task_id=v), "task_id"),
    "schedule(args)": (lambda v: _task().schedule(v), ("args", "f: too many")),
    "schedule(kwargs=)": (lambda v: _task().schedule((), v), "kwargs"),
    "schedule(misfire_grace=)": (lambda v: _task().schedule(misfire_grace=v), "misfire_grace"),
    "hu.on(event)": (lambda v: _wheel().on(v), "event"),
    "hu.on(event, fn)": (lambda v: _wheel().on("failed", v), "hook"),
    "hu.periodic(every=)": (lambda v: _cron(every=v), "every"),
    "hu.periodic(cron=)": (lambda v: _cron(cron=v), "cron"),
    "hu.periodic(tz=)": (lambda v: _cron(cron="0 3 * * *", tz=v), ("tz", "time zone")),
    "hu.periodic(coalesce=)": (lambda v: _cron(every=60, coalesce=v), "coalesce"),
    "hu.get(id)": (lambda v: _wheel().get(v), "task_id"),
    "hu.cancel(id)": (lambda v: _wheel().cancel(v), "task_id"),
    "hu.retry(id)": (lambda v: _wheel().retry(v), "task_id"),
    "handle.result(timeout=)": (lambda v: _task().delay(count_down=60).result(timeout=v), "timeout"),
    "hu.stop(timeout=)": (lambda v: _wheel().stop(timeout=v), "timeout"),
    "Wheel(slots=)": (lambda v: Wheel(slots=v), "slots"),
    "Wheel(tick=)": (lambda v: Wheel(tick=v), "tick"),
    "store.scan(status)": (lambda v: MemoryStore().scan(v), "status"),
    "query.tasks_data(limit=)": (lambda v: query.tasks_data(MemoryStore(), 0.0, limit=v), "limit"),
    "query.tasks_data(status=)": (lambda v: query.tasks_data(MemoryStore(), 0.0, status=v), "status"),
    "query.timeline_data(hours=)": (lambda v: query.timeline_data(MemoryStore(), 0.0, hours=v), "hours"),
    "query.purge_data(older_than=)": (lambda v: query.purge_data(MemoryStore(), 0.0, older_than=v),
                                      "older_than"),
    "query.change_tasks(verb)": (lambda v: query.change_tasks(MemoryStore(), [], v), "verb"),
    # refused before it connects: no server is needed
    "RedisStore(lease=)": (lambda v: RedisStore("redis://127.0.0.1:9", lease=v), "lease"),
    "RedisStore(namespace=)": (lambda v: RedisStore("redis://127.0.0.1:9", namespace=v), "namespace"),
}


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_refuses_a_hostile_value_readably(entry: str, value: Any) -> None:
    call, word = ENTRY_POINTS[entry]
    if entry in ("hu.get(id)", "hu.cancel(id)", "hu.retry(id)") and isinstance(value, str):
        return                           # any str is an id to look up (and not found)
    if entry == "TimeWheel(max_crashes=)" and value is HUGE:
        return                           # valid: no upper bound
    with pytest.raises((ValueError, TypeError)) as info:
        call(value)
    readable_refusal(info.value, *([word] if isinstance(word, str) else word))


def test_a_hostile_eta_datetime_is_refused_readably() -> None:
    eta = UnshowableDatetime(2030, 1, 1)
    with pytest.raises(ValueError) as info:
        _task().delay(eta=eta)
    readable_refusal(info.value, "eta")


def test_a_callable_whose_repr_raises_gets_a_clear_task_name_error() -> None:
    class Job:
        def __call__(self) -> None:
            pass

        def __repr__(self) -> str:
            raise RuntimeError("repr refused")

    with pytest.raises(TypeError) as info:
        _wheel().task()(Job())
    readable_refusal(info.value, "name=")
    assert _wheel().task(name="job")(Job()).name == "job"


SHOWN = {"huge": lambda: HUGE, "-huge": lambda: -HUGE, "list": lambda: [HUGE], "dict": lambda: {1: HUGE},
         "big set": lambda: set(map(str, range(10 ** 6))), "repr raises": Unshowable,
         "str": lambda: UnshowableStr("x"), "float": lambda: UnshowableFloat(1.5),
         "escapes": lambda: "\x1b]0;x\x07"}


@pytest.mark.parametrize("make", list(SHOWN.values()), ids=list(SHOWN))
def test_shown_never_raises_and_is_short_and_printable(make: Callable[[], Any]) -> None:
    import time
    value = make()
    t0 = time.perf_counter()
    text = shown(value)
    assert time.perf_counter() - t0 < 0.1          # a set of a million strings is not sorted
    assert len(text) < 100 and text.isprintable(), text


def test_shown_survives_a_class_attribute_and_a_metaclass_that_raise() -> None:
    class Meta(type):
        @property
        def __name__(cls) -> str:
            raise RuntimeError("no name")

    class Nameless(metaclass=Meta):
        def __repr__(self) -> str:
            raise RuntimeError("repr refused")

    class Liar:
        @property
        def __class__(self) -> type:
            raise RuntimeError("no class")

    assert shown(Nameless()) == "a value that cannot be shown"
    assert shown(Liar()) == "a Liar that cannot be shown"
