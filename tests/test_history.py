"""Attempt history (issue 26): each run of a task leaves its start, finish, owner, lateness and
error (first lines, capped) in its record, the last ten; ``timewheel show`` (text and --json)
and the task page list them, and a task waiting for its retry shows as ``retrying``."""

from __future__ import annotations

import json
import os
import pickle
import sys

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel import TimeWheel, current_task
from timewheel.records import (
    ERROR_CHARS,
    FAILED,
    HISTORY,
    PENDING,
    SUCCEEDED,
    Attempt,
    Outcome,
    RecordDecodeError,
    decode_record,
    encode_record,
    end_run,
    first_lines,
    hand_back,
    requeue_crashed,
    start_run,
)
from timewheel.testing import processes as procs
from timewheel.testing.web import serve

from .conftest import make_record, wait_for

T0 = 1_800_000_000.0
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def runs(rec, outcomes):
    """Claim and end ``rec`` once per outcome (True: succeeded; a str: failed with it)."""
    for i, ok in enumerate(outcomes):
        rec = start_run(rec, f"host:{i}", rec.eta + 0.5)
        t = rec.started + 1.0
        out = Outcome(True, t - 1, t, result=b"") if ok is True else Outcome(False, t - 1, t, error=ok)
        rec = end_run(rec, out)
    return rec


def test_a_task_failing_twice_then_succeeding_keeps_three_attempts() -> None:
    rec = runs(make_record("h", T0, retries=3, retry_delay=1.0), ["E: one", "E: two", True])
    assert rec.status == SUCCEEDED
    got = [Attempt._make(a) for a in rec.history]
    assert [(a.number, a.outcome, a.error, a.owner) for a in got] == [
        (1, "retried", "E: one", "host:0"), (2, "retried", "E: two", "host:1"),
        (3, "succeeded", None, "host:2")]
    assert all(a.lateness == 0.5 and a.finished - a.started == 1.0 for a in got)
    assert got[1].eta > got[0].finished                   # each attempt's own eta: the retry's
    assert decode_record(encode_record(rec)) == rec


@given(st.lists(st.one_of(st.just(True), st.text(max_size=30).map(lambda t: "E: " + t)), min_size=1,
                max_size=40))
def test_the_history_keeps_the_last_ten_runs_in_order(outcomes) -> None:
    rec = make_record("h", T0, retries=1000, retry_delay=0.0)
    for ok in outcomes:
        if rec.status != PENDING:
            rec = rec._replace(status=PENDING)
        rec = runs(rec, [ok])
    numbers = [a[0] for a in rec.history]
    assert len(rec.history) == min(len(outcomes), HISTORY)
    assert numbers == list(range(rec.attempts - len(numbers) + 1, rec.attempts + 1))
    assert decode_record(encode_record(rec)) == rec


def test_an_error_is_kept_as_its_first_lines_capped() -> None:
    long = "E: " + "\n".join(f"line {i}" for i in range(50))
    assert first_lines(long) == "E: line 0\nline 1\nline 2\nline 3\nline 4\u2026"
    assert len(first_lines("x" * 10_000)) == ERROR_CHARS and first_lines("E: short") == "E: short"
    rec = runs(make_record("h", T0, retries=1), ["E: " + "x" * 10_000])
    assert len(rec.history[0][6]) == ERROR_CHARS
    assert rec.error == "E: " + "x" * 10_000                  # the record's error stays whole


def test_a_crash_is_an_attempt_and_a_handed_back_claim_is_none() -> None:
    rec = start_run(make_record("h", T0), "host:9:dead", T0 + 1)
    crashed = requeue_crashed(rec, T0 + 30, max_crashes=3)
    assert crashed.status == PENDING and crashed.attempts == 0
    assert crashed.history == ((1, T0, T0 + 1, T0 + 30, "host:9:dead", "crashed",
                                "the process running it (host:9:dead) died"),)
    rerun = runs(crashed, [True])
    assert [(a[0], a[5]) for a in rerun.history] == [(1, "crashed"), (1, "succeeded")]
    queued = start_run(make_record("q", T0), "host:1", T0 + 1, queued=True)
    assert hand_back(queued) == make_record("q", T0)._replace(rev=queued.rev)
    assert requeue_crashed(queued, T0 + 5, 3) == hand_back(queued)
    failed = requeue_crashed(rec, T0 + 30, max_crashes=1)
    assert failed.status == FAILED and failed.history[-1][5] == "crashed"


def test_a_record_without_runs_is_stored_as_before_and_a_bad_history_is_refused() -> None:
    new = make_record("n", T0)
    assert pickle.loads(encode_record(new)) == tuple(new)[:9]     # no history: not written
    ran = runs(make_record("n", T0, queue="q"), [True])
    assert pickle.loads(encode_record(ran)) == tuple(ran)[:ran._fields.index("batch")]   # up to its history
    too_many = tuple((i, T0, None, None, None, "failed", None) for i in range(HISTORY + 1))
    for bad in [((1, T0, None, None, None, "exploded", None),), ((1,),), "x",
                ((True, T0, None, None, None, "failed", None),), too_many]:
        blob = pickle.dumps(tuple(ran._replace(history=bad)))
        with pytest.raises(RecordDecodeError, match="field history"):
            decode_record(blob)


# -- through a real wheel on every backend, then the CLI and the web view ------------------------



def flaky_wheel(location):
    hu = TimeWheel(location, tick=0.1, slots=600)

    @hu.task(name="hist.flaky", retries=3, retry_delay=0.05)
    def flaky(fails: int) -> str:
        attempt = current_task().attempt
        if attempt <= fails:
            raise ConnectionError(f"attempt {attempt} down\nsecond line")
        return "ok"

    @hu.task(name="hist.later", retries=3, retry_delay=600.0, retry_jitter=False)
    def later() -> None:
        raise TimeoutError("slow upstream")

    return hu, flaky, later


def run_flaky_and_later(location):
    """Run a task failing twice then succeeding, and one that failed and waits 10 minutes for
    its retry; their handles."""
    hu, flaky, later = flaky_wheel(location)
    hu.start()
    try:
        h = flaky.delay(2)
        assert h.result(timeout=30) == "ok"
        waiting = later.delay()
        wait_for(lambda: waiting.record.attempts == 1 and waiting.status == PENDING, timeout=30)
    finally:
        hu.stop(wait=True, timeout=10)
    return h, waiting


def cli_json(*args: str) -> dict:
    done = procs.run([sys.executable, "-m", "timewheel.cli", *args, "--json"], capture_output=True, text=True,
                     timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_history_and_retrying_on_every_backend_and_in_the_cli(location) -> None:
    h, waiting = run_flaky_and_later(location)
    history = [Attempt._make(a) for a in h.record.history]
    assert [(a.number, a.outcome) for a in history] == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    assert [a.error for a in history] == ["ConnectionError: attempt 1 down\nsecond line",
                                          "ConnectionError: attempt 2 down\nsecond line", None]
    assert all(a.owner and a.started >= a.eta and a.finished >= a.started for a in history)
    if location is None:
        return
    shown = cli_json("show", location, h.id)
    assert [(a["attempt"], a["outcome"], a["error"]) for a in shown["history"]] == [
        (a.number, a.outcome, a.error) for a in history]
    assert all(a["lateness"] == a["started"] - a["eta"] >= 0 and a["duration"] >= 0 for a in shown["history"])
    # the task waiting for its retry: pending in the API, retrying in listings, and why
    rows = {r["id"]: r for r in cli_json("tasks", location)["tasks"]}
    assert (rows[waiting.id]["status"], rows[waiting.id]["retrying"]) == ("pending", True)
    assert (rows[h.id]["status"], rows[h.id]["retrying"]) == ("succeeded", False)
    why = cli_json("show", location, waiting.id)["waiting"]
    assert why.startswith("retrying: attempt 1 failed (TimeoutError: slow upstream); "
                          "attempt 2 is due in "), why
    text = procs.run([sys.executable, "-m", "timewheel.cli", "tasks", location], capture_output=True,
                     text=True, timeout=60).stdout
    assert next(line for line in text.splitlines() if waiting.id in line).count("retrying") == 1
    text = procs.run([sys.executable, "-m", "timewheel.cli", "show", location, h.id], capture_output=True,
                     text=True, timeout=60).stdout
    assert "Attempts (the last 3)" in text and "attempt 2 down" in text and "succeeded" in text


def test_the_task_page_lists_the_attempts(db_path) -> None:
    h, waiting = run_flaky_and_later(db_path)
    with serve(db_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get(f"/tasks/{h.id}").text
        table = page[page.index('id="attempts"'):page.index("</table>", page.index('id="attempts"'))]
        assert table.count("<tr data-outcome=") == 3
        assert table.count('data-outcome="retried"') == 2 and "attempt 1 down" in table
        assert "Attempts <span class=\"muted\">(the last 3)</span>" in page
        listing = client.get("/tasks", params={"status": "pending"}).text
        row = listing[listing.index(f'data-id="{waiting.id}"'):]
        assert row[:row.index("</tr>")].count(">retrying<") == 1
        api = client.get(f"/api/tasks/{h.id}").json()
        assert [a["outcome"] for a in api["history"]] == ["retried", "retried", "succeeded"]


def test_a_postgresql_store_made_by_main_is_migrated_and_keeps_its_tasks(pg_server, pg_db) -> None:
    """The schema version 1 of today's main (tests/fixtures/postgres_v1.sql, with a task added
    through its own add1) gets its history column (and flow control's) and loses its old write
    functions; the task runs and keeps its attempts."""
    import psycopg

    from timewheel.store.postgres_sql import VERSION
    with open(os.path.join(FIXTURES, "postgres_v1.sql"), encoding="utf-8") as fh:
        pg_server.sql(fh.read())
    payload = pickle.dumps(((2,), {}), pickle.HIGHEST_PROTOCOL)
    with psycopg.connect(pg_db, autocommit=True) as c:
        now = c.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        c.execute('SELECT * FROM "legacy".add1(%s, %s, %s, %s::float8, %s, %s, %s, %s::float8, %s, '
                  "%s::float8, %s::float8, %s, %s::float8)",
                  ["legacy0000000000000000000000000000", "old", "hist.flaky", now, int(now * 1e6) + 1,
                   int(now / 0.1), payload, now, 3, 0.05, None, 2, None])
    hu, flaky, _ = flaky_wheel(pg_db + "?schema=legacy")
    hu.start()
    try:
        assert hu.get("old").result(timeout=30) == "ok"
    finally:
        hu.stop(wait=True, timeout=10)
    assert [(a[0], a[5]) for a in hu.get("old").record.history] == [(1, "retried"), (2, "retried"),
                                                                    (3, "succeeded")]
    (version,), = pg_server.sql('SELECT version FROM "legacy".meta')
    overloads = pg_server.sql(
        "SELECT p.proname, count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'legacy' GROUP BY p.proname HAVING count(*) > 1")
    assert version == VERSION and overloads == []
    hu.close()
