"""``TimeWheel(serializer="json")`` (issue 26): arguments and results as JSON with a documented
encoding of datetimes, UUIDs, Decimals and bytes; what JSON cannot hold raises TypeError from
delay() with nothing written; the store keeps one serializer; a JSON wheel never unpickles what
it finds in the store; the CLI shows JSON arguments without the safe unpickler."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import pickle
import re
import sys
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel import StoreMismatch, TaskFailed, TimeWheel
from timewheel.records import FAILED, SUCCEEDED, TaskRecord
from timewheel.serialize import dumps_call, dumps_result, loads_call, loads_result
from timewheel.testing import processes as procs

from .conftest import wait_for

UTC = dt.timezone.utc
ODD = [dt.datetime(2026, 12, 7, 9, 14, 2, 500_000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
       dt.datetime(1999, 1, 1), dt.date(2026, 2, 28), dt.time(23, 59, 59, 1),
       dt.timedelta(days=2, seconds=1.5), uuid.UUID("6f1c2b1e-0000-4000-8000-00000000abcd"),
       decimal.Decimal("12.50"), decimal.Decimal("-1E+3"),
       b"\x00\xff binary", b"", {"$uuid": "not a tag: a dict with a $ key"}, {"$dict": 1}]

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | st.binary(max_size=20)
    | st.uuids() | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.none() | st.just(UTC)) | st.dates() | st.times(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


def as_lists(v):
    """What a value comes back as: tuples become lists."""
    if isinstance(v, (list, tuple)):
        return [as_lists(x) for x in v]
    if isinstance(v, dict):
        return {k: as_lists(x) for k, x in v.items()}
    return v


@given(st.lists(plain, max_size=4), st.dictionaries(st.text(max_size=5), plain, max_size=4))
def test_values_round_trip(args, kwargs) -> None:
    blob = dumps_call(tuple(args), kwargs)
    assert blob[:1] == b"{" and loads_call(blob) == (as_lists(args), as_lists(kwargs))
    assert loads_result(dumps_result(args)) == as_lists(args)


def test_the_documented_encoding() -> None:
    blob = dumps_call(tuple(ODD), {"when": ODD[0]})
    doc = json.loads(blob)
    assert doc["args"][:9] == [
        {"$datetime": "2026-12-07T09:14:02.500000+01:00"}, {"$datetime": "1999-01-01T00:00:00"},
        {"$date": "2026-02-28"}, {"$time": "23:59:59.000001"}, {"$timedelta": 172801.5},
        {"$uuid": "6f1c2b1e-0000-4000-8000-00000000abcd"}, {"$decimal": "12.50"}, {"$decimal": "-1E+3"},
        {"$bytes": "AP8gYmluYXJ5"}]
    assert doc["args"][10:] == [{"$dict": {"$uuid": "not a tag: a dict with a $ key"}},
                                {"$dict": {"$dict": 1}}]
    assert loads_call(blob) == (ODD, {"when": ODD[0]})


@pytest.mark.parametrize("value, where", [
    ({1, 2}, "argument[0] is a builtins.set"), (object(), "argument[0] is a builtins.object"),
    (math.nan, "argument[0] is nan"), ([1, {2: "x"}], "argument[0][1] has the key 2"),
    (dt.datetime.now().astimezone().tzinfo, "argument[0] is a datetime.timezone"),
])
def test_what_json_cannot_hold_is_named(value, where) -> None:
    with pytest.raises(TypeError, match="^" + re.escape(where)):
        dumps_call((value,), {})


@pytest.mark.parametrize("blob", [b"{", b'{"args": 1}', b'{"args": [], "x": 1}', b'{"kwargs": {}}',
                                  b'{"args": [{"$uuid": "bad"}]}', b'{"args": [{"$bytes": "!!"}]}',
                                  b'{"args": [{"$decimal": 3}]}', b"{\xff}"])
def test_a_bad_payload_is_a_value_error(blob) -> None:
    with pytest.raises(ValueError):
        loads_call(blob)


# -- a JSON wheel on every backend ----------------------------------------------------------------



def json_wheel(location, **kw) -> TimeWheel:
    hu = TimeWheel(location, tick=0.1, slots=600, serializer="json", **kw)

    @hu.task(name="j.echo")
    def echo(*args, **kwargs):
        return {"args": args, "kwargs": kwargs}

    return hu


def test_a_json_wheel_runs_tasks_with_its_values_on_every_backend(location) -> None:
    hu = json_wheel(location)
    echo = hu.tasks["j.echo"]
    hu.start()
    try:
        h = echo.delay(*ODD, n=(1, 2), nested={"a": [ODD[5]]})
        assert h.result(timeout=30) == {"args": ODD, "kwargs": {"n": [1, 2], "nested": {"a": [ODD[5]]}}}
        assert h.record.payload[:1] == b"{" and h.record.result[:1] == b"{"
        before = hu.store.counts()
        for bad in ({1}, math.inf, object()):
            with pytest.raises(TypeError, match="j.echo: arguments cannot be serialised with JSON"):
                echo.delay(bad)
        with pytest.raises(TypeError), hu.batch():
            echo.delay(1)
            echo.delay({2})                                   # the whole batch: nothing written
        assert hu.store.counts() == before
    finally:
        hu.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def stored(request, db_path):
    """A store that outlives its wheel (a memory store has one wheel: nothing to agree on)."""
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("redis_db" if request.param == "redis" else "pg_db")


def test_a_store_keeps_one_serializer(stored) -> None:
    location = stored
    first = TimeWheel(location, tick=0.1, slots=600)
    first.task(name="p")(lambda: None).delay(count_down=60)
    first.close()
    with pytest.raises(StoreMismatch, match="serializer='pickle'; a wheel with serializer='json'"):
        json_wheel(location).now()
    # another store, empty: it takes json, and then refuses pickle
    other, ns = (location + "2", "timewheel") if location.endswith(".db") else (location, "other")
    json_wheel(other, namespace=ns).tasks["j.echo"].delay(1, count_down=60)
    with pytest.raises(StoreMismatch, match="serializer='json'; a wheel with serializer='pickle'"):
        TimeWheel(other, tick=0.1, slots=600, namespace=ns).now()


class Planted:
    """Unpickling it would create a file: what a hostile pickle in the store could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_json_wheel_never_unpickles_what_it_finds_in_the_store(tmp_path, db_path) -> None:
    hu = json_wheel(db_path)
    trap = str(tmp_path / "ran")
    now = hu.now()
    hu.store.add([TaskRecord(id="planted", name="j.echo", eta=now - 1, created=now,
                             payload=pickle.dumps(((Planted(trap),), {}))),
                  TaskRecord(id="done", name="j.echo", eta=now + 3600, created=now, status=SUCCEEDED,
                             payload=dumps_call((), {}), result=pickle.dumps(Planted(trap)))])
    hu.start()
    try:
        wait_for(lambda: hu.get("planted").status == FAILED, timeout=30)
        assert "its arguments are a pickle; a serializer='json' wheel runs only JSON payloads" in \
            hu.get("planted").record.error
        with pytest.raises(TaskFailed, match="its result is a pickle"):
            hu.get("done").result(timeout=1)
    finally:
        hu.close()
    assert not os.path.exists(trap)


def test_the_cli_shows_json_arguments(db_path) -> None:
    hu = json_wheel(db_path)
    h = hu.tasks["j.echo"].delay(ODD[5], ODD[6], b"hi", count_down=600, when=ODD[0])
    hu.close()
    done = procs.run([sys.executable, "-m", "timewheel.cli", "show", db_path, h.id, "--json"],
                     capture_output=True, text=True, timeout=60)
    shown = json.loads(done.stdout)
    assert shown["args"] == "(UUID('6f1c2b1e-0000-4000-8000-00000000abcd'), Decimal('12.50'), b'hi')"
    assert shown["kwargs"] == ("{'when': datetime.datetime(2026, 12, 7, 9, 14, 2, 500000, "
                               "tzinfo=datetime.timezone(datetime.timedelta(seconds=3600)))}")


def test_on_postgresql_the_payload_is_json_any_tool_reads(pg_db, pg_server) -> None:
    hu = json_wheel(pg_db)
    h = hu.tasks["j.echo"].delay(ODD[6], count_down=600, when=ODD[2])
    hu.close()
    (doc,), = pg_server.sql("SELECT convert_from(payload, 'UTF8')::jsonb FROM timewheel.tasks "
                            f"WHERE id = '{h.id}'")
    assert doc == {"args": [{"$decimal": "12.50"}], "kwargs": {"when": {"$date": "2026-02-28"}}}


# -- hostile JSON: whatever a store holds, showing it or running it never raises -------------------

json_text = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                         lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.sampled_from(["args", "kwargs", "result", "$uuid", "$bytes",
                                                            "$decimal", "$datetime", "$dict", "$timedelta",
                                                            "x"]), inner, max_size=3),
                         max_leaves=12).map(lambda v: json.dumps(v).encode())


@given(st.one_of(json_text, st.binary(max_size=200).map(lambda b: b"{" + b)))
def test_showing_any_json_blob_never_raises(blob) -> None:
    from timewheel import decode
    for shown in (*decode.show_call(blob), decode.show_value(blob)):
        assert (shown.text is None) != (shown.error is None)
        assert shown.text is None or len(shown.text) <= decode.LIMITS.chars + 200


@given(st.one_of(json_text, st.binary(max_size=200).map(lambda b: b"{" + b)))
def test_running_any_json_payload_never_raises(blob) -> None:
    from timewheel.execute import execute
    hu = json_wheel(None)
    rec = TaskRecord(id="x", name="j.echo", eta=0.0, payload=blob, attempts=1)
    out = execute(hu._registry, rec, lambda: 1.0)          # returns: never raises
    try:
        loads_call(blob)
    except ValueError:
        assert not out.ok and not out.retryable and out.error.startswith("cannot decode its arguments")
    else:
        assert out.ok, out.error                           # echo takes any arguments


# -- malformed JSON written straight into the store, under a running JSON wheel, on every backend ---

MALFORMED = {                           # a payload another tool could get wrong, and why it is refused
    "cut": b'{"args": [1, 2',
    "not-utf8": b'{"args": ["\xff"]}',
    "args-not-a-list": b'{"args": {"a": 1}}',
    "no-args": b'{"kwargs": {}}',
    "kwargs-a-list": b'{"args": [], "kwargs": [1]}',
    "unknown-key": b'{"args": [], "when": 3}',
    "bad-uuid": b'{"args": [{"$uuid": "not a uuid"}]}',
    "bad-bytes": b'{"args": [{"$bytes": "***"}]}',
    "decimal-number": b'{"args": [{"$decimal": 3}]}',
    "trace-not-text": b'{"args": [], "trace": {"traceparent": 1}}',
    "deep": b'{"args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def test_malformed_json_in_the_store_fails_its_task_and_a_wrecked_record_is_set_aside(
        backend, request, corrupt) -> None:
    """Whatever JSON lands in the store: a payload the wheel cannot decode fails its task at once
    (attempt 1, not retried although it may retry) with the reason; a record that is not a
    record at all is set aside as broken; every good task around them runs exactly once; the
    wheel keeps running (no crash, no loop), and a task enqueued after them runs too."""
    location = {"memory": None, "sqlite": str(request.getfixturevalue("tmp_path") / "j.db"),
                "redis": request.getfixturevalue("redis_db") if backend == "redis" else None,
                "postgres": request.getfixturevalue("pg_db") if backend == "postgres" else None}[backend]
    hu = json_wheel(location)
    runs: list = []
    hu.task(name="j.count")(lambda n: runs.append(n))
    now = hu.now()
    good = [TaskRecord(id=f"good{i}", name="j.count", eta=now - 1 + i / 10, created=now,
                       payload=dumps_call((i,), {})) for i in range(5)]
    bad = [TaskRecord(id=f"bad-{k}", name="j.count", eta=now - 1, created=now, payload=v, retries=3,
                      retry_delay=0.01) for k, v in MALFORMED.items()]
    hu.store.add(good + bad + [TaskRecord(id="wreck", name="j.count", eta=now - 1, created=now,
                                          payload=dumps_call((99,), {}))])
    corrupt(hu.store, "wreck")
    hu.start()
    try:
        wait_for(lambda: all(hu.get(r.id).status == FAILED for r in bad)
                 and all(hu.get(r.id).status == SUCCEEDED for r in good), timeout=30)
        for r in bad:
            failed = hu.get(r.id).record
            assert failed.attempts == 1 and failed.error.startswith("cannot decode its arguments"), \
                (r.id, failed.error)
        wait_for(lambda: [b.id for b in hu.store.scan("broken")] == ["wreck"], timeout=30)
        (wreck,) = hu.store.scan("broken")
        assert "not a timewheel record" in wreck.error or "version" in wreck.error, wreck.error
        assert hu.tasks["j.count"].delay(7).result(timeout=30) is None
        assert sorted(runs) == [0, 1, 2, 3, 4, 7]                  # exactly once each; 99 never
        counts = hu.store.counts()
        assert sum(n for (s, _), n in counts.items() if s == "broken") == 1
        assert sum(n for (s, _), n in counts.items() if s == FAILED) == len(MALFORMED)
    finally:
        hu.close()
