"""The Redis store: the same wheel on a Redis server, shared by processes on many hosts.

``TimeWheel("redis://host:6379/0")`` (also ``rediss://`` for TLS and ``unix:///path?db=0``)
opens it; ``namespace=`` (default ``"timewheel"``) keeps apps sharing a database apart, and
the query parameter ``lease=`` (seconds, default 10) sets how long a claim lasts without a
renewal.  Requires Redis 7.0 or later (or a compatible server) and redis-py.

Keys, all under the hash tag ``{ns}`` so that every script touches one cluster slot:

===========================  ===================================================================
``{ns}:meta``                hash: format, slots, tick, horizon, leader, advanced
``{ns}:t:<id>``              hash per task: ``r`` the record (:func:`~timewheel.records.encode_record`)
                             and the fields the scripts read and change: ``s`` status, ``v`` rev,
                             ``n`` name, ``a`` attempts, ``k`` due tick (pending), ``o`` owner,
                             ``st`` started, ``f`` finished, ``l`` lease.  These override the
                             same fields of ``r`` (a claim changes them without unpickling).
``{ns}:w:<slot>:<cycle>``    zset: the wheel's cell -- pending tasks of tick ``cycle*slots+slot``
                             not yet ready, scored by eta (microseconds)
``{ns}:ready``               zset: ready tasks by eta (us); claimed once due by the server's clock
``{ns}:running``             zset: running tasks by lease deadline (us, the server's clock)
``{ns}:x:<status>``          zset per finished status: by finish time (ms)
``{ns}:xn``                  hash: id -> ``status|name`` of finished tasks, so that purge keeps the
                             counters right when a finished task's hash has expired (result TTL)
``{ns}:broken``              zset: records that cannot be decoded, set aside
``{ns}:counts``              hash: ``status|name`` -> tasks
``{ns}:ticks``, ``tickn``    zset of ticks holding pending tasks, hash tick -> how many;
``{ns}:slotn``               hash slot -> occupied cells: the CLI's wheel view costs what it prints
``{ns}:leader``              the ticking process's token (``SET NX PX``, renewed by its owner)
``{ns}:alive:<token>``       a process's heartbeat (expires unless renewed)
``{ns}:ready:<band>``        flow control (issue 21): ready tasks of another queue or priority
``{ns}:wb:<slot>:<cycle>``   than ("default", 0) -- its *band*, ``<queue>:<100 - priority>`` --
``{ns}:bands``               and their wheel entries; the bands used (ZSET, lexical)
``{ns}:park:<limit>``        tasks parked on a full limit, by priority then eta (the task hash's
                             ``pk`` names the limit, ``pe`` keeps the eta)
``{ns}:held:<limit>``        SET of the running tasks that hold a slot of the limit
``{ns}:starts:<limit>``      ZSET of its starts within its rate window (server time, us)
``{ns}:limits``, ``reopen``  hash limit -> ``concurrency|rate|window us``; ZSET limit -> when
                             its closed rate window lets parked tasks in again
``{ns}:paused``, ``serve``   SET of paused queues; hash token -> the queues a process claims
``{ns}:qcounts``             hash ``queue|status`` -> pending/running tasks of other queues
``{ns}:b:<batch>``           batches (issue 23): hash -- when it opened, when it was done, its
``{ns}:bm:<batch>``          members per class, its callbacks; list of its members' ids in
``{ns}:batches``, ``bopen``  order; ZSET of batches by opening, SET of those not done yet
===========================  ===================================================================

The task hash also holds ``q`` (its band, if not the default one), ``lm`` (its limits, for
the scripts: key, concurrency, rate and window, \\x1f-separated, one limit per \\x1e) and ``b``
(the batch it is a member of).

Every change of more than one key is one Lua script (:mod:`timewheel.store.redis_lua`).  The
server's clock is the store's: scripts read ``TIME``, so a task is never claimed before its
eta whatever the hosts' clocks say, and :meth:`RedisStore.now` is the local clock corrected by
the offset to the server's, measured at open and every few seconds after.

Never twice: a claim takes a lease (a deadline on the server's clock) which the owner renews
while the task runs (:meth:`RedisLiveness.keepalive`); only an expired lease makes the task
abandoned (:meth:`RedisStore.abandoned`), and an expired lease is never renewed, so the
recovery and a late renewal cannot both win.  The record's ``rev`` fences the outcome: a
process that lost its lease (paused, cut off) has its outcome refused.

Faults: with the server unreachable every method raises :class:`StoreError` (refused
connection) or :class:`StoreBusy` (no answer within ``timeout``) naming the server; the
scripts are atomic, so nothing is half-written.  When the connection fails *after* a write was
sent, the message says the write may or may not have been made.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence
from urllib.parse import parse_qsl, urlencode

from ..backoff import backoff
from ..errors import DuplicateTask, NotAStore, StoreError, StoreMismatch, shown
from ..records import (
    PENDING,
    RUNNING,
    STATUSES,
    RecordDecodeError,
    TaskRecord,
    decode_record,
    encode_record,
    is_progress,
    progress_from_json,
)
from ..text import without_password as _public
from ..wheel import Wheel
from . import rules
from .base import (
    BROKEN,
    Advanced,
    Claimed,
    Doorbell,
    LimitState,
    QueueState,
    StoreState,
    WheelStore,
    broken_record,
    check_existing,
    check_listable,
    eta_us,
    finished_ms,
    page,
    purge_statuses,
)
from .leases import LeaseLiveness
from .redis_abort import RedisAborts
from .redis_batches import NO_BATCH as _NO_BATCH
from .redis_batches import RedisBatches
from .redis_client import RedisClient, redis
from .redis_client import text as _text
from .redis_deps import RedisDeps
from .redis_flow import RedisFlow, RedisRegistry, bands_of
from .redis_inbox import RedisInbox

__all__ = ["RedisStore", "RedisLiveness", "FORMAT", "DEFAULT_LEASE"]

log = logging.getLogger("timewheel.store")

FORMAT = "timewheel-redis/2"    #: records may name a batch (issue 23), which /1 cannot read
V1_FORMAT = "timewheel-redis/1"  #: timewheel 0.4: converted in place by the first writer
DEFAULT_LEASE = 10.0        #: seconds a claim lasts without renewal (URL: ``?lease=``)
_ADVANCE_PAGE = 5000        #: tasks one ADVANCE script moves: bounds how long it blocks the server
_PAGE = 500                 #: entries read per round trip while scanning
_OUR_PARAMS = ("lease",)


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """(the URL for redis-py, our own query parameters)."""
    base, _, query = url.partition("?")      # (urlunsplit would turn unix:///p into unix:/p)
    pairs = parse_qsl(query, keep_blank_values=True)
    ours = {k: v for k, v in pairs if k in _OUR_PARAMS}
    rest = urlencode([(k, v) for k, v in pairs if k not in _OUR_PARAMS])
    return (base + "?" + rest if rest else base), ours


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _num(t: Optional[float]) -> str:
    return "" if t is None else repr(float(t))


def _opt_time(v: Optional[bytes]) -> Optional[float]:
    if v is None:
        return None
    t = float(v)
    if not math.isfinite(t):
        raise ValueError(f"time {v!r}")
    return t


def _band(rec: TaskRecord) -> str:
    """A task's band (see the key table): "" for the default queue at priority 0."""
    return "" if rec.queue == "default" and not rec.priority else "%s:%03d" % (rec.queue, 100 - rec.priority)


def _limits(rec: TaskRecord) -> str:
    """A task's limits as the scripts read them (windows in whole microseconds)."""
    return "\x1e".join(f"{k}\x1f{c}\x1f{r}\x1f{round(p * 1e6)}" for k, c, r, p in rec.limits)


class _Keys:
    """Names of a namespace's keys: ``{ns}:...``, one hash tag."""

    def __init__(self, namespace: str) -> None:
        self.prefix = p = "{" + namespace + "}:"
        self.meta, self.counts = p + "meta", p + "counts"
        self.ready, self.running = p + "ready", p + "running"
        self.ticks, self.tickn, self.slotn = p + "ticks", p + "tickn", p + "slotn"
        self.xn, self.broken, self.leader = p + "xn", p + "broken", p + "leader"
        self.bands, self.limits, self.reopen = p + "bands", p + "limits", p + "reopen"
        self.paused, self.serve, self.qcounts = p + "paused", p + "serve", p + "qcounts"
        self.processes = p + "processes"     # token -> its report (timewheel/processes.py)

    def band_ready(self, band: str) -> str:
        return self.ready if not band else self.prefix + "ready:" + band

    def band_cell(self, tick: int, slots: int) -> str:
        return f"{self.prefix}wb:{tick % slots}:{tick // slots}"

    def park(self, key: str) -> str:
        return self.prefix + "park:" + key

    def held(self, key: str) -> str:
        return self.prefix + "held:" + key

    def starts(self, key: str) -> str:
        return self.prefix + "starts:" + key

    def task(self, task_id: str) -> str:
        return self.prefix + "t:" + task_id

    def cell(self, tick: int, slots: int) -> str:
        return f"{self.prefix}w:{tick % slots}:{tick // slots}"

    def finished(self, status: str) -> str:
        return self.prefix + "x:" + status

    def alive(self, token: str) -> str:
        return self.prefix + "alive:" + token


def _record(fields: dict) -> TaskRecord:
    """A task hash -> its record: ``r`` decoded, with the fields the scripts change on top."""
    if fields.get(b"s") == b"broken":
        raise RecordDecodeError("record set aside as broken")
    rec = decode_record(fields.get(b"r"))
    try:
        status = fields[b"s"].decode()
        if status not in STATUSES:
            raise ValueError(f"status {status!r}")
        owner = fields.get(b"o")
        rev = int(fields[b"v"])
        rec = rec._replace(
            status=status, rev=rev, attempts=int(fields[b"a"]),
            owner=None if owner is None else owner.decode(), started=_opt_time(fields.get(b"st")),
            finished=_opt_time(fields.get(b"f")), lease=_opt_time(fields.get(b"l")))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise RecordDecodeError(f"not a timewheel record (its fields: {exc})") from None
    noted = fields.get(b"pg")                  # the run's progress, while it runs at that rev
    if noted is not None and noted.partition(b"|")[0] == str(rev).encode():
        progress = progress_from_json(noted.partition(b"|")[2])
        if not is_progress(progress):
            raise RecordDecodeError("not a timewheel record (field pg is not a progress)")
        rec = rec._replace(progress=progress)
    return rec


class RedisLiveness(LeaseLiveness):
    """Leases for a Redis store: a heartbeat key per process, a ticking role key with a TTL."""

    def __init__(self, store: "RedisStore") -> None:
        super().__init__(store)
        _ = self.token

    def _new_incarnation(self) -> None:
        if self._store.readonly:
            return
        try:
            self._store._io(lambda c: c.set(self._store.keys.alive(self._token), "1",
                                            px=self._ms(self.alive_ttl)), write=True)
        except StoreError as exc:   # the first try_lead() or claim() makes it
            log.debug("could not write the heartbeat of %s yet: %s", self._token, exc)

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    def _lead(self, token: str, now: float) -> bool:
        return self._store._script("lead", [token, self._ms(self.role_ttl), self._ms(self.alive_ttl)]) == 1

    def _renew(self, token: str, live: Sequence[TaskRecord]) -> list[str]:
        args: list[Any] = [token, round(self._store.lease * 1e6), self._ms(self.alive_ttl)]
        for rec in live:
            args += [rec.id, rec.rev]
        return [_text(i) for i in self._store._script("renew", args)]

    def _resign(self, token: str, final: bool) -> None:
        self._store._script("resign", [token, "1" if final else "0"])

    def leader(self) -> Optional[str]:
        v = self._store._io(lambda c: c.get(self._store.keys.leader))
        return None if v is None else _text(v)

    def is_dead(self, token: str) -> bool:
        return not self._store._io(lambda c: c.exists(self._store.keys.alive(token)))


class _PubSubBell(Doorbell):
    """A doorbell that crosses hosts: a thread subscribed to the namespace's channel.

    The scripts that make a task ready ahead of every other ready task publish on it; a
    runner woken for nothing claims nothing and sleeps again.  After a reconnection it rings
    itself, since whatever was published meanwhile was missed.
    """

    def __init__(self, store: "RedisStore") -> None:
        super().__init__(store)
        self._redis = store._client.redis
        self._channel = store.channel
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="timewheel-doorbell", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        pauses = backoff(0.05, 5.0)
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                self.poke()
                pauses = backoff(0.05, 5.0)
                while not self._closed.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self.poke()
            except Exception as exc:  # noqa: BLE001 - a closed pool fails in many ways
                # The runner still looks at least once a tick: a missed ring makes it late by
                # at most that, never lost.
                log.debug("doorbell of %s: %s; resubscribing", self._channel, exc)
                self._closed.wait(next(pauses))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - a dead connection may fail to close
                        pass

    def close(self) -> None:
        self._closed.set()
        super().close()


class RedisStore(RedisDeps, RedisAborts, RedisBatches, RedisRegistry, RedisInbox, WheelStore):
    """A :class:`WheelStore` in a Redis database.  Thread-safe; one instance per process.

    :param url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/to/redis.sock?db=N``; ``?lease=SECONDS`` sets the claim lease.
    :param wheel: the geometry to create the store with (``None``: read the stored one).
        Opening a store created with another one raises :class:`StoreMismatch`.
    :param namespace: the keys' prefix (hash tag): apps sharing a database use different ones.
    :param timeout: seconds to wait for the server before :class:`StoreBusy`.
    :param readonly: read only: no script runs, nothing is written (a read-only Redis user
        is enough).
    :param clock: the local clock; :meth:`now` adds the measured offset to the server's.
    :param lease: seconds a claim lasts without renewal (default: the URL's, else 10).
    :param result_ttl: seconds a finished task's hash lives (a Redis TTL); ``purge()``
        removes its index entries.  ``None``: kept until purged.
    """

    flow_control = True       #: see WheelStore.flow_control
    batches_kept = True       #: see WheelStore.batches_kept

    def __init__(self, url: str, wheel: Optional[Wheel] = None, *, namespace: str = "timewheel",
                 timeout: float = 10.0, readonly: bool = False,
                 clock: Callable[[], float] = time.time, lease: Optional[float] = None,
                 result_ttl: Optional[float] = None) -> None:
        if redis is None:
            raise StoreError("the Redis store needs redis-py: pip install 'timewheel[redis]'")
        if (not isinstance(namespace, str) or not namespace or not namespace.isprintable()
                or "{" in namespace or "}" in namespace or len(namespace) > 100):
            raise ValueError(f"namespace must be 1 to 100 printable characters without braces, "
                             f"got {shown(namespace)}")
        target, ours = _split_url(url)
        self.location = _public(url)
        self.namespace = namespace
        self.readonly = readonly
        # (0 would make redis-py's sockets non-blocking: "do not wait" means a short wait here)
        timeout = max(0.1, timeout)
        if lease is None:
            try:
                lease = float(ours["lease"]) if "lease" in ours else DEFAULT_LEASE
            except ValueError:
                raise ValueError(f"lease= in the URL must be seconds, got {ours['lease']!r}") from None
        self.lease = lease
        # nan fails the comparison; a huge int too, where math.isfinite() would overflow
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0.05 <= lease <= 86400:
            raise ValueError(f"lease must be from 0.05 to 86400 seconds, got {shown(self.lease)}")
        self.result_ttl = result_ttl
        self.keys = _Keys(namespace)
        self._bells: "weakref.WeakSet[_PubSubBell]" = weakref.WeakSet()
        self._client = RedisClient(target, self.location, timeout=timeout, readonly=readonly,
                                   clock=clock, meta=self.keys.meta)
        #: pub/sub channels are not per database: the channel names it
        self.channel = f"{self.keys.prefix}bell:{self._client.db}"
        self.wheel = self._set_up(wheel)
        self.liveness = RedisLiveness(self)
        self._flow = RedisFlow(self)
        self._forget_cursor = "0"          # where the purge's walk through the limits stands

    # -- talking to the server (store/redis_client.py) -----------------------------------------
    def _io(self, call: Callable[[Any], Any], write: bool = False) -> Any:
        return self._client.io(call, write)

    def _script(self, name: str, args: Sequence[Any]) -> Any:
        return self._client.script(name, args)

    def now(self) -> float:
        return self._client.now()

    # -- set-up -------------------------------------------------------------------------------
    def _set_up(self, wheel: Optional[Wheel]) -> Wheel:
        if self.readonly:
            fmt, slots, tick = self._io(lambda c: c.hmget(self.keys.meta, "format", "slots", "tick"))
            if fmt is None:
                raise NotAStore(f"no timewheel store in namespace {self.namespace!r} at {self.location}")
        else:
            new = wheel or Wheel()
            fmt, slots, tick = self._script("init", [FORMAT, new.slots, repr(float(new.tick)),
                                                     new.current_tick(self.now()), V1_FORMAT])
        if _text(fmt) != FORMAT and not (self.readonly and _text(fmt) == V1_FORMAT):
            raise NotAStore(f"namespace {self.namespace!r} at {self.location} holds store format "
                            f"{_text(fmt)!r}; this timewheel reads {FORMAT!r}")
        try:
            stored = Wheel(slots=int(slots), tick=float(tick))
        except (TypeError, ValueError) as exc:
            raise NotAStore(f"namespace {self.namespace!r} at {self.location}: its wheel geometry "
                            f"is damaged ({exc})") from None
        if wheel is not None and wheel != stored:
            raise StoreMismatch(
                f"namespace {self.namespace!r} at {self.location} was created with slots={stored.slots}, "
                f"tick={stored.tick}; cannot open it with slots={wheel.slots}, tick={wheel.tick}")
        return stored

    def close(self) -> None:
        liveness = self.__dict__.get("liveness")
        if liveness is not None:
            liveness.close()
        self._client.close()

    # -- writing records ----------------------------------------------------------------------
    _record_of = staticmethod(lambda fields: _record(fields))

    def _item(self, rec: TaskRecord, expect: "Optional[int | str]") -> list[Any]:
        """PUT's 17 values for storing ``rec`` if the stored rev (the hash's ``v`` field) is
        ``expect`` (None: no such task)."""
        tick: Any = ""
        if rec.status == PENDING:
            tick = self.wheel.due_tick(rec.eta)
            score = eta_us(rec.eta)
        elif rec.status == RUNNING:
            score = round((rec.lease if rec.lease is not None else self.now() + self.lease) * 1e6)
        else:
            score = finished_ms(rec.finished)
        return [rec.id, "" if expect is None else expect, rec.status, rec.name, tick, score, rec.rev,
                rec.attempts, rec.owner or "", _num(rec.started), _num(rec.finished), _num(rec.lease),
                encode_record(rec), _band(rec), _limits(rec), rec.batch or "",
                rec.waiting if rec.waiting and rec.status == PENDING else ""]

    def _put(self, mode: str, items: list[list[Any]], batch: Sequence[Any] = _NO_BATCH,
             ops: Sequence[Any] = ()) -> list[int]:
        return [int(x) for x in self._script("put", self._put_args(mode, items, batch, ops))]

    def _put_args(self, mode: str, items: list[list[Any]], batch: Sequence[Any] = _NO_BATCH,
                  ops: Sequence[Any] = ()) -> list[Any]:
        ttl = 0 if self.result_ttl is None else max(1000, round(self.result_ttl * 1000))
        args: list[Any] = [mode, ttl, self.channel, *batch, len(ops) // 3, *ops]
        for item in items:
            args += item
        return args

    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        if not records:
            return []
        if any(r.depends_on for r in records):
            return self._add_with_deps(records, existing)
        if existing == "fail" and len(records) == 1 and records[0].status == PENDING and not (
                _band(records[0])):
            # delay()'s: one new pending task of the default band, by the script cut to that
            # (redis_lua.ADD); another queue or priority goes to PUT, which keeps its band
            rec = records[0]
            done = self._script("add", [rec.id, rec.name, self.wheel.due_tick(rec.eta), eta_us(rec.eta),
                                        rec.rev, rec.attempts, encode_record(rec), self.channel,
                                        _limits(rec)])
            if done == 1:
                return [rec]
            if done == 0:
                raise DuplicateTask(f"task id {rec.id!r} already exists; nothing was added")
        if existing == "fail":
            rules.check_distinct(records)
            res = self._put("all", [self._item(r, None) for r in records])
            if res[0] == 0:
                raise DuplicateTask(f"task id {records[res[1] - 1].id!r} already exists; nothing was added")
            return list(records)
        while True:     # plan on what is stored; if it changed meanwhile, plan again
            out, plan, expect = self._plan(records, existing)
            if not plan:
                return out
            res = self._put("all", [self._item(r, expect[r.id]) for r in plan.values()])
            if res[0] == 1:
                return out

    def _plan(self, records: Sequence[TaskRecord], existing: str
              ) -> tuple[list[TaskRecord], dict[str, TaskRecord], dict[str, Optional[str]]]:
        """What add(existing=keep|reuse|replace) returns, what it writes, and the ``v``
        field it expects to find in each hash it writes (None: no such task)."""
        ids = list(dict.fromkeys(r.id for r in records))
        stored: dict[str, "TaskRecord | rules.Unreadable"] = {}
        seen_v: dict[str, str] = {}
        for task_id, fields in zip(ids, self._hashes(ids)):
            if fields:
                seen_v[task_id] = _text(fields.get(b"v", b""))
                try:
                    stored[task_id] = _record(fields)
                except RecordDecodeError:
                    stored[task_id] = rules.Unreadable(rules.stored_rev(fields.get(b"v")))
        out, plan = rules.admit_all(records, stored.get, existing)
        return out, plan, {i: seen_v.get(i) for i in plan}

    def get(self, task_id: str) -> Optional[TaskRecord]:
        fields = self._io(lambda c: c.hgetall(self.keys.task(task_id)))
        return _record(fields) if fields else None

    def _hashes(self, ids: Sequence[str]) -> list[dict]:
        """The task hashes of ``ids`` (empty where none), in one round trip per page."""
        out: list[dict] = []
        for i in range(0, len(ids), _PAGE):
            def fetch(c: Any, part: Sequence[str] = ids[i:i + _PAGE]) -> list:
                pipe = c.pipeline(transaction=False)
                for task_id in part:
                    pipe.hgetall(self.keys.task(task_id))
                return pipe.execute()
            out += self._io(fetch)
        return out

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        if not changes:
            return []
        planned, items = self._plan_swap(changes)
        return self._swapped(changes, planned, self._put("each", items) if items else [])

    def _plan_swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]
                   ) -> tuple[list[Optional[TaskRecord]], list[list[Any]]]:
        planned = [rules.swapped(old, new) if new.id == old.id else None for old, new in changes]
        items = [self._item(p, old.rev) for (old, _), p in zip(changes, planned) if p is not None]
        return planned, items

    # -- workers ------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0, *,
              queues: Optional[frozenset] = None) -> Claimed:
        limit, queued = max(0, limit), max(0, queued)
        return self._claimed(self._script("claim", self._claim_args(owner, limit, queued, queues)),
                             owner, limit)

    def record_and_claim(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], owner: str,
                         now: float, limit: int, queued: int = 0, *, queues: Optional[frozenset] = None
                         ) -> tuple[list[Optional[TaskRecord]], Claimed]:
        """The outcomes' script and the claim's, pipelined: one round trip (and one fsync
        with ``appendfsync always``) per worker round, shared with other threads' calls
        meanwhile.  Each script is atomic on its own."""
        planned, items = self._plan_swap(changes)
        if not items:
            return self._swapped(changes, planned, []), self.claim(owner, now, limit, queued, queues=queues)
        limit, queued = max(0, limit), max(0, queued)
        done, res = self._client.scripts([("put", self._put_args("each", items)),
                                          ("claim", self._claim_args(owner, limit, queued, queues))])
        return self._swapped(changes, planned, done), self._claimed(res, owner, limit)

    def _claim_args(self, owner: str, limit: int, queued: int, queues: Optional[frozenset]) -> list[Any]:
        own = "1" if owner == self.liveness.token else "0"
        return [owner, limit + queued, round(self.lease * 1e6), own,
                RedisLiveness._ms(self.liveness.alive_ttl), limit,
                "" if queues is None else ",".join(sorted(queues)), self.channel]

    def _claimed(self, res: Sequence[Any], owner: str, limit: int) -> Claimed:
        started, lease, head = float(res[0]), float(res[1]), _text(res[2])
        self._client.saw(started)
        taken = []
        for k, (task_id, blob) in enumerate(zip(res[3::2], res[4::2])):
            try:
                old = decode_record(blob)
            except RecordDecodeError as exc:
                if rules.set_aside(_text(task_id), exc):
                    self._script("mark_broken", [task_id])
                continue
            # the script started the first ``limit`` it took, counting any broken ones
            taken.append(rules.claimed(old, owner, started, lease=lease, queued=k >= limit))
        return Claimed(taken, int(head) / 1e6 if head else None)

    # -- the ticking process ------------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        horizon, moved, complete, led = self._script(
            "advance", [through, max(0, min(limit, _ADVANCE_PAGE)), leader, self.channel])
        return Advanced(int(horizon), int(moved), bool(complete), led=bool(led))

    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        bound = self._client.server_us()
        ids = [_text(i) for i in self._io(lambda c: c.zrangebyscore(
            self.keys.running, "-inf", bound, start=0, num=limit))]
        return [r for r in self._decoded(ids) if r.status == RUNNING]

    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        wanted = purge_statuses(statuses)
        # (at most 4000 per call: one script must not block the server for long)
        n = int(self._script("purge", [finished_ms(finished_before), max(0, min(limit, 4000)), *wanted]))
        # and a step through the limits, forgetting idle ones: every limit is looked at once
        # per (number of limits / 1000) purges, each step as short as the purge's
        cursor, _ = self._script("forget", [self._forget_cursor, 1000])
        self._forget_cursor = _text(cursor)
        return n

    def _decoded(self, ids: Sequence[str]) -> list[TaskRecord]:
        """The records of ``ids`` that are stored and decodable; broken ones are set aside
        (when writable) and skipped."""
        out = []
        for task_id, fields in zip(ids, self._hashes(ids)):
            if not fields:
                continue
            try:
                out.append(_record(fields))
            except RecordDecodeError as exc:
                marked = fields.get(b"s") == b"broken"
                if rules.set_aside(task_id, exc, readonly=self.readonly, marked=marked):
                    self._script("mark_broken", [task_id])
        return out

    # -- observers ----------------------------------------------------------------------------
    def state(self) -> StoreState:
        horizon, leader, advanced = self._io(
            lambda c: c.hmget(self.keys.meta, "horizon", "leader", "advanced"))
        try:
            return StoreState(int(horizon), None if leader is None else _text(leader),
                              None if advanced is None else float(advanced))
        except (TypeError, ValueError):
            raise StoreError(f"namespace {self.namespace!r} at {self.location}: its bookkeeping is "
                             f"damaged (horizon {horizon!r})") from None

    def next_ready_eta(self) -> Optional[float]:
        def read(c: Any) -> list:
            pipe = c.pipeline(transaction=False)
            for key in [self.keys.ready] + [self.keys.band_ready(b) for b in bands_of(self.keys, c)]:
                pipe.zrange(key, 0, 0, withscores=True)
            return pipe.execute()
        heads = [h[0][1] for h in self._io(read) if h]
        return min(heads) / 1e6 if heads else None

    # -- flow control (store/redis_flow.py) ---------------------------------------------------
    def pause(self, queue: str) -> bool:
        return self._flow.pause(queue)

    def resume(self, queue: str) -> bool:
        return self._flow.resume(queue)

    def paused(self) -> frozenset:
        return self._flow.paused()

    def serve(self, token: str, queues: Optional[frozenset]) -> None:
        self._flow.serve(token, queues)

    def unserve(self, token: str) -> None:
        self._flow.unserve(token)

    def served(self) -> dict[str, Optional[frozenset]]:
        return self._flow.served()


    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        return self._flow.limit_states(keys)

    def queue_states(self, now: float) -> list[QueueState]:
        return self._flow.queue_states(now)

    def counts(self) -> dict[tuple[str, str], int]:
        out = {}
        for field, n in self._io(lambda c: c.hgetall(self.keys.counts)).items():
            status, _, name = _text(field).partition("|")
            if int(n) > 0:
                out[(status, name)] = int(n)
        return out

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        lo = "-inf" if start is None else start
        hi = "+inf" if stop is None else f"({stop}"
        if limit is not None and limit <= 0:
            return []

        def read(c: Any) -> tuple[list, list]:
            ticks = c.zrangebyscore(self.keys.ticks, lo, hi, start=None if limit is None else 0, num=limit)
            return ticks, (c.hmget(self.keys.tickn, ticks) if ticks else [])
        ticks, ns = self._io(read)
        return [(int(t), int(n)) for t, n in zip(ticks, ns) if n is not None and int(n) > 0]

    def wheel_stats(self) -> tuple[int, int]:
        def read(c: Any) -> list:
            pipe = c.pipeline(transaction=False)
            pipe.zcard(self.keys.ticks)
            pipe.hlen(self.keys.slotn)
            return pipe.execute()
        cells, slots = map(int, self._io(read))
        return cells, slots

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        check_listable(status)
        if limit is not None and limit <= 0:
            return []
        if id_prefix:
            return self._by_prefix(status, name, id_prefix, after, limit)
        if status == BROKEN:
            ids = [_text(i) for i in self._io(lambda c: c.zrange(self.keys.broken, 0, -1))]
            out = []
            for task_id, fields in zip(ids, self._hashes(ids)):
                rname = _text(fields.get(b"n", b"?"))
                if fields and (name is None or rname == name) and (after is None or task_id > after.id):
                    out.append(broken_record(task_id, fields.get(b"r"), rname))
            return out[:limit]
        if status == RUNNING:
            ids = [_text(i) for i in self._io(lambda c: c.zrange(self.keys.running, 0, -1))]
            return self._page(self._decoded(ids), status, name, after, limit)
        if status == PENDING:
            mark = None if after is None else (eta_us(after.eta), after.id)
            bands = self._io(lambda c: bands_of(self.keys, c))
            entries = heapq.merge(self._walk(self.keys.ready, mark),
                                  self._walk(self.keys.prefix + "waiting", mark),    # (issue 23)
                                  *[self._walk(self.keys.band_ready(b), mark) for b in bands],
                                  self._wheel_entries(mark, bool(bands)), iter(self._flow.parked(mark)),
                                  key=lambda e: (e[1], e[0]))
        else:
            mark = None if after is None else (finished_ms(after.finished), after.id)
            entries = self._walk(self.keys.finished(status), mark, reverse=True)
        return self._collect(entries, status, name, limit)

    def _collect(self, entries: Iterator[tuple[str, float]], status: str, name: Optional[str],
                 limit: Optional[int]) -> list[TaskRecord]:
        """Records of index ``entries`` (in order), of ``status`` and ``name``, up to ``limit``."""
        out: list[TaskRecord] = []
        while limit is None or len(out) < limit:
            ids = [e[0] for _, e in zip(range(_PAGE), entries)]
            if not ids:
                break
            out += [r for r in self._decoded(ids)
                    if r.status == status and (name is None or r.name == name)]
        return out[:limit]

    def _walk(self, key: str, mark: Optional[tuple[float, str]], reverse: bool = False
              ) -> Iterator[tuple[str, float]]:
        """(member, score) of zset ``key`` after ``mark`` = (score, member), in (score,
        member) order (descending with ``reverse``), a page per round trip."""
        while True:
            edge = ("+inf" if reverse else "-inf") if mark is None else mark[0]
            skip = 0
            while True:
                rows = self._zpage(key, edge, skip, reverse)
                fresh = [(m, s) for m, s in rows if mark is None
                         or ((s, m) < mark if reverse else (s, m) > mark)]
                if fresh or len(rows) < _PAGE:
                    break
                skip += len(rows)        # a page of ties at the mark's score: look further on
            yield from fresh
            if len(rows) < _PAGE:
                return
            last = (rows[-1][1], rows[-1][0])
            if mark is not None and (last >= mark if reverse else last <= mark):   # never for a sane server
                raise StoreError(f"{self.location}: the index {key} is out of order")
            mark = last

    def _zpage(self, key: str, edge: Any, skip: int, reverse: bool) -> list[tuple[str, float]]:
        """A page of zset ``key`` from score ``edge`` on (down with ``reverse``), ``skip`` in."""
        def read(c: Any) -> list:
            if reverse:
                return c.zrevrangebyscore(key, edge, "-inf", start=skip, num=_PAGE, withscores=True)
            return c.zrangebyscore(key, edge, "+inf", start=skip, num=_PAGE, withscores=True)
        return [(_text(m), s) for m, s in self._io(read)]

    def _wheel_entries(self, mark: Optional[tuple[float, str]], bands: bool = False
                       ) -> Iterator[tuple[str, float]]:
        """(id, eta us) of the pending tasks in the wheel's cells, in due order (``bands``:
        the cells of other bands too)."""
        first = self.state().horizon + 1
        if mark is not None:
            first = max(first, self.wheel.due_tick(mark[0] / 1e6))
        # ticks are scored by themselves: start just below ``first``
        for tick, _ in self._walk(self.keys.ticks, (first - 0.5, "")):
            cell = self._walk(self.keys.cell(int(tick), self.wheel.slots), mark)
            if not bands:
                yield from cell
                continue
            yield from heapq.merge(cell, self._walk(self.keys.band_cell(int(tick), self.wheel.slots), mark),
                                   key=lambda e: (e[1], e[0]))

    def _by_prefix(self, status: str, name: Optional[str], prefix: str, after: Optional[TaskRecord],
                   limit: Optional[int]) -> list[TaskRecord]:
        """Tasks whose id starts with ``prefix``: a SCAN of the keyspace (reads it all)."""
        cut = len(self.keys.task(""))
        match = _glob_escape(self.keys.task("")) + _glob_escape(prefix) + "*"
        ids = self._io(lambda c: [_text(k)[cut:] for k in c.scan_iter(match=match, count=1000)])
        if status == BROKEN:
            return [r for r in self.scan(BROKEN, name=name, after=after) if r.id.startswith(prefix)][:limit]
        recs = sorted((r for r in self._decoded(ids) if r.status == status
                       and (name is None or r.name == name)), key=lambda r: r.id)
        return [r for r in recs if after is None or r.id > after.id][:limit]

    @staticmethod
    def _page(recs: list[TaskRecord], status: str, name: Optional[str], after: Optional[TaskRecord],
              limit: Optional[int]) -> list[TaskRecord]:
        return page([r for r in recs if r.status == status and (name is None or r.name == name)],
                    status, after, limit)

    # -- the doorbell -------------------------------------------------------------------------
    def doorbell(self) -> Doorbell:
        if self.readonly:
            return Doorbell()
        bell = _PubSubBell(self)
        self._bells.add(bell)
        return bell

    def ring(self) -> None:
        """Wake every runner of this namespace, on any host (this one's at least)."""
        try:
            self._io(lambda c: c.publish(self.channel, "!"))
        except StoreError:
            for bell in list(self._bells):
                bell.poke()

    # -- for the CLI --------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Server and namespace facts, for ``timewheel inspect``."""
        server = self._io(lambda c: c.info("server"))
        memory = self._io(lambda c: c.info("memory"))
        return {"url": self.location, "namespace": self.namespace,
                "redis_version": server.get("redis_version"),
                "used_memory_bytes": memory.get("used_memory"), "lease": self.lease,
                "slots": self.wheel.slots, "tick": self.wheel.tick}
