"""Flow control's side of the Redis store (issue 21) that its scripts do not do: pauses, what
each started process serves, and the observers of limits and queues (see store/redis.py for
the keys; the claim itself is the CLAIM script, store/redis_lua.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

from .. import flow
from ..records import PENDING, RUNNING
from .base import LimitState, QueueState
from .redis_client import text as _text

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["RedisFlow", "RedisRegistry", "bands_of"]


def bands_of(keys: Any, c: Any) -> list[str]:
    """The bands used in the namespace (other than the default one), on client ``c``."""
    return [_text(b) for b in c.zrange(keys.bands, 0, -1)]


class RedisRegistry:
    """The Redis store's processes registry and recorded serializer: the hash
    ``{ns}:processes`` (token -> report, timewheel/processes.py) and the ``serializer`` field of
    ``{ns}:meta`` (timewheel/serialize.py).  A mixin of RedisStore (its ``_io`` and ``keys``)."""

    keys: Any
    _io: Any

    def stored_serializer(self) -> Optional[str]:
        value = self._io(lambda c: c.hget(self.keys.meta, "serializer"))
        return None if value is None else _text(value)

    def record_serializer(self, name: str) -> None:
        self._io(lambda c: c.hset(self.keys.meta, "serializer", name), write=True)

    def report_process(self, token: str, report: str) -> None:
        self._io(lambda c: c.hset(self.keys.processes, token, report), write=True)

    def process_reports(self) -> dict[str, str]:
        return {_text(t): _text(r) for t, r in self._io(lambda c: c.hgetall(self.keys.processes)).items()}

    def forget_processes(self, tokens: Sequence[str]) -> None:
        if tokens:
            self._io(lambda c: c.hdel(self.keys.processes, *tokens), write=True)


class RedisFlow:
    """Pauses, serving and the flow observers of one :class:`~timewheel.store.redis.RedisStore`."""

    def __init__(self, store: "RedisStore") -> None:
        self._store = store
        self._keys = store.keys

    def pause(self, queue: str) -> bool:
        return bool(self._store._io(lambda c: c.sadd(self._keys.paused, flow.check_queue(queue)), write=True))

    def resume(self, queue: str) -> bool:
        was = bool(self._store._io(lambda c: c.srem(self._keys.paused, flow.check_queue(queue)), write=True))
        self._store.ring()
        return was

    def paused(self) -> frozenset:
        return frozenset(_text(q) for q in self._store._io(lambda c: c.smembers(self._keys.paused)))

    def serve(self, token: str, queues: Optional[frozenset]) -> None:
        value = "*" if queues is None else ",".join(sorted(queues))
        self._store._io(lambda c: c.hset(self._keys.serve, token, value), write=True)

    def unserve(self, token: str) -> None:
        self._store._io(lambda c: c.hdel(self._keys.serve, token), write=True)

    def served(self) -> dict[str, Optional[frozenset]]:
        out: dict[str, Optional[frozenset]] = {}
        for token, value in self._store._io(lambda c: c.hgetall(self._keys.serve)).items():
            t, v = _text(token), _text(value)
            if not self._store.liveness.is_dead(t):
                out[t] = None if v == "*" else frozenset(v.split(","))
        return out

    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        now_us = self._store._client.server_us()

        def read(c: Any) -> list[LimitState]:
            specs = {_text(k): _text(v) for k, v in c.hgetall(self._keys.limits).items()}
            reopen = {_text(k): s for k, s in c.zrange(self._keys.reopen, 0, -1, withscores=True)}
            out = []
            for key in sorted(specs if keys is None else keys):
                concurrency, rate, per_us = (int(x) for x in specs.get(key, "0|0|0").split("|"))
                held, parked = c.scard(self._keys.held(key)), c.zcard(self._keys.park(key))
                recent = c.zcount(self._keys.starts(key), f"({now_us - per_us}", "+inf") if rate else 0
                if keys is None and not (held or parked or recent):
                    continue
                at = reopen.get(key)
                out.append(LimitState(key, concurrency, rate, per_us / 1e6, held, parked, recent,
                                      None if at is None else at / 1e6))
            return out
        return self._store._io(read)

    def queue_states(self, now: float) -> list[QueueState]:
        per: dict[str, list[int]] = {}
        totals = {PENDING: 0, RUNNING: 0}
        for (state, _), n in self._store.counts().items():
            if state in totals:
                totals[state] += n

        def read(c: Any) -> tuple:
            qc = {_text(k): int(v) for k, v in c.hgetall(self._keys.qcounts).items()}
            bands = bands_of(self._keys, c)
            due = [c.zcount(self._keys.band_ready(b), "-inf", int(now * 1e6)) for b in [""] + bands]
            parked = {}
            for key in c.hkeys(self._keys.limits):
                for task_id in c.zrange(self._keys.park(_text(key)), 0, -1):
                    b = c.hget(self._keys.task(_text(task_id)), "q")
                    parked[_text(b) if b else ""] = parked.get(_text(b) if b else "", 0) + 1
            return qc, bands, due, parked, c.smembers(self._keys.paused)
        qc, bands, due, parked, paused_raw = self._store._io(read)
        for field, n in qc.items():
            queue, _, state = field.rpartition("|")
            if n > 0:
                per.setdefault(queue, [0, 0, 0])[0 if state == PENDING else 2] += n
        default = [totals[PENDING] - sum(c[0] for c in per.values()), 0,
                   totals[RUNNING] - sum(c[2] for c in per.values())]
        if default[0] or default[2]:
            per[flow.DEFAULT_QUEUE] = default
        for b, n in list(zip([""] + bands, due)) + list(parked.items()):
            queue = b.rpartition(":")[0] if b else flow.DEFAULT_QUEUE
            if n:
                per.setdefault(queue, [0, 0, 0])[1] += n
        paused = frozenset(_text(q) for q in paused_raw)
        for q in paused:
            per.setdefault(q, [0, 0, 0])
        return [QueueState(q, max(0, p), w, max(0, r), q in paused) for q, (p, w, r) in sorted(per.items())]

    def parked(self, mark: Optional[tuple[float, str]]) -> list[tuple[str, float]]:
        """(id, eta us) of the tasks parked on limits, in due order."""
        def read(c: Any) -> list[tuple[str, float]]:
            ids = [_text(i) for key in c.hkeys(self._keys.limits)
                   for i in c.zrange(self._keys.park(_text(key)), 0, -1)]
            pipe = c.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(self._keys.task(task_id), "pe")
            return [(i, float(e)) for i, e in zip(ids, pipe.execute()) if e is not None]
        out = sorted(self._store._io(read), key=lambda e: (e[1], e[0]))
        return [e for e in out if mark is None or (e[1], e[0]) > mark]

