"""The inbox: how a tool that is not timewheel -- another language, ``sqlite3``, ``redis-cli``,
``psql`` -- adds a task (issue 26; docs/guide/json.md, "Enqueue from another language").

A task record is timewheel's business (a pickle of plain values in the file and Redis stores,
placed by slot, position and counters), so a tool never writes one.  It writes an *entry*, one
JSON document, to the store's inbox -- the file store's table ``timewheel_inbox``, the Redis
list ``{namespace}:inbox``, PostgreSQL's table ``{schema}.inbox`` -- and the process that ticks
the wheel takes entries in, oldest first, each in the one transaction (Redis: the one script)
that removes it from the inbox and adds its task: a task is never added twice nor lost, and
runs at or after its eta like any other.  The format is versioned (``"v": 1``)::

    {"v": 1, "id": "invoice-42", "name": "billing.invoice",
     "args": [{"$uuid": "6f1c2b1e-0000-4000-8000-00000000abcd"}], "kwargs": {"total": {"$decimal": "12.50"}},
     "eta": 1796700000.0}

``args``/``kwargs`` in the JSON serializer's encoding (timewheel/serialize.py; both optional);
``eta`` in unix seconds (optional: absent or null, due at once).  The task's options -- retries,
timeouts, queue, limits -- are its declaration's in the process that takes the entry in, as
for ``delay()`` without options.  An entry that cannot be taken in is *set aside* with the
reason, never retried: kept in the inbox with its ``error`` (file, PostgreSQL) or moved to the
list ``{namespace}:inbox:rejected`` (Redis), and logged.

This module is the pure part: parsing an entry, and sorting a page of entries into tasks and
rejections.  The stores read and write their inboxes; the wheel builds the records.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable, NamedTuple, Optional

from . import serialize
from .records import MAX_ETA, MAX_RECORD_BYTES, TaskRecord

__all__ = ["VERSION", "Entry", "InboxError", "parse", "sort", "PAGE", "MAX_ENTRY_BYTES"]

VERSION = 1
#: entries taken in per transaction: bounds a tick's work and a transaction's length
PAGE = 200
#: an entry's text, at most (its arguments go into a record that holds at most MAX_RECORD_BYTES)
MAX_ENTRY_BYTES = MAX_RECORD_BYTES // 2
_KEYS = frozenset({"v", "id", "name", "args", "kwargs", "eta"})


class InboxError(ValueError):
    """Why an inbox entry cannot be taken in (it is set aside with this reason)."""


class Entry(NamedTuple):
    """An entry as parsed: what its task will be."""

    id: str
    name: str
    payload: bytes              #: the JSON payload of the call (serialize.dumps_call's form)
    eta: Optional[float]        #: None: due when it is taken in


def parse(raw: Any) -> Entry:
    """The entry in ``raw`` (str or bytes, as a store holds it); InboxError says what is wrong."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes):
        raise InboxError(f"an entry is JSON text, not {type(raw).__name__}")
    if len(raw) > MAX_ENTRY_BYTES:
        raise InboxError(f"the entry is {len(raw)} bytes; at most {MAX_ENTRY_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InboxError(f"not JSON: {exc}"[:300]) from None
    if type(doc) is not dict:
        raise InboxError(f"an entry is a JSON object, not a {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise InboxError(f'"v" must be {VERSION} (the inbox format this timewheel reads), got '
                         f'{json.dumps(doc.get("v"))[:40]}')
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise InboxError(f"unknown key(s) {', '.join(map(repr, unknown))[:200]}; an entry has "
                         + ", ".join(sorted(_KEYS)))
    task_id, name, eta = doc.get("id"), doc.get("name"), doc.get("eta")
    if type(task_id) is not str or not 0 < len(task_id) <= 200:
        raise InboxError('"id" must be a string of 1 to 200 characters')
    if type(name) is not str or not 0 < len(name) <= 500:
        raise InboxError('"name" must be a string of 1 to 500 characters (the task\'s name)')
    if eta is not None and (type(eta) not in (int, float) or not math.isfinite(eta)
                            or not 0 <= eta <= MAX_ETA):
        raise InboxError(f'"eta" must be unix seconds from 0 to {MAX_ETA:.0f}, or absent; got '
                         f"{json.dumps(eta)[:40]}")
    call = {"args": doc.get("args", []), "kwargs": doc.get("kwargs", {})}
    try:
        payload = json.dumps(call, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        serialize.loads_call(payload)          # the wheel must be able to decode what it will run
    except (ValueError, RecursionError) as exc:
        raise InboxError(f"its arguments: {exc}"[:300]) from None
    return Entry(task_id, name, payload, None if eta is None else float(eta))


def sort(rows: Iterable[tuple[Any, Any]], build: Callable[[Entry], TaskRecord],
         taken: Callable[[list[str]], Iterable[str]]
         ) -> tuple[list[tuple[Any, TaskRecord]], list[tuple[Any, str]]]:
    """A page of ``(key, raw entry)`` rows -> ``(tasks to add, with their key; rejections:
    key and reason)``.  ``build`` makes the record of a parsed entry (raising InboxError when
    it cannot); ``taken(ids)`` says which of ``ids`` the store already holds: such an entry,
    and the later of two with one id, are set aside (an id names one task)."""
    tasks: list[tuple[Any, TaskRecord]] = []
    bad: list[tuple[Any, str]] = []
    for key, raw in rows:
        try:
            tasks.append((key, build(parse(raw))))
        except InboxError as exc:
            bad.append((key, str(exc)))
    stored = set(taken([rec.id for _, rec in tasks])) if tasks else set()
    seen: set[str] = set()
    out = []
    for key, rec in tasks:
        if rec.id in stored or rec.id in seen:
            bad.append((key, f"task id {rec.id!r} is taken (a task or an earlier entry has it)"))
        else:
            seen.add(rec.id)
            out.append((key, rec))
    return out, bad
