"""The ``timewheel`` command line: every command, every error path, and real processes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from click.testing import CliRunner, Result

from timewheel import TimeWheel
from timewheel.cli import SafeUnpickler, cli, peek_repr, span
from timewheel.records import TaskRecord
from timewheel.store import Outcome, SqliteDictStore

from .conftest import wait_for

READ_COMMANDS = [["inspect"], ["tasks"], ["show", "{id}"], ["stats"], ["timeline"]]
WRITE_COMMANDS = [["cancel", "{id}"], ["retry", "{id}"], ["purge", "--older-than", "1d"]]
DEAD_OWNER = "999999999:deadbeef"


class Account:
    """An application class: the CLI must show it without importing this module."""

    def __init__(self, name: str) -> None:
        self.name = name


class Evil:
    """Unpickling this (normally) would create a file: the CLI must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (self.path,))


# -- helpers -----------------------------------------------------------------------------------

def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def assert_clean_error(result: Result, code: int, *needles: str) -> None:
    """Exit ``code``, a message naming ``needles`` on stderr, and no traceback anywhere."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def rec(task_id: str, name: str, eta: float, args: tuple = (), kwargs: Optional[dict] = None,
        **kw: Any) -> TaskRecord:
    return TaskRecord(id=task_id, name=name, eta=eta, payload=pickle.dumps((args, kwargs or {})),
                      created=time.time(), **kw)


def make_store(path: Path) -> dict[str, str]:
    """A store with a task in every status; returns their ids by status."""
    now = time.time()
    s = SqliteDictStore(str(path))
    s.add([
        rec("p-soon", "emails.send", now + 90, (Account("ann"), "hi"), {"urgent": True}),
        rec("p-later", "emails.send", now + 3 * 3600, ("bob@example.com", "x" * 1000)),
        rec("p-far", "reports.build", now + 3 * 86400),
        rec("p-evil", "reports.build", now + 600, (Evil(str(path.parent / "pwned")),)),
        rec("ok", "reports.build", now - 5, (1,)),
        rec("bad", "emails.send", now - 4, (2,)),
        rec("run", "emails.send", now - 3),
        rec("late", "emails.send", now - 60, misfire_grace=1.0),
        rec("gone", "emails.send", now + 60),
    ])
    st = s.state()
    due = s.load(st.horizon, s.wheel.current_tick(now) + 1, st.done_through)
    claim = s.claim([d for d in due if d.id in {"ok", "bad", "run", "late"}], DEAD_OWNER, now, starting=4)
    assert sorted(r.id for r in claim.run) == ["bad", "ok", "run"]
    assert [r.id for r in claim.misfired] == ["late"]
    s.finish([
        Outcome("ok", True, result=pickle.dumps({"sent": 3, "to": Account("ann")}), finished=now),
        Outcome("bad", False, error="ValueError: no such mailbox", finished=now,
                traceback="Traceback (most recent call last):\n  File 'app.py', line 1\n"
                          "ValueError: no such mailbox\n"),
    ])
    assert s.cancel("gone", now)
    s.close()
    return {"pending": "p-soon", "succeeded": "ok", "failed": "bad", "running": "run",
            "misfired": "late", "cancelled": "gone"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.db"
    make_store(path)
    return path


def not_stores(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    foreign = tmp_path / "users.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'ann')")
    con.commit()
    con.close()
    empty_sqlite = tmp_path / "empty.sqlite"
    sqlite3.connect(empty_sqlite).close()      # a 0-byte file
    blank = tmp_path / "blank.db"
    con = sqlite3.connect(blank)               # an SQLite file with no tables at all
    con.execute("PRAGMA user_version = 7")
    con.commit()
    con.close()
    return {"text": text, "foreign": foreign, "empty": empty_sqlite, "blank": blank}


def console_script() -> str:
    found = shutil.which("timewheel", path=os.path.dirname(sys.executable))
    assert found, "the timewheel console script is not installed next to this python"
    return found


# -- help ------------------------------------------------------------------------------------------

def test_every_command_has_help_with_an_example() -> None:
    top = ok("-h").output
    assert "Exit codes" in top and "usage error" in top
    assert set(cli.commands) == {"inspect", "tasks", "show", "cancel", "retry", "purge", "stats",
                                 "timeline", "run"}
    for name, command in cli.commands.items():
        text = ok(name, "-h").output
        assert ok(name, "--help").output == text
        assert command.help and command.help.strip().splitlines()[0], name
        assert "Example:" in text and f"timewheel {name} " in text, name
        assert "--json" in text, name


# -- read-only commands -----------------------------------------------------------------------------

def test_inspect(store: Path) -> None:
    before = fingerprint(store)
    text = ok("inspect", str(store)).stdout
    assert "4 pending, 1 running, 1 failed" in text and "1 misfired" in text
    assert "journal_mode=wal" in text and "NOT ticking" in text and "never ticked" in text
    assert re.search(r"p-soon .* in 1m \d+s", text)        # next due, local and relative
    assert "emails.send" in text and "reports.build" in text
    assert "^ now" in text                                    # the compact ring
    data = as_json("inspect", str(store))
    assert set(data) == {"store", "counts", "ticker", "next_due", "pending_by_name", "ring"}
    assert data["counts"] == {"pending": 4, "running": 1, "succeeded": 1, "failed": 1,
                              "cancelled": 1, "misfired": 1, "broken": 0}
    assert set(data["store"]) == {"path", "journal_mode", "size_bytes", "wal_bytes", "slots", "tick"}
    assert data["store"]["journal_mode"] == "wal" and data["store"]["slots"] == 3600
    ticker = data["ticker"]
    assert set(ticker) == {"now", "current_tick", "horizon", "done_through", "lag_ticks",
                           "lag_seconds", "ticking", "leader"}
    assert ticker["current_tick"] == int(ticker["now"])
    assert ticker["ticking"] is False and ticker["leader"] is None   # nobody ever started it
    assert [d["id"] for d in data["next_due"]] == ["p-soon", "p-evil", "p-later", "p-far"]
    assert 80 < data["next_due"][0]["due_in"] <= 90
    assert data["pending_by_name"] == {"emails.send": 2, "reports.build": 2}
    ring = data["ring"]
    assert ring["occupied_cells"] == 4 and ring["complete"] is True
    assert sum(c["count"] for c in ring["cells"]) == 4
    assert [c["tick"] for c in ring["cells"]] == sorted(c["tick"] for c in ring["cells"])
    assert all(c["slot"] == c["tick"] % 3600 and c["cycle"] == c["tick"] // 3600 for c in ring["cells"])
    assert fingerprint(store) == before


def test_inspect_lists_ten_cells_unless_slots(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    now = time.time()
    s = SqliteDictStore(str(path))
    s.add([rec(f"t{i:02d}", "x", now + 100 + 7 * i) for i in range(25)])
    s.close()
    short = as_json("inspect", str(path))
    assert len(short["ring"]["cells"]) == 10 and short["ring"]["complete"] is False
    assert "15 more; --slots lists them all" in ok("inspect", str(path)).stdout
    full = as_json("inspect", str(path), "--slots")
    assert len(full["ring"]["cells"]) == 25 and full["ring"]["complete"] is True
    assert ok("inspect", str(path), "--slots", "--fmt", "github").stdout.count("| ") > 25
    assert as_json("inspect", str(path), "--next", "2")["next_due"][1]["id"] == "t01"


def test_tasks_lists_and_filters(store: Path) -> None:
    before = fingerprint(store)
    text = ok("tasks", str(store)).stdout
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["id", "name", "status"]
    assert [ln.split()[0] for ln in lines[2:6]] == ["p-soon", "p-evil", "p-later", "p-far"]
    assert re.search(r"in 1m \d+s", text) and "ago" in text and "0/1" in text
    data = as_json("tasks", str(store))
    assert {t["id"] for t in data["tasks"]} == {"p-soon", "p-evil", "p-later", "p-far", "ok", "bad",
                                                 "run", "late", "gone"}
    assert set(data["tasks"][0]) == {"id", "name", "status", "eta", "due_in", "attempts",
                                     "max_attempts", "crashes", "created", "started", "finished",
                                     "owner", "error"}
    assert [t["id"] for t in as_json("tasks", str(store), "--status", "failed")["tasks"]] == ["bad"]
    running = as_json("tasks", str(store), "--status", "running")["tasks"]
    assert running[0]["owner"] == DEAD_OWNER
    named = as_json("tasks", str(store), "--name", "reports.build", "--status", "pending")["tasks"]
    assert [t["id"] for t in named] == ["p-evil", "p-far"]
    assert len(as_json("tasks", str(store), "--limit", "2")["tasks"]) == 2
    assert "--limit 0 lists all" in ok("tasks", str(store), "--limit", "2").stdout
    assert "(no tasks)" in ok("tasks", str(store), "--name", "nope").stdout
    assert fingerprint(store) == before


def test_show_decodes_arguments_without_importing_or_running_anything(store: Path) -> None:
    before = fingerprint(store)
    text = ok("show", str(store), "p-soon").stdout
    assert "<tests.test_cli.Account name='ann'>" in text or "<test_cli.Account name='ann'>" in text
    assert "'urgent': True" in text
    data = as_json("show", str(store), "p-evil")
    assert data["args"].startswith("(posix.mkdir(") or data["args"].startswith("(os.mkdir(")
    assert not (store.parent / "pwned").exists()
    long = ok("show", str(store), "p-later").stdout
    assert "chars; --full shows all" in long
    assert "x" * 1000 in ok("show", str(store), "p-later", "--full").stdout
    assert fingerprint(store) == before


def test_show_result_error_and_traceback(store: Path) -> None:
    done = as_json("show", str(store), "ok")
    assert done["status"] == "succeeded" and "'sent': 3" in done["result"]
    assert "Account name='ann'" in done["result"] and done["result_error"] is None
    assert done["lateness"] is not None and 0 <= done["lateness"] < 30
    failed = ok("show", str(store), "bad").stdout
    assert "ValueError: no such mailbox" in failed and "Traceback (most recent call last)" in failed
    data = as_json("show", str(store), "bad")
    assert data["error"] == "ValueError: no such mailbox" and data["traceback"].startswith("Traceback")
    assert data["attempts"] == 1 and data["max_attempts"] == 1
    assert "misfire_grace is 1.0s" in as_json("show", str(store), "late")["error"]
    assert as_json("show", str(store), "run")["owner"] == DEAD_OWNER


def test_show_reports_undecodable_payloads(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = SqliteDictStore(str(path))
    s.add([TaskRecord(id="junk", name="x", eta=time.time() + 60, payload=b"\x80\x05garbage")])
    s.close()
    result = ok("show", str(path), "junk")
    assert "cannot decode it" in result.stdout and "(9 bytes)" in result.stdout
    data = as_json("show", str(path), "junk")
    assert data["args"] is None and data["args_error"].startswith("cannot decode it")
    assert data["payload_bytes"] == 9


def test_safe_unpickler_placeholders() -> None:
    import datetime
    import uuid
    from collections import OrderedDict
    u = uuid.uuid4()
    value = {"when": datetime.datetime(2024, 5, 1, 12, 0), "id": u, "n": 1 + 2j,
             "od": OrderedDict(a=1), "fn": os.path.join, "cls": Account, "acct": Account("z")}
    text, error = peek_repr(pickle.dumps(value))
    assert error is None
    assert "datetime.datetime(2024, 5, 1, 12, 0)" in text and repr(u) in text and "(1+2j)" in text
    assert "OrderedDict" in text and "posixpath.join" in text
    assert "test_cli.Account" in text and "name='z'" in text
    # a class the unpickler cannot construct never gets imported: it is a placeholder
    obj = SafeUnpickler(pickle.dumps(Account("q"))).load()
    assert type(obj).__name__ == "Account" and not isinstance(obj, Account)
    assert peek_repr(b"\x80\x05\x95garbage")[1].startswith("cannot decode it")


def test_output_options(store: Path) -> None:
    default = ok("tasks", str(store)).stdout
    assert ok("tasks", str(store), "-t").stdout == ok("tasks", str(store), "--table").stdout == default
    assert ok("tasks", str(store), "--fmt", "github").stdout.startswith("| id ")
    assert "\t" in ok("stats", str(store), "--fmt", "tsv").stdout
    json.loads(ok("tasks", str(store), "--fmt", "grid", "--json").stdout)


def test_span_formatting() -> None:
    assert span(5) == "5s" and span(190) == "3m 10s" and span(3600) == "1h" and span(90061) == "1d 1h"


def test_stats(store: Path) -> None:
    before = fingerprint(store)
    text = ok("stats", str(store)).stdout
    assert "By name" in text and "Lateness" in text and "emails.send" in text
    data = as_json("stats", str(store))
    assert set(data) == {"counts", "by_name", "lateness", "lateness_by_name"}
    assert data["counts"]["pending"] == 4 and data["counts"]["misfired"] == 1
    assert data["by_name"]["emails.send"] == {"pending": 2, "running": 1, "succeeded": 0, "failed": 1,
                                              "cancelled": 1, "misfired": 1}
    lat = data["lateness"]
    assert lat["runs"] == 3 and set(lat) == {"runs", "min", "p50", "p95", "max", "mean"}
    assert 0 <= lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"] < 60
    assert data["lateness_by_name"]["reports.build"]["runs"] == 1
    assert as_json("stats", str(store), "--recent", "1")["lateness"]["runs"] == 1
    assert fingerprint(store) == before


def test_stats_ignores_the_old_start_of_a_task_waiting_for_its_retry(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = SqliteDictStore(str(path))
    now = time.time()
    s.add([rec("r", "x", now - 1, retries=1)])
    st = s.state()
    s.claim(s.load(st.horizon, s.wheel.current_tick(now) + 1, st.done_through), DEAD_OWNER, now, starting=1)
    s.finish([Outcome("r", False, error="boom", retry_at=now + 300, finished=now)])
    assert s.get("r").status == "pending" and s.get("r").started is not None
    s.close()
    assert as_json("stats", str(path))["lateness"]["runs"] == 0
    assert "(no runs yet)" in ok("stats", str(path)).stdout


def test_timeline(store: Path) -> None:
    before = fingerprint(store)
    data = as_json("timeline", str(store), "--hours", "24")
    assert set(data) == {"now", "hours", "bucket_seconds", "overdue", "later", "buckets"}
    assert data["bucket_seconds"] == 3600 and data["overdue"] == 0 and data["later"] == 1
    assert sum(b["count"] for b in data["buckets"]) == 3
    assert data["buckets"][0]["start"] <= data["now"] < data["buckets"][0]["end"]
    text = ok("timeline", str(store), "--hours", "4").stdout
    assert "#" in text and "one row per 10m" in text and "due after" in text
    only = as_json("timeline", str(store), "--name", "reports.build", "--hours", "1")
    assert sum(b["count"] for b in only["buckets"]) == 1 and only["later"] == 1
    assert fingerprint(store) == before


def test_read_commands_leave_a_crashed_writers_wal_alone(tmp_path: Path) -> None:
    """A process killed while writing leaves frames in the -wal file; a read-only command must
    not checkpoint them into the store (that would rewrite it)."""
    path = tmp_path / "tasks.db"
    code = textwrap.dedent(f"""
        import os, pickle, time
        from timewheel.store import SqliteDictStore
        from timewheel.records import TaskRecord
        s = SqliteDictStore({str(path)!r})
        for i in range(20):
            s.add([TaskRecord(id=f"t{{i}}", name="n", eta=time.time() + 60,
                              payload=pickle.dumps(((), {{}})))])
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    wal = Path(str(path) + "-wal")
    assert wal.stat().st_size > 0
    before, wal_before = fingerprint(path), wal.read_bytes()
    # Separate processes: what matters happens when sqlitedict's connection is finalised.
    for command in (["inspect", "--json"], ["show", "{id}"]):
        done = subprocess.run([console_script(), *_args(command, path, "t3")], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "t3" in done.stdout
    for command in READ_COMMANDS:
        ok(*_args(command, path, "t3"))
    assert as_json("inspect", str(path))["counts"]["pending"] == 20
    assert fingerprint(path) == before and wal.read_bytes() == wal_before


# -- write commands -------------------------------------------------------------------------------

def test_cancel(store: Path) -> None:
    data = as_json("cancel", str(store), "p-soon")
    assert data == {"cancelled": ["p-soon"], "skipped": [], "unknown": []}
    assert as_json("show", str(store), "p-soon")["status"] == "cancelled"
    result = invoke("cancel", str(store), "p-far", "ok", "nope")
    assert_clean_error(result, 1, "no task nope in", "task ok is succeeded")
    assert "p-far" in result.stdout and as_json("show", str(store), "p-far")["status"] == "cancelled"
    assert invoke("cancel", str(store)).exit_code == 2          # no id: usage error


def test_retry(store: Path) -> None:
    assert as_json("retry", str(store), "bad") == {"retried": ["bad"], "skipped": [], "unknown": []}
    back = as_json("show", str(store), "bad")
    assert back["status"] == "pending" and back["attempts"] == 0 and back["due_in"] <= 0
    assert_clean_error(invoke("retry", str(store), "p-far"), 1, "task p-far is pending")
    assert_clean_error(invoke("retry", str(store), "nope"), 1, "no task nope in")
    assert as_json("retry", str(store), "late", "gone")["retried"] == ["late", "gone"]


def test_retry_all_failed(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    make_store(path)
    s = SqliteDictStore(str(path))
    s.add([rec("bad2", "x", time.time() - 1)])
    st = s.state()
    due = s.load(st.horizon, s.wheel.current_tick(time.time()) + 1, st.done_through)
    s.claim([d for d in due if d.id == "bad2"], DEAD_OWNER, time.time(), starting=1)
    s.finish([Outcome("bad2", False, error="boom", finished=time.time())])
    s.close()
    data = as_json("retry", str(path), "--all-failed")
    assert sorted(data["retried"]) == ["bad", "bad2"] and data["unknown"] == []
    assert as_json("retry", str(path), "--all-failed")["retried"] == []
    assert "(nothing retried)" in ok("retry", str(path), "--all-failed").stdout
    assert_clean_error(invoke("retry", str(path)), 2, "give task ids or --all-failed")
    assert_clean_error(invoke("retry", str(path), "bad", "--all-failed"), 2, "not both")


def test_purge(store: Path) -> None:
    assert as_json("purge", str(store), "--older-than", "1h")["purged"] == 0
    data = as_json("purge", str(store), "--older-than", "0s", "--status", "failed", "--status", "misfired")
    assert data["purged"] == 2 and data["statuses"] == ["failed", "misfired"]
    assert_clean_error(invoke("show", str(store), "bad"), 1, "no task bad in")
    assert "purged 2 task(s)" in ok("purge", str(store), "--older-than", "0s").stdout
    counts = as_json("inspect", str(store))["counts"]
    assert counts["pending"] == 4 and counts["running"] == 1
    assert counts["succeeded"] == counts["failed"] == counts["cancelled"] == counts["misfired"] == 0


@pytest.mark.parametrize("bad", ["7", "7x", "d7", "1h 30m", "-5m", ""])
def test_bad_duration_is_a_usage_error(store: Path, bad: str) -> None:
    before = fingerprint(store)
    assert_clean_error(invoke("purge", str(store), "--older-than", bad), 2, "is not a duration")
    assert fingerprint(store) == before


def test_durations_with_units_are_accepted(store: Path) -> None:
    for good in ("30s", "10m", "2h", "7d", "1w", "1h30m", "1.5h"):
        ok("purge", str(store), "--older-than", good)


def test_bad_status_is_a_usage_error(store: Path) -> None:
    before = fingerprint(store)
    assert_clean_error(invoke("tasks", str(store), "--status", "done"), 2, "'done' is not one of")
    assert_clean_error(invoke("purge", str(store), "--older-than", "1d", "--status", "pending"), 2,
                       "'pending' is not one of")
    assert_clean_error(invoke("inspect", str(store), "--fmt", "nope"), 2, "'nope' is not one of")
    assert fingerprint(store) == before


# -- error paths: no traceback, one line, files untouched -----------------------------------------

def _args(command: list[str], path: Path, task_id: str = "p-soon") -> list[str]:
    return [command[0], str(path), *(a.format(id=task_id) for a in command[1:])]


@pytest.mark.parametrize("command", READ_COMMANDS + WRITE_COMMANDS, ids=lambda c: c[0])
def test_missing_file(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    result = invoke(*_args(command, missing))
    assert_clean_error(result, 1, str(missing), "does not exist")
    assert result.stderr.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READ_COMMANDS + WRITE_COMMANDS, ids=lambda c: c[0])
def test_files_that_are_not_stores(tmp_path: Path, command: list[str]) -> None:
    files = not_stores(tmp_path)
    before = {k: fingerprint(p) for k, p in files.items()}
    listing = sorted(tmp_path.iterdir())
    for kind, path in files.items():
        result = invoke(*_args(command, path))
        assert_clean_error(result, 1, str(path))
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "not a timewheel store" in result.stderr or "cannot open" in result.stderr, kind
    assert {k: fingerprint(p) for k, p in files.items()} == before
    assert sorted(tmp_path.iterdir()) == listing          # no -wal, -shm or .lock left behind


def test_paths_sqlite_would_misread_as_uri_syntax_are_refused(tmp_path: Path) -> None:
    make_store(tmp_path / "tasks.db")
    odd = tmp_path / "we#ird?dir"
    odd.mkdir()
    (tmp_path / "tasks.db").rename(odd / "tasks.db")
    before = sorted(tmp_path.rglob("*"))
    for command in READ_COMMANDS + WRITE_COMMANDS:
        assert_clean_error(invoke(*_args(command, odd / "tasks.db")), 1, "'?' or '#' is not supported")
    assert sorted(tmp_path.rglob("*")) == before          # no stray file named "we"


def test_directory_is_refused(tmp_path: Path) -> None:
    assert_clean_error(invoke("inspect", str(tmp_path)), 1, "is a directory")
    assert_clean_error(invoke("purge", str(tmp_path), "--older-than", "1d"), 1, "is a directory")


@pytest.mark.parametrize("command", [["show"], ["cancel"], ["retry"]], ids=lambda c: c[0])
def test_unknown_id(store: Path, command: list[str]) -> None:
    before = fingerprint(store)
    result = invoke(command[0], str(store), "no-such-id")
    assert_clean_error(result, 1, "no-such-id", str(store))
    assert result.stderr.strip().count("\n") == 0
    assert fingerprint(store) == before


def test_errors_and_read_commands_leave_the_store_untouched(store: Path) -> None:
    before = fingerprint(store)
    siblings = sorted(store.parent.iterdir())
    for command in READ_COMMANDS:
        ok(*_args(command, store))
        ok(*_args(command, store), "--json")
    invoke("show", str(store), "nope")
    invoke("purge", str(store), "--older-than", "soon")
    assert fingerprint(store) == before
    # Any SQLite reader of a WAL file may leave an empty -wal and the -shm index behind (who
    # deletes them depends on which connection closes last); nothing else may appear.
    extra = set(store.parent.iterdir()) - set(siblings)
    assert extra <= {Path(f"{store}-wal"), Path(f"{store}-shm")}
    assert not extra or Path(f"{store}-wal").stat().st_size == 0


def test_write_command_on_a_busy_store_fails_cleanly(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timewheel.cli

    def impatient(path: str, *args: Any, **kwargs: Any) -> SqliteDictStore:
        return SqliteDictStore(path, *args, busy_timeout=0.2, **kwargs)

    monkeypatch.setattr(timewheel.cli, "SqliteDictStore", impatient)
    con = sqlite3.connect(store, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")        # another process holds the write lock
    try:
        assert_clean_error(invoke("cancel", str(store), "p-soon"), 1, "locked", str(store))
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert as_json("show", str(store), "p-soon")["status"] == "pending"


def test_run_refuses_what_it_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cliapp_bad.py").write_text(textwrap.dedent("""
        from timewheel import TimeWheel
        hu = TimeWheel(None)
        number = 3
    """))
    (tmp_path / "cliapp_broken.py").write_text("import no_such_dependency_xyz\n")
    assert_clean_error(invoke("run", "no_such_module_xyz:hu"), 1, "cannot import 'no_such_module_xyz'")
    assert_clean_error(invoke("run", "cliapp_bad"), 2, "is not MODULE:ATTR")
    assert_clean_error(invoke("run", "cliapp_bad:nope"), 1, "has no attribute 'nope'")
    assert_clean_error(invoke("run", "cliapp_bad:number"), 1, "is a int, not a TimeWheel")
    assert_clean_error(invoke("run", "cliapp_bad:hu"), 1, "keeps its tasks in memory")
    result = invoke("run", "cliapp_broken:hu")
    assert result.exit_code == 1 and "no_such_dependency_xyz" in result.stderr
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- real processes ---------------------------------------------------------------------------------

APP = """
import os, sys, time
from timewheel import TimeWheel

hu = TimeWheel(os.environ["TW_DB"], workers=2)


@hu.task(name="job")
def job(x):
    return x * 2


@hu.task(name="slow")
def slow(seconds, marker):
    with open(marker, "w") as fh:
        fh.write(str(time.time()))
    time.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    hu.start()
    job.delay(21).result(timeout=20)
    for i in range(5):
        job.delay(i, count_down=600 + i)
    with open(sys.argv[1], "w") as fh:
        fh.write("ready")
    while True:            # keep ticking until the test kills us
        time.sleep(0.1)
"""


def slow_signature(seconds: float, marker: str) -> str:
    """The producer's side of the app's ``slow`` task: only its name and signature matter."""
    raise AssertionError("runs in the worker process, not here")


def test_console_script_against_a_store_another_process_is_using(tmp_path: Path) -> None:
    path, ready, log = tmp_path / "tasks.db", tmp_path / "ready", tmp_path / "app.log"
    (tmp_path / "cliapp_live.py").write_text(APP)
    env = {**os.environ, "TW_DB": str(path)}
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, str(tmp_path / "cliapp_live.py"), str(ready)],
                                 env=env, cwd=tmp_path, stderr=err)
    try:
        wait_for(lambda: ready.exists() or child.poll() is not None, 15, what="child ready")
        assert child.poll() is None, log.read_text()
        exe = console_script()
        done = subprocess.run([exe, "inspect", str(path), "--json"], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["counts"]["pending"] == 5 and data["counts"]["succeeded"] == 1
        assert data["ticker"]["ticking"] is True
        assert data["ticker"]["leader"].startswith(f"{child.pid}:")
        assert data["ticker"]["lag_seconds"] <= 5
        assert data["pending_by_name"] == {"job": 5}
        listing = subprocess.run([exe, "tasks", str(path)], capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.count(" pending ") == 5 and " succeeded " in listing.stdout
        # a write from the CLI while the app runs: the app's boss sees it
        first = data["next_due"][0]["id"]
        cancelled = subprocess.run([exe, "cancel", str(path), first], capture_output=True, text=True,
                                   timeout=30)
        assert cancelled.returncode == 0, cancelled.stderr
        assert child.poll() is None
    finally:
        child.terminate()
        child.wait(timeout=15)
    ro = SqliteDictStore(str(path), readonly=True)
    try:
        assert ro.get(first).status == "cancelled" and ro.counts()["pending"] == 4
    finally:
        ro.close()


def test_run_finishes_the_running_task_on_sigterm_and_exits_0(tmp_path: Path) -> None:
    path, marker = tmp_path / "tasks.db", tmp_path / "started"
    (tmp_path / "cliapp_run.py").write_text(APP)
    producer = TimeWheel(str(path))
    running = producer.task(name="slow")(slow_signature).delay(2.0, str(marker), count_down=0.3)
    producer.close()
    log = tmp_path / "worker.log"
    with open(log, "w") as err:
        worker = subprocess.Popen([console_script(), "run", "cliapp_run:hu", "--grace", "20", "--json"],
                                  cwd=tmp_path, env={**os.environ, "TW_DB": str(path)},
                                  stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for(lambda: marker.exists() or worker.poll() is not None, 15, what="task started")
        assert worker.poll() is None, log.read_text()
        worker.send_signal(signal.SIGTERM)
        sent = time.time()
        wait_for(lambda: "taking no new tasks" in log.read_text(), 15, what="shutdown logged")
        # Due now, but added after the signal: the stopping worker must leave it alone.
        producer = TimeWheel(str(path))
        after = producer.task(name="slow")(slow_signature).delay(0.0, str(tmp_path / "never"))
        producer.close()
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log.read_text()
    summary = json.loads(out)
    assert summary["signal"] == "SIGTERM" and summary["running"] == 0
    ro = SqliteDictStore(str(path), readonly=True)
    try:
        rec = ro.get(running.id)
        assert rec.status == "succeeded" and pickle.loads(rec.result) == "slept"
        assert rec.finished is not None and rec.finished >= sent
        assert ro.get(after.id).status == "pending"
    finally:
        ro.close()
    assert not (tmp_path / "never").exists()
    text = log.read_text()
    assert "Traceback" not in text and "SIGTERM" in text
