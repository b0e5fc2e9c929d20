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

__all__ = ["INIT", "PUT", "ADD", "CLAIM", "ADVANCE", "RENEW", "PURGE", "LEAD", "RESIGN", "MARK_BROKEN"]

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

local function unplace(id, s, name, k)           -- out of its status's index and counters
  if s == 'pending' then
    zrem(P .. 'ready', id)                        -- ready, or in its cell: removing from both
    if k then zrem(cell(tonumber(k)), id); tick_count(k, -1) end   -- costs no lookup
  elseif s == 'running' then zrem(P .. 'running', id)
  elseif s == 'broken' then zrem(P .. 'broken', id)
  else zrem(P .. 'x:' .. s, id); later('HDEL', P .. 'xn', id) end
  count(s, name, -1)
end

local function ready_head()                      -- score of the earliest ready task, or nil
  local h = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
  return h[2] and tonumber(h[2]) or nil
end
"""

#: Create the namespace's bookkeeping unless it exists; returns the stored geometry.
#: ARGV: format, slots, tick, horizon
INIT = r"""#!lua
if redis.call('HEXISTS', KEYS[1], 'format') == 0 then
  redis.call('HSET', KEYS[1], 'format', ARGV[1], 'slots', ARGV[2], 'tick', ARGV[3], 'horizon', ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'format', 'slots', 'tick')
"""

#: Write whole records, each only if the stored one is still what the caller saw.
#: ARGV: mode ('all': every item or none; 'each': independently), result TTL in ms (0: none),
#: bell channel, then 13 values per item: id, expected rev ('' = must not be stored), status,
#: name, due tick (pending) or '', score (eta us / lease us / finished ms), rev, attempts,
#: owner, started, finished, lease ('' = None), record.
#: Returns {1} or {0, index of the first conflict} ('all'), or a 1/0 per item ('each').
PUT = _PRELUDE + r"""
local mode, ttl, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local W = 13
local n = (#ARGV - 3) / W
local function arg(j, f) return ARGV[3 + (j - 1) * W + f] end
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

local horizon = tonumber(redis.call('HGET', META, 'horizon'))
local head = ready_head()
local ring = false
local seen, out = {}, {}
local OPTIONAL = {{'k', 5}, {'o', 9}, {'st', 10}, {'f', 11}, {'l', 12}}
for j = 1, n do
  local id, s, name, k, score = arg(j, 1), arg(j, 3), arg(j, 4), arg(j, 5), arg(j, 6)
  if seen[id] then flush() end                    -- its first occurrence's writes come first
  seen[id] = true
  if mode == 'all' or matches(j) then
    local key = key_of(j)
    local cur = {false}
    if not fresh then cur = redis.call('HMGET', key, 's', 'n', 'k') end
    if cur[1] then                                -- take it out of where it is
      unplace(id, cur[1], cur[2] or '', cur[3] or nil)
      redis.call('DEL', key)
    else
      local was = gone[id]
      if was == nil and not fresh then was = redis.call('HGET', P .. 'xn', id) end
      if was then
        local bar = string.find(was, '|', 1, true)
        unplace(id, string.sub(was, 1, bar - 1), string.sub(was, bar + 1), nil)
      end
    end
    local f = {'r', arg(j, 13), 's', s, 'n', name, 'v', arg(j, 7), 'a', arg(j, 8)}
    for _, o in ipairs(OPTIONAL) do
      local v = arg(j, o[2])
      if v ~= '' then f[#f + 1] = o[1]; f[#f + 1] = v end
    end
    redis.call('HSET', key, unpack(f))
    if s == 'pending' then
      if tonumber(k) <= horizon then
        zadd(P .. 'ready', score, id)
        if head == nil or tonumber(score) < head then ring = true end
      else
        zadd(cell(tonumber(k)), score, id)
      end
      tick_count(k, 1)
    elseif s == 'running' then
      zadd(P .. 'running', score, id)
    else
      zadd(P .. 'x:' .. s, score, id)
      later('HSET', P .. 'xn', id, s .. '|' .. name)
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
    count(s, name, 1)
    out[j] = 1
  else
    out[j] = 0
  end
end
flush()
if ring then redis.call('PUBLISH', channel, '!') end
if mode == 'all' then return {1} end
return out
"""

#: ``delay()``'s write: one new pending task -- PUT's ('all', one item, no rev expected) cut to
#: what that needs, none of its machinery: 7-10 commands, 24 us of server time per call where
#: PUT took 47 (INFO commandstats, Redis 7.0, this machine).  It writes what PUT
#: writes for such a task: the hash (``r s n v a k``), the ready ZSET or the wheel's cell,
#: the counters (``counts``, ``tickn``, and ``ticks``/``slotn`` for a tick that was empty),
#: the bell when the task is the earliest ready one.
#: ARGV: id, name, due tick, eta in us, rev, attempts, record, bell channel.
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
redis.call('HSET', key, 'r', ARGV[7], 's', 'pending', 'n', name, 'v', ARGV[5], 'a', ARGV[6], 'k', k)
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

#: Take up to ``limit`` ready tasks due by the server's clock, earliest first, for ``owner``:
#: each as :func:`timewheel.store.rules.claimed` stamps a claim (its Python twin).
#: ARGV: owner, limit, lease in us, '1' if the owner is the caller itself, heartbeat TTL in ms,
#: how many of them start now (the others are queued: no ``started``).
#: A claim by an owner with no heartbeat (not a live process) gets a lease that has already
#: run out, so whoever recovers abandoned tasks takes them back at once.
#: Returns {started, lease, score of the earliest ready task left or '', id, record, ...}.
CLAIM = _PRELUDE + r"""
local owner, limit, lease_us = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local starting = tonumber(ARGV[6])          -- the first this many start now; the rest queue
local now, started = now_us()
local ids = {}
if limit > 0 then ids = redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', now, 'LIMIT', 0, limit) end
local deadline = now
if #ids > 0 then                                  -- (a claim that takes nothing writes nothing)
  local alive = P .. 'alive:' .. owner
  if ARGV[4] == '1' then
    redis.call('SET', alive, '1', 'PX', ARGV[5])
    deadline = now + lease_us
  elseif redis.call('PEXPIRE', alive, ARGV[5]) == 1 then
    deadline = now + lease_us
  end
end
local lease = secs(deadline)
local taken = {}
for _, id in ipairs(ids) do
  local key = P .. 't:' .. id
  local h = redis.call('HMGET', key, 's', 'n', 'k', 'v', 'a', 'r')
  zrem(P .. 'ready', id)
  if h[1] == 'pending' then
    redis.call('HSET', key, 's', 'running', 'o', owner, 'l', lease,
               'v', fmt(tonumber(h[4]) + 1), 'a', fmt(tonumber(h[5]) + 1))
    if #taken / 2 < starting then
      redis.call('HSET', key, 'st', started)
      redis.call('HDEL', key, 'f', 'k')
    else
      redis.call('HDEL', key, 'f', 'k', 'st')
    end
    zadd(P .. 'running', deadline, id)
    tick_count(h[3], -1)
    count('pending', h[2], -1)
    count('running', h[2], 1)
    taken[#taken + 1] = id
    taken[#taken + 1] = h[6]
  end
end
flush()
local head = ready_head()
local out = {started, lease, head and fmt(head) or ''}
for _, v in ipairs(taken) do out[#out + 1] = v end
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
    local room = limit - moved
    if room > 0 then
      local members = redis.call('ZRANGE', key, 0, room - 1, 'WITHSCORES')
      for m = 1, #members, 2 do
        zadd(P .. 'ready', members[m + 1], members[m])
        local score = tonumber(members[m + 1])
        if first == nil or score < first then first = score end
      end
      if #members > 0 then
        redis.call('ZREMRANGEBYRANK', key, 0, #members / 2 - 1)
        moved = moved + #members / 2
      end
    end
    if redis.call('EXISTS', key) == 1 then         -- the page is full: the rest next call
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
      local cur = redis.call('HGET', key, 's')
      if cur == false or cur == s then            -- never a task that is not finished
        later('DEL', false, key)
        count(s, names[m] and string.sub(names[m], string.find(names[m], '|', 1, true) + 1) or '', -1)
        n = n + 1
      end
      zrem(P .. 'x:' .. s, id)
      later('HDEL', P .. 'xn', id)
    end
  end
end
flush()
return n
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

#: Set aside a record that cannot be decoded (it is kept, listed as broken, never retried).
#: ARGV: id.  Returns 1 if it was moved.
MARK_BROKEN = _PRELUDE + r"""
local id = ARGV[1]
local key = P .. 't:' .. id
local h = redis.call('HMGET', key, 's', 'n', 'k')
local s, name = h[1], h[2] or ''
if s == false or s == 'broken' then return 0 end
unplace(id, s, name, h[3] or nil)
count('broken', name, 1)
redis.call('HSET', key, 's', 'broken')
redis.call('HDEL', key, 'k')
redis.call('PERSIST', key)
zadd(P .. 'broken', 0, id)
flush()
return 1
"""
