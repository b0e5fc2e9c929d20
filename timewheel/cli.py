"""The ``timewheel`` command line: look into a store, manage its tasks, run a worker.

Read-only commands open the store with ``SqliteDictStore(path, readonly=True)`` (an SQLite
``mode=ro`` connection), so they never create, convert or write the file and can run while
an application is using it.  Write commands (cancel, retry, purge) first check that the file
is a store through a read-only open, and only then open it for writing, so the CLI never
creates a store or adopts a foreign SQLite file.

Every library error is turned into a :class:`click.ClickException` at the command boundary:
one line on stderr, exit code 1, no traceback.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import functools
import gc
import importlib
import io
import json
import logging
import math
import os
import pickle
import re
import signal
import sqlite3
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from reprlib import recursive_repr
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence, TypeVar
from urllib.parse import quote

import click
from tabulate import tabulate, tabulate_formats

from . import __version__
from .errors import TaskNotFound, TimeWheelError
from .records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    TERMINAL,
    RecordDecodeError,
    TaskRecord,
)
from .store.sqlite import SqliteDictStore
from .wheel import Wheel

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: statuses whose ``started - eta`` is the lateness of a run.  A pending record may still
#: carry the start of a failed attempt next to the eta of its retry: that pair measures nothing.
RAN = frozenset({RUNNING, SUCCEEDED, FAILED})

#: library errors that mean "this store (or this request) cannot be served": one line, exit 1
_STORE_ERRORS = (TimeWheelError, RecordDecodeError, sqlite3.Error, OSError)

log = logging.getLogger("timewheel.cli")


# -- store access ----------------------------------------------------------------------------

def _fail(exc: BaseException) -> NoReturn:
    # Messages from the store already name the path; keep them on one line.
    raise click.ClickException(" ".join(str(exc).split()) or exc.__class__.__name__) from None


@contextmanager
def _wal_guard(path: str) -> Iterator[None]:
    """Keep a read transaction open while the store is being opened read-only.

    sqlitedict checks the table list through a read-write connection that it never closes;
    it lingers in a reference cycle until the garbage collector (or the interpreter's exit)
    finalises it.  If it is the last connection on the file then, and a killed process left
    frames in the ``-wal`` file, closing it checkpoints them into the main file: a
    "read-only" command would rewrite the store.  So, only in that case, we finalise it
    ourselves while this read transaction makes sure it is not the last connection.
    """
    wal = path + "-wal"
    if not (os.path.exists(wal) and os.path.getsize(wal) > 0):
        yield
        return
    con = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                          isolation_level=None)
    try:
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        yield
    finally:
        gc.collect()
        con.close()


@contextmanager
def open_store(path: str, *, write: bool = False) -> Iterator[SqliteDictStore]:
    """The store at ``path``, closed afterwards; library errors become ClickExceptions."""
    if any(c in os.path.abspath(path) for c in "?#"):
        # The store's file check passes the path to SQLite as an unescaped URI, which reads
        # "?" and "#" as URI syntax and opens -- creating it -- a different file.
        raise click.ClickException(f"{path}: a store path containing '?' or '#' is not supported")
    try:
        with _wal_guard(path):
            store = SqliteDictStore(path, readonly=True)
        if write:
            # Only now that the file is known to be a store: a read-write open would create
            # a missing file or add our table to any SQLite file.
            store.close()
            store = SqliteDictStore(path)
    except _STORE_ERRORS as exc:
        _fail(exc)
    try:
        yield store
    except _STORE_ERRORS as exc:
        _fail(exc)
    finally:
        store.close()


def _get(store: SqliteDictStore, task_id: str) -> TaskRecord:
    rec = store.get(task_id)
    if rec is None:
        raise TaskNotFound(f"no task {task_id} in {store.path}")
    return rec


# -- parameters and output -------------------------------------------------------------------

class StorePath(click.Path):
    """``click.Path(exists=True, dir_okay=False)`` whose failures are errors, not usage errors.

    A missing store is an operational problem (exit 1, like a file that is not a store), not
    a mistake in how the command was typed (exit 2).
    """

    def fail(self, message: str, param: Optional[click.Parameter] = None,
             ctx: Optional[click.Context] = None) -> NoReturn:
        raise click.ClickException(message)


def db_path(f: F) -> F:
    """The store path, the first argument of every store command."""
    return click.argument("db", metavar="DB", type=StorePath(exists=True, dir_okay=False))(f)


class Duration(click.ParamType):
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w`` or combinations like ``1h30m``; a unit is required."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    _PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        if not text or self._PART.sub("", text):
            self.fail(f"{value!r} is not a duration; use e.g. 30s, 10m, 2h, 7d or 1h30m", param, ctx)
        return float(sum(float(n) * self._UNITS[u] for n, u in self._PART.findall(text)))


@dataclass(frozen=True)
class Output:
    """How a command prints: JSON, or tables in a tabulate format."""

    as_json: bool
    fmt: str

    def json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, default=str))

    def table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str] = (),
              empty: str = "(none)") -> None:
        if not rows:
            click.echo(empty)
            return
        numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
                   for i in range(len(rows[0]))]
        # disable_numparse: task ids are hex strings, some of which look like numbers (1e5...).
        click.echo(tabulate(rows, headers=list(headers), tablefmt=self.fmt, disable_numparse=True,
                            colalign=["right" if n else "left" for n in numeric]))

    def title(self, text: str) -> None:
        click.echo()
        click.echo(click.style(text, bold=True))


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``-t, --table`` / ``--fmt``, handed to the command as ``out``."""

    @click.option("--json", "output", flag_value="json",
                  help="Machine-readable JSON on stdout (keys documented in the README).")
    @click.option("-t", "--table", "output", flag_value="table", default=True,
                  help="Human-readable tables (the default).")
    @click.option("--fmt", default="simple", show_default=True, metavar="FORMAT",
                  type=click.Choice(tabulate_formats),
                  help="Table format: " + ", ".join(tabulate_formats) + ".")
    @functools.wraps(f)
    def wrapper(*args: Any, output: str, fmt: str, **kwargs: Any) -> Any:
        return f(*args, out=Output(as_json=output == "json", fmt=fmt), **kwargs)

    return wrapper


# -- formatting ------------------------------------------------------------------------------

def span(seconds: float) -> str:
    """``3m 10s``, ``2h 5m``, ``4d 1h``: the two largest units of a length of time."""
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        q, s = divmod(s, size)
        if q or parts:
            parts.append(f"{q}{unit}")
    return " ".join(p for p in parts[:2] if not p.startswith("0"))


def relative(when: float, now: float) -> str:
    """``in 3m 10s`` / ``5s ago`` / ``now``."""
    delta = when - now
    if abs(delta) < 0.5:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def local(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def seconds(x: Optional[float]) -> str:
    """A short duration with sub-second precision where it matters (lateness)."""
    if x is None:
        return "-"
    return f"{x:.3f}s" if abs(x) < 60 else span(x)


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def clip(text: str, limit: Optional[int]) -> str:
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars; --full shows all)"


def attempts(rec: TaskRecord) -> str:
    return f"{rec.attempts}/{rec.retries + 1}"


def first_line(text: Optional[str]) -> Optional[str]:
    return text.splitlines()[0] if text else text


# -- showing pickled arguments without importing anything ----------------------------------

class _StubType(type):
    def __repr__(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"


class _Stub(metaclass=_StubType):
    """Stands in for an object of a class or function the CLI does not import.

    The unpickler calls it (``module.func(args)``) or creates it without calling it and then
    hands it its state (``<module.Class state>``); either way it only records what it got.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        self = super().__new__(cls)
        self._tw_args = args
        self._tw_kwargs = kwargs
        self._tw_called = False
        self._tw_callee: Any = cls
        self._tw_state: Any = None
        self._tw_items: list[Any] = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tw_called = True

    def __setstate__(self, state: Any) -> None:
        self._tw_state = state

    def append(self, item: Any) -> None:
        self._tw_items.append(item)

    def extend(self, items: Any) -> None:
        self._tw_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._tw_items.append((key, value))

    def __call__(self, *args: Any, **kwargs: Any) -> "_Stub":
        # e.g. ``getattr(zoneinfo.ZoneInfo, '_unpickle')('Europe/Berlin', 1)``
        call = _Stub.__new__(_Stub, *args, **kwargs)
        call._tw_callee = self
        call._tw_called = True
        return call

    @recursive_repr()
    def __repr__(self) -> str:
        cls = type(self)
        if (self._tw_called and repr(cls) == "builtins.getattr" and len(self._tw_args) == 2
                and isinstance(self._tw_args[1], str)):
            return f"{self._tw_args[0]!r}.{self._tw_args[1]}"
        args = [repr(a) for a in self._tw_args] + [f"{k}={v!r}" for k, v in self._tw_kwargs.items()]
        if self._tw_called:
            text = f"{self._tw_callee!r}({', '.join(args)})"
        else:
            text = f"<{cls!r}"
            if isinstance(self._tw_state, dict):
                text += " " + ", ".join(f"{k}={v!r}" for k, v in self._tw_state.items())
            elif self._tw_state is not None:
                text += f" {self._tw_state!r}"
            text += ">"
        if self._tw_items:
            text += f" + {self._tw_items!r}"
        return text


def _lenient(real: Callable[..., Any], stub: type) -> Callable[..., Any]:
    """Build a real stdlib value, or a stub if its pickled arguments do not fit (a datetime
    whose tzinfo is a stub, a hostile out-of-range value, ...)."""

    def build(*args: Any) -> Any:
        try:
            return real(*args)
        except (TypeError, ValueError, OverflowError):
            return stub(*args)
    return build


# Plain stdlib value types: rebuilding them runs no application code and their modules are
# already imported here, so showing the real value is both safe and far more readable.  Left
# out on purpose: types whose constructor can be made to allocate or compute without bound
# from a few pickled bytes (bytearray(n), Fraction("1e999999999")).
_REDUCED_TYPES: dict[tuple[str, str], Callable[..., Any]] = {
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "range"): range, ("builtins", "slice"): slice,
    ("datetime", "date"): datetime.date, ("datetime", "time"): datetime.time,
    ("datetime", "datetime"): datetime.datetime, ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone, ("decimal", "Decimal"): decimal.Decimal,
    ("collections", "OrderedDict"): collections.OrderedDict, ("collections", "deque"): collections.deque,
}
# These are rebuilt through the NEWOBJ opcode, which needs the class itself.
_NEWOBJ_TYPES: dict[tuple[str, str], type] = {("builtins", "complex"): complex, ("uuid", "UUID"): uuid.UUID}


class SafeUnpickler(pickle.Unpickler):
    """Decodes a pickle without importing modules or calling application code."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._stubs: dict[tuple[str, str], type] = {}

    def _stub(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._stubs:
            self._stubs[key] = _StubType(name.rsplit(".", 1)[-1], (_Stub,),
                                         {"__module__": module, "__qualname__": name})
        return self._stubs[key]

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _NEWOBJ_TYPES:
            return _NEWOBJ_TYPES[key]
        if key in _REDUCED_TYPES:
            return _lenient(_REDUCED_TYPES[key], self._stub(module, name))
        return self._stub(module, name)

    def persistent_load(self, pid: Any) -> NoReturn:
        raise pickle.UnpicklingError("the pickle refers to external objects")


def peek(blob: Optional[bytes]) -> tuple[Any, Optional[str]]:
    """(value, None), or (None, why it cannot be shown)."""
    if blob is None:
        return None, None
    try:
        return SafeUnpickler(blob).load(), None
    # Anything can come out of a hostile or truncated pickle (EOFError, struct.error,
    # RecursionError, ...); the promise is to report it, never to crash on it.
    except Exception as exc:  # noqa: BLE001
        return None, f"cannot decode it ({exc.__class__.__name__}: {exc})"


def safe_repr(value: Any) -> tuple[Optional[str], Optional[str]]:
    """(repr, None) or (None, reason): a repr of stubs can fail too (a huge or odd value)."""
    try:
        return repr(value), None
    except Exception as exc:  # noqa: BLE001 - same promise as peek()
        return None, f"cannot show it ({exc.__class__.__name__}: {exc})"


def peek_repr(blob: Optional[bytes]) -> tuple[Optional[str], Optional[str]]:
    """(repr, None) or (None, reason) of a pickled value; (None, None) when there is none."""
    value, error = peek(blob)
    if error is not None or blob is None:
        return None, error
    return safe_repr(value)


# -- the command group -----------------------------------------------------------------------

@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="timewheel")
def cli() -> None:
    """Inspect and manage a timewheel store, or run a worker for an application.

    Every command but `run` takes the store file (DB) first.  Read-only commands (inspect,
    tasks, show, stats, timeline) never create, change or lock the file and can run while an
    application uses it; cancel, retry and purge change it, and refuse any file that is not
    already a timewheel store.  All commands accept --json.

    \b
    Exit codes:
      0  ok
      1  error: missing or invalid store, unknown task id, store busy, app cannot be loaded
      2  usage error: bad option, duration or status

    \b
    Example:
      timewheel inspect tasks.db
      timewheel tasks tasks.db --status failed
      timewheel retry tasks.db --all-failed
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="timewheel")


# -- inspect ---------------------------------------------------------------------------------

def _ticker(info: dict[str, Any], now: float, tick: float, current: int) -> dict[str, Any]:
    lag = max(0, current - info["done_through"])
    return {"now": now, "current_tick": current, "horizon": info["horizon"],
            "done_through": info["done_through"], "lag_ticks": lag, "lag_seconds": lag * tick,
            # A live ticker keeps the horizon one tick ahead of the clock.
            # (one tick of slack: the boss may be a moment late at a boundary).
            "ticking": info["leader"] is not None and info["horizon"] >= current - 1,
            "leader": info["leader"]}


def _cell(slot: int, cycle: int, count: int, wheel: Wheel, now: float) -> dict[str, Any]:
    tick = cycle * wheel.slots + slot
    due = wheel.tick_end(tick)
    return {"slot": slot, "cycle": cycle, "tick": tick, "due": due, "due_in": due - now, "count": count}


def _ring_strip(cells: list[dict[str, Any]], slots: int, current: int, width: int = 60) -> list[str]:
    """The ring as one line of ``width`` columns, denser characters for fuller columns."""
    columns = min(width, slots)
    per = slots / columns
    load = [0] * columns
    for c in cells:
        load[min(columns - 1, int(c["slot"] / per))] += c["count"]
    shades = " .:-=+*#%@"
    top = max(load) or 1
    line = "".join(shades[0] if n == 0 else shades[max(1, math.ceil(n / top * (len(shades) - 1)))]
                   for n in load)
    cursor = min(columns - 1, int((current % slots) / per))
    return [f"|{line}|", " " + " " * cursor + "^ now (slot %d)" % (current % slots)]


@cli.command()
@db_path
@click.option("--slots", "all_slots", is_flag=True, help="List every occupied slot, not just the next few.")
@click.option("--next", "next_n", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many of the next due tasks to list.")
@output_options
def inspect(db: str, all_slots: bool, next_n: int, out: Output) -> None:
    """The wheel at a glance: counts, lag, next due, occupied slots.

    \b
    Example:
      timewheel inspect tasks.db
      timewheel inspect tasks.db --slots --fmt github
      timewheel inspect tasks.db --json | jq .ticker.lag_seconds
    """
    now = time.time()
    with open_store(db) as store:
        info = store.info()
        counts = store.counts()
        broken = len(store.broken())
        pending = store.tasks(status=PENDING)
        occupancy = sorted(store.occupancy(), key=lambda c: (c[1], c[0]))
        wheel = store.wheel
    current = wheel.current_tick(now)
    by_name = collections.Counter(r.name for r in pending)
    cells = [_cell(s, c, n, wheel, now) for s, c, n in occupancy]
    shown = cells if all_slots else cells[:10]
    data = {
        "store": {k: info[k] for k in ("path", "journal_mode", "size_bytes", "wal_bytes", "slots", "tick")},
        "counts": {**counts, "broken": broken},
        "ticker": _ticker(info, now, wheel.tick, current),
        "next_due": [{"id": r.id, "name": r.name, "eta": r.eta, "due_in": r.eta - now}
                     for r in pending[:next_n]],
        "pending_by_name": dict(by_name.most_common()),
        "ring": {"occupied_slots": len({c["slot"] for c in cells}), "occupied_cells": len(cells),
                 "cells": shown, "complete": len(shown) == len(cells)},
    }
    if out.as_json:
        out.json(data)
        return

    st, tk = data["store"], data["ticker"]
    out.table([
        ["store", st["path"]],
        ["file", f"{size(st['size_bytes'])} + {size(st['wal_bytes'])} WAL,"
                 f" journal_mode={st['journal_mode']}"],
        ["wheel", f"{st['slots']} slots x {st['tick']:g}s"],
        ["tasks", f"{counts[PENDING]} pending, {counts[RUNNING]} running, {counts[FAILED]} failed"
                  f" (buried), done: {counts[SUCCEEDED]} succeeded, {counts[CANCELLED]} cancelled,"
                  f" {counts[MISFIRED]} misfired" + (f"; {broken} BROKEN" if broken else "")],
        ["now", f"{local(now)}, tick {current}"],
        ["ticker", (f"ticking, lag {span(tk['lag_seconds'])}" if tk["ticking"] else
                    f"NOT ticking: {span((current - tk['horizon']) * wheel.tick)} behind"
                    " (no process has called start()?)")],
        ["state", f"horizon tick {tk['horizon']} ({tk['horizon'] - current:+d}),"
                  f" done through {tk['done_through']} ({tk['done_through'] - current:+d})"],
        ["leader", tk["leader"] or "- (never ticked)"],
    ])
    out.title("Next due")
    out.table([[d["id"], d["name"], local(d["eta"]), relative(d["eta"], now)] for d in data["next_due"]],
              ["id", "name", "due", ""], empty="(nothing pending)")
    out.title("Pending by name")
    out.table(list(by_name.most_common()), ["name", "pending"], empty="(nothing pending)")
    ring = data["ring"]
    out.title(f"Ring: {ring['occupied_cells']} occupied (slot, cycle) cells in"
              f" {ring['occupied_slots']} of {wheel.slots} slots")
    if cells:
        for line in _ring_strip(cells, wheel.slots, current):
            click.echo(line)
    out.table([[c["slot"], c["cycle"], c["tick"], local(c["due"]), relative(c["due"], now), c["count"]]
               for c in shown], ["slot", "cycle", "tick", "tick ends", "", "tasks"], empty="(empty)")
    if not ring["complete"]:
        click.echo(f"... {len(cells) - len(shown)} more; --slots lists them all")


# -- tasks / show ----------------------------------------------------------------------------

def _task_json(rec: TaskRecord, now: float) -> dict[str, Any]:
    return {"id": rec.id, "name": rec.name, "status": rec.status, "eta": rec.eta, "due_in": rec.eta - now,
            "attempts": rec.attempts, "max_attempts": rec.retries + 1, "crashes": rec.crashes,
            "created": rec.created, "started": rec.started, "finished": rec.finished,
            "owner": rec.owner, "error": first_line(rec.error)}


@cli.command()
@db_path
@click.option("--status", type=click.Choice(STATUSES), help="Only tasks in this status.")
@click.option("--name", help="Only tasks registered under this name.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="At most this many rows (0: no limit).")
@output_options
def tasks(db: str, status: Optional[str], name: Optional[str], limit: int, out: Output) -> None:
    """One line per task: id, name, status, due time, attempts.

    Pending tasks come first in due order, then the others, most recently finished first.

    \b
    Example:
      timewheel tasks tasks.db
      timewheel tasks tasks.db --status failed --name emails.send --limit 0
    """
    now = time.time()
    with open_store(db) as store:
        recs = store.tasks(status=status, name=name, limit=limit or None)
    if out.as_json:
        out.json({"now": now, "tasks": [_task_json(r, now) for r in recs]})
        return
    out.table([[r.id, r.name, r.status, local(r.eta), relative(r.eta, now), attempts(r)] for r in recs],
              ["id", "name", "status", "due", "", "attempts"], empty="(no tasks)")
    if limit and len(recs) == limit:
        click.echo(f"(first {limit}; --limit 0 lists all)")


@cli.command()
@db_path
@click.argument("task_id", metavar="ID")
@click.option("--full", is_flag=True, help="Do not truncate arguments, results or tracebacks.")
@output_options
def show(db: str, task_id: str, full: bool, out: Output) -> None:
    """Everything about one task, result or error included.

    Arguments and results are decoded without importing any module: objects of application
    classes are shown as placeholders like <app.User name='x'> or app.make(1).

    \b
    Example:
      timewheel show tasks.db 3f2a9c0d1e4b5a6f00000001
      timewheel show tasks.db 3f2a9c0d1e4b5a6f00000001 --json | jq .traceback
    """
    now = time.time()
    with open_store(db) as store:
        rec = _get(store, task_id)
    limit = None if full else 300
    call, args_error = peek(rec.payload)
    args = kwargs = None
    if args_error is None:
        if isinstance(call, tuple) and len(call) == 2 and isinstance(call[1], dict):
            args, args_error = safe_repr(call[0])
            if args_error is None:
                kwargs, args_error = safe_repr(call[1])
        else:
            args_error = f"unexpected payload shape {type(call).__name__}"
    result, result_error = peek_repr(rec.result)
    lateness = rec.started - rec.eta if rec.started is not None and rec.status in RAN else None
    data = {**_task_json(rec, now), "error": rec.error, "traceback": rec.traceback,
            "retries": rec.retries, "retry_delay": rec.retry_delay, "misfire_grace": rec.misfire_grace,
            "lateness": lateness, "args": args, "kwargs": kwargs, "args_error": args_error,
            "payload_bytes": len(rec.payload), "result": result, "result_error": result_error,
            "result_bytes": None if rec.result is None else len(rec.result)}
    if out.as_json:
        out.json(data)
        return
    rows = [
        ["id", rec.id], ["name", rec.name], ["status", rec.status],
        ["due", f"{local(rec.eta)} ({relative(rec.eta, now)})"],
        ["created", local(rec.created)],
        ["started", local(rec.started) + ("" if lateness is None else f" ({seconds(lateness)} late)")],
        ["finished", local(rec.finished)],
        ["attempts", f"{attempts(rec)} (retry_delay {rec.retry_delay:g}s)"],
        ["crashes", rec.crashes],
        ["misfire_grace", "-" if rec.misfire_grace is None else f"{rec.misfire_grace:g}s"],
        ["owner", rec.owner or "-"],
    ]
    if args_error is None:
        rows += [["args", clip(str(args), limit)], ["kwargs", clip(str(kwargs), limit)]]
    else:
        rows.append(["arguments", f"{args_error} ({len(rec.payload)} bytes)"])
    if rec.result is not None:
        rows.append(["result", clip(str(result), limit) if result_error is None
                     else f"{result_error} ({len(rec.result)} bytes)"])
    if rec.error:
        rows.append(["error", rec.error])
    out.table(rows)
    if rec.traceback:
        out.title("Traceback")
        click.echo(clip(rec.traceback.rstrip(), None if full else 4000))


# -- cancel / retry / purge --------------------------------------------------------------------

def _change(store: SqliteDictStore, ids: Sequence[str], change: Callable[[str, float], bool],
            verb: str) -> dict[str, Any]:
    """Apply ``change`` to each id; sort them into changed / skipped (and why) / unknown."""
    done: list[str] = []
    skipped: list[dict[str, str]] = []
    unknown: list[str] = []
    for task_id in dict.fromkeys(ids):          # once each, in the order given
        if change(task_id, time.time()):
            done.append(task_id)
            continue
        rec = store.get(task_id)
        if rec is None:
            unknown.append(task_id)
        else:
            skipped.append({"id": task_id, "status": rec.status})
    return {verb: done, "skipped": skipped, "unknown": unknown}


def _report_changes(store: SqliteDictStore, result: dict[str, Any], verb: str, why_not: str,
                    out: Output, strict: bool) -> None:
    if out.as_json:
        out.json(result)
    else:
        # Refusals are errors only for ids the user named (strict); they go to stderr then.
        skipped = [] if strict else result["skipped"]
        out.table([[i, verb] for i in result[verb]]
                  + [[s["id"], f"not {verb}: it is {s['status']}"] for s in skipped],
                  ["id", "result"], empty=f"(nothing {verb})")
    for task_id in result["unknown"]:
        click.echo(f"Error: no task {task_id} in {store.path}", err=True)
    if strict:
        for s in result["skipped"]:
            click.echo(f"Error: task {s['id']} is {s['status']}; {why_not}", err=True)
    if result["unknown"] or (strict and result["skipped"]):
        click.get_current_context().exit(1)


@cli.command()
@db_path
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@output_options
def cancel(db: str, ids: tuple[str, ...], out: Output) -> None:
    """Cancel pending tasks: they will never run.

    Exits 1 if an id is unknown or its task is no longer pending (it ran or is running).

    \b
    Example:
      timewheel cancel tasks.db 3f2a9c0d1e4b5a6f00000001 3f2a9c0d1e4b5a6f00000002
    """
    with open_store(db, write=True) as store:
        result = _change(store, ids, store.cancel, "cancelled")
        _report_changes(store, result, "cancelled", "only pending tasks can be cancelled", out, strict=True)


@cli.command()
@db_path
@click.argument("ids", metavar="[ID...]", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed (buried) task.")
@output_options
def retry(db: str, ids: tuple[str, ...], all_failed: bool, out: Output) -> None:
    """Put failed tasks back as pending, due now.

    They get a fresh retry budget.  Misfired and cancelled tasks can be retried by id too.
    A running application picks them up within a fraction of a second.

    \b
    Example:
      timewheel retry tasks.db 3f2a9c0d1e4b5a6f00000001
      timewheel retry tasks.db --all-failed
    """
    if bool(ids) == all_failed:
        raise click.UsageError("give task ids or --all-failed (not both)")
    with open_store(db, write=True) as store:
        if all_failed:
            ids = tuple(r.id for r in store.tasks(status=FAILED))
        result = _change(store, ids, store.retry, "retried")
        # With --all-failed, a task another process retried meanwhile is no error.
        _report_changes(store, result, "retried", "only failed, misfired or cancelled tasks can be retried",
                        out, strict=not all_failed)


@cli.command()
@db_path
@click.option("--older-than", "older_than", type=Duration(), required=True,
              help="Age since the task finished: 30s, 10m, 2h, 7d, 1h30m ...")
@click.option("--status", "statuses", multiple=True, type=click.Choice(sorted(TERMINAL)),
              help="Only finished tasks in this status (repeatable; default: all finished ones).")
@output_options
def purge(db: str, older_than: float, statuses: tuple[str, ...], out: Output) -> None:
    """Delete tasks that finished longer ago than --older-than.

    Pending and running tasks are never purged.

    \b
    Example:
      timewheel purge tasks.db --older-than 7d
      timewheel purge tasks.db --older-than 12h --status failed --status misfired
    """
    now = time.time()
    wanted = sorted(statuses or TERMINAL)
    with open_store(db, write=True) as store:
        n = store.purge(now, statuses=wanted, finished_before=now - older_than)
    if out.as_json:
        out.json({"purged": n, "finished_before": now - older_than, "statuses": wanted})
        return
    click.echo(f"purged {n} task(s) ({', '.join(wanted)}) that finished before {local(now - older_than)}")


# -- stats -----------------------------------------------------------------------------------

def _quantile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``xs``."""
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _lateness(values: Sequence[float]) -> dict[str, Any]:
    xs = sorted(values)
    if not xs:
        return {"runs": 0, "min": None, "p50": None, "p95": None, "max": None, "mean": None}
    return {"runs": len(xs), "min": xs[0], "p50": _quantile(xs, 0.5), "p95": _quantile(xs, 0.95),
            "max": xs[-1], "mean": sum(xs) / len(xs)}


@cli.command()
@db_path
@click.option("--recent", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Lateness is measured over this many most recent runs.")
@output_options
def stats(db: str, recent: int, out: Output) -> None:
    """Counts per status and name; how late recent runs started.

    \b
    Example:
      timewheel stats tasks.db
      timewheel stats tasks.db --recent 100 --json | jq .lateness.p95
    """
    with open_store(db) as store:
        counts = store.counts()
        recs = store.tasks()
    by_name: dict[str, dict[str, int]] = {}
    for r in recs:
        by_name.setdefault(r.name, dict.fromkeys(STATUSES, 0))[r.status] += 1
    runs = sorted((r for r in recs if r.started is not None and r.status in RAN),
                  key=lambda r: r.started or 0.0, reverse=True)[:recent]
    late_by_name: dict[str, list[float]] = {}
    for r in runs:
        late_by_name.setdefault(r.name, []).append((r.started or 0.0) - r.eta)
    data = {"counts": counts, "by_name": dict(sorted(by_name.items())),
            "lateness": _lateness([x for xs in late_by_name.values() for x in xs]),
            "lateness_by_name": {n: _lateness(xs) for n, xs in sorted(late_by_name.items())}}
    if out.as_json:
        out.json(data)
        return
    out.table([[s, counts[s]] for s in STATUSES], ["status", "tasks"])
    out.title("By name")
    out.table([[n, *c.values(), sum(c.values())] for n, c in data["by_name"].items()],
              ["name", *STATUSES, "total"], empty="(no tasks)")
    out.title(f"Lateness (started - eta) of the last {len(runs)} run(s)")
    rows = [["(all)", data["lateness"]]] + list(data["lateness_by_name"].items())
    out.table([[n, s["runs"], *(seconds(s[k]) for k in ("min", "p50", "p95", "max", "mean"))]
               for n, s in rows if s["runs"]],
              ["name", "runs", "min", "p50", "p95", "max", "mean"], empty="(no runs yet)")


# -- timeline --------------------------------------------------------------------------------

_BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)


@cli.command()
@db_path
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True,
              help="How far ahead to look.")
@click.option("--name", help="Only tasks registered under this name.")
@click.option("--width", type=click.IntRange(min=10), default=50, show_default=True,
              help="Characters of the longest bar.")
@output_options
def timeline(db: str, hours: float, name: Optional[str], width: int, out: Output) -> None:
    """A histogram of when pending tasks come due.

    \b
    Example:
      timewheel timeline tasks.db
      timewheel timeline tasks.db --hours 2 --name emails.send
    """
    now = time.time()
    with open_store(db) as store:
        etas = [r.eta for r in store.tasks(status=PENDING, name=name)]
    window = hours * 3600
    bucket = next((b for b in _BUCKETS if b * 24 >= window), _BUCKETS[-1])
    # Buckets on local clock boundaries (14:00, 14:15, ...), not on arbitrary offsets from now.
    offset = time.localtime(now).tm_gmtoff
    start = math.floor((now + offset) / bucket) * bucket - offset
    end = now + window
    n = max(1, math.ceil((end - start) / bucket))
    counts = [0] * n
    overdue = later = 0
    for eta in etas:
        if eta <= now:
            overdue += 1
        elif eta > end:
            later += 1
        else:
            counts[min(n - 1, int((eta - start) // bucket))] += 1
    buckets = [{"start": start + i * bucket, "end": start + (i + 1) * bucket, "count": c}
               for i, c in enumerate(counts)]
    if out.as_json:
        out.json({"now": now, "hours": hours, "bucket_seconds": bucket, "overdue": overdue,
                  "later": later, "buckets": buckets})
        return
    top = max([overdue, *counts]) or 1

    def bar(k: int) -> str:
        return "#" * (max(1, round(k / top * width)) if k else 0)

    days = {time.localtime(b["start"])[:3] for b in buckets}
    label = "%H:%M" if len(days) == 1 else "%a %H:%M" if bucket < 86400 else "%a %d %b"
    rows = [["overdue", overdue, bar(overdue)]] if overdue else []
    rows += [[time.strftime(label, time.localtime(b["start"])), b["count"], bar(b["count"])] for b in buckets]
    click.echo(f"{len(etas)} pending; one row per {span(bucket)}, from {local(start)}")
    out.table(rows, ["from", "tasks", ""])
    if later:
        click.echo(f"... and {later} due after {local(end)}")


# -- run -------------------------------------------------------------------------------------

def _load_app(spec: str) -> Any:
    """The object named by ``module:attr.path``, with the current directory importable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:ATTR (e.g. myapp.tasks:hu)",
                                 param_hint="'MODULE:ATTR'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise click.ClickException(f"cannot import {module_name!r}: {exc}") from None
        traceback.print_exc()      # the application's own import failed: show where
        raise click.ClickException(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:
        traceback.print_exc()
        raise click.ClickException(
            f"cannot import {module_name!r}: {exc.__class__.__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.ClickException(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


@cli.command()
@click.argument("app", metavar="MODULE:ATTR")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to let running tasks finish after SIGTERM/SIGINT.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True, help="Logging level (logs go to stderr).")
@output_options
def run(app: str, grace: float, log_level: str, out: Output) -> None:
    """Run an application's TimeWheel in the foreground.

    Imports MODULE (the current directory is on sys.path), calls start() on the TimeWheel
    named by ATTR and runs until SIGTERM or SIGINT.  Then it takes no new tasks, lets running
    ones finish for up to --grace seconds, records them and exits 0.  A second signal ends
    the process at once (tasks still running then run again after a restart).  With --json
    a summary is printed at exit.

    \b
    Example:
      timewheel run myapp.tasks:hu
      timewheel run myapp:app.hu --grace 60 --log-level DEBUG
    """
    from .api import TimeWheel

    from_signal: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Only record the request.  A handler runs on the main thread between two bytecodes,
        # possibly while that thread holds a lock (logging's, the store's, a Condition's);
        # stopping the wheel, logging or joining threads from here could deadlock or re-enter
        # them.  The loop below acts on the flag.
        from_signal.append(signum)

    hu = _load_app(app)
    if not isinstance(hu, TimeWheel):
        raise click.ClickException(f"{app} is a {type(hu).__name__}, not a TimeWheel")
    if hu.path is None or hu.immediate:
        raise click.ClickException(f"{app} keeps its tasks in memory; there is no store to work on")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # After the import, so an application that configures logging itself keeps its setup.
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    logging.getLogger("timewheel").setLevel(log_level.upper())
    try:
        hu.start()
    except _STORE_ERRORS as exc:
        _fail(exc)
    log.info("running %s (pid %d); SIGTERM or SIGINT stops it", hu, os.getpid())
    while not from_signal:
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)      # a second signal ends the process at once
    name = signal.Signals(from_signal[0]).name
    log.info("%s: taking no new tasks; waiting up to %gs for running ones (signal again to exit now)",
             name, grace)
    try:
        stopped = hu.stop(wait=True, timeout=grace)
    except _STORE_ERRORS as exc:
        _fail(exc)
    log.info("stopped: %d pending, %d running in the store", stopped.pending, stopped.running)
    if stopped.running == 0:
        hu.close()      # checkpoints the WAL; skipped while a task may still be recording itself
    if out.as_json:
        out.json({"app": app, "pid": os.getpid(), "signal": name,
                  "pending": stopped.pending, "running": stopped.running})
cli.add_command(importlib.import_module(".web.command", __package__).web)  # timewheel web (the web helper)
