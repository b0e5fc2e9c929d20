"""Dependencies in the file store (issue 23): the index a write reads and changes besides the
tasks, inside that write's transaction -- what :mod:`timewheel.deps` decides is applied here.

=====================  ===========================================================================
``timewheel_deps``     (dependency id, dependent id, open): one row per dependency of each task
                       added with ``depends_on``, in the order added; ``open`` while the dependent
                       still waits for that dependency's outcome (the write that records it
                       reads the open rows -- one index range -- and closes them); the rows stay,
                       for ``timewheel show``, until the dependency is purged
=====================  ===========================================================================

A waiting dependent is pending at a parked position of its own (``l:`` + :data:`WAITING`, see
store/positions.py): not in the wheel, never ready, never claimed; counted as pending at its
eta's tick, as a task parked on a limit is.  Released, it moves to the wheel or the ready queue.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .connection import TABLE
from .sqlite_file import StoreFile

__all__ = ["SCHEMA", "DEPS", "FileDeps"]

DEPS = f"{TABLE}_deps"

SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{DEPS}" (dep TEXT NOT NULL, task TEXT NOT NULL, '
    "open INTEGER NOT NULL DEFAULT 1, UNIQUE (dep, task))",
    f'CREATE INDEX IF NOT EXISTS "{DEPS}_open" ON "{DEPS}" (dep) WHERE open = 1',
)


class FileDeps:
    """The dependency index, inside the caller's transaction of ``file``."""

    def __init__(self, file: StoreFile) -> None:
        self._file = file

    def add(self, edges: Iterable[tuple[str, str, bool]]) -> None:
        """(dependency, dependent, open) rows; a row already there is left as it is."""
        self._file.many(f'INSERT OR IGNORE INTO "{DEPS}" (dep, task, open) VALUES (?, ?, ?)',
                        [(d, t, int(o)) for d, t, o in edges])

    def take(self, dep: str) -> list[str]:
        """The dependents still waiting for ``dep``'s outcome, which is being recorded: their
        rows close (a dependency reaches a final status once per run; a later run, after a
        retry by hand or a replacement, finds nothing open)."""
        f = self._file
        ids = [t for (t,) in f.q(f'SELECT task FROM "{DEPS}" WHERE dep = ? AND open = 1 ORDER BY rowid',
                                 (dep,))]
        if ids:
            f.x(f'UPDATE "{DEPS}" SET open = 0 WHERE dep = ? AND open = 1', (dep,))
        return ids

    def dependents(self, dep: str) -> list[str]:
        return [t for (t,) in self._file.q(f'SELECT task FROM "{DEPS}" WHERE dep = ? ORDER BY rowid', (dep,))]

    def forget(self, deps: Sequence[str]) -> None:
        """The rows of purged dependencies."""
        self._file.many(f'DELETE FROM "{DEPS}" WHERE dep = ?', [(d,) for d in deps])
