"""The task record and its state machine: what the store keeps per task, and how it changes.

A record is plain data (no callables).  Every change of state is a pure function here that
takes a record and returns a new one (``start_run``, ``end_run``, ``requeue_crashed``, ...);
stores only *apply* them atomically (see :class:`timewheel.store.WheelStore.swap`), so the
rules -- when a failure is retried and how long it waits, when a crash is forgiven, what a
manual retry resets -- live in this one module and are tested without threads or files::

    pending --claim--> running --end_run--> succeeded | failed | pending (retry at a later eta)
       |                  |---requeue_crashed--> pending (its process died) | failed (too often)
       |                  |---hand_back--> pending (claimed for a queue, never started)
       |                  |---start_queued--> running, started (it left the queue for a worker)
       |---skip_misfired--> misfired        pending --cancel--> cancelled
    running --request_abort--> running, its ``abort`` set (the store keeps ``rev``: the run's
       fence still holds) --end_run--> aborted (or succeeded, if it returned all the same)
    failed | misfired | cancelled | aborted --reset_for_retry--> pending

Which failures use up a retry, and when the next attempt runs, is decided here too
(:func:`is_retryable`, :func:`retry_eta`: the backoff with full jitter, or the time a task
asked for with :class:`~timewheel.errors.Retry`: issue 26), and each run leaves an
:class:`Attempt` in the record's bounded ``history``.

Records are stored as a pickle of a tuple of primitives and ``bytes``; the caller's
arguments and the task's return value stay nested, still pickled, as ``payload`` and
``result``.  :func:`decode_record` refuses any pickle that names a global and checks the type
of every field, so reading a record (the CLI does it for every row it shows) never imports or
runs code, and a tampered record is reported instead of crashing whoever reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

__all__ = [
    "TaskRecord", "Outcome", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "MISFIRED",
    "ABORTED", "request_abort", "Progress", "progress_value", "with_progress", "is_progress",
    "progress_to_json", "progress_from_json",
    "STATUSES", "TERMINAL", "RETRYABLE", "encode_record", "decode_record", "RecordDecodeError",
    "start_run", "is_misfire", "skip_misfired", "end_run", "requeue_crashed", "reset_for_retry",
    "cancel", "retry_backoff", "new_task", "load_plain", "MAX_RECORD_BYTES", "MAX_ETA", "MAX_BACKOFF",
    "record_from_fields", "is_retryable", "retry_eta", "jitter_fraction", "Attempt",
    "ATTEMPT_OUTCOMES", "HISTORY", "first_lines", "hand_back", "history_to_json", "history_from_json",
    "MAX_DEPENDENCIES", "PLAIN_REST", "start_queued",
]

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"          # buried: kept with its error until retried or purged
CANCELLED = "cancelled"
MISFIRED = "misfired"      # skipped: it would have started later than its misfire_grace
ABORTED = "aborted"        # stopped while running, as asked (issue 23): never retried
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, MISFIRED, ABORTED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, MISFIRED, ABORTED})
RETRYABLE = frozenset({FAILED, MISFIRED, CANCELLED, ABORTED})   #: what reset_for_retry accepts

RECORD_VERSION = 2
#: 9999-12-31T23:59:59Z: the latest eta any store accepts (keys hold fixed-width times)
MAX_ETA = 253402300799.0
#: a record (arguments and result included) larger than this is refused when written
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: the longest a retry waits, however many attempts failed before
MAX_BACKOFF = 6 * 3600.0
#: the runs a record keeps in its history: the last ten (issue 26)
HISTORY = 10
#: how an attempt ended: ran to the end, failed and retried, failed for good, lost with its process
ATTEMPT_OUTCOMES = ("succeeded", "retried", "failed", "crashed", "aborted")
#: the dependencies one task may have (``depends_on=``)
MAX_DEPENDENCIES = 1000
#: an attempt keeps the first lines of its error, at most this many characters
ERROR_LINES, ERROR_CHARS = 5, 1000


class RecordDecodeError(ValueError):
    """A stored record is not a timewheel record this version can read."""


class TaskRecord(NamedTuple):
    """One task, as stored.  Times are unix seconds (the store's clock).

    Immutable: a transition returns a new record (``rec._replace(...)``).  A named tuple
    rather than a frozen dataclass because enqueueing builds one per task: 5x cheaper.
    """

    id: str
    name: str
    eta: float                      #: exact due time; the wheel slot is derived from it
    payload: bytes                  #: pickle of (args, kwargs)
    status: str = PENDING
    created: float = 0.0
    retries: int = 0                #: extra attempts allowed after a failure
    retry_delay: float = 0.0        #: base of the exponential backoff, seconds
    misfire_grace: Optional[float] = None  #: skip if it would start later than this
    attempts: int = 0               #: runs started (a run lost to a crash is not counted)
    crashes: int = 0                #: runs lost because the process running it died
    started: Optional[float] = None
    finished: Optional[float] = None
    owner: Optional[str] = None     #: the liveness token of the process running it
    error: Optional[str] = None
    traceback: Optional[str] = None
    result: Optional[bytes] = None  #: pickle of the return value
    version: int = RECORD_VERSION
    rev: int = 0                    #: bumped by the store at every change; a claim's rev fences it
    timeout: Optional[float] = None  #: seconds a run may take before it fails with TaskTimeout
    lease: Optional[float] = None   #: while running on a store with leases: the lease's deadline
    # -- flow control (issue 21; see timewheel/flow.py).  Last, with defaults: a record without
    # them is encoded as before, so stores written by 0.3 read, and 0.3 reads such records.
    queue: str = "default"          #: the named queue it belongs to
    priority: int = 0               #: -100..100, higher first among due tasks
    limits: tuple = ()              #: the limits it counts against: flow.Limit tuples
    first_call: Optional[float] = None  #: debounced: the first call of this run
    max_wait: Optional[float] = None    #: debounced: at most this long after first_call
    # -- issue 26.  Last, with a default: a record without runs is encoded as before.
    history: tuple = ()             #: the last HISTORY runs, oldest first: Attempt tuples
    # -- batches (issue 23; see timewheel/batches.py).  Last, with a default: a record that is
    # no batch's member is encoded as before.
    batch: Optional[str] = None     #: the batch it is a member of
    # -- aborting a running task (issue 23).  Last, with a default: as above.
    abort: Optional[float] = None   #: while running: when an abort was asked for (the store's clock)
    progress: Optional[tuple] = None  #: the run's last reported progress: a Progress tuple
    # -- dependencies (issue 23; see timewheel/deps.py).  Last, with defaults: a record without
    # dependencies is encoded as before.
    depends_on: tuple = ()          #: the ids of the tasks it runs after (each must succeed)
    waiting: int = 0                #: of those, how many have not succeeded yet: 0 = released
    takes_result: bool = False      #: ``then``: its first argument is its dependency's result
    given: Optional[bytes] = None   #: that result as stored, copied in when it was released

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class Progress(NamedTuple):
    """How far a run got, as it said (``current_task().progress(done, total, note)``)."""

    done: float                  #: units done (an int, or a float)
    total: Optional[float]       #: units in all, if known
    note: str                    #: a short text ("" for none)
    at: float                    #: when it was reported (the worker's clock, unix seconds)

    @property
    def fraction(self) -> Optional[float]:
        """``done / total`` (at most 1), or None without a total."""
        return None if not self.total else min(1.0, self.done / self.total)


#: the longest note a progress keeps (a longer one is cut)
MAX_NOTE = 200


def progress_value(done: Any, total: Any, note: Any, at: float) -> tuple:
    """A progress as a record keeps it, checked: ``done`` a finite number >= 0, ``total`` None
    or a finite number > 0, ``note`` a str (cut to :data:`MAX_NOTE` characters).  TypeError
    or ValueError naming what is wrong."""
    for value, what in ((done, "done"), (total, "total")):
        if value is None and what == "total":
            continue
        if type(value) not in _NUMBER:
            raise TypeError(f"progress {what} must be an int or a float, got {type(value).__name__}")
        if not (math.isfinite(value) and 0 <= value <= 1e15) or (what == "total" and value == 0):
            raise ValueError(f"progress {what} must be a finite number from 0 to 1e15"
                             f"{' (not 0)' if what == 'total' else ''}, got {value!r}")
    if type(note) is not str:
        raise TypeError(f"progress note must be a str, got {type(note).__name__}")
    return (done, total, note[:MAX_NOTE], at)


def with_progress(rec: TaskRecord, progress: tuple) -> TaskRecord:
    """RUNNING -> RUNNING with its run's latest ``progress``: like :func:`request_abort`, a
    note a store writes without bumping ``rev``."""
    if rec.status != RUNNING:
        raise ValueError(f"only a running task reports progress, not a {rec.status} one")
    return rec._replace(progress=progress)


class Attempt(NamedTuple):
    """One run of a task, as its record's ``history`` keeps it (stored as a plain tuple)."""

    number: int                  #: the attempt's number (1 for the first run)
    eta: float                   #: when it was due: ``started - eta`` is its lateness
    started: Optional[float]
    finished: Optional[float]    #: (a crashed run: when its process was found dead)
    owner: Optional[str]         #: the process that ran it
    outcome: str                 #: one of :data:`ATTEMPT_OUTCOMES`
    error: Optional[str]         #: its error's first lines (None when it succeeded)

    @property
    def lateness(self) -> Optional[float]:
        return None if self.started is None else self.started - self.eta


@dataclass(frozen=True)
class Outcome:
    """How one run ended, as the worker saw it; :func:`end_run` turns it into a new state."""

    ok: bool
    started: float
    finished: float
    result: Optional[bytes] = None       #: pickled return value when ok
    error: Optional[str] = None          #: ``"ExcType: message"`` when not ok
    traceback: Optional[str] = None
    retryable: bool = True               #: False: fail now, whatever attempts are left
    #: the exception itself, for hooks in this process (never stored)
    exception: Optional[BaseException] = field(default=None, compare=False, repr=False)
    #: the task asked for a retry (``raise Retry``) at this time; None: after its backoff
    retry_at: Optional[float] = None
    #: at most this many retries in place of the record's ``retries`` (``Retry(max_retries=)``)
    max_retries: Optional[int] = None
    #: the backoff is full-jittered (:func:`retry_eta`); False: exactly ``retry_backoff``
    jitter: bool = False
    #: the run's last reported progress (a Progress tuple), written with the outcome
    progress: Optional[tuple] = None


# -- transitions --------------------------------------------------------------------------------
# Each returns a new record and leaves ``rev`` alone: the store bumps it when it applies one.

def start_run(rec: TaskRecord, owner: str, now: float, lease: Optional[float] = None,
              queued: bool = False) -> TaskRecord:
    """PENDING -> RUNNING for ``owner`` (a claim), starting at ``now`` -- or, ``queued``,
    waiting in the owner's queue for a worker: then ``started`` stays None until the outcome
    says when it started, and a death of the owner meanwhile is not held against the task."""
    return rec._replace(status=RUNNING, owner=owner, started=None if queued else now,
                        finished=None, attempts=rec.attempts + 1, lease=lease)


def is_misfire(rec: TaskRecord, now: float) -> bool:
    """True if a run starting at ``now`` would be later than the task's ``misfire_grace``."""
    return rec.misfire_grace is not None and now - rec.eta > rec.misfire_grace


def skip_misfired(rec: TaskRecord, now: float) -> TaskRecord:
    """A claimed task that is too late -> MISFIRED, not run (its attempt is not counted)."""
    return rec._replace(
        status=MISFIRED, owner=None, started=None, finished=now, lease=None,
        attempts=max(0, rec.attempts - 1),
        error=(f"skipped: would have started {now - rec.eta:.3f}s after its eta, "
               f"misfire_grace is {rec.misfire_grace:g}s"))


def retry_backoff(retry_delay: float, attempt: int, factor: float = 2.0,
                  cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait before re-running after failed attempt number ``attempt`` (1-based).

    ``retry_delay * factor ** (attempt - 1)``, capped at ``cap`` (6 h) so a long retry chain
    cannot push a task years out.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    try:
        return min(cap, retry_delay * factor ** (attempt - 1))
    except OverflowError:
        return cap


def jitter_fraction(task_id: str, attempt: int) -> float:
    """A number in [0, 1) drawn for failed attempt ``attempt`` of task ``task_id``: the full
    jitter of its retry's wait.  Pure -- a hash of the two, the task id being the seed -- so
    the same failure of the same task waits the same in whichever process records it, a test
    computes it exactly, and tasks that fail together spread out (issue 24)."""
    digest = hashlib.blake2b(f"{task_id}\0{attempt}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def retry_eta(rec: TaskRecord, out: Outcome) -> float:
    """When the retry of ``rec`` (running; its run just failed as ``out`` says) is due: the
    time the task asked for (``out.retry_at``, never before the failure), else ``finished``
    plus :func:`retry_backoff` of its attempt -- with ``out.jitter``, that wait times
    :func:`jitter_fraction` ("full jitter": anywhere from no wait to the whole backoff)."""
    if out.retry_at is not None:
        return min(MAX_ETA, max(out.finished, out.retry_at))
    attempt = max(1, rec.attempts)
    wait = retry_backoff(rec.retry_delay, attempt)
    if out.jitter:
        wait *= jitter_fraction(rec.id, attempt)
    return min(MAX_ETA, out.finished + wait)


def is_retryable(exc: BaseException, retry_on: tuple = (), dont_retry_on: tuple = ()) -> bool:
    """Whether a task's exception ``exc`` may use up a retry: an instance of ``retry_on``
    (when given; else of anything) that is no instance of ``dont_retry_on``."""
    if dont_retry_on and isinstance(exc, dont_retry_on):
        return False
    return not retry_on or isinstance(exc, retry_on)


def end_run(rec: TaskRecord, out: Outcome) -> TaskRecord:
    """RUNNING -> SUCCEEDED, FAILED, or PENDING again for a retry, as ``out`` says.

    A failure is retried while ``attempts <= retries`` (so at most ``retries + 1`` runs;
    ``out.max_retries`` in place of ``retries`` when a ``Retry`` said so), unless the outcome
    is not retryable; the retry is due at :func:`retry_eta`.

    ``started`` stays the claim's, by the store's clock, when the run was claimed to start at
    once (what a rate limit counted: issue 21); a run that waited in its process's queue
    takes the worker's.

    An abort asked for during the run (``rec.abort``) makes any failure ABORTED, never retried;
    a run that returned all the same succeeded: its work is done, and its result is kept.
    """
    started = out.started if rec.started is None else rec.started
    common = dict(owner=None, lease=None, started=started, finished=out.finished,
                  progress=rec.progress if out.progress is None else out.progress)
    if out.ok:
        return rec._replace(status=SUCCEEDED, result=out.result, error=None, traceback=None,
                            history=_attempt(rec, started, out.finished, "succeeded", None), **common)
    if rec.abort is not None:
        error = f"aborted: {out.error}" if out.error else "aborted"
        return rec._replace(status=ABORTED, error=error, traceback=out.traceback,
                            history=_attempt(rec, started, out.finished, "aborted", error), **common)
    budget = rec.retries if out.max_retries is None else out.max_retries
    if out.retryable and rec.attempts <= budget:
        return rec._replace(status=PENDING, eta=retry_eta(rec, out), error=out.error,
                            traceback=out.traceback,
                            history=_attempt(rec, started, out.finished, "retried", out.error), **common)
    error = out.error
    if out.retry_at is not None and out.retryable:
        error = f"{error} (a retry was asked for, but {rec.attempts} attempts used up {budget} retries)"
    return rec._replace(status=FAILED, error=error, traceback=out.traceback,
                        history=_attempt(rec, started, out.finished, "failed", error), **common)


def first_lines(text: Optional[str], lines: int = ERROR_LINES, chars: int = ERROR_CHARS) -> Optional[str]:
    """The first ``lines`` lines of ``text``, at most ``chars`` characters (a cut text ends in
    an ellipsis): what an attempt keeps of its error."""
    if text is None:
        return None
    cut = "\n".join(text.split("\n", lines)[:lines])[:chars - 1]
    return cut if cut == text else cut.rstrip() + "\u2026"


def _attempt(rec: TaskRecord, started: Optional[float], finished: Optional[float], outcome: str,
             error: Optional[str]) -> tuple:
    """``rec``'s history with its current run appended (as ``outcome``): the last HISTORY."""
    entry = (rec.attempts, rec.eta, started, finished, rec.owner, outcome, first_lines(error))
    return rec.history[max(0, len(rec.history) - HISTORY + 1):] + (entry,)


def requeue_crashed(rec: TaskRecord, now: float, max_crashes: int) -> TaskRecord:
    """RUNNING whose process died (or lost its lease) -> PENDING again, due at once: the
    documented re-run.  After ``max_crashes`` such deaths while it had started it is FAILED
    instead, so a task that kills its process cannot take the whole fleet down in a loop.
    (A task that was still queued, ``started`` None, is handed back without a crash: see
    :func:`hand_back`.)  A run that had started joins the history as ``crashed``; its attempt is
    not counted (the re-run repeats its number)."""
    if rec.started is None:
        return hand_back(rec)
    if rec.abort is not None:          # asked to stop: it is not run again
        died = f"the process running it ({rec.owner}) died"
        return rec._replace(status=ABORTED, owner=None, lease=None, finished=now,
                            error=f"aborted ({died} before the run ended)",
                            history=_attempt(rec, rec.started, now, "aborted", died))
    crashes = rec.crashes + 1
    history = _attempt(rec, rec.started, now, "crashed", f"the process running it ({rec.owner}) died")
    if crashes >= max_crashes:
        return rec._replace(
            status=FAILED, owner=None, lease=None, crashes=crashes, finished=now, history=history,
            error=f"the process running it died {crashes} times; not run again")
    return rec._replace(status=PENDING, owner=None, lease=None, crashes=crashes, history=history,
                        started=None, attempts=max(0, rec.attempts - 1))


def hand_back(rec: TaskRecord) -> TaskRecord:
    """RUNNING but never started (claimed into its owner's queue, ``started`` None) -> PENDING
    as before the claim: its attempt not counted, its eta (the oldest) kept, so the next claim
    -- for idle workers, anywhere -- starts it and counts it.  One whose abort was asked for
    ends ABORTED instead, never started."""
    if rec.abort is not None:
        return rec._replace(status=ABORTED, owner=None, lease=None, finished=rec.abort,
                            error="aborted before it started")
    return rec._replace(status=PENDING, owner=None, lease=None, started=None,
                        attempts=max(0, rec.attempts - 1))


def start_queued(rec: TaskRecord, now: float, lease: Optional[float] = None) -> TaskRecord:
    """RUNNING but waiting in its owner's queue (``started`` None) -> started on a worker at
    ``now``: from here it counts as running, not claimed, and a death of its owner is held
    against it (:func:`requeue_crashed`).  ``lease``: its lease's deadline as of this write (a
    store with leases keeps the one a record carries: the claim's would have run out while it
    was queued and renewed)."""
    return rec._replace(started=now, lease=rec.lease if lease is None else lease)


def reset_for_retry(rec: TaskRecord, now: float) -> TaskRecord:
    """A failed, misfired, cancelled or aborted task -> PENDING now, with a fresh attempt budget
    (a dependent cancelled with its dependency runs without waiting for it: the caller asked)."""
    return rec._replace(status=PENDING, eta=now, attempts=0, crashes=0, started=None,
                        finished=None, owner=None, lease=None, result=None, abort=None, progress=None,
                        waiting=0)


def cancel(rec: TaskRecord, now: float) -> TaskRecord:
    """PENDING -> CANCELLED: it will never run."""
    return rec._replace(status=CANCELLED, finished=now, error="cancelled")


def request_abort(rec: TaskRecord, now: float) -> TaskRecord:
    """RUNNING -> RUNNING with ``abort`` set: the process running it is asked to stop it (it
    learns so at its next round, within a tick).  A store writes this *without* bumping
    ``rev`` (:meth:`~timewheel.store.WheelStore.note`): the run's fence, its lease and its
    outcome stay valid.  The first request's time is kept."""
    if rec.status != RUNNING:
        raise ValueError(f"only a running task can be asked to abort, not a {rec.status} one")
    return rec if rec.abort is not None else rec._replace(abort=now)


# -- encoding -----------------------------------------------------------------------------------

_FIELD_NAMES = TaskRecord._fields
_DEFAULTS = tuple(TaskRecord._field_defaults.get(n) for n in _FIELD_NAMES)
_REQUIRED = 4                    # id, name, eta, payload: always stored
_V1_LEN = 18                     # 0.1.0 stored the first 18 fields, version (1) last
_FLOW_AT = 21                    # queue: the first field of flow control
_HISTORY_AT = 26                 # history (issue 26)
_BATCH_AT = 27                   # batch (issue 23)
_ABORT_AT = 28                   # abort (issue 23)
_PROGRESS_AT = 29                # progress (issue 23)
_DEPS_AT = 30                    # depends_on (issue 23)
# Where an encoded record may end (the fields after the cut hold their defaults): after
# misfire_grace; before version (never 18: that is v1); before the flow fields (a running record
# with a lease); before the history (a task of flow control not yet run); before the batch (a
# task that ran, of no batch); before the abort (a member of a batch); before the progress;
# before the dependencies.
_CUTS = (9, 17, _FLOW_AT, _HISTORY_AT, _BATCH_AT, _ABORT_AT, _PROGRESS_AT, _DEPS_AT)
_TAILS = tuple((cut, _DEFAULTS[cut:]) for cut in _CUTS)   # sliced once, not per record


#: the fields after ``lease`` of a plain new task: its ``rest`` in :func:`new_task`
PLAIN_REST = _DEFAULTS[_FLOW_AT:]


def new_task(task_id: str, name: str, eta: float, payload: bytes, created: float, retries: int,
             retry_delay: float, misfire_grace: Optional[float], timeout: Optional[float],
             rest: tuple = PLAIN_REST) -> TaskRecord:
    """A new PENDING record, built positionally: ``delay()`` makes one per task, and this is
    about twice as fast as the keyword constructor.  ``rest``: the fields after ``lease``
    (queue, priority, limits, first_call, max_wait, history, batch, abort, progress, depends_on,
    waiting, takes_result, given), all given, so that a plain task's record costs one
    concatenation."""
    return tuple.__new__(TaskRecord, (task_id, name, eta, payload, PENDING, created, retries,
                                      retry_delay, misfire_grace, 0, 0, None, None, None, None,
                                      None, None, RECORD_VERSION, 0, timeout, None) + rest)


def call_of(payload: bytes) -> tuple[Any, Any, Optional[dict[str, str]]]:
    """``(args, kwargs, trace)`` of a task's payload: the pickle of ``(args, kwargs)``, or of
    ``(args, kwargs, trace)`` when it was enqueued inside an OpenTelemetry span (the trace
    context's fields: timewheel/tracing.py).  Raises what a damaged payload raises."""
    args, kwargs, *rest = pickle.loads(payload)
    return args, kwargs, (rest[0] if rest else None)


def encode_record(rec: TaskRecord) -> bytes:
    """A pickle of the record's fields as a plain tuple, without trailing fields that hold
    their default -- most of a new task's (a batch of a million writes 20 MB less).  The cut
    is found with a few tuple comparisons, done in C, rather than a loop over the fields."""
    for cut, tail in _TAILS:
        if rec[cut:] == tail:
            return pickle.dumps(rec[:cut], pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(rec[:], pickle.HIGHEST_PROTOCOL)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only plain data is read")


def load_plain(blob: bytes) -> Any:
    """Unpickle ``blob`` if it holds plain data only (numbers, strings, bytes, containers):
    a pickle that names any global (a class, a function) is refused, so reading a value from
    a store never imports or runs anything.  Raises what a damaged pickle raises."""
    return _PlainUnpickler(io.BytesIO(blob)).load()


_NUMBER = frozenset({int, float})     # exact types: a bool is not a time


def _is_time(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 1e12


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 62


_CHECKS: dict[str, Any] = {
    "id": lambda v: isinstance(v, str) and 0 < len(v) <= 200,
    "name": lambda v: isinstance(v, str) and 0 < len(v) <= 500,
    "eta": _is_time, "created": _is_time, "retry_delay": _is_time,
    "payload": lambda v: isinstance(v, bytes),
    "status": lambda v: v in STATUSES,
    "retries": _is_int, "attempts": _is_int, "crashes": _is_int, "version": _is_int, "rev": _is_int,
}
_OPTIONAL: dict[str, Any] = {
    "misfire_grace": _is_time, "started": _is_time, "finished": _is_time, "timeout": _is_time,
    "lease": _is_time, "owner": lambda v: isinstance(v, str), "error": lambda v: isinstance(v, str),
    "traceback": lambda v: isinstance(v, str), "result": lambda v: isinstance(v, bytes),
    "first_call": _is_time, "max_wait": _is_time,
    "batch": lambda v: type(v) is str and 0 < len(v) <= 200, "abort": _is_time,
    "progress": lambda v: is_progress(v),
    "given": lambda v: isinstance(v, bytes),
}
_CHECKS.update({
    "queue": lambda v: type(v) is str and 0 < len(v) <= 64 and ":" not in v,
    "priority": lambda v: type(v) is int and -100 <= v <= 100,
    "limits": lambda v: _are_limits(v),
    "history": lambda v: _is_history(v),
    "depends_on": lambda v: _are_ids(v),
    "waiting": lambda v: type(v) is int and 0 <= v <= MAX_DEPENDENCIES,
    "takes_result": lambda v: type(v) is bool,
})
_OUTCOMES = frozenset(ATTEMPT_OUTCOMES)


def _is_history(v: Any) -> bool:
    """A record's history: up to HISTORY Attempt tuples of plain values."""
    return type(v) is tuple and len(v) <= HISTORY and all(
        type(a) is tuple and len(a) == 7 and _is_int(a[0]) and _is_time(a[1])
        and (a[2] is None or _is_time(a[2])) and (a[3] is None or _is_time(a[3]))
        and (a[4] is None or type(a[4]) is str and len(a[4]) <= 500) and a[5] in _OUTCOMES
        and (a[6] is None or type(a[6]) is str and len(a[6]) <= ERROR_CHARS) for a in v)


def is_progress(v: Any) -> bool:
    """A record's progress: (done, total, note, at) of plain values, as progress_value makes."""
    return (type(v) is tuple and len(v) == 4 and type(v[0]) in _NUMBER and 0 <= v[0] <= 1e15
            and (v[1] is None or type(v[1]) in _NUMBER and 0 < v[1] <= 1e15)
            and type(v[2]) is str and len(v[2]) <= MAX_NOTE and _is_time(v[3]))


def progress_to_json(progress: Optional[tuple]) -> Optional[str]:
    """A progress as JSON text (None for none): how a store keeps it beside a record (the Redis
    hash's ``pg`` field, PostgreSQL's ``progress`` column)."""
    return None if progress is None else json.dumps(progress, allow_nan=False, separators=(",", ":"))


def progress_from_json(text: Any) -> Any:
    """The inverse of :func:`progress_to_json`; what is not such text is returned as it is,
    for the record's check to name."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text
    return tuple(value) if type(value) is list else text


def history_to_json(history: tuple) -> Optional[str]:
    """A history as JSON text (None for none): how a store without record blobs keeps it
    (PostgreSQL's ``history`` column)."""
    return json.dumps(history, allow_nan=False, separators=(",", ":")) if history else None


def history_from_json(text: Any) -> Any:
    """The inverse of :func:`history_to_json`; anything that is not such text is returned as
    it is, for the record's check to name."""
    if text is None:
        return ()
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text
    return tuple(tuple(a) for a in value) if type(value) is list and all(type(a) is list for a in value) \
        else text


def _are_ids(v: Any) -> bool:
    """A record's dependencies: up to MAX_DEPENDENCIES task ids."""
    return type(v) is tuple and len(v) <= MAX_DEPENDENCIES and all(
        type(i) is str and 0 < len(i) <= 200 for i in v)


def _are_limits(v: Any) -> bool:
    """A record's limits: up to 8 (key, concurrency, rate, per) tuples of plain values."""
    return type(v) is tuple and len(v) <= 8 and all(
        type(x) is tuple and len(x) == 4 and type(x[0]) is str and 0 < len(x[0]) <= 500
        and type(x[1]) is int and 0 <= x[1] <= 1_000_000 and type(x[2]) is int and 0 <= x[2] <= 1_000_000
        and type(x[3]) in _NUMBER and 0 <= x[3] <= 1e7 for x in v)


def _plausible(id: Any, name: Any, eta: Any, payload: Any, status: Any, created: Any, retries: Any,
               retry_delay: Any, misfire_grace: Any, attempts: Any, crashes: Any, started: Any,
               finished: Any, owner: Any, error: Any, traceback: Any, result: Any, version: Any,
               rev: Any, timeout: Any, lease: Any, queue: Any, priority: Any, limits: Any,
               first_call: Any, max_wait: Any, history: Any, batch: Any, abort: Any, progress: Any,
               depends_on: Any, waiting: Any, takes_result: Any, given: Any) -> bool:
    """Every check of ``_CHECKS`` and ``_OPTIONAL`` in one expression: a claim decodes every
    task it takes, and the loop over them costs 5 us a record, this 1 us.  (A pickle cannot
    make subclasses here -- find_class is refused -- so exact types are what isinstance saw;
    a comparison with NaN or infinity is False, as isfinite was.)  False is explained field
    by field by that loop."""
    n, t = _NUMBER, 1e12
    return (type(id) is str and 0 < len(id) <= 200 and type(name) is str and 0 < len(name) <= 500
            and type(eta) in n and -t <= eta <= t and type(payload) is bytes and status in STATUSES
            and type(created) in n and -t <= created <= t
            and type(retries) is int and 0 <= retries < 2 ** 62
            and type(retry_delay) in n and -t <= retry_delay <= t
            and (misfire_grace is None or type(misfire_grace) in n and -t <= misfire_grace <= t)
            and type(attempts) is int and 0 <= attempts < 2 ** 62
            and type(crashes) is int and 0 <= crashes < 2 ** 62
            and (started is None or type(started) in n and -t <= started <= t)
            and (finished is None or type(finished) in n and -t <= finished <= t)
            and (owner is None or type(owner) is str) and (error is None or type(error) is str)
            and (traceback is None or type(traceback) is str) and (result is None or type(result) is bytes)
            and type(version) is int and 0 <= version < 2 ** 62 and type(rev) is int and 0 <= rev < 2 ** 62
            and (timeout is None or type(timeout) in n and -t <= timeout <= t)
            and (lease is None or type(lease) in n and -t <= lease <= t)
            and (queue == "default" and priority == 0 and type(priority) is int and limits == ()
                 and first_call is None
                 and max_wait is None or _flow_plausible(queue, priority, limits, first_call, max_wait))
            and (history == () or _is_history(history))
            and (batch is None or type(batch) is str and 0 < len(batch) <= 200)
            and (abort is None or type(abort) in n and -t <= abort <= t)
            and (progress is None or is_progress(progress))
            and (depends_on == () and waiting == 0 and type(waiting) is int and takes_result is False
                 and given is None or _deps_plausible(depends_on, waiting, takes_result, given)))


def _deps_plausible(depends_on: Any, waiting: Any, takes_result: Any, given: Any) -> bool:
    return (_are_ids(depends_on) and _CHECKS["waiting"](waiting) and type(takes_result) is bool
            and (given is None or type(given) is bytes))


def _flow_plausible(queue: Any, priority: Any, limits: Any, first_call: Any, max_wait: Any) -> bool:
    return (_CHECKS["queue"](queue) and _CHECKS["priority"](priority) and _are_limits(limits)
            and (first_call is None or _is_time(first_call)) and (max_wait is None or _is_time(max_wait)))


def decode_record(blob: Any) -> TaskRecord:
    """Decode a stored record without importing or running anything, checking every field.

    Raises :class:`RecordDecodeError` naming what is wrong.  Reads records written by
    timewheel 0.1.0 (version 1) too.
    """
    if not isinstance(blob, bytes):
        raise RecordDecodeError(f"not a timewheel record (a {type(blob).__name__}, not bytes)")
    if len(blob) > MAX_RECORD_BYTES:
        raise RecordDecodeError(f"not a timewheel record ({len(blob)} bytes, more than any record)")
    try:
        values = _PlainUnpickler(io.BytesIO(blob)).load()     # load_plain, inline: a claim decodes each
    except Exception as exc:  # noqa: BLE001 - hostile input can raise anything
        raise RecordDecodeError(f"not a timewheel record ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(values, tuple):
        raise RecordDecodeError("not a timewheel record (unexpected shape)")
    if not _REQUIRED <= len(values) <= len(_FIELD_NAMES) or (len(values) == _V1_LEN and values[-1] != 1
                                                            and values[-1] != RECORD_VERSION):
        raise RecordDecodeError("not a timewheel record (unexpected shape)")
    return record_from_fields(values + _DEFAULTS[len(values):])   # fields left out: defaults


def record_from_fields(values: tuple) -> TaskRecord:
    """A record from all its fields in order (as decoded, or as a store keeps them in columns),
    each checked as :func:`decode_record` checks them; RecordDecodeError names a wrong one.
    A store without flow control's columns gives the fields before them: those hold their
    defaults (queue "default", priority 0, no limits)."""
    if len(values) == _FLOW_AT:
        values = tuple(values) + _DEFAULTS[_FLOW_AT:]
    elif len(values) in (_BATCH_AT, _ABORT_AT, _PROGRESS_AT, _DEPS_AT):   # without the batch, ...
        values = tuple(values) + _DEFAULTS[len(values):]
    elif len(values) == _FLOW_AT + 1:           # the same with the history (PostgreSQL)
        values = (tuple(values[:_FLOW_AT]) + _DEFAULTS[_FLOW_AT:_HISTORY_AT] + (values[_FLOW_AT],)
                  + _DEFAULTS[_HISTORY_AT + 1:])
    if len(values) != len(_FIELD_NAMES):
        raise RecordDecodeError("not a timewheel record (unexpected shape)")
    if not _plausible(*values):
        for name, value in zip(_FIELD_NAMES, values):
            check = _CHECKS.get(name)
            ok = check(value) if check is not None else (value is None or _OPTIONAL[name](value))
            if not ok:
                raise RecordDecodeError(f"not a timewheel record (field {name} holds "
                                        f"{type(value).__name__} {_short(value)})")
    rec = TaskRecord._make(values)
    if rec.version > RECORD_VERSION:
        raise RecordDecodeError(
            f"record version {rec.version} is newer than this timewheel understands ({RECORD_VERSION})")
    if rec.version < RECORD_VERSION:
        rec = rec._replace(version=RECORD_VERSION)
    return rec


def _short(value: Any) -> str:
    # Never repr() a container of a hostile record: a few hundred bytes of pickle can hold a
    # DAG of shared lists whose repr has billions of characters.
    if isinstance(value, int) and not -10 ** 18 < value < 10 ** 18:
        return "(a huge int)"
    if isinstance(value, (str, bytes, int, float)) or value is None:
        text = repr(value[:60] if isinstance(value, (str, bytes)) else value)
        return text if len(text) <= 60 else text[:57] + "..."
    return "(a container)"
