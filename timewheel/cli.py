"""The ``timewheel`` command line: look into a store, manage its tasks, run a worker.

The commands are thin: :mod:`timewheel.query` builds what they show (the ``--json`` dicts,
shared with the web view), :mod:`timewheel.text` formats it, :mod:`timewheel.serve` runs an
application.  Stores are opened with :func:`timewheel.store.open_store` only: read-only
commands with ``readonly=True`` (nothing is created, converted or written), write commands
only once a read-only open has shown that the location already is a store.

Everything printed that came from a store goes through :func:`timewheel.text.clean`, so no
escape sequence in a task's name or error reaches the terminal.  Every library error becomes
one line on stderr and exit code 1; usage errors exit 2.  Imports are lazy where they cost:
a command on a store of a million tasks answers in a few hundred milliseconds, and Python's
start-up is most of that.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Optional, Sequence, TypeVar

import click

from .query import FINISHED
from .store.base import LISTABLE
from .text import clean, clip, duration, first_line, local, relative, seconds, size, span
from .text import progress as progress_text
from .web.command import web as web_command

if TYPE_CHECKING:
    from .api import TimeWheel
    from .store.base import WheelStore

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: tabulate's formats (tabulate.tabulate_formats), listed here so that --help does not
#: import tabulate; test_cli checks the two agree.
FORMATS = ("asciidoc", "colon_grid", "double_grid", "double_outline", "fancy_grid", "fancy_outline",
           "github", "grid", "heavy_grid", "heavy_outline", "html", "jira", "latex", "latex_booktabs",
           "latex_longtable", "latex_raw", "mediawiki", "mixed_grid", "mixed_outline", "moinmoin",
           "orgtbl", "outline", "pipe", "plain", "presto", "pretty", "psql", "rounded_grid",
           "rounded_outline", "rst", "simple", "simple_grid", "simple_outline", "textile", "tsv",
           "unsafehtml", "youtrack")


# -- errors ------------------------------------------------------------------------------------

def _fail(exc: BaseException) -> NoReturn:
    raise click.ClickException(clean(" ".join(str(exc).split())) or exc.__class__.__name__) from None


def _library_errors() -> tuple[type[BaseException], ...]:
    """What a store or a request can raise that means "cannot be served": one line, exit 1."""
    import sqlite3

    from .errors import TimeWheelError
    from .records import RecordDecodeError
    return (TimeWheelError, RecordDecodeError, sqlite3.Error, OSError)


@contextmanager
def _one_line(location: str) -> Iterator[None]:
    """Turn whatever a command raises into one line on stderr and exit 1.

    Library errors say what is wrong themselves.  Anything else escaping a store call on a
    damaged store (a ``ValueError`` from a field that holds no number) is reported too,
    naming the store; ``TIMEWHEEL_DEBUG=1`` shows its traceback instead.
    """
    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):   # usage errors too
        raise
    except _library_errors() as exc:
        _fail(exc)
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - the promise is one line
        if os.environ.get("TIMEWHEEL_DEBUG"):
            raise
        _fail(RuntimeError(f"{location}: cannot read the store ({exc.__class__.__name__}: {exc}); "
                           "it may be damaged (TIMEWHEEL_DEBUG=1 shows where)"))


def _needs_backend(location: str) -> None:
    """A server's store needs its driver: say how to install it rather than fail obscurely."""
    from .store import is_url, public_location
    from .store.postgres_url import is_postgres
    if not is_url(location):
        return
    module, extra, what = (("psycopg", "postgres", "a PostgreSQL") if is_postgres(location)
                           else ("redis", "redis", "a Redis"))
    try:
        __import__(module)
    except ImportError as exc:
        raise click.ClickException(f"{public_location(location)}: {what} store needs its driver: "
                                   f"pip install 'timewheel[{extra}]' ({exc})") from None


@contextmanager
def opened(location: str, *, write: bool = False, timeout: float = 10.0) -> Iterator["WheelStore"]:
    """The store at ``location`` (in the ``--namespace`` of the command line), closed
    afterwards; every error is one line, exit 1.

    A write command opens the store for writing only after a read-only open found one there:
    opening for writing would create a missing store, or adopt an empty or foreign file.
    """
    from .errors import NotAStore
    from .store import open_store

    _needs_backend(location)
    ctx = click.get_current_context(silent=True)
    namespace = ctx.meta.get(NAMESPACE, "timewheel") if ctx is not None else "timewheel"

    def open_it(readonly: bool) -> "WheelStore":
        try:
            return open_store(location, readonly=readonly, timeout=timeout, namespace=namespace)
        except ValueError as exc:         # an argument the backend refuses: --namespace
            raise click.BadParameter(str(exc), param_hint="'--namespace'") from None

    with _one_line(_shown(location)):
        store = None
        try:
            store = open_it(readonly=True)
        except NotAStore as exc:
            # a store of timewheel 0.1 is converted by the first writer: allowed to write it
            from .store.sqlite import OLD_FORMAT
            if not (write and OLD_FORMAT in str(exc)):
                raise
        if write:
            if store is not None:
                store.close()
            store = open_it(readonly=False)
        try:
            yield store
        finally:
            store.close()


# -- parameters ----------------------------------------------------------------------------------

def _shown(location: str) -> str:
    from .store import public_location
    return public_location(location)


class StoreLocation(click.ParamType):
    """A store file that exists, a redis://, rediss:// or unix:// URL, or a PostgreSQL
    connection string (postgresql://, postgres://, or libpq's keyword=value form).

    A missing file is an error (exit 1, like a file that is not a store), not a usage error.
    """

    name = "store"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        from .store import is_url
        text = os.fspath(value)
        if is_url(text):
            return text
        if not text or "\0" in text:
            raise click.ClickException(f"not a store path: {text!r}")
        if not os.path.lexists(text):
            raise click.ClickException(f"{clean(text)}: no such file (the store does not exist)")
        if os.path.isdir(text):
            raise click.ClickException(f"{clean(text)} is a directory, not a timewheel store")
        return text


NAMESPACE = "timewheel.namespace"


def _keep_namespace(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[NAMESPACE] = value
    return value


def db_argument(f: F) -> F:
    """The store, the first argument of every store command, and its ``--namespace``."""
    f = click.option("--namespace", default="timewheel", show_default=True, expose_value=False,
                     callback=_keep_namespace, metavar="NAME",
                     help="Redis stores: the application's key prefix; PostgreSQL stores: the schema "
                          "unless the connection string names one (its TimeWheel namespace=).")(f)
    return click.argument("db", metavar="DB", type=StoreLocation())(f)


def timeout_option(f: F) -> F:
    return click.option("--timeout", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
                        help="Seconds to wait for another process's write lock.")(f)


class Duration(click.ParamType):
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w`` or combinations like ``1h30m``; a unit is required
    (:func:`timewheel.text.duration`)."""

    name = "duration"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        try:
            return duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Hours(click.ParamType):
    """A number of hours: finite, above 0, at most ten years."""

    name = "hours"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        from .query import check_hours
        try:
            return check_hours(float(value))
        except ValueError as exc:
            why = str(exc) if "hours" in str(exc) else f"{clean(repr(value))} is not a number"
            self.fail(why, param, ctx)


# -- output ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """How a command prints: JSON, or tables in a tabulate format.  Text cells are cleaned."""

    as_json: bool
    fmt: str = "simple"

    def json(self, data: Any) -> None:
        import json
        # ensure_ascii: every control character of stored text is escaped in the JSON too
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=True))

    def table(self, rows: Sequence[Sequence[Any]], headers: Sequence[str] = (),
              empty: str = "(none)") -> None:
        if not rows:
            click.echo(empty)
            return
        cells = [[clean(c) if isinstance(c, str) else ("-" if c is None else c) for c in r] for r in rows]
        if self.fmt == "tsv":
            # tabulate pads tsv columns with spaces; a tsv is for programs: fields as they are
            lines = (["\t".join(headers)] if headers else []) + ["\t".join(map(str, r)) for r in cells]
            click.echo("\n".join(lines))
            return
        numeric = [all(isinstance(r[i], int) and not isinstance(r[i], bool) for r in cells)
                   for i in range(len(cells[0]))]
        if self.fmt == "simple":
            click.echo(simple_table(cells, headers, numeric))
            return
        from tabulate import tabulate
        # disable_numparse: task ids are strings, some of which look like numbers (1e5...)
        click.echo(tabulate(cells, headers=list(headers), tablefmt=self.fmt, disable_numparse=True,
                            colalign=["right" if n else "left" for n in numeric]))

    def title(self, text: str) -> None:
        click.echo()
        click.echo(click.style(clean(text), bold=True))

    def text(self, text: str, lines: bool = False) -> None:
        click.echo(clean(text, lines=lines))


def simple_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[bool]) -> str:
    """What ``tabulate(rows, headers, tablefmt="simple")`` prints (test_cli checks they agree),
    without importing tabulate: its import costs more than a command on a big store."""
    text = [[str(c).strip() for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(text[0]))]
    if headers:
        widths = [max(w, len(h) + 2) for w, h in zip(widths, headers)]      # tabulate's padding

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    dashes = "  ".join("-" * w for w in widths).rstrip()
    if headers:
        return "\n".join([line(list(headers)), dashes, *map(line, text)])
    return "\n".join([dashes, *map(line, text), dashes])


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``-t, --table`` / ``--fmt``, handed to the command as ``out``."""

    @click.option("--json", "output", flag_value="json",
                  help="Machine-readable JSON on stdout (keys documented in docs/cli.md).")
    @click.option("-t", "--table", "output", flag_value="table", default=True,
                  help="Human-readable tables (the default).")
    @click.option("--fmt", default="simple", show_default=True, metavar="FORMAT", type=click.Choice(FORMATS),
                  help="Table format (the list is in `timewheel --help`).")
    @functools.wraps(f)
    def wrapper(*args: Any, output: str, fmt: str, **kwargs: Any) -> Any:
        return f(*args, out=Output(as_json=output == "json", fmt=fmt), **kwargs)

    return wrapper


def attempts(row: dict[str, Any]) -> str:
    return f"{row['attempts']}/{row['max_attempts']}"


# -- the command group -----------------------------------------------------------------------------

class Group(click.Group):
    """click's group, with every error on one line of stderr: ``Error: ...`` and exit 1, or a
    usage error as ``Error: ... (see 'timewheel CMD --help')`` and exit 2 (click would print
    the usage and a hint around it)."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":      # `timewheel` alone: the help
                click.echo(exc.format_message())
                sys.exit(0)
            where = exc.ctx.command_path if exc.ctx is not None else "timewheel"
            message = clean(" ".join(exc.format_message().split()))
            click.echo(f"Error: {message} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {clean(' '.join(exc.format_message().split()))}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS, epilog="\b\nTable formats (--fmt):\n  "
             + "\n  ".join(", ".join(FORMATS[i:i + 8]) for i in range(0, len(FORMATS), 8)))
@click.version_option(None, "-V", "--version", prog_name="timewheel", package_name="timewheel",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Inspect and manage a timewheel store, or run a worker for an application.

    Every command but `run` takes the store (DB) first: a file, a redis://, rediss:// or
    unix:// URL (pip install 'timewheel[redis]'), or a PostgreSQL connection string:
    postgresql://user@host/db?schema=NAME or "host=... dbname=..." (pip install
    'timewheel[postgres]').  Read-only commands (inspect, tasks, show,
    stats, timeline) never create, change or lock a store and can run while an application
    uses it; cancel, retry and purge change it, and refuse anything that is not already a
    timewheel store.  All commands accept --json.

    \b
    Exit codes:
      0  ok
      1  error: missing or damaged store, unknown task id, store busy, app cannot be loaded
      2  usage error: bad option, duration, number or status

    \b
    Example:
      timewheel inspect tasks.db
      timewheel tasks tasks.db --status failed
      timewheel retry tasks.db --all-failed
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="timewheel")


# -- inspect ---------------------------------------------------------------------------------------

def _ring_strip(cells: list[dict[str, Any]], slots: int, current: int, width: int = 60) -> list[str]:
    """The ring as one line of ``width`` columns, denser characters for fuller columns."""
    columns = min(width, slots)
    per = slots / columns
    load = [0] * columns
    for c in cells:
        load[min(columns - 1, int(c["slot"] / per))] += c["count"]
    shades = " .:-=+*#%@"
    top = max(load) or 1
    line = "".join(shades[0] if n == 0 else shades[max(1, -(-n * (len(shades) - 1) // top))] for n in load)
    cursor = min(columns - 1, int((current % slots) / per))
    return [f"|{line}|", " " + " " * cursor + f"^ now (slot {current % slots})"]


def _inbox_line(inbox: dict[str, Any]) -> str:
    """What ``inspect`` says of the inbox other tools enqueue through (docs/guide/json.md)."""
    if inbox.get("error"):
        return f"cannot be read ({clean(inbox['error'])})"
    aside = inbox["set_aside"]
    return f"{inbox['waiting']} entries waiting" + (
        f"; {aside} SET ASIDE (hu.store.inbox_rejected(); docs/guide/json.md)" if aside else "")


def _owner(row: dict[str, Any]) -> str:
    if row["owner_alive"] is False:
        return f"{row['owner']} (gone: runs again once a process ticks)"
    return row["owner"] or "-"


@cli.command()
@db_argument
@click.option("--slots", "all_slots", is_flag=True, help="List every occupied slot, not just the next 10.")
@click.option("--next", "next_n", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="How many of the next due tasks to list.")
@output_options
def inspect(db: str, all_slots: bool, next_n: int, out: Output) -> None:
    """The wheel at a glance: counts, the ticker, running and next due tasks, the ring.

    \b
    Example:
      timewheel inspect tasks.db
      timewheel inspect tasks.db --slots --fmt github
      timewheel inspect tasks.db --json | jq .ticker.lag_seconds
    """
    from .query import inspect_data
    with opened(db) as store:
        data = inspect_data(store, store.now(), all_slots=all_slots, next_n=next_n)
    if out.as_json:
        out.json(data)
        return
    st, tk, n, now = data["store"], data["ticker"], data["counts"], data["ticker"]["now"]
    current, tick = tk["current_tick"], st["tick"]
    if tk["ticking"]:
        ticker = f"ticking, led by {tk['leader']}; lag {span(tk['lag_seconds'])}"
    else:
        behind = (current - tk["horizon"]) * tick
        last = f" (last: {tk['last_leader']})" if tk["last_leader"] else " (no process has called start())"
        ticker = ("NOT ticking: no live process holds the ticking role" + last
                  + (f"; {span(behind)} behind" if behind > 0 else ""))
    if st["size_bytes"] is not None:
        where = ["file", f"{size(st['size_bytes'])} + {size(st['wal_bytes'] or 0)} WAL, "
                         f"journal_mode={st['journal_mode']}"]
    elif "redis_version" in st:
        used = "" if st.get("used_memory_bytes") is None else f", {size(st['used_memory_bytes'])} used"
        lease = "" if st.get("lease") is None else f", leases of {st['lease']:g}s"
        where = ["server", f"Redis {st['redis_version']}{used}; namespace {st.get('namespace')!r}{lease}"]
    elif "postgres_version" in st:
        dead = "" if st.get("dead_rows") is None else f", {st['dead_rows']} dead rows"
        where = ["server", f"PostgreSQL {clean(str(st['postgres_version']))}; schema {st.get('schema')!r}, "
                           f"tasks table {size(st['table_bytes'] or 0)}{dead}; leases of {st['lease']:g}s"
                           + ("" if st.get("listen") else "; LISTEN off")]
    else:
        where = ["where", st["backend"]]
    out.table([
        ["store", f"{st['path']} ({st['backend']})"],
        where,
        ["wheel", f"{st['slots']} slots x {st['tick']:g}s"],
        ["tasks", f"{n['pending']} pending, {n['running']} running, {n['claimed']} claimed (queued in a "
                  f"process for a worker), {n['failed']} failed (buried), done: "
                  f"{n['succeeded']} succeeded, {n['cancelled']} cancelled, {n['misfired']} misfired, "
                  f"{n['aborted']} aborted"
                  + (f"; {n['broken']} BROKEN (timewheel tasks --status broken)" if n["broken"] else "")],
        ["processes", "{alive} alive: {busy} task(s) running on a worker, {queued} claimed and queued for "
                      "one".format(**data["processes"])],
        *([["inbox", _inbox_line(data["inbox"])]] if data["inbox"] is not None else []),
        ["now", f"{local(now)}, tick {current}"],
        ["ticker", ticker],
        ["state", f"horizon tick {tk['horizon']} ({tk['horizon'] - current:+d}), "
                  f"done through {tk['done_through']} ({tk['done_through'] - current:+d})"],
    ])
    if data["running"]:
        out.title("Running")
        out.table([[r["id"], r["name"], span(r["running_for"] or 0), _owner(r)] for r in data["running"]],
                  ["id", "name", "for", "owner"])
    out.title("Next due")
    out.table([[d["id"], d["name"], local(d["eta"]), relative(d["eta"], now)] for d in data["next_due"]],
              ["id", "name", "due", ""], empty="(nothing pending)")
    out.title("Pending by name")
    out.table(list(data["pending_by_name"].items()), ["name", "pending"], empty="(nothing pending)")
    ring = data["ring"]
    out.title(f"Ring: {ring['occupied_cells']} occupied (slot, cycle) cells in"
              f" {ring['occupied_slots']} of {st['slots']} slots")
    cells = ring["cells"]
    if cells:
        for line in _ring_strip(cells, st["slots"], current):
            click.echo(line)
    out.table([[c["slot"], c["cycle"], c["tick"], local(c["due"]), relative(c["due"], now), c["count"]]
               for c in cells], ["slot", "cycle", "tick", "tick ends", "", "tasks"], empty="(empty)")
    if not ring["complete"]:
        click.echo(f"... {ring['occupied_cells'] - len(cells)} more; --slots lists them all")
    _flow_tables(data, out)


def _limit_text(lim: dict[str, Any]) -> str:
    parts = [f"{lim['concurrency']} at once" if lim.get("concurrency") else "",
             lim["rate"] if lim.get("rate") else ""]
    return f"{lim['key']}: " + ", ".join(p for p in parts if p)


def _flow_tables(data: dict[str, Any], out: Output) -> None:
    """The queues and limits of inspect and stats (flow control)."""
    if data["queues"]:
        out.title("Queues")
        out.table([[q["queue"], q["pending"], q["waiting"], q["running"],
                    "PAUSED" if q["paused"] else ("served" if q["served"] else "no process serves it")]
                   for q in data["queues"]], ["queue", "pending", "due, waiting", "running", ""])
    if data["limits"]:
        out.title("Limits")
        now = data.get("now") or data.get("ticker", {}).get("now") or time.time()
        out.table([[lim["key"], f"{lim['running']}/{lim['concurrency']}" if lim["concurrency"] else "-",
                    f"{lim['recent_starts']} in the window of {lim['rate']}" if lim["rate"] else "-",
                    lim["parked"],
                    "-" if lim["reopens"] is None else relative(lim["reopens"], now)]
                   for lim in data["limits"]], ["limit", "running", "rate", "parked", "reopens"])


def _check_queue_option(queue: Optional[str]) -> None:
    if queue is not None:
        from .flow import check_queue
        try:
            check_queue(queue)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'QUEUE'") from None


# -- tasks / show ----------------------------------------------------------------------------------

def _status(row: dict[str, Any]) -> str:
    waits = row.get("waiting_for")
    status = "retrying" if row.get("retrying") else row["status"]
    if waits:
        status = f"waiting (on {waits} of {len(row['depends_on'])} dependencies)"
    if status == "running":
        if row.get("progress"):
            status += " " + progress_text(row["progress"])
        if row.get("abort_requested") is not None:
            status += " (asked to abort)"
    return status + (" (owner gone)" if row["owner_alive"] is False else "")


@cli.command()
@db_argument
@click.option("--status", type=click.Choice(LISTABLE), help="Only tasks in this status.")
@click.option("--name", help="Only tasks registered under this name.")
@click.option("--id", "id_prefix", metavar="PREFIX", help="Only tasks whose id starts with PREFIX.")
@click.option("--queue", metavar="QUEUE", help="Only tasks of this queue.")
@click.option("--limit", type=click.IntRange(0, 10 ** 7), default=50, show_default=True,
              help="At most this many rows (0: no limit).")
@click.option("--after", metavar="ID", help="Continue a listing after this task (the last one shown).")
@output_options
def tasks(db: str, status: Optional[str], name: Optional[str], id_prefix: Optional[str],
          queue: Optional[str], limit: int, after: Optional[str], out: Output) -> None:
    """One line per task: id, name, status, due, finished, attempts, error.

    Without --status: pending tasks in due order, then running ones, then finished ones
    most recent first, then broken records (which cannot be decoded; the reason is the error).

    \b
    Example:
      timewheel tasks tasks.db
      timewheel tasks tasks.db --status failed --name emails.send --limit 0
      timewheel tasks tasks.db --status broken
      timewheel tasks tasks.db --queue reports --status pending
    """
    from .query import tasks_data
    _check_queue_option(queue)
    with opened(db) as store:
        data = tasks_data(store, store.now(), status=status, name=name, id_prefix=id_prefix,
                          limit=limit or None, after=after, queue=queue)
    if out.as_json:
        out.json(data)
        return
    now = data["now"]
    out.table([[r["id"], r["name"], _status(r),
                relative(r["eta"], now) if r["status"] == "pending" else "-",
                relative(r["finished"], now) if r["status"] in FINISHED and r["finished"] else "-",
                attempts(r), clip(r["error"] or "", 60) or "-"]
               for r in data["tasks"]],
              ["id", "name", "status", "due", "finished", "attempts", "error"], empty="(no tasks)")
    if data["next_after"]:
        click.echo(f"(first {limit}; --after {clean(data['next_after'])} shows the next page, --limit 0 all)")


@cli.command()
@db_argument
@click.argument("task_id", metavar="ID")
@click.option("--full", is_flag=True, help="Show arguments, results and tracebacks up to much larger bounds.")
@output_options
def show(db: str, task_id: str, full: bool, out: Output) -> None:
    """Everything about one task, result or error included.

    Arguments and results are decoded without importing any module: objects of application
    classes are shown as placeholders like <app.User name='x'> or app.make(1); values too
    large to show are cut, and say so.

    \b
    Example:
      timewheel show tasks.db 3f2a9c0d1e4b5a6f00000001
      timewheel show tasks.db 3f2a9c0d1e4b5a6f00000001 --json | jq .traceback
    """
    from .query import show_data
    with opened(db) as store:
        d = show_data(store, task_id, store.now(), full=full)
    if out.as_json:
        out.json(d)
        return
    hint = "" if full else "; --full shows more"
    late = "" if d["lateness"] is None else f" ({seconds(d['lateness'])} late)"
    rows = [["id", d["id"]], ["name", d["name"]], ["status", _status(d)]]
    if d["status"] != "broken":
        rows += [
            ["due", f"{local(d['eta'])} ({relative(d['eta'], d['eta'] - d['due_in'])})"],
            ["created", local(d["created"])],
            ["started", local(d["started"]) + late],
            ["finished", local(d["finished"])],
            ["attempts", f"{attempts(d)} (retry_delay {d['retry_delay']:g}s)"],
            ["crashes", d["crashes"]],
            ["misfire_grace", "-" if d["misfire_grace"] is None else f"{d['misfire_grace']:g}s"],
            ["timeout", "-" if d["timeout"] is None else f"{d['timeout']:g}s"],
            ["owner", _owner(d)],
            ["queue", f"{d['queue']} (priority {d['priority']})"],
        ]
        if d["progress"]:
            rows.append(["progress", f"{progress_text(d['progress'])} at {local(d['progress']['at'])}"])
        if d["limits"]:
            rows.append(["limits", "; ".join(_limit_text(x) for x in d["limits"])])
        if d["first_call"] is not None:
            wait = "" if d["max_wait"] is None else f", at most {d['max_wait']:g}s after it"
            rows.append(["debounced", f"first call {local(d['first_call'])}{wait}"])
        if d["waiting"]:
            rows.append(["waiting", d["waiting"]])
        for key in ("dependencies", "dependents"):
            if d[key]:
                rows.append([key, ", ".join(f"{x['id']} ({x['status'] or 'purged'})" for x in d[key])])
        if d["takes_result"]:
            rows.append(["then", "its first argument is its dependency's result"])
        if d["args_error"] is None:
            rows += [["args", d["args"] + (f" (cut{hint})" if d["args_truncated"] else "")],
                     ["kwargs", d["kwargs"]]]
        else:
            rows.append(["arguments", f"{d['args_error']} ({d['payload_bytes']} bytes)"])
        if d["result_bytes"] is not None:
            result = (f"{d['result_error']} ({d['result_bytes']} bytes)" if d["result_error"] is not None
                      else d["result"] + (f" (cut{hint})" if d["result_truncated"] else ""))
            rows.append(["result", result])
    if d["error"]:
        rows.append(["error", d["error"]])
    out.table(rows)
    if d.get("history"):
        out.title(f"Attempts (the last {len(d['history'])})")
        out.table([[a["attempt"], a["outcome"], local(a["started"]),
                    "-" if a["lateness"] is None else seconds(a["lateness"]),
                    "-" if a["duration"] is None else seconds(a["duration"]), a["owner"] or "-",
                    first_line(a["error"]) or "-"] for a in d["history"]],
                  ["#", "outcome", "started", "late", "took", "owner", "error"])
    if d["traceback"]:
        out.title("Traceback")
        out.text(clip(d["traceback"].rstrip(), None if full else 4000, hint), lines=True)


# -- batches (issue 23) ------------------------------------------------------------------------------

@cli.command()
@db_argument
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many batches, the most recently opened first.")
@output_options
def batches(db: str, limit: int, out: Output) -> None:
    """The batches (hu.batch(on_complete=...)), newest first: members per status, callbacks.

    \b
    Example:
      timewheel batches tasks.db
    """
    from .query import batches_data
    with opened(db) as store:
        d = batches_data(store, store.now(), limit=limit)
    if out.as_json:
        out.json(d)
        return
    out.table([[b["id"], b["status"], local(b["created"]), f"{b['finished']}/{b['total']}",
               _batch_counts(b), ", ".join(c["event"][3:] for c in b["callbacks"])] for b in d["batches"]],
             ["id", "status", "opened", "finished", "members", "callbacks"], empty="(no batches)")


def _batch_counts(b: dict[str, Any]) -> str:
    return " ".join(f"{c} {n}" for c, n in b["counts"].items() if n) or "-"


@cli.command()
@db_argument
@click.argument("batch_id", metavar="ID")
@click.option("--limit", type=click.IntRange(0, 10 ** 7), default=20, show_default=True,
              help="At most this many members (0: all), in the order they were added.")
@click.option("--start", type=click.IntRange(0, 10 ** 12), default=0, show_default=True,
              help="Skip this many members.")
@output_options
def batch(db: str, batch_id: str, limit: int, start: int, out: Output) -> None:
    """One batch: its status, members per status, callbacks and members.

    \b
    Example:
      timewheel batch tasks.db 3f2a9c0d1e4b5a6f00000000 --limit 0
    """
    from .query import batch_data
    with opened(db) as store:
        d = batch_data(store, batch_id, store.now(), limit=limit, start=start)
    if out.as_json:
        out.json(d)
        return
    out.table([["id", d["id"]], ["status", d["status"]], ["opened", local(d["created"])],
               ["done", local(d["done"])], ["progress", f"{d['finished']} of {d['total']} finished"],
               ["members", _batch_counts(d)]]
              + [[c["event"], f"{c['name']} {c['id']} ({c['status'] or 'not added yet'})"]
                 for c in d["callbacks"]])
    out.title("Members")
    out.table([[m["id"], m.get("name", "-"), m["status"], local(m.get("finished")),
                first_line(m.get("error"))] for m in d["members"]],
              ["id", "name", "status", "finished", "error"], empty="(no members)")
    if d["next_start"] is not None:
        click.echo(f"(--start {d['next_start']} shows the next members, --limit 0 all)")


# -- cancel / retry / purge ------------------------------------------------------------------------

def _ids(ids: Sequence[str], most: int = 20) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _report_changes(location: str, result: dict[str, Any], verb: str, why_not: str, out: Output,
                    strict: bool) -> None:
    """Print what changed; what could not be changed is one error line (exit 1): unknown ids,
    and, when the user named them (``strict``), tasks in a state that does not allow it."""
    if out.as_json:
        out.json(result)
    else:
        skipped = [] if strict else result["skipped"]
        out.table([[i, verb] for i in result[verb]]
                  + [[s["id"], f"not {verb}: it is {s['status']}"] for s in skipped],
                  ["id", "result"], empty=f"(nothing {verb})")
    problems = []
    if result["unknown"]:
        problems.append(f"no task {_ids(result['unknown'])} in {location}")
    if strict and result["skipped"]:
        by_status: dict[str, list[str]] = {}
        for s in result["skipped"]:
            by_status.setdefault(s["status"], []).append(s["id"])
        problems.append("; ".join(f"task {_ids(ids)} {'is' if len(ids) == 1 else 'are'} {status}"
                                  for status, ids in by_status.items()) + f" ({why_not})")
    if problems:
        click.echo(clean(f"Error: {'; '.join(problems)}"), err=True)
        click.get_current_context().exit(1)


@cli.command()
@db_argument
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@timeout_option
@output_options
def cancel(db: str, ids: tuple[str, ...], timeout: float, out: Output) -> None:
    """Cancel pending tasks: they will never run.

    Exits 1 if an id is unknown or its task is no longer pending (it ran or is running).

    \b
    Example:
      timewheel cancel tasks.db 3f2a9c0d1e4b5a6f00000001 3f2a9c0d1e4b5a6f00000002
    """
    from .query import change_tasks
    with opened(db, write=True, timeout=timeout) as store:
        result = change_tasks(store, ids, "cancel")
        where = store.location
    _report_changes(where, result, "cancelled", "only pending tasks can be cancelled", out, strict=True)


@cli.command()
@db_argument
@click.argument("ids", metavar="ID...", nargs=-1, required=True)
@timeout_option
@output_options
def abort(db: str, ids: tuple[str, ...], timeout: float, out: Output) -> None:
    """Stop tasks: a running one is asked to abort, a pending one is cancelled.

    The process running it learns so within a tick: an async task is cancelled, a sync one
    sees current_task().aborted.  It ends "aborted" and is not retried.

    Exits 1 if an id is unknown or its task has finished already.

    \b
    Example:
      timewheel abort tasks.db 3f2a9c0d1e4b5a6f00000001
    """
    from .query import abort_tasks
    with opened(db, write=True, timeout=timeout) as store:
        result = abort_tasks(store, ids)
        where = store.location
    if out.as_json:
        out.json(result)
    else:
        out.table([[i, "asked to abort"] for i in result["aborting"]]
                  + [[i, "cancelled"] for i in result["cancelled"]], ["id", "result"],
                  empty="(nothing stopped)")
    problems = []
    if result["unknown"]:
        problems.append(f"no task {_ids(result['unknown'])} in {where}")
    if result["skipped"]:
        problems.append("; ".join(f"task {s['id']} is {s['status']}" for s in result["skipped"])
                        + " (only pending and running tasks can be stopped)")
    if problems:
        click.echo(clean(f"Error: {'; '.join(problems)}"), err=True)
        click.get_current_context().exit(1)


@cli.command()
@db_argument
@click.argument("ids", metavar="[ID...]", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed (buried) task.")
@click.option("--name", help="With --all-failed: only tasks registered under this name.")
@timeout_option
@output_options
def retry(db: str, ids: tuple[str, ...], all_failed: bool, name: Optional[str], timeout: float,
          out: Output) -> None:
    """Put failed tasks back as pending, due now.

    They get a fresh retry budget.  Misfired and cancelled tasks can be retried by id too.
    A running application picks them up within a fraction of a second.

    \b
    Example:
      timewheel retry tasks.db 3f2a9c0d1e4b5a6f00000001
      timewheel retry tasks.db --all-failed --name emails.send
    """
    if bool(ids) == all_failed:
        raise click.UsageError("give task ids or --all-failed (not both)")
    if name is not None and not all_failed:
        raise click.UsageError("--name only goes with --all-failed")
    from .query import change_tasks, retry_failed
    with opened(db, write=True, timeout=timeout) as store:
        result = retry_failed(store, name=name) if all_failed else change_tasks(store, ids, "retry")
        where = store.location
    # With --all-failed, a task another process retried meanwhile is no error.
    _report_changes(where, result, "retried", "only failed, misfired or cancelled tasks can be retried",
                    out, strict=not all_failed)


@cli.command()
@db_argument
@click.option("--older-than", "older_than", type=Duration(), required=True,
              help="Age since the task finished: 30s, 10m, 2h, 7d, 1h30m ...")
@click.option("--status", "statuses", multiple=True, type=click.Choice(FINISHED),
              help="Only finished tasks in this status (repeatable; default: all finished ones).")
@click.option("--dry-run", is_flag=True, help="Delete nothing; count what would be deleted.")
@timeout_option
@output_options
def purge(db: str, older_than: float, statuses: tuple[str, ...], dry_run: bool, timeout: float,
          out: Output) -> None:
    """Delete tasks that finished longer ago than --older-than.

    Pending and running tasks are never purged.  --dry-run only counts (and opens the store
    read-only).

    \b
    Example:
      timewheel purge tasks.db --older-than 7d --dry-run
      timewheel purge tasks.db --older-than 12h --status failed --status misfired
    """
    from .query import purge_data
    with opened(db, write=not dry_run, timeout=timeout) as store:
        data = purge_data(store, store.now(), older_than=older_than, statuses=statuses or None,
                          dry_run=dry_run)
    if out.as_json:
        out.json(data)
        return
    which = ", ".join(data["statuses"])
    if dry_run:
        click.echo(f"would purge {data['matching']} task(s) ({which}) that finished before "
                   f"{local(data['finished_before'])} (dry run: nothing deleted)")
    else:
        click.echo(f"purged {data['purged']} task(s) ({which}) that finished before "
                   f"{local(data['finished_before'])}")


# -- stats -----------------------------------------------------------------------------------------

@cli.command()
@db_argument
@click.option("--recent", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Lateness is measured over this many most recent runs.")
@output_options
def stats(db: str, recent: int, out: Output) -> None:
    """Counts per status and name; how late recent runs started.

    \b
    Example:
      timewheel stats tasks.db
      timewheel stats tasks.db --recent 100 --json | jq .lateness.p95
    """
    from .query import stats_data
    with opened(db) as store:
        data = stats_data(store, store.now(), recent=recent)
    if out.as_json:
        out.json(data)
        return
    counts = data["counts"]
    out.table([[s, counts[s]] for s in LISTABLE], ["status", "tasks"])
    out.title("By name")
    out.table([[n, *c.values(), sum(c.values())] for n, c in data["by_name"].items()],
              ["name", *LISTABLE, "total"], empty="(no tasks)")
    runs = data["lateness"]["runs"]
    out.title(f"Lateness (started - eta) of the last {runs} run(s)")
    rows = [["(all)", data["lateness"]]] + list(data["lateness_by_name"].items())
    out.table([[n, s["runs"], *(seconds(s[k]) for k in ("min", "p50", "p95", "max", "mean"))]
               for n, s in rows if s["runs"]],
              ["name", "runs", "min", "p50", "p95", "max", "mean"], empty="(no runs yet)")
    _flow_tables(data, out)


# -- processes -------------------------------------------------------------------------------------

@cli.command()
@db_argument
@output_options
def processes(db: str, out: Output) -> None:
    """The started processes of the store: live ones, and those stopped or dead in the last hour.

    Each started process reports itself every 2 s: its host and pid, when it started, the
    queues it serves, its workers, how many are busy running a task and how many claimed
    tasks wait in its queue for one.  A process killed without stopping is dead at once on a
    file store, and once its lease runs out (10 s by default) on Redis and PostgreSQL.

    \b
    Example:
      timewheel processes tasks.db
      timewheel processes redis://localhost:6379/0 --json | jq '.processes[] | select(.state == "alive")'
    """
    from .query import processes_data
    with opened(db) as store:
        data = processes_data(store, store.now())
    if out.as_json:
        out.json(data)
        return
    out.table([[p["state"], p["host"], p["pid"], local(p["started"]),
                "*" if p["queues"] is None else ",".join(p["queues"]), p["workers"], p["busy"], p["queued"],
                f"{seconds(p['heartbeat_age'])} ago"] for p in data["processes"]],
              ["state", "host", "pid", "started", "queues", "workers", "busy", "queued", "heartbeat"],
              empty="(no process has started on this store in the last hour)")


# -- pause / resume --------------------------------------------------------------------------------

def _pause_command(paused: bool) -> Callable[..., None]:
    def command(db: str, queue: str, timeout: float, out: Output) -> None:
        from .query import pause_data
        _check_queue_option(queue)
        with opened(db, write=True, timeout=timeout) as store:
            data = pause_data(store, queue, paused)
        if out.as_json:
            out.json(data)
            return
        verb = "paused" if paused else "resumed"
        click.echo(clean(f"queue {queue} {verb}" if data["changed"] else
                         f"queue {queue} was already {'paused' if paused else 'not paused'}"))
    return command


@cli.command()
@db_argument
@click.argument("queue", metavar="QUEUE")
@timeout_option
@output_options
def pause(db: str, queue: str, timeout: float, out: Output) -> None:
    """Stop every process from starting QUEUE's tasks, until `timewheel resume`.

    The pause is stored: it holds on every host and across restarts.  Running tasks finish;
    pending ones stay pending (misfire_grace still applies when they are finally claimed).

    \b
    Example:
      timewheel pause tasks.db reports
    """
    _pause_command(True)(db, queue, timeout, out)


@cli.command()
@db_argument
@click.argument("queue", metavar="QUEUE")
@timeout_option
@output_options
def resume(db: str, queue: str, timeout: float, out: Output) -> None:
    """Let QUEUE's tasks start again (the running processes look at once).

    \b
    Example:
      timewheel resume tasks.db reports
    """
    _pause_command(False)(db, queue, timeout, out)


# -- timeline --------------------------------------------------------------------------------------

@cli.command()
@db_argument
@click.option("--hours", type=Hours(), default=24.0, show_default=True,
              help="How far ahead to look (at most ten years).")
@click.option("--name", help="Only tasks registered under this name.")
@click.option("--width", type=click.IntRange(10, 500), default=50, show_default=True,
              help="Characters of the longest bar.")
@output_options
def timeline(db: str, hours: float, name: Optional[str], width: int, out: Output) -> None:
    """A histogram of when pending tasks come due.

    \b
    Example:
      timewheel timeline tasks.db
      timewheel timeline tasks.db --hours 2 --name emails.send
    """
    from .query import timeline_data
    with opened(db) as store:
        data = timeline_data(store, store.now(), hours=hours, name=name)
    if out.as_json:
        out.json(data)
        return
    buckets, overdue = data["buckets"], data["overdue"]
    top = max([overdue, *(b["count"] for b in buckets)]) or 1

    def bar(k: int) -> str:
        return "#" * (max(1, round(k / top * width)) if k else 0)

    bucket = data["bucket_seconds"]
    days = {time.localtime(b["start"])[:3] for b in buckets}
    label = "%H:%M" if len(days) == 1 else "%a %H:%M" if bucket < 86400 else "%a %d %b %Y"
    rows = [["overdue", overdue, bar(overdue)]] if overdue else []
    rows += [[time.strftime(label, time.localtime(b["start"])), b["count"], bar(b["count"])] for b in buckets]
    click.echo(f"{data['pending']} pending; one row per {span(bucket)}, from {local(buckets[0]['start'])}")
    out.table(rows, ["from", "tasks", ""])
    if data["later"]:
        click.echo(f"... and {data['later']} due after {local(buckets[-1]['end'])}")


# -- run -------------------------------------------------------------------------------------------

@cli.command()
@db_argument
@click.option("--tick", type=click.FloatRange(0.001, 86400), default=1.0, show_default=True,
              help="A new store's tick (as the application's TimeWheel(tick=)).")
@click.option("--slots", type=click.IntRange(1, 999_999), default=3600, show_default=True,
              help="A new store's slots (as the application's TimeWheel(slots=)).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: schema, version (stored; 0: none), target, statements.")
def migrate(db: str, tick: float, slots: int, as_json: bool) -> None:
    """Print the SQL that creates a PostgreSQL store, or brings it to this version.

    For databases whose schema changes are applied by their owner or a migration tool: an
    application whose database user may create schemas creates and migrates its store
    itself, on first use.  The SQL runs in one transaction; pipe it to psql.  Nothing is
    changed by this command (it reads which version is there).

    \b
    Example:
      timewheel migrate "postgresql://app@db/app?schema=timewheel" | psql -v ON_ERROR_STOP=1 "$ADMIN_URL"
    """
    from .store.postgres_url import is_postgres
    from .wheel import Wheel
    if not is_postgres(db):
        raise click.UsageError("migrate is for PostgreSQL stores (file and Redis stores need no migration "
                               "script: they are converted when opened)")
    _needs_backend(db)
    ctx = click.get_current_context()
    with _one_line(_shown(db)):
        from .store.postgres import migration_script
        schema, version, sql = migration_script(db, namespace=ctx.meta.get(NAMESPACE, "timewheel"),
                                                wheel=Wheel(slots=slots, tick=tick))
    from .store.postgres_sql import FORMAT, VERSION
    if as_json:
        import json
        click.echo(json.dumps({"schema": schema, "version": version, "target": VERSION, "format": FORMAT,
                               "statements": [st.strip() for st in sql]}))
        return
    if not sql:
        click.echo(f"-- schema {schema} holds {FORMAT} version {version}: up to date, nothing to do")
        return
    what = "creates the store" if version == 0 else f"migrates the store from version {version}"
    click.echo(f"-- timewheel: {what} in schema {schema} ({FORMAT} version {VERSION})")
    for statement in sql:
        click.echo(statement.strip() + ";\n")


@cli.command()
@click.argument("app", metavar="MODULE:ATTR")
@click.option("--grace", type=click.FloatRange(0, 86400), default=30.0, show_default=True,
              help="Seconds to let running tasks finish after SIGTERM/SIGINT.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True, help="Logging level (logs go to stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout at exit.")
@click.option("--queues", metavar="Q1,Q2", help="Run only the tasks of these queues (default: every queue).")
def run(app: str, grace: float, log_level: str, as_json: bool, queues: Optional[str]) -> None:
    """Run an application's TimeWheel in the foreground.

    Imports MODULE (the current directory is on sys.path), calls start() on the TimeWheel
    named by ATTR and runs until SIGTERM or SIGINT.  Then it takes no new tasks, lets running
    ones finish for up to --grace seconds, records them and exits 0.  A second signal ends
    the process at once (tasks still running then run again after a restart).

    \b
    Example:
      timewheel run myapp.tasks:hu
      timewheel run myapp:app.hu --grace 60 --log-level DEBUG
      timewheel run myapp.tasks:hu --queues default,emails
    """
    from .serve import AppError, load_app
    served = queues_option(queues)
    try:
        hu = load_app(app)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'MODULE:ATTR'") from None
    except AppError as exc:
        _fail(exc)
    run_wheel(hu, app, grace, log_level, as_json, served)


def queues_option(queues: Optional[str]) -> Optional[frozenset]:
    """The queues of ``run --queues a,b`` (None: every queue); a bad name is a usage error."""
    if queues is None:
        return None
    from .flow import check_queues
    try:
        return check_queues([q.strip() for q in queues.split(",")])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--queues'") from None


def run_wheel(hu: "TimeWheel", app: str, grace: float, log_level: str, as_json: bool,
              queues: Optional[frozenset] = None) -> None:
    """What ``run`` does once it has the wheel (``flask timewheel run`` shares it): serve
    until a signal, errors as one line, and the JSON summary at exit.  ``queues``: run only
    those queues' tasks (None: every queue)."""
    from .serve import serve
    names: list[str] = []
    with _one_line(hu.location):
        stopped = serve(hu, grace, log_level, on_signal=names.append, queues=queues)
    if as_json:
        Output(as_json=True).json({"app": app, "pid": os.getpid(), "signal": names[0] if names else None,
                                   "pending": stopped.pending, "running": stopped.running,
                                   "unfinished": stopped.unfinished})


cli.add_command(web_command)     # timewheel web: the web view's command, from timewheel.web


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
