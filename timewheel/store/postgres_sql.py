"""The SQL of the PostgreSQL store: its schema, the functions every change goes through, and the
migrations between versions (see :mod:`timewheel.store.postgres` for how they are used).

Every change of the store is one call of a PL/pgSQL function of the schema, so that it is one
statement: atomic, one round trip, and -- through any connection, the application's own included
-- with its plans cached inside the function, not in prepared statements that a pooler in
transaction mode (PgBouncer) would lose.  The functions only *move* tasks and keep the counters
right; what a task becomes (retry, backoff, crash requeue, ...) is decided in Python by
:mod:`timewheel.records` and handed in whole.  The one transition applied here is a claim's
(running, owner, lease, started, ``attempts + 1``, ``rev + 1``), because only the server may say
what is due now; the store rebuilds the same record in Python from the old one the function
returns, through :func:`timewheel.records.start_run`.

Conventions:

* Time is the server's: ``clock_timestamp()`` read once per call, as unix seconds (``float8``)
  and whole microseconds (``bigint``, exact).  A task is claimed only once ``eta_us`` (its eta
  rounded up to a microsecond) is not after the server's microsecond *and* its eta is not after
  the server's seconds: never early, not even by a rounding.
* A task is **ready** (claimable once due) when it is pending and its tick is within the
  horizon -- decided when a claim reads it, not stored: a task committed by a transaction that
  stayed open while the wheel turned past its tick is ready the moment it commits.  The one
  stored exception is ``ready``: an advance that stops within a tick (its ``limit``) marks the
  tasks of that tick it made ready.
* Counters (tasks per status and name, pending tasks per tick and name) are kept as deltas that
  writers only *insert* (``counts_delta``: no row is ever updated by two transactions, so an
  application's long transaction that enqueues holds no lock anyone else waits for); the ticking
  process folds them into ``counts`` when it advances the wheel.  Readers add both.
* A running task whose lease is live can be changed only by its owner (``swap``'s ``p_me``):
  a lease renewed by its owner an instant before the recovery read it expired must win, as it
  does on Redis, where scripts run one at a time.
* No temporary tables, no session advisory locks, no ``SET`` outside a function: nothing a
  connection pooler in transaction mode would break.
"""

from __future__ import annotations

from typing import Sequence

from .postgres_flow_sql import flow_functions, flow_schema
from .postgres_inbox import schema as inbox_schema
from .rules import NOTES

__all__ = ["FORMAT", "VERSION", "RECORD_COLUMNS", "ROW_COLUMNS", "WRITE_COLUMNS", "migration", "channel"]

FORMAT = "timewheel-postgres/1"
#: the schema's version; :func:`migration` brings an older one here.  2: the tasks' attempt
#: history, the processes' reports, the serializer (issue 26); 3: flow control (issue 21);
#: 4: batches, and aborting a running task (issue 23), and the inbox other tools enqueue
#: through (issue 26)
VERSION = 4

#: the columns of a task row in the order of :class:`~timewheel.records.TaskRecord`'s fields
RECORD_COLUMNS = ("id", "name", "eta", "payload", "status", "created", "retries", "retry_delay",
                  "misfire_grace", "attempts", "crashes", "started", "finished", "owner", "error",
                  "traceback", "result", "version", "rev", "timeout", "lease",
                  "queue", "priority", "limits", "first_call", "max_wait", "history")
#: what reads of a task row select: the record's columns, then its batch, abort and progress,
#: and its dependencies (issue 23)
ROW_COLUMNS = RECORD_COLUMNS + ("batch", "abort", "progress", "depends_on", "waiting", "takes_result",
                               "given")

#: what a write hands in per task (arrays, one element per task): the record's columns and
#: where it goes (``eta_us``, ``tick``, ``finished_ms``), with their SQL types
WRITE_COLUMNS = (
    ("id", "text"), ("name", "text"), ("status", "text"), ("eta", "float8"), ("eta_us", "bigint"),
    ("tick", "bigint"), ("payload", "bytea"), ("created", "float8"), ("retries", "bigint"),
    ("retry_delay", "float8"), ("misfire_grace", "float8"), ("attempts", "bigint"),
    ("crashes", "bigint"), ("started", "float8"), ("finished", "float8"), ("finished_ms", "bigint"),
    ("owner", "text"), ("error", "text"), ("traceback", "text"), ("result", "bytea"),
    ("version", "int"), ("rev", "bigint"), ("timeout", "float8"), ("lease", "float8"),
    ("queue", "text"), ("priority", "int"), ("limits", "text"), ("first_call", "float8"),
    ("max_wait", "float8"), ("history", "text"), ("batch", "text"), ("abort", "float8"),
    ("progress", "text"),
    # dependencies (issue 23): the ids as JSON text, those not succeeded yet, then, its result
    ("depends_on", "text"), ("waiting", "int"), ("takes_result", "boolean"), ("given", "bytea"),
)

_FINISHED = "('succeeded', 'failed', 'cancelled', 'misfired', 'aborted')"
_STATUSES = "('pending', 'running', 'succeeded', 'failed', 'cancelled', 'misfired', 'aborted', 'broken')"


#: the SQLSTATE of a swap refused because tasks wait for an outcome it writes (issue 23)
DEPENDENTS_WAIT = "TW023"
#: where a write puts a task: parked as '~deps' while it waits for its dependencies
_WAITING = "CASE WHEN i.status = 'pending' AND i.waiting > 0 THEN '~deps' END"


def channel(schema: str) -> str:
    """The NOTIFY channel of a schema's store (one per database and schema)."""
    return f"timewheel.{schema}"


def _q(schema: str) -> str:
    """``schema`` as a quoted identifier (the name is checked by the store: letters, digits, _)."""
    return '"' + schema.replace('"', '""') + '"'


# -- the pieces the functions share ----------------------------------------------------------------

def _params() -> str:
    """The write functions' array parameters: ``a_expect`` (the rev each task must have now;
    NULL: it must not exist) and one array per write column."""
    return ", ".join(["a_expect bigint[]"] + [f"a_{c} {t}[]" for c, t in WRITE_COLUMNS])


def _args() -> str:
    return ", ".join(["a_expect"] + [f"a_{c}" for c, _ in WRITE_COLUMNS])


def _value(c: str, prefix: str = "") -> str:
    """Input column ``c`` as the table stores it (limits arrive as json text)."""
    return f"{prefix}{c}::jsonb" if c == "limits" else f"{prefix}{c}"


def _input() -> str:
    """The tasks handed in, as rows ``i`` (with ``k``, their 1-based position)."""
    arrays = ", ".join(["a_expect"] + [f"a_{c}" for c, _ in WRITE_COLUMNS])
    cols = ", ".join(["expect"] + [c for c, _ in WRITE_COLUMNS] + ["k"])
    return f"unnest({arrays}) WITH ORDINALITY AS i({cols})"


_NOW = """
  ts timestamptz := clock_timestamp();
  now_s float8 := extract(epoch FROM ts)::float8;
  now_us bigint := (extract(epoch FROM ts) * 1000000)::bigint;"""


def _counted(rows: str, sign: str) -> str:
    """``(status, name, tick, n)`` of ``rows`` (a relation with status, name, tick): per task
    ``sign``, the tick kept for pending ones only."""
    return (f"SELECT status, name, CASE WHEN status = 'pending' THEN tick ELSE 0 END AS tick, "
            f"{sign}::bigint AS n FROM {rows}")


def _schema(s: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE {s}.meta (
  id int PRIMARY KEY CHECK (id = 1),
  format text NOT NULL,
  version int NOT NULL,
  store_id text NOT NULL,          -- names this store: a write through an application's
                                   -- connection checks it reaches the store it means
  slots int NOT NULL,
  tick float8 NOT NULL,
  horizon bigint NOT NULL,         -- ticks <= horizon are ready
  leader text,                     -- the last process that advanced the wheel ...
  advanced_at float8,              -- ... and when (the server's clock)
  role text,                       -- the ticking role: its holder ...
  role_until float8                -- ... until then, unless renewed
)""",
        f"""CREATE TABLE {s}.tasks (
  id text COLLATE "C" PRIMARY KEY,
  name text COLLATE "C" NOT NULL,
  status text NOT NULL CONSTRAINT tasks_status_check CHECK (status IN {_STATUSES}),
  eta float8 NOT NULL,
  eta_us bigint NOT NULL,          -- ceil(eta * 1e6): compared with the server's microsecond
  tick bigint NOT NULL,            -- the wheel's tick of eta
  ready boolean NOT NULL DEFAULT false,   -- made ready by an advance that stopped within its tick
  payload bytea NOT NULL,
  created float8 NOT NULL,
  retries bigint NOT NULL,
  retry_delay float8 NOT NULL,
  misfire_grace float8,
  attempts bigint NOT NULL,
  crashes bigint NOT NULL,
  started float8,
  finished float8,
  finished_ms bigint,              -- round(finished * 1000): the order of finished tasks
  owner text,
  error text,
  traceback text,
  result bytea,
  version int NOT NULL,
  rev bigint NOT NULL,             -- bumped at every change; a claim's rev is its fencing token
  timeout float8,
  lease float8                     -- running: the lease's deadline (the server's clock)
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
        autovacuum_analyze_scale_factor = 0.02)""",
        # the claim's path: pending tasks in due order (finished ones never enter it)
        f"CREATE INDEX tasks_due ON {s}.tasks (eta_us, id) WHERE status = 'pending'",
        f"CREATE INDEX tasks_flagged ON {s}.tasks (tick, eta_us, id) WHERE status = 'pending' AND ready",
        f"CREATE INDEX tasks_leases ON {s}.tasks (lease) WHERE status = 'running'",
        f"CREATE INDEX tasks_finished ON {s}.tasks (status, finished_ms, id) WHERE status IN {_FINISHED}",
        f"CREATE INDEX tasks_broken ON {s}.tasks (id) WHERE status = 'broken'",
        # counters: folded totals, and the deltas writers insert (see the module docstring)
        f"""CREATE TABLE {s}.counts (
  status text NOT NULL, name text COLLATE "C" NOT NULL, tick bigint NOT NULL, n bigint NOT NULL,
  PRIMARY KEY (status, name, tick)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)""",
        f"CREATE INDEX counts_ticks ON {s}.counts (tick) WHERE status = 'pending'",
        f"""CREATE TABLE {s}.counts_delta (
  status text NOT NULL, name text COLLATE "C" NOT NULL, tick bigint NOT NULL, n bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)""",
        # heartbeats: a process is alive while its row has not expired (the server's clock)
        f"""CREATE TABLE {s}.alive (
  token text PRIMARY KEY, expires float8 NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200)""",
    ]


def _batch_schema(s: str) -> list[str]:
    """Batches (issue 23): a column naming each member's batch; a row per batch with its
    members per class, changed by the transaction that changes a member (a row lock: the
    outcomes of one batch's members commit one after the other, so exactly one sees it
    finish); its callbacks' rows, copied into the tasks when it does; its members in order."""
    return [
        f'ALTER TABLE {s}.tasks ADD COLUMN batch text COLLATE "C"',
        # aborting a running task (issue 23): when it was asked for (NULL: never), and the
        # status it ends with, finished like the others; a run's last progress (JSON text)
        f"ALTER TABLE {s}.tasks ADD COLUMN abort float8",
        f"ALTER TABLE {s}.tasks ADD COLUMN progress text",
        f"ALTER TABLE {s}.tasks DROP CONSTRAINT IF EXISTS tasks_status_check",
        f"ALTER TABLE {s}.tasks ADD CONSTRAINT tasks_status_check CHECK (status IN {_STATUSES})",
        f"DROP INDEX IF EXISTS {s}.tasks_finished",
        f"CREATE INDEX tasks_finished ON {s}.tasks (status, finished_ms, id) WHERE status IN {_FINISHED}",
        # dependencies (issue 23, timewheel/deps.py): a waiting task is parked as '~deps' (never
        # claimed); deps holds (dependency, dependent), open while it waits for that outcome
        f"ALTER TABLE {s}.tasks ADD COLUMN depends_on text, ADD COLUMN waiting int NOT NULL DEFAULT 0, "
        "ADD COLUMN takes_result boolean NOT NULL DEFAULT false, ADD COLUMN given bytea",
        f"""CREATE TABLE {s}.deps (dep text COLLATE "C" NOT NULL, task text COLLATE "C" NOT NULL,
  open boolean NOT NULL DEFAULT true, seq bigserial, PRIMARY KEY (dep, task))""",
        f"CREATE INDEX deps_open ON {s}.deps (dep) WHERE open",
        f"""CREATE TABLE {s}.batches (
  id text COLLATE "C" PRIMARY KEY,
  created float8 NOT NULL,
  done float8,                     -- when its callbacks were added (NULL: not yet)
  open bigint NOT NULL DEFAULT 0, succeeded bigint NOT NULL DEFAULT 0, failed bigint NOT NULL DEFAULT 0,
  cancelled bigint NOT NULL DEFAULT 0, misfired bigint NOT NULL DEFAULT 0, aborted bigint NOT NULL DEFAULT 0
)""",
        f"CREATE INDEX batches_created ON {s}.batches (created)",
        f"CREATE INDEX batches_stalled ON {s}.batches (id) WHERE done IS NULL AND open <= 0",
        f"""CREATE TABLE {s}.batch_callbacks (
  of_batch text COLLATE "C" NOT NULL, event text NOT NULL,
  {", ".join(f"{c} {t}" for c, t in WRITE_COLUMNS)},
  PRIMARY KEY (of_batch, event)
)""",
        f"""CREATE TABLE {s}.members (
  batch text COLLATE "C" NOT NULL, seq bigint NOT NULL, id text COLLATE "C" NOT NULL,
  PRIMARY KEY (batch, seq)
)""",
        f"CREATE INDEX members_id ON {s}.members (id)",
    ]


def _batch_functions(s: str) -> list[str]:
    cols = ", ".join(c for c, _ in WRITE_COLUMNS)
    # the callbacks' rows keep what a write hands in (limits as JSON text); the task row's types
    picked = ", ".join(f"{c}::jsonb" if c == "limits" else c for c, _ in WRITE_COLUMNS)
    sums = ", ".join(f"{c} = {c} + CASE WHEN x.c = '{c}' THEN x.d ELSE 0 END"
                     for c in ("open", "succeeded", "failed", "cancelled", "misfired", "aborted"))
    return [
        # A batch with no open member that is not done: done now, its applicable callbacks
        # added where their ids are free (batches.events' twin).  Returns the callbacks added.
        f"""CREATE OR REPLACE FUNCTION {s}.finish_batch(p_batch text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE{_NOW}
  bad boolean; added bigint;
BEGIN
  UPDATE {s}.batches SET done = now_s WHERE id = p_batch AND done IS NULL AND open <= 0
  RETURNING failed + cancelled + misfired + aborted > 0 INTO bad;
  IF NOT FOUND THEN RETURN 0; END IF;
  WITH ins AS (
    INSERT INTO {s}.tasks ({cols}) SELECT {picked} FROM {s}.batch_callbacks c
    WHERE c.of_batch = p_batch
      AND c.event IN ('on_complete', CASE WHEN bad THEN 'on_failure' ELSE 'on_success' END)
    ON CONFLICT (id) DO NOTHING RETURNING status, name, tick),
  cnt AS (INSERT INTO {s}.counts_delta (status, name, tick, n) {_counted("ins", "1")})
  SELECT count(*) INTO added FROM ins;
  RETURN added;            -- (no NOTIFY: this may run in an application's transaction; the
                           -- runners look once a tick)
END $$""",
        # Members changed (old batch and status, new batch and status of each): their batches'
        # counts follow, in batch order (no deadlock between two writers), and a batch left
        # with no open member is finished (batches.moves' twin).
        f"""CREATE OR REPLACE FUNCTION {s}.batch_moved(a_ob text[], a_os text[], a_nb text[], a_ns text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  x record; b text;
BEGIN
  FOR x IN
    SELECT y.b, y.c, sum(y.d) AS d FROM (
      SELECT u.ob AS b, CASE WHEN u.os IN ('pending', 'running') THEN 'open' ELSE u.os END AS c, -1 AS d
      FROM unnest(a_ob, a_os) AS u(ob, os) WHERE u.ob IS NOT NULL
      UNION ALL
      SELECT u.nb, CASE WHEN u.ns IN ('pending', 'running') THEN 'open' ELSE u.ns END, 1
      FROM unnest(a_nb, a_ns) AS u(nb, ns) WHERE u.nb IS NOT NULL) y
    GROUP BY y.b, y.c HAVING sum(y.d) <> 0 ORDER BY y.b, y.c
  LOOP
    UPDATE {s}.batches SET {sums} WHERE id = x.b;
  END LOOP;
  FOR b IN SELECT DISTINCT u.x FROM unnest(a_ob || a_nb) AS u(x) WHERE u.x IS NOT NULL ORDER BY 1 LOOP
    PERFORM {s}.finish_batch(b);
  END LOOP;
END $$""",
        # Notes on a running task: its abort asked for, its progress (each NULL: left as it is),
        # while it runs at p_rev, the rev left alone (the run's fence, its lease and its outcome
        # stay valid: WheelStore.note)
        f"""CREATE OR REPLACE FUNCTION {s}.note(p_id text, p_rev bigint, p_abort float8, p_progress text)
RETURNS boolean LANGUAGE sql AS $$
  WITH u AS (UPDATE {s}.tasks SET abort = coalesce(p_abort, abort), progress = coalesce(p_progress, progress)
             WHERE id = p_id AND rev = p_rev AND status = 'running' RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM u) $$""",
    ]


def _set(c: str) -> str:
    """The assignment of column ``c`` in a compare-and-set: the record's value, but a note the
    record does not set is kept while the task stays running (rules.kept_notes' twin)."""
    if c in NOTES:
        return (f"{c} = CASE WHEN t.status = 'running' AND i.status = 'running' "
                f"THEN coalesce(i.{c}, t.{c}) ELSE i.{c} END")
    return f"{c} = {_value(c, 'i.')}"


def _functions(s: str) -> list[str]:
    inp, params, args = _input(), _params(), _args()
    cols = ", ".join(c for c, _ in WRITE_COLUMNS)
    values = ", ".join(_value(c) for c, _ in WRITE_COLUMNS)
    sets = ", ".join(_set(c) for c, _ in WRITE_COLUMNS if c != "id")
    out_cols = _out_cols()
    return [
        # -- writes of whole records -------------------------------------------------------------
        # Compare-and-set: store each task whose row is still at rev a_expect (a live lease is
        # changed by its owner only); the ids written.  Rows are locked in id order (no
        # deadlock between two batches).
        # A task with limits that stops running frees its slots, one that stops pending passes
        # on a slot freed for it (let_go: store/postgres_flow_sql.py); with p_channel, the
        # runners are woken when that let parked tasks in.
        f"""CREATE OR REPLACE FUNCTION {s}.swap(p_me text, {params}, p_channel text DEFAULT NULL)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE{_NOW}
  done text[]; gone jsonb; m_ob text[]; m_os text[]; m_nb text[]; m_ns text[];
BEGIN
  WITH i AS (SELECT * FROM {inp}),
  cur AS (
    SELECT t.id, t.status, t.name, t.tick, t.limits, t.batch FROM {s}.tasks t
    JOIN i ON t.id = i.id AND t.rev = i.expect
    WHERE t.status <> 'running' OR t.lease IS NULL OR t.lease <= now_s OR t.owner = p_me
    ORDER BY t.id FOR UPDATE OF t),
  upd AS (
    UPDATE {s}.tasks t SET {sets}, ready = false, parked = {_WAITING} FROM i JOIN cur ON cur.id = i.id
    WHERE t.id = i.id RETURNING t.id, t.status, t.name, t.tick, t.batch),
  cnt AS (
    INSERT INTO {s}.counts_delta (status, name, tick, n)
    SELECT status, name, tick, sum(n) FROM ({_counted("cur", "-1")} UNION ALL {_counted("upd", "1")}) d
    GROUP BY status, name, tick HAVING sum(n) <> 0)
  SELECT array_agg(upd.id),
         jsonb_agg(jsonb_build_object('id', cur.id, 'was', cur.status, 'limits', cur.limits))
           FILTER (WHERE cur.limits IS NOT NULL AND cur.status IN ('running', 'pending')
                   AND upd.status <> cur.status),
         -- members changed: their batches follow in this transaction (batch_moved)
         array_agg(cur.batch) FILTER (WHERE cur.batch IS NOT NULL OR upd.batch IS NOT NULL),
         array_agg(cur.status) FILTER (WHERE cur.batch IS NOT NULL OR upd.batch IS NOT NULL),
         array_agg(upd.batch) FILTER (WHERE cur.batch IS NOT NULL OR upd.batch IS NOT NULL),
         array_agg(upd.status) FILTER (WHERE cur.batch IS NOT NULL OR upd.batch IS NOT NULL)
  INTO done, gone, m_ob, m_os, m_nb, m_ns FROM upd JOIN cur ON cur.id = upd.id;
  IF gone IS NOT NULL AND {s}.let_go(gone) > 0 AND p_channel IS NOT NULL THEN
    PERFORM pg_notify(p_channel, '');
  END IF;
  IF m_os IS NOT NULL THEN
    PERFORM {s}.batch_moved(m_ob, m_os, m_nb, m_ns);
  END IF;
  -- Dependencies (issue 23): an outcome that tasks wait for is written in the caller's
  -- transaction that changes them too (store/postgres_deps.py), which closes their rows of
  -- deps first; never alone.  (A statement of its own: it sees a row that an add committed
  -- while this one waited for a task's lock.)
  IF done IS NOT NULL AND EXISTS (SELECT FROM {s}.deps e JOIN {s}.tasks t ON t.id = e.dep
                                  WHERE e.dep = ANY(done) AND e.open
                                    AND t.status NOT IN ('pending', 'running', 'broken')) THEN
    RAISE EXCEPTION 'an outcome that tasks wait for' USING ERRCODE = '{DEPENDENTS_WAIT}';
  END IF;
  RETURN QUERY SELECT unnest(done);
END $$""",
        # Add tasks, all or none.  Each must be absent (a_expect NULL) or stored at rev
        # a_expect (a replacement).  Returns (0, whether a task became ready ahead of every
        # other ready one), (k, false) when task k conflicts (nothing written), or (-1, false)
        # when this database's store is not p_store (a connection to another database).
        f"""CREATE OR REPLACE FUNCTION {s}.add(p_store text, {params}, OUT conflict int, OUT ring boolean)
LANGUAGE plpgsql AS $$
DECLARE
  h bigint; tk float8; head bigint; inserted text[]; absent int;
BEGIN
  ring := false;
  SELECT m.horizon, m.tick INTO h, tk FROM {s}.meta m WHERE m.id = 1 AND m.store_id = p_store;
  IF NOT FOUND THEN conflict := -1; RETURN; END IF;
  IF EXISTS (SELECT FROM unnest(a_expect) e WHERE e IS NOT NULL) THEN
    PERFORM FROM {s}.tasks t JOIN {inp} ON t.id = i.id AND t.rev = i.expect ORDER BY t.id FOR UPDATE OF t;
    SELECT min(i.k) INTO conflict FROM {inp} WHERE i.expect IS NOT NULL
      AND NOT EXISTS (SELECT FROM {s}.tasks t WHERE t.id = i.id AND t.rev = i.expect);
    IF conflict IS NOT NULL THEN RETURN; END IF;
  END IF;
  IF EXISTS (SELECT FROM unnest(a_status, a_tick) AS x(status, tick)
             WHERE x.status = 'pending' AND x.tick <= h) THEN
    -- (ahead of the head of its own band: a hint that may ring a little more than needed)
    ring := EXISTS (SELECT FROM unnest(a_status, a_tick, a_eta_us, a_queue, a_priority)
                      AS x(status, tick, eta_us, queue, priority)
                    WHERE x.status = 'pending' AND x.tick <= h AND NOT EXISTS (
                      SELECT FROM {s}.tasks t WHERE t.status = 'pending' AND t.parked IS NULL
                        AND t.queue = x.queue AND t.priority = x.priority
                        AND t.eta_us <= least(x.eta_us, ceil(h * tk * 1000000)::bigint + 1) AND t.tick <= h));
  END IF;
  SELECT count(*) INTO absent FROM unnest(a_expect) e WHERE e IS NULL;
  WITH ins AS (
    INSERT INTO {s}.tasks ({cols}, parked) SELECT {values}, {_WAITING} FROM {inp} WHERE i.expect IS NULL
    ON CONFLICT (id) DO NOTHING RETURNING id)
  SELECT coalesce(array_agg(ins.id), '{{}}') INTO inserted FROM ins;
  IF cardinality(inserted) < absent THEN      -- one was added meanwhile: undo ours
    DELETE FROM {s}.tasks t WHERE t.id = ANY(inserted);
    SELECT min(i.k) INTO conflict FROM {inp} WHERE i.expect IS NULL AND NOT i.id = ANY(inserted);
    ring := false;
    RETURN;
  END IF;
  IF absent > 0 THEN
    INSERT INTO {s}.counts_delta (status, name, tick, n)
    SELECT status, name, tick, sum(n)
    FROM ({_counted(f"(SELECT * FROM {inp} WHERE i.expect IS NULL) a", "1")}) d
    GROUP BY status, name, tick;
  END IF;
  IF absent < cardinality(a_id) THEN      -- (never frees a slot: a running task is not replaced)
    PERFORM count(*) FROM {s}.swap(NULL, {args});
  END IF;
  conflict := 0;
END $$""",
        # add() of one new task (what delay() writes), with its fields as scalars: the hot path,
        # about half the cost of the array form (adapting and unnesting 25 arrays).
        f"""CREATE OR REPLACE FUNCTION {s}.add1(p_store text, p_id text, p_name text, p_eta float8,
  p_eta_us bigint, p_tick bigint, p_payload bytea, p_created float8, p_retries bigint,
  p_retry_delay float8, p_grace float8, p_version int, p_timeout float8,
  OUT conflict int, OUT ring boolean)
LANGUAGE plpgsql AS $$
DECLARE
  h bigint; tk float8; head bigint;
BEGIN
  ring := false;
  SELECT m.horizon, m.tick INTO h, tk FROM {s}.meta m WHERE m.id = 1 AND m.store_id = p_store;
  IF NOT FOUND THEN conflict := -1; RETURN; END IF;
  IF p_tick <= h THEN
    SELECT t.eta_us INTO head FROM {s}.tasks t
    WHERE t.status = 'pending' AND t.parked IS NULL AND t.queue = 'default' AND t.priority = 0
      AND t.eta_us <= ceil(h * tk * 1000000)::bigint + 1 AND t.tick <= h
    ORDER BY t.eta_us, t.id LIMIT 1;
    ring := head IS NULL OR p_eta_us < head;
  END IF;
  INSERT INTO {s}.tasks (id, name, status, eta, eta_us, tick, payload, created, retries, retry_delay,
                         misfire_grace, attempts, crashes, version, rev, timeout)
  VALUES (p_id, p_name, 'pending', p_eta, p_eta_us, p_tick, p_payload, p_created, p_retries,
          p_retry_delay, p_grace, 0, 0, p_version, 0, p_timeout)
  ON CONFLICT (id) DO NOTHING;
  IF NOT FOUND THEN conflict := 1; ring := false; RETURN; END IF;
  INSERT INTO {s}.counts_delta (status, name, tick, n) VALUES ('pending', p_name, p_tick, 1);
  conflict := 0;
END $$""",
        # -- workers ------------------------------------------------------------------------------
        # A worker's round in one transaction: record outcomes (swap), then claim; the claim's
        # last row carries the ids the swap wrote.
        f"""CREATE OR REPLACE FUNCTION {s}.settle(p_me text, {params}, p_owner text, p_own boolean,
  p_start int, p_total int, p_lease float8, p_queues text[], p_channel text)
RETURNS TABLE ({out_cols}, waits boolean, claimed_at float8, deadline float8, next_eta float8,
  swapped text[])
LANGUAGE plpgsql AS $$
DECLARE
  done text[];
BEGIN
  SELECT coalesce(array_agg(x), '{{}}') INTO done FROM {s}.swap(p_me, {args}, p_channel) AS x;
  RETURN QUERY SELECT c.*, CASE WHEN c.id IS NULL THEN done END
  FROM {s}.claim(p_owner, p_own, p_start, p_total, p_lease, p_queues, p_channel) AS c;
END $$""",
        # Extend the leases of tasks the caller still runs; the ids whose lease was lost
        # (recovered, finished elsewhere, or run out: an expired lease is never revived).
        f"""CREATE OR REPLACE FUNCTION {s}.renew(p_owner text, p_ids text[], p_revs bigint[], p_lease float8,
  p_alive float8)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE{_NOW}
BEGIN
  INSERT INTO {s}.alive AS a (token, expires) VALUES (p_owner, now_s + p_alive)
  ON CONFLICT (token) DO UPDATE SET expires = excluded.expires;
  RETURN QUERY
  WITH kept AS (
    UPDATE {s}.tasks t SET lease = now_s + p_lease FROM unnest(p_ids, p_revs) AS u(id, rev)
    WHERE t.id = u.id AND t.rev = u.rev AND t.status = 'running' AND t.owner = p_owner AND t.lease > now_s
    RETURNING t.id)
  SELECT u.id FROM unnest(p_ids) AS u(id) WHERE NOT EXISTS (SELECT FROM kept WHERE kept.id = u.id);
END $$""",
        # -- the ticking process -------------------------------------------------------------------
        # Make ready the pending tasks of ticks <= p_through, oldest first, at most p_limit;
        # raise the horizon as far as that went.  Fenced: while another process holds the
        # ticking role nothing is done (led false).  Also folds the counter deltas.
        f"""CREATE OR REPLACE FUNCTION {s}.advance(p_through bigint, p_limit bigint, p_leader text,
  p_channel text, OUT horizon bigint, OUT moved bigint, OUT complete boolean, OUT led boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE{_NOW}
  m record; c record; reached bigint; marked bigint; room bigint;
BEGIN
  SELECT * INTO m FROM {s}.meta WHERE id = 1 FOR UPDATE;
  horizon := m.horizon; moved := 0; complete := true; led := false;
  IF m.role IS NOT NULL AND m.role <> p_leader AND m.role_until > now_s THEN
    RETURN;
  END IF;
  led := true;
  PERFORM {s}.fold();
  reached := m.horizon;
  IF p_through > m.horizon THEN
    reached := p_through;
    FOR c IN SELECT x.tick, sum(x.n) AS n FROM (
               SELECT d.tick, d.n FROM {s}.counts d WHERE d.status = 'pending' AND d.tick > m.horizon
                 AND d.tick <= p_through) x
             GROUP BY x.tick HAVING sum(x.n) > 0 ORDER BY x.tick LOOP
      marked := 0;
      IF c.tick = m.horizon + 1 THEN      -- a previous call stopped within this tick
        SELECT count(*) INTO marked FROM {s}.tasks t
        WHERE t.status = 'pending' AND t.ready AND t.tick = c.tick;
      END IF;
      IF moved + c.n - marked <= p_limit THEN
        moved := moved + c.n - marked;
      ELSE
        room := p_limit - moved;
        UPDATE {s}.tasks t SET ready = true WHERE t.id IN (
          SELECT u.id FROM {s}.tasks u WHERE u.status = 'pending' AND u.tick = c.tick AND NOT u.ready
          ORDER BY u.eta_us, u.id LIMIT room FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS room = ROW_COUNT;
        moved := moved + room;
        reached := c.tick - 1;
        complete := false;
        EXIT;
      END IF;
    END LOOP;
  END IF;
  horizon := greatest(m.horizon, reached);
  UPDATE {s}.meta SET horizon = advance.horizon, leader = p_leader, advanced_at = now_s WHERE id = 1;
  IF moved > 0 THEN PERFORM pg_notify(p_channel, ''); END IF;
END $$""",
        # Fold the counter deltas into the totals; forget heartbeats long expired.
        f"""CREATE OR REPLACE FUNCTION {s}.fold() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  WITH d AS (DELETE FROM {s}.counts_delta RETURNING status, name, tick, n)
  INSERT INTO {s}.counts AS c (status, name, tick, n)
  SELECT status, name, tick, sum(n) FROM d GROUP BY status, name, tick HAVING sum(n) <> 0
  ON CONFLICT (status, name, tick) DO UPDATE SET n = c.n + excluded.n;
  DELETE FROM {s}.counts WHERE n = 0;
  DELETE FROM {s}.alive WHERE expires < extract(epoch FROM clock_timestamp()) - 86400;
END $$""",
        # Delete up to p_limit finished tasks of p_statuses that finished before p_before (ms).
        f"""CREATE OR REPLACE FUNCTION {s}.purge(p_before bigint, p_limit int, p_statuses text[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE purged bigint;
BEGIN
  WITH gone AS (
    DELETE FROM {s}.tasks t WHERE t.id IN (
      SELECT u.id FROM {s}.tasks u WHERE u.status = ANY(p_statuses) AND u.status IN {_FINISHED}
        AND u.finished_ms < p_before
        AND (u.batch IS NULL OR NOT EXISTS (     -- members are kept until their batch is done
          SELECT FROM {s}.batches b WHERE b.id = u.batch AND b.done IS NULL))
      ORDER BY u.finished_ms, u.id LIMIT p_limit FOR UPDATE SKIP LOCKED)
    RETURNING t.id, t.status, t.name, t.tick),
  cnt AS (
    INSERT INTO {s}.counts_delta (status, name, tick, n)
    SELECT status, name, tick, sum(n) FROM ({_counted("gone", "-1")}) d GROUP BY status, name, tick),
  dep AS (                                  -- their rows of deps (closed: they had finished)
    DELETE FROM {s}.deps e USING gone WHERE e.dep = gone.id)
  SELECT count(*) INTO purged FROM gone;
  RETURN purged;
END $$""",
        # Take or keep the ticking role (and refresh the caller's heartbeat when asked).
        f"""CREATE OR REPLACE FUNCTION {s}.lead(p_token text, p_role_ttl float8, p_alive float8,
  p_refresh boolean) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE{_NOW}
BEGIN
  IF p_refresh THEN
    INSERT INTO {s}.alive AS a (token, expires) VALUES (p_token, now_s + p_alive)
    ON CONFLICT (token) DO UPDATE SET expires = excluded.expires;
  END IF;
  UPDATE {s}.meta SET role = p_token, role_until = now_s + p_role_ttl
  WHERE id = 1 AND (role IS NULL OR role = p_token OR role_until <= now_s);
  RETURN FOUND;
END $$""",
        # Give the role up if the caller holds it; with p_drop also its heartbeat.
        f"""CREATE OR REPLACE FUNCTION {s}.resign(p_token text, p_drop boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE {s}.meta SET role = NULL, role_until = NULL WHERE id = 1 AND role = p_token;
  IF p_drop THEN DELETE FROM {s}.alive WHERE token = p_token; END IF;
END $$""",
        # Set aside a record that cannot be read (kept, listed as broken, never claimed); a
        # running one frees the slots of its limits (it will never record an outcome).
        f"""CREATE OR REPLACE FUNCTION {s}.mark_broken(p_id text, p_reason text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  was text; lims jsonb;
BEGIN
  WITH cur AS (SELECT t.id, t.status, t.name, t.tick, t.limits FROM {s}.tasks t
               WHERE t.id = p_id AND t.status <> 'broken' FOR UPDATE),
  upd AS (UPDATE {s}.tasks t SET status = 'broken', error = p_reason, ready = false, parked = NULL FROM cur
          WHERE t.id = cur.id RETURNING t.status, t.name, t.tick),
  cnt AS (INSERT INTO {s}.counts_delta (status, name, tick, n)
          SELECT status, name, tick, n FROM ({_counted("cur", "-1")} UNION ALL {_counted("upd", "1")}) d)
  SELECT cur.status, cur.limits INTO was, lims FROM cur;
  IF NOT FOUND THEN RETURN false; END IF;
  IF lims IS NOT NULL AND jsonb_typeof(lims) = 'array' AND was IN ('running', 'pending') THEN
    PERFORM {s}.let_go(jsonb_build_array(jsonb_build_object('id', p_id, 'was', was, 'limits', lims)));
  END IF;
  RETURN true;
END $$""",
    ]


_RECORD_TYPES = (
    ("id", "text"), ("name", "text"), ("eta", "float8"), ("payload", "bytea"), ("status", "text"),
    ("created", "float8"), ("retries", "bigint"), ("retry_delay", "float8"),
    ("misfire_grace", "float8"), ("attempts", "bigint"), ("crashes", "bigint"),
    ("started", "float8"), ("finished", "float8"), ("owner", "text"), ("error", "text"),
    ("traceback", "text"), ("result", "bytea"), ("version", "int"), ("rev", "bigint"),
    ("timeout", "float8"), ("lease", "float8"), ("queue", "text"), ("priority", "int"),
    ("limits", "jsonb"), ("first_call", "float8"), ("max_wait", "float8"), ("history", "text"),
    ("batch", "text"), ("abort", "float8"), ("progress", "text"), ("depends_on", "text"),
    ("waiting", "int"), ("takes_result", "boolean"), ("given", "bytea"),
)
assert tuple(c for c, _ in _RECORD_TYPES) == ROW_COLUMNS


def migration(schema: str, version: int) -> list[str]:
    """The statements that bring ``schema`` from ``version`` (0: nothing there) to
    :data:`VERSION`, to run in one transaction after the store's initialisation lock.  The
    functions are (re)defined by every migration: ``CREATE OR REPLACE``."""
    s = _q(schema)
    steps: list[str] = []
    if version < 1:
        steps += _schema(s)
    if version < 2:
        # the attempt history (JSON text, records.history_to_json); the write functions take
        # it and the claims return it
        steps.append(f"ALTER TABLE {s}.tasks ADD COLUMN IF NOT EXISTS history text")
        # the serializer of the tasks' arguments and results (NULL: pickle; timewheel/serialize.py)
        steps.append(f"ALTER TABLE {s}.meta ADD COLUMN IF NOT EXISTS serializer text")
        # the processes' reports (timewheel/processes.py): one row per process, rewritten
        # by its heartbeat
        steps.append(f"CREATE TABLE IF NOT EXISTS {s}.processes (token text COLLATE \"C\" PRIMARY KEY, "
                     "report text NOT NULL)")
    if version < 3:
        steps += flow_schema(s)
    if version < 4:
        steps += _batch_schema(s) + inbox_schema(s)     # and the inbox (issue 26: store/postgres_inbox.py)
    if version >= 1:
        # the functions' signatures and row types change with the columns: the old ones go
        # (CREATE OR REPLACE would add overloads beside them, or refuse another row type)
        steps.append(_drop_functions(schema))
    return (steps + _functions(s) + flow_functions(s, _out_cols(), _nulls(), _record("p."))
            + _batch_functions(s))


def _drop_functions(schema: str) -> str:
    """Drop every function of the schema (redefined right after, in the same transaction)."""
    return f"""DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = '{schema}' LOOP
    EXECUTE 'DROP FUNCTION ' || f::text;
  END LOOP;
END $$"""


def _out_cols() -> str:
    return ", ".join(f"{c} {t}" for c, t in _RECORD_TYPES)


def _nulls() -> str:
    return ", ".join(f"NULL::{t}" for _, t in _RECORD_TYPES)


def _record(prefix: str) -> str:
    return ", ".join(f"{prefix}{c}" for c in ROW_COLUMNS)


def script(schema: str, version: int, *, slots: int, tick: float, horizon: int, store_id: str,
           lock: int) -> Sequence[str]:
    """The whole migration as ``timewheel migrate`` prints it: in one transaction, under the
    initialisation lock, the schema's bookkeeping row created (or its version raised)."""
    s = _q(schema)
    out = ["BEGIN", f"SELECT pg_advisory_xact_lock({lock})"] + migration(schema, version)
    if version < 1:
        out.append(f"INSERT INTO {s}.meta (id, format, version, store_id, slots, tick, horizon) VALUES "
                   f"(1, '{FORMAT}', {VERSION}, '{store_id}', {slots}, {tick!r}, {horizon})")
    else:
        out.append(f"UPDATE {s}.meta SET version = {VERSION} WHERE id = 1")
    return out + ["COMMIT"]
