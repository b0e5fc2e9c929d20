"""Batches, pure (issue 23): what a member's change means for its batch, when a batch has
finished, which of its callbacks apply, and the callbacks' records.  No I/O, no clock: every
store applies these in the transactions that change members (the Redis store's PUT script is
their twin: change both together).

A batch is a set of tasks, its *members* (their records name it in ``batch``), and up to three
callbacks, each an ordinary task called with the batch's id as its one argument:

* ``on_complete``: once every member has finished, whatever the outcome;
* ``on_success``: once every member has finished and every one succeeded;
* ``on_failure``: once every member has finished and at least one failed for good, was
  cancelled, misfired or was aborted.

"Finished" is a final status (``records.TERMINAL``): a member waiting for a retry is pending.

**Exactly once, never lost.**  A store keeps a batch's members per *class* (:func:`class_of`:
``open`` -- pending or running -- or the final status) in the batch's own row, changed by the
*same transaction* that changes a member, as it keeps its per-status counters: :func:`moves`
says by how much.  A claim (pending -> running) and a crash requeue (running -> pending) move
nothing, so the claim path does not touch batches at all.  The transaction that leaves a batch
with no open member (:func:`finished`) is the one that adds the batch's callbacks
(:func:`callback_records`: deterministic ids, :func:`callback_id`, added only where the id is
free, as ``existing="keep"`` adds) and marks the batch *done*; two transactions cannot both see
that, since both change the same row (the stores serialise on it).  The ticking process sweeps
batches that finished without being marked done (none should: a backstop), and members are
never purged before their batch is done, whatever ``result_ttl`` says.  Counting costs O(1) per
change, however large the batch: no transaction reads the other members.

A member that is retried by hand after its batch is done counts again (the counts stay true),
but a batch is done once: its callbacks are never added a second time.
"""

from __future__ import annotations

import pickle
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

from .errors import DuplicateTask
from .records import (
    ABORTED,
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TaskRecord,
    decode_record,
    encode_record,
    load_plain,
)

__all__ = ["EVENTS", "OPEN", "CLASSES", "FAILURES", "MAX_BATCH_ID", "BatchState", "class_of", "moves",
           "finished", "events", "callback_id", "callback_template", "callback_records",
           "encode_callbacks", "decode_callbacks", "batch_status", "check_batch_id", "check_members"]

EVENTS = ("on_complete", "on_success", "on_failure")
OPEN = "open"          #: a member not finished yet: pending (maybe waiting for a retry) or running
#: what a batch counts its members by, in this order (a store's columns and fields)
CLASSES = (OPEN, SUCCEEDED, FAILED, CANCELLED, MISFIRED, ABORTED)
#: the final statuses that make a batch failed
FAILURES = frozenset({FAILED, CANCELLED, MISFIRED, ABORTED})
#: the longest batch id: its callbacks' ids (``batch:<id>:on_complete``) must fit in 200
MAX_BATCH_ID = 180


class BatchState(NamedTuple):
    """A batch as a store holds it."""

    id: str
    created: float                      #: when it was opened (the store's clock)
    done: Optional[float]               #: when its callbacks were added; None: not yet
    counts: Mapping[str, int]           #: members per class (of :data:`CLASSES`), zeros left out
    callbacks: tuple                    #: (event, task id, task name) of each callback it has

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished_members(self) -> int:
        """Members in a final status: the batch's progress is this out of :attr:`total`."""
        return self.total - self.counts.get(OPEN, 0)

    @property
    def status(self) -> str:
        return batch_status(self.counts, self.done)


def check_batch_id(batch_id: Any) -> str:
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID:
        raise ValueError(f"a batch id is a string of 1 to {MAX_BATCH_ID} characters, got {batch_id!r:.80}")
    return batch_id


def check_members(batch_id: str, members: Sequence[TaskRecord]) -> None:
    """What ``add_batch`` takes, on every backend: each member names the batch, each id once
    (DuplicateTask; nothing is written)."""
    if any(r.batch != batch_id for r in members):
        raise ValueError(f"every member of batch {batch_id} must name it in its record")
    if len({r.id for r in members}) != len(members):
        raise DuplicateTask(f"a member id of batch {batch_id} is given twice; nothing was added")


def batch_status(counts: Mapping[str, int], done: Optional[float]) -> str:
    """``running`` until the batch is done, then ``succeeded`` or ``failed`` (some member
    failed for good, was cancelled, misfired or was aborted)."""
    if done is None:
        return RUNNING
    return FAILED if any(counts.get(s, 0) for s in FAILURES) else SUCCEEDED


def class_of(status: str) -> str:
    """What a member of this status counts as: :data:`OPEN` while pending or running."""
    return OPEN if status in (PENDING, RUNNING) else status


def moves(pairs: Iterable[tuple[Optional[TaskRecord], Optional[TaskRecord]]]
          ) -> dict[str, dict[str, int]]:
    """How the members per class of each batch change when a transaction turns each ``old``
    record into ``new`` (None: none before / none after): batch -> class -> delta, without
    zero deltas.  Most changes move nothing (a claim, a requeue, a task of no batch)."""
    out: dict[str, dict[str, int]] = {}
    for old, new in pairs:
        a = None if old is None or old.batch is None else (old.batch, class_of(old.status))
        b = None if new is None or new.batch is None else (new.batch, class_of(new.status))
        if a == b:
            continue
        for key, d in ((a, -1), (b, 1)):
            if key is not None:
                per = out.setdefault(key[0], {})
                per[key[1]] = per.get(key[1], 0) + d
    return {k: {c: d for c, d in v.items() if d} for k, v in out.items() if any(v.values())}


def finished(counts: Mapping[str, int]) -> bool:
    """Whether a batch with these member counts has finished: no open member (an empty batch
    has: its callbacks come at once)."""
    return counts.get(OPEN, 0) <= 0


def events(counts: Mapping[str, int]) -> tuple[str, ...]:
    """The callbacks a finished batch gets: ``on_complete``, and ``on_success`` when no member
    failed for good, was cancelled, misfired or aborted, else ``on_failure``."""
    failed = any(counts.get(s, 0) for s in FAILURES)
    return ("on_complete", "on_failure" if failed else "on_success")


def callback_id(batch_id: str, event: str) -> str:
    """The deterministic id of a batch's callback: whoever adds it adds the same task, once."""
    return f"batch:{batch_id}:{event}"


def callback_template(rec: TaskRecord, batch_id: str, event: str, opened: float) -> TaskRecord:
    """A callback as its batch keeps it until it finishes: the task record ``delay(batch_id)``
    made, under :func:`callback_id`, due at the batch's opening (so due at once whenever it is
    added: the Redis store places it without a clock of its own) and without a misfire grace
    (a batch may take longer than any grace: its callback must run all the same)."""
    return rec._replace(id=callback_id(batch_id, event), eta=opened, created=opened, misfire_grace=None,
                        batch=None)


def callback_records(templates: Mapping[str, TaskRecord], counts: Mapping[str, int]) -> list[TaskRecord]:
    """The callbacks a batch that has just finished adds: its templates of the events that
    apply.  A store adds each only where its id is free (``existing="keep"``): never twice."""
    return [templates[e] for e in events(counts) if e in templates]


def encode_callbacks(templates: Mapping[str, TaskRecord]) -> bytes:
    """A batch's callbacks as a store keeps them: plain data (records encoded as records are)."""
    return pickle.dumps(tuple((e, encode_record(r)) for e, r in templates.items()), pickle.HIGHEST_PROTOCOL)


def decode_callbacks(blob: Any) -> dict[str, TaskRecord]:
    """:func:`encode_callbacks`' inverse, reading plain data only (RecordDecodeError or
    ValueError for a damaged one)."""
    items = load_plain(blob)
    if not isinstance(items, tuple) or not all(
            isinstance(i, tuple) and len(i) == 2 and i[0] in EVENTS for i in items):
        raise ValueError("not a batch's callbacks")
    return {e: decode_record(b) for e, b in items}


def described(templates: Mapping[str, TaskRecord]) -> tuple:
    """(event, task id, name) of each callback, in :data:`EVENTS` order, as :class:`BatchState`
    lists them."""
    return tuple((e, templates[e].id, templates[e].name) for e in EVENTS if e in templates)


def counts_of(values: Iterable[Any]) -> dict[str, int]:
    """Member counts from a store's columns in :data:`CLASSES` order (zeros left out)."""
    return {c: int(n) for c, n in zip(CLASSES, values) if n and int(n)}
