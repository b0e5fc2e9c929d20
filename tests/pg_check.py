"""The PostgreSQL store's invariants, read with plain SQL (no timewheel code but the record
checks and the wheel's arithmetic): every row is a record that can be read and sits where its
status says, and the counters (folded totals plus deltas) equal a recount of the rows."""

from __future__ import annotations

from collections import Counter

import psycopg

from timewheel.records import PENDING, RUNNING, TERMINAL
from timewheel.store.base import eta_us, finished_ms
from timewheel.store.postgres import decode_row
from timewheel.store.postgres_sql import ROW_COLUMNS as RECORD_COLUMNS
from timewheel.wheel import Wheel


def check_pg_store(url: str, schema: str) -> None:
    s = '"' + schema + '"'
    with psycopg.connect(url, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", (f"{s}.meta",)).fetchone()[0] is None:
            return
        slots, tick, horizon = c.execute(f"SELECT slots, tick, horizon FROM {s}.meta WHERE id = 1").fetchone()
        wheel = Wheel(slots=slots, tick=tick)
        cols = ", ".join(RECORD_COLUMNS)
        states: Counter = Counter()
        ticks: Counter = Counter()
        running_limits: dict[str, set] = {}
        for row in c.execute(f"SELECT {cols}, eta_us, tick, ready, finished_ms, parked FROM {s}.tasks"):
            task_id, name, status = row[0], row[1], row[4]
            e_us, t, ready, f_ms, parked = row[len(RECORD_COLUMNS):]
            states[(status, name)] += 1
            if status == "broken":
                assert not ready, task_id
                continue
            rec = decode_row(row[:len(RECORD_COLUMNS)])
            if status != PENDING:
                assert parked is None, (task_id, status, parked)
            else:
                # waiting for its dependencies (issue 23): parked as '~deps', on as many open rows
                assert (parked == "~deps") == (rec.waiting > 0), (task_id, parked, rec.waiting)
                if rec.waiting:
                    (n,), = c.execute(f"SELECT count(*) FROM {s}.deps WHERE task = %s AND open", (task_id,))
                    assert n == rec.waiting, (task_id, n, rec.waiting)
                else:
                    assert parked is None or parked in [lim[0] for lim in rec.limits], (task_id, parked)
            if status == RUNNING:
                running_limits[task_id] = {lim[0] for lim in rec.limits}
            assert e_us == eta_us(rec.eta) and t == wheel.due_tick(rec.eta), (task_id, e_us, t)
            if status == PENDING:
                ticks[t] += 1
                assert not ready or t == horizon + 1 or t <= horizon, (task_id, t, horizon)
            else:
                assert not ready, task_id
            if status == RUNNING:
                assert rec.owner, task_id
            if status in TERMINAL:
                assert f_ms == finished_ms(rec.finished), task_id
        stored = Counter({(st, n): v for st, n, v in c.execute(
            f"SELECT status, name, sum(n) FROM (SELECT status, name, n FROM {s}.counts UNION ALL "
            f"SELECT status, name, n FROM {s}.counts_delta) x GROUP BY 1, 2")})
        assert +stored == +states and not -stored, f"counts {dict(stored)} != recount {dict(+states)}"
        per_tick = Counter({t: v for t, v in c.execute(
            f"SELECT tick, sum(n) FROM (SELECT tick, n FROM {s}.counts WHERE status = 'pending' UNION ALL "
            f"SELECT tick, n FROM {s}.counts_delta WHERE status = 'pending') x GROUP BY 1")})
        assert +per_tick == +ticks and not -per_tick, f"ticks {dict(+per_tick)} != recount {dict(+ticks)}"
        # flow control: a slot is held only by a running task that counts against its limit,
        # and no limit holds more slots than its concurrency
        for lim, task_id in c.execute(f"SELECT lim, task FROM {s}.held"):
            assert lim in running_limits.get(task_id, ()), (lim, task_id)
        for lim, held, cap in c.execute(f"SELECT h.lim, count(*), max(l.concurrency) FROM {s}.held h "
                                        f"JOIN {s}.limits l ON l.lim = h.lim GROUP BY h.lim"):
            assert not cap or held <= cap, (lim, held, cap)
        folded = c.execute(f"SELECT count(*) FROM {s}.counts WHERE n = 0").fetchone()[0]
        assert folded == 0, "a folded counter of 0 was kept"
        _check_batches(c, s)


def _check_batches(c, s: str) -> None:
    """Each batch's counts (kept by the writes) equal a recount of its members' rows, and no
    member of a batch that is not done is gone."""
    from timewheel import batches as br
    for batch_id, done, *counts in c.execute(
            f"SELECT id, done, {', '.join(br.CLASSES)} FROM {s}.batches").fetchall():
        stored = {k: n for k, n in zip(br.CLASSES, counts) if n}
        recount: dict = {}
        missing = 0
        for status, batch in c.execute(f"SELECT t.status, t.batch FROM {s}.members m LEFT JOIN {s}.tasks t "
                                       "ON t.id = m.id WHERE m.batch = %s", (batch_id,)):
            if status is None:
                missing += 1
            elif batch == batch_id:
                recount[br.class_of(status)] = recount.get(br.class_of(status), 0) + 1
        assert done is not None or not missing, f"batch {batch_id}: {missing} member(s) gone too early"
        if not missing:
            assert stored == recount, f"batch {batch_id}: counts {stored} != recount {recount}"
        assert done is not None or not br.finished(stored), f"batch {batch_id} finished but not done"
