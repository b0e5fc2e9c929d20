"""Where a PostgreSQL store is: telling its connection string from a file path, and reading it.

Pure text handling (no driver imported): :func:`is_postgres` is asked of every location a
``TimeWheel`` is given.  Two forms, as libpq takes them:

* a URI: ``postgresql://user:password@host:5432/db?sslmode=require`` (also ``postgres://``);
* a keyword string: ``host=db.internal dbname=app user=app password='a secret'`` -- told apart
  from a file path by its shape: nothing but ``keyword=value`` pairs (values quoted as libpq
  quotes them), every keyword one libpq knows or one of ours, and at least one of ``host``,
  ``hostaddr``, ``port``, ``dbname``, ``user`` or ``service``.  Anything else is a path (a file
  whose name looks like that is reached as ``./host=x``).

Our own parameters ride in the same string and are taken out before libpq sees it (it refuses
keywords it does not know): ``schema`` (where the store's tables are; default: the wheel's
``namespace``, ``timewheel``), ``listen`` (``0`` turns LISTEN off: behind PgBouncer in
transaction mode) and ``lease`` (seconds a claim lasts without renewal).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Optional
from urllib.parse import parse_qsl, quote, urlencode

from ..text import without_password

__all__ = ["Target", "is_postgres", "parse", "SCHEMES", "check_schema"]

SCHEMES = ("postgresql://", "postgres://")
OURS = ("schema", "listen", "lease")
# libpq's connection keywords (PostgreSQL 16's list; older servers' clients ignore nothing:
# libpq itself refuses a keyword it does not know, with a message naming it)
LIBPQ_KEYWORDS = frozenset("""
host hostaddr port dbname user password passfile channel_binding connect_timeout client_encoding
options application_name fallback_application_name keepalives keepalives_idle keepalives_interval
keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl sslcompression sslcert
sslkey sslcertmode sslpassword sslrootcert sslcrl sslcrldir sslsni requirepeer
ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service
target_session_attrs load_balance_hosts require_auth""".split())
_ANCHORS = frozenset({"host", "hostaddr", "port", "dbname", "user", "service"})
_SECRET = frozenset({"password", "sslpassword"})
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Target(NamedTuple):
    """A parsed location."""

    conninfo: str                   #: for libpq: the location without our parameters
    public: str                     #: for messages and the CLI: the password replaced by ***
    schema: Optional[str]           #: ``schema=`` if given
    listen: bool                    #: ``listen=`` (default on)
    lease: Optional[float]          #: ``lease=`` if given


def _pairs(text: str) -> Optional[list[tuple[str, str]]]:
    """The ``keyword=value`` pairs of a libpq keyword string, or None if it is not one."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _KEY.match(text, pos)
        if m is None:
            return None
        pos = m.end()
        value: list[str] = []
        if pos < len(text) and text[pos] == "'":
            pos += 1
            while True:
                if pos >= len(text):
                    return None                  # an unterminated quote
                ch = text[pos]
                if ch == "\\" and pos + 1 < len(text):
                    value.append(text[pos + 1])
                    pos += 2
                elif ch == "'":
                    pos += 1
                    break
                else:
                    value.append(ch)
                    pos += 1
            if pos < len(text) and not text[pos].isspace():
                return None
        else:
            while pos < len(text) and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                value.append(text[pos])
                pos += 1
            if not value:
                return None
        out.append((m.group(1), "".join(value)))
    return out or None


def _keyword_pairs(location: str) -> Optional[list[tuple[str, str]]]:
    pairs = _pairs(location)
    if pairs is None:
        return None
    keys = {k for k, _ in pairs}
    if not keys <= LIBPQ_KEYWORDS | set(OURS) or not keys & _ANCHORS:
        return None
    return pairs


def is_postgres(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database (a URI or a keyword string)."""
    return location.startswith(SCHEMES) or _keyword_pairs(location) is not None


def _quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ours(found: dict[str, str]) -> tuple[Optional[str], bool, Optional[float]]:
    schema = found.get("schema")
    if schema is not None:
        check_schema(schema, "schema= in the connection string")
    listen = found.get("listen", "1").lower()
    if listen not in _TRUE + _FALSE:
        raise ValueError(f"listen= must be 0 or 1, got {found['listen']!r}")
    lease = None
    if "lease" in found:
        try:
            lease = float(found["lease"])
        except ValueError:
            raise ValueError(f"lease= must be seconds, got {found['lease']!r}") from None
        if not (math.isfinite(lease) and 0.05 <= lease <= 86400):
            raise ValueError(f"lease must be from 0.05 to 86400 seconds, got {found['lease']!r}")
    return schema, listen in _TRUE, lease


def check_schema(schema: object, what: str = "schema") -> str:
    """``schema`` if it is a usable schema name: 1 to 50 letters, digits and underscores, not
    starting with a digit (it also names the store's NOTIFY channel, at most 63 bytes)."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise ValueError(f"{what} must be 1 to 50 letters, digits or underscores, not starting "
                         f"with a digit, got {schema!r}")
    return schema


def parse(location: str) -> Target:
    """Split ``location`` into what libpq gets and our own parameters; ValueError names a bad one."""
    if location.startswith(SCHEMES):
        base, _, query = location.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        found = {k: v for k, v in pairs if k in OURS}
        rest = [(k, v) for k, v in pairs if k not in OURS]
        conninfo = base + ("?" + urlencode(rest, quote_via=quote) if rest else "")
        public = without_password(location)
    else:
        kv = _keyword_pairs(location)
        if kv is None:
            raise ValueError(f"not a PostgreSQL connection string: {location!r}")
        found = {k: v for k, v in kv if k in OURS}
        conninfo = " ".join(f"{k}={_quote(v)}" for k, v in kv if k not in OURS)
        public = " ".join(f"{k}={'***' if k in _SECRET else _quote(v)}" for k, v in kv)
    schema, listen, lease = _ours(found)
    return Target(conninfo, public, schema, listen, lease)
