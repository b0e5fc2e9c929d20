"""The boss, driven step by step with a fake clock: no boss thread, no sleeping.

The pool is replaced by a recorder that keeps what it was handed (the boss's contract with
the pool is ``workers`` and ``submit``); the test hands outcomes back when it likes.  Real
threads and processes are exercised in test_api, test_durability and test_multiprocess.
"""

from __future__ import annotations

import pytest

from timewheel.boss import Boss
from timewheel.records import MISFIRED, RUNNING, SUCCEEDED, Outcome, TaskRecord
from timewheel.store import MemoryStore, SqliteDictStore
from timewheel.wheel import Wheel

from .conftest import make_record

T0 = 1_700_000_000


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for WorkerPool: remembers what was submitted and when, and hands outcomes
    back to the boss through the callback the boss gave it (as a worker would)."""

    def __init__(self, clock: FakeClock, workers: int = 4) -> None:
        self.clock = clock
        self.workers = workers
        self.got: list[tuple[float, TaskRecord]] = []
        self.done: set[tuple[str, int]] = set()       # (id, rev) of runs handed back

    def start(self, on_done, on_start=None) -> None:
        self.on_done = on_done            # (on_start: nothing here waits in a queue)

    def stop(self, wait: bool = True, timeout=None) -> None:
        pass

    def submit(self, rec: TaskRecord) -> None:
        self.got.append((self.clock.now, rec))

    def finish(self, rec: TaskRecord, outcome: Outcome) -> None:
        self.done.add((rec.id, rec.rev))
        self.on_done(rec, outcome)

    def withdraw(self) -> list[TaskRecord]:
        return []                              # every task submitted has "started"

    @property
    def busy(self) -> int:
        return sum((r.id, r.rev) not in self.done for _, r in self.got)

    queued = 0

    @property
    def ids(self) -> list[str]:
        return [r.id for _, r in self.got]


def make_boss(store, clock: FakeClock, workers: int = 4, **kw) -> tuple[Boss, Recorder]:
    pool = Recorder(clock, workers)
    boss = Boss(store, pool, **kw)                       # type: ignore[arg-type]
    boss.start(thread=False)            # rounds are the test's: boss.step() on the fake clock
    return boss, pool


@pytest.fixture
def env():
    clock = FakeClock(T0 + 0.5)
    store = MemoryStore(Wheel(), clock=clock)
    boss, pool = make_boss(store, clock, workers=1000)
    return clock, store, pool, boss


def finish_all(boss: Boss, pool: Recorder, ok: bool = True) -> None:
    """Hand back an outcome for every submitted task not yet finished."""
    for at, rec in pool.got:
        if (rec.id, rec.rev) not in pool.done:
            pool.finish(rec, Outcome(ok, at, at, error=None if ok else "E: x"))


def run_until(clock: FakeClock, boss: Boss, until: float, max_steps: int = 100_000) -> None:
    """Advance the fake clock exactly as the boss asks, as its thread would."""
    for _ in range(max_steps):
        delay = boss.step()
        nxt = clock.now + max(delay, 1e-6)
        if nxt > until:
            clock.now = until
            boss.step()
            return
        clock.now = nxt
    raise AssertionError("boss never went idle")


def test_each_task_is_submitted_at_its_exact_eta(env) -> None:
    clock, store, pool, boss = env
    etas = [T0 + 1.3, T0 + 2.0, T0 + 2.001, T0 + 7.75, T0 + 3600.4, T0 + 4.5]
    store.add([make_record(f"t{n}", eta) for n, eta in enumerate(etas)])
    run_until(clock, boss, T0 + 3700)
    by_id = {r.id: at for at, r in pool.got}
    assert sorted(by_id) == sorted(f"t{n}" for n in range(len(etas)))
    for n, eta in enumerate(etas):
        assert eta <= by_id[f"t{n}"] <= eta + 1e-5, (n, eta, by_id[f"t{n}"])
    assert all(r.status == RUNNING for _, r in pool.got)


def test_never_early_even_when_stepped_early(env) -> None:
    clock, store, pool, boss = env
    store.add([make_record("a", T0 + 2.5)])
    for now in (T0 + 1.0, T0 + 2.0, T0 + 2.4999, T0 + 2.49999):     # (float spacing here: 2.4e-7)
        clock.now = now
        boss.step()
        assert pool.got == []
    clock.now = T0 + 2.5
    boss.step()
    assert pool.ids == ["a"]


def test_the_wheel_advances_lookahead_ticks_ahead_on_tick_boundaries(env) -> None:
    clock, store, pool, boss = env
    boss.step()
    h = store.state().horizon
    assert h == T0 + boss.lookahead                 # ticks ahead of the clock
    clock.now = T0 + 2.2
    boss.step()
    assert store.state().horizon == h               # still covered: no write
    clock.now = T0 + boss.lookahead + 0.1
    boss.step()
    assert store.state().horizon == T0 + 2 * boss.lookahead
    delay = boss.step()
    assert delay <= 1.0 + 1e-9                      # wakes at the next tick boundary


def test_catch_up_after_downtime_runs_every_missed_task_once(env) -> None:
    clock, store, pool, boss = env
    store.add([make_record(f"d{i}", T0 + 10 + i * 37.3) for i in range(300)])   # over 3 h
    clock.now = T0 + 86400.0                         # nobody ran for a day
    run_until(clock, boss, T0 + 86400.0 + 3)
    assert sorted(pool.ids) == sorted(f"d{i}" for i in range(300))
    assert len(set(pool.ids)) == 300


def test_clock_going_back_makes_nothing_ready_twice(env) -> None:
    clock, store, pool, boss = env
    store.add([make_record("x", T0 + 3.2)])
    run_until(clock, boss, T0 + 5)
    finish_all(boss, pool)
    clock.now = T0 + 1.0                             # NTP stepped the clock back
    run_until(clock, boss, T0 + 8)
    assert pool.ids == ["x"]
    assert store.get("x").status == SUCCEEDED


def test_claims_idle_workers_and_queues_only_in_a_backlog(env) -> None:
    clock = FakeClock(T0 + 0.5)
    store = MemoryStore(Wheel(), clock=clock)
    boss, pool = make_boss(store, clock, workers=3)
    store.add([make_record(f"t{i}", T0 + 1) for i in range(40)])
    clock.now = T0 + 1.5
    boss.step()
    assert len(pool.got) == 3 and all(r.started is not None for _, r in pool.got)
    boss.step()            # the claim came back full with more due: a backlog, queue some
    queued = [r for _, r in pool.got[3:]]
    assert 0 < len(queued) <= boss.max_extra and all(r.started is None for r in queued)
    while len(pool.got) < 40:
        finish_all(boss, pool)
        boss.step()
    finish_all(boss, pool)
    boss.step()
    assert boss.queueing == 0                          # the backlog is gone
    store.add([make_record("s1", T0 + 3), make_record("s2", T0 + 3)])
    run_until(clock, boss, T0 + 3.5)
    assert [r.started is not None for _, r in pool.got[40:]] == [True, True]   # no queueing


def test_a_late_task_past_its_misfire_grace_is_skipped_visibly(env) -> None:
    clock, store, pool, boss = env
    store.add([make_record("late", T0 + 1, misfire_grace=5.0), make_record("ok", T0 + 1)])
    clock.now = T0 + 60                              # a minute of downtime
    run_until(clock, boss, T0 + 61)
    assert pool.ids == ["ok"]
    rec = store.get("late")
    assert rec.status == MISFIRED and "misfire_grace" in rec.error


def test_failures_retry_at_their_backoff_and_outcomes_are_fenced(env) -> None:
    clock, store, pool, boss = env
    store.add([make_record("r", T0 + 1, retries=1, retry_delay=10.0)])
    run_until(clock, boss, T0 + 2)
    finish_all(boss, pool, ok=False)
    failed_at = pool.got[0][0]                       # the outcome's finish time
    run_until(clock, boss, failed_at + 9.9)
    assert pool.ids == ["r"]                         # waits its 10 s
    run_until(clock, boss, failed_at + 11)
    assert pool.ids == ["r", "r"] and pool.got[1][0] >= failed_at + 10.0
    # an outcome carrying the first claim's rev is refused: it must not overwrite the second
    first = pool.got[0][1]
    pool.finish(first, Outcome(True, T0 + 1, T0 + 2))
    boss.step()
    assert store.get("r").status == RUNNING


def test_tasks_of_a_dead_process_are_requeued(env, tmp_path) -> None:
    clock, store, pool, boss = env
    store.add([make_record("orphan", T0 + 1)])
    store.advance(T0 + 5, 100, "other")
    clock.now = T0 + 1.5
    (taken,) = store.claim("memory:1:gone", clock.now, 1).records   # a process that died
    run_until(clock, boss, T0 + 3)
    assert pool.ids == ["orphan"]
    rec = store.get("orphan")
    assert rec.status == RUNNING and rec.crashes == 1 and rec.owner == store.liveness.token


def test_one_leader_per_store_file_among_bosses_of_one_process(tmp_path) -> None:
    clock = FakeClock(T0 + 0.5)
    path = str(tmp_path / "tasks.db")
    a, b = SqliteDictStore(path, clock=clock), SqliteDictStore(path, clock=clock)
    boss_a, _ = make_boss(a, clock)
    boss_b, _ = make_boss(b, clock)
    boss_a.step()
    boss_b.step()
    assert boss_a.leading and not boss_b.leading
    boss_a.stop(wait=False)             # resigns: another may take the role at once
    clock.now += 1.1
    boss_b.step()
    assert boss_b.leading
    a.close()
    b.close()
