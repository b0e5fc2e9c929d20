"""``serializer="json"``: task arguments and results as JSON (issue 26).

A JSON payload is the object ``{"args": [...], "kwargs": {...}}`` (plus ``"trace": {...}``, the
enqueuing OpenTelemetry context's fields, when there is one: timewheel/tracing.py), a result
``{"result": ...}``
(so a stored blob says what it is: JSON starts with ``{``, a pickle with ``\\x80``).  Values are
JSON's own -- None, bools, ints, floats (finite), strings, lists, dicts with string keys -- plus
these, each as an object of one key:

===============================  ================================================
``datetime.datetime``            ``{"$datetime": "2026-12-07T09:14:02.5+01:00"}`` (ISO 8601;
                                 naive stays naive)
``datetime.date`` / ``.time``    ``{"$date": "2026-12-07"}`` / ``{"$time": "09:14:02"}``
``datetime.timedelta``           ``{"$timedelta": 90.5}`` (seconds)
``uuid.UUID``                    ``{"$uuid": "6f1c...-..."}``
``decimal.Decimal``              ``{"$decimal": "12.50"}``
``bytes``                        ``{"$bytes": "aGk="}`` (base64)
a dict with a key starting ``$``  ``{"$dict": {...}}`` (its keys as they are)
===============================  ================================================

A tuple is written as a list and comes back as a list.  Anything else -- a set, an object, a
non-finite float, a dict key that is not a str -- raises ``TypeError`` naming it and where it
is, from ``delay()``, before anything is written.  Decoding builds only these types: reading a
JSON payload never imports or runs anything.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal
import json
import math
import uuid
from typing import Any, Callable, Optional

__all__ = ["SERIALIZERS", "check_serializer", "dumps_call", "loads_call", "loads_traced", "dumps_result",
           "loads_result", "is_json"]

SERIALIZERS = ("pickle", "json")
_SEPARATORS = (",", ":")


def check_serializer(name: Any) -> str:
    if name not in SERIALIZERS:
        raise ValueError(f"serializer must be 'pickle' or 'json', got {name!r}"[:200])
    return name


def is_json(blob: bytes) -> bool:
    """Whether a stored payload or result is JSON (a pickle starts with its protocol's opcode)."""
    return blob[:1] == b"{"


def _encode(value: Any, where: str) -> Any:
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot hold")
        return value
    if t is list or t is tuple:
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"{where} has the key {k!r}: JSON objects take str keys only"[:300])
            out[k] = _encode(v, f"{where}[{k!r}]")
        return {"$dict": out} if any(k.startswith("$") for k in out) else out
    if t is _dt.datetime:
        return {"$datetime": value.isoformat()}
    if t is _dt.date:
        return {"$date": value.isoformat()}
    if t is _dt.time:
        return {"$time": value.isoformat()}
    if t is _dt.timedelta:
        return {"$timedelta": value.total_seconds()}
    if t is uuid.UUID:
        return {"$uuid": str(value)}
    if t is decimal.Decimal:
        return {"$decimal": str(value)}
    if t is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{where} is a {t.__module__}.{t.__qualname__}, which the JSON serializer "
                    "does not encode (see docs/guide/json.md)")


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$datetime": _dt.datetime.fromisoformat, "$date": _dt.date.fromisoformat,
    "$time": _dt.time.fromisoformat, "$timedelta": lambda s: _dt.timedelta(seconds=s),
    "$uuid": uuid.UUID, "$decimal": decimal.Decimal,
    "$bytes": lambda s: base64.b64decode(s, validate=True),
}


def _decode(value: Any) -> Any:
    if type(value) is list:
        return [_decode(v) for v in value]
    if type(value) is dict:
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == "$dict" and type(inner) is dict:
                return {k: _decode(v) for k, v in inner.items()}
            make = _TAGS.get(tag)
            if make is not None and type(inner) is not (float if tag == "$timedelta" else str):
                if not (tag == "$timedelta" and type(inner) is int):
                    raise ValueError(f"{tag} holds a {type(inner).__name__}")
            if make is not None:
                try:
                    return make(inner)
                except (TypeError, ValueError, ArithmeticError, binascii.Error) as exc:
                    raise ValueError(f"{tag} holds {inner!r}"[:200] + f": {exc}") from None
        return {k: _decode(v) for k, v in value.items()}
    return value


def dumps_call(args: tuple[Any, ...], kwargs: dict[str, Any],
               trace: Optional[dict[str, str]] = None) -> bytes:
    """The payload of ``fn(*args, **kwargs)`` (with ``trace``: the trace context it carries);
    TypeError names what JSON cannot hold."""
    doc = {"args": _encode(args, "argument"), "kwargs": _encode(kwargs, "keyword argument")}
    if trace is not None:
        doc["trace"] = trace
    return json.dumps(doc, separators=_SEPARATORS, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _object(blob: bytes, key: str) -> Any:
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if type(doc) is not dict or key not in doc:
        raise ValueError(f"not a JSON {key} object")
    return doc


def loads_call(blob: bytes) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs) of a JSON payload; ValueError says what is wrong with it."""
    args, kwargs, _ = loads_traced(blob)
    return args, kwargs


def loads_traced(blob: bytes) -> tuple[list[Any], dict[str, Any], Optional[dict[str, str]]]:
    """(args, kwargs, trace context or None) of a JSON payload; ValueError says what is wrong."""
    doc = _object(blob, "args")
    trace = doc.get("trace")
    if (set(doc) - {"args", "kwargs", "trace"} or type(doc["args"]) is not list
            or type(doc.get("kwargs", {})) is not dict
            or trace is not None and not (type(trace) is dict
                                          and all(type(v) is str for v in trace.values()))):
        raise ValueError('a JSON payload is {"args": [...], "kwargs": {...}} (and "trace": {str: str})')
    try:
        args, kwargs = _decode(doc["args"]), _decode(doc.get("kwargs", {}))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if type(kwargs) is not dict:
        raise ValueError(f"its kwargs are a {type(kwargs).__name__}, not an object")
    return args, kwargs, trace


def dumps_result(value: Any) -> bytes:
    return json.dumps({"result": _encode(value, "the return value")}, separators=_SEPARATORS,
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def loads_result(blob: bytes) -> Any:
    try:
        return _decode(_object(blob, "result")["result"])
    except RecursionError:
        raise ValueError("nested too deeply") from None
