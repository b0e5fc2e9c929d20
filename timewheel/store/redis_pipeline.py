"""Auto-pipelining for the Redis store: the script calls that threads of one process make at
once share one round trip.

Each ``delay()`` is one script call, and a round trip: with ``appendfsync always`` the server
answers once the write is on disk, so a thread waits for its round trip and the server's
fsync.  Threads of a web app calling ``delay()`` at once would each wait for their own.  Here
the calls are batched leader/follower (store/combine.py): a call made while none is in flight
goes out alone, as before (one EVALSHA); the calls made while it is in flight go out together
when it is back, as one pipeline -- one write of all the commands, one read of all the
replies, and on the server one pass of its event loop and one fsync for all of them.  The
boss's claims and renewals go the same way.

Each caller returns only with its own reply, once the server has sent it (so, with
``appendfsync always``, once its write is on disk), or with its own error: a script that
fails fails alone (its reply is an error among the others' replies); a connection that
breaks fails every call of the round trip, each told that its write may or may not have
been made, as a lone call would be.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Sequence

from ..errors import StoreError
from .combine import Call, Combiner

__all__ = ["AutoPipeline"]

_pipelines: "weakref.WeakSet[AutoPipeline]" = weakref.WeakSet()


class _Scripts(Call):
    """One caller's script calls, ``(name, args)`` each, run in order in one round trip."""

    __slots__ = ("calls",)

    def __init__(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> None:
        super().__init__()
        self.calls = calls


class AutoPipeline:
    """The script calls of one :class:`~timewheel.store.redis_client.RedisClient`.

    :param client: runs one call (:meth:`~timewheel.store.redis_client.RedisClient.run_one`)
        or many in one pipeline (:meth:`~timewheel.store.redis_client.RedisClient.pipelined`),
        and translates redis-py's errors.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queue = Combiner(self._serve, lambda exc: StoreError(
            f"the Redis server at {client.location}: the call was interrupted "
            f"({exc.__class__.__name__}); it may or may not have been made"))
        _pipelines.add(self)
        #: for tests and benchmarks: round trips made, and of them the pipelines of several
        #: callers' calls and the calls they carried
        self.trips = self.shared = self.carried = 0

    def scripts(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run the scripts ``calls`` -- ``(name, args)`` each, in order, in one round trip
        shared with other threads' -- and return their replies; the first that failed is
        raised (as :class:`StoreError`), its followers having run."""
        return self._queue.submit(_Scripts(calls))

    def _serve(self, batch: list[_Scripts]) -> None:
        self._queue.take(batch)
        calls = [c for s in batch for c in s.calls]
        self.trips += 1
        if len(calls) == 1:
            try:
                batch[0].value = [self._client.run_one(*calls[0])]
            except StoreError as exc:
                batch[0].error = exc
            return
        if len(batch) > 1:
            self.shared += 1
            self.carried += len(batch)
        try:
            replies = self._client.pipelined(calls)
        except StoreError as exc:
            for s in batch:
                s.error = type(exc)(str(exc))       # (each its own: raised in its own thread)
            return
        k = 0
        for s in batch:
            mine, k = replies[k:k + len(s.calls)], k + len(s.calls)
            failed = next((r for r in mine if isinstance(r, Exception)), None)
            if failed is None:
                s.value = mine
            else:
                s.error = self._client.translate(failed, True)

    def reset(self) -> None:
        """In a forked child: the parent's callers and leader are not in this process."""
        self._queue.reset()


def _after_fork_in_child() -> None:
    for p in list(_pipelines):
        p.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
