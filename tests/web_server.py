"""Helpers for the web view's tests: a store holding tasks in every state (filled by
:func:`timewheel.testing.fill`), and the end of a running task's run."""

from __future__ import annotations

import pickle
import time
from typing import Optional

from timewheel.records import Outcome, TaskRecord, end_run
from timewheel.store import SqliteDictStore, WheelStore
from timewheel.testing import Demo, fill


def finish(store: WheelStore, task_id: str, ok: bool = True) -> TaskRecord:
    """Record the end of a running task, as its worker would."""
    rec = store.get(task_id)
    assert rec is not None and rec.status == "running", rec
    started = rec.started or time.time()
    out = Outcome(ok=ok, started=started, finished=time.time(), result=pickle.dumps("done"),
                  error=None if ok else "RuntimeError: no")
    (done,) = store.swap([(rec, end_run(rec, out))])
    assert done is not None
    return done


def make_store(path: str, now: Optional[float] = None) -> tuple[SqliteDictStore, Demo]:
    store = SqliteDictStore(path)
    return store, fill(store, time.time() if now is None else now)
