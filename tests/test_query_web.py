"""The query layer's functions for the web view (the ring, one slot, the last hour), on every
backend, checked against what the test itself put in the store."""

from __future__ import annotations

import time

import pytest

from timewheel import query
from timewheel.records import Outcome, end_run, skip_misfired, start_run
from timewheel.wheel import Wheel

from .conftest import make_record


def test_wheel_data_folds_the_coming_revolutions_slot_by_slot(store) -> None:
    now = time.time()
    w: Wheel = store.wheel
    current = w.current_tick(now)
    ticks = {"a": current + 10, "b": current + 10, "c": current + 10 + w.slots, "d": current + 500,
             "e": current + 3 * w.slots + 7, "late": current - 20}
    store.add([make_record(i, w.tick_end(t) - 0.25) for i, t in ticks.items()])
    data = query.wheel_data(store, now, revolutions=2)
    slot = (current + 10) % w.slots
    assert data["load"][slot] == 3 and data["cells"][slot] == 2 and data["next_turn"][slot] == 2
    assert data["load"][(current + 500) % w.slots] == 1
    assert data["load"][(current + 7) % w.slots] == 0               # "e" is beyond two turns
    assert sum(data["load"]) == data["in_window"] == 4
    assert data["by_revolution"] == [3, 1]
    assert (data["overdue"], data["later"], data["pending"]) == (1, 1, 6)
    assert data["current_slot"] == current % w.slots and data["sector_slots"] == 1
    assert query.wheel_data(store, now, revolutions=4)["in_window"] == 5
    with pytest.raises(ValueError, match="revolutions"):
        query.wheel_data(store, now, revolutions=query.MAX_REVOLUTIONS + 1)


def test_slot_data_lists_the_cycles_and_the_tasks_of_one(store) -> None:
    now = time.time()
    w: Wheel = store.wheel
    current = w.current_tick(now)
    t = current + 42
    store.add([make_record("x2", w.tick_end(t) - 0.1), make_record("x1", w.tick_end(t) - 0.9),
               make_record("y", w.tick_end(t + w.slots)), make_record("other", w.tick_end(t + 1) - 0.5),
               make_record("before", w.tick_end(t - 1))])
    data = query.slot_data(store, now, t % w.slots, revolutions=3)
    assert [(c["cycle"], c["count"]) for c in data["cells"]] == [(w.cycle(t), 2), (w.cycle(t) + 1, 1)]
    assert data["cycle"] == w.cycle(t) and [r["id"] for r in data["tasks"]] == ["x1", "x2"]
    later = query.slot_data(store, now, t % w.slots, revolutions=3, cycle=w.cycle(t) + 1)
    assert [r["id"] for r in later["tasks"]] == ["y"] and later["cell"]["count"] == 1
    assert query.slot_data(store, now, t % w.slots, limit=1)["tasks"][0]["id"] == "x1"
    empty = query.slot_data(store, now, (t + 2) % w.slots)
    assert empty["cells"] == [] and empty["tasks"] == [] and empty["cell"] is None
    with pytest.raises(ValueError, match="slot"):
        query.slot_data(store, now, w.slots)


def test_series_data_counts_the_last_hour_per_minute(store) -> None:
    now = time.time()
    owner = store.liveness.token
    minute = (now - 600) // 60 * 60                  # five runs that end within one minute
    recs = [make_record(f"ok{i}", minute + 5 + i) for i in range(5)] + \
        [make_record("bad", now - 120), make_record("old", now - 7200), make_record("skip", now - 60,
                                                                                   misfire_grace=0.1),
         make_record("stop", now - 90)]
    store.add(recs)
    for r in recs:
        started = r.eta + (0.5 if r.id != "ok4" else 2.5)
        (run,) = store.swap([(r, start_run(r, owner, started))])
        if r.id == "skip":
            store.swap([(run, skip_misfired(run, started))])
            continue
        if r.id == "stop":                          # asked to abort, and it stopped
            run = run._replace(abort=started + 0.05)
            store.swap([(store.get("stop"), end_run(run, Outcome(False, started, started + 0.1,
                                                                  error="TaskAborted: stopped")))])
            continue
        out = Outcome(ok=r.id != "bad", started=started, finished=started + 0.1, error="E: no")
        store.swap([(run, end_run(run, out))])
    data = query.series_data(store, now)
    total = {k: sum(b[k] for b in data["buckets"]) for k in ("succeeded", "failed", "misfired", "aborted")}
    assert total == {"succeeded": 5, "failed": 1, "misfired": 1, "aborted": 1} and not data["sampled"]
    (busy,) = [b for b in data["buckets"] if b["succeeded"]]
    assert busy["start"] == minute and busy["succeeded"] == 5
    assert busy["lateness_p50"] == pytest.approx(0.5) and busy["lateness_max"] == pytest.approx(2.5)
    sampled = query.series_data(store, now, cap=2)
    assert sampled["sampled"] is True and sampled["complete_since"] >= minute + 5 + 3
    assert [b["succeeded"] for b in sampled["buckets"] if b["start"] <= minute] == [None] * (
        sum(b["start"] <= minute for b in sampled["buckets"]))
