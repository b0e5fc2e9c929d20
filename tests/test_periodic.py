"""Periodic tasks: the pure schedule arithmetic (DST included), then real threads on real files."""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import sys
import textwrap
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from timewheel import TimeWheel
from timewheel.periodic import (
    MAX_CATCH_UP,
    Cron,
    Every,
    due_between,
    occurrence_id,
    plan,
    schedules,
)
from timewheel.records import CANCELLED, MISFIRED, PENDING, SUCCEEDED
from timewheel.testing import processes as procs

from .conftest import ROOT, records_of, wait_for

BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: dt.tzinfo, *args: int, fold: int = 0) -> float:
    return dt.datetime(*args, tzinfo=zone, fold=fold).timestamp()


def utc(*args: int) -> float:
    return at(dt.timezone.utc, *args)


def fires(schedule, start: float, n: int) -> list[float]:
    out, t = [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(t)
    return out


# -- every= ----------------------------------------------------------------------------------

def test_every_is_on_an_epoch_grid() -> None:
    e = Every(900)
    assert e.next_after(utc(2024, 5, 1, 10, 7, 3)) == utc(2024, 5, 1, 10, 15)
    assert e.next_after(utc(2024, 5, 1, 10, 15)) == utc(2024, 5, 1, 10, 30)   # strictly after
    assert Every(dt.timedelta(minutes=15)) == e
    assert fires(Every(2.5), 0.0, 4) == [2.5, 5.0, 7.5, 10.0]


@pytest.mark.parametrize("bad", [0, -1, 0.0001, math.inf, math.nan])
def test_every_must_be_a_sane_period(bad: float) -> None:
    with pytest.raises(ValueError):
        Every(bad)


@pytest.mark.parametrize("bad", ["60", True, None])
def test_every_must_be_a_number(bad: object) -> None:
    with pytest.raises(TypeError):
        Every(bad)  # type: ignore[arg-type]


periods = st.one_of(st.integers(1, 7 * 86400).map(float),
                    st.floats(0.001, 86400.0, allow_nan=False, allow_infinity=False))
instants = st.floats(0.0, 4.0e9, allow_nan=False, allow_infinity=False)


@given(periods, instants)
def test_every_properties(period: float, now: float) -> None:
    e = Every(period)
    nxt = e.next_after(now)
    assert nxt > now                              # never at or before now
    k = round(nxt / period)
    assert nxt == k * period                      # on the grid, not "now + every": no drift
    assert (k - 1) * period <= now                # the first grid point after now: none skipped
    assert e.next_after(nxt) > nxt                # strictly increasing


# -- cron= ------------------------------------------------------------------------------------

def test_cron_defaults_to_utc_and_agrees_with_croniter() -> None:
    c = Cron("0 3 * * *")
    start = utc(2024, 3, 30, 12, 0)
    ref = croniter("0 3 * * *", dt.datetime.fromtimestamp(start, dt.timezone.utc))
    assert fires(c, start, 5) == [ref.get_next(float) for _ in range(5)]
    assert c.spec == "cron=0 3 * * *;tz=UTC"


def test_cron_accepts_a_seconds_field() -> None:
    assert fires(Cron("* * * * * */20"), utc(2024, 1, 1), 3) == [
        utc(2024, 1, 1, 0, 0, 20), utc(2024, 1, 1, 0, 0, 40), utc(2024, 1, 1, 0, 1)]


def test_spring_forward_daily_job_in_the_gap_fires_once_at_the_jump() -> None:
    # Berlin, 2024-03-31: 02:00 CET -> 03:00 CEST.  02:30 does not exist that night.
    got = fires(Cron("30 2 * * *", "Europe/Berlin"), at(BERLIN, 2024, 3, 30, 12), 3)
    assert got == [at(BERLIN, 2024, 3, 31, 3), at(BERLIN, 2024, 4, 1, 2, 30), at(BERLIN, 2024, 4, 2, 2, 30)]
    assert got[0] == utc(2024, 3, 31, 1, 0)


def test_spring_forward_jobs_outside_the_gap_are_unaffected() -> None:
    got = fires(Cron("0 3 * * *", "Europe/Berlin"), at(BERLIN, 2024, 3, 30, 12), 2)
    assert got == [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 1, 0)]     # 03:00 CEST both days


def test_spring_forward_hourly_job_loses_the_skipped_hour() -> None:
    got = fires(Cron("0 * * * *", "Europe/Berlin"), at(BERLIN, 2024, 3, 31, 0, 30), 4)
    # 01:00 CET, then 02:00 (nonexistent) and 03:00 CEST are the same instant: one run.
    assert got == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2), utc(2024, 3, 31, 3)]


def test_fall_back_repeated_wall_time_fires_once() -> None:
    # Berlin, 2024-10-27: 03:00 CEST -> 02:00 CET.  02:30 happens twice that night.
    got = fires(Cron("30 2 * * *", "Europe/Berlin"), at(BERLIN, 2024, 10, 26, 12), 3)
    assert got == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30), utc(2024, 10, 29, 1, 30)]
    # Asked during the second 02:xx hour, the 02:30 of that night is already past.
    second_pass = at(BERLIN, 2024, 10, 27, 2, 10, fold=1)
    assert Cron("30 2 * * *", "Europe/Berlin").next_after(second_pass) == utc(2024, 10, 28, 1, 30)


def test_fall_back_hourly_job_fires_once_per_wall_hour() -> None:
    got = fires(Cron("0 * * * *", "Europe/Berlin"), at(BERLIN, 2024, 10, 27, 1, 30), 3)
    assert got == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]


def test_new_york_dst_days() -> None:
    ny = ZoneInfo("America/New_York")
    spring = fires(Cron("30 2 * * *", ny), at(ny, 2024, 3, 9, 12), 2)      # 02:00 -> 03:00
    assert spring == [at(ny, 2024, 3, 10, 3), at(ny, 2024, 3, 11, 2, 30)]
    fall = fires(Cron("30 1 * * *", ny), at(ny, 2024, 11, 2, 12), 2)        # 02:00 -> 01:00
    assert fall == [at(ny, 2024, 11, 3, 1, 30), at(ny, 2024, 11, 4, 1, 30)]


def test_fixed_offset_zone() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert Cron("0 3 * * *", plus2).next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 1)


@pytest.mark.parametrize("expr", ["", "bad", "61 * * * *", "* * *"])
def test_invalid_cron_is_refused(expr: str) -> None:
    with pytest.raises(ValueError):
        Cron(expr)


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        Cron("0 3 * * *", "Mars/Olympus_Mons")


# Property tests for cron: instants drawn near real DST transitions as well as anywhere.

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
EXPRS = ["*/15 * * * *", "0 * * * *", "30 2 * * *", "0 3 * * *", "45 1,2,3 * * *",
         "0 0 * * *", "*/7 2 * * *", "0 12 * * *"]


def _transitions(zone: str, first_year: int = 2020, last_year: int = 2030) -> list[float]:
    z = ZoneInfo(zone)

    def offset(t: float) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(t, z).utcoffset()

    out = []
    t = utc(first_year, 1, 1)
    while t < utc(last_year, 12, 31):
        if offset(t) != offset(t + 86400):
            lo, hi = t, t + 86400
            while hi - lo > 1:
                mid = (lo + hi) // 2
                same = offset(mid) == offset(lo)
                lo, hi = (mid, hi) if same else (lo, mid)
            out.append(hi)
        t += 86400
    return out


TRANSITIONS = {z: _transitions(z) for z in ZONES}


@st.composite
def cron_cases(draw: st.DrawFn) -> tuple[str, str, float]:
    zone = draw(st.sampled_from(ZONES))
    expr = draw(st.sampled_from(EXPRS))
    near = TRANSITIONS[zone]
    if near and draw(st.booleans()):
        t = draw(st.sampled_from(near)) + draw(st.floats(-4 * 3600.0, 4 * 3600.0))
    else:
        t = draw(st.floats(utc(2020, 1, 2), utc(2030, 12, 1)))
    return zone, expr, t


@functools.lru_cache(maxsize=None)
def _matching_minutes(expr: str) -> frozenset[tuple[int, int]]:
    """(hour, minute) pairs the expression matches (EXPRS only depend on those)."""
    day = dt.datetime(2001, 1, 1)
    return frozenset((m // 60, m % 60) for m in range(1440)
                     if croniter.match(expr, day + dt.timedelta(minutes=m)))


def _reference_next(expr: str, zone: str, t: float) -> float:
    """Brute force, minute by minute: an instant fires when the wall clock first reaches a
    matching wall time there -- by ticking onto it, or by jumping over it."""
    z = ZoneInfo(zone)
    match = _matching_minutes(expr)
    s = (math.floor(t / 60) - 4 * 60) * 60                 # start early: learn the highest wall time
    reached = dt.datetime.fromtimestamp(s, z).replace(tzinfo=None)
    while True:
        s += 60
        wall = dt.datetime.fromtimestamp(s, z).replace(tzinfo=None)
        w = reached + dt.timedelta(minutes=1)
        hit = False
        while w <= wall:                                   # newly reached wall minutes
            hit = hit or (w.hour, w.minute) in match
            w += dt.timedelta(minutes=1)
        reached = max(reached, wall)
        if hit and s > t:
            return float(s)


@settings(max_examples=60, deadline=None)
@given(cron_cases())
def test_cron_properties(case: tuple[str, str, float]) -> None:
    zone, expr, now = case
    c = Cron(expr, zone)
    nxt = c.next_after(now)
    assert nxt > now                                       # never at or before now
    assert nxt == _reference_next(expr, zone, now)         # on grid, none skipped, DST rules
    assert c.next_after(nxt) > nxt                         # strictly increasing
    assert c.next_after(now - 1) <= nxt                    # monotonic in now


# -- occurrences and catch-up planning ------------------------------------------------------------

def test_occurrence_ids_are_deterministic_and_distinct() -> None:
    e = Every(60)
    assert occurrence_id("job", e, 120.0) == occurrence_id("job", Every(60.0), 120.0)
    ids = {occurrence_id("job", e, 120.0), occurrence_id("job", e, 180.0),
           occurrence_id("other", e, 120.0), occurrence_id("job", Every(30), 120.0),
           occurrence_id("job", Cron("* * * * *"), 120.0)}
    assert len(ids) == 5
    assert all(":" not in i for i in ids)       # the store splits some keys on ':'


def test_plan_coalesces_or_catches_up() -> None:
    e = Every(10)
    assert plan(e, 105.0, last=50.0, coalesce=True) == [110.0]
    assert plan(e, 105.0, last=50.0, coalesce=False) == [60.0, 70.0, 80.0, 90.0, 100.0, 110.0]
    assert plan(e, 105.0, last=None, coalesce=False) == [110.0]
    assert plan(e, 105.0, last=110.0, coalesce=False) == [110.0]


def test_catch_up_is_capped_to_the_latest() -> None:
    got = due_between(Every(1), 0.0, 5000.0)
    assert len(got) == MAX_CATCH_UP and got[-1] == 5000.0 and got[0] == 5001.0 - MAX_CATCH_UP


# -- registration ---------------------------------------------------------------------------------

def test_registration_validates(db_path: str) -> None:
    hu = TimeWheel(db_path)
    with pytest.raises(ValueError, match="exactly one"):
        hu.periodic()
    with pytest.raises(ValueError, match="exactly one"):
        hu.periodic(every=1, cron="* * * * *")
    with pytest.raises(ValueError, match="tz"):
        hu.periodic(every=1, tz="UTC")
    with pytest.raises(ValueError, match="never fires"):
        hu.periodic(cron="0 0 31 2 *")
    with pytest.raises(TypeError, match="without arguments"):
        hu.periodic(every=1)(lambda x: x)
    with pytest.raises(TypeError):
        hu.periodic(every=1, coalesce="yes")

    @hu.periodic(cron="0 3 * * *", tz="Europe/Berlin", name="nightly", retries=2)
    def nightly() -> str:
        return "ok"

    assert hu.tasks["nightly"] is nightly and nightly.retries == 2
    assert nightly() == "ok"                              # still a plain function call
    assert schedules(hu) == {"nightly": Cron("0 3 * * *", "Europe/Berlin")}
    assert hu._store is None                              # registering opened nothing


# -- real threads, real files -----------------------------------------------------------------------

class Clock:
    """Real time plus an offset that a test moves forward to simulate downtime."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def records(hu: TimeWheel, name: str, status: str | None = None) -> list:
    return sorted(records_of(hu.store, status, name), key=lambda r: r.eta)


def _consecutive(etas: list[float]) -> bool:
    return etas == [etas[0] + i for i in range(len(etas))]


def test_runs_repeatedly_on_grid_as_ordinary_tasks(db_path: str) -> None:
    hu = TimeWheel(db_path, workers=2)
    runs: list[float] = []

    @hu.periodic(every=1, name="tick")
    def tick() -> int:
        runs.append(time.time())
        return len(runs)

    with hu:
        wait_for(lambda: len(records(hu, "tick", SUCCEEDED)) >= 3, timeout=10)
    done = records(hu, "tick", SUCCEEDED)
    etas = [r.eta for r in done]
    assert _consecutive(etas) and etas[0] == int(etas[0])
    for rec in done:
        assert rec.started >= rec.eta and rec.id == occurrence_id("tick", Every(1), rec.eta)
    assert [hu.get(r.id).result(timeout=0) for r in done] == list(range(1, len(done) + 1))
    pending = records(hu, "tick", PENDING)         # the next one (two if stopped as one fell due)
    assert 1 <= len(pending) <= 2 and pending[0].eta > etas[-1]



def test_registered_after_start(db_path: str) -> None:
    hu = TimeWheel(db_path)
    runs: list[int] = []
    with hu:
        hu.periodic(every=1, name="late")(lambda: runs.append(1))
        assert len(records(hu, "late", PENDING)) == 1
        wait_for(lambda: runs, timeout=5)


def test_cron_runs_with_real_threads(db_path: str) -> None:
    hu = TimeWheel(db_path)
    runs: list[int] = []
    hu.periodic(cron="* * * * * *", tz="Europe/Berlin", name="every-second")(lambda: runs.append(1))
    with hu:
        wait_for(lambda: len(runs) >= 2, timeout=6)


def test_a_failing_occurrence_does_not_break_the_chain(db_path: str) -> None:
    hu = TimeWheel(db_path)
    runs: list[int] = []

    @hu.periodic(every=1, name="flaky")
    def flaky() -> None:
        runs.append(1)
        raise RuntimeError("boom")

    with hu:
        wait_for(lambda: len(runs) >= 2, timeout=6)
    assert {r.status for r in records(hu, "flaky")} >= {"failed", PENDING}


def _downtime(db_path: str, coalesce: bool, **options: object) -> tuple[TimeWheel, list[float], float]:
    """Run every=1 until it ran once, stop, move the clock 30 s on, start again.  Returns the
    wheel (running), the run times seen after the restart, and the restart time."""
    clock = Clock()
    runs: list[float] = []
    hu = TimeWheel(db_path, clock=clock)
    hu.periodic(every=1, name="job", coalesce=coalesce, **options)(lambda: runs.append(clock()))
    with hu:
        wait_for(lambda: records(hu, "job", SUCCEEDED), timeout=5)
    assert len(records(hu, "job", SUCCEEDED)) == 1 and len(records(hu, "job", PENDING)) == 1
    runs.clear()
    clock.offset += 30.0
    restart = clock()
    hu.start()
    return hu, runs, restart


def test_downtime_is_coalesced_into_one_late_run(db_path: str) -> None:
    hu, runs, restart = _downtime(db_path, coalesce=True)
    try:
        wait_for(lambda: len(runs) >= 3, timeout=5)
    finally:
        hu.stop()
    assert runs[0] - restart < 2                       # the missed ones ran once, at once
    done = records(hu, "job", SUCCEEDED)
    late = [r for r in done if r.eta < restart]
    assert len(late) == 2                              # the first run, and the coalesced late one
    assert late[1].started - late[1].eta > 25
    # The 29 occurrences in between never existed; the schedule resumed on its 1 s grid.
    after = [r.eta for r in done if r.eta > restart]
    assert after and _consecutive(after) and after[0] == int(after[0]) and after[0] - restart < 1.5


def test_downtime_without_coalescing_runs_each_missed_occurrence(db_path: str) -> None:
    hu, runs, restart = _downtime(db_path, coalesce=False)
    try:
        wait_for(lambda: len(runs) >= 31, timeout=10)
    finally:
        hu.stop()
    etas = [r.eta for r in records(hu, "job", SUCCEEDED)]
    assert _consecutive(etas)                                    # every grid point ran, once
    assert etas[-1] > restart


def test_downtime_with_misfire_grace_skips_the_late_run_visibly(db_path: str) -> None:
    hu, runs, restart = _downtime(db_path, coalesce=True, misfire_grace=5)
    try:
        wait_for(lambda: records(hu, "job", MISFIRED), timeout=5)
        wait_for(lambda: runs, timeout=5)                        # and the chain went on
    finally:
        hu.stop()
    [skipped] = records(hu, "job", MISFIRED)
    assert skipped.eta < restart
    assert all(r.eta > restart for r in records(hu, "job", SUCCEEDED)[1:])


def test_schedule_change_and_removal_take_effect_at_restart(db_path: str) -> None:
    hu = TimeWheel(db_path)
    hu.periodic(every=1, name="job")(lambda: None)
    with hu:
        old = records(hu, "job", PENDING)
    assert len(old) == 1

    changed = TimeWheel(db_path)
    changed.periodic(every=2, name="job")(lambda: None)
    with changed:
        new = records(changed, "job", PENDING)
    assert changed.get(old[0].id).status == CANCELLED
    assert len(new) == 1 and new[0].id == occurrence_id("job", Every(2), new[0].eta)

    # No longer periodic, but still a task here (and another periodic task exists): cancelled.
    removed = TimeWheel(db_path)
    removed.task(name="job")(lambda: None)
    removed.periodic(every=1, name="other")(lambda: None)
    with removed:
        assert records(removed, "job", PENDING) == []
    assert removed.get(new[0].id).status == CANCELLED


def test_removed_periodic_is_never_rechained(db_path: str) -> None:
    hu = TimeWheel(db_path)
    hu.periodic(every=1, name="job")(lambda: None)
    with hu:
        pass
    # This process declares no periodic task at all, so nothing reconciles: the pending
    # occurrence runs once more, and nothing adds another.
    plain = TimeWheel(db_path)
    ran: list[int] = []
    plain.task(name="job")(lambda: ran.append(1))
    with plain:
        wait_for(lambda: ran, timeout=5)
        time.sleep(1.5)
    assert len(ran) == 1 and records(plain, "job", PENDING) == []


def test_exactly_once_across_two_wheels_in_one_process(db_path: str) -> None:
    runs: list[str] = []
    wheels = [TimeWheel(db_path, workers=2) for _ in range(2)]
    for i, hu in enumerate(wheels):
        hu.periodic(every=1, name="shared")(functools.partial(runs.append, f"wheel{i}"))
        hu.start()
    try:
        wait_for(lambda: len(runs) >= 3, timeout=10)
    finally:
        for hu in wheels:
            hu.stop()
    done = records(wheels[0], "shared", SUCCEEDED)
    assert len(runs) == len(done) and _consecutive([r.eta for r in done])


def test_exactly_once_across_two_processes_and_a_takeover(tmp_path) -> None:
    db = str(tmp_path / "shared.db")
    log = str(tmp_path / "runs.log")
    script = tmp_path / "proc.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        from timewheel import TimeWheel
        hu = TimeWheel({db!r}, workers=2)

        @hu.periodic(every=1, name="shared")
        def shared():
            with open({log!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")

        hu.start()
        time.sleep(float(sys.argv[1]))
        hu.stop()
    """))
    env = dict(os.environ, PYTHONPATH=ROOT)
    # The first process ticks; the second adds occurrences too and takes over when it stops.
    first = procs.popen([sys.executable, str(script), "2.5"], env=env)
    wait_for(lambda: os.path.exists(log), timeout=15)
    second = procs.popen([sys.executable, str(script), "3"], env=env)
    assert [first.wait(timeout=30), second.wait(timeout=30)] == [0, 0]
    with open(log) as fh:
        pids = fh.read().split()
    hu = TimeWheel(db)
    done = records(hu, "shared", SUCCEEDED)
    hu.close()
    assert len(set(pids)) == 2                            # both processes ran occurrences
    assert len(pids) == len(done)                         # each run is one record
    assert _consecutive([r.eta for r in done])            # one record per occurrence, no gap


def test_keeper_thread_ends_after_stop(db_path: str) -> None:
    hu = TimeWheel(db_path)
    hu.periodic(every=1, name="job")(lambda: None)
    with hu:
        assert any(t.name == "timewheel-periodic" for t in threading.enumerate())
    wait_for(lambda: not any(t.name == "timewheel-periodic" for t in threading.enumerate()), timeout=5)


WITHOUT_CRONITER = textwrap.dedent("""
    import sys

    class Hidden:                      # as if croniter were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "croniter":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Hidden())
    from timewheel import TimeWheel
    hu = TimeWheel(None)
    try:
        hu.periodic(cron="0 3 * * *")(lambda: None)
    except ImportError as exc:
        print(f"{type(exc).__name__}: {exc}")
    hu.periodic(every=60, name="every")(lambda: None)      # every= needs no croniter
    print("every ok")
""")


def test_cron_without_croniter_says_how_to_install_it() -> None:
    """Issue 19 item 14: a missing croniter gave a ModuleNotFoundError traceback from deep in
    the decorator; it must be a clear error, at decoration time, with the install command."""
    done = procs.run([sys.executable, "-c", WITHOUT_CRONITER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.splitlines() == ["ImportError: cron= schedules need croniter, which is not installed: "
                                        "pip install 'timewheel[cron]'", "every ok"], done.stdout
