"""Flow control in the PostgreSQL store (issue 21): the schema it adds (version 2) and the
functions that decide it inside the claim's transaction, on the server's clock -- the twin of
:class:`timewheel.flow.Admission` in PL/pgSQL, as the Redis store's CLAIM script is in Lua.

==================  =============================================================================
``tasks``           gains ``queue``, ``priority``, ``limits`` (jsonb: ``[[key, concurrency, rate,
                    per], ...]``, NULL for none), ``first_call``, ``max_wait`` and ``parked``: the
                    limit key a due task waits for (NULL: not parked)
``tasks_bands``     (queue, priority, eta_us, id) of the pending tasks that are not parked: "the
                    due tasks of these queues, highest priority first, then earliest eta" is one
                    index probe per (queue, priority) band to find the bands, and one range per
                    band -- never a scan of a backlog, parked or not yet due
``tasks_parked``    (parked, priority, eta_us, id): the first tasks parked on a limit
``held``            (limit key, task id): a slot, held from the claim until the outcome (or the
                    requeue of a crashed run) is recorded, in the transaction that records it
``starts``          (limit key, at): starts of rate-limited tasks, microseconds of the server's
                    clock, kept a second past their window
``limits``          limit key -> its last seen concurrency, rate, window, and ``reopen``: when its
                    closed rate window lets its parked tasks back in (us; NULL: a freed slot does)
``paused``          the paused queues
``serving``         what each started process claims (its token -> queues, NULL: every queue)
==================  =============================================================================

Atomicity: everything a claim reads and writes about one limit happens under a transaction
advisory lock on the key's hash (``pg_advisory_xact_lock``: released at commit, nothing a
pooler in transaction mode breaks).  A claim only *tries* it (a candidate whose limit another
transaction holds this instant is left ready, and looked at again 10 ms later), and locks task
rows with ``SKIP LOCKED``: a claim never waits, so it is in no deadlock.  An outcome that frees
a slot (``swap``) waits for the lock, after its task rows, taking the keys in hash order.  Two
claims racing therefore count each other's slots and starts (each statement after the lock
sees what the previous holder committed), and a slot freed while a claim parks a task is freed
after that claim committed, so the freed slot lets the parked task in: no parked task waits
for a slot nobody will free.
"""

from __future__ import annotations

__all__ = ["flow_schema", "flow_functions", "BAND_PAGE", "BANDS"]

#: the due, unparked tasks of one band after a mark (the claim's read; EXPLAINed by the tests)
BAND_PAGE = """SELECT t.id, t.eta_us, t.limits FROM @s.tasks t
      WHERE t.status = 'pending' AND t.parked IS NULL AND t.queue = @q AND t.priority = @p
        AND t.eta_us <= @now_us AND t.eta <= @now_s AND ((t.tick <= @h AND t.eta_us <= @hb) OR t.ready)
        AND (@mark_id IS NULL OR (t.eta_us, t.id) > (@mark_eta, @mark_id))
      ORDER BY t.eta_us, t.id LIMIT @n"""

#: the (queue, priority) bands that have pending unparked tasks: a loose index scan, one probe each
BANDS = """WITH RECURSIVE b(queue, priority) AS (
      (SELECT t.queue, t.priority FROM @s.tasks t WHERE t.status = 'pending' AND t.parked IS NULL
       ORDER BY t.queue, t.priority LIMIT 1)
      UNION ALL
      SELECT x.queue, x.priority FROM b CROSS JOIN LATERAL (
        SELECT t.queue, t.priority FROM @s.tasks t WHERE t.status = 'pending' AND t.parked IS NULL
          AND (t.queue, t.priority) > (b.queue, b.priority)
        ORDER BY t.queue, t.priority LIMIT 1) x)
    SELECT b.queue, b.priority FROM b"""


def _fill(sql: str, s: str) -> str:
    return sql.replace("@s", s)


def flow_schema(s: str) -> list[str]:
    """Version 1 -> 2: columns added with constant defaults (no rewrite of the table), new
    tables and indexes."""
    return [_fill(x, s) for x in (
        """ALTER TABLE @s.tasks ADD COLUMN queue text COLLATE "C" NOT NULL DEFAULT 'default',
  ADD COLUMN priority int NOT NULL DEFAULT 0, ADD COLUMN limits jsonb, ADD COLUMN first_call float8,
  ADD COLUMN max_wait float8, ADD COLUMN parked text COLLATE "C\"""",
        "CREATE INDEX tasks_bands ON @s.tasks (queue, priority, eta_us, id) "
        "WHERE status = 'pending' AND parked IS NULL",
        "CREATE INDEX tasks_parked ON @s.tasks (parked, priority DESC, eta_us, id) "
        "WHERE status = 'pending' AND parked IS NOT NULL",
        """CREATE TABLE @s.held (lim text COLLATE "C" NOT NULL, task text COLLATE "C" NOT NULL,
  PRIMARY KEY (lim, task)) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)""",
        """CREATE TABLE @s.starts (lim text COLLATE "C" NOT NULL, at bigint NOT NULL)
  WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)""",
        "CREATE INDEX starts_lim ON @s.starts (lim, at)",
        """CREATE TABLE @s.limits (lim text COLLATE "C" PRIMARY KEY, concurrency int NOT NULL,
  rate int NOT NULL, per float8 NOT NULL, reopen bigint)""",
        "CREATE INDEX limits_reopen ON @s.limits (reopen) WHERE reopen IS NOT NULL",
        'CREATE TABLE @s.paused (queue text COLLATE "C" PRIMARY KEY)',
        """CREATE TABLE @s.serving (token text PRIMARY KEY, queues text[])""",
    )]


def flow_functions(s: str, out_cols: str, nulls: str, record: str) -> list[str]:
    """The functions of flow control; ``out_cols``/``nulls``/``record``: the claim's output
    columns, a row of NULLs of their types, and the record columns of ``p``."""
    claim = CLAIM.replace("@out_cols", out_cols).replace("@nulls", nulls).replace("@record", record)
    lateral = (BAND_PAGE.replace("@q", "b.q").replace("@p", "v_prio").replace("@now_us", "now_us")
            .replace("@now_s", "now_s").replace("@h", "v_h").replace("@hb", "v_hb")
            .replace("@mark_id", "v_mark_id").replace("@mark_eta", "v_mark_eta").replace("@n", "v_page"))
    one = lateral.replace("t.queue = b.q", "t.queue = v_qs[1]")
    claim = claim.replace("@bands_page", lateral).replace("@band_one", one).replace("@bands", BANDS)
    return [_fill(x, s) for x in (USAGE, OPENING, REARM, RELEASE, LET_GO, FORGET, claim)]


# The purge's walk through the limits, a page of them (in key order, after p_after) per call:
# each that holds nothing -- no slot, no parked task, no start left in its window, no window
# to reopen -- is forgotten, so that per-key limits (one per customer) do not pile up (usage()
# writes the spec again when the key comes back).  Also drops what processes gone for an hour
# said they serve (their heartbeat lapsed then; fold() drops that row a day later, and a
# process that has not written its first heartbeat yet has none).  Returns where the walk
# stands: the last key looked at, '' once it went round.
FORGET = """CREATE OR REPLACE FUNCTION @s.forget_idle(p_after text, p_limit int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
  l record; seen int := 0; last text := '';
BEGIN
  DELETE FROM @s.serving v USING @s.alive a
  WHERE a.token = v.token AND a.expires < now_us / 1000000.0 - 3600;
  FOR l IN SELECT m.lim, m.per FROM @s.limits m WHERE m.lim > p_after ORDER BY m.lim LIMIT p_limit LOOP
    seen := seen + 1;
    last := l.lim;
    CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended(l.lim, 0));
    DELETE FROM @s.starts x WHERE x.lim = l.lim AND x.at <= now_us - round(l.per * 1000000)::bigint - 1000000;
    DELETE FROM @s.limits m WHERE m.lim = l.lim AND m.reopen IS NULL
      AND NOT EXISTS (SELECT FROM @s.held h WHERE h.lim = l.lim)
      AND NOT EXISTS (SELECT FROM @s.starts x WHERE x.lim = l.lim)
      AND NOT EXISTS (SELECT FROM @s.tasks t WHERE t.status = 'pending' AND t.parked = l.lim);
  END LOOP;
  RETURN CASE WHEN seen < p_limit THEN '' ELSE last END;
END $$"""

# A limit's usage at a claim, as a jsonb object {ok, run, n, t, c, r, p, per}: ok false when
# another transaction holds the limit now (the candidate is left ready); run: slots held; n:
# starts in its window; t: taken by this claim; c, r, p, per: concurrency, rate, window in us
# and in seconds.
USAGE = """CREATE OR REPLACE FUNCTION @s.usage(p_lim jsonb, p_now bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  k text := p_lim->>0; c int := (p_lim->>1)::int; r int := (p_lim->>2)::int;
  per_us bigint := round((p_lim->>3)::float8 * 1000000)::bigint; run int; n int := 0;
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtextextended(k, 0)) THEN
    RETURN jsonb_build_object('ok', false);
  END IF;
  INSERT INTO @s.limits (lim, concurrency, rate, per) VALUES (k, c, r, (p_lim->>3)::float8)
  ON CONFLICT (lim) DO NOTHING;
  SELECT count(*) INTO run FROM @s.held h WHERE h.lim = k;
  IF r > 0 THEN
    -- (forgotten a second after they leave the window: a clock stepped back a little still counts them)
    DELETE FROM @s.starts x WHERE x.lim = k AND x.at <= p_now - per_us - 1000000;
    SELECT count(*) INTO n FROM @s.starts x WHERE x.lim = k AND x.at > p_now - per_us;
  END IF;
  RETURN jsonb_build_object('ok', true, 'run', run, 'n', n, 't', 0, 'c', c, 'r', r, 'p', per_us,
                            'per', (p_lim->>3)::float8);
END $$"""

# flow.next_opening's twin: when the window of key lets reopen_batch more starts in (us).
OPENING = """CREATE OR REPLACE FUNCTION @s.opening(p_key text, p_rate int, p_per_us bigint, p_now bigint,
  p_taken int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n int; m int; j int; a bigint;
BEGIN
  SELECT count(*) INTO n FROM @s.starts x WHERE x.lim = p_key AND x.at > p_now - p_per_us;
  m := n + p_taken;
  IF m < p_rate THEN RETURN p_now; END IF;
  j := m - p_rate + least(greatest(1, p_rate / 100), p_rate) - 1;
  a := p_now;
  IF j < n THEN
    SELECT x.at INTO a FROM @s.starts x WHERE x.lim = p_key AND x.at > p_now - p_per_us
    ORDER BY x.at OFFSET j LIMIT 1;
  END IF;
  RETURN greatest(a + p_per_us + 1, p_now);
END $$"""

# When key's parked tasks may next come in by its rate window (NULL: nothing parked, or no
# rate: a freed slot lets them in).  The caller holds the key's lock.
REARM = """CREATE OR REPLACE FUNCTION @s.rearm(p_key text, p_now bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  l record;
BEGIN
  SELECT * INTO l FROM @s.limits x WHERE x.lim = p_key;
  IF NOT FOUND THEN RETURN; END IF;
  UPDATE @s.limits x SET reopen = CASE
    WHEN l.rate > 0 AND EXISTS (SELECT FROM @s.tasks t WHERE t.status = 'pending' AND t.parked = p_key)
    THEN @s.opening(p_key, l.rate, round(l.per * 1000000)::bigint, p_now, 0) END
  WHERE x.lim = p_key;
END $$"""

# Move the first p_n tasks parked on key (priority, then eta) back among the ready ones; how
# many.  The caller holds the key's lock.
RELEASE = """CREATE OR REPLACE FUNCTION @s.release(p_key text, p_n int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  moved int;
BEGIN
  UPDATE @s.tasks t SET parked = NULL WHERE t.id IN (
    SELECT u.id FROM @s.tasks u WHERE u.status = 'pending' AND u.parked = p_key
    ORDER BY u.priority DESC, u.eta_us, u.id LIMIT p_n FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS moved = ROW_COUNT;
  IF NOT EXISTS (SELECT FROM @s.tasks t WHERE t.status = 'pending' AND t.parked = p_key) THEN
    UPDATE @s.limits x SET reopen = NULL WHERE x.lim = p_key AND x.reopen IS NOT NULL;
  END IF;
  RETURN moved;
END $$"""

# What a swap does for the tasks with limits whose state it changed (p_gone: [{id, was, limits}]):
# a run that ended (or was requeued after a crash) frees its slots, and one parked task per slot
# comes back; a pending task that left (cancelled) passes a slot freed for it to the next parked
# one.  Keys locked in hash order (two swaps never deadlock).  Returns the tasks let back in.
LET_GO = """CREATE OR REPLACE FUNCTION @s.let_go(p_gone jsonb) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  f record; moved int := 0;
BEGIN
  FOR f IN SELECT g.id, g.was, l.value->>0 AS lim, (l.value->>1)::int AS conc
           FROM jsonb_to_recordset(p_gone) AS g(id text, was text, limits jsonb)
           CROSS JOIN LATERAL jsonb_array_elements(g.limits) AS l
           ORDER BY hashtextextended(l.value->>0, 0), l.value->>0, g.id LOOP
    PERFORM pg_advisory_xact_lock(hashtextextended(f.lim, 0));
    IF f.was = 'running' THEN
      DELETE FROM @s.held h WHERE h.lim = f.lim AND h.task = f.id;
      IF FOUND THEN moved := moved + @s.release(f.lim, 1); END IF;
    ELSIF f.conc > 0 AND (SELECT count(*) FROM @s.held h WHERE h.lim = f.lim) < f.conc THEN
      moved := moved + @s.release(f.lim, 1);
    END IF;
  END LOOP;
  RETURN moved;
END $$"""

# Take up to p_total ready tasks due by the server's clock for p_owner: of the served (p_queues,
# NULL: every queue), unpaused queues, the highest priority first, then the earliest eta, as
# flow.Admission admits them; the first p_start may start now, the others (only tasks without
# limits) wait in the owner's queue.  Rows: each task as it was before the claim, whether it
# waits, the claim's time and lease; then one row with id NULL and the next eta to look at (the
# earliest served ready task, or reopening window).  An owner that is neither the caller nor a
# live process gets a lease that has run out: recovered at once.
CLAIM = """CREATE OR REPLACE FUNCTION @s.claim(p_owner text, p_own boolean, p_start int, p_total int,
  p_lease float8, p_queues text[], p_channel text)
RETURNS TABLE (@out_cols, waits boolean, claimed_at float8, deadline float8, next_eta float8)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  ts timestamptz := clock_timestamp();
  now_s float8 := extract(epoch FROM ts)::float8;
  now_us bigint := (extract(epoch FROM ts) * 1000000)::bigint;
  v_h bigint; v_hb bigint; v_dl float8;
  v_room int := p_start; v_queued int := greatest(0, p_total - p_start);
  v_bq text[]; v_bp int[]; v_k int := 1; v_prio int; v_qs text[];
  v_page int := greatest(1, p_total); v_got int; v_bound_eta bigint; v_bound_id text;
  v_mark_eta bigint; v_mark_id text; v_offered int := 0; v_contended boolean := false;
  c record; l record; v_lim jsonb; v_key text; u jsonb; v_t int; v_verdict text; v_park jsonb;
  v_until bigint; v_free int; v_released int := 0;
  v_ids text[] := '{}'; v_wait boolean[] := '{}'; v_use jsonb := '{}';
  v_held_keys text[] := '{}'; v_held_ids text[] := '{}';
  v_pids text[]; v_petas bigint[]; v_limited boolean; v_n int;
  v_head float8; v_flagged float8; v_reopen float8;
BEGIN
  SELECT m.horizon, ceil(m.horizon * m.tick * 1000000)::bigint + 1 INTO v_h, v_hb
  FROM @s.meta m WHERE m.id = 1;
  v_dl := CASE WHEN p_own OR EXISTS (SELECT FROM @s.alive a WHERE a.token = p_owner AND a.expires > now_s)
          THEN now_s + p_lease ELSE now_s END;
  -- rate windows that reopened: their parked tasks come back, as many as each admits now
  FOR l IN SELECT x.lim, x.rate, x.per FROM @s.limits x WHERE x.reopen <= now_us ORDER BY x.reopen LOOP
    CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtextextended(l.lim, 0));
    v_free := l.rate - (SELECT count(*) FROM @s.starts x
                        WHERE x.lim = l.lim AND x.at > now_us - round(l.per * 1000000)::bigint);
    IF v_free > 0 THEN v_released := v_released + @s.release(l.lim, v_free); END IF;
    PERFORM @s.rearm(l.lim, now_us);
  END LOOP;
  -- the bands served, highest priority first
  SELECT array_agg(b.queue ORDER BY b.priority DESC, b.queue),
         array_agg(b.priority ORDER BY b.priority DESC, b.queue)
  INTO v_bq, v_bp FROM (@bands) b
  WHERE (p_queues IS NULL OR b.queue = ANY(p_queues))
    AND NOT EXISTS (SELECT FROM @s.paused z WHERE z.queue = b.queue);
  WHILE p_total > 0 AND v_k <= coalesce(cardinality(v_bq), 0) AND (v_room > 0 OR v_queued > 0)
        AND v_offered < 1000 LOOP
    v_prio := v_bp[v_k];
    v_qs := '{}';
    WHILE v_k <= cardinality(v_bq) AND v_bp[v_k] = v_prio LOOP
      v_qs := v_qs || v_bq[v_k];
      v_k := v_k + 1;
    END LOOP;
    v_mark_eta := NULL; v_mark_id := NULL;
    LOOP                                   -- a page of this priority's due tasks at a time
      v_bound_id := NULL;
      IF cardinality(v_qs) > 1 THEN
        -- several queues at one priority, merged by eta: read each a page ahead; what lies
        -- past the earliest last row of a full page waits for the next page
        SELECT x.eta_us, x.id INTO v_bound_eta, v_bound_id FROM unnest(v_qs) AS b(q) CROSS JOIN LATERAL (
          SELECT y.eta_us, y.id FROM (@bands_page) y ORDER BY y.eta_us, y.id OFFSET v_page - 1 LIMIT 1) x
        ORDER BY x.eta_us, x.id LIMIT 1;
      END IF;
      v_got := 0;
      IF v_bound_id IS NULL AND cardinality(v_qs) = 1 THEN
        -- one queue at this priority: the page read, locked, and if no row has limits (most
        -- claims), taken whole -- the loop below is for pages with limits
        SELECT array_agg(z.id ORDER BY z.eta_us, z.id), array_agg(z.eta_us ORDER BY z.eta_us, z.id),
               bool_or(z.limits IS NOT NULL)
        INTO v_pids, v_petas, v_limited FROM (@band_one FOR UPDATE OF t SKIP LOCKED) z;
        IF NOT coalesce(v_limited, true) THEN
          v_got := cardinality(v_pids);
          v_n := least(v_got, v_room + v_queued);
          v_ids := v_ids || v_pids[1:v_n];
          v_wait := v_wait || array_fill(false, ARRAY[least(v_n, v_room)])
                           || array_fill(true, ARRAY[greatest(0, v_n - v_room)]);
          v_queued := v_queued - greatest(0, v_n - v_room);
          v_room := greatest(0, v_room - v_n);
          v_offered := v_offered + v_n;
          v_mark_eta := v_petas[v_n]; v_mark_id := v_pids[v_n];
          EXIT WHEN (v_room <= 0 AND v_queued <= 0) OR v_got < v_page;
          CONTINUE;
        END IF;
        v_got := 0;
        EXIT WHEN v_limited IS NULL;       -- nothing due in this band
      END IF;
      -- (the rows read are locked, as they are now: one another claimer has is passed over)
      FOR c IN SELECT x.id, x.eta_us, x.limits FROM unnest(v_qs) AS b(q) CROSS JOIN LATERAL (
                 SELECT z.* FROM (@bands_page FOR UPDATE OF t SKIP LOCKED) z ORDER BY z.eta_us, z.id) x
               WHERE v_bound_id IS NULL OR (x.eta_us, x.id) <= (v_bound_eta, v_bound_id)
               ORDER BY x.eta_us, x.id LOOP
        v_got := v_got + 1;
        v_mark_eta := c.eta_us; v_mark_id := c.id;
        v_offered := v_offered + 1;
        v_verdict := 'start'; v_park := NULL; v_until := NULL;
        IF c.limits IS NULL THEN            -- (Admission.offer's rule, inline: most tasks have none)
          v_verdict := CASE WHEN v_room > 0 THEN 'start' WHEN v_queued > 0 THEN 'queue' ELSE 'leave' END;
        ELSE
          FOR v_lim IN SELECT e.value FROM jsonb_array_elements(c.limits) e LOOP
            v_key := v_lim->>0;
            IF NOT v_use ? v_key THEN
              v_use := v_use || jsonb_build_object(v_key, @s.usage(v_lim, now_us));
            END IF;
            u := v_use->v_key;
            IF NOT (u->>'ok')::boolean THEN
              v_verdict := 'leave'; v_contended := true; EXIT;
            END IF;
            v_t := (u->>'t')::int;
            IF (v_lim->>1)::int > 0 AND (u->>'run')::int + v_t >= (v_lim->>1)::int THEN
              v_verdict := 'park'; v_park := v_lim; EXIT;
            END IF;
            IF (v_lim->>2)::int > 0 AND (u->>'n')::int + v_t >= (v_lim->>2)::int THEN
              v_verdict := 'park'; v_park := v_lim;
              v_until := @s.opening(v_key, (v_lim->>2)::int, (u->>'p')::bigint, now_us, v_t);
              EXIT;
            END IF;
          END LOOP;
          IF v_verdict = 'start' AND v_room <= 0 THEN v_verdict := 'leave'; END IF;
        END IF;
        CONTINUE WHEN v_verdict = 'leave';
        IF v_verdict = 'park' THEN
          v_key := v_park->>0;
          UPDATE @s.tasks t SET parked = v_key WHERE t.id = c.id;
          UPDATE @s.limits x SET concurrency = (v_park->>1)::int, rate = (v_park->>2)::int,
            per = (v_park->>3)::float8,
            reopen = CASE WHEN v_until IS NULL THEN x.reopen
                          ELSE least(coalesce(x.reopen, v_until), v_until) END
          WHERE x.lim = v_key;
          CONTINUE;
        END IF;
        v_ids := v_ids || c.id;
        v_wait := v_wait || (v_verdict = 'queue');
        IF v_verdict = 'queue' THEN v_queued := v_queued - 1; ELSE v_room := v_room - 1; END IF;
        IF c.limits IS NOT NULL THEN        -- its slots and start, counted (written at the end)
          FOR v_lim IN SELECT e.value FROM jsonb_array_elements(c.limits) e LOOP
            v_key := v_lim->>0;
            v_use := jsonb_set(v_use, ARRAY[v_key, 't'], to_jsonb((v_use->v_key->>'t')::int + 1));
            v_held_keys := v_held_keys || v_key; v_held_ids := v_held_ids || c.id;
          END LOOP;
        END IF;
        EXIT WHEN (v_room <= 0 AND v_queued <= 0) OR v_offered >= 1000;
      END LOOP;
      EXIT WHEN (v_room <= 0 AND v_queued <= 0) OR v_offered >= 1000;
      EXIT WHEN v_bound_id IS NULL AND (cardinality(v_qs) > 1 OR v_got < v_page);
    END LOOP;
  END LOOP;
  IF cardinality(v_ids) > 0 THEN
    RETURN QUERY
    WITH k AS (SELECT * FROM unnest(v_ids, v_wait) WITH ORDINALITY AS k(id, w, n)),
    picked AS (SELECT t.*, k.w, k.n FROM @s.tasks t JOIN k ON t.id = k.id WHERE t.id = ANY(v_ids)),
    upd AS (
      UPDATE @s.tasks t SET status = 'running', owner = p_owner, lease = v_dl, ready = false, parked = NULL,
        started = CASE WHEN NOT k.w THEN now_s END, finished = NULL, finished_ms = NULL,
        attempts = t.attempts + 1, rev = t.rev + 1
      FROM k WHERE t.id = k.id AND t.id = ANY(v_ids)),   -- (ANY: the primary key's index, whatever
                                                          -- the planner guesses of k's size)
    cnt AS (
      INSERT INTO @s.counts_delta (status, name, tick, n)
      SELECT 'pending', p.name, p.tick, -count(*) FROM picked p GROUP BY p.name, p.tick
      UNION ALL SELECT 'running', p.name, 0, count(*) FROM picked p GROUP BY p.name)
    SELECT @record, p.w, now_s, v_dl, NULL::float8 FROM picked p ORDER BY p.n;
  END IF;
  IF v_use <> '{}' THEN                -- (a claim that met no limit writes none of this)
    -- what the taken tasks hold: their slots, their starts (at the claim's time), the specs
    INSERT INTO @s.held (lim, task) SELECT * FROM unnest(v_held_keys, v_held_ids) ON CONFLICT DO NOTHING;
    INSERT INTO @s.starts (lim, at)
    SELECT e.key, now_us FROM jsonb_each(v_use) e CROSS JOIN LATERAL generate_series(1, (e.value->>'t')::int)
    WHERE (e.value->>'ok')::boolean AND (e.value->>'r')::int > 0;
    -- the limits this claim counted against: re-arm their windows; where slots are still free,
    -- let parked tasks in (a slot freed for a task that went elsewhere must not strand them)
    FOR v_key, u IN SELECT e.key, e.value FROM jsonb_each(v_use) e LOOP
      CONTINUE WHEN NOT (u->>'ok')::boolean;
      IF (u->>'t')::int > 0 THEN
        UPDATE @s.limits x SET concurrency = (u->>'c')::int, rate = (u->>'r')::int, per = (u->>'per')::float8
        WHERE x.lim = v_key;
        PERFORM @s.rearm(v_key, now_us);
      END IF;
      v_free := (u->>'c')::int - (u->>'run')::int - (u->>'t')::int;
      IF (u->>'c')::int > 0 AND v_free > 0 THEN v_released := v_released + @s.release(v_key, v_free); END IF;
    END LOOP;
  END IF;
  -- the next eta: the earliest served ready task, or reopening window
  SELECT min((SELECT t.eta FROM @s.tasks t WHERE t.status = 'pending' AND t.parked IS NULL
                AND t.queue = v_bq[i] AND t.priority = v_bp[i] AND t.eta_us <= v_hb AND t.tick <= v_h
              ORDER BY t.eta_us, t.id LIMIT 1))
  INTO v_head FROM generate_subscripts(coalesce(v_bq, '{}'), 1) AS i;
  -- (the flagged rows on their own index first: they are few, and rare)
  SELECT f.eta INTO v_flagged FROM (
    SELECT t.eta, t.tick, t.eta_us, t.queue, t.parked FROM @s.tasks t WHERE t.status = 'pending' AND t.ready
    ORDER BY t.tick, t.eta_us LIMIT 1000) f
  WHERE f.parked IS NULL AND f.queue = ANY(coalesce(v_bq, '{}')) ORDER BY f.tick, f.eta_us LIMIT 1;
  SELECT min(x.reopen) / 1e6 INTO v_reopen FROM @s.limits x WHERE x.reopen IS NOT NULL;
  IF v_contended THEN        -- left for a claimer that holds its limit now: look again soon
    v_head := greatest(v_head, now_s + 0.01);
  END IF;
  IF v_released > 0 AND p_channel IS NOT NULL THEN PERFORM pg_notify(p_channel, ''); END IF;
  RETURN QUERY SELECT @nulls, NULL::boolean, now_s, v_dl, least(v_head, v_flagged, v_reopen);
END $$"""
