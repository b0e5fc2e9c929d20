"""The Lua scripts of the Redis store: every change that touches more than one key is one of
these, run with EVALSHA, so it is atomic on the server (see :mod:`timewheel.store.redis` for
the key layout).

They only *move* tasks and keep the indexes and counters right; what a task becomes (retry,
backoff, crash requeue, ...) is decided in Python by :mod:`timewheel.records` and
:mod:`timewheel.store.rules` and handed in whole.  The one transition applied here is a
claim's (running, owner, lease, started, ``attempts + 1``, ``rev + 1``), because only the
server may say what is due now: CLAIM is the twin of :func:`timewheel.store.rules.claimed`,
with which the store rebuilds the same record in Python from the values the script returns
(change both together).

Conventions:

* ``KEYS[1]`` is the namespace's ``{ns}:meta`` hash.  Every other key is built from its
  prefix ``{ns}:`` and so hashes to the same cluster slot: the script is routed by KEYS[1] and
  runs on Redis Cluster as on one server.
* Time is the server's (``TIME``), in integer microseconds (exact in a Lua double until the
  year 2255); etas and leases are ZSET scores in microseconds, finish times in milliseconds.
* Numbers stored as strings are formatted explicitly (``%.0f``, never ``tostring``, which
  keeps 14 digits).
* A script checks everything it needs before its first write, so it either fails before
  writing or writes all (Redis does not roll back a script that errors midway).  The
  ``#!lua`` line makes the server refuse a script up front when it is out of memory.
"""

from __future__ import annotations

__all__ = ["INIT", "PUT", "ADD", "CLAIM", "ADVANCE", "RENEW", "PURGE", "FORGET", "LEAD", "RESIGN", "NOTE",
           "ABORTING", "MARK_BROKEN", "INBOX_REJECT"]

_PRELUDE = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)            -- '{ns}:' of '{ns}:meta'
local META = KEYS[1]

local function fmt(n) return string.format('%.0f', n) end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

local function secs(us)                          -- microseconds -> '<s>.<us>' seconds
  local s = fmt(us)
  return string.sub(s, 1, -7) .. '.' .. string.sub(s, -6)
end

local SLOTS = tonumber(redis.call('HGET', META, 'slots'))
if SLOTS == nil then                             -- deleted under us (FLUSHDB): write nothing
  return redis.error_reply('no timewheel store here any more (' .. META .. ' is gone)')
end

local function slot_cycle(t)                     -- tick -> slot, cycle (exact integer arithmetic)
  local cycle = math.floor(t / SLOTS)
  local slot = t - cycle * SLOTS
  if slot < 0 then slot = slot + SLOTS; cycle = cycle - 1 end
  if slot >= SLOTS then slot = slot - SLOTS; cycle = cycle + 1 end
  return slot, cycle
end

local CELLS = {}
local function cell(t)                           -- the wheel's (slot, cycle) ZSET of tick t
  local key = CELLS[t]
  if key == nil then
    local slot, cycle = slot_cycle(t)
    key = P .. 'w:' .. fmt(slot) .. ':' .. fmt(cycle)
    CELLS[t] = key
  end
  return key
end

-- Writes to counters, sorted sets and the xn hash are gathered and made by flush(), one
-- command per key and kind: a batch of 10,000 tasks costs a few commands per distinct key
-- instead of several per task.  Removals run before additions, so a task moved within one
-- index ends up in it; a script meeting the same task twice flushes in between.
local PHASE = {ZREM = 1, HDEL = 1, DEL = 1, ZADD = 2, HSET = 2}
local OPS, ORDER, COUNTS, TICKS = {ZREM = {}, HDEL = {}, DEL = {}, ZADD = {}, HSET = {}}, {}, {}, {}
local QC = {}                                    -- pending/running per queue other than 'default'

local function later(cmd, key, a, b)             -- key false: the values are keys (DEL)
  local op = OPS[cmd][key]
  if op == nil then
    op = {phase = PHASE[cmd], cmd = cmd, key = key, n = 0}
    OPS[cmd][key] = op
    ORDER[#ORDER + 1] = op
  end
  op.n = op.n + 1
  op[op.n] = a
  if b ~= nil then op.n = op.n + 1; op[op.n] = b end
end
local function zrem(key, member) later('ZREM', key, member) end
local function zadd(key, score, member) later('ZADD', key, score, member) end
local function count(status, name, d)            -- tasks per (status, name)
  local f = status .. '|' .. name
  COUNTS[f] = (COUNTS[f] or 0) + d
end
local function tick_count(t, d) TICKS[t] = (TICKS[t] or 0) + d end   -- pending per due tick

-- Flow control (issue 21).  A band is '<queue>:<100 - priority, 3 digits>' (none: the default
-- queue at priority 0): its ready tasks are in their own ZSET, its wheel entries in the cell's
-- 'wb:' ZSET.  A task's limits are its hash's 'lm' field: key, concurrency, rate, window in us,
-- separated by \31, limits by \30.
local function band_ready(b)
  if not b or b == '' then return P .. 'ready' end
  return P .. 'ready:' .. b
end
local function band_cell(t, b)
  if not b or b == '' then return cell(t) end
  local slot, cycle = slot_cycle(t)
  return P .. 'wb:' .. fmt(slot) .. ':' .. fmt(cycle)
end
local function qcount(b, status, d)
  if b and b ~= '' then
    local q = string.match(b, '^(.*):%d%d%d$')
    if q and q ~= 'default' then QC[q .. '|' .. status] = (QC[q .. '|' .. status] or 0) + d end
  end
end
local function limits_of(lm)                     -- {{key, concurrency, rate, per_us}, ...}
  local out = {}
  if not lm or lm == '' then return out end
  for item in string.gmatch(lm, '[^\30]+') do
    local f = {}
    for v in string.gmatch(item, '[^\31]+') do f[#f + 1] = v end
    out[#out + 1] = {f[1], tonumber(f[2]), tonumber(f[3]), tonumber(f[4])}
  end
  return out
end
local RELEASED = 0
local function release(key, n)                   -- the first n tasks parked on key, back to ready
  local park = P .. 'park:' .. key
  local ids = redis.call('ZRANGE', park, 0, n - 1)
  for _, id in ipairs(ids) do
    redis.call('ZREM', park, id)
    local h = redis.call('HMGET', P .. 't:' .. id, 'q', 'pe', 's', 'pk')
    if h[3] == 'pending' and h[4] == key then
      redis.call('HDEL', P .. 't:' .. id, 'pk', 'pe')
      redis.call('ZADD', band_ready(h[1]), h[2], id)
      RELEASED = RELEASED + 1
    end
  end
  if redis.call('EXISTS', park) == 0 then redis.call('ZREM', P .. 'reopen', key) end
end
local function free(id, lm)                      -- a run ended: its slots free, one parked task each
  for _, lim in ipairs(limits_of(lm)) do
    if redis.call('SREM', P .. 'held:' .. lim[1], id) == 1 then release(lim[1], 1) end
  end
end
local function pass_on(lm)                       -- a pending task with limits left: its slot, if
  for _, lim in ipairs(limits_of(lm)) do         -- one was freed for it, to the next parked one
    if lim[2] > 0 and redis.call('SCARD', P .. 'held:' .. lim[1]) < lim[2] then release(lim[1], 1) end
  end
end
local function window(key, per_us, now)          -- starts logged after now - per
  redis.call('ZREMRANGEBYSCORE', P .. 'starts:' .. key, '-inf', now - per_us)
  return redis.call('ZCARD', P .. 'starts:' .. key)
end
local function opening(key, rate, per_us, now, taken)   -- flow.next_opening's twin
  local n = window(key, per_us, now) + taken
  if n < rate then return now end
  local batch = math.max(1, math.floor(rate / 100))
  local j = n - rate + math.min(batch, rate) - 1
  local at = now
  if j < n - taken then
    at = tonumber(redis.call('ZRANGE', P .. 'starts:' .. key, j, j, 'WITHSCORES')[2])
  end
  return math.max(at + per_us + 1, now)
end
local function rearm(key, now)                   -- when key's parked tasks may next come in
  local spec = redis.call('HGET', P .. 'limits', key)
  if spec and redis.call('EXISTS', P .. 'park:' .. key) == 1 then
    local c, r, per = string.match(spec, '^(%d+)|(%d+)|(%d+)$')
    if tonumber(r) > 0 then
      redis.call('ZADD', P .. 'reopen', opening(key, tonumber(r), tonumber(per), now, 0), key)
      return
    end
  end
  redis.call('ZREM', P .. 'reopen', key)
end

local function flush()
  for phase = 1, 2 do
    for _, op in ipairs(ORDER) do
      if op.phase == phase then
        for i = 1, op.n, 4000 do                  -- unpack() is limited to ~8000 values
          local j = math.min(i + 3999, op.n)
          if op.key then
            redis.call(op.cmd, op.key, unpack(op, i, j))
          else
            redis.call(op.cmd, unpack(op, i, j))
          end
        end
      end
    end
  end
  for f, d in pairs(COUNTS) do
    if d ~= 0 and redis.call('HINCRBY', P .. 'counts', f, d) <= 0 then
      redis.call('HDEL', P .. 'counts', f)
    end
  end
  for f, d in pairs(QC) do
    if d ~= 0 and redis.call('HINCRBY', P .. 'qcounts', f, d) <= 0 then
      redis.call('HDEL', P .. 'qcounts', f)
    end
  end
  QC = {}
  for t, d in pairs(TICKS) do
    if d ~= 0 then
      local n = redis.call('HINCRBY', P .. 'tickn', t, d)
      local slot = fmt((slot_cycle(tonumber(t))))
      if n <= 0 then                              -- the tick emptied: one occupied cell less
        redis.call('HDEL', P .. 'tickn', t)
        redis.call('ZREM', P .. 'ticks', t)
        if redis.call('HINCRBY', P .. 'slotn', slot, -1) <= 0 then redis.call('HDEL', P .. 'slotn', slot) end
      elseif n == d then                          -- it was empty: one more
        redis.call('ZADD', P .. 'ticks', t, t)
        redis.call('HINCRBY', P .. 'slotn', slot, 1)
      end
    end
  end
  OPS, ORDER, COUNTS, TICKS = {ZREM = {}, HDEL = {}, DEL = {}, ZADD = {}, HSET = {}}, {}, {}, {}
end

local function unplace(id, s, name, k, b, pk, dw)   -- out of its status's index and counters
  if s == 'pending' then
    zrem(band_ready(b), id)                       -- ready, or in its cell: removing from both
    if k then zrem(band_cell(tonumber(k), b), id); tick_count(k, -1) end   -- costs no lookup
    if pk then zrem(P .. 'park:' .. pk, id) end
    if dw then zrem(P .. 'waiting', id) end       -- waiting for its dependencies (issue 23)
    qcount(b, 'pending', -1)
  elseif s == 'running' then zrem(P .. 'running', id); qcount(b, 'running', -1)
  elseif s == 'broken' then zrem(P .. 'broken', id)
  else zrem(P .. 'x:' .. s, id); later('HDEL', P .. 'xn', id) end
  count(s, name, -1)
end

local function ready_head()                      -- score of the earliest ready task, or nil
  local h = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
  return h[2] and tonumber(h[2]) or nil
end
"""

# Batches (issue 23; timewheel/batches.py is the twin).  {ns}:b:<id> is a batch's hash: 'c'
# when it opened (us), 'd' when it was done, its members per class ('open', 'succeeded',
# 'failed', 'cancelled', 'misfired', 'aborted') and per callback event '<event>:<i|n|k|s|r|q|l>' (id,
# name, due tick, score, record, band, limits); {ns}:bm:<id> the list of its members' ids in
# the order they were added; {ns}:batches a ZSET of batch ids by opening; {ns}:bopen the SET
# of those not done yet.
_BATCHES = r"""
local BD, TOUCHED = {}, {}                       -- batch -> class -> delta; batches to settle
local function class_of(s)
  if s == 'pending' or s == 'running' then return 'open' end
  return s
end
local function member_moved(ob, os, nb, ns)       -- batches.moves' twin for one change
  local a = ob and ob ~= '' and (ob .. '\0' .. class_of(os)) or nil
  local b = nb ~= '' and (nb .. '\0' .. class_of(ns)) or nil
  if a == b then return end
  if a then
    BD[ob] = BD[ob] or {}; BD[ob][class_of(os)] = (BD[ob][class_of(os)] or 0) - 1; TOUCHED[ob] = true
  end
  if b then
    BD[nb] = BD[nb] or {}; BD[nb][class_of(ns)] = (BD[nb][class_of(ns)] or 0) + 1; TOUCHED[nb] = true
  end
end
local function batch_done(bid)
  return redis.call('HGET', P .. 'b:' .. bid, 'd') ~= false
end
local function settle_batches(horizon, ttl)       -- counts, then callbacks of finished batches
  local ring = false
  for bid, _ in pairs(TOUCHED) do
    local key = P .. 'b:' .. bid
    if redis.call('EXISTS', key) == 1 then
      for c, d in pairs(BD[bid] or {}) do
        if d ~= 0 then redis.call('HINCRBY', key, c, d) end
      end
      local h = redis.call('HMGET', key, 'd', 'open', 'failed', 'cancelled', 'misfired', 'aborted')
      if not h[1] and tonumber(h[2] or '0') <= 0 then
        local failed = tonumber(h[3] or '0') + tonumber(h[4] or '0') + tonumber(h[5] or '0')
                       + tonumber(h[6] or '0') > 0
        local events = {'on_complete', failed and 'on_failure' or 'on_success'}
        for _, e in ipairs(events) do
          local cb = redis.call('HMGET', key, e .. ':i', e .. ':n', e .. ':k', e .. ':s', e .. ':r',
                                e .. ':q', e .. ':l')
          local id = cb[1]
          if id and redis.call('EXISTS', P .. 't:' .. id) == 0 then   -- added once: 'keep'
            local k, b = cb[3], cb[6] or ''
            local f = {'r', cb[5], 's', 'pending', 'n', cb[2], 'v', '0', 'a', '0', 'k', k}
            if b ~= '' then f[#f + 1] = 'q'; f[#f + 1] = b end
            if cb[7] and cb[7] ~= '' then f[#f + 1] = 'lm'; f[#f + 1] = cb[7] end
            redis.call('HSET', P .. 't:' .. id, unpack(f))
            if tonumber(k) <= horizon then zadd(band_ready(b), cb[4], id); ring = true
            else zadd(band_cell(tonumber(k), b), cb[4], id) end
            if b ~= '' then later('ZADD', P .. 'bands', 0, b) end
            tick_count(k, 1)
            qcount(b, 'pending', 1)
            count('pending', cb[2], 1)
          end
        end
        redis.call('HSET', key, 'd', fmt((now_us())))
        redis.call('SREM', P .. 'bopen', bid)
        if ttl > 0 then                           -- its finished members expire from now
          local len = redis.call('LLEN', P .. 'bm:' .. bid)
          for i = 0, len - 1, 1000 do
            for _, m in ipairs(redis.call('LRANGE', P .. 'bm:' .. bid, i, i + 999)) do
              local s = redis.call('HGET', P .. 't:' .. m, 's')
              if s and s ~= 'pending' and s ~= 'running' then redis.call('PEXPIRE', P .. 't:' .. m, ttl) end
            end
          end
        end
      end
    end
  end
  return ring
end
"""

#: Create the namespace's bookkeeping unless it exists, or convert it from the format before
#: (ARGV[5]: nothing moves, the batches' keys come with the first batch); returns the stored
#: geometry.  ARGV: format, slots, tick, horizon, the format it converts
INIT = r"""#!lua
if redis.call('HEXISTS', KEYS[1], 'format') == 0 then
  redis.call('HSET', KEYS[1], 'format', ARGV[1], 'slots', ARGV[2], 'tick', ARGV[3], 'horizon', ARGV[4])
elseif redis.call('HGET', KEYS[1], 'format') == ARGV[5] then
  redis.call('HSET', KEYS[1], 'format', ARGV[1])
end
return redis.call('HMGET', KEYS[1], 'format', 'slots', 'tick')
"""

#: Write whole records, each only if the stored one is still what the caller saw; keep the
#: counts of the batches whose members change and finish those left with no open member
#: (issue 23: timewheel.batches is the twin of what this does with batches).
#: ARGV: mode ('all': every item or none; 'each': independently), result TTL in ms (0: none),
#: bell channel, what to do with a batch ('': nothing; 'open': open it; 'add': add members to
#: it, which must be open; 'settle': finish it if it has no open member), the batch id, when
#: it opened (us), the number of its callbacks, 8 values per callback (event, id, name, due
#: tick, score, record, band, limits), the number of dependency operations and 3 values per
#: operation (below), then 17 values per item: id, expected rev ('' = must not be stored),
#: status, name, due tick (pending) or '', score (eta us / lease us / finished ms), rev,
#: attempts, owner, started, finished, lease ('' = None), record, band ('' = the default
#: one), limits, batch ('' = none), dependencies not succeeded yet ('' = none: not waiting).
#: Dependencies (issue 23; timewheel/deps.py decides, in Python): a waiting task sits in
#: {ns}:waiting (by eta), never ready; {ns}:dq:<id> is the SET of the tasks waiting for <id>,
#: {ns}:dl:<id> the LIST of every task added with <id> among its dependencies (for show).
#: Operations ('all' only): ('rev', id, v) that task is still at rev v, ('set', id, n) the
#: items hold the changes to all n tasks of dq:<id> (which is then deleted) -- else {0, -4}:
#: the caller plans again; ('wait', dep, id) add id to dq:dep; ('edge', dep, id) to dl:dep.
#: An item of a final status whose id has waiting tasks not so covered is not written:
#: {0, -5} ('all'), 2 ('each'): the caller writes it again with its dependents' changes.
#: Returns {1} or {0, index of the first conflict} ('all': -1 the batch exists already, -2 it
#: does not exist, -3 it is done), or a 1/0/2 per item ('each').
PUT = _PRELUDE + _BATCHES + r"""
local mode, ttl, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local taken_in = 0                                -- 'inbox:<n>:<sha1>': the tasks of the inbox's
if string.sub(mode, 1, 6) == 'inbox:' then        -- first n entries, which must still be these
  local sep = string.find(mode, ':', 7, true)
  taken_in = tonumber(string.sub(mode, 7, sep - 1))
  local head = redis.call('LRANGE', P .. 'inbox', 0, taken_in - 1)
  if #head ~= taken_in or redis.sha1hex(table.concat(head, '\0')) ~= string.sub(mode, sep + 1) then
    return {0, 0}
  end
  mode = 'all'
end
local bmode, bid, bopened, nc = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local D0 = 8 + 8 * nc                             -- ARGV[D0]: dependency operations, then 3 each
local nd = tonumber(ARGV[D0])
local H = D0 + 3 * nd
local W = 17
local n = (#ARGV - H) / W
local function arg(j, f) return ARGV[H + (j - 1) * W + f] end
local function key_of(j) return P .. 't:' .. arg(j, 1) end
local function matches(j)
  local rev = redis.call('HGET', key_of(j), 'v')
  if arg(j, 2) == '' then return rev == false end
  return rev == arg(j, 2)
end

local fresh = true                                -- only new tasks: delay() and batches
for j = 1, n do if arg(j, 2) ~= '' then fresh = false; break end end
local gone = {}                                   -- finished tasks whose hash expired: id -> 'status|name'
if mode == 'all' then
  local conflict = false
  if fresh then                                   -- one EXISTS per 1000 ids, unless one is taken
    for i = 1, n, 1000 do
      local keys, ids = {}, {}
      for j = i, math.min(i + 999, n) do keys[#keys + 1] = key_of(j); ids[#ids + 1] = arg(j, 1) end
      if redis.call('EXISTS', unpack(keys)) > 0 then conflict = true end
      local xn = redis.call('HMGET', P .. 'xn', unpack(ids))
      for m, v in ipairs(ids) do if xn[m] then gone[v] = xn[m] end end
    end
  end
  if conflict or not fresh then
    for j = 1, n do if not matches(j) then return {0, j} end end
  end
end
local CASCADED = {}                               -- ids whose waiting tasks' changes are items here
for i = 0, nd - 1 do
  local op, a, b = ARGV[D0 + 1 + 3 * i], ARGV[D0 + 2 + 3 * i], ARGV[D0 + 3 + 3 * i]
  if op == 'rev' then
    if redis.call('HGET', P .. 't:' .. a, 'v') ~= b then return {0, -4} end
  elseif op == 'set' then
    if redis.call('SCARD', P .. 'dq:' .. a) ~= tonumber(b) then return {0, -4} end
    CASCADED[a] = true
  end
end
local function has_waiters(j)                     -- an outcome whose waiting tasks are not covered
  local s = arg(j, 3)
  return s ~= 'pending' and s ~= 'running' and s ~= 'broken' and not CASCADED[arg(j, 1)]
    and redis.call('EXISTS', P .. 'dq:' .. arg(j, 1)) == 1
end
if mode == 'all' then
  for j = 1, n do if has_waiters(j) then return {0, -5} end end
end
if taken_in > 0 then redis.call('LTRIM', P .. 'inbox', taken_in, -1) end
if bmode == 'open' and redis.call('EXISTS', P .. 'b:' .. bid) == 1 then return {0, -1} end
if bmode == 'add' then
  local d = redis.call('HMGET', P .. 'b:' .. bid, 'c', 'd')
  if not d[1] then return {0, -2} end
  if d[2] then return {0, -3} end
end
if bmode == 'open' then
  local h = {'c', bopened, 'open', '0'}
  for i = 0, nc - 1 do
    local e = ARGV[8 + 8 * i]
    for f, name in ipairs({'i', 'n', 'k', 's', 'r', 'q', 'l'}) do
      h[#h + 1] = e .. ':' .. name; h[#h + 1] = ARGV[8 + 8 * i + f]
    end
  end
  redis.call('HSET', P .. 'b:' .. bid, unpack(h))
  redis.call('ZADD', P .. 'batches', bopened, bid)
  redis.call('SADD', P .. 'bopen', bid)
  TOUCHED[bid] = true
elseif bmode == 'settle' then
  TOUCHED[bid] = true
end
if bmode == 'open' or bmode == 'add' then
  for i = 1, n, 1000 do
    local ids = {}
    for j = i, math.min(i + 999, n) do ids[#ids + 1] = arg(j, 1) end
    redis.call('RPUSH', P .. 'bm:' .. bid, unpack(ids))
  end
end

local horizon = tonumber(redis.call('HGET', META, 'horizon'))
local head = ready_head()
local ring = false
local seen, out = {}, {}
local OPTIONAL = {{'k', 5}, {'o', 9}, {'st', 10}, {'f', 11}, {'l', 12}, {'q', 14}, {'lm', 15}, {'b', 16},
                  {'dw', 17}}
for j = 1, n do
  local id, s, name, k, score = arg(j, 1), arg(j, 3), arg(j, 4), arg(j, 5), arg(j, 6)
  if seen[id] then flush() end                    -- its first occurrence's writes come first
  seen[id] = true
  local write = mode == 'all' or matches(j)
  if write and mode ~= 'all' and has_waiters(j) then write = false; out[j] = 2 end
  if write then
    local key = key_of(j)
    local cur = {false}
    if not fresh then
      cur = redis.call('HMGET', key, 's', 'n', 'k', 'q', 'pk', 'lm', 'b', 'dw', 'ab', 'pg')
    end
    member_moved(cur[1] and cur[7], cur[1], arg(j, 16), s)
    if cur[1] then                                -- take it out of where it is
      unplace(id, cur[1], cur[2] or '', cur[3] or nil, cur[4], cur[5] or nil, cur[8] or nil)
      if cur[1] == 'running' and cur[6] and s ~= 'running' then free(id, cur[6]) end
      if cur[1] == 'pending' and cur[6] and s ~= 'pending' then pass_on(cur[6]) end
      redis.call('DEL', key)
    else
      local was = gone[id]
      if was == nil and not fresh then was = redis.call('HGET', P .. 'xn', id) end
      if was then
        local bar = string.find(was, '|', 1, true)
        unplace(id, string.sub(was, 1, bar - 1), string.sub(was, bar + 1), nil, nil, nil)
      end
    end
    local f = {'r', arg(j, 13), 's', s, 'n', name, 'v', arg(j, 7), 'a', arg(j, 8)}
    for _, o in ipairs(OPTIONAL) do
      local v = arg(j, o[2])
      if v ~= '' then f[#f + 1] = o[1]; f[#f + 1] = v end
    end
    redis.call('HSET', key, unpack(f))
    if cur[1] == 'running' and s == 'running' then  -- the same run goes on: its notes stay
      local was = arg(j, 2)                       -- (rules.kept_notes' twin; they follow the rev)
      if cur[9] == was then redis.call('HSET', key, 'ab', arg(j, 7)) end
      if cur[10] and string.sub(cur[10], 1, #was + 1) == was .. '|' then
        redis.call('HSET', key, 'pg', arg(j, 7) .. string.sub(cur[10], #was + 1))
      end
    end
    local b = arg(j, 14)
    if s == 'pending' then
      if arg(j, 17) ~= '' then                    -- waiting for its dependencies: parked apart
        zadd(P .. 'waiting', score, id)
      elseif tonumber(k) <= horizon then
        zadd(band_ready(b), score, id)
        if head == nil or tonumber(score) < head or b ~= '' then ring = true end
      else
        zadd(band_cell(tonumber(k), b), score, id)
      end
      if b ~= '' then later('ZADD', P .. 'bands', 0, b) end
      tick_count(k, 1)
      qcount(b, 'pending', 1)
    elseif s == 'running' then
      zadd(P .. 'running', score, id)
      qcount(b, 'running', 1)
    else
      zadd(P .. 'x:' .. s, score, id)
      later('HSET', P .. 'xn', id, s .. '|' .. name)
      -- a member is kept until its batch is done (then expires: see settle)
      if ttl > 0 and (arg(j, 16) == '' or batch_done(arg(j, 16))) then
        redis.call('PEXPIRE', key, ttl)
        redis.call('PEXPIRE', P .. 'dl:' .. id, ttl)      -- (no such key: nothing)
      end
    end
    count(s, name, 1)
    out[j] = 1
  elseif out[j] == nil then
    out[j] = 0
  end
end
for i = 0, nd - 1 do                              -- the dependency index follows the writes
  local op, a, b = ARGV[D0 + 1 + 3 * i], ARGV[D0 + 2 + 3 * i], ARGV[D0 + 3 + 3 * i]
  if op == 'wait' then redis.call('SADD', P .. 'dq:' .. a, b)
  elseif op == 'set' then redis.call('DEL', P .. 'dq:' .. a)
  elseif op == 'edge' then
    redis.call('RPUSH', P .. 'dl:' .. a, b)
    local left = redis.call('PTTL', P .. 't:' .. a)    -- expires with its task
    if left > 0 then redis.call('PEXPIRE', P .. 'dl:' .. a, left) end
  end
end
if settle_batches(horizon, ttl) then ring = true end
flush()
if ring or RELEASED > 0 then redis.call('PUBLISH', channel, '!') end
if mode == 'all' then return {1} end
return out
"""

#: ``delay()``'s write: one new pending task -- PUT's ('all', one item, no rev expected) cut to
#: what that needs, none of its machinery: 7-10 commands, 24 us of server time per call where
#: PUT took 47 (INFO commandstats, Redis 7.0, this machine).  It writes what PUT
#: writes for such a task: the hash (``r s n v a k``), the ready ZSET or the wheel's cell,
#: the counters (``counts``, ``tickn``, and ``ticks``/``slotn`` for a tick that was empty),
#: the bell when the task is the earliest ready one.  Only for a task of the default band (the
#: default queue at priority 0: flow control's other bands have their own ZSETs and counters,
#: PUT's); its limits, if any, are only kept in its hash (``lm``) for the claim.
#: ARGV: id, name, due tick, eta in us, rev, attempts, record, bell channel, limits ('' = none).
#: Returns 1 (added), 0 (the id is taken) or -1 (a finished task of this id left its index
#: entries behind when its hash expired: PUT adds it, and cleans them up).
ADD = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
local id, name, k, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = P .. 't:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
if redis.call('HEXISTS', P .. 'xn', id) == 1 then return -1 end
local m = redis.call('HMGET', KEYS[1], 'slots', 'horizon')
local slots, horizon = tonumber(m[1]), tonumber(m[2])
if slots == nil then
  return redis.error_reply('no timewheel store here any more (' .. KEYS[1] .. ' is gone)')
end
local t = tonumber(k)
local cycle = math.floor(t / slots)              -- (a due tick is positive: no wrap to mend)
local slot = string.format('%.0f', t - cycle * slots)
if ARGV[9] == '' then
  redis.call('HSET', key, 'r', ARGV[7], 's', 'pending', 'n', name, 'v', ARGV[5], 'a', ARGV[6], 'k', k)
else
  redis.call('HSET', key, 'r', ARGV[7], 's', 'pending', 'n', name, 'v', ARGV[5], 'a', ARGV[6], 'k', k,
             'lm', ARGV[9])
end
if t <= horizon then
  local head = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')[2]
  redis.call('ZADD', P .. 'ready', score, id)
  if head == nil or tonumber(score) < tonumber(head) then redis.call('PUBLISH', ARGV[8], '!') end
else
  redis.call('ZADD', P .. 'w:' .. slot .. ':' .. string.format('%.0f', cycle), score, id)
end
redis.call('HINCRBY', P .. 'counts', 'pending|' .. name, 1)
if redis.call('HINCRBY', P .. 'tickn', k, 1) == 1 then      -- the tick was empty: a cell more
  redis.call('ZADD', P .. 'ticks', k, k)
  redis.call('HINCRBY', P .. 'slotn', slot, 1)
end
return 1
"""

#: Take up to ``limit`` ready tasks due by the server's clock for ``owner``: of the served,
#: unpaused queues, the highest priority first, then the earliest eta, as flow control's
#: :class:`timewheel.flow.Admission` admits them (this is its twin), each as
#: :func:`timewheel.store.rules.claimed` stamps a claim (its Python twin).
#: ARGV: owner, limit, lease in us, '1' if the owner is the caller itself, heartbeat TTL in ms,
#: how many of them may start now (the others are queued: no ``started``; only tasks without
#: limits queue), the queues served (comma-separated; '' = every queue), the bell channel.
#: A claim by an owner with no heartbeat (not a live process) gets a lease that has already
#: run out, so whoever recovers abandoned tasks takes them back at once.
#: Returns {started, lease, the earliest of the served ready tasks' scores and the parked
#: tasks' reopening windows or '', id, record, ...}.
CLAIM = _PRELUDE + r"""
local owner, limit, lease_us = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local room = tonumber(ARGV[6])                  -- tasks that may start now
local queued = limit - room                     -- tasks without limits that may wait for a worker
local now, started = now_us()
-- parked tasks whose rate window reopened: as many as it admits now
for _, key in ipairs(redis.call('ZRANGEBYSCORE', P .. 'reopen', '-inf', now)) do
  local spec = redis.call('HGET', P .. 'limits', key)
  local c, r, per = string.match(spec or '0|0|0', '^(%d+)|(%d+)|(%d+)$')
  local free_now = tonumber(r) - window(key, tonumber(per), now)
  if free_now > 0 then release(key, free_now) end
  rearm(key, now)
end
-- the bands served: {ready key, priority}, highest priority first
local served = {}
local all = ARGV[7] == ''
for q in string.gmatch(ARGV[7], '[^,]+') do served[q] = true end
local paused = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'paused')) do paused[q] = true end
local bands = {}
if (all or served['default']) and not paused['default'] then bands[#bands + 1] = {P .. 'ready', 0} end
for _, b in ipairs(redis.call('ZRANGE', P .. 'bands', 0, -1)) do
  local q, code = string.match(b, '^(.*):(%d%d%d)$')
  if (all or served[q]) and not paused[q] then
    bands[#bands + 1] = {P .. 'ready:' .. b, 100 - tonumber(code)}
  end
end
table.sort(bands, function(x, y) return x[2] > y[2] end)

local usage, taken, specs = {}, {}, {}
local function use(lim)
  local u = usage[lim[1]]
  if u == nil then
    specs[lim[1]] = lim
    local count = 0
    if lim[3] > 0 then count = window(lim[1], lim[4], now) end
    u = {redis.call('SCARD', P .. 'held:' .. lim[1]), count}
    usage[lim[1]] = u
  end
  return u
end
local function offer(lims)                       -- 'start', 'queue', 'leave' or 'park', lim, upto
  if #lims == 0 then
    if room > 0 then room = room - 1; return 'start' end
    if queued > 0 then queued = queued - 1; return 'queue' end
    return 'leave'
  end
  for _, lim in ipairs(lims) do
    local u, t = use(lim), taken[lim[1]] or 0
    if lim[2] > 0 and u[1] + t >= lim[2] then return 'park', lim, nil end
    if lim[3] > 0 and u[2] + t >= lim[3] then return 'park', lim, opening(lim[1], lim[3], lim[4], now, t) end
  end
  if room <= 0 then return 'leave' end
  room = room - 1
  for _, lim in ipairs(lims) do taken[lim[1]] = (taken[lim[1]] or 0) + 1 end
  return 'start'
end

local ids, queue_flags = {}, {}
local deadline = now
local alive_done = false
local lease = secs(deadline)
local out_taken = {}
local offered = 0
local i = 1
while i <= #bands and (room > 0 or queued > 0) and offered < 1000 do
  local prio = bands[i][2]
  local group = {}
  while i <= #bands and bands[i][2] == prio do group[#group + 1] = {bands[i][1], 0, true}; i = i + 1 end
  local more = true
  while more and (room > 0 or queued > 0) and offered < 1000 do
    local page = math.max(1, limit)
    local rows = {}
    more = false
    for _, g in ipairs(group) do
      if g[3] then
        local got = redis.call('ZRANGEBYSCORE', g[1], '-inf', now, 'WITHSCORES', 'LIMIT', g[2], page)
        for m = 1, #got, 2 do rows[#rows + 1] = {got[m], tonumber(got[m + 1]), g[1]} end
        g[2] = g[2] + #got / 2
        if #got / 2 < page then g[3] = false else more = true end
      end
    end
    table.sort(rows, function(x, y)              -- (not stable: ties by id, as a ZSET orders them)
      if x[2] ~= y[2] then return x[2] < y[2] end
      return x[1] < y[1]
    end)
    for _, row in ipairs(rows) do
      if room <= 0 and queued <= 0 then break end
      offered = offered + 1
      local id, score, ready = row[1], row[2], row[3]
      local key = P .. 't:' .. id
      local h = redis.call('HMGET', key, 's', 'n', 'k', 'v', 'a', 'r', 'lm', 'q')
      if h[1] ~= 'pending' then
        zrem(ready, id)                          -- not a pending task (any more): not an entry
      else
        local lims = limits_of(h[7])
        local verdict, lim, upto = offer(lims)
        if verdict == 'park' then
          zrem(ready, id)
          local code = tonumber(string.sub(h[8] or ':100', -3))
          redis.call('ZADD', P .. 'park:' .. lim[1], code * 35184372088832 + math.floor(score / 10000), id)
          redis.call('HSET', key, 'pk', lim[1], 'pe', fmt(score))
          redis.call('HSET', P .. 'limits', lim[1], fmt(lim[2]) .. '|' .. fmt(lim[3]) .. '|' .. fmt(lim[4]))
          if upto then
            local cur = redis.call('ZSCORE', P .. 'reopen', lim[1])
            if not cur or tonumber(cur) > upto then redis.call('ZADD', P .. 'reopen', upto, lim[1]) end
          end
        elseif verdict ~= 'leave' then
          if not alive_done then                -- (a claim that takes nothing writes nothing)
            alive_done = true
            local alive = P .. 'alive:' .. owner
            if ARGV[4] == '1' then
              redis.call('SET', alive, '1', 'PX', ARGV[5])
              deadline = now + lease_us
            elseif redis.call('PEXPIRE', alive, ARGV[5]) == 1 then
              deadline = now + lease_us
            end
            lease = secs(deadline)
          end
          zrem(ready, id)
          redis.call('HSET', key, 's', 'running', 'o', owner, 'l', lease,
                     'v', fmt(tonumber(h[4]) + 1), 'a', fmt(tonumber(h[5]) + 1))
          if verdict == 'start' then
            redis.call('HSET', key, 'st', started)
            redis.call('HDEL', key, 'f', 'k')
          else
            redis.call('HDEL', key, 'f', 'k', 'st')
          end
          for _, l in ipairs(lims) do
            redis.call('SADD', P .. 'held:' .. l[1], id)
            if l[3] > 0 then redis.call('ZADD', P .. 'starts:' .. l[1], now, fmt(now) .. ':' .. id) end
            redis.call('HSET', P .. 'limits', l[1], fmt(l[2]) .. '|' .. fmt(l[3]) .. '|' .. fmt(l[4]))
          end
          zadd(P .. 'running', deadline, id)
          tick_count(h[3], -1)
          count('pending', h[2], -1)
          count('running', h[2], 1)
          qcount(h[8], 'pending', -1)
          qcount(h[8], 'running', 1)
          out_taken[#out_taken + 1] = id
          out_taken[#out_taken + 1] = h[6]
        end
      end
    end
  end
end
flush()
for key, _ in pairs(taken) do rearm(key, now) end
-- concurrency limits looked at that still have free slots: their parked tasks come back
for key, lim in pairs(specs) do
  if lim[2] > 0 then
    local free_now = lim[2] - redis.call('SCARD', P .. 'held:' .. key)
    if free_now > 0 and redis.call('EXISTS', P .. 'park:' .. key) == 1 then release(key, free_now) end
  end
end
-- the earliest served ready task, or reopening window
local next_at = nil
for _, b in ipairs(bands) do
  local h = redis.call('ZRANGE', b[1], 0, 0, 'WITHSCORES')
  if h[2] and (next_at == nil or tonumber(h[2]) < next_at) then next_at = tonumber(h[2]) end
end
local r = redis.call('ZRANGE', P .. 'reopen', 0, 0, 'WITHSCORES')
if r[2] and (next_at == nil or tonumber(r[2]) < next_at) then next_at = tonumber(r[2]) end
if RELEASED > 0 then redis.call('PUBLISH', ARGV[8], '!') end
-- the running zset is scored by the lease deadline: the claim's entries carry it
local out = {started, lease, next_at and fmt(next_at) or ''}
for _, v in ipairs(out_taken) do out[#out + 1] = v end
return out
"""

#: Make ready the pending tasks of ticks <= through, oldest first, at most ``limit``.
#: ARGV: through, limit, leader token, bell channel.  Returns {horizon, moved, complete, led}:
#: led 0 (and nothing done) while another process holds the ticking role.
ADVANCE = _PRELUDE + r"""
local through, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_us()
local horizon = tonumber(redis.call('HGET', META, 'horizon'))
local holder = redis.call('GET', P .. 'leader')
if holder and holder ~= ARGV[3] then       -- fenced: the caller lost the ticking role
  return {fmt(horizon), 0, 1, 0}
end
local reached, moved, full = horizon, 0, false
local head, first = ready_head(), nil
while not full and reached < through do
  local ticks = redis.call('ZRANGEBYSCORE', P .. 'ticks', '(' .. fmt(reached), fmt(through), 'LIMIT', 0, 100)
  if #ticks == 0 then reached = through; break end
  for _, t in ipairs(ticks) do
    local key = cell(tonumber(t))
    local bkey = band_cell(tonumber(t), 'x')      -- the tick's tasks of other bands
    for _, from in ipairs({key, bkey}) do
      local room = limit - moved
      if room > 0 then
        local members = redis.call('ZRANGE', from, 0, room - 1, 'WITHSCORES')
        for m = 1, #members, 2 do
          local to = P .. 'ready'
          if from == bkey then to = band_ready(redis.call('HGET', P .. 't:' .. members[m], 'q')) end
          zadd(to, members[m + 1], members[m])
          local score = tonumber(members[m + 1])
          if first == nil or score < first then first = score end
        end
        if #members > 0 then
          redis.call('ZREMRANGEBYRANK', from, 0, #members / 2 - 1)
          moved = moved + #members / 2
        end
      end
    end
    if redis.call('EXISTS', key, bkey) > 0 then    -- the page is full: the rest next call
      full = true
      reached = tonumber(t) - 1
      break
    end
    reached = tonumber(t)
  end
end
if reached > horizon then
  redis.call('HSET', META, 'horizon', fmt(reached))
else
  reached = horizon
end
redis.call('HSET', META, 'leader', ARGV[3], 'advanced', secs(now))
flush()
if first ~= nil and (head == nil or first < head) then redis.call('PUBLISH', ARGV[4], '!') end
return {fmt(reached), moved, reached >= through and 1 or 0, 1}
"""

#: Extend the leases of tasks the caller still runs; returns the ids whose lease was lost
#: (recovered, finished elsewhere, or already run out: an expired lease is never revived).
#: ARGV: owner, lease in us, heartbeat TTL in ms, then id, rev, ...
RENEW = _PRELUDE + r"""
local owner, lease_us = ARGV[1], tonumber(ARGV[2])
local now = now_us()
local deadline = now + lease_us
local lease = secs(deadline)
redis.call('SET', P .. 'alive:' .. owner, '1', 'PX', ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, rev = ARGV[i], ARGV[i + 1]
  local key = P .. 't:' .. id
  local h = redis.call('HMGET', key, 's', 'o', 'v')
  local score = redis.call('ZSCORE', P .. 'running', id)
  if h[1] == 'running' and h[2] == owner and h[3] == rev and score and tonumber(score) > now then
    redis.call('ZADD', P .. 'running', 'XX', deadline, id)
    redis.call('HSET', key, 'l', lease)
  else
    lost[#lost + 1] = id
  end
end
return lost
"""

#: Notes on a running task (issue 23): ARGV id, rev, the record with its ``abort`` set (or ''),
#: its progress as JSON (or '').  Written -- the record with ``ab`` set to the rev, the progress
#: as ``pg`` = ``<rev>|<json>`` (read only while the rev is that) -- only while it runs at that
#: rev; ``v`` is left alone (the run's fence, its lease and its outcome stay valid).  Returns 1,
#: or 0 if it changed.
NOTE = _PRELUDE + r"""
local key = P .. 't:' .. ARGV[1]
local h = redis.call('HMGET', key, 's', 'v')
if h[1] ~= 'running' or h[2] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', key, 'r', ARGV[3], 'ab', ARGV[2]) end
if ARGV[4] ~= '' then redis.call('HSET', key, 'pg', ARGV[2] .. '|' .. ARGV[4]) end
return 1
"""

#: The runs of ARGV[1] (ARGV: owner, then id and rev of each) whose abort was asked for: an
#: ``ab`` equal to the rev they run at (an older run's mark is stale: every other write bumps
#: ``v``).  One round trip a tick for all of a process's runs.
ABORTING = _PRELUDE + r"""
local out = {}
for i = 2, #ARGV, 2 do
  local h = redis.call('HMGET', P .. 't:' .. ARGV[i], 's', 'o', 'v', 'ab')
  if h[1] == 'running' and h[2] == ARGV[1] and h[3] == ARGV[i + 1] and h[4] == ARGV[i + 1] then
    out[#out + 1] = ARGV[i]
  end
end
return out
"""

#: Delete finished tasks (and the index entries of those whose hash already expired) that
#: finished before a bound.  ARGV: bound in ms (exclusive), limit (<= 4000), status, ...
#: Returns how many.
PURGE = _PRELUDE + r"""
local bound, limit = ARGV[1], tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local s = ARGV[i]
  if n >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', P .. 'x:' .. s, '-inf', '(' .. bound, 'LIMIT', 0, limit - n)
  if #ids > 0 then
    local names = redis.call('HMGET', P .. 'xn', unpack(ids))
    for m, id in ipairs(ids) do
      local key = P .. 't:' .. id
      local cur = redis.call('HMGET', key, 's', 'b')
      if cur[2] and redis.call('HEXISTS', P .. 'b:' .. cur[2], 'd') == 0
          and redis.call('EXISTS', P .. 'b:' .. cur[2]) == 1 then
        -- a member of a batch not done yet: kept (and left in the index) until it is
      else
        if cur[1] == false or cur[1] == s then    -- never a task that is not finished
          later('DEL', false, key)
          later('DEL', false, P .. 'dl:' .. id)
          count(s, names[m] and string.sub(names[m], string.find(names[m], '|', 1, true) + 1) or '', -1)
          n = n + 1
        end
        zrem(P .. 'x:' .. s, id)
        later('HDEL', P .. 'xn', id)
      end
    end
  end
end
flush()
return n
"""

#: Forget the limits that hold nothing, so that per-key limits (one per customer) do not pile
#: up: starts out of the limit's window are dropped (as the claim's window() would), then a
#: limit with no slot held, no parked task, no start left and no window to reopen loses its
#: spec (the claim writes it again from the task's record when the key comes back).  One
#: HSCAN step of the limits hash per call.  ARGV: cursor, count.  Returns {next cursor, forgotten}.
FORGET = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local step = redis.call('HSCAN', P .. 'limits', ARGV[1], 'COUNT', ARGV[2])
local kv, n = step[2], 0
for i = 1, #kv, 2 do
  local key = kv[i]
  local per = tonumber(string.match(kv[i + 1], '|(%d+)$')) or 0     -- concurrency|rate|window us
  local starts = P .. 'starts:' .. key
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - per)
  if redis.call('EXISTS', P .. 'held:' .. key, P .. 'park:' .. key, starts) == 0
      and not redis.call('ZSCORE', P .. 'reopen', key) then
    redis.call('HDEL', P .. 'limits', key)
    n = n + 1
  end
end
return {step[1], n}
"""

#: Take or keep the ticking role; refresh the caller's heartbeat once half its TTL is gone
#: (not at every call: each write costs an fsync with appendfsync always).
#: ARGV: token, role TTL in ms, heartbeat TTL in ms.  Returns 1 if the caller holds the role.
LEAD = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
local alive = P .. 'alive:' .. ARGV[1]
if redis.call('PTTL', alive) < tonumber(ARGV[3]) / 2 then redis.call('SET', alive, '1', 'PX', ARGV[3]) end
local cur = redis.call('GET', P .. 'leader')
if cur == ARGV[1] then
  redis.call('PEXPIRE', P .. 'leader', ARGV[2])
  return 1
end
if cur == false then
  redis.call('SET', P .. 'leader', ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

#: Give the role up if the caller holds it; with ARGV[2] == '1' also drop its heartbeat.
RESIGN = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
if redis.call('GET', P .. 'leader') == ARGV[1] then redis.call('DEL', P .. 'leader') end
if ARGV[2] == '1' then redis.call('DEL', P .. 'alive:' .. ARGV[1]) end
return 1
"""

#: Set aside the inbox's first entry (timewheel/inbox.py), if it is still the one read: moved to
#: the list ``inbox:rejected`` as ``{"entry": ..., "error": ...}``.  ARGV: its SHA-1, the reason.
#: Returns 1 if it was moved.
INBOX_REJECT = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
local first = redis.call('LINDEX', P .. 'inbox', 0)
if not first or redis.sha1hex(first) ~= ARGV[1] then return 0 end
redis.call('RPUSH', P .. 'inbox:rejected', cjson.encode({entry = first, error = ARGV[2]}))
redis.call('LPOP', P .. 'inbox')
return 1
"""

#: Set aside a record that cannot be decoded (it is kept, listed as broken, never retried).
#: ARGV: id.  Returns 1 if it was moved.
MARK_BROKEN = _PRELUDE + r"""
local id = ARGV[1]
local key = P .. 't:' .. id
local h = redis.call('HMGET', key, 's', 'n', 'k', 'q', 'pk', 'lm', 'dw')
local s, name = h[1], h[2] or ''
if s == false or s == 'broken' then return 0 end
unplace(id, s, name, h[3] or nil, h[4], h[5] or nil, h[7] or nil)
if s == 'running' and h[6] then free(id, h[6]) end
count('broken', name, 1)
redis.call('HSET', key, 's', 'broken')
redis.call('HDEL', key, 'k')
redis.call('PERSIST', key)
zadd(P .. 'broken', 0, id)
flush()
return 1
"""
