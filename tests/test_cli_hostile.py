"""The command line on hostile input (issue 12): escape sequences, payloads built to explode,
tampered and corrupted stores, and any value of any option.

The promise: every command answers, or says in one line what is wrong (exit 1; exit 2 for a
usage error), within bounds of time and memory, and a read-only command never changes a byte
of the store.  The property and fuzz suites run a base number of cases by default and ten
times as many with ``-m slow``; the counts are reported at the end of the module.
"""

from __future__ import annotations

import collections
import json
import pickle
import resource
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timewheel.records import Outcome, TaskRecord, end_run
from timewheel.store import open_store
from timewheel.testing import console_script, measured
from timewheel.testing import processes as procs

from .cli_fixtures import fingerprint, invoke, populate, rec
from .conftest import SERIALIZERS

DEAD_OWNER = "999999:deadbeef:999999"
ESCAPES = ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]8;;http://evil/\x1b\\", "\x9b31m", "\u202eexe.txt",
           "\x07", "\x08\x08\x08", "\r", "\x1bP+q\x1b\\"]
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\x08", "\r", "\x90")

#: cases tried and outcomes, per suite, reported when the module ends
TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
#: damage the store let through as something other than a StoreError (reported, for the store)
SURPRISES: set[str] = set()
SCALES = [pytest.param(1, id="ci"),
          pytest.param(10, id="x10", marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]


@pytest.fixture(scope="module", autouse=True)
def report_counts(request: pytest.FixtureRequest):
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None or not TALLY:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for suite, counts in sorted(TALLY.items()):
            reporter.write_line(f"[hostile CLI] {suite}: "
                                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for surprise in sorted(SURPRISES):
            reporter.write_line(f"[hostile CLI] not a StoreError: {surprise}")


# -- helpers -----------------------------------------------------------------------------------

def check_answer(result: Result, what: Any, seconds: float, limit: float = 10.0) -> None:
    """The promise for one command: exit 0, 1 or 2; on an error one line on stderr; never a
    traceback; within ``limit`` seconds."""
    assert result.exit_code in (0, 1, 2), (what, result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, (SystemExit, type(None))), (what, repr(result.exception))
    # (a traceback's first line: a value drawn for an option may be the word itself, which the
    # usage error then quotes -- Hypothesis draws strings from the source's own literals)
    assert "Traceback (most recent call last)" not in result.output, (what, result.output)
    if result.exit_code:
        one_line = result.stderr.startswith("Error: ") and result.stderr.strip().count("\n") == 0
        assert one_line, (what, result.stderr)
    assert seconds < limit, (what, seconds)


def timed(*args: str) -> tuple[Result, float]:
    t0 = time.perf_counter()
    result = invoke(*args)
    return result, time.perf_counter() - t0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: Path, extra: int = 40, serializer: str = "pickle") -> Path:
    """A store with a task in every status and ``extra`` more pending ones, their arguments
    and results written with ``serializer`` (the store records it)."""
    s = open_store(str(path), serializer=serializer)
    try:
        now = time.time()
        populate(s, now, DEAD_OWNER, serializer=serializer)
        s.add([rec(f"x{i:03d}", "bulk" if i % 2 else "emails.send", now + 30 + 97 * i, (i,),
                   serializer=serializer) for i in range(extra)])
    finally:
        s.close()
    return path


@pytest.fixture(scope="module", params=SERIALIZERS)
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store every tampering starts from: once with pickled tasks, once with JSON ones."""
    return build(tmp_path_factory.mktemp("base") / "tasks.db", serializer=request.param)


def copy_of(base: Path, where: Path, name: str = "tasks.db") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    target = where / name
    shutil.copyfile(base, target)
    return target


def sql(path: Path, *statements: str, params: tuple = ()) -> None:
    con = sqlite3.connect(path)
    try:
        for s in statements:
            con.execute(s, params)
        con.commit()
    finally:
        con.close()


# -- escape sequences ---------------------------------------------------------------------------------

def test_escape_sequences_from_the_store_never_reach_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = open_store(str(path))
    now = time.time()
    evil = "".join(ESCAPES)
    s.add([rec("e-pending" + ESCAPES[1], "name" + evil, now + 60, (evil,), {"k" + evil: evil}),
           rec("e-failed", "fail" + ESCAPES[0], now - 1)])
    s.advance(s.wheel.current_tick(now), 10, "tests" + ESCAPES[1])
    (claimed,) = s.claim(DEAD_OWNER, now, 1).records
    failed = Outcome(False, now, now, error="boom" + evil, traceback="tb\n" + evil)
    s.swap([(claimed, end_run(claimed, failed))])
    s.close()
    ids = ["e-pending" + ESCAPES[1], "e-failed"]
    runs = [["inspect", str(path)], ["tasks", str(path)], ["tasks", str(path), "--fmt", "tsv"],
            ["stats", str(path)], ["timeline", str(path)], ["tasks", str(path), "--status", "failed"],
            ["show", str(path), ids[1]], ["show", str(path), ids[0]], ["show", str(path), ids[0], "--full"],
            ["show", str(path), "nope" + ESCAPES[0]], ["cancel", str(path), "nope" + ESCAPES[1]]]
    for args in runs:
        for extra in ([], ["--json"]):
            result = invoke(*args, *extra)
            assert result.exit_code in (0, 1), (args, result.output)
            for raw in RAW:
                assert raw not in result.stdout and raw not in result.stderr, (args, extra, raw)
    shown = invoke("show", str(path), ids[1]).stdout
    assert "boom\\x1b[2J\\x1b[H" in shown and "\\x1b]0;pwned\\x07" in shown      # visible, escaped
    # and through a pipe, from the console script itself
    piped = procs.run([console_script(), "show", str(path), ids[1]], capture_output=True, timeout=30)
    assert piped.returncode == 0 and b"\x1b" not in piped.stdout and b"\x07" not in piped.stdout
    assert b"\\x1b]0;pwned\\x07" in piped.stdout


# -- payloads built to explode --------------------------------------------------------------------

class Reduce:
    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> Any:
        return (self.fn, self.args)


def hostile_payloads() -> dict[str, bytes]:
    shared: list = []
    for _ in range(50):
        shared = [shared, shared]          # 2**50 leaves in 320 bytes
    return {
        "set-of-range": pickle.dumps(Reduce(set, Reduce(range, 10 ** 10)), 2),
        "deque": pickle.dumps(Reduce(collections.deque, Reduce(range, 10 ** 10), 10 ** 10), 2),
        "shared-nested-list": pickle.dumps(((shared,), {}), 4),
        "dict-keyed-by-shared-tuples": b"\x80\x04})" + b"2\x86" * 60 + b"K\x01s.",
        "bytearray": pickle.dumps(((Reduce(bytearray, 10 ** 11),), {})),
        "huge-length-field": b"\x80\x05\x8e" + (2 ** 62).to_bytes(8, "little") + b"x.",
    }


def test_hostile_payloads_are_shown_quickly_with_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    s = open_store(str(path))
    payloads = hostile_payloads()
    assert len(payloads["set-of-range"]) <= 80 and len(payloads["deque"]) <= 100
    assert len(payloads["shared-nested-list"]) <= 400
    s.add([TaskRecord(id=k, name="evil", eta=time.time() + 60, payload=v) for k, v in payloads.items()])
    s.close()
    before = fingerprint(path)
    for task_id in payloads:
        for extra in ([], ["--full", "--json"]):
            code, out, err, took, rss, _ = measured([console_script(), "show", str(path), task_id, *extra])
            TALLY["hostile payloads (console script)"]["runs"] += 1
            assert code == 0, (task_id, err)
            assert took < 5 and rss < 60, (task_id, extra, took, rss)      # seconds (a process start); MiB
            TALLY["hostile payloads (console script)"]["max MiB"] = max(
                TALLY["hostile payloads (console script)"]["max MiB"], round(rss))
    assert fingerprint(path) == before


# -- tampered stores --------------------------------------------------------------------------------

def _meta_value(value: Any) -> str:
    """An SQL literal of a metadata value as sqlitedict stores it (a pickle)."""
    return "x'" + pickle.dumps(value).hex() + "'"


class _Exploit:
    """Unpickled by the plain pickle module, it would run a command (it must never be)."""

    def __reduce__(self) -> tuple:
        return (subprocess.call, (["touch", "/tmp/timewheel-hostile-meta-ran"],))


def _meta(key: str, value: Any) -> str:
    return f"UPDATE timewheel_meta SET value = {_meta_value(value)} WHERE key = '{key}'"


TAMPERING = {
    "horizon deleted": ("DELETE FROM timewheel_meta WHERE key = 'horizon'", "bookkeeping is damaged"),
    "slots not a number": (_meta("slots", "abc"), "geometry is damaged"),
    "tick zero": (_meta("tick", 0), "geometry is damaged"),
    "horizon text": (_meta("horizon", "x"), "bookkeeping is damaged"),
    "horizon runs code": (_meta("horizon", _Exploit()), "damaged"),
    "format deleted": ("DELETE FROM timewheel_meta WHERE key = 'format'", "not a timewheel store"),
    "format unknown": (_meta("format", "timewheel/9"), "store format"),
    "format runs code": (_meta("format", _Exploit()), "metadata is damaged"),
    "metadata dropped": ("DROP TABLE timewheel_meta", "not a timewheel store"),
    "advanced text": (_meta("advanced", "soon"), "damaged"),
    "fresh row position garbage": ("UPDATE timewheel SET pos = 'n:xyz' WHERE key = 't:p-soon'", None),
    "wheel row position garbage": ("UPDATE timewheel SET pos = 'p:000001:xyz' WHERE key = 't:p-soon'", None),
    "finished position garbage": ("UPDATE timewheel SET pos = 'x:z:abc' WHERE key = 't:ok'", None),
    "ready position garbage": ("UPDATE timewheel SET pos = 'q:abc' WHERE key = 't:p-soon'", None),
    "garbage finished record": ("UPDATE timewheel SET value = x'00112233' WHERE key = 't:ok'", None),
    "garbage pending record": ("UPDATE timewheel SET value = 'junk' WHERE key = 't:p-soon'", None),
    "garbage running record": ("UPDATE timewheel SET value = x'80' WHERE key = 't:run'", None),
    "record is NULL": ("UPDATE timewheel SET value = NULL WHERE key = 't:bad'", None),
    "counts text": ("UPDATE timewheel_counts SET n = 'abc'", "counters are damaged"),
    "counts unknown state": ("UPDATE timewheel_counts SET state = 'zzz' WHERE state = 'pending' "
                             "AND name = 'bulk'", "counters are damaged"),
    "counts huge": ("UPDATE timewheel_counts SET n = 9223372036854775807", None),
    "ticks text": ("UPDATE timewheel_ticks SET n = 'abc'", None),
    "ticks far": ("UPDATE timewheel_ticks SET tick = 9223372036854775807 WHERE tick = "
                  "(SELECT max(tick) FROM timewheel_ticks)", None),
    "ticks negative": ("UPDATE timewheel_ticks SET tick = -tick", None),
    "leader blob": ("UPDATE timewheel_meta SET value = x'ff1b5b32' WHERE key = 'leader'", None),
    "counts table dropped": ("DROP TABLE timewheel_counts", "no such table"),
    "ticks table dropped": ("DROP TABLE timewheel_ticks", None),
    "names NULL": ("UPDATE timewheel SET name = NULL", None),
    "name with escapes": ("UPDATE timewheel SET name = x'1b5b33316d' WHERE key = 't:p-soon'", None),
    "running owner empty": ("UPDATE timewheel SET pos = 'r:' WHERE key = 't:run'", None),
    "a bell of nobody": ("INSERT INTO timewheel_meta (key, value) VALUES ('bell:x', x'00')", None),
    "a bell runs code": ("INSERT INTO timewheel_meta (key, value) "
                         f"VALUES ('bell:y', {_meta_value(_Exploit())})", None),
    "index dropped": ("DROP INDEX timewheel_pos", None),
}

HOSTILE_COMMANDS = [["inspect"], ["inspect", "--json", "--slots"], ["tasks", "--limit", "0"],
                    ["tasks", "--status", "broken"], ["tasks", "--status", "succeeded", "--json"],
                    ["tasks", "--after", "x005"], ["show", "ok"], ["show", "p-soon", "--full", "--json"],
                    ["stats"], ["timeline", "--json"], ["timeline", "--name", "bulk"],
                    ["purge", "--older-than", "0s", "--dry-run"]]
WRITES = [["cancel", "p-far"], ["retry", "bad"], ["purge", "--older-than", "100w"]]


@pytest.mark.parametrize("case", sorted(TAMPERING), ids=lambda c: c.replace(" ", "-"))
def test_a_tampered_store_gets_one_line_errors_never_tracebacks(base: Path, tmp_path: Path,
                                                                case: str) -> None:
    statement, expected = TAMPERING[case]
    path = copy_of(base, tmp_path)
    sql(path, statement)
    ran = Path("/tmp/timewheel-hostile-meta-ran")
    ran.unlink(missing_ok=True)
    before = fingerprint(path)
    codes = []
    for command in HOSTILE_COMMANDS:
        result, took = timed(command[0], str(path), *command[1:])
        check_answer(result, (case, command), took)
        if "cannot read the store" in result.stderr:       # the store raised no StoreError: noted
            SURPRISES.add(f"{case}: {command[0]}: {result.stderr.split('(', 1)[-1][:80]}")
        codes.append(result.exit_code)
        if expected is not None and result.exit_code:
            assert expected in result.stderr, (case, command, result.stderr)
    assert fingerprint(path) == before, case
    if expected is not None:
        assert 1 in codes, (case, codes)
    for command in WRITES:
        result, took = timed(command[0], str(path), *command[1:])
        check_answer(result, (case, command), took)
        if result.exit_code:
            assert fingerprint(path) == before, (case, command)      # refused: nothing written
        before = fingerprint(path)
    assert not ran.exists(), f"{case}: a metadata value ran code"
    TALLY["tampered stores"]["cases"] += 1
    TALLY["tampered stores"]["commands"] += len(HOSTILE_COMMANDS) + len(WRITES)


def test_tampered_stores_from_outside_the_process(base: Path, tmp_path: Path) -> None:
    """The same, through the console script, measuring each process's own peak memory."""
    for case in ("garbage finished record", "fresh row position garbage", "horizon deleted"):
        path = copy_of(base, tmp_path / case.replace(" ", "-"))
        sql(path, TAMPERING[case][0])
        before = fingerprint(path)
        for command in (["inspect"], ["tasks", "--limit", "0"], ["stats", "--json"]):
            code, out, err, took, rss, _ = measured([console_script(), command[0], str(path), *command[1:]])
            assert code in (0, 1) and "Traceback" not in err and err.count("\n") <= 1, (case, command, err)
            assert took < 10 and rss < 200, (case, command, took, rss)
        assert fingerprint(path) == before


def _varint(v: int) -> bytes:
    """SQLite's variable-length integer (a rowid in a table b-tree cell)."""
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(reversed(out))


def disorder_tick_counters(path: Path) -> None:
    """Corrupt the file as the fuzz suite once did (issue 19 item 3): the last tick counter's
    rowid, rewritten in place, now sorts between the first two, so the b-tree hands a range
    read ticks lower than it asked for -- the listing walked back to them for ever."""
    con = sqlite3.connect(path)
    ticks = [t for (t,) in con.execute("SELECT tick FROM timewheel_ticks ORDER BY tick")]
    con.close()
    assert len(ticks) >= 3 and ticks[1] - ticks[0] > 1
    old, new = _varint(ticks[-1]), _varint(ticks[0] + 1)
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    stored = [t for (t,) in con.execute("SELECT tick FROM timewheel_ticks")]
    con.close()
    assert stored != sorted(stored), "the corruption did not take"


def test_listings_of_a_store_whose_tick_counters_are_out_of_order_end(base: Path, tmp_path: Path) -> None:
    """Every command ends, in seconds, with a listing or a one-line error, on a copy of the kind
    of damaged file on which `timewheel tasks DB --limit 0` looped for ever."""
    path = copy_of(base, tmp_path)
    disorder_tick_counters(path)
    before = fingerprint(path)
    for command in HOSTILE_COMMANDS + [["tasks", "--status", "pending", "--limit", "0", "--json"],
                                       ["tasks", "--name", "bulk", "--limit", "0"]]:
        t0 = time.monotonic()
        done = procs.run([console_script(), command[0], str(path), *command[1:]], capture_output=True,
                         text=True, timeout=30)
        assert time.monotonic() - t0 < 10, command
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, (command, done.stderr)
        if done.returncode:
            assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
        if command[:3] == ["tasks", "--limit", "0"]:
            assert "the file is damaged (its tick counters are out of order)" in done.stderr
    assert fingerprint(path) == before


def _record_tuple(**wrong: Any) -> bytes:
    values = list(rec("w", "n", time.time() + 60))         # every field, as a plain tuple
    names = list(TaskRecord._fields)
    for k, v in wrong.items():
        values[names.index(k)] = v
    return pickle.dumps(tuple(values))


def test_records_whose_fields_have_the_wrong_types_are_listed_as_broken(base: Path, tmp_path: Path) -> None:
    path = copy_of(base, tmp_path)
    nested: list = []
    for _ in range(40):
        nested = [nested, nested]
    blobs = {"ok": _record_tuple(name=nested), "bad": _record_tuple(eta="tomorrow"),
             "gone": _record_tuple(status="exploded"), "late": _record_tuple(rev=-1),
             "run": _record_tuple(payload="not bytes")}
    for key, blob in blobs.items():
        sql(path, "UPDATE timewheel SET value = ? WHERE key = ?", params=(blob, "t:" + key))
    before = fingerprint(path)
    for command in HOSTILE_COMMANDS:
        result, took = timed(command[0], str(path), *command[1:])
        check_answer(result, command, took, limit=3.0)
        assert result.exit_code == 0, (command, result.stderr)
    listing = invoke("tasks", str(path), "--limit", "0", "--json")
    rows = {t["id"]: t for t in json.loads(listing.stdout)["tasks"]}
    for key in blobs:
        assert rows[key]["status"] == "broken", key
    assert "field name holds list (a container)" in rows["ok"]["error"]
    assert "field eta holds str" in rows["bad"]["error"] and "field status" in rows["gone"]["error"]
    assert "not a timewheel record" in invoke("show", str(path), "bad").stdout
    assert fingerprint(path) == before


def test_tasks_status_broken_lists_undecodable_records_with_their_reason(base: Path, tmp_path: Path) -> None:
    path = copy_of(base, tmp_path)
    sql(path, "UPDATE timewheel SET value = x'00112233' WHERE key = 't:ok'",
        "UPDATE timewheel SET value = 'junk', pos = 'b:' WHERE key = 't:p-far'")
    data = json.loads(invoke("tasks", str(path), "--status", "broken", "--json").stdout)
    assert [t["id"] for t in data["tasks"]] == ["p-far"]
    assert "not a timewheel record" in data["tasks"][0]["error"]
    everything = json.loads(invoke("tasks", str(path), "--limit", "0", "--json").stdout)
    broken = {t["id"]: t["error"] for t in everything["tasks"] if t["status"] == "broken"}
    assert set(broken) == {"ok", "p-far"} and all("not a timewheel record" in e for e in broken.values())
    text = invoke("tasks", str(path), "--status", "broken").stdout
    assert "p-far" in text and "not a timewheel record" in text


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_a_truncated_store_is_refused_without_creating_files_beside_it(base: Path, tmp_path: Path,
                                                                       keep: float) -> None:
    """Issue 12.5: a read that fails on a truncated file must not leave -wal/-shm behind."""
    path = copy_of(base, tmp_path)
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    before = fingerprint(path)
    for command in HOSTILE_COMMANDS:
        result, took = timed(command[0], str(path), *command[1:])
        check_answer(result, command, took)
    assert fingerprint(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["tasks.db"]


# -- timeline windows ------------------------------------------------------------------------------

@pytest.mark.parametrize("hours", ["inf", "nan", "-inf", "1e12", "1e8", "87841", "0", "-1", "1e400", "x", ""])
def test_timeline_hours_out_of_range_are_usage_errors(base: Path, hours: str) -> None:
    before = fingerprint(base)
    result, took = timed("timeline", str(base), "--hours", hours)
    assert result.exit_code == 2 and took < 2, (hours, result.output)
    assert result.stderr.strip().count("\n") == 0 and "--hours" in result.stderr
    assert fingerprint(base) == before


def test_the_longest_timeline_is_bounded(base: Path) -> None:
    for hours in ("87840", "0.0001"):
        result, took = timed("timeline", str(base), "--hours", hours, "--json")
        assert result.exit_code == 0 and took < 3, (hours, result.output)
        assert len(json.loads(result.stdout)["buckets"]) <= 2000


# -- any value of any option -------------------------------------------------------------------------

ODD = ["", " ", "-", "--", "-1", "0", "1", "7", "1e400", "inf", "-inf", "nan", "1e308", "0x10", "1_000", " 5",
       "5 ", "10" * 30, "--json", "-h", "\x1b[31m", "\u202e", "1h30m", "7d", "99999999999999999999w", "0s",
       "pending", "broken", "failed", "p-soon", "ok", "emails.send", "simple", "tsv", "DEBUG", "x:y",
       "a" * 300]
values = st.one_of(st.sampled_from(ODD), st.text(max_size=12), st.integers(-10 ** 20, 10 ** 20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))

#: command -> (positional arguments after the store, its options); None: a flag
OPTIONS: dict[str, tuple[list[str], dict[str, Optional[bool]]]] = {
    "inspect": ([], {"--slots": None, "--next": True, "--fmt": True, "--json": None, "-t": None}),
    "tasks": ([], {"--status": True, "--name": True, "--id": True, "--limit": True, "--after": True,
                   "--fmt": True, "--json": None}),
    "show": (["ID"], {"--full": None, "--fmt": True, "--json": None}),
    "stats": ([], {"--recent": True, "--fmt": True, "--json": None}),
    "timeline": ([], {"--hours": True, "--name": True, "--width": True, "--fmt": True, "--json": None}),
    "cancel": (["ID"], {"--timeout": True, "--json": None}),
    "retry": (["ID"], {"--all-failed": None, "--name": True, "--timeout": True, "--json": None}),
    "purge": ([], {"--older-than": True, "--status": True, "--dry-run": None, "--timeout": True,
                   "--json": None}),
}
READ_ONLY = {"inspect", "tasks", "show", "stats", "timeline"}


@st.composite
def invocations(draw: st.DrawFn) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    positional, options = OPTIONS[command]
    args = [draw(values) for _ in positional]
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)):
        args.append(option)
        if options[option]:
            args.append(draw(values))
    return command, args


def _one_invocation(store: Path, work: Path, command: str, args: list[str], suite: str) -> None:
    target = store
    if command not in READ_ONLY:
        target = copy_of(store, work / f"w{TALLY[suite]['cases']}")
    before = fingerprint(target)
    result, took = timed(command, str(target), *args)
    check_answer(result, (command, args), took)
    refused = result.exit_code != 0 or (command == "purge" and "--dry-run" in args)
    if command in READ_ONLY or refused:
        assert fingerprint(target) == before, (command, args, result.output)
    TALLY[suite]["cases"] += 1
    TALLY[suite][f"exit {result.exit_code}"] += 1


@pytest.mark.parametrize("scale", SCALES)
def test_property_any_value_of_any_option_is_answered_or_refused_in_one_line(
        base: Path, tmp_path: Path, scale: int) -> None:
    store = copy_of(base, tmp_path / "read")
    before = fingerprint(store)

    @settings(max_examples=1000 * scale, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(invocations())
    def run(case: tuple[str, list[str]]) -> None:
        _one_invocation(store, tmp_path / "write", case[0], case[1], "options (property)")

    run()
    assert fingerprint(store) == before


@pytest.mark.parametrize("scale", SCALES)
def test_property_run_refuses_bad_options_in_one_line(tmp_path: Path, scale: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "twapp_plain.py").write_text("number = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    names = (st.from_regex(r"tw_no_such_[a-z]{1,8}(:[a-z]{1,5})?", fullmatch=True)
             | st.just("twapp_plain:number"))

    @settings(max_examples=150 * scale, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(names, st.lists(st.sampled_from(["--grace", "--log-level", "--json", "--fmt", "-t"]), max_size=3),
           st.lists(values, min_size=3, max_size=3))
    def run(app: str, options: list[str], vals: list[str]) -> None:
        args = [app]
        for option, value in zip(options, vals):
            args += [option] if option in ("--json", "-t") else [option, value]
        result, took = timed("run", *args)
        check_answer(result, args, took)
        assert result.exit_code in (1, 2), (args, result.output)    # never starts anything
        TALLY["run options (property)"]["cases"] += 1
        TALLY["run options (property)"][f"exit {result.exit_code}"] += 1

    run()


# -- corruption fuzz ---------------------------------------------------------------------------------

cells = st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=True),
                  st.text(max_size=40), st.binary(max_size=60),
                  st.sampled_from(["p:", "q:", "r:", "x:s:", "b:", "n:", "p:000001:000000000000001:",
                                   "x:f:000000000000000", "q:000000000000000000", "r:1:2:3"]))
edits = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=24)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("row"), st.lists(st.tuples(
        st.sampled_from(["timewheel", "timewheel_counts", "timewheel_ticks"]),
        st.sampled_from(["update", "delete", "insert"]), st.integers(0, 10 ** 6),
        st.sampled_from(["key", "value", "pos", "name", "state", "n", "tick"]), cells),
        min_size=1, max_size=5)),
)
_COLUMNS = {"timewheel": ("key", "value", "pos", "name"), "timewheel_counts": ("state", "name", "n"),
            "timewheel_ticks": ("tick", "n")}


def corrupt(path: Path, edit: tuple) -> None:
    kind = edit[0]
    if kind == "flip":
        data = bytearray(path.read_bytes())
        for at, mask in edit[1]:
            data[min(len(data) - 1, int(at * len(data)))] ^= mask
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(edit[1] * len(data))])
    else:
        con = sqlite3.connect(path)
        try:
            for table, op, pick, column, value in edit[1]:
                columns = _COLUMNS[table]
                column = column if column in columns else columns[pick % len(columns)]
                keys = [r[0] for r in con.execute(f"SELECT {columns[0]} FROM {table} ORDER BY 1")]
                key = keys[pick % len(keys)] if keys else None
                try:
                    if op == "update" and key is not None:
                        con.execute(f"UPDATE {table} SET {column} = ? WHERE {columns[0]} = ?", (value, key))
                    elif op == "delete" and key is not None:
                        con.execute(f"DELETE FROM {table} WHERE {columns[0]} = ?", (key,))
                    elif op == "insert":
                        row = [value if c == column else (f"t:fuzz{pick}" if c == "key" else pick)
                               for c in columns]
                        con.execute(f"INSERT INTO {table} ({','.join(columns)}) VALUES "
                                    f"({','.join('?' * len(columns))})", row)
                except (sqlite3.IntegrityError, sqlite3.OperationalError, OverflowError):
                    pass                     # the schema refused that edit: the next one
            con.commit()
        finally:
            con.close()


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_corrupted_stores_are_answered_in_one_line_and_never_written(
        base: Path, tmp_path: Path, scale: int) -> None:
    suite = "corruption fuzz"
    rss0 = peak_rss_mb()

    @settings(max_examples=250 * scale, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(edits)
    def run(edit: tuple) -> None:
        n = TALLY[suite]["cases"]
        path = copy_of(base, tmp_path / f"c{n}")
        corrupt(path, edit)
        before = fingerprint(path)
        for command in HOSTILE_COMMANDS:
            result, took = timed(command[0], str(path), *command[1:])
            check_answer(result, (edit, command), took)
            TALLY[suite][f"exit {result.exit_code}"] += 1
            TALLY[suite]["max ms"] = max(TALLY[suite]["max ms"], round(took * 1000))
        assert fingerprint(path) == before, edit                       # not a byte, not a file
        for command in WRITES:
            result, took = timed(command[0], str(path), *command[1:])
            check_answer(result, (edit, command), took)
            if result.exit_code:
                assert fingerprint(path) == before, (edit, command)
            before = fingerprint(path)
            TALLY[suite][f"exit {result.exit_code}"] += 1
        TALLY[suite]["cases"] += 1
        TALLY[suite]["commands"] += len(HOSTILE_COMMANDS) + len(WRITES)
        shutil.rmtree(path.parent)

    run()
    grown = peak_rss_mb() - rss0
    TALLY[suite]["peak MiB growth"] = max(TALLY[suite]["peak MiB growth"], round(grown))
    assert grown < 200, grown


# -- malformed JSON in a JSON store ------------------------------------------------------------------

def test_malformed_json_in_a_json_store_is_shown_with_its_reason(tmp_path: Path) -> None:
    """Payloads and results that are not what the JSON serializer writes are shown as 'cannot
    show' with the reason, by every command, in one line or a listing; a record value that is
    JSON text (what a tool writing the table by hand might put there) is listed as broken (a
    finished one here: a pending one is skipped by listings until the claim that meets it sets it
    aside, which test_json's test of malformed JSON under a running wheel covers)."""
    from .test_json import MALFORMED
    path = build(tmp_path / "tasks.db", extra=10, serializer="json")
    s = open_store(str(path), serializer="json")
    now = time.time()
    s.add([TaskRecord(id=f"m-{k}", name="emails.send", eta=now + 600, payload=v)
           for k, v in MALFORMED.items()] + [rec("bad-result", "emails.send", now - 1, serializer="json")])
    s.advance(s.wheel.current_tick(now), 1000, "tests")
    (claimed,) = s.claim(DEAD_OWNER, now, 1).records
    s.swap([(claimed, end_run(claimed, Outcome(True, now, now, result=b'{"result": {"$uuid": 1}}')))])
    s.close()
    sql(path, "UPDATE timewheel SET value = '{\"id\": \"ok\", \"name\": \"reports.build\"}' "
              "WHERE key = 't:ok'")
    before = fingerprint(path)
    for command in HOSTILE_COMMANDS:
        result, took = timed(command[0], str(path), *command[1:])
        check_answer(result, command, took)
        assert result.exit_code == 0, (command, result.stderr)
    for task_id in [f"m-{k}" for k in MALFORMED] + ["bad-result"]:
        result, took = timed("show", str(path), task_id, "--json")
        check_answer(result, task_id, took)
        shown = json.loads(result.stdout)
        if task_id == "bad-result":
            assert shown["args"] == "()" and "$uuid holds a int" in shown["result_error"], shown
        else:
            assert shown["args"] is None and shown["args_error"], (task_id, shown)
    listing = json.loads(invoke("tasks", str(path), "--limit", "0", "--json").stdout)
    assert [(t["id"], "not a timewheel record" in t["error"]) for t in listing["tasks"]
            if t["status"] == "broken"] == [("ok", True)]
    assert fingerprint(path) == before
