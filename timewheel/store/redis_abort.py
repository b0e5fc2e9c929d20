"""Aborting a running task in the Redis store (issue 23): the NOTE script writes the request
into the running record (and ``ab``, the rev it was asked at) without moving ``v``; the
ABORTING script reads back, in one round trip, which of one process's runs were asked
(:mod:`timewheel.store.redis_lua`).  A mixin of :class:`~timewheel.store.redis.RedisStore`,
which provides what is declared here."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..records import TaskRecord, encode_record
from .redis_client import text as _text

__all__ = ["RedisAborts"]


class RedisAborts:
    _script: Callable[[str, Sequence[Any]], Any]
    now: Callable[[], float]

    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        if new.id != old.id:
            return False
        return self._script("note", [old.id, old.rev, encode_record(new._replace(rev=old.rev))]) == 1

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
