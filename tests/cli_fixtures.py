"""Stores for the CLI and query tests: a task in every status, built through the store
interface (so on every backend), and helpers to check that a command wrote nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

from click.testing import CliRunner, Result

from timewheel.cli import cli
from timewheel.records import Outcome, TaskRecord, cancel, end_run, skip_misfired
from timewheel.store.base import WheelStore

from .conftest import make_record, payload_of, result_of


class Account:
    """An application class: the CLI must show it without importing this module."""

    def __init__(self, name: str) -> None:
        self.name = name


class Evil:
    """Unpickling this (normally) would create a directory: the CLI must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.mkdir, (self.path,))


def rec(task_id: str, name: str, eta: float, args: tuple = (), kwargs: Optional[dict] = None,
        serializer: str = "pickle", **kw: Any) -> TaskRecord:
    return make_record(task_id, eta, name=name, payload=payload_of(args, kwargs, serializer), **kw)


def populate(store: WheelStore, now: float, owner: str,
             evil_path: str = "/nonexistent/pwned", serializer: str = "pickle") -> dict[str, str]:
    """A task in every status (running ones owned by ``owner``), its arguments and result in
    ``serializer`` (with JSON, plain stand-ins for the application's objects); returns ids by
    status."""
    json = serializer == "json"
    account = {"account": "ann"} if json else Account("ann")
    store.add([
        rec("p-soon", "emails.send", now + 90, (account, "hi"), {"urgent": True}, serializer),
        rec("p-later", "emails.send", now + 3 * 3600, ("bob@example.com", "x" * 1000), serializer=serializer),
        rec("p-far", "reports.build", now + 3 * 86400, serializer=serializer),
        rec("p-evil", "reports.build", now + 600, (evil_path if json else Evil(evil_path),),
            serializer=serializer),
        rec("ok", "reports.build", now - 5, (1,), serializer=serializer),
        rec("bad", "emails.send", now - 4, (2,), serializer=serializer),
        rec("run", "emails.send", now - 3, serializer=serializer),
        rec("late", "emails.send", now - 60, misfire_grace=1.0, serializer=serializer),
        rec("gone", "emails.send", now + 60, serializer=serializer),
    ])
    store.advance(store.wheel.current_tick(now), 1000, "tests")
    claimed = {r.id: r for r in store.claim(owner, now, 10).records}
    assert sorted(claimed) == ["bad", "late", "ok", "run"], sorted(claimed)
    result = result_of({"sent": 3, "to": account}, serializer)
    trace = "Traceback (most recent call last):\n  File 'app.py', line 1\nValueError: no such mailbox\n"
    done = store.swap([
        (claimed["ok"], end_run(claimed["ok"], Outcome(True, now - 0.01, now - 0.003, result=result))),
        (claimed["bad"], end_run(claimed["bad"], Outcome(False, now - 0.01, now - 0.002, traceback=trace,
                                                         error="ValueError: no such mailbox"))),
        (claimed["late"], skip_misfired(claimed["late"], now)),
    ])
    assert all(d is not None for d in done)
    gone = store.get("gone")
    assert store.swap([(gone, cancel(gone, now))])[0] is not None
    return {"pending": "p-soon", "succeeded": "ok", "failed": "bad", "running": "run",
            "misfired": "late", "cancelled": "gone"}


def fingerprint(path: Path) -> dict[str, str]:
    """Checksums of every file in ``path``'s directory: a read-only command changes none,
    and creates or deletes none.

    A ``-shm`` file only counts as present: it is SQLite's shared-memory index of the
    ``-wal``, in which every reader of a WAL database records its read marks (that is how a
    reader coexists with a live writer); the database and its log stay byte for byte.
    """
    def digest(p: Path) -> str:
        if not p.is_file():
            return "dir"
        return "shm" if p.name.endswith("-shm") else hashlib.sha256(p.read_bytes()).hexdigest()
    return {p.name: digest(p) for p in sorted(path.parent.iterdir())}


def invoke(*args: str) -> Result:
    """Run the command line in this process (click's runner): output, exit code, exception."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)
