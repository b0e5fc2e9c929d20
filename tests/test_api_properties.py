"""Hostile input to the library API: any value either works or is refused with a clear
ValueError/TypeError naming the parameter, quickly, and a refused call writes nothing.

Every entry point that takes user input is driven by Hypothesis with values of every kind
(huge, negative, nan, inf, bool, str, datetimes naive and aware, timedeltas, containers).
An independent oracle here says what each value must do; the library must agree.  Each call
runs under a hard time limit (a SIGALRM), so a hang -- ``count_down=1e300`` once spun forever
in ``Wheel.due_tick`` -- fails the test instead of stalling CI.

The store is a real one: memory, and a real SQLite file whose rows are read back with plain
sqlite3 before and after every refused call.  Sizes come from ``conftest.examples``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import fractions
import functools
import math
import os
import pickle
import signal
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from timewheel import EVENTS, StoreError, TaskNotFound, TimeWheel
from timewheel.errors import NotAStore
from timewheel.records import MAX_ETA, PENDING
from timewheel.store import SqliteDictStore

from .conftest import examples, records_of, tally

pytestmark = pytest.mark.properties

NOW = 1_700_000_000.25          # the injected clock: the oracle knows "now" exactly
API_BACKENDS = ["memory", "sqlite"]
LIMIT = 3.0                     # seconds any single call may take (a generous bound)


class Hang(BaseException):
    """Raised by the alarm: a call took longer than LIMIT (BaseException: nothing swallows it)."""


@contextmanager
def bounded(seconds: float = LIMIT) -> Iterator[None]:
    """Fail (raise Hang) if the block runs longer than ``seconds`` -- even in a busy loop."""
    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"call still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- hostile values ---------------------------------------------------------------------------

_offsets = st.builds(dt.timezone, st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59),
                                                max_value=dt.timedelta(hours=23, minutes=59)))
SPECIAL_NUMBERS = [0, -0.0, 5e-324, 1e-9, 0.001, 1, 2 ** 53, 2 ** 53 + 1, 1e12, 1e21, 1e300,
                   MAX_ETA, MAX_ETA - NOW, MAX_ETA - NOW + 1, MAX_ETA + 1, -1, -1e300, 10 ** 5000,
                   float("nan"), float("inf"), float("-inf"), 10 ** 400, -(10 ** 400), 2 ** 1100]
numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(min_value=0, max_value=1e6))
datetimes = st.datetimes(timezones=st.none() | _offsets)
anything = st.one_of(
    numbers, st.none(), st.booleans(), datetimes, st.dates(), st.timedeltas(),
    st.text(max_size=12), st.binary(max_size=8), st.decimals(allow_nan=True),
    st.fractions(), st.lists(st.integers(), max_size=3), st.just(object()),
    st.sampled_from(["5", "1e300", "nan", "", "tomorrow"]))


#: tried by every numeric property on top of Hypothesis's own draws, so none is left to chance
EDGES = SPECIAL_NUMBERS + [True, False, None, "5", dt.timedelta(seconds=-1), dt.timedelta.max,
                           dt.timedelta.min, dt.datetime.max, dt.datetime.min]


def edges(*build: Callable[[Any], tuple]) -> Callable[[Any], Any]:
    """Add ``@example(*b(v))`` for every edge value ``v`` and every builder ``b``."""
    def decorate(test: Any) -> Any:
        for v in EDGES:
            for b in build:
                test = example(*b(v))(test)
        return test
    return decorate


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_seconds(v: Any) -> Optional[float]:
    """The float a duration value means, or None if it is not a finite number of seconds."""
    if isinstance(v, dt.timedelta):
        v = v.total_seconds()
    if not is_number(v):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def refused(exc: BaseException, *words: str) -> None:
    """A refusal is a ValueError or TypeError whose one-line message names the parameter."""
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert "\n" not in text and len(text) < 500, text
    assert any(w in text for w in words), f"{text!r} does not name {words}"


# -- the wheels under test, and what is in their store ----------------------------------------

def snapshot(hu: TimeWheel) -> Any:
    """Everything the store holds: the raw rows of a file, the records of a memory store."""
    if hu.path is None:
        return sorted(records_of(hu.store), key=lambda r: r.id), hu.store.counts()
    con = sqlite3.connect(f"file:{hu.path}?mode=ro", uri=True)
    try:
        return [con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("timewheel", "timewheel_counts", "timewheel_ticks")]
    finally:
        con.close()


@pytest.fixture(params=API_BACKENDS)
def wheel(request, tmp_path) -> Iterator[TimeWheel]:
    hu = TimeWheel(None if request.param == "memory" else str(tmp_path / "api.db"), clock=lambda: NOW)

    @hu.task(name="f")
    def f(a: Any = None, b: Any = None) -> Any:
        return a

    hu.now()               # open the store now: the first snapshot must not create it
    yield hu
    hu.close()


def attempt(hu: TimeWheel, call: Callable[[], Any]) -> tuple[Any, Optional[BaseException]]:
    """Run ``call`` under the time bound; (result, None) or (None, the exception)."""
    before = snapshot(hu)
    try:
        with bounded():
            return call(), None
    except Hang:
        raise
    except Exception as exc:  # noqa: BLE001 - judged by the caller
        assert snapshot(hu) == before, f"refused with {exc!r} but the store changed"
        return None, exc


# -- delay()/schedule() timing ----------------------------------------------------------------

def expected_eta(count_down: Any, eta: Any) -> tuple[Optional[float], tuple[str, ...]]:
    """The oracle: the eta a call must store, or None and the words its refusal must name."""
    if count_down is not None and eta is not None:
        return None, ("not both",)
    if eta is None:
        if count_down is None:
            return NOW, ()
        s = as_seconds(count_down)
        if s is None or s < 0 or NOW + s > MAX_ETA:
            return None, ("count_down",)
        return NOW + s, ()
    if isinstance(eta, dt.datetime):
        try:
            when = (eta - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() \
                if eta.tzinfo is not None else eta.timestamp()
        except (OverflowError, OSError, ValueError):
            return None, ("eta",)
    elif is_number(eta):
        try:
            when = float(eta)
        except OverflowError:
            return None, ("eta",)
    else:
        return None, ("eta",)
    if not (math.isfinite(when) and 0 <= when <= MAX_ETA):
        return None, ("eta",)
    return when, ()


timing = st.one_of(
    st.tuples(anything, st.none()), st.tuples(st.none(), anything),
    st.tuples(numbers, numbers), st.tuples(st.none(), datetimes),
    st.tuples(st.floats(min_value=0, max_value=MAX_ETA - NOW) | st.timedeltas(min_value=dt.timedelta(0)),
              st.none()))


def test_delay_timing_any_value(wheel: TimeWheel) -> None:
    f = wheel.tasks["f"]

    @settings(max_examples=examples(150))
    @edges(lambda v: ((v, None), False), lambda v: ((None, v), True))
    @given(timing, st.booleans())
    def prop(t: tuple[Any, Any], use_schedule: bool) -> None:
        tally("api: delay/schedule timing")
        count_down, eta = t
        want, words = expected_eta(count_down, eta)
        if use_schedule:
            got, exc = attempt(wheel, lambda: f.schedule((1,), count_down=count_down, eta=eta))
        else:
            got, exc = attempt(wheel, lambda: f.delay(1, count_down=count_down, eta=eta))
        if want is None:
            assert exc is not None, f"count_down={count_down!r} eta={eta!r} accepted: {got.record}"
            refused(exc, *words)
            return
        assert exc is None, f"count_down={count_down!r} eta={eta!r} refused: {exc!r}"
        rec = got.record
        assert rec.status == PENDING and rec.eta == pytest.approx(want, abs=1e-6)
        assert wheel.store.wheel.due_tick(rec.eta) >= 0

    prop()


@pytest.mark.parametrize("count_down", [1e300, 1e21, 1e12, MAX_ETA - NOW + 1, 10 ** 400],
                         ids=["1e300", "1e21", "1e12", "year10000", "10**400"])
def test_huge_count_down_is_refused_at_once_like_a_late_eta(wheel: TimeWheel, count_down: Any) -> None:
    """Issue 12 item 1: 1e300 spun forever, 1e21 raised OverflowError from SQLite, 1e12 was
    stored as due in the year 33715 while eta= refused anything after 9999."""
    f = wheel.tasks["f"]
    t0 = time.monotonic()
    _, exc = attempt(wheel, lambda: f.delay(1, count_down=count_down))
    assert time.monotonic() - t0 < 0.5
    refused(exc, "count_down")
    assert "9999" in str(exc) or "<=" in str(exc)
    when = count_down if isinstance(count_down, int) else NOW + count_down
    _, late = attempt(wheel, lambda: f.delay(1, eta=when))
    refused(late, "eta")
    ok, exc = attempt(wheel, lambda: f.delay(1, count_down=MAX_ETA - NOW))    # the last second
    assert exc is None and ok.record.eta == MAX_ETA


# -- ids and names ----------------------------------------------------------------------------

ids = st.one_of(st.text(max_size=210), st.text(alphabet=st.characters(codec="utf-8"), min_size=190,
                                                    max_size=205),
                st.sampled_from(["", " a", "a ", "a\nb", "a\0b", "\ud800", "\x1b]0;pwn\x07", "é",
                                 "t:x", "%", "x" * 200, "x" * 201]),
                st.integers(), st.binary(max_size=5), st.none(), st.lists(st.text(max_size=2), max_size=2))


def valid_label(v: Any, limit: int) -> bool:
    return isinstance(v, str) and 0 < len(v) <= limit and v.isprintable() and v == v.strip()


def readable(text: str) -> None:
    """A message an operator's terminal can show: encodable, no control characters."""
    text.encode("utf-8")
    assert all(c.isprintable() or c == " " for c in text), repr(text)


def test_task_ids_any_value(wheel: TimeWheel) -> None:
    f = wheel.tasks["f"]

    @settings(max_examples=examples(150))
    @given(ids)
    def prop(task_id: Any) -> None:
        tally("api: task_id and get/cancel/retry ids")
        stored_before = isinstance(task_id, str) and valid_label(task_id, 200) and \
            wheel.store.get(task_id) is not None
        got, exc = attempt(wheel, lambda: f.delay(1, task_id=task_id))
        if task_id is not None and not valid_label(task_id, 200):
            refused(exc, "task_id")
        else:
            assert exc is None, repr(exc)
            if task_id is not None:
                assert got.id == task_id and wheel.store.get(task_id) is not None
                if not stored_before:
                    assert wheel.cancel(task_id) is True
                    assert wheel.cancel(task_id) is False
                    assert wheel.retry(task_id) is True
                    assert wheel.get(task_id).status == PENDING
        # the lookups take any value: a str is looked up (not found: TaskNotFound or False),
        # anything else is a TypeError naming task_id; none of them writes when refused
        for lookup in (wheel.get, wheel.cancel, wheel.retry):
            out, exc = attempt(wheel, functools.partial(lookup, task_id))
            if not isinstance(task_id, str):
                refused(exc, "task_id")
            elif isinstance(exc, TaskNotFound):
                assert lookup == wheel.get
                readable(str(exc))
            else:
                assert exc is None, f"{lookup.__name__}({task_id!r}): {exc!r}"
                if lookup == wheel.get:
                    assert out.id == task_id
                else:
                    assert out is False or wheel.store.get(task_id) is not None

    prop()


def test_task_names_and_options_any_value(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "never.db"), clock=lambda: NOW)
    options = st.fixed_dictionaries({}, optional={
        "name": ids, "retries": anything | st.integers(0, 1000), "retry_delay": anything,
        "misfire_grace": anything, "timeout": anything})
    serial = iter(range(10 ** 9))

    @settings(max_examples=examples(300))
    @edges(*[lambda v, k=k: ({k: v},) for k in ("retries", "retry_delay", "misfire_grace", "timeout")])
    @given(options)
    def prop(opts: dict[str, Any]) -> None:
        tally("api: @hu.task options and names")
        n = next(serial)

        def fn() -> None:
            pass
        fn.__qualname__ = f"fn{n}"       # each example registers a function of its own name

        problems = []
        if "name" in opts and opts["name"] is not None and not valid_label(opts["name"], 500):
            problems.append("name")
        r = opts.get("retries", 0)
        if not (is_number(r) and isinstance(r, int) and 0 <= r <= 1000):
            problems.append("retries")
        d = as_seconds(opts.get("retry_delay", 1.0))
        if d is None or not 0 <= d <= 86400:
            problems.append("retry_delay")
        for key, low in (("misfire_grace", 0.0), ("timeout", 0.001)):
            v = opts.get(key)
            if v is not None and not (as_seconds(v) is not None and low <= as_seconds(v) <= MAX_ETA):
                problems.append(key)
        try:
            with bounded():
                t = hu.task(**opts)(fn)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert problems, f"{opts!r} refused: {exc!r}"
            refused(exc, *[("task name" if p == "name" else p) for p in problems])
        else:
            assert not problems, f"{opts!r} accepted (bad: {problems})"
            if opts.get("name") is not None:
                assert t.name == opts["name"]
                hu._registry.pop(t.name)       # the next example may reuse the name
        assert hu._store is None and os.listdir(tmp_path) == []     # registering writes nothing

    prop()


def test_empty_task_name_is_refused(tmp_path) -> None:
    """Issue 12 item 12: hu.task(name="") silently used the default name."""
    hu = TimeWheel(None)
    with pytest.raises(ValueError, match="task name"):
        hu.task(name="")(lambda: None)
    assert hu.tasks == {}


# -- schedule() arguments ---------------------------------------------------------------------

def test_schedule_arguments_any_value(wheel: TimeWheel) -> None:
    f = wheel.tasks["f"]
    values = st.recursive(st.none() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
                          lambda c: st.lists(c, max_size=3) | st.tuples(c, c), max_leaves=6)
    args = st.one_of(st.lists(values, max_size=3), st.tuples(values), anything,
                     st.sampled_from(["ab", b"ab", {"a": 1}, range(2)]))
    kwargs = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=2),
                       st.dictionaries(st.integers(), values, max_size=1), anything)
    extra = st.fixed_dictionaries({}, optional={"misfire_grace": anything, "replace": st.booleans(),
                                                "once": st.booleans(), "task_id": st.just("sched")})

    @settings(max_examples=examples(200))
    @given(args, kwargs, extra)
    def prop(a: Any, kw: Any, opts: dict[str, Any]) -> None:
        tally("api: schedule args/kwargs/options")
        got, exc = attempt(wheel, lambda: f.schedule(a, kw, **opts))
        if not isinstance(a, (tuple, list)):
            refused(exc, "args")
            return
        if kw is not None and not isinstance(kw, dict):
            refused(exc, "kwargs")
            return
        if exc is not None:
            refused(exc, "f:", "misfire_grace", "replace", "once", "kwargs", "task sched")
            return
        stored_args, stored_kwargs = pickle.loads(got.record.payload)
        if not (opts.get("once") or (opts.get("task_id") and not opts.get("replace"))):
            assert stored_args == tuple(a) and stored_kwargs == (kw or {})

    prop()


def test_schedule_refuses_a_string_of_arguments(wheel: TimeWheel) -> None:
    """Issue 12 item 12: schedule("ab") turned the string into arguments ('a', 'b')."""
    _, exc = attempt(wheel, lambda: wheel.tasks["f"].schedule("ab"))
    refused(exc, "args")


def test_unpicklable_and_oversized_arguments_write_nothing(wheel: TimeWheel) -> None:
    f = wheel.tasks["f"]
    for bad in (lambda: None, threading.Lock(), (i for i in range(3)), b"x" * (9 * 1024 * 1024)):
        _, exc = attempt(wheel, functools.partial(f.delay, bad))
        refused(exc, "f:")


# -- TimeWheel(...) options -------------------------------------------------------------------

OPTION_RULES: dict[str, Callable[[Any], bool]] = {
    "workers": lambda v: is_number(v) and isinstance(v, int) and 1 <= v <= 1024,
    "tick": lambda v: is_number(v) and as_seconds(v) is not None and 0.001 <= v <= 86400,
    "slots": lambda v: is_number(v) and isinstance(v, int) and 1 <= v <= 999_999,
    "result_ttl": lambda v: is_number(v) and as_seconds(v) is not None and 0 <= v <= MAX_ETA,
    "misfire_grace": lambda v: v is None or (as_seconds(v) is not None and 0 <= as_seconds(v) <= MAX_ETA),
    "timeout": lambda v: v is None or (as_seconds(v) is not None and 0.001 <= as_seconds(v) <= MAX_ETA),
    "busy_timeout": lambda v: is_number(v) and as_seconds(v) is not None and 0 <= v <= 86400,
    "max_crashes": lambda v: is_number(v) and isinstance(v, int) and v >= 1,
    "lookahead": lambda v: is_number(v) and isinstance(v, int) and 1 <= v <= 3600,
    "exit_grace": lambda v: is_number(v) and as_seconds(v) is not None and 0 <= v <= 86400,
    "namespace": lambda v: valid_label(v, 100),
    "immediate": lambda v: isinstance(v, bool),
    "clock": callable,
}


def test_timewheel_options_any_value(tmp_path) -> None:
    valid = {"workers": st.integers(1, 1024), "tick": st.floats(0.001, 86400),
             "slots": st.integers(1, 999_999), "lookahead": st.integers(1, 3600),
             "namespace": st.text(min_size=1, max_size=100)}
    option = st.one_of(anything, st.sampled_from([time.time, print]))
    opts = st.fixed_dictionaries({}, optional={k: (valid[k] | option) if k in valid else option
                                               for k in OPTION_RULES})

    @settings(max_examples=examples(300))
    @edges(*[lambda v, k=k: ({k: v},) for k in OPTION_RULES if k not in ("namespace", "clock")])
    @given(opts)
    def prop(options: dict[str, Any]) -> None:
        tally("api: TimeWheel options")
        bad = [k for k, v in options.items() if not OPTION_RULES[k](v)]
        try:
            with bounded():
                hu = TimeWheel(str(tmp_path / "opts.db"), **options)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert bad, f"{options!r} refused: {exc!r}"
            refused(exc, *bad)
        else:
            assert not bad, f"{options!r} accepted (bad: {bad})"
            assert hu.stop() == (0, 0, 0)   # issue 12 item 12: stop() on a never-opened store
        assert os.listdir(tmp_path) == []      # the store opens lazily: nothing was created

    prop()


def test_stop_on_a_wheel_whose_store_never_opened(tmp_path) -> None:
    """Issue 12 item 12: stop() raised when the store had never been opened."""
    hu = TimeWheel(str(tmp_path / "never.db"))
    assert hu.stop() == (0, 0, 0) and hu.stop(wait=False, timeout=0) == (0, 0, 0)
    hu.close()
    assert os.listdir(tmp_path) == []


def test_store_geometry_round_trips(tmp_path) -> None:
    """Any tick and slots the API accepts are stored and read back exactly: the wheel reopens
    without StoreMismatch, and a task at the last second of year 9999 is placed and found."""
    serial = iter(range(10 ** 9))

    @settings(max_examples=examples(25))
    @given(st.floats(0.001, 86400) | st.sampled_from([0.001, 0.1, 0.3, 1 / 3, 86400.0]),
           st.integers(1, 999_999))
    def prop(tick: float, slots: int) -> None:
        tally("api: store geometry (tick, slots)")
        path = str(tmp_path / f"g{next(serial)}.db")
        with bounded():
            hu = TimeWheel(path, tick=tick, slots=slots, clock=lambda: NOW)
            h = hu.task(name="f")(lambda: None).delay(eta=MAX_ETA)
            hu.close()
            again = TimeWheel(path, tick=tick, slots=slots)
            assert again.get(h.id).record.eta == MAX_ETA
            assert again.store.ticks() == [(again.wheel.due_tick(MAX_ETA), 1)]
            again.close()

    prop()


# -- store paths ------------------------------------------------------------------------------

names = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
            min_size=1, max_size=40),
    st.sampled_from(["q?x=1.db", "h#a.db", "p%20.db", "sp ace.db", "new\nline.db", "file:x.db",
                     "x?mode=ro", "a&b=c", ".", "..", "é.db", "x" * 300, "\udcff.db", "-wal"]))


def test_store_paths_any_name(tmp_path) -> None:
    """A path is a plain file name: '?', '#', '%' and the like are not URI syntax; a name that
    cannot be a store is a clear error, never a traceback; the file is private (0600)."""
    serial = iter(range(10 ** 9))

    @settings(max_examples=examples(40))
    @given(names)
    def prop(name: str) -> None:
        tally("api: store paths")
        d = tmp_path / f"d{next(serial)}"
        d.mkdir()
        path = os.path.join(str(d), name)
        try:
            with bounded():
                hu = TimeWheel(path, clock=lambda: NOW)
                h = hu.task(name="f")(lambda: None).delay()
        except Hang:
            raise
        except (StoreError, ValueError) as exc:
            assert "\n" not in str(exc).replace(name, "")
            assert name in (".", "..") or len(os.fsencode(name)) > 255 or "\udcff" in name, repr(exc)
            return
        try:
            real = os.path.realpath(path)
            assert os.path.isfile(real), os.listdir(d)
            assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
            ro = SqliteDictStore(real, readonly=True)
            assert ro.get(h.id) is not None
            ro.close()
        finally:
            hu.close()

    prop()


def test_uri_characters_in_a_path_open_a_plain_file(tmp_path) -> None:
    """Issue 12 item 12: paths with '?' and '#' must be files of exactly that name."""
    for name in ("q?mode=memory&cache=shared", "h#frag.db", "p%3F.db"):
        path = str(tmp_path / name)
        hu = TimeWheel(path)
        h = hu.task(name="f")(lambda: None).delay()
        hu.close()
        assert os.path.isfile(path)
        again = TimeWheel(path)
        assert again.get(h.id).status == PENDING
        again.close()
    assert sorted(p for p in os.listdir(tmp_path) if not p.endswith((".lock", "-wal", "-shm"))) == \
        sorted(["q?mode=memory&cache=shared", "h#frag.db", "p%3F.db"])


def _digest(path: str) -> bytes:
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).digest()


def test_foreign_sqlite_file_with_our_table_name_is_refused(tmp_path) -> None:
    """Issue 12 item 12: a file whose only table happens to be timewheel(key, value), with
    rows, is someone else's: refused, and not a byte of it changes."""
    path = str(tmp_path / "foreign.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE timewheel (key TEXT PRIMARY KEY, value BLOB)")
    con.execute("INSERT INTO timewheel VALUES ('user:1', 'alice')")
    con.commit()
    con.close()
    before = _digest(path)
    hu = TimeWheel(path)
    with pytest.raises(NotAStore, match="not a timewheel store"):
        hu.task(name="f")(lambda: None).delay()
    with pytest.raises(NotAStore):
        hu.start()
    assert not hu.running
    hu.close()
    assert _digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["foreign.db"]


def test_empty_file_adopted_with_0644_becomes_private(tmp_path) -> None:
    """Issue 12 item 6: `touch tasks.db` under umask 022 gave a store readable by all."""
    path = str(tmp_path / "tasks.db")
    old = os.umask(0o022)
    try:
        open(path, "w").close()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        hu = TimeWheel(path, workers=1)
        hu.task(name="f")(lambda: None).delay()
        hu.start()
        for suffix in ("", "-wal", "-shm", ".lock"):     # all exist while the wheel runs
            assert stat.S_IMODE(os.stat(path + suffix).st_mode) == 0o600, suffix
        hu.close()
    finally:
        os.umask(old)


# -- waiting and stopping ---------------------------------------------------------------------

def test_result_timeout_any_value(tmp_path) -> None:
    hu = TimeWheel(None, clock=lambda: NOW)
    f = hu.task(name="f")(lambda: 42)
    pending = f.delay(count_down=3600)                # never runs: the wheel is not started
    done = TimeWheel(None, immediate=True).task(name="g")(lambda: 7).delay()

    @settings(max_examples=examples(150))
    @edges(lambda v: (v, False), lambda v: (v, True))
    @given(anything | st.floats(0, 0.02), st.booleans())
    def prop(timeout: Any, use_async: bool) -> None:
        tally("api: result/aresult(timeout=)")
        s = as_seconds(timeout)
        ok = timeout is None or (s is not None and 0 <= s <= MAX_ETA)

        def wait(h: Any) -> Any:
            if use_async:
                return asyncio.run(h.aresult(timeout=timeout))
            return h.result(timeout=timeout)
        try:
            with bounded():
                assert wait(done) == 7          # finished: any accepted timeout returns at once
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert not ok, f"result(timeout={timeout!r}) refused: {exc!r}"
            refused(exc, "timeout")
            return
        assert ok, f"result(timeout={timeout!r}) accepted"
        if timeout is None or s > 0.02:
            return                                # waiting that long on a pending task: skip
        t0 = time.monotonic()
        with bounded(), pytest.raises(TimeoutError):
            wait(pending)
        assert time.monotonic() - t0 < s + 1.0

    prop()


def test_stop_timeout_any_value(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "never.db"))

    @settings(max_examples=examples(100))
    @edges(lambda v: (v, True))
    @given(anything, st.booleans())
    def prop(timeout: Any, wait: bool) -> None:
        tally("api: stop(timeout=)")
        s = as_seconds(timeout)
        ok = timeout is None or (s is not None and 0 <= s <= 86400 * 365)
        try:
            with bounded():
                assert hu.stop(wait=wait, timeout=timeout) == (0, 0, 0)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert not ok, f"stop(timeout={timeout!r}) refused: {exc!r}"
            refused(exc, "timeout")
        else:
            assert ok, f"stop(timeout={timeout!r}) accepted"
        assert os.listdir(tmp_path) == []

    prop()


def test_periodic_every_any_value(tmp_path) -> None:
    hu = TimeWheel(str(tmp_path / "never.db"), clock=lambda: NOW)
    serial = iter(range(10 ** 9))

    @settings(max_examples=examples(100))
    @edges(lambda v: (v,))
    @given(anything)
    def prop(every: Any) -> None:
        tally("api: periodic(every=)")
        s = as_seconds(every)
        ok = s is not None and 0.001 <= s and (math.floor(NOW / s) + 1) * s <= MAX_ETA

        def fn() -> None:
            pass
        fn.__qualname__ = f"p{next(serial)}"
        try:
            with bounded():
                hu.periodic(every=every)(fn)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert not ok, f"every={every!r} refused: {exc!r}"
            refused(exc, "every", "schedule")
        else:
            assert ok, f"every={every!r} accepted"
        assert os.listdir(tmp_path) == []

    prop()


def test_periodic_cron_and_tz_any_value(tmp_path) -> None:
    """cron= and tz= from hostile text: a schedule, or a clear error, quickly (croniter is
    given expressions that never fire, fields out of range, garbage)."""
    hu = TimeWheel(str(tmp_path / "never.db"), clock=lambda: NOW)
    serial = iter(range(10 ** 9))
    fields = st.text(alphabet="0123456789*/-,LW#?", min_size=1, max_size=6)
    crons = st.one_of(st.lists(fields, min_size=1, max_size=7).map(" ".join), st.text(max_size=20),
                      st.sampled_from(["0 0 31 2 *", "0 0 30 2 *", "@yearly", "@reboot", "* * * * * *",
                                       "0 0 29 2 *", "59 23 31 12 * 9999"]), anything)
    zones = st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Berlin", "Etc/GMT+14", "Mars/Phobos",
                                                  "", "../../etc/passwd", "UTC\0"]), anything)

    @settings(max_examples=examples(150))
    @given(crons, zones)
    def prop(cron: Any, tz: Any) -> None:
        tally("api: periodic(cron=, tz=)")
        try:
            with bounded():
                hu.periodic(cron=cron, tz=tz, name=f"c{next(serial)}")(lambda: None)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            refused(exc, "cron", "tz", "time zone", "schedule", "give every= or cron=")
        assert os.listdir(tmp_path) == []

    prop()


def test_hooks_any_event(tmp_path) -> None:
    hu = TimeWheel(None)

    @settings(max_examples=examples(100))
    @example(10 ** 5000, None)       # issue 19 item 4: formatting the bad value raised ValueError
    @given(anything | st.sampled_from(["started", "succeeded", "failed", "retrying", "misfired",
                                       "Failed", " failed"]), anything | st.just(print))
    def prop(event: Any, fn: Any) -> None:
        tally("api: hu.on(event, fn)")
        try:
            with bounded():
                hu.on(event, fn)
        except Hang:
            raise
        except Exception as exc:  # noqa: BLE001
            assert event not in EVENTS or not (fn is None or callable(fn)), f"on({event!r}, {fn!r}): {exc!r}"
            refused(exc, "event", "hook")
        else:       # (fn None: the decorator form)
            assert event in EVENTS and (fn is None or callable(fn))

    prop()


# The Decimal and Fraction types are numbers to a human but not to the API: they must be
# refused with a clear TypeError, never half-converted.
@pytest.mark.parametrize("value", [decimal.Decimal("1.5"), fractions.Fraction(3, 2)])
def test_number_like_types_are_refused_clearly(wheel: TimeWheel, value: Any) -> None:
    _, exc = attempt(wheel, lambda: wheel.tasks["f"].delay(count_down=value))
    refused(exc, "count_down")
