"""The processes registry (issue 26): what each started process tells the store about itself.

Every process that called ``start()`` writes a small JSON report under its liveness token at
start, every :data:`REPORT_EVERY` seconds (its heartbeat), and once more when it stops: its
host and pid, when it started, the queues it serves, its workers, how many of them are busy
(running a task) and how many claimed tasks wait in its queue for one.  ``timewheel
processes`` and the web view's Processes page list the reports with each process's state:
``alive`` (its liveness says so), ``stopped`` (it stopped cleanly) or ``dead`` (it went without
stopping: killed, crashed, cut off).  Reports of processes gone for :data:`KEEP_GONE` seconds
are deleted by the live ones.  This module is the pure part: the report's encoding and the
rules; the stores only keep the text.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Optional

__all__ = ["REPORT_EVERY", "KEEP_GONE", "ProcessReport", "encode_report", "decode_report", "state",
           "gone_long_ago", "listed"]

#: seconds between two heartbeats of a started process
REPORT_EVERY = 2.0
#: a stopped or dead process is listed this long after its last heartbeat, then forgotten
KEEP_GONE = 3600.0
_MAX_TEXT = 4096                 #: a longer stored report is not one of ours


@dataclass(frozen=True)
class ProcessReport:
    """One process as it last reported itself."""

    host: str
    pid: int
    started: float                   #: when it called start() (unix seconds)
    queues: Optional[tuple]          #: the queues it claims; None: every queue
    workers: int
    busy: int                        #: workers running a task
    queued: int                      #: tasks it claimed that wait in its queue for a worker
    heartbeat: float                 #: when it wrote this (the store's clock)
    stopped: Optional[float] = None  #: when it stopped cleanly


def encode_report(report: ProcessReport) -> str:
    return json.dumps(asdict(report), separators=(",", ":"), allow_nan=False)


def decode_report(text: Any) -> Optional[ProcessReport]:
    """A stored report, every field checked; None for anything else (the store may have been
    written by anyone: such an entry is skipped, and forgotten as a gone process's)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        return None
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or set(d) != set(ProcessReport.__dataclass_fields__):
        return None
    queues = d["queues"]
    ok = (isinstance(d["host"], str) and len(d["host"]) <= 255 and _count(d["pid"])
          and _time(d["started"]) and _time(d["heartbeat"])
          and (d["stopped"] is None or _time(d["stopped"]))
          and all(_count(d[k]) for k in ("workers", "busy", "queued"))
          and (queues is None or isinstance(queues, list) and len(queues) <= 64
               and all(isinstance(q, str) and len(q) <= 64 for q in queues)))
    if not ok:
        return None
    return ProcessReport(**{**d, "queues": None if queues is None else tuple(queues)})


def _count(v: Any) -> bool:
    return type(v) is int and 0 <= v < 2 ** 31


def _time(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and 0 <= v < 1e11


def state(report: ProcessReport, dead: bool) -> str:
    """``stopped`` if it said so, else ``dead`` if its liveness says it is gone, else ``alive``."""
    if report.stopped is not None:
        return "stopped"
    return "dead" if dead else "alive"


def gone_long_ago(reports: Mapping[str, Any], now: float, is_dead: Any,
                  keep: float = KEEP_GONE) -> list[str]:
    """The tokens of ``reports`` (token -> stored text) to forget: not reports at all, or of
    processes stopped or dead whose last heartbeat is more than ``keep`` seconds old."""
    out = []
    for token, text in reports.items():
        r = decode_report(text)
        if r is None or (now - r.heartbeat > keep and (r.stopped is not None or is_dead(token))):
            out.append(token)
    return out


def listed(reports: Mapping[str, Any], is_dead: Any) -> Iterable[tuple[str, ProcessReport, str]]:
    """(token, report, state) of each readable report: live ones first, then by start."""
    rows = [(t, r, state(r, r.stopped is None and is_dead(t)))
            for t, r in ((t, decode_report(x)) for t, x in reports.items()) if r is not None]
    return sorted(rows, key=lambda row: (row[2] != "alive", -row[1].started, row[0]))
