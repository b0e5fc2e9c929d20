"""Batches on Redis (issue 23): what the store's PUT script is handed to open a batch, add
members to it or settle it, and how batches are read back (see :mod:`timewheel.store.redis_lua`:
``_BATCHES`` is the twin of :mod:`timewheel.batches`; the keys are in :mod:`timewheel.store.redis`).
A mixin of :class:`~timewheel.store.redis.RedisStore`."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .. import batches as batch_rules
from ..errors import BatchClosed, BatchNotFound, DuplicateTask, StoreError
from ..records import TaskRecord
from .base import eta_us
from .redis_client import text as _text
from .redis_deps import _Refused

__all__ = ["RedisBatches", "NO_BATCH"]

NO_BATCH = ("", "", "", 0)   #: PUT's batch values when it touches no batch (see redis_lua.PUT)
_PAGE = 500                  #: ids read per round trip


class RedisBatches:
    """The batch methods of the Redis store (it provides ``_put``, ``_item``, ``_io``, ``keys``)."""

    _put: Any
    _item: Any
    _add_dependent: Any
    _io: Any
    keys: Any
    location: str
    now: Any

    def add_batch(self, batch_id: str, members: Sequence[TaskRecord], *,
                  callbacks: "Optional[Mapping[str, TaskRecord]]" = None, opened: Optional[float] = None
                  ) -> list[TaskRecord]:
        batch_rules.check_members(batch_id, members)
        header: list[Any] = ["add", batch_id, "", 0]
        if callbacks is not None:
            header = ["open", batch_id, eta_us(self.now() if opened is None else opened), len(callbacks)]
            for event, rec in callbacks.items():
                item = self._item(rec, None)
                header += [event, item[0], item[3], item[4], item[5], item[12], item[13], item[14]]
        if any(r.depends_on for r in members):          # (issue 23: redis_deps.py)
            return self._add_dependent_members(members, header)
        res = self._put("all", [self._item(r, None) for r in members], header)
        self._refused(batch_id, members, res)
        return list(members)

    def _add_dependent_members(self, members: Sequence[TaskRecord], header: list[Any]) -> list[TaskRecord]:
        while True:                 # planned again while a dependency changes under it
            try:
                written = self._add_dependent(members, {}, header)
            except _Refused as exc:
                self._refused(header[1], members, [0, exc.code])
                raise
            if written is not None:
                return written

    def _refused(self, batch_id: str, members: Sequence[TaskRecord], res: Sequence[int]) -> None:
        """Raise what PUT's refusal of a batch's members means."""
        if res[0] == 0:
            if res[1] == -1:
                raise BatchClosed(f"batch {batch_id!r} already exists; nothing was added")
            if res[1] == -2:
                raise BatchNotFound(f"no batch {batch_id!r} in {self.location}; nothing was added")
            if res[1] == -3:
                raise BatchClosed(f"batch {batch_id} is done (its callbacks were added); nothing was added")
            raise DuplicateTask(f"task id {members[res[1] - 1].id!r} already exists; nothing was added")

    def batch(self, batch_id: str) -> "Optional[batch_rules.BatchState]":
        fields = self._io(lambda c: c.hgetall(self.keys.prefix + "b:" + batch_id))
        return _batch_state(batch_id, fields) if fields else None

    def batch_members(self, batch_id: str, start: int = 0, limit: Optional[int] = None) -> list[str]:
        key = self.keys.prefix + "bm:" + batch_id
        out: list[str] = []
        while limit is None or len(out) < limit:
            n = _PAGE if limit is None else min(_PAGE, limit - len(out))
            part = self._io(lambda c, at=start + len(out), n=n: c.lrange(key, at, at + n - 1))
            out += [_text(i) for i in part]
            if len(part) < n:
                break
        return out

    def batches(self, *, limit: int = 100) -> "list[batch_rules.BatchState]":
        ids = [_text(i) for i in self._io(lambda c: c.zrevrange(self.keys.prefix + "batches", 0, limit - 1))]

        def fetch(c: Any) -> list:
            pipe = c.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hgetall(self.keys.prefix + "b:" + batch_id)
            return pipe.execute()
        return [_batch_state(i, f) for i, f in zip(ids, self._io(fetch) if ids else []) if f]

    def sweep_batches(self, limit: int = 100) -> int:
        p = self.keys.prefix
        ids = [_text(i) for i in self._io(lambda c: c.srandmember(p + "bopen", limit))]

        def states(c: Any) -> list:
            pipe = c.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hmget(p + "b:" + batch_id, "d", "open")
            return pipe.execute()
        stalled = [i for i, (done, left) in zip(ids, self._io(states) if ids else [])
                   if done is None and int(left or 0) <= 0]
        for batch_id in stalled:         # (the script looks again: done once)
            self._put("each", [], ["settle", batch_id, "", 0])
        return len(stalled)


def _batch_state(batch_id: str, fields: dict) -> "batch_rules.BatchState":
    """A batch's hash -> its state (see redis_lua._BATCHES)."""
    def text(k: str) -> Optional[str]:
        v = fields.get(k.encode())
        return None if v is None else _text(v)
    try:
        done = text("d")
        counts = batch_rules.counts_of(int(text(c) or 0) for c in batch_rules.CLASSES)
        callbacks = tuple((e, text(e + ":i"), text(e + ":n")) for e in batch_rules.EVENTS if text(e + ":i"))
        return batch_rules.BatchState(batch_id, int(text("c") or 0) / 1e6,
                                      None if done is None else int(done) / 1e6, counts, callbacks)
    except ValueError as exc:
        raise StoreError(f"batch {batch_id}: its hash is damaged ({exc})") from None
