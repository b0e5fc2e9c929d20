"""Formatting for people: lengths of time (and reading them: :func:`duration`), instants, sizes,
clipping, and making text that came from a store safe to print.

Everything a store holds may have been written by someone else: a task's name, its error
text, an owner token, the repr of its arguments.  :func:`clean` escapes every control
character and the Unicode characters that reorder text, so none of it can move the cursor,
retitle the window or hide what follows -- also when the output is piped, where click strips
its own colours but not an OSC sequence.  Used by the CLI for every cell it prints and by the
web view (whose templates escape HTML, not terminals).
"""

from __future__ import annotations

import math
import re
import time
from typing import Optional

__all__ = ["clean", "progress", "span", "duration", "relative", "local", "seconds", "size", "clip",
           "first_line", "without_password"]

# C0 and C1 controls, DEL, line/paragraph separators, and the bidirectional embeddings,
# overrides and isolates ("Trojan source"), plus the BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_UNSAFE_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                               "\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(m: "re.Match[str]") -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def clean(text: str, *, lines: bool = False) -> str:
    """``text`` with every control and reordering character shown as an escape (``\\x1b``).

    ``lines=True`` keeps newlines and tabs (a traceback); otherwise the result is one line.
    """
    return (_UNSAFE_BUT_LINES if lines else _UNSAFE).sub(_escape, text)


def span(seconds: float) -> str:
    """``3m 10s``, ``2h 5m``, ``4d 1h``: the two largest units of a length of time."""
    if not math.isfinite(seconds):
        return str(seconds)
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        q, s = divmod(s, length)
        if q or parts:
            parts.append(f"{q}{unit}")
    return " ".join(p for p in parts[:2] if not p.startswith("0"))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = r"(\d{1,12}(?:\.\d{1,9})?)([smhdw])"
MAX_DURATION = 100 * 366 * 86400.0


def duration(value: object) -> float:
    """Seconds of a length of time as people write it: ``30s``, ``10m``, ``2h``, ``7d``, ``1w``
    or combinations like ``1h30m``; a unit is required.  The CLI's ``--older-than`` and the
    web view's ``older_than`` read it.  ValueError names what is wrong (the value shown
    escaped: it came from a command line or a request)."""
    text = str(value).strip().lower()
    if not text or re.sub(_PART, "", text):
        raise ValueError(f"{clean(repr(value))} is not a duration; use e.g. 30s, 10m, 2h, 7d or 1h30m")
    total = sum(float(n) * _UNITS[u] for n, u in re.findall(_PART, text))
    if total > MAX_DURATION:
        raise ValueError(f"{clean(repr(value))} is longer than 100 years")
    return total


def relative(when: float, now: float) -> str:
    """``in 3m 10s`` / ``5s ago`` / ``now``."""
    delta = when - now
    if abs(delta) < 0.5:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def local(ts: Optional[float]) -> str:
    """``2024-05-01 12:00:00`` in local time; ``-`` for none."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError):    # a stored time no calendar can show
        return f"{ts:.0f} (unix time)"


def seconds(x: Optional[float]) -> str:
    """A short duration with sub-second precision where it matters (lateness)."""
    if x is None:
        return "-"
    return f"{x:.3f}s" if abs(x) < 60 else span(x)


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def clip(text: str, limit: Optional[int], hint: str = "") -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (and ``hint``)."""
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars{hint})"


def first_line(text: Optional[str]) -> Optional[str]:
    return text.splitlines()[0] if text else text


def without_password(url: str) -> str:
    """A server's URL without its password, for messages, the CLI and the web view: what follows
    the user name, up to the *last* ``@`` before the query (a password may hold ``@``, ``:``
    and ``/``: a parser takes the user info up to the last ``@``), and the value of a
    ``password=`` or ``sslpassword=`` parameter."""
    scheme, sep, rest = url.partition("://")
    if sep:
        cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, cut)
        user, colon, _ = rest[:max(at, 0)].partition(":")
        if at >= 0 and colon:
            rest = f"{user}:***{rest[at:]}"
        url = scheme + sep + rest
    return re.sub(r"([?&](?:ssl)?password=)[^&#]*", r"\1***", url)


def progress(value: Optional[dict]) -> str:
    """A run's progress as ``timewheel show``/``tasks`` and the web view print it: ``40/100
    (40%) rows``, ``40 rows`` without a total, ``-`` for none (issue 23)."""
    if not value:
        return "-"
    done, total, note = value["done"], value["total"], value["note"]
    text = f"{done:g}" if total is None else f"{done:g}/{total:g} ({min(100.0, 100 * done / total):.0f}%)"
    return f"{text} {clean(note)}" if note else text
