"""SIGKILL in the middle of group commits, run in a fresh interpreter by test_group_commit.py::

    python tests/group_kill.py DIR KILLS SEED

KILLS times: two processes are forked on one store file (``DIR/tasks.db``, the same one every
time); each starts its wheel (its boss claims the tasks due at once and records their
outcomes: claims and outcomes in the same groups as the enqueues) and runs 6 threads that
enqueue as fast as they can: 4 call ``delay()`` one task at a time, 2 enqueue batches of
``BATCH`` tasks with ids of their own (``with hu.batch()``).  After each ``delay()`` or batch
returns, the thread appends its id(s) to an ``O_APPEND`` log, one ``write()`` per line.  Once
both have logged something, each is SIGKILLed at a random moment (0-60 ms apart).

Then, read with plain sqlite3: every id in the log is stored, exactly once; every batch is
stored whole or not at all; the store is sound and its counters equal a recount of its rows
(``check_file_store``).  A half-written group or a commit that lost a write whose caller had
returned would show.  The parent prints one line of JSON: kills done, tasks found, batches
found whole, and what failed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.conftest import check_file_store  # noqa: E402
from timewheel import TimeWheel  # noqa: E402
from timewheel.testing.processes import die_with_parent  # noqa: E402

BATCH = 25
SINGLE_THREADS, BATCH_THREADS = 4, 2


def child(db: str, log: str, tag: str, parent: int) -> None:
    """Enqueue until killed (never returns)."""
    code = 1
    try:
        die_with_parent(parent)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        hu = TimeWheel(db, workers=2, tick=0.25, slots=600)

        @hu.task(name="noop")
        def noop(k: int) -> None:
            pass

        hu.start()

        def singles(t: int) -> None:
            for k in range(10 ** 9):
                h = noop.delay(k, count_down=0 if k % 4 == 0 else 60)      # some run at once
                os.write(fd, f"s {h.id}\n".encode())

        def batches(t: int) -> None:
            for k in range(10 ** 9):
                ids = [f"{tag}-{t}-{k}-{j}" for j in range(BATCH)]
                with hu.batch():
                    for j, task_id in enumerate(ids):
                        noop.delay(j, task_id=task_id, count_down=0 if j % 5 == 0 else 60)
                os.write(fd, f"b {tag}-{t}-{k}\n".encode())

        threads = [threading.Thread(target=singles, args=(t,), daemon=True) for t in range(SINGLE_THREADS)]
        threads += [threading.Thread(target=batches, args=(t,), daemon=True) for t in range(BATCH_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def logged(log: str) -> tuple[set[str], set[str]]:
    singles, batches = set(), set()
    with open(log) as fh:
        for line in fh:
            if line.endswith("\n"):
                kind, name = line.split()
                (singles if kind == "s" else batches).add(name)
    return singles, batches


def check(db: str, log: str, sound: bool) -> dict:
    if sound:
        check_file_store(db)            # (decodes every record: not after every kill)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        keys = [k[2:] for (k,) in con.execute("SELECT key FROM timewheel WHERE key >= 't:' AND key < 't;'")]
    finally:
        con.close()
    stored = set(keys)
    assert len(stored) == len(keys)          # (the primary key: once at most)
    singles, batches = logged(log)
    lost = sorted(singles - stored)
    per_batch: dict[str, int] = {}
    for k in keys:
        if k.count("-") == 3:                # a batch's task: <tag>-<thread>-<k>-<j>
            per_batch[k.rsplit("-", 1)[0]] = per_batch.get(k.rsplit("-", 1)[0], 0) + 1
    half = {b: n for b, n in per_batch.items() if n != BATCH}
    lost_batches = sorted(b for b in batches if per_batch.get(b) != BATCH)
    return {"tasks": len(stored), "singles_logged": len(singles), "batches_logged": len(batches),
            "batches_whole": sum(1 for n in per_batch.values() if n == BATCH), "lost": lost[:10],
            "lost_batches": lost_batches[:10], "half_batches": dict(list(half.items())[:10])}


def main(directory: str, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    db, log = os.path.join(directory, "tasks.db"), os.path.join(directory, "runs.log")
    TimeWheel(db, tick=0.25, slots=600).store.close()         # created once, before the forks
    open(log, "a").close()
    out: dict = {"kills": 0, "failures": []}
    for n in range(kills):
        before = os.path.getsize(log)
        pids = []
        for c in range(2):
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                child(db, log, f"k{n}c{c}", parent)
            pids.append(pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:       # both are writing (a line of each in the log)
            with open(log) as fh:
                fh.seek(before)
                text = fh.read()
            if all(f"k{n}c{c}-" in text for c in range(2)):
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.08))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.06))
        for pid in pids:
            os.waitpid(pid, 0)
        out["kills"] += 1
        try:
            res = check(db, log, sound=n % 10 == 9 or n == kills - 1)
        except AssertionError as exc:
            out["failures"].append(f"kill {n}: the store is not sound: {exc}")
            break
        if res["lost"] or res["lost_batches"] or res["half_batches"]:
            out["failures"].append({"kill": n, **res})
            break
        out.update(res)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
