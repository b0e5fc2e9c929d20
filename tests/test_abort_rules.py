"""Aborting a running task, pure (issue 23): what abort() does in each state
(rules.abort_step), and how a run that was asked to abort ends (records.end_run,
requeue_crashed, hand_back) -- tables, without a store, a thread or a clock."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timewheel.batches import FAILURES, batch_status, class_of, events
from timewheel.records import (
    ABORTED,
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RETRYABLE,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    TERMINAL,
    Outcome,
    decode_record,
    encode_record,
    end_run,
    hand_back,
    request_abort,
    requeue_crashed,
    reset_for_retry,
)
from timewheel.store.rules import abort_step, kept_notes, outcome_event

from .conftest import make_record

#: what abort() does, by the stored state: (kind, status written)
TABLE = {
    None: ("refuse", None),
    PENDING: ("swap", CANCELLED),
    RUNNING: ("note", RUNNING),
    "running, asked": ("done", None),
    SUCCEEDED: ("refuse", None),
    FAILED: ("refuse", None),
    CANCELLED: ("refuse", None),
    MISFIRED: ("refuse", None),
    ABORTED: ("refuse", None),
}


def _stored(state):
    if state is None:
        return None
    if state == "running, asked":
        return make_record("x", 1.0, status=RUNNING, owner="p", started=2.0, attempts=1, rev=3, abort=4.0)
    return make_record("x", 1.0, status=state, rev=3, attempts=1,
                       **({"owner": "p", "started": 2.0} if state == RUNNING else {}))


def test_the_table_covers_every_status() -> None:
    assert set(TABLE) >= set(STATUSES)


@pytest.mark.parametrize("state", list(TABLE))
def test_what_abort_does_in_each_state(state) -> None:
    kind, status = TABLE[state]
    got, new = abort_step(_stored(state), 10.0)
    assert got == kind
    assert (None if new is None else new.status) == status
    if kind == "note":               # only the abort changes: rev, owner, lease and all kept
        assert new == _stored(state)._replace(abort=10.0)


def test_request_abort_keeps_the_first_request_and_refuses_a_task_not_running() -> None:
    run = _stored(RUNNING)
    asked = request_abort(run, 5.0)
    assert asked.abort == 5.0 and request_abort(asked, 9.0).abort == 5.0
    for status in STATUSES:
        if status != RUNNING:
            with pytest.raises(ValueError, match="only a running task"):
                request_abort(_stored(status), 5.0)


ASKED = request_abort(_stored(RUNNING), 5.0)

#: how a run that was asked to abort ends, by its outcome
ENDINGS = [
    ("TaskAborted raised", Outcome(False, 2.0, 6.0, error="TaskAborted: x"), ABORTED),
    ("cancelled (async)", Outcome(False, 2.0, 6.0, error="CancelledError: "), ABORTED),
    ("another error, retries left", Outcome(False, 2.0, 6.0, error="ValueError: v"), ABORTED),
    ("not retryable", Outcome(False, 2.0, 6.0, error="E", retryable=False), ABORTED),
    ("a Retry asked for", Outcome(False, 2.0, 6.0, error="Retry: r", retry_at=7.0), ABORTED),
    ("returned all the same", Outcome(True, 2.0, 6.0, result=b"r"), SUCCEEDED),
]


@pytest.mark.parametrize("what, out, status", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_a_run_asked_to_abort_ends_aborted_never_retried(what, out, status) -> None:
    rec = ASKED._replace(retries=5)
    new = end_run(rec, out)
    assert new.status == status
    assert new.owner is None and new.lease is None and new.finished == 6.0
    assert new.history[-1][5] == ("aborted" if status == ABORTED else "succeeded")
    if status == ABORTED:
        assert new.error.startswith("aborted") and new.result is None
        assert outcome_event(new) == "aborted"
    else:
        assert new.result == b"r"            # its work is done: its result is kept


def test_without_an_abort_the_same_failure_is_retried() -> None:
    assert end_run(_stored(RUNNING)._replace(retries=5), ENDINGS[2][1]).status == PENDING


def test_a_run_asked_to_abort_whose_process_died_is_not_run_again() -> None:
    new = requeue_crashed(ASKED, 8.0, max_crashes=3)
    assert new.status == ABORTED and new.finished == 8.0 and new.crashes == 0
    assert new.history[-1][5] == "aborted"
    queued = ASKED._replace(started=None)             # claimed, never started: not run at all
    assert requeue_crashed(queued, 8.0, max_crashes=3).status == ABORTED
    assert hand_back(queued).status == ABORTED and hand_back(queued).finished == 5.0
    assert hand_back(_stored(RUNNING)._replace(started=None)).status == PENDING


def test_aborted_is_final_retryable_by_hand_and_a_failure_of_its_batch() -> None:
    assert ABORTED in TERMINAL and ABORTED in RETRYABLE and ABORTED in FAILURES
    again = reset_for_retry(end_run(ASKED, ENDINGS[0][1]), 20.0)
    assert again.status == PENDING and again.abort is None and again.attempts == 0
    assert class_of(ABORTED) == ABORTED
    assert events({"succeeded": 3, ABORTED: 1}) == ("on_complete", "on_failure")
    assert batch_status({"succeeded": 3, ABORTED: 1}, 1.0) == FAILED


@given(st.none() | st.floats(0, 1e10))
def test_the_abort_field_round_trips_and_a_record_without_it_is_encoded_as_before(abort) -> None:
    rec = make_record("x", 1.0, status=RUNNING, owner="p", batch="b", abort=abort)
    assert decode_record(encode_record(rec)) == rec
    if abort is None:        # as a record of a batch member was encoded before the field existed
        assert len(pickle.loads(encode_record(rec))) == 28


@pytest.mark.parametrize("new_status", sorted(STATUSES))
def test_a_write_keeps_the_notes_only_while_the_run_goes_on(new_status) -> None:
    """kept_notes: a write over a running record that leaves it running (a queued task's start)
    keeps the abort and progress it does not set; any other write says what it says."""
    cur = make_record("x", 1.0, status=RUNNING, owner="p", attempts=1, rev=3, abort=4.0,
                      progress=(1, 2, "", 4.5))
    new = make_record("x", 1.0, status=new_status, owner="p", started=5.0, attempts=1, rev=3)
    got = kept_notes(cur, new)
    if new_status == RUNNING:
        assert (got.abort, got.progress, got.started) == (4.0, (1, 2, "", 4.5), 5.0)
        mine = new._replace(abort=6.0, progress=(2, 2, "", 6.5))
        assert kept_notes(cur, mine) == mine                  # its own notes win
    else:
        assert got is new
    assert kept_notes(cur._replace(status=PENDING, abort=None), new) is new

