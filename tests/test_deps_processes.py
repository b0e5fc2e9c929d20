"""Dependencies and chains across real processes (issue 23), on the file store, a real
redis-server and a real PostgreSQL server: three worker processes run a graph of
dependencies; the order holds (a dependent never starts before each of its dependencies
ended successfully, by their logged times), each runs once, ``then``
chains of three pass their results along, a failure cancels its dependents transitively with
the reason and nothing waits for ever, and a SIGKILL of the worker running a dependency makes
it run again with its dependent still run once, after it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from timewheel import TaskFailed, TaskNotFound
from timewheel.testing import processes as procs

from .deps_worker import make
from .test_batch_processes import Workers as BatchWorkers
from .test_batch_processes import _entries, _lines, _wait

HERE = os.path.dirname(os.path.abspath(__file__))


class Workers(BatchWorkers):
    """The batch tests' worker processes, running tests/deps_worker.py."""

    def _start(self) -> subprocess.Popen:
        return procs.popen([sys.executable, os.path.join(HERE, "deps_worker.py"), self.store, self.log],
                           stdout=self.out, stderr=self.out)

    def kill(self, pid: int) -> None:
        for i, p in enumerate(self.procs):
            if p.pid == pid:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
                self.procs[i] = self._start()
                return
        raise AssertionError(f"no worker {pid}")


def _times(log: str) -> tuple[dict, dict]:
    """tag -> list of start times, tag -> list of end times."""
    starts: dict = {}
    ends: dict = {}
    for kind, *fields, at in _entries(log):
        if kind in ("start", "end"):
            (starts if kind == "start" else ends).setdefault(fields[0], []).append(float(at))
    return starts, ends


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def setup(request, tmp_path):
    if request.param == "redis":
        store = request.getfixturevalue("redis_db") + "?lease=1"
    elif request.param == "postgres":
        url = request.getfixturevalue("pg_db")
        store = url + ("&" if "?" in url else "?") + "lease=1"
    else:
        store = str(tmp_path / "tasks.db")
    log = str(tmp_path / "runs.log")
    hu, tasks = make(store, log)          # enqueues only: never started here
    workers = Workers(store, log, 3)
    yield hu, tasks, workers, log
    workers.stop()
    hu.close()
    if request.param == "redis":
        from .redis_check import check_redis_store
        check_redis_store(request.getfixturevalue("redis_db"), "timewheel")
    elif request.param == "postgres":
        from .pg_check import check_pg_store
        check_pg_store(request.getfixturevalue("pg_db"), "timewheel")
    else:
        from .conftest import check_file_store
        check_file_store(store)


def test_order_holds_across_processes_and_then_chains_pass_results(setup) -> None:
    hu, t, workers, log = setup
    rng = random.Random(23)
    step, add = t["step"], t["add"]
    roots = [step.delay(f"r{i}", rng.uniform(0, 0.15), False) for i in range(30)]
    joins = {}
    for i in range(30):
        on = rng.sample(roots, rng.randint(1, 3))
        joins[f"j{i}"] = (step.schedule((f"j{i}", rng.uniform(0, 0.05), False), depends_on=on), on)
    final = step.schedule(("final", 0.0, False), depends_on=[h for h, _ in joins.values()])
    before = sum(hu.store.counts().values())
    with pytest.raises(TaskNotFound):                 # an unknown dependency: nothing written
        step.schedule(("never", 0.0, False), depends_on=[roots[0], "no-such-task"])
    assert sum(hu.store.counts().values()) == before
    chains = [step.delay(f"c{i}", 0.05, False) for i in range(5)]
    ends_of_chains = []
    for i, c in enumerate(chains):
        # c returns its tag; the chain adds numbers: it starts from n, which waits for c
        n = add.schedule((i, 0, f"n{i}"), depends_on=[c])
        ends_of_chains.append(n.then(add, 10, f"n{i}.1").then(add, 100, f"n{i}.2").then(add, 1000, f"n{i}.3"))
    assert final.result(60) == "final"
    assert [h.result(60) for h in ends_of_chains] == [i + 1110 for i in range(5)]
    starts, ends = _times(log)
    for tag, (_, on) in joins.items():
        assert len(starts[tag]) == 1, tag                         # once
        for d in on:
            dep_tag = f"r{roots.index(d)}"
            assert starts[tag][0] >= ends[dep_tag][-1], (tag, dep_tag)
    assert starts["final"][0] >= max(ends[tag][-1] for tag in joins)
    for i in range(5):
        seq = [f"c{i}", f"n{i}", f"n{i}.1", f"n{i}.2", f"n{i}.3"]
        for a, b in zip(seq, seq[1:]):
            assert len(starts[b]) == 1 and starts[b][0] >= ends[a][-1], (a, b)


def test_a_failure_cancels_its_dependents_transitively_and_nothing_waits(setup) -> None:
    hu, t, workers, log = setup
    step = t["step"]
    bad = step.delay("bad", 0.2, True)
    good = step.delay("good", 0.2, False)
    chain = [step.schedule(("d0", 0, False), depends_on=[bad, good])]
    for i in range(1, 5):
        chain.append(step.schedule((f"d{i}", 0, False), depends_on=[chain[-1]]))
    other = step.schedule(("other", 0, False), depends_on=[good])
    assert other.result(60) == "other"
    for h in chain:
        with pytest.raises(TaskFailed):
            h.result(60)                               # finished: nothing waits for ever
    assert chain[0].record.error == f"cancelled: its dependency {bad.id} ended failed, not succeeded"
    assert chain[4].record.error == f"cancelled: its dependency {chain[3].id} ended cancelled, not succeeded"
    starts, _ = _times(log)
    assert not any(f"d{i}" in starts for i in range(5))           # none ever started


def test_a_sigkilled_dependency_reruns_and_its_dependent_runs_once_after_it(setup) -> None:
    hu, t, workers, log = setup
    step = t["step"]
    dep = step.delay("dep", 1.5, False)
    after = step.schedule(("after", 0, False), depends_on=[dep])
    _wait(lambda: "dep" in _times(log)[0], 30, "the dependency to start")
    pid = int(next(f[2] for f in _lines(log, "start") if f[1] == "dep"))
    workers.kill(pid)                                  # mid-run: the documented re-run
    assert after.result(60) == "after"
    starts, ends = _times(log)
    assert len(starts["dep"]) == 2 and len(ends["dep"]) == 1       # killed once, then ran to its end
    assert len(starts["after"]) == 1 and starts["after"][0] >= ends["dep"][0]
    assert dep.record.crashes == 1
