"""Flow control's pure rules (timewheel/flow.py), without a store, a thread or a clock: what
users write is checked, the admission never exceeds a limit and parks only what a full limit
holds back, a rate's sliding log never lets more than its count into any window (simulated over
time), and what a debounced call does to the records of its id."""

from __future__ import annotations

import inspect
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timewheel import flow
from timewheel.records import PENDING, SUCCEEDED, start_run

from .conftest import examples, make_record, tally

pytestmark = pytest.mark.properties


# -- what users write ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [("5/s", (5, 1.0)), ("100/m", (100, 60.0)), ("10/h", (10, 3600.0)),
                                       ("3/d", (3, 86400.0)), ("5/10s", (5, 10.0)), (" 2 / 0.5s ", (2, 0.5))])
def test_rates_people_write(text: str, want: tuple) -> None:
    assert flow.parse_rate(text) == want


@pytest.mark.parametrize("bad", ["5/fortnight", "5", "/s", "0/s", "-1/s", "5/0s", "5/s/s", 5, None, "1e3/s",
                                 "2000000/s", "5/8d"])
def test_rates_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        flow.parse_rate(bad)


@given(st.integers(1, 1_000_000), st.sampled_from(["s", "m", "h", "d"]))
def test_a_rate_reads_back_as_it_is_shown(n: int, unit: str) -> None:
    rate, per = flow.parse_rate(f"{n}/{unit}")
    assert flow.parse_rate(flow.rate_text(rate, per)) == (rate, per)


@pytest.mark.parametrize("bad", ["", " q", "a:b", "a,b", "x" * 65, "tab\there", 5, None, "é"])
def test_queue_names_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="queue"):
        flow.check_queue(bad)


def test_queue_lists() -> None:
    assert flow.check_queues(None) is None
    assert flow.check_queues(["a", "b", "a"]) == frozenset({"a", "b"})
    for bad in ("emails", [], ["ok", "no:colon"], 5):
        with pytest.raises(ValueError):
            flow.check_queues(bad)


@pytest.mark.parametrize("bad", [101, -101, 1000, True, 1.5, "1", None])
def test_priorities_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="priority"):
        flow.check_priority(bad)


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "2", 10 ** 7])
def test_concurrency_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        flow.check_concurrency(bad)


def test_keys_name_a_parameter_or_call_a_callable() -> None:
    def send(customer_id, subject="hi", *rest, **more): ...
    sig = inspect.signature(send)
    by_param = flow.key_function(sig, "customer_id", "send")
    assert by_param((7,), {}) == "7" and by_param((), {"customer_id": "ann"}) == "ann"
    by_default = flow.key_function(sig, "subject", "send")
    assert by_default((1,), {}) == "hi"                   # a default counts as the value
    by_call = flow.key_function(sig, lambda customer_id, *a, **k: customer_id % 3, "send")
    assert by_call((7,), {}) == "1"
    for bad in ("nope", "rest", "more", 5, ""):
        with pytest.raises(ValueError, match="key"):
            flow.key_function(sig, bad, "send")
    with pytest.raises(ValueError, match="raised ZeroDivisionError"):
        flow.key_function(sig, lambda *a: 1 / 0, "send")((1,), {})
    assert flow.key_text("1") != flow.key_text(1) or flow.key_text(1) == "1"
    with pytest.raises(ValueError):
        flow.key_text("x" * 201)


def test_shared_limits() -> None:
    smtp = flow.shared_limit("smtp", 3, "5/s")
    assert smtp == flow.SharedLimit("smtp", 3, 5, 1.0) and smtp.limit() == flow.Limit("limit:smtp", 3, 5, 1.0)
    for args in (("", 1, None), ("x", None, None), ("x", 0, None), ("x", None, "5/fortnight")):
        with pytest.raises(ValueError):
            flow.shared_limit(*args)
    assert flow.check_limits(smtp) == (smtp,) and flow.check_limits([smtp]) == (smtp,)
    with pytest.raises(ValueError):
        flow.check_limits("smtp")
    limits = flow.task_limits("send", 2, (5, 1.0), [smtp, smtp], "ann")
    assert limits == (flow.Limit("task:send:ann", 2, 5, 1.0), smtp.limit())     # each once
    # what a record stores is plain data: it pickles without naming a class
    plain = tuple(tuple(x) for x in limits)
    assert b"flow" not in pickle.dumps(plain)


# -- admission -------------------------------------------------------------------------------------

KEYS = ["a", "b", "c"]
limits_ = st.lists(st.sampled_from(KEYS), max_size=3, unique=True)


@st.composite
def situations(draw):
    specs = {k: flow.Limit(k, draw(st.integers(0, 3)), draw(st.integers(0, 4)), 1.0) for k in KEYS}
    now = 100.0
    usage = {k: flow.Usage(draw(st.integers(0, 4)),
                           sorted(draw(st.lists(st.floats(now - 0.999, now), max_size=5))))
             for k in KEYS}
    cands = [tuple(specs[k] for k in draw(limits_)) for _ in range(draw(st.integers(0, 12)))]
    return specs, usage, cands, now, draw(st.integers(0, 6)), draw(st.integers(0, 4))


@settings(max_examples=examples(300))
@given(situations())
def test_admission_never_exceeds_a_limit_and_parks_only_what_a_full_one_holds(s) -> None:
    specs, usage, cands, now, room, queued = s
    adm = flow.Admission(lambda lim: usage[lim.key], now, room, queued)
    started = {k: 0 for k in KEYS}
    n_start = n_queue = 0
    for lims in cands:
        v = adm.offer(lims)
        tally("admission: candidates offered")
        if v.kind == flow.START:
            n_start += 1
            for lim in lims:
                started[lim.key] += 1
        elif v.kind == flow.QUEUE:
            n_queue += 1
            assert not lims and n_start == room        # only unlimited tasks queue, once room is full
        elif v.kind == flow.PARK:
            lim = v.limit
            u = usage[lim.key]
            full_c = lim.concurrency and u.running + started[lim.key] >= lim.concurrency
            full_r = lim.rate and len(u.starts) + started[lim.key] >= lim.rate
            assert full_c or full_r                    # a limit that is really full at that point
            assert (v.until is None) == bool(full_c)
            if v.until is not None:
                assert v.until > now - 1e-9
        else:
            assert v.kind == flow.LEAVE and (room - n_start == 0)
    assert n_start <= room and n_queue <= queued
    for k in KEYS:
        lim, u = specs[k], usage[k]
        if lim.concurrency:
            assert started[k] == 0 or u.running + started[k] <= lim.concurrency
        if lim.rate:
            assert started[k] == 0 or len(u.starts) + started[k] <= lim.rate


@settings(max_examples=examples(300))
@given(st.lists(st.floats(0.001, 0.999), max_size=30), st.integers(1, 250), st.integers(0, 5))
def test_next_opening_is_the_first_time_a_batch_fits_again(offsets, rate, taken) -> None:
    now, per = 50.0, 1.0
    starts = sorted(now - o for o in offsets)
    at = flow.next_opening(starts, rate, per, now, taken)
    log = starts + [now] * taken

    def room(t: float) -> int:
        return rate - sum(1 for x in log if x > t - per)
    if len(log) < rate:
        assert at == now
        return
    batch = min(flow.reopen_batch(rate), rate)
    assert at > now - 1e-9 and room(at) >= batch          # at it, a batch fits
    assert room(at - 2e-6) < batch or at == now            # and not a moment before


def _simulate(events, rate: int, per: float, conc: int) -> list[float]:
    """A store in miniature: claims at the given times admit through Admission, runs end
    after their duration; parked tasks come back when a slot frees or their window reopens,
    as every store does.  Returns the start times."""
    key = "k"
    lim = (key, conc, rate, per)
    starts: list[float] = []
    running: dict[int, float] = {}                # task -> end time
    waiting = list(range(len(events)))            # due tasks, in order
    parked: list[int] = []
    reopen = None
    for t, (room, duration) in sorted(enumerate(events), key=lambda e: e[0]):
        now = float(t) * 0.05
        for task, end in list(running.items()):
            if end <= now:
                del running[task]
                if parked:
                    waiting.insert(0, parked.pop(0))        # a freed slot lets one back in
        if reopen is not None and reopen <= now and parked:
            waiting[:0], parked = parked, []
            reopen = None
        window = [s for s in starts if s > now - per]
        adm = flow.Admission(lambda _, w=window: flow.Usage(len(running), w), now, room)
        left = []
        for task in waiting:
            v = adm.offer((lim,))
            if v.kind == flow.START:
                starts.append(now)
                running[task] = now + duration
            elif v.kind == flow.PARK:
                parked.append(task)
                if v.until is not None:
                    reopen = v.until if reopen is None else min(reopen, v.until)
            else:
                left.append(task)
        waiting = left
        assert not conc or len(running) <= conc, (now, running)
    return starts


@settings(max_examples=examples(200))
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0.0, 0.3)), min_size=1, max_size=80),
       st.integers(1, 6), st.sampled_from([0.1, 0.25, 1.0]), st.integers(0, 4))
def test_no_window_ever_holds_more_starts_than_the_rate(events, rate, per, conc) -> None:
    starts = _simulate(events, rate, per, conc)
    tally("rate simulation: starts", len(starts))
    for i, s in enumerate(starts):                    # every window [s, s + per)
        assert sum(1 for x in starts[i:] if x < s + per) <= rate, (s, starts)


# -- debounce --------------------------------------------------------------------------------------

def _call(now: float, payload: bytes = b"new") -> object:
    return make_record("d", now, payload=payload, limits=(tuple(flow.debounce_limit("d")),))


def test_a_pending_run_takes_the_call_and_moves_its_eta_but_never_past_max_wait() -> None:
    first = make_record("d", 12.0, payload=b"old", first_call=10.0, max_wait=5.0)
    old, new = flow.debounced(first, None, _call(11.0), 11.0, 2.0, None)
    assert old is first and new.id == "d" and new.payload == b"new"
    assert new.eta == 13.0 and new.first_call == 10.0              # 2 s after this call
    old, new = flow.debounced(first, None, _call(14.0), 14.0, 2.0, None)
    assert new.eta == 15.0                                          # capped: first call + 5 s


def test_a_call_while_it_runs_makes_one_more_run_after_it() -> None:
    running = start_run(make_record("d", 1.0, first_call=0.0), "o", 1.0)
    old, new = flow.debounced(running, None, _call(3.0), 3.0, 2.0, 4.0)
    assert old is None and new.id == "d~next" and new.status == PENDING
    assert new.first_call == 3.0 and new.eta == 5.0 and new.max_wait == 4.0
    assert flow.debounce_limit(new.id) == flow.debounce_limit("d") == flow.Limit("id:d", 1)
    # the follow-up runs; a call now goes back to the main id (finished: replaced)
    done = make_record("d", 1.0)._replace(status=SUCCEEDED)
    follow = start_run(new, "o", 5.0)
    old, again = flow.debounced(done, follow, _call(6.0), 6.0, 2.0, None)
    assert old is done and again.id == "d" and again.eta == 8.0


def test_nothing_stored_starts_a_run() -> None:
    old, new = flow.debounced(None, None, _call(7.0), 7.0, 1.5, 3.0)
    assert old is None and (new.id, new.eta, new.first_call, new.max_wait) == ("d", 8.5, 7.0, 3.0)


@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=40), st.floats(0.1, 3.0),
       st.none() | st.floats(0.1, 5.0))
def test_a_debounced_run_is_never_due_past_max_wait_nor_before_the_last_call_plus_debounce(
        gaps, debounce, max_wait) -> None:
    rec = None
    now = 0.0
    for i, gap in enumerate(gaps):
        now += gap
        before = rec
        old, rec = flow.debounced(rec, None, _call(now), now, debounce, max_wait)
        assert rec.status == PENDING and old is before and (i == 0) == (old is None)
        if max_wait is not None:
            assert rec.eta <= rec.first_call + max_wait + 1e-9
        assert rec.eta == pytest.approx(min(now + debounce, rec.first_call + (max_wait or 1e18)))
    assert rec.first_call == pytest.approx(gaps[0])


def test_the_follow_up_id_pairs_with_the_main_one() -> None:
    assert flow.follow_id("a") == "a~next" and flow.follow_id("a~next") == "a"
    assert flow.debounce_limit("a~next") == flow.debounce_limit("a")
