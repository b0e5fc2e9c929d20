"""Batches in the API (issue 23): :class:`BatchHandle` and what ``hu.batch(on_complete=...)``
does.  The rules are :mod:`timewheel.batches`'; the stores apply them (``add_batch``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

from . import api as _api
from . import batches as batch_rules
from .errors import BatchNotFound, TaskFailed, TaskNotFound, shown
from .records import PENDING, TaskRecord

if TYPE_CHECKING:
    from .api import Task, TaskHandle, TimeWheel

__all__ = ["BatchHandle", "open_batch", "run_members"]


class BatchHandle:
    """A batch in the store, by id (issue 23): ``with hu.batch(on_complete=...) as b`` and
    :meth:`TimeWheel.get_batch` make one; cheap, it holds no state besides the id."""

    __slots__ = ("id", "_wheel")

    def __init__(self, wheel: "TimeWheel", batch_id: str) -> None:
        self.id = batch_id
        self._wheel = wheel

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<BatchHandle {self.id}>"

    @property
    def state(self) -> "batch_rules.BatchState":
        """The batch as stored: created, done, member counts per class, callbacks."""
        st = self._wheel.store.batch(self.id)
        if st is None:
            raise BatchNotFound(f"no batch {self.id!r} in {self._wheel.store.location} "
                                "(never committed: the block raised, or another store)")
        return st

    @property
    def status(self) -> str:
        """``running`` until every member has finished and its callbacks are added; then
        ``succeeded`` (every member succeeded) or ``failed``."""
        return self.state.status

    @property
    def counts(self) -> dict[str, int]:
        """Members per class: ``open`` (pending or running), ``succeeded``, ``failed``,
        ``cancelled``, ``misfired`` (zeros left out)."""
        return dict(self.state.counts)

    @property
    def ids(self) -> list[str]:
        """The members' task ids, in the order they were added."""
        return self._wheel.store.batch_members(self.id)

    def results(self, errors: bool = False) -> list[Any]:
        """The members' return values in the order they were added.  A member that did not
        succeed raises :class:`TaskFailed` (one still open: :class:`TaskFailed` too, status
        pending or running) -- or, with ``errors=True``, its exception is in the list."""
        out: list[Any] = []
        for task_id in self.ids:
            try:
                rec = _api.TaskHandle(self._wheel, task_id).record
                out.append(_api._outcome_of(rec, self._wheel.serializer))
            except (TaskFailed, TaskNotFound) as exc:
                if not errors:
                    raise
                out.append(exc)
        return out

    def add(self, task: "Task[Any]", *args: Any, **kwargs: Any) -> TaskHandle:
        """Add ``task.delay(*args, **kwargs)`` to the batch, before it completes (from inside
        a member: ``current_task().batch.add(...)``).  Raises :class:`BatchClosed` once the
        batch is done."""
        hu = self._wheel
        if hu._local.batch is not None:
            raise ValueError("BatchHandle.add() inside an open hu.batch() block: delay() there instead")
        pending = hu._local.batch = _api._Batch(hu.now(), self.id)
        try:
            handle = task.delay(*args, **kwargs)
        finally:
            hu._local.batch = None
        hu.store.add_batch(self.id, pending.records)
        if hu.immediate:
            run_members(hu, self.id, pending.records)
        return handle


def open_batch(hu: "TimeWheel", batch_id: Optional[str], on_complete: "Optional[Task[Any]]",
               on_success: "Optional[Task[Any]]", on_failure: "Optional[Task[Any]]") -> Iterator[BatchHandle]:
    """``with hu.batch(on_complete=...) as b`` (its body, ``yield from`` there): the block's
    ``delay()`` calls become the members of a new batch, written with the batch and its
    callbacks' templates when it ends.  Each callback is a task of this wheel, called with the
    batch id as its one argument: ``on_complete`` once every member has finished, and
    ``on_success`` (every member succeeded) or ``on_failure`` (some failed for good, was
    cancelled or misfired) -- each added exactly once, whoever records the last outcome."""
    callbacks = {e: t for e, t in zip(batch_rules.EVENTS, (on_complete, on_success, on_failure))
                 if t is not None}
    for event, task in callbacks.items():
        if not isinstance(task, _api.Task) or task.timewheel is not hu:
            raise TypeError(f"{event} must be a task of this wheel (@hu.task), got {shown(task)}")
    batch_id = _api._ids.new() if batch_id is None else batch_rules.check_batch_id(batch_id)
    if hu._local.batch is not None:
        raise ValueError("a batch with callbacks cannot be opened inside another hu.batch() block")
    if _api._USING.get() and not hu.immediate:
        raise ValueError("a batch with callbacks is written to the store itself, not through "
                         "hu.using(connection)")
    store = hu.store
    if not store.batches_kept:
        raise ValueError(f"{store.location} keeps no batches (issue 23); nothing was written")
    opened = hu.now()
    templates = {e: batch_rules.callback_template(t._template((batch_id,)), batch_id, e, opened)
                 for e, t in callbacks.items()}
    batch = hu._local.batch = _api._Batch(opened, batch_id)
    try:
        yield BatchHandle(hu, batch_id)
    finally:
        hu._local.batch = None
    store.add_batch(batch_id, batch.records, callbacks=templates, opened=opened)
    if hu.immediate:
        run_members(hu, batch_id, batch.records)


def run_members(hu: "TimeWheel", batch_id: str, recs: "list[TaskRecord]") -> None:
    """immediate=True: run a batch's members inline, then the callbacks they led to."""
    for rec in recs:
        hu._run_inline(rec)
    for e in batch_rules.EVENTS:
        rec = hu.store.get(batch_rules.callback_id(batch_id, e))
        if rec is not None and rec.status == PENDING:
            hu._run_inline(rec)
