"""Flow control, pure: queues, priorities, limits and debounce -- what they mean, not where they
are kept.  No I/O, no clock, no threads: the stores call :class:`Admission` inside their claim
transaction (the Redis store's CLAIM script is its twin, in Lua), and the API calls the
checks and :func:`debounced` (issue 21).

* **Queues and priorities.**  A task belongs to one named queue (:data:`DEFAULT_QUEUE` unless
  told) and has a priority from -100 to 100 (0; higher first).  Among the *due* tasks of the
  queues a process serves, a claim takes the highest priority first, then the earliest eta;
  a priority never makes a task start before its eta.
* **Limits.**  A task counts against up to :data:`MAX_LIMITS` limits (:class:`Limit`): its
  own (``@hu.task(concurrency=, rate=, key=)``), shared ones (``hu.limit(...)``), and the
  implicit one of a debounced id.  A limit has a *key* -- what it counts, the same string in
  every process -- a concurrency (runs at once) and a rate (starts per ``per`` seconds).
  The limits are stored in the task's record, as its decoration said when it was enqueued:
  the store needs nothing else to enforce them.
* **Admission** (:class:`Admission`): given the due candidates of one claim in priority then
  eta order, the runs each limit has (slots held from the claim until the outcome is
  recorded) and its recent starts, which start now, which wait for a slot, and which wait
  for a rate window to reopen -- and when.
* **Debounce** (:func:`debounced`): what a call with ``debounce=`` does to the pending,
  running or finished task of its id.

A rate is a sliding log: a start at ``t`` is admitted only while fewer than ``rate`` starts
were admitted after ``t - per``, so no window of ``per`` seconds, wherever it falls, ever holds
more than ``rate`` starts (a fixed window lets 2x through across its edge; a token bucket
or GCRA bounds the average, not every window).  Starts are stamped with the store's clock
inside the claim transaction; counting every logged start after ``t - per`` (not only those
before ``t``) keeps the bound when two claims' stamps interleave.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence

from .records import PENDING, RUNNING

__all__ = [
    "DEFAULT_QUEUE", "MIN_PRIORITY", "MAX_PRIORITY", "MAX_LIMITS", "FOLLOW_SUFFIX", "Limit",
    "SharedLimit", "Usage", "Verdict", "Admission", "check_queue", "check_queues", "check_priority",
    "check_concurrency", "parse_rate", "rate_text", "key_function", "key_text", "task_limits",
    "limit_key", "debounce_limit", "debounce_eta", "follow_id", "debounced", "START", "QUEUE",
    "PARK", "LEAVE", "reopen_batch", "next_opening", "positive", "shared_limit", "check_limits",
]

DEFAULT_QUEUE = "default"
MIN_PRIORITY, MAX_PRIORITY = -100, 100
#: limits one task counts against (its own, shared ones, a debounced id's)
MAX_LIMITS = 8
#: the id of the run a debounce call makes while the task of its id runs: ``<id>~next``
FOLLOW_SUFFIX = "~next"
_MAX_QUEUE = 64
_MAX_KEY = 200                       #: characters of a key value (a longer one is refused)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")


class Limit(NamedTuple):
    """One limit as a record stores it: plain data, the same in every process."""

    #: what it counts: ``task:<name>``, ``task:<name>:<key>``, ``limit:<name>``, ``id:<id>``
    key: str
    concurrency: int = 0  #: runs at once across every process (0: no cap)
    rate: int = 0         #: starts per ``per`` seconds (0: no cap)
    per: float = 0.0      #: the rate's window, seconds


class SharedLimit(NamedTuple):
    """What ``hu.limit(name, concurrency=, rate=)`` returns: give it to ``@hu.task(limit=)``."""

    name: str
    concurrency: int = 0
    rate: int = 0
    per: float = 0.0

    def limit(self) -> Limit:
        return Limit("limit:" + self.name, self.concurrency, self.rate, self.per)


# -- checking what users write ------------------------------------------------------------------

def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_queue(value: Any, what: str = "queue") -> str:
    """A queue name: 1 to 64 printable characters, no ``:`` or ``,`` (they separate names in
    keys and on the command line), no surrounding spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_QUEUE or not value.isprintable() \
            or value != value.strip() or ":" in value or "," in value or not value.isascii():
        raise ValueError(f"{what} must be 1 to {_MAX_QUEUE} printable ASCII characters without ':' "
                         f"or ',' or surrounding spaces, got {_shown(value)}")
    return value


def check_queues(values: Any) -> Optional[frozenset]:
    """The queues a process serves: None (every queue) or a non-empty collection of names
    (a single ``str`` is refused: ``queues="emails"`` would be five queues of one letter)."""
    if values is None:
        return None
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise ValueError(f"queues must be a list of queue names, got {_shown(values)}")
    out = frozenset(check_queue(v, "a queue in queues") for v in values)
    if not out:
        raise ValueError("queues must name at least one queue (None: every queue)")
    return out


def check_priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(f"priority must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                         f"got {_shown(value)}")
    return value


def check_concurrency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValueError(f"concurrency must be an int from 1 to 1000000, got {_shown(value)}")
    return value


def parse_rate(value: Any) -> tuple[int, float]:
    """``"5/s"``, ``"100/m"``, ``"10/h"``, ``"3/d"``, ``"5/10s"`` -> (starts, per seconds)."""
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"rate must be like '5/s', '100/m', '10/h' or '5/10s', got {_shown(value)}")
    n, many, unit = int(m.group(1)), m.group(2), m.group(3)
    per = float(many or 1) * _UNITS[unit]
    if not 1 <= n <= 1_000_000 or not 0.001 <= per <= 7 * 86400:
        raise ValueError(f"rate {value!r}: from 1 to 1000000 starts per 0.001 s to 7 days")
    return n, per


def rate_text(rate: int, per: float) -> str:
    """How a rate is shown: ``5/s``, ``100/m``, ``5/10s``."""
    for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if per == seconds:
            return f"{rate}/{unit}"
    return f"{rate}/{per:g}s"


def key_text(value: Any) -> str:
    """A key argument's value as the limit's key holds it: the same text in every process
    (``str`` of a str, int or bool ... ``repr`` of anything else; the two never collide since
    a repr of a str is quoted)."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (int, bool)):
        text = repr(value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = f"{type(value).__name__}:{value!r}"
    if len(text) > _MAX_KEY or not text.isprintable():
        raise ValueError(f"the key of a limit must be at most {_MAX_KEY} printable characters, "
                         f"got {_shown(text)}")
    return text


def key_function(signature: Optional[inspect.Signature], key: Any, task: str
                 ) -> Callable[[tuple, dict], str]:
    """What ``key=`` names, checked at decoration: a parameter of the task (its value in each
    call) or a callable of the call's arguments (called at enqueue, its result stored)."""
    if callable(key):
        def by_callable(args: tuple, kwargs: dict) -> str:
            try:
                value = key(*args, **kwargs)
            except Exception as exc:
                raise ValueError(f"{task}: key= raised {exc.__class__.__name__}: {exc}") from None
            return key_text(value)
        return by_callable
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"{task}: key= must name a parameter or be a callable, got {_shown(key)}")
    if signature is None:
        raise ValueError(f"{task}: key={key!r} needs a function whose parameters can be read")
    param = signature.parameters.get(key)
    if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        raise ValueError(f"{task}: key={key!r} names no parameter of the task "
                         f"({', '.join(signature.parameters) or 'it has none'})")

    def by_parameter(args: tuple, kwargs: dict) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return key_text(bound.arguments[key])
    return by_parameter


def limit_key(kind: str, name: str, key: Optional[str] = None) -> str:
    return f"{kind}:{name}" if key is None else f"{kind}:{name}:{key}"


def task_limits(name: str, concurrency: Optional[int], rate: Optional[tuple[int, float]],
                shared: Sequence[SharedLimit], key: Optional[str]) -> tuple[Limit, ...]:
    """The limits of one call of task ``name``: its own (per ``key`` when given), then the
    shared ones, each once."""
    out: list[Limit] = []
    if concurrency or rate:
        n, per = rate or (0, 0.0)
        out.append(Limit(limit_key("task", name, key), concurrency or 0, n, per))
    for s in shared:
        lim = s.limit()
        if lim not in out:
            out.append(lim)
    return tuple(out)


# -- admission -------------------------------------------------------------------------------------

class Usage(NamedTuple):
    """What a limit holds at the claim: runs (slots held) and its recent starts."""

    running: int
    #: the starts logged after ``now - per``, ascending (any Sequence: a backend may read
    #: its elements lazily; only a few are looked at)
    starts: Sequence[float] = ()


START, QUEUE, PARK, LEAVE = "start", "queue", "park", "leave"


class Verdict(NamedTuple):
    """What a claim does with one candidate."""

    kind: str                        #: START now, QUEUE (for a busy worker), PARK, or LEAVE it ready
    limit: Optional[Limit] = None    #: PARK: the limit it waits for
    until: Optional[float] = None    #: PARK on a rate: when its window lets it in (None: a slot)


def reopen_batch(rate: int) -> int:
    """How many starts a closed rate window waits to let in at once: 1 for a small rate, a
    hundredth of it for a large one, so that 2000/s wakes the claimers every 10 ms rather than
    at each start that leaves the window (a task waits at most 1% of the window longer)."""
    return max(1, rate // 100)


class Admission:
    """One claim's decisions, candidate by candidate, in the order offered (priority, then
    eta): :meth:`offer` each; it counts what it admits against the limits.

    :param usage: a limit's :class:`Usage` at the claim (asked once per limit key).
    :param now: the claim's time, the store's clock: starts are logged at it.
    :param room: tasks that may start now (the claimer's idle workers).
    :param queued: tasks without limits that may be taken beyond ``room``, to wait for a busy
        worker of the claimer.  Tasks with limits never wait so: a slot or a start would be
        counted for a run that has not begun.
    """

    def __init__(self, usage: Callable[[Limit], Usage], now: float, room: int, queued: int = 0) -> None:
        self._usage = usage
        self._seen: dict[str, Usage] = {}
        self.now = now
        self.room = room
        self.queued = queued
        self.taken: dict[str, int] = {}          #: starts admitted here per limit key
        self.consulted: dict[str, Limit] = {}    #: the limits looked at, by key

    @property
    def full(self) -> bool:
        """Nothing more can be taken."""
        return self.room <= 0 and self.queued <= 0

    def usage(self, lim: Limit) -> Usage:
        u = self._seen.get(lim[0])
        if u is None:
            spec = self.consulted[lim[0]] = Limit._make(lim)
            u = self._seen[lim[0]] = self._usage(spec)
        return u

    def free_slots(self) -> dict[str, int]:
        """The concurrency limits this claim looked at that still have free slots once its
        starts are counted, and how many: their parked tasks may come back (a slot freed
        for a task that then went elsewhere -- cancelled, or held back by another limit --
        must not leave the others parked behind it)."""
        out = {}
        for key, lim in self.consulted.items():
            if lim.concurrency:
                free = lim.concurrency - self._seen[key].running - self.taken.get(key, 0)
                if free > 0:
                    out[key] = free
        return out

    def offer(self, limits: Sequence[Limit]) -> Verdict:
        """The verdict on the next candidate, whose record counts against ``limits``."""
        if not limits:
            if self.room > 0:
                self.room -= 1
                return Verdict(START)
            if self.queued > 0:
                self.queued -= 1
                return Verdict(QUEUE)
            return Verdict(LEAVE)
        for lim in limits:
            blocked = self._blocked(lim)
            if blocked is not None:
                return blocked
        if self.room <= 0:
            return Verdict(LEAVE)
        self.room -= 1
        for lim in limits:
            self.taken[lim[0]] = self.taken.get(lim[0], 0) + 1
        return Verdict(START)

    def _blocked(self, lim: Sequence[Any]) -> Optional[Verdict]:
        """PARK if ``lim`` (a Limit, or the plain tuple a record holds) is full."""
        key, concurrency, rate, per = lim
        u = self.usage(lim)
        taken = self.taken.get(key, 0)
        if concurrency and u.running + taken >= concurrency:
            return Verdict(PARK, Limit._make(lim), None)
        if rate and len(u.starts) + taken >= rate:
            return Verdict(PARK, Limit._make(lim), self._reopen(rate, per, u.starts, taken))
        return None

    def _reopen(self, rate: int, per: float, starts: Sequence[float], taken: int) -> float:
        return next_opening(starts, rate, per, self.now, taken)


def next_opening(starts: Sequence[float], rate: int, per: float, now: float, taken: int = 0) -> float:
    """When the window of a rate of ``rate`` per ``per`` seconds lets :func:`reopen_batch`
    more starts in, given the ``starts`` logged after ``now - per`` (ascending) and ``taken``
    more at ``now``: ``now`` if it has room, else once the start that many places past the
    overflow has left the window (past ``now``: every start counted is after ``now - per``)."""
    n = len(starts) + taken
    if n < rate:
        return now
    j = n - rate + min(reopen_batch(rate), rate) - 1
    at = starts[j] if j < len(starts) else now
    return max(at + per + 1e-6, now)      # (the stores count a microsecond's margin)


# -- debounce --------------------------------------------------------------------------------------

def follow_id(task_id: str) -> str:
    """The id of the run a debounce call makes while ``task_id`` runs (and the other way)."""
    return task_id[:-len(FOLLOW_SUFFIX)] if task_id.endswith(FOLLOW_SUFFIX) else task_id + FOLLOW_SUFFIX


def debounce_limit(task_id: str) -> Limit:
    """The implicit limit of a debounced id and its follow-up: one run at a time, so that a
    call made while it runs leads to a run *after* it."""
    base = task_id[:-len(FOLLOW_SUFFIX)] if task_id.endswith(FOLLOW_SUFFIX) else task_id
    return Limit("id:" + base, 1)


def debounce_eta(now: float, debounce: float, first_call: float, max_wait: Optional[float]) -> float:
    """``debounce`` seconds after this call, but never later than ``max_wait`` after the
    first call of this run."""
    eta = now + debounce
    return eta if max_wait is None else min(eta, first_call + max_wait)


Record = Any        # a timewheel.records.TaskRecord (named tuple): kept generic, this module is pure


def debounced(main: Optional[Record], follow: Optional[Record], new: Record, now: float,
              debounce: float, max_wait: Optional[float]) -> tuple[Optional[Record], Record]:
    """What one call with ``debounce=`` writes, given the records of its id (``main``) and of
    its follow-up id (``follow``), either None: ``(the record it replaces -- written only if
    still stored as read -- or None to add, the record to write)``.

    ``new`` is the record the call would add (its id is ``main``'s, its arguments and
    options the call's); its eta and debounce fields are set here:

    * a **pending** run (the newer of the two, if a retry left both pending) takes the call's
      arguments, and its eta moves to ``now + debounce`` -- but never past ``max_wait`` after
      the first call of that run (kept from it);
    * while one **runs**, the other id gets a new pending run (its first call is this one),
      which counts against the id's one-at-a-time limit, so it starts once the running one
      has ended: no call is lost;
    * otherwise (nothing stored, or finished) ``main`` gets a new run.
    """
    pending = [r for r in (main, follow) if r is not None and r.status == PENDING]
    if pending:
        run = max(pending, key=lambda r: (r.first_call or r.created, r.id == new.id))
        first = run.first_call if run.first_call is not None else run.created
        wait = run.max_wait
        return run, run._replace(payload=new.payload,
                                 eta=debounce_eta(now, debounce, first, wait))
    running = [r for r in (main, follow) if r is not None and r.status == RUNNING]
    task_id, old = new.id, main
    if running and running[0].id == task_id:        # the main id runs: its follow-up gets it
        task_id, old = follow_id(task_id), follow
    fresh = new._replace(id=task_id, eta=debounce_eta(now, debounce, now, max_wait), first_call=now,
                         max_wait=max_wait)
    return old, fresh


def positive(value: Any, what: str) -> float:
    """Seconds > 0 (debounce=, max_wait=)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 366 * 86400:
        raise ValueError(f"{what} must be seconds from 0 to a year, got {_shown(value)}")
    return float(value)


def shared_limit(name: Any, concurrency: Any, rate: Any) -> SharedLimit:
    """``hu.limit(...)``'s checks."""
    if not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable() \
            or name != name.strip():
        raise ValueError(f"a limit's name must be 1 to 100 printable characters, got {_shown(name)}")
    if concurrency is None and rate is None:
        raise ValueError(f"limit {name!r} needs concurrency= or rate= (or both)")
    n, per = parse_rate(rate) if rate is not None else (0, 0.0)
    return SharedLimit(name, 0 if concurrency is None else check_concurrency(concurrency), n, per)


def check_limits(value: Any) -> tuple[SharedLimit, ...]:
    """``@hu.task(limit=)``: one shared limit or a list of them."""
    items: Sequence[Any] = (value,) if isinstance(value, SharedLimit) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, SharedLimit) for s in items):
        raise ValueError(f"limit= takes what hu.limit(...) returns (or a list of them), got {_shown(value)}")
    return tuple(items)

