"""The ``timewheel`` command line: every command, every error path, and real processes."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from timewheel.cli import FORMATS, cli, simple_table
from timewheel.records import Outcome, TaskRecord, end_run
from timewheel.store import open_store
from timewheel.testing import console_script
from timewheel.testing import processes as procs

from .cli_fixtures import fingerprint, invoke, populate, rec
from .conftest import ROOT, wait_for

READ_COMMANDS = [["inspect"], ["tasks"], ["show", "{id}"], ["stats"], ["timeline"]]
WRITE_COMMANDS = [["cancel", "{id}"], ["retry", "{id}"], ["purge", "--older-than", "1d"]]
DEAD_OWNER = "999999:deadbeef:999999"


# -- helpers -----------------------------------------------------------------------------------

def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def assert_clean_error(result: Result, code: int, *needles: str) -> None:
    """Exit ``code``, one line on stderr naming ``needles``, and no traceback anywhere."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if code == 1:
        assert result.stderr.strip().count("\n") == 0, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def make_store(path: Path) -> dict[str, str]:
    s = open_store(str(path))
    try:
        return populate(s, time.time(), DEAD_OWNER, str(path.parent / "pwned"))
    finally:
        s.close()


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
    empty = tmp_path / "empty.sqlite"
    empty.touch()                              # a 0-byte file
    blank = tmp_path / "blank.db"
    con = sqlite3.connect(blank)               # an SQLite file with no tables at all
    con.execute("PRAGMA user_version = 7")
    con.commit()
    con.close()
    return {"text": text, "foreign": foreign, "empty": empty, "blank": blank}


def _args(command: list[str], path: "Path | str", task_id: str = "p-soon") -> list[str]:
    return [command[0], str(path), *(a.format(id=task_id) for a in command[1:])]


# -- help ------------------------------------------------------------------------------------------

def test_every_command_has_help_with_an_example_and_the_formats_are_listed_once() -> None:
    import tabulate
    assert set(FORMATS) == set(tabulate.tabulate_formats)
    top = ok("-h").output
    assert "Exit codes" in top and "usage error" in top and "0  ok" in top
    assert all(f in top for f in FORMATS) and "unsafehtml" in top
    assert set(cli.commands) >= {"inspect", "tasks", "show", "cancel", "retry", "purge", "stats",
                                 "timeline", "run"}
    for name, command in cli.commands.items():
        text = ok(name, "-h").output
        assert ok(name, "--help").output == text
        assert command.help and command.help.strip().splitlines()[0], name
        assert "Example:" in text and f"timewheel {name} " in text, name
        if name != "web":                # a server: it prints no data to format
            assert "--json" in text, name
        assert "unsafehtml" not in text and "latex_booktabs" not in text, name
    assert "--fmt" not in ok("run", "-h").output and "--table" not in ok("run", "-h").output
    assert re.match(r"timewheel \d+\.\d+", ok("--version").output)


# -- read-only commands ------------------------------------------------------------------------------

def test_inspect(store: Path) -> None:
    before = fingerprint(store)
    text = ok("inspect", str(store)).stdout
    assert "4 pending, 1 running, 1 failed" in text and "1 misfired" in text
    assert "journal_mode=wal" in text and "NOT ticking" in text and "(last: tests)" in text
    assert re.search(r"p-soon .* in 1m \d+s", text)        # next due, local and relative
    assert "emails.send" in text and "reports.build" in text
    assert "^ now" in text                                    # the compact ring
    assert f"{DEAD_OWNER} (gone: runs again once a process ticks)" in text
    data = as_json("inspect", str(store))
    assert set(data) == {"store", "counts", "ticker", "next_due", "running", "pending_by_name", "ring",
                         "queues", "limits", "processes"}
    assert data["counts"] == {"pending": 4, "running": 1, "succeeded": 1, "failed": 1,
                              "cancelled": 1, "misfired": 1, "aborted": 0, "broken": 0}
    assert {"path", "journal_mode", "size_bytes", "wal_bytes", "slots", "tick"} <= set(data["store"])
    assert data["store"]["journal_mode"] == "wal" and data["store"]["slots"] == 3600
    assert data["store"]["path"] == str(store)
    ticker = data["ticker"]
    assert {"now", "current_tick", "horizon", "done_through", "lag_ticks", "lag_seconds", "ticking",
            "leader"} <= set(ticker)
    assert ticker["current_tick"] == int(ticker["now"])
    assert ticker["ticking"] is False and ticker["leader"] is None   # no process runs it
    assert [d["id"] for d in data["next_due"]] == ["p-soon", "p-evil", "p-later", "p-far"]
    assert 80 < data["next_due"][0]["due_in"] <= 90
    assert data["running"][0]["owner_alive"] is False
    assert data["pending_by_name"] == {"emails.send": 2, "reports.build": 2}
    ring = data["ring"]
    assert ring["occupied_cells"] == 4 and ring["complete"] is True
    assert sum(c["count"] for c in ring["cells"]) == 4
    assert fingerprint(store) == before


def test_inspect_lists_ten_cells_unless_slots(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    now = time.time()
    s = open_store(str(path))
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
    assert lines[0].split() == ["id", "name", "status", "due", "finished", "attempts", "error"]
    assert [ln.split()[0] for ln in lines[2:6]] == ["p-soon", "p-evil", "p-later", "p-far"]
    assert re.search(r"p-soon .* in 1m \d+s", text) and "0/1" in text
    gone = next(ln for ln in lines if ln.startswith("gone "))
    assert not re.search(r"\bin \d", gone) and re.search(r"now|ago", gone)       # not "due in 9m"
    bad = next(ln for ln in lines if ln.startswith("bad "))
    assert "ValueError: no such mailbox" in bad and re.search(r"now|ago", bad)
    assert "running (owner gone)" in text
    data = as_json("tasks", str(store))
    assert [t["id"] for t in data["tasks"]] == ["p-soon", "p-evil", "p-later", "p-far", "run", "late",
                                                "gone", "bad", "ok"]
    assert {"id", "name", "status", "eta", "due_in", "attempts", "max_attempts", "crashes", "created",
            "started", "finished", "owner", "error", "owner_alive"} <= set(data["tasks"][0])
    assert [t["id"] for t in as_json("tasks", str(store), "--status", "failed")["tasks"]] == ["bad"]
    assert as_json("tasks", str(store), "--status", "running")["tasks"][0]["owner"] == DEAD_OWNER
    named = as_json("tasks", str(store), "--name", "reports.build", "--status", "pending")["tasks"]
    assert [t["id"] for t in named] == ["p-evil", "p-far"]
    by_id = as_json("tasks", str(store), "--id", "p-")["tasks"]          # in id order
    assert [t["id"] for t in by_id][:1] == ["p-evil"]
    page = as_json("tasks", str(store), "--limit", "2")
    assert len(page["tasks"]) == 2 and page["next_after"] == "p-evil"
    assert "--after p-evil shows the next page" in ok("tasks", str(store), "--limit", "2").stdout
    assert [t["id"] for t in as_json("tasks", str(store), "--limit", "2", "--after", "p-evil")["tasks"]] == [
        "p-later", "p-far"]
    assert "(no tasks)" in ok("tasks", str(store), "--name", "nope").stdout
    assert fingerprint(store) == before


def test_tsv_is_not_padded(store: Path) -> None:
    lines = ok("tasks", str(store), "--fmt", "tsv").stdout.splitlines()
    assert lines[0] == "id\tname\tstatus\tdue\tfinished\tattempts\terror"
    fields = [ln.split("\t") for ln in lines[1:]]
    assert all(len(f) == 7 for f in fields)
    assert all(f == f.strip() for row in fields for f in row)
    assert fields[0][:3] == ["p-soon", "emails.send", "pending"]


def test_show_decodes_arguments_without_importing_or_running_anything(store: Path) -> None:
    before = fingerprint(store)
    text = ok("show", str(store), "p-soon").stdout
    assert "<tests.cli_fixtures.Account name='ann'>" in text
    assert "'urgent': True" in text
    data = as_json("show", str(store), "p-evil")
    assert data["args"].startswith("(posix.mkdir(")
    assert not (store.parent / "pwned").exists()
    long = ok("show", str(store), "p-later").stdout
    assert "(cut; --full shows more)" in long and "x" * 1000 not in long
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
    assert "misfire_grace is 1s" in as_json("show", str(store), "late")["error"]
    running = as_json("show", str(store), "run")
    assert running["owner"] == DEAD_OWNER and running["owner_alive"] is False
    assert "(gone: runs again once a process ticks)" in ok("show", str(store), "run").stdout


def test_show_reports_undecodable_payloads(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = open_store(str(path))
    s.add([TaskRecord(id="junk", name="x", eta=time.time() + 60, payload=b"\x80\x05garbage")])
    s.close()
    result = ok("show", str(path), "junk")
    assert "cannot decode it" in result.stdout and "(9 bytes)" in result.stdout
    data = as_json("show", str(path), "junk")
    assert data["args"] is None and data["args_error"].startswith("cannot decode it")
    assert data["payload_bytes"] == 9


def test_output_options(store: Path) -> None:
    default = ok("tasks", str(store)).stdout
    assert ok("tasks", str(store), "-t").stdout == ok("tasks", str(store), "--table").stdout == default
    assert ok("tasks", str(store), "--fmt", "github").stdout.startswith("| id ")
    json.loads(ok("tasks", str(store), "--fmt", "grid", "--json").stdout)


def test_stats(store: Path) -> None:
    before = fingerprint(store)
    text = ok("stats", str(store)).stdout
    assert "By name" in text and "Lateness" in text and "emails.send" in text
    data = as_json("stats", str(store))
    assert {"counts", "by_name", "lateness", "lateness_by_name"} <= set(data)
    assert data["counts"]["pending"] == 4 and data["counts"]["misfired"] == 1
    assert data["by_name"]["emails.send"] == {"pending": 2, "running": 1, "succeeded": 0, "failed": 1,
                                              "cancelled": 1, "misfired": 1, "aborted": 0, "broken": 0}
    lat = data["lateness"]
    assert lat["runs"] == 3 and set(lat) == {"runs", "min", "p50", "p95", "max", "mean"}
    assert 0 <= lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"] < 60
    assert as_json("stats", str(store), "--recent", "1")["lateness"]["runs"] == 1
    assert fingerprint(store) == before


def test_stats_of_a_store_without_runs(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = open_store(str(path))
    now = time.time()
    s.add([rec("r", "x", now - 1, retries=1)])
    s.advance(s.wheel.current_tick(now), 10, "tests")
    (claimed,) = s.claim(DEAD_OWNER, now, 1).records
    s.swap([(claimed, end_run(claimed, Outcome(False, now, now, error="boom")))])   # retrying
    s.close()
    assert as_json("stats", str(path))["lateness"]["runs"] == 0
    assert "(no runs yet)" in ok("stats", str(path)).stdout


def test_timeline(store: Path) -> None:
    before = fingerprint(store)
    data = as_json("timeline", str(store), "--hours", "24")
    assert {"now", "hours", "bucket_seconds", "overdue", "later", "buckets"} <= set(data)
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
    not checkpoint them into the store (that would rewrite it), nor create or delete a file."""
    path = tmp_path / "tasks.db"
    code = textwrap.dedent(f"""
        import os, pickle, time
        from timewheel.store import open_store
        from timewheel.records import TaskRecord
        s = open_store({str(path)!r})
        for i in range(20):
            s.add([TaskRecord(id=f"t{{i}}", name="n", eta=time.time() + 60,
                              payload=pickle.dumps(((), {{}})))])
        os._exit(0)
    """)
    procs.run([sys.executable, "-c", code], check=True, timeout=30)
    assert Path(f"{path}-wal").stat().st_size > 0
    before = fingerprint(path)
    for command in (["inspect", "--json"], ["show", "{id}"], ["tasks"]):
        done = procs.run([console_script(), *_args(command, path, "t3")], capture_output=True,
                         text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "t3" in done.stdout
    for command in READ_COMMANDS:
        ok(*_args(command, path, "t3"))
    assert as_json("inspect", str(path))["counts"]["pending"] == 20
    assert fingerprint(path) == before


def test_read_commands_never_create_or_change_a_file(store: Path) -> None:
    before = fingerprint(store)
    assert not Path(f"{store}-wal").exists() and not Path(f"{store}.lock").exists()
    for command in READ_COMMANDS:
        ok(*_args(command, store))
        ok(*_args(command, store), "--json")
    ok("purge", str(store), "--older-than", "0s", "--dry-run")
    invoke("show", str(store), "nope")
    invoke("purge", str(store), "--older-than", "soon")
    assert fingerprint(store) == before          # the same files, byte for byte


def test_read_commands_in_a_directory_the_user_cannot_write(tmp_path: Path) -> None:
    """Issue 12.5: a read-only open reads a store it may not write beside."""
    home = tmp_path / "ro"
    home.mkdir()
    path = home / "tasks.db"
    make_store(path)
    unprivileged: list[str] = []
    if os.geteuid() == 0:           # root writes anywhere: drop the capabilities that let it
        caps = "-dac_override,-dac_read_search,-fowner"
        unprivileged = [shutil.which("setpriv") or "setpriv (util-linux) is needed",
                        f"--bounding-set={caps}", f"--inh-caps={caps}"]
    home.chmod(0o555)
    try:
        probe = procs.run([*unprivileged, "touch", str(home / "x")], capture_output=True, timeout=30)
        assert probe.returncode != 0, "the directory is writable after all: the test proves nothing"
        before = fingerprint(path)
        for command in READ_COMMANDS:
            done = procs.run([*unprivileged, console_script(), *_args(command, path), "--json"],
                             capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (command, done.stderr)
        assert fingerprint(path) == before
    finally:
        home.chmod(0o755)


# -- write commands ----------------------------------------------------------------------------------

def test_cancel(store: Path) -> None:
    data = as_json("cancel", str(store), "p-soon")
    assert data == {"cancelled": ["p-soon"], "skipped": [], "unknown": []}
    assert as_json("show", str(store), "p-soon")["status"] == "cancelled"
    result = invoke("cancel", str(store), "p-far", "ok", "nope")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"no task nope in {store}" in result.stderr and "task ok is succeeded" in result.stderr
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
    s = open_store(str(path))
    now = time.time()
    s.add([rec("bad2", "x", now - 1)])
    s.advance(s.wheel.current_tick(now), 10, "tests")
    (claimed,) = s.claim(DEAD_OWNER, now, 1).records
    s.swap([(claimed, end_run(claimed, Outcome(False, now, now, error="boom")))])
    s.close()
    assert as_json("retry", str(path), "--all-failed", "--name", "x")["retried"] == ["bad2"]
    data = as_json("retry", str(path), "--all-failed")
    assert data["retried"] == ["bad"] and data["unknown"] == []
    assert as_json("retry", str(path), "--all-failed")["retried"] == []
    assert "(nothing retried)" in ok("retry", str(path), "--all-failed").stdout
    assert_clean_error(invoke("retry", str(path)), 2, "give task ids or --all-failed")
    assert_clean_error(invoke("retry", str(path), "bad", "--all-failed"), 2, "not both")
    assert_clean_error(invoke("retry", str(path), "bad", "--name", "x"), 2, "--name only goes with")


def test_purge(store: Path) -> None:
    assert as_json("purge", str(store), "--older-than", "1h")["purged"] == 0
    before = fingerprint(store)
    dry = as_json("purge", str(store), "--older-than", "0s", "--status", "failed", "--dry-run")
    assert dry["purged"] == 0 and dry["matching"] == 1 and dry["dry_run"] is True
    assert "would purge 4 task(s)" in ok("purge", str(store), "--older-than", "0s", "--dry-run").stdout
    assert fingerprint(store) == before
    data = as_json("purge", str(store), "--older-than", "0s", "--status", "failed", "--status", "misfired")
    assert data["purged"] == 2 and data["statuses"] == ["failed", "misfired"]
    assert_clean_error(invoke("show", str(store), "bad"), 1, "no task bad in")
    assert "purged 2 task(s)" in ok("purge", str(store), "--older-than", "0s").stdout
    counts = as_json("inspect", str(store))["counts"]
    assert counts["pending"] == 4 and counts["running"] == 1
    assert counts["succeeded"] == counts["failed"] == counts["cancelled"] == counts["misfired"] == 0


@pytest.mark.parametrize("bad", ["7", "7x", "d7", "1h 30m", "-5m", "", "1e9w", "9999999999999d"])
def test_bad_duration_is_a_usage_error(store: Path, bad: str) -> None:
    before = fingerprint(store)
    result = invoke("purge", str(store), "--older-than", bad)
    assert result.exit_code == 2 and ("is not a duration" in result.stderr or "100 years" in result.stderr)
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


# -- error paths: no traceback, one line, files untouched -------------------------------------------

@pytest.mark.parametrize("command", READ_COMMANDS + WRITE_COMMANDS, ids=lambda c: c[0])
def test_missing_file(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    assert_clean_error(invoke(*_args(command, missing)), 1, str(missing), "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READ_COMMANDS + WRITE_COMMANDS, ids=lambda c: c[0])
def test_files_that_are_not_stores(tmp_path: Path, command: list[str]) -> None:
    files = not_stores(tmp_path)
    before = fingerprint(files["text"])
    for kind, path in files.items():
        result = invoke(*_args(command, path))
        assert_clean_error(result, 1, str(path))
        assert "not a timewheel store" in result.stderr, (kind, result.stderr)
    assert fingerprint(files["text"]) == before          # no -wal, -shm or .lock left behind


def test_store_paths_with_uri_characters_work(tmp_path: Path) -> None:
    odd = tmp_path / "we#ird?dir&x=1"
    odd.mkdir()
    make_store(odd / "tasks.db")
    before = fingerprint(odd / "tasks.db")
    for command in READ_COMMANDS:
        ok(*_args(command, odd / "tasks.db"))
    assert fingerprint(odd / "tasks.db") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]       # no stray file named "we"
    assert as_json("cancel", str(odd / "tasks.db"), "p-soon")["cancelled"] == ["p-soon"]


def test_directory_is_refused(tmp_path: Path) -> None:
    assert_clean_error(invoke("inspect", str(tmp_path)), 1, "is a directory")
    assert_clean_error(invoke("purge", str(tmp_path), "--older-than", "1d"), 1, "is a directory")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://localhost/2", "unix:///tmp/none.sock"])
def test_a_url_without_the_redis_backend_is_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)    # as if it were not installed
    for command in READ_COMMANDS + WRITE_COMMANDS:
        assert_clean_error(invoke(*_args(command, url)), 1, "pip install 'timewheel[redis]'")


@pytest.mark.parametrize("url", ["postgresql://u:secret@127.0.0.1:1/db", "postgres://127.0.0.1/db",
                                 "host=127.0.0.1 dbname=db password=secret"])
def test_a_url_without_the_postgres_driver_is_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)    # as if it were not installed
    for command in READ_COMMANDS + WRITE_COMMANDS + [["migrate"]]:
        result = invoke(*_args(command, url))
        assert_clean_error(result, 1, "pip install 'timewheel[postgres]'")
        assert "secret" not in result.output


@pytest.mark.parametrize("command", [["show"], ["cancel"], ["retry"]], ids=lambda c: c[0])
def test_unknown_id(store: Path, command: list[str]) -> None:
    before = fingerprint(store)
    assert_clean_error(invoke(command[0], str(store), "no-such-id"), 1, "no-such-id", str(store))
    assert fingerprint(store) == before


def test_write_command_on_a_busy_store_fails_cleanly(store: Path) -> None:
    con = sqlite3.connect(store, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")        # another process holds the write lock
    try:
        t0 = time.monotonic()
        busy = invoke("cancel", str(store), "p-soon", "--timeout", "0.2")
        assert_clean_error(busy, 1, "locked", str(store))
        assert time.monotonic() - t0 < 5
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert as_json("show", str(store), "p-soon")["status"] == "pending"


def test_a_store_of_timewheel_0_1_is_read_refused_and_converted_by_a_write(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.write_bytes(gzip.decompress((Path(ROOT) / "tests/fixtures/store_v1.sqlite.gz").read_bytes()))
    expected = json.loads((Path(ROOT) / "tests/fixtures/store_v1.json").read_text())
    before = fingerprint(path)
    assert_clean_error(invoke("inspect", str(path)), 1, "timewheel 0.1", "converted")
    assert fingerprint(path) == before
    ok("purge", str(path), "--older-than", "100w")         # a write command converts it
    listed = {t["id"] for t in as_json("tasks", str(path), "--limit", "0")["tasks"]}
    assert listed == set(expected)


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
    assert invoke("run", "cliapp_bad:hu", "--fmt", "tsv").exit_code == 2
    assert invoke("run", "cliapp_bad:hu", "--table").exit_code == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- real processes ---------------------------------------------------------------------------------

APP = """
import os, sys, time
from timewheel import TimeWheel

hu = TimeWheel(os.environ["TW_DB"], workers=2)


@hu.task(name="job")
def job(x):
    return x * 2


@hu.task(name="boom")
def boom():
    raise ValueError("the task failed on purpose")


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
    if len(sys.argv) > 2:
        slow.delay(600, sys.argv[2])
    with open(sys.argv[1], "w") as fh:
        fh.write("ready")
    while True:            # keep ticking until the test kills us
        time.sleep(0.1)
"""


def slow_signature(seconds: float, marker: str) -> str:
    """The producer's side of the app's ``slow`` task: only its name and signature matter."""
    raise AssertionError("runs in the worker process, not here")


def _console(*args: str) -> subprocess.CompletedProcess:
    done = procs.run([console_script(), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done


def test_console_script_against_a_store_another_process_is_using(tmp_path: Path) -> None:
    path, ready, log = tmp_path / "tasks.db", tmp_path / "ready", tmp_path / "app.log"
    (tmp_path / "cliapp_live.py").write_text(APP)
    with open(log, "w") as err:
        child = procs.popen([sys.executable, str(tmp_path / "cliapp_live.py"), str(ready)],
                            env={**os.environ, "TW_DB": str(path)}, cwd=tmp_path, stderr=err)
    try:
        wait_for(lambda: ready.exists() or child.poll() is not None, 15, what="child ready")
        assert child.poll() is None, log.read_text()
        data = json.loads(_console("inspect", str(path), "--json").stdout)
        assert data["counts"]["pending"] == 5 and data["counts"]["succeeded"] == 1
        assert data["ticker"]["ticking"] is True
        assert data["ticker"]["leader"].startswith(f"{child.pid}:")
        assert data["ticker"]["lag_seconds"] <= 5
        assert data["pending_by_name"] == {"job": 5}
        listing = _console("tasks", str(path)).stdout
        assert listing.count(" pending ") == 5 and " succeeded " in listing
        first = data["next_due"][0]["id"]           # a write from the CLI while the app runs
        _console("cancel", str(path), first)
        assert child.poll() is None
    finally:
        child.terminate()
        child.wait(timeout=15)
    ro = open_store(str(path), readonly=True)
    try:
        assert ro.get(first).status == "cancelled"
    finally:
        ro.close()


def test_inspect_says_not_ticking_within_a_tick_of_the_leaders_death(tmp_path: Path) -> None:
    """Issue 12.8: after a SIGKILL of the leader, the next inspect says "not ticking" and marks
    the task the dead process was running as owned by a dead process."""
    path, ready, marker = tmp_path / "tasks.db", tmp_path / "ready", tmp_path / "started"
    (tmp_path / "cliapp_kill.py").write_text(APP)
    child = procs.popen([sys.executable, str(tmp_path / "cliapp_kill.py"), str(ready), str(marker)],
                        env={**os.environ, "TW_DB": str(path)}, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (ready.exists() and marker.exists()) or child.poll() is not None, 20,
                 what="slow task running")
        live = json.loads(_console("inspect", str(path), "--json").stdout)
        assert live["ticker"]["ticking"] is True
        (running,) = live["running"]
        assert running["name"] == "slow" and running["owner_alive"] is True
    finally:
        child.kill()
        child.wait(timeout=15)
    killed = time.monotonic()
    data = json.loads(_console("inspect", str(path), "--json").stdout)
    took = time.monotonic() - killed
    assert data["ticker"]["ticking"] is False and data["ticker"]["leader"] is None
    assert data["ticker"]["last_leader"].startswith(f"{child.pid}:")
    (running,) = data["running"]
    assert running["id"] == live["running"][0]["id"] and running["owner_alive"] is False
    assert took < 5      # the first inspect after the kill: a process start, no waiting
    text = _console("inspect", str(path)).stdout
    assert "NOT ticking" in text and "(gone: runs again once a process ticks)" in text
    assert "running (owner gone)" in _console("tasks", str(path), "--status", "running").stdout


def test_run_finishes_the_running_task_on_sigterm_and_exits_0(tmp_path: Path) -> None:
    from timewheel import TimeWheel
    path, marker = tmp_path / "tasks.db", tmp_path / "started"
    (tmp_path / "cliapp_run.py").write_text(APP)
    producer = TimeWheel(str(path))
    running = producer.task(name="slow")(slow_signature).delay(2.0, str(marker), count_down=0.3)
    producer.close()
    log = tmp_path / "worker.log"
    with open(log, "w") as err:
        worker = procs.popen([console_script(), "run", "cliapp_run:hu", "--grace", "20", "--json"],
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
            worker.wait(10)
    assert worker.returncode == 0, log.read_text()
    summary = json.loads(out)
    assert summary["signal"] == "SIGTERM" and summary["running"] == 0 and summary["unfinished"] == 0
    ro = open_store(str(path), readonly=True)
    try:
        rec_ = ro.get(running.id)
        assert rec_.status == "succeeded" and pickle.loads(rec_.result) == "slept"
        assert rec_.finished is not None and rec_.finished >= sent
        assert ro.get(after.id).status == "pending"
    finally:
        ro.close()
    assert not (tmp_path / "never").exists()
    text = log.read_text()
    assert "Traceback" not in text and "SIGTERM" in text


@pytest.mark.parametrize("level", [None, "ERROR"], ids=["default", "log-level-error"])
def test_run_logs_task_failures_to_stderr(tmp_path: Path, level: Optional[str]) -> None:
    """Issue 19 item 13: `timewheel run` configures logging (INFO to stderr; --log-level) when
    the application did not, so a failing task is reported where the operator looks."""
    from timewheel import TimeWheel
    path = tmp_path / "tasks.db"
    (tmp_path / "cliapp_boom.py").write_text(APP)
    producer = TimeWheel(str(path))
    failing = producer.task(name="boom")(lambda: None).delay()
    producer.close()
    log = tmp_path / "worker.log"
    with open(log, "w") as err:
        options = ["--log-level", level] if level else []
        worker = procs.popen([console_script(), "run", "cliapp_boom:hu", *options],
                             cwd=tmp_path, env={**os.environ, "TW_DB": str(path)}, stderr=err)
    try:
        def status() -> str:
            ro = open_store(str(path), readonly=True)     # anew: one opened before the worker
            try:                                          # ran reads the file as it was then
                return ro.get(failing.id).status
            finally:
                ro.close()
        wait_for(lambda: status() == "failed", 15, what="the task to fail")
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    text = log.read_text()
    said = f"task {failing.id} (boom) failed, attempt 1 of 1: ValueError: the task failed on purpose"
    if level is None:
        assert said in text and "running <TimeWheel" in text, text          # warnings and INFO
    else:
        assert said not in text and "running <TimeWheel" not in text, text


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.text(string.ascii_letters + string.digits + " -:.()'", max_size=12), min_size=n, max_size=n)
    | st.just([]),
    st.lists(st.lists(st.text(string.ascii_letters + string.digits + " -:.()'", max_size=15)
                      | st.integers(0, 10 ** 9), min_size=n, max_size=n), min_size=1, max_size=5))))
def test_the_default_table_is_what_tabulate_prints(case: tuple[list[str], list[list[Any]]]) -> None:
    from tabulate import tabulate
    headers, rows = case
    right = [all(isinstance(r[i], int) for r in rows) for i in range(len(rows[0]))]
    expected = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                        colalign=["right" if r else "left" for r in right])
    assert simple_table(rows, headers, right) == expected


def test_serve_runs_only_on_the_main_thread(tmp_path: Path) -> None:
    """serve() handles signals, which Python delivers to the main thread only."""
    import threading

    from timewheel import TimeWheel
    from timewheel.serve import serve
    hu = TimeWheel(str(tmp_path / "tasks.db"))
    got: list[BaseException] = []

    def other() -> None:
        try:
            serve(hu, 1.0, None)
        except RuntimeError as exc:
            got.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert len(got) == 1 and "main thread" in str(got[0]) and not hu.running
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _redis_snapshot(url: str) -> dict[bytes, tuple[Any, int]]:
    """Every key of the database with its serialized value and time to live."""
    import redis
    r = redis.Redis.from_url(url)
    try:
        return {k: (r.dump(k), r.pttl(k)) for k in r.scan_iter(count=1000)}
    finally:
        r.close()


def test_every_command_on_a_redis_store(redis_db: str, redis_server: Any) -> None:
    """The same commands on a real redis-server: read-only ones change no key (value or TTL)."""
    s = open_store(redis_db, namespace="shop")
    try:
        populate(s, time.time(), DEAD_OWNER)
    finally:
        s.close()
    ns = ["--namespace", "shop"]
    before = _redis_snapshot(redis_db)
    assert before
    for command in READ_COMMANDS:
        ok(*_args(command, redis_db), *ns)
        ok(*_args(command, redis_db), *ns, "--json")
    ok("purge", redis_db, "--older-than", "0s", "--dry-run", *ns)
    for url in (redis_db, redis_server.unix_url):
        data = as_json("inspect", url, *ns)
        assert data["counts"]["pending"] == 4 and data["store"]["backend"] == "RedisStore"
        assert data["store"]["namespace"] == "shop" and data["running"][0]["owner_alive"] is False
    assert "namespace 'shop'" in ok("inspect", redis_db, *ns).stdout
    assert _redis_snapshot(redis_db) == before
    assert_clean_error(invoke("inspect", redis_db), 1, "no timewheel store in namespace 'timewheel'")
    assert_clean_error(invoke("cancel", redis_db, "p-soon"), 1, "no timewheel store")
    assert _redis_snapshot(redis_db) == before            # a write command creates nothing either
    assert invoke("inspect", redis_db, "--namespace", "a{b}").exit_code == 2
    assert as_json("cancel", redis_db, "p-soon", *ns)["cancelled"] == ["p-soon"]
    assert as_json("retry", redis_db, "bad", *ns)["retried"] == ["bad"]
    assert as_json("tasks", redis_db, "--status", "cancelled", *ns)["tasks"][0]["id"] == "p-soon"
    assert as_json("purge", redis_db, "--older-than", "1h", *ns)["purged"] == 0
    assert as_json("purge", redis_db, "--older-than", "0s", "--status", "succeeded", *ns)["purged"] == 1


def _pg_snapshot(url: str, schema: str) -> dict[str, list]:
    """Every row of the store's tables."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as c:
        return {t: sorted(map(repr, c.execute(f'SELECT * FROM "{schema}".{t}').fetchall()))
                for t in ("meta", "tasks", "counts", "counts_delta", "alive")}


def test_every_command_on_a_postgres_store(pg_db: str) -> None:
    """The same commands on a real PostgreSQL server: read-only ones change no row."""
    s = open_store(pg_db, namespace="shop")
    try:
        populate(s, time.time(), DEAD_OWNER)
    finally:
        s.close()
    ns = ["--namespace", "shop"]
    before = _pg_snapshot(pg_db, "shop")
    for command in READ_COMMANDS:
        ok(*_args(command, pg_db), *ns)
        ok(*_args(command, pg_db), *ns, "--json")
    ok("purge", pg_db, "--older-than", "0s", "--dry-run", *ns)
    port = pg_db.rsplit(":", 1)[1].split("/")[0]
    for url in (pg_db + "?schema=shop", f"host=127.0.0.1 port={port} user=postgres schema=shop"):
        data = as_json("inspect", url)
        assert data["counts"]["pending"] == 4 and data["store"]["backend"] == "PostgresStore"
        assert data["store"]["schema"] == "shop" and data["running"][0]["owner_alive"] is False
    assert "schema 'shop'" in ok("inspect", pg_db, *ns).stdout
    assert _pg_snapshot(pg_db, "shop") == before
    assert_clean_error(invoke("inspect", pg_db), 1, "no timewheel store in schema 'timewheel'")
    assert_clean_error(invoke("cancel", pg_db, "p-soon"), 1, "no timewheel store")
    assert _pg_snapshot(pg_db, "shop") == before            # a write command creates nothing either
    assert invoke("inspect", pg_db, "--namespace", "a;b").exit_code == 2
    assert as_json("cancel", pg_db, "p-soon", *ns)["cancelled"] == ["p-soon"]
    assert as_json("retry", pg_db, "bad", *ns)["retried"] == ["bad"]
    assert as_json("tasks", pg_db, "--status", "cancelled", *ns)["tasks"][0]["id"] == "p-soon"
    assert sorted(t["id"] for t in as_json("tasks", pg_db, "--id", "p-", *ns)["tasks"]) == \
        ["p-evil", "p-far", "p-later", "p-soon"]
    assert as_json("tasks", pg_db, "--id", "p_", *ns)["tasks"] == []      # LIKE's wildcards are literal
    assert as_json("tasks", pg_db, "--id", "%", *ns)["tasks"] == []
    assert as_json("purge", pg_db, "--older-than", "1h", *ns)["purged"] == 0
    assert as_json("purge", pg_db, "--older-than", "0s", "--status", "succeeded", *ns)["purged"] == 1
