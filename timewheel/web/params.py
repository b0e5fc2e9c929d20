"""Reading the query string and form fields of a request: every bad value becomes a 400 with
one line naming the field, what it got and what it takes."""

from __future__ import annotations

import math
from typing import Iterable, Optional

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from ..text import duration as text_duration

__all__ = ["integer", "number", "choice", "text", "flag", "duration"]

#: longest text a filter field takes (a name is at most 500 characters, an id 200)
MAX_TEXT = 500

def _short(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def integer(args: MultiDict, key: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise BadRequest(f"{key} must be a whole number from {lo} to {hi}, got {_short(raw)}")
    return value


def number(args: MultiDict, key: str, default: float, lo: float, hi: float) -> float:
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo < value <= hi):
        raise BadRequest(f"{key} must be a number above {lo:g} and at most {hi:g}, got {_short(raw)}")
    return value


def choice(args: MultiDict, key: str, allowed: Iterable[str], default: Optional[str] = None) -> Optional[str]:
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    allowed = tuple(allowed)
    if raw not in allowed:
        raise BadRequest(f"{key} must be one of {', '.join(allowed)}, got {_short(raw)}")
    return raw


def choices(args: MultiDict, key: str, allowed: Iterable[str]) -> list[str]:
    allowed = tuple(allowed)
    values = [v for v in args.getlist(key) if v != ""]
    for v in values:
        if v not in allowed:
            raise BadRequest(f"{key} must be one of {', '.join(allowed)}, got {_short(v)}")
    return values


def text(args: MultiDict, key: str) -> Optional[str]:
    raw = args.get(key)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > MAX_TEXT or "\x00" in raw:
        raise BadRequest(f"{key} must be at most {MAX_TEXT} characters, without NUL")
    return raw.strip()


def flag(args: MultiDict, key: str) -> bool:
    return choice(args, key, ("0", "1", "true", "false", "yes", "no", "on", "off"), "0") in (
        "1", "true", "yes", "on")


def duration(args: MultiDict, key: str) -> float:
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w``, ``1h30m`` (as the CLI's ``--older-than``:
    :func:`timewheel.text.duration`); required."""
    raw = (args.get(key) or "").strip()
    if not raw:
        raise BadRequest(f"{key} is required: a duration such as 30s, 10m, 2h, 7d or 1h30m")
    try:
        return text_duration(raw[:60])
    except ValueError as exc:
        raise BadRequest(f"{key}: {exc}") from None
