"""The store rules (timewheel/store/rules.py), without any store: what add(existing=...) does
for every stored state, how writes are stamped, when a broken record is set aside, and which
hook event an outcome fires.  Every backend applies exactly these (the conformance suite,
test_store.py, checks that they do)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.errors import DuplicateTask
from timewheel.records import (
    ABORTED,
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    Outcome,
    RecordDecodeError,
    end_run,
    requeue_crashed,
)
from timewheel.store.base import EXISTING
from timewheel.store.rules import (
    UNKNOWN_REV,
    Unreadable,
    admit,
    claimed,
    outcome_event,
    set_aside,
    stored_rev,
    swapped,
)

from .conftest import make_record

NEW = make_record("x", 100.0, payload=b"new")
DUP = "duplicate"
KEEP = "keep"
REPLACE = "replace"

#: what add() does, by what the id holds (rows) and the policy (columns)
TABLE = {
    "nothing":        {"fail": "add", "keep": "add", "reuse": "add", "replace": "add"},
    PENDING:          {"fail": DUP, "keep": KEEP, "reuse": KEEP, "replace": REPLACE},
    RUNNING:          {"fail": DUP, "keep": KEEP, "reuse": KEEP, "replace": DUP},
    SUCCEEDED:        {"fail": DUP, "keep": KEEP, "reuse": REPLACE, "replace": REPLACE},
    FAILED:           {"fail": DUP, "keep": KEEP, "reuse": REPLACE, "replace": REPLACE},
    CANCELLED:        {"fail": DUP, "keep": KEEP, "reuse": REPLACE, "replace": REPLACE},
    MISFIRED:         {"fail": DUP, "keep": KEEP, "reuse": REPLACE, "replace": REPLACE},
    ABORTED:          {"fail": DUP, "keep": KEEP, "reuse": REPLACE, "replace": REPLACE},
    "broken, rev 7":  {"fail": DUP, "keep": REPLACE, "reuse": REPLACE, "replace": REPLACE},
    "broken, no rev": {"fail": DUP, "keep": REPLACE, "reuse": REPLACE, "replace": REPLACE},
}


def _stored(state: str):
    if state == "nothing":
        return None
    if state == "broken, rev 7":
        return Unreadable(7)
    if state == "broken, no rev":
        return Unreadable(None)
    return make_record("x", 50.0, status=state, rev=4, owner="them" if state == RUNNING else None)


def test_the_table_covers_every_status_and_policy() -> None:
    assert set(TABLE) == {"nothing", "broken, rev 7", "broken, no rev", *STATUSES}
    assert all(set(row) == set(EXISTING) for row in TABLE.values())


@pytest.mark.parametrize("state", sorted(TABLE))
@pytest.mark.parametrize("existing", EXISTING)
def test_admit_follows_the_table(state: str, existing: str) -> None:
    old = _stored(state)
    want = TABLE[state][existing]
    if want == DUP:
        with pytest.raises(DuplicateTask, match="running and cannot be replaced" if state == RUNNING
                           and existing == "replace" else "already exists"):
            admit(NEW, old, existing)
        return
    got, write = admit(NEW, old, existing)
    if want == "add":
        assert (got, write) == (NEW, True)
    elif want == KEEP:
        assert got is old and not write
    else:                                 # replaced: the new record, the old one's rev + 1
        rev = {"broken, rev 7": 8, "broken, no rev": UNKNOWN_REV}.get(state, 5)
        assert got == NEW._replace(rev=rev) and write


@given(old_rev=st.one_of(st.none(), st.integers(0, 2 ** 62 - 2)), broken=st.booleans(),
       new_rev=st.integers(0, 2 ** 40), existing=st.sampled_from(["keep", "reuse", "replace"]),
       status=st.sampled_from(STATUSES))
def test_a_replacement_never_takes_a_rev_back(old_rev, broken, new_rev, existing, status) -> None:
    """Whatever the newcomer carries, what is written over a record has a rev above any the
    record had: above its own where it is known, above any count of writes where not."""
    new = NEW._replace(rev=new_rev)
    if broken or old_rev is None:
        old = Unreadable(old_rev)
        floor = UNKNOWN_REV - 1 if old_rev is None else old_rev
    else:
        old = make_record("x", 1.0, status=status, rev=old_rev)
        floor = old_rev
    try:
        got, write = admit(new, old, existing)
    except DuplicateTask:
        return
    if write:
        assert got.rev > floor



def test_a_claim_is_start_run_and_the_next_rev() -> None:
    rec = make_record("x", 10.0, rev=3, attempts=1)
    run = claimed(rec, "me", 12.0, lease=22.0)
    assert (run.status, run.owner, run.started, run.attempts, run.rev, run.lease) == (
        RUNNING, "me", 12.0, 2, 4, 22.0)
    queued = claimed(rec, "me", 12.0, queued=True)
    assert queued.started is None and queued.rev == 4
    assert rec.rev == 3                                   # records are values
    assert swapped(run, run._replace(error="x")).rev == 5


def test_set_aside_is_decided_once_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    why = RecordDecodeError("not a timewheel record (junk)")
    with caplog.at_level(logging.ERROR, logger="timewheel.store"):
        assert not set_aside("a", why, readonly=True)
        assert not set_aside("a", why, marked=True)
        assert set_aside("a", why)
    assert [r.getMessage() for r in caplog.records] == [
        "task a: not a timewheel record (junk); left in the store as broken"]


def test_the_hook_event_of_an_outcome() -> None:
    run = claimed(make_record("x", 1.0, retries=1, retry_delay=5.0), "me", 2.0)
    assert outcome_event(end_run(run, Outcome(True, 2.0, 3.0))) == "succeeded"
    assert outcome_event(end_run(run, Outcome(False, 2.0, 3.0, error="E"))) == "retrying"
    assert outcome_event(end_run(run, Outcome(False, 2.0, 3.0, error="E", retryable=False))) == "failed"
    assert outcome_event(requeue_crashed(run, 3.0, max_crashes=1)) == "failed"
    assert {s: outcome_event(make_record("x", 1.0, status=s)) for s in (RUNNING, CANCELLED, MISFIRED)} == {
        RUNNING: None, CANCELLED: None, MISFIRED: None}


@pytest.mark.parametrize("value, rev", [
    (0, 0), (41, 41), ("41", 41), (b"41", 41), (2 ** 62 - 2, 2 ** 62 - 2), (None, None),
    (-1, None), (2 ** 62 - 1, None), ("", None), (b"4x", None), ("\u0664\u0662", None),
    ("9" * 30, None), (True, None), (4.0, None), (b"\xff", None)])
def test_a_rev_kept_beside_a_record_is_read_only_if_it_is_one(value, rev) -> None:
    assert stored_rev(value) == rev

