"""The task record: what the store keeps per task, and how it is encoded.

A record is plain data (no callables).  It is stored as a pickle of a tuple of primitives and
``bytes``; the caller's arguments and the task's return value stay nested, still pickled, as
``payload`` and ``result``.  :func:`decode_record` refuses any pickle that names a global, so
reading a record (the CLI does it for every row) never imports or runs code; only the payload,
decoded when the task runs, is a full pickle.
"""

from __future__ import annotations

import io
import operator
import pickle
from dataclasses import dataclass, fields
from typing import Any, Optional

__all__ = [
    "TaskRecord", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "MISFIRED",
    "STATUSES", "TERMINAL", "encode_record", "decode_record", "RecordDecodeError",
]

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"          # buried: kept with its error until retried or purged
CANCELLED = "cancelled"
MISFIRED = "misfired"      # skipped: it would have started later than its misfire_grace
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, MISFIRED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, MISFIRED})

RECORD_VERSION = 1


class RecordDecodeError(ValueError):
    """A stored record is not a timewheel record this version can read."""


@dataclass
class TaskRecord:
    """One task, as stored.  Times are unix seconds."""

    id: str
    name: str
    eta: float                      #: exact due time; the wheel slot is derived from it
    payload: bytes                  #: pickle of (args, kwargs)
    status: str = PENDING
    created: float = 0.0
    retries: int = 0                #: extra attempts allowed after a failure
    retry_delay: float = 0.0        #: base of the exponential backoff, seconds
    misfire_grace: Optional[float] = None  #: skip if it would start later than this
    attempts: int = 0               #: runs started (a run lost to a crash is not counted)
    crashes: int = 0                #: runs lost because the process running it died
    started: Optional[float] = None
    finished: Optional[float] = None
    owner: Optional[str] = None     #: "pid:nonce" of the process running it
    error: Optional[str] = None
    traceback: Optional[str] = None
    result: Optional[bytes] = None  #: pickle of the return value
    version: int = RECORD_VERSION

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


_FIELD_NAMES = tuple(f.name for f in fields(TaskRecord))
_values = operator.attrgetter(*_FIELD_NAMES)


def encode_record(rec: TaskRecord) -> bytes:
    return pickle.dumps(_values(rec), protocol=pickle.HIGHEST_PROTOCOL)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # pragma: no cover - hostile input
        raise pickle.UnpicklingError(f"record refers to {module}.{name}; records hold plain data")


def decode_record(blob: bytes) -> TaskRecord:
    """Decode a stored record without importing or running anything."""
    try:
        values = _PlainUnpickler(io.BytesIO(blob)).load()
    except Exception as exc:
        raise RecordDecodeError(f"not a timewheel record ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(values, tuple) or len(values) != len(_FIELD_NAMES):
        raise RecordDecodeError("not a timewheel record (unexpected shape)")
    rec = TaskRecord(*values)
    if rec.version > RECORD_VERSION:
        raise RecordDecodeError(
            f"record version {rec.version} is newer than this timewheel understands ({RECORD_VERSION})")
    return rec
