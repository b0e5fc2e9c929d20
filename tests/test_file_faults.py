"""The store's files deleted or replaced under running processes, a stopped leader, a slow
hook, files another user owns: the promises hold (issue 19, items 1, 2 and 10).

Real worker processes (``tests/mp_worker.py``) on a real file; runs are counted from the
append-only log the tasks write, never from the store's statuses.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from timewheel import StoreError, TimeWheel
from timewheel.store import SqliteDictStore
from timewheel.store.locks import locks_for, probe
from timewheel.testing import processes as procs

from .mp_worker import Runs, events_of, read_lines, wait_for
from .test_multiprocess import Cluster, _assert_exactly_once

TICK = 0.25


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    for p in c.procs:                 # a stopped process cannot die of SIGKILL until continued
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
    c.close()


def _tags(prefix: str, n: int) -> set[str]:
    return {f"{prefix}-{i}" for i in range(n)}


def _warnings(cluster: Cluster, text: str) -> list[str]:
    return [" ".join(p) for p in read_lines(cluster.events) if p[0] == "error" and text in " ".join(p)]


def _statuses(db: str) -> dict[str, int]:
    store = SqliteDictStore(db, readonly=True)
    try:
        return {s: n for (s, _), n in store.counts().items()}
    finally:
        store.close()


# -- item 1: the lock file deleted or replaced -----------------------------------------------------

@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_lock_file_deleted_or_replaced_while_tasks_run(cluster, how, record_property) -> None:
    """Two workers run 200 tasks due over 6 s, each 0.2 s long; 1.5 s in, the .lock file is
    deleted (or another file moved over it) and a third worker starts.  Before the fix the
    new worker took everyone's running tasks for abandoned: tasks ran dozens of times."""
    for _ in range(2):
        cluster.worker("--workers", "4")
    cluster.ready(2)
    cluster.enqueue(200, "--spread", "6", "--count-down", "0.5", "--task-sleep", "0.2", "--tag", "t")
    time.sleep(2.0)
    lock = cluster.db + ".lock"
    if how == "deleted":
        os.remove(lock)
    else:
        other = lock + ".new"
        open(other, "wb").close()
        os.replace(other, lock)
    cluster.worker("--workers", "4")
    tags = _tags("t", 200)
    wait_for(lambda: tags <= Runs(cluster.log).finished(), 40, what="all 200 tasks finished")
    time.sleep(3 * TICK)                 # a recovery that would wrongly re-run one shows by now
    runs = Runs(cluster.log)
    _assert_exactly_once(runs, tags)
    assert runs.total_starts == 200
    counts = _statuses(cluster.db)
    assert counts.get("succeeded") == 200 and not counts.get("failed"), counts
    # the two old processes noticed within a tick and said so, once each (the first to look
    # may find no file yet and make the new one; the others find it "replaced")
    noticed = _warnings(cluster, "tasks.db.lock was ")
    assert len(noticed) == 2, noticed
    assert not _warnings(cluster, "requeued"), _warnings(cluster, "requeued")
    record_property("starts", runs.total_starts)


def test_a_token_of_a_deleted_lock_file_stays_alive_while_its_process_lives(tmp_path) -> None:
    """Probed from another process (the CLI's read-only probe here): a worker's token issued
    on a lock file that was deleted is alive while the worker lives (carried over to the new
    file), dead once it is killed."""
    db = str(tmp_path / "tasks.db")
    procs.run([sys.executable, "-c", "import sys; from timewheel.store import SqliteDictStore; "
               "SqliteDictStore(sys.argv[1]).close()", db], check=True, timeout=60)
    child = procs.popen(
        [sys.executable, "-c", "import sys, time\n"
         "from timewheel.store.locks import locks_for\n"
         "locks = locks_for(sys.argv[1]); print(locks.token, flush=True)\n"
         "sys.stdin.readline(); print(locks.verify(), flush=True); print(locks.token, flush=True)\n"
         "time.sleep(60)", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        old = child.stdout.readline().strip()
        assert not probe(db).is_dead(old)
        os.remove(db + ".lock")
        assert locks_for(db).token     # this process makes the new file, as a new worker would
        # nobody carried the token over yet: the old file's locks (/proc/locks) say it lives
        assert not locks_for(db).is_dead(old) and not probe(db).is_dead(old)
        child.stdin.write("\n")
        child.stdin.flush()
        assert "was replaced" in child.stdout.readline()     # by the file this process made
        new = child.stdout.readline().strip()
        assert new != old
        for token in (old, new):       # carried over: alive on the new file itself
            assert not probe(db).is_dead(token) and not locks_for(db).is_dead(token)
    finally:
        child.kill()
        child.wait(10)
    for token in (old, new):
        assert probe(db).is_dead(token) and locks_for(db).is_dead(token)


# -- item 1: the store file replaced or deleted ----------------------------------------------------

def _backup(db: str, to: str) -> None:
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_store_file_replaced_or_deleted_under_running_processes(cluster, how) -> None:
    """A backup restored over tasks.db (or tasks.db deleted) while workers run: they stop
    writing to the old file within a tick and say so once; delay() in such a process raises;
    a process started meanwhile refuses the store instead of pairing it with the old WAL."""
    for _ in range(2):
        cluster.worker("--workers", "2")
    cluster.ready(2)
    hu = TimeWheel(cluster.db, tick=TICK, slots=600)
    f = hu.task(name="f")(abs)
    f.delay(-1, count_down=3600)                      # this process has the store open too
    cluster.enqueue(20, "--spread", "30", "--count-down", "2", "--tag", "t")
    backup = cluster.db + ".bak"
    _backup(cluster.db, backup)
    if how == "replaced":
        os.replace(backup, cluster.db)
    else:
        os.remove(cluster.db)
    with pytest.raises(StoreError, match=f"was {'replaced' if how == 'replaced' else 'deleted'}"):
        f.delay(-2)
    wait_for(lambda: len(_warnings(cluster, "restart every process")) >= 2, 10,
             what="both workers saying the store file is gone")
    time.sleep(4 * TICK)
    said = _warnings(cluster, "restart every process")
    assert len(said) == 2, said                        # once each, not once a round
    new = procs.run([sys.executable, "-c", "import sys\nfrom timewheel import TimeWheel\n"
                     "TimeWheel(sys.argv[1]).task(name='f')(abs).delay(-3)", cluster.db],
                    capture_output=True, text=True, timeout=60)
    assert new.returncode != 0 and "replaced or deleted while processes still had" in new.stderr, new.stderr
    assert "malformed" not in " ".join(_warnings(cluster, ""))
    hu.close()
    if how == "replaced":
        con = sqlite3.connect(cluster.db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()


# -- item 2: a stopped leader, a slow hook ---------------------------------------------------------

def test_a_stopped_leader_loses_the_wheel_within_a_few_ticks(cluster, record_property) -> None:
    """The ticking process is SIGSTOPped for 25 s: tasks coming due meanwhile start within
    3 ticks of their eta on the other processes, and none runs twice after SIGCONT."""
    for _ in range(3):
        cluster.worker("--workers", "2")
    cluster.ready(3)
    leader, _ = cluster.leader()
    start = time.time()
    cluster.enqueue(60, "--spread", "22", "--count-down", "3", "--task-sleep", "0.05", "--tag", "s")
    time.sleep(max(0.0, start + 1.5 - time.time()))
    os.kill(leader, signal.SIGSTOP)                   # nothing due for another 1.5 s: idle
    try:
        time.sleep(25)
    finally:
        os.kill(leader, signal.SIGCONT)
    tags = _tags("s", 60)
    wait_for(lambda: tags <= Runs(cluster.log).finished(), 20, what="all tasks finished")
    time.sleep(1.0)
    runs = Runs(cluster.log)
    _assert_exactly_once(runs, tags)
    etas = {p[3]: float(p[4]) for p in events_of(cluster.events, "enq")}
    late = {t: runs.start_times[t][0] - etas[t] for t in tags}
    assert min(late.values()) >= 0, "a task started early"
    worst = max(late.values())
    record_property("worst_lateness_s", round(worst, 3))
    assert worst <= 3 * TICK + 0.25, sorted(late.items(), key=lambda kv: -kv[1])[:5]
    assert str(leader) not in {p for ps in runs.starts.values() for p in ps}
    assert _warnings(cluster, "lost the ticking role"), "the old leader should say it lost the role"


def test_a_hook_sleeping_20s_delays_no_task(cluster) -> None:
    """Every process has a 'succeeded' hook that sleeps 20 s: tasks due over 6 s still start
    on time in every process, the leader's included (hooks run on their own thread)."""
    for _ in range(3):
        cluster.worker("--workers", "2", "--hook-sleep", "20")
    cluster.ready(3)
    cluster.enqueue(60, "--spread", "6", "--count-down", "1", "--tag", "h")
    tags = _tags("h", 60)
    wait_for(lambda: tags <= Runs(cluster.log).finished(), 20, what="all tasks finished")
    runs = Runs(cluster.log)
    _assert_exactly_once(runs, tags)
    etas = {p[3]: float(p[4]) for p in events_of(cluster.events, "enq")}
    late = [runs.start_times[t][0] - etas[t] for t in tags]
    assert 0 <= min(late) and max(late) < 0.5, max(late)
    assert len({p for ps in runs.starts.values() for p in ps}) == 3      # all three ran tasks


# -- item 10: files another user owns ---------------------------------------------------------------

def _other_user() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.fail("this test makes files owned by another user: it needs root (CI runs as root)")
    return 65534, 65534                  # nobody:nogroup


OPEN_AND_DELAY = ("import sys\nfrom timewheel import TimeWheel\n"
                  "TimeWheel(sys.argv[1]).task(name='f')(abs).delay(1)")


@pytest.mark.parametrize("which", ["", ".lock", "-wal", "-shm"])
def test_files_of_the_store_owned_by_another_user_are_refused(tmp_path, which) -> None:
    """A new process (as an app worker would be) refuses the store when the store file, or
    its lock file, -wal or -shm beside it, belongs to another user."""
    uid, gid = _other_user()
    db = str(tmp_path / "tasks.db")
    if which == "":
        open(db, "wb").close()          # an empty store another user "prepared" for us
    else:
        procs.run([sys.executable, "-c", OPEN_AND_DELAY, db], check=True, timeout=60)
        open(db + which, "ab").close()  # made by us, or now; then another user's
    os.chown(db + which, uid, gid)
    before = open(db, "rb").read()
    out = procs.run([sys.executable, "-c", OPEN_AND_DELAY, db], capture_output=True, text=True,
                    timeout=60)
    assert out.returncode != 0, out.stderr
    assert "StoreError" in out.stderr and f"tasks.db{which} belongs to user" in out.stderr, out.stderr
    assert "65534" in out.stderr and "refusing it" in out.stderr, out.stderr
    assert open(db, "rb").read() == before                           # nothing written
    assert os.stat(db + which).st_uid == uid                         # nor taken over


def test_the_cli_reads_another_users_store_without_writing(tmp_path) -> None:
    """Refusing applies to writers; inspect (read-only, never unpickling) still reads it."""
    uid, gid = _other_user()
    db = str(tmp_path / "tasks.db")
    hu = TimeWheel(db)
    hu.task(name="f")(abs).delay(1, count_down=60)
    hu.close()
    for name in os.listdir(tmp_path):
        shutil.chown(os.path.join(tmp_path, name), uid, gid)
    out = procs.run([sys.executable, "-m", "timewheel.cli", "inspect", db], capture_output=True,
                    text=True, timeout=60)
    assert out.returncode == 0 and "pending" in out.stdout, out.stderr
