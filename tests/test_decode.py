"""timewheel.decode: pickles shown without importing or running anything, within bounds."""

from __future__ import annotations

import collections
import datetime
import decimal
import os
import pickle
import resource
import struct
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timewheel.decode import FULL, LIMITS, Limits, show_call, show_value

from .cli_fixtures import Account, Evil


class Reduce:
    """Pickles as ``fn(*args)``: how a hostile payload names any callable."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> Any:
        return (self.fn, self.args)


class Slotted:
    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


def shown(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL, limits: Limits = LIMITS) -> str:
    s = show_value(pickle.dumps(value, protocol=protocol), limits)
    assert s is not None and s.error is None, s
    return s.text


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_read_as_their_repr(protocol: int) -> None:
    values = [None, True, 7, -2 ** 70, 1.5, "text", b"\x00b", [1, [2]], (1,), (), {"a": (1, 2)},
              {1, 2}, frozenset({3}), set(), datetime.datetime(2024, 5, 1, 12, 0),
              datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc), datetime.date(2020, 1, 2),
              datetime.time(3, 4), datetime.timedelta(seconds=5), uuid.UUID(int=5), decimal.Decimal("1.5"),
              1 + 2j]
    for value in values:
        assert shown(value, protocol) == repr(value), (protocol, value)


def test_application_objects_become_placeholders_and_nothing_is_imported_or_run(tmp_path) -> None:
    assert shown(Account("ann")) == "<tests.cli_fixtures.Account name='ann'>"
    assert shown(Account("ann"), 0) == "<tests.cli_fixtures.Account name='ann'>"
    assert shown(Slotted()) == "<tests.test_decode.Slotted a=1>"
    assert shown(os.path.join) == "posixpath.join"
    assert shown(Account) == "tests.cli_fixtures.Account"
    target = tmp_path / "pwned"
    assert shown(Evil(str(target))) == f"posix.mkdir({str(target)!r})"
    assert not target.exists()
    assert shown(collections.OrderedDict(a=1)) == "collections.OrderedDict({'a': 1})"
    assert shown(collections.deque([1, 2], 5)) == "collections.deque([1, 2], 5)"
    assert shown(range(3)) == "builtins.range(0, 3, 1)"
    assert shown(bytearray(b"ab")) == "bytearray(b'ab')"
    loop: list = [1]
    loop.append(loop)
    assert shown(loop) == "[1, [...]]"


def test_call_payloads() -> None:
    args, kwargs = show_call(pickle.dumps(((Account("ann"), "hi"), {"urgent": True})))
    assert args.text == "(<tests.cli_fixtures.Account name='ann'>, 'hi')"
    assert kwargs.text == "{'urgent': True}"
    args, _ = show_call(pickle.dumps([1, 2]))
    assert args.text is None and "unexpected payload shape" in args.error
    args, kwargs = show_call(b"\x80\x05garbage")
    assert args.text is None and args.error.startswith("cannot decode it") and kwargs.error == args.error


def _quick(blob: bytes, limits: Limits = LIMITS) -> Any:
    before = peak_rss_kb()
    t0 = time.perf_counter()
    s = show_value(blob, limits)
    took = time.perf_counter() - t0
    assert took < 1.0, took
    assert peak_rss_kb() - before < 50_000          # KiB: no allocation the size of the claim
    return s


@pytest.mark.parametrize("limits", [LIMITS, FULL], ids=["default", "full"])
def test_payloads_that_would_allocate_without_bound_are_shown_quickly(limits: Limits) -> None:
    huge_set = pickle.dumps(Reduce(set, Reduce(range, 10 ** 10)), 2)
    assert len(huge_set) < 80
    assert _quick(huge_set, limits).text == "builtins.set(builtins.range(10000000000))"
    huge_deque = pickle.dumps(Reduce(collections.deque, Reduce(range, 10 ** 10), 10 ** 10), 2)
    assert len(huge_deque) < 100
    assert _quick(huge_deque, limits).text.startswith("collections.deque(builtins.range(")
    huge_bytes = pickle.dumps(Reduce(bytearray, 10 ** 12))
    assert _quick(huge_bytes, limits).text == "builtins.bytearray(1000000000000)"
    shared: list = []
    for _ in range(50):
        shared = [shared, shared]                  # 2**50 leaves, a few hundred bytes
    blob = pickle.dumps(shared)
    assert len(blob) < 400
    s = _quick(blob, limits)
    assert s.truncated and len(s.text) <= limits.chars + 3


def test_a_dict_keyed_by_shared_tuples_is_never_hashed() -> None:
    # EMPTY_DICT, EMPTY_TUPLE, then (DUP, TUPLE2) 60 times: a key of 2**60 shared leaves,
    # whose hash pickle.loads would compute forever.  Then 1, SETITEM, STOP.
    blob = b"\x80\x04})" + b"2\x86" * 60 + b"K\x01s."
    assert len(blob) < 140
    s = _quick(blob)
    assert s.text.startswith("{((((") and s.truncated


def test_length_fields_and_digits_are_not_trusted() -> None:
    for blob in (b"\x80\x05\x8e" + struct.pack("<Q", 2 ** 62) + b"x.",          # BINBYTES8
                 b"\x80\x05\x8d" + struct.pack("<Q", 2 ** 62) + b"x.",          # BINUNICODE8
                 b"\x80\x05\x96" + struct.pack("<Q", 2 ** 40) + b"x."):         # BYTEARRAY8
        s = _quick(blob)
        assert s.text is None and s.error.startswith("cannot decode it"), s
    s = _quick(b"L" + b"9" * 1_000_000 + b"L\n.")
    assert s.text == "<int of 1000000 digits>"
    assert _quick(pickle.dumps(2 ** 100_000)).text == "<int of 100001 bits>"


def test_deep_nesting_and_long_values_say_so() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    s = show_value(pickle.dumps(deep))
    assert "nested deeper than 24 levels" in s.text and not s.truncated
    assert "1" in show_value(pickle.dumps(deep), FULL).text.replace("[", "").replace("]", "")
    long = show_value(pickle.dumps("x" * 10_000))
    assert long.truncated and len(long.text) == LIMITS.chars + 3
    many = show_value(pickle.dumps(list(range(400_000))))
    assert many.text is None and "more than 300000 pickle operations" in many.error


def test_refusals() -> None:
    class Persistent(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return "ext" if obj == "x" else None

    import io
    buf = io.BytesIO()
    Persistent(buf).dump(["x"])
    assert "persistent ids" in show_value(buf.getvalue()).error
    assert "out-of-band" in show_value(pickle.dumps(pickle.PickleBuffer(b"ab"), 5,
                                                    buffer_callback=lambda b: False)).error
    for bad in (b"", b".", b"\x80\x05", b"\xff", b"(.", b"a.", b"\x80\x05K\x01K\x02."):
        s = show_value(bad)
        assert s.text is None and s.error.startswith("cannot decode it"), bad


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    | st.frozensets(st.integers(), max_size=4),
    max_leaves=30)


SCALES = [pytest.param(1, id="ci"),
          pytest.param(10, id="x10", marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]


def _scaled(n: int, scale: int) -> settings:
    return settings(max_examples=n * scale, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("scale", SCALES)
def test_property_plain_values_match_their_repr(scale: int) -> None:
    @_scaled(300, scale)
    @given(plain, st.integers(0, pickle.HIGHEST_PROTOCOL))
    def run(value: Any, protocol: int) -> None:
        s = show_value(pickle.dumps(value, protocol=protocol), Limits(chars=10_000))
        assert s.error is None
        assert s.text == repr(value)

    run()


@pytest.mark.parametrize("scale", SCALES)
def test_property_any_bytes_are_shown_or_refused_quickly(scale: int) -> None:
    @_scaled(500, scale)
    @given(st.binary(max_size=300))
    def run(blob: bytes) -> None:
        t0 = time.perf_counter()
        s = show_value(blob)
        assert time.perf_counter() - t0 < 1.0
        assert (s.text is None) != (s.error is None)
        assert s.text is None or len(s.text) <= LIMITS.chars + 100

    run()


@pytest.mark.parametrize("scale", SCALES)
def test_property_damaged_pickles_are_shown_or_refused(scale: int) -> None:
    @_scaled(300, scale)
    @given(plain, st.data())
    def run(value: Any, data: st.DataObject) -> None:
        blob = bytearray(pickle.dumps(value))
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(1, len(blob)))
        t0 = time.perf_counter()
        s = show_value(bytes(blob[:cut]))
        assert time.perf_counter() - t0 < 1.0
        assert (s.text is None) != (s.error is None)

    run()
