"""Flow control's side of the PostgreSQL store (issue 21) that its claim does not do: pauses,
what each started process serves, and the observers of limits and queues (the tables are
described in store/postgres_flow_sql.py; the claim itself is its ``claim`` function)."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from .. import flow
from .base import LimitState, QueueState

__all__ = ["PostgresFlow"]

_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


class PostgresFlow:
    """Pauses, serving and the flow observers of :class:`~timewheel.store.postgres.PostgresStore`."""

    s: str
    _call: Callable[..., list[tuple]]
    ring: Callable[[], None]

    def pause(self, queue: str) -> bool:
        return bool(self._call(f"INSERT INTO {self.s}.paused (queue) VALUES (%s) ON CONFLICT DO NOTHING "
                               "RETURNING 1", (flow.check_queue(queue),), write=True))

    def resume(self, queue: str) -> bool:
        was = bool(self._call(f"DELETE FROM {self.s}.paused WHERE queue = %s RETURNING 1",
                              (flow.check_queue(queue),), write=True))
        self.ring()
        return was

    def paused(self) -> frozenset:
        return frozenset(q for (q,) in self._call(f"SELECT queue FROM {self.s}.paused"))

    def serve(self, token: str, queues: Optional[frozenset]) -> None:
        self._call(f"INSERT INTO {self.s}.serving (token, queues) VALUES (%s, %s::text[]) "
                   "ON CONFLICT (token) DO UPDATE SET queues = excluded.queues",
                   (token, None if queues is None else sorted(queues)), write=True)

    def unserve(self, token: str) -> None:
        self._call(f"DELETE FROM {self.s}.serving WHERE token = %s", (token,), write=True)

    def served(self) -> dict[str, Optional[frozenset]]:
        rows = self._call(f"SELECT v.token, v.queues FROM {self.s}.serving v WHERE EXISTS (SELECT FROM "
                          f"{self.s}.alive a WHERE a.token = v.token AND a.expires > "
                          "extract(epoch FROM clock_timestamp()))")
        return {t: None if q is None else frozenset(q) for t, q in rows}

    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        wanted = None if keys is None else sorted(set(keys))
        rows = self._call(
            f"SELECT k.lim, coalesce(l.concurrency, 0), coalesce(l.rate, 0), coalesce(l.per, 0), "
            f"(SELECT count(*) FROM {self.s}.held h WHERE h.lim = k.lim), "
            f"(SELECT count(*) FROM {self.s}.tasks t WHERE t.status = 'pending' AND t.parked = k.lim), "
            f"CASE WHEN l.rate > 0 THEN (SELECT count(*) FROM {self.s}.starts x WHERE x.lim = k.lim "
            f"AND x.at > {_NOW_US} - round(l.per * 1000000)::bigint) ELSE 0 END, l.reopen / 1e6 "
            f"FROM (SELECT unnest(%s::text[]) AS lim UNION SELECT lim FROM {self.s}.limits "
            "WHERE %s::text[] IS NULL) k "
            f"LEFT JOIN {self.s}.limits l ON l.lim = k.lim ORDER BY k.lim", (wanted or [], wanted))
        return [LimitState(*row) for row in rows
                if wanted is not None or row[4] or row[5] or row[6]]

    def queue_states(self, now: float) -> list[QueueState]:
        # (a scan of the pending and running tasks: an operator's look, not a claim's)
        rows = self._call(
            f"SELECT q, sum(p)::bigint, sum(w)::bigint, sum(r)::bigint, bool_or(z) FROM ("
            "SELECT t.queue AS q, count(*) FILTER (WHERE t.status = 'pending') AS p, "
            "count(*) FILTER (WHERE t.status = 'pending' AND (t.eta <= %s OR t.parked IS NOT NULL)) AS w, "
            "count(*) FILTER (WHERE t.status = 'running') AS r, false AS z "
            f"FROM {self.s}.tasks t WHERE t.status IN ('pending', 'running') GROUP BY t.queue "
            f"UNION ALL SELECT queue, 0, 0, 0, true FROM {self.s}.paused) x GROUP BY q ORDER BY q", (now,))
        return [QueueState(q, p, w, r, z) for q, p, w, r, z in rows]
