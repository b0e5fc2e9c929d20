"""The Lua scripts of the Redis store: every change that touches more than one key is one of
these, run with EVALSHA, so it is atomic on the server (see :mod:`timewheel.store.redis` for
the key layout).

They only *move* tasks and keep the indexes and counters right; what a task becomes (retry,
backoff, crash requeue, ...) is decided in Python by :mod:`timewheel.records` and handed in
whole.  The one transition applied here is a claim's (``start_run``: running, owner, lease,
started, ``attempts + 1``, ``rev + 1``), because only the server may say what is due now; the
store rebuilds the same record in Python with :func:`~timewheel.records.start_run` from the
values the script returns.

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

__all__ = ["INIT", "PUT", "CLAIM", "ADVANCE", "RENEW", "PURGE", "LEAD", "RESIGN", "MARK_BROKEN"]

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

local function slot_cycle(t)                     -- tick -> slot, cycle (exact integer arithmetic)
  local cycle = math.floor(t / SLOTS)
  local slot = t - cycle * SLOTS
  if slot < 0 then slot = slot + SLOTS; cycle = cycle - 1 end
  if slot >= SLOTS then slot = slot - SLOTS; cycle = cycle + 1 end
  return slot, cycle
end

local function cell(t)                           -- the wheel's (slot, cycle) ZSET of tick t
  local slot, cycle = slot_cycle(t)
  return P .. 'w:' .. fmt(slot) .. ':' .. fmt(cycle)
end

local function count(status, name, d)            -- tasks per (status, name)
  local f = status .. '|' .. name
  if redis.call('HINCRBY', P .. 'counts', f, d) <= 0 then redis.call('HDEL', P .. 'counts', f) end
end

local function tick_count(t, d)                  -- pending tasks per due tick (t: a string)
  local n = redis.call('HINCRBY', P .. 'tickn', t, d)
  local slot = fmt((slot_cycle(tonumber(t))))
  if d > 0 and n == d then                        -- the tick was empty: one more occupied cell
    redis.call('ZADD', P .. 'ticks', t, t)
    redis.call('HINCRBY', P .. 'slotn', slot, 1)
  elseif n <= 0 then
    redis.call('HDEL', P .. 'tickn', t)
    redis.call('ZREM', P .. 'ticks', t)
    if redis.call('HINCRBY', P .. 'slotn', slot, -1) <= 0 then redis.call('HDEL', P .. 'slotn', slot) end
  end
end

local function unplace(id, s, name, k)           -- out of the index of its status, uncounted
  if s == 'pending' then
    if redis.call('ZREM', P .. 'ready', id) == 0 and k then redis.call('ZREM', cell(tonumber(k)), id) end
    if k then tick_count(k, -1) end
  elseif s == 'running' then redis.call('ZREM', P .. 'running', id)
  elseif s == 'broken' then redis.call('ZREM', P .. 'broken', id)
  else redis.call('ZREM', P .. 'x:' .. s, id); redis.call('HDEL', P .. 'xn', id) end
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
#: bell channel, then per item: id, expected rev ('' = must not be stored), status, name,
#: due tick (pending) or '', score (eta us / lease us / finished ms), npairs, field, value, ...
#: Returns {1} or {0, index of the first conflict} ('all'), or a 1/0 per item ('each').
PUT = _PRELUDE + r"""
local mode, ttl, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local items = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 6])
  items[#items + 1] = {id = ARGV[i], expect = ARGV[i + 1], s = ARGV[i + 2], name = ARGV[i + 3],
                       k = ARGV[i + 4], score = ARGV[i + 5], first = i + 7, last = i + 6 + 2 * n}
  i = i + 7 + 2 * n
end

local function matches(it)
  local rev = redis.call('HGET', P .. 't:' .. it.id, 'v')
  if it.expect == '' then return rev == false end
  return rev == it.expect
end

if mode == 'all' then
  for j, it in ipairs(items) do
    if not matches(it) then return {0, j} end
  end
end

local horizon = tonumber(redis.call('HGET', META, 'horizon'))
local head = ready_head()
local ring = false
local out = {}
for j, it in ipairs(items) do
  if mode == 'all' or matches(it) then
    local key = P .. 't:' .. it.id
    local cur = redis.call('HMGET', key, 's', 'n', 'k')
    if cur[1] then                                    -- take it out of where it is
      unplace(it.id, cur[1], cur[2] or '', cur[3] or nil)
      redis.call('DEL', key)
    else                                              -- a finished task whose hash expired
      local gone = redis.call('HGET', P .. 'xn', it.id)
      if gone then
        local bar = string.find(gone, '|', 1, true)
        unplace(it.id, string.sub(gone, 1, bar - 1), string.sub(gone, bar + 1), nil)
      end
    end
    redis.call('HSET', key, unpack(ARGV, it.first, it.last))
    if it.s == 'pending' then
      if tonumber(it.k) <= horizon then
        redis.call('ZADD', P .. 'ready', it.score, it.id)
        if head == nil or tonumber(it.score) < head then ring = true end
      else
        redis.call('ZADD', cell(tonumber(it.k)), it.score, it.id)
      end
      tick_count(it.k, 1)
    elseif it.s == 'running' then
      redis.call('ZADD', P .. 'running', it.score, it.id)
    else
      redis.call('ZADD', P .. 'x:' .. it.s, it.score, it.id)
      redis.call('HSET', P .. 'xn', it.id, it.s .. '|' .. it.name)
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
    count(it.s, it.name, 1)
    out[j] = 1
  else
    out[j] = 0
  end
end
if ring then redis.call('PUBLISH', channel, '!') end
if mode == 'all' then return {1} end
return out
"""

#: Take up to ``limit`` ready tasks due by the server's clock, earliest first, for ``owner``.
#: ARGV: owner, limit, lease in us, '1' if the owner is the caller itself, heartbeat TTL in ms.
#: A claim by an owner with no heartbeat (not a live process) gets a lease that has already
#: run out, so whoever recovers abandoned tasks takes them back at once.
#: Returns {started, lease, score of the earliest ready task left or '', id, record, ...}.
CLAIM = _PRELUDE + r"""
local owner, limit, lease_us = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now, started = now_us()
local alive = P .. 'alive:' .. owner
local deadline = now
if ARGV[4] == '1' then
  redis.call('SET', alive, '1', 'PX', ARGV[5])
  deadline = now + lease_us
elseif redis.call('PEXPIRE', alive, ARGV[5]) == 1 then
  deadline = now + lease_us
end
local lease = secs(deadline)
local taken = {}
if limit > 0 then
  local ids = redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local key = P .. 't:' .. id
    local h = redis.call('HMGET', key, 's', 'n', 'k', 'v', 'a', 'r')
    redis.call('ZREM', P .. 'ready', id)
    if h[1] == 'pending' then
      redis.call('HSET', key, 's', 'running', 'o', owner, 'st', started, 'l', lease,
                 'v', fmt(tonumber(h[4]) + 1), 'a', fmt(tonumber(h[5]) + 1))
      redis.call('HDEL', key, 'f', 'k')
      redis.call('ZADD', P .. 'running', deadline, id)
      tick_count(h[3], -1)
      count('pending', h[2], -1)
      count('running', h[2], 1)
      taken[#taken + 1] = id
      taken[#taken + 1] = h[6]
    end
  end
end
local head = ready_head()
local out = {started, lease, head and fmt(head) or ''}
for _, v in ipairs(taken) do out[#out + 1] = v end
return out
"""

#: Make ready the pending tasks of ticks <= through, oldest first, at most ``limit``.
#: ARGV: through, limit, leader token, bell channel.  Returns {horizon, moved, complete}.
ADVANCE = _PRELUDE + r"""
local through, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_us()
local horizon = tonumber(redis.call('HGET', META, 'horizon'))
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
        redis.call('ZADD', P .. 'ready', members[m + 1], members[m])
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
if first ~= nil and (head == nil or first < head) then redis.call('PUBLISH', ARGV[4], '!') end
return {fmt(reached), moved, reached >= through and 1 or 0}
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
#: finished before a bound.  ARGV: bound in ms (exclusive), limit, status, ...  Returns n.
PURGE = _PRELUDE + r"""
local bound, limit = ARGV[1], tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local s = ARGV[i]
  if n >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', P .. 'x:' .. s, '-inf', '(' .. bound, 'LIMIT', 0, limit - n)
  for _, id in ipairs(ids) do
    local key = P .. 't:' .. id
    local gone = redis.call('HGET', P .. 'xn', id)
    local name = gone and string.sub(gone, string.find(gone, '|', 1, true) + 1) or ''
    local cur = redis.call('HGET', key, 's')
    if cur == false or cur == s then
      redis.call('DEL', key)
      count(s, name, -1)
      n = n + 1
    end
    redis.call('ZREM', P .. 'x:' .. s, id)
    redis.call('HDEL', P .. 'xn', id)
  end
end
return n
"""

#: Take or keep the ticking role; refresh the caller's heartbeat.
#: ARGV: token, role TTL in ms, heartbeat TTL in ms.  Returns 1 if the caller holds the role.
LEAD = r"""#!lua
local P = string.sub(KEYS[1], 1, -5)
redis.call('SET', P .. 'alive:' .. ARGV[1], '1', 'PX', ARGV[3])
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
redis.call('ZADD', P .. 'broken', 0, id)
return 1
"""
