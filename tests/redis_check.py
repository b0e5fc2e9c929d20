"""The Redis store's invariants, read with plain redis-py commands (no timewheel code but the
record decoder and the wheel's arithmetic): every task sits in exactly the index its status
says, every index entry is a task of that status, and the counters equal a recount."""

from __future__ import annotations

from collections import Counter

import redis

from timewheel.records import TERMINAL, decode_record
from timewheel.store.base import eta_us, finished_ms
from timewheel.wheel import Wheel


def check_redis_store(url: str, namespace: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        _check(r, "{" + namespace + "}:")
    finally:
        r.close()


def _zset(r: redis.Redis, key: str) -> dict[str, float]:
    return {m.decode(): s for m, s in r.zrange(key, 0, -1, withscores=True)}


def _check(r: redis.Redis, p: str) -> None:
    meta = {k.decode(): v.decode() for k, v in r.hgetall(p + "meta").items()}
    if not meta:
        return
    wheel = Wheel(slots=int(meta["slots"]), tick=float(meta["tick"]))
    horizon = int(meta["horizon"])
    ready, running, broken = _zset(r, p + "ready"), _zset(r, p + "running"), _zset(r, p + "broken")
    finished = {s: _zset(r, p + "x:" + s) for s in TERMINAL}
    xn = {k.decode(): v.decode() for k, v in r.hgetall(p + "xn").items()}
    glob = p.replace("{", "\\{").replace("}", "\\}")
    cells = {k.decode(): _zset(r, k.decode()) for k in r.scan_iter(match=glob + "w:*")}
    cells.update({k.decode(): _zset(r, k.decode()) for k in r.scan_iter(match=glob + "wb:*")})
    bands = {b.decode(): _zset(r, p + "ready:" + b.decode()) for b in r.zrange(p + "bands", 0, -1)}
    parked = {k.decode()[len(p) + 5:]: _zset(r, k.decode()) for k in r.scan_iter(match=glob + "park:*")}
    held = {k.decode()[len(p) + 5:]: {m.decode() for m in r.smembers(k)}
            for k in r.scan_iter(match=glob + "held:*")}
    waiting = _zset(r, p + "waiting")          # dependents waiting for their dependencies (issue 23)
    dq = {k.decode()[len(p) + 3:]: {m.decode() for m in r.smembers(k)}
          for k in r.scan_iter(match=glob + "dq:*")}
    holding: dict = {}
    states: Counter = Counter()
    ticks: Counter = Counter()
    seen_pending: set[str] = set()
    tasks = [k.decode() for k in r.scan_iter(match=glob + "t:*", count=1000)]
    for key in tasks:
        task_id = key[len(p) + 2:]
        h = r.hgetall(key)
        s, name = h[b"s"].decode(), h[b"n"].decode()
        states[(s, name)] += 1
        if s == "broken":
            assert task_id in broken, key
            continue
        rec = decode_record(h[b"r"])
        assert rec.id == task_id and rec.name == name, key
        assert int(h[b"v"]) >= rec.rev, key
        band = ("" if rec.queue == "default" and not rec.priority
                else "%s:%03d" % (rec.queue, 100 - rec.priority))
        assert (h.get(b"q") or b"").decode() == band, (key, h.get(b"q"), band)
        if s == "pending":
            t = wheel.due_tick(rec.eta)
            assert int(h[b"k"]) == t, (key, h[b"k"], t)
            cell = f"{p}{'wb' if band else 'w'}:{t % wheel.slots}:{t // wheel.slots}"
            queue = bands.get(band, {}) if band else ready
            pk = h.get(b"pk")
            in_ready, in_cell = task_id in queue, task_id in cells.get(cell, {})
            in_park = [k for k, members in parked.items() if task_id in members]
            in_wait = task_id in waiting
            assert in_ready + in_cell + len(in_park) + in_wait == 1, (key, in_ready, in_cell, in_park)
            assert in_wait == (rec.waiting > 0) and (h.get(b"dw") is not None) == in_wait, key
            if in_wait:                       # on as many waiting sets as its record counts
                assert waiting[task_id] == eta_us(rec.eta), key
                assert sum(task_id in members for members in dq.values()) == rec.waiting, key
            elif in_park:
                assert pk is not None and in_park == [pk.decode()] and int(h[b"pe"]) == eta_us(rec.eta), key
            else:
                assert pk is None, key
                assert (queue if in_ready else cells[cell])[task_id] == eta_us(rec.eta), key
                assert in_ready or t > horizon, (key, t, horizon)
            assert r.ttl(key) == -1, key
            ticks[t] += 1
            seen_pending.add(task_id)
        elif s == "running":
            assert task_id in running and h.get(b"o"), key
            for lim in rec.limits:            # a running task holds a slot of each of its limits
                assert task_id in held.get(lim[0], ()), (key, lim)
                holding.setdefault(lim[0], set()).add(task_id)
            assert r.ttl(key) == -1, key
        else:
            assert s in TERMINAL, key
            assert finished[s].get(task_id) == finished_ms(float(h[b"f"])), key
            assert xn.get(task_id) == f"{s}|{name}", key
    ids = {k[len(p) + 2:] for k in tasks}
    for task_id in list(ready) + [i for c in list(cells.values()) + list(bands.values())
                                  + list(parked.values()) + [waiting] for i in c]:
        assert task_id in seen_pending, f"index entry {task_id} is not a pending task"
    for lim, members in held.items():         # no slot held but by a running task of that limit
        assert members == holding.get(lim, set()), (lim, members, holding.get(lim))
    for task_id in running:
        assert task_id in ids and r.hget(p + "t:" + task_id, "s") == b"running", task_id
    for s, members in finished.items():
        for task_id in members:
            assert xn.get(task_id, "").startswith(s + "|"), task_id
            if task_id not in ids:            # its hash expired (result TTL): still counted
                states[(s, xn[task_id].partition("|")[2])] += 1
    assert len(xn) == sum(len(m) for m in finished.values())
    stored = Counter({tuple(k.decode().split("|", 1)): int(v) for k, v in r.hgetall(p + "counts").items()})
    assert stored == +states, f"counts {dict(stored)} != recount {dict(+states)}"
    tickn = Counter({int(k): int(v) for k, v in r.hgetall(p + "tickn").items()})
    assert tickn == +ticks, f"tickn {dict(tickn)} != recount {dict(+ticks)}"
    assert {int(m) for m in _zset(r, p + "ticks")} == set(ticks)
    slotn = Counter({int(k): int(v) for k, v in r.hgetall(p + "slotn").items()})
    assert slotn == Counter(t % wheel.slots for t in ticks)
    _check_batches(r, p)


def _check_batches(r: redis.Redis, p: str) -> None:
    """Each batch's counts (kept by the scripts) equal a recount of its members' hashes; no
    member of a batch that is not done is gone, and those are the open set."""
    from timewheel import batches as br
    still_open = set()
    for raw in r.zrange(p + "batches", 0, -1):
        batch_id = raw.decode()
        fields = ("d",) + br.CLASSES
        h = {c: v.decode() for c, v in zip(fields, r.hmget(p + "b:" + batch_id, *fields)) if v is not None}
        stored = {c: int(h[c]) for c in br.CLASSES if int(h.get(c, 0))}
        if "d" not in h:
            still_open.add(batch_id)
            assert not br.finished(stored), f"batch {batch_id} finished but not done"
        recount: dict = {}
        missing = 0
        for m in r.lrange(p + "bm:" + batch_id, 0, -1):
            s, b = r.hmget(p + "t:" + m.decode(), "s", "b")
            if s is None:
                missing += 1
            elif b is not None and b.decode() == batch_id:
                c = br.class_of(s.decode())
                recount[c] = recount.get(c, 0) + 1
        assert "d" in h or not missing, f"batch {batch_id}: {missing} member(s) gone before it was done"
        if not missing:
            assert stored == recount, f"batch {batch_id}: counts {stored} != recount {recount}"
    assert {m.decode() for m in r.smembers(p + "bopen")} == still_open
