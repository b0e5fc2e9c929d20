"""Aborting a running task in the Redis store (issue 23): the NOTE script writes the request
into the running record (and ``ab``, the rev it was asked at), or a run's progress into ``pg``
(``<rev>|<json>``), without moving ``v``; the
ABORTING script reads back, in one round trip, which of one process's runs were asked
(:mod:`timewheel.store.redis_lua`).  A mixin of :class:`~timewheel.store.redis.RedisStore`,
which provides what is declared here."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..records import TaskRecord, encode_record, progress_to_json
from . import rules
from .redis_client import text as _text

__all__ = ["RedisAborts"]


class RedisAborts:
    _script: Callable[[str, Sequence[Any]], Any]
    now: Callable[[], float]

    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        fields = rules.noted(old, new)
        # The abort goes into the record (read by recoveries, which decode it) with ``ab``; the
        # progress, which changes a few times a second, into its own field: no record rewritten.
        blob = encode_record(new._replace(rev=old.rev)) if "abort" in fields else ""
        progress = progress_to_json(fields["progress"]) if fields.get("progress") is not None else ""
        return self._script("note", [old.id, old.rev, blob, progress or ""]) == 1

    def aborting(self, owner: str, running: Sequence[TaskRecord]) -> dict[str, float]:
        if not running:
            return {}
        args: list[Any] = [owner]
        for rec in running:
            args += [rec.id, rec.rev]
        ids = [_text(i) for i in self._script("aborting", args)]
        if not ids:
            return {}
        now = self.now()                   # (when it was asked for is in each record: not read here)
        return {i: now for i in ids}
