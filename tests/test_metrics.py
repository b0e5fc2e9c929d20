"""Prometheus metrics (timewheel.metrics), scraped over real HTTP."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from timewheel import TimeWheel
from timewheel.metrics import collector, exposition, instrument

from .conftest import wait_for
from .django_procs import samples


def value(got: dict, metric: str, /, **labels: str) -> float:
    return got.get((metric, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def served(db_path):
    """A wheel instrumented into its own registry, served by prometheus_client's server."""
    hu = TimeWheel(db_path, workers=2, tick=0.1, slots=600)
    registry = CollectorRegistry()
    instrument(hu, registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    def scrape() -> dict:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return samples(r.read().decode())

    yield hu, scrape
    server.shutdown()
    server.server_close()
    thread.join(5)
    hu.close()


def test_a_scrape_shows_the_counters_moving_as_tasks_run(served) -> None:
    hu, scrape = served

    @hu.task(name="work", retries=1, retry_delay=0.05)
    def work(x):
        time.sleep(0.3 if x == "slow" else 0)
        if x == "bad":
            raise ValueError("bad input")
        return x

    late = hu.task(name="late", misfire_grace=1)(lambda: None)
    before = scrape()
    assert value(before, "timewheel_store_up") == 1 and value(before, "timewheel_workers") == 0
    assert value(before, "timewheel_runs_total", name="work", outcome="succeeded") == 0
    pending = [work.delay("ok", count_down=60) for _ in range(3)]
    mid = scrape()
    assert value(mid, "timewheel_tasks", status="pending", name="work") == 3
    assert value(mid, "timewheel_tasks", status="succeeded", name="work") == 0

    hu.start()
    for h in pending:
        h.cancel()
    handles = [work.delay(x) for x in ("ok", "ok", "slow", "bad")]
    behind = work.delay("ok", eta=time.time() - 3)            # starts 3 s late
    misfired = late.delay(eta=time.time() - 10)
    for h in handles[:3] + [behind]:
        h.result(timeout=10)
    wait_for(lambda: handles[3].status == "failed" and misfired.status == "misfired", timeout=10)
    wait_for(lambda: value(scrape(), "timewheel_runs_total", name="work", outcome="failed") == 1, timeout=5)
    after = scrape()
    assert value(after, "timewheel_runs_total", name="work", outcome="succeeded") == 4
    assert value(after, "timewheel_runs_total", name="work", outcome="retrying") == 1
    assert value(after, "timewheel_runs_total", name="work", outcome="failed") == 1
    assert value(after, "timewheel_misfires_total", name="late") == 1
    assert value(after, "timewheel_tasks", status="succeeded", name="work") == 4
    assert value(after, "timewheel_tasks", status="failed", name="work") == 1
    assert value(after, "timewheel_tasks", status="cancelled", name="work") == 3
    assert value(after, "timewheel_tasks", status="misfired", name="late") == 1
    assert value(after, "timewheel_tasks", status="pending", name="work") == 0
    # 6 runs started (one retry); the late one is in the 5 s bucket, not below 2.5 s
    assert value(after, "timewheel_lateness_seconds_count", name="work") == 6
    assert value(after, "timewheel_lateness_seconds_bucket", name="work", le="2.5") == 5
    assert value(after, "timewheel_lateness_seconds_bucket", name="work", le="5.0") == 6
    # the slow run is the one above 0.25 s
    assert value(after, "timewheel_duration_seconds_count", name="work") == 6
    assert value(after, "timewheel_duration_seconds_bucket", name="work", le="0.25") == 5
    assert value(after, "timewheel_duration_seconds_sum", name="work") >= 0.3
    assert value(after, "timewheel_workers") == 2 and value(after, "timewheel_ticking") == 1
    assert value(after, "timewheel_running") == 0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_exposition_of_one_wheel_speaks_openmetrics(request, db_path, backend) -> None:
    hu = TimeWheel(db_path if backend == "sqlite" else request.getfixturevalue("redis_db"),
                   tick=0.1, slots=600)
    try:
        hu.task(name="t")(lambda: None).delay(count_down=60)
        body, ctype = exposition(hu)
        assert ctype.startswith("text/plain; version=0.0.4")
        assert value(samples(body.decode()), "timewheel_tasks", status="pending", name="t") == 1
        body, ctype = exposition(hu, accept="application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
        with pytest.raises(TypeError):
            exposition()
        # a bare store (what the web view has for a file or URL): the store's series only
        got = samples(exposition(hu.store)[0].decode())
        assert value(got, "timewheel_tasks", status="pending", name="t") == 1
        assert value(got, "timewheel_store_up") == 1 and ("timewheel_workers", ()) not in got
    finally:
        hu.close()


def test_one_collector_per_wheel_and_registering_twice_is_harmless(tmp_path) -> None:
    a = TimeWheel(str(tmp_path / "a.db"), tick=0.1, slots=600)
    b = TimeWheel(str(tmp_path / "b.db"), tick=0.1, slots=600)
    registry = CollectorRegistry()
    assert instrument(a, registry) is instrument(a, registry) is collector(a)
    assert len(a._hooks.of("started")) == 1                    # the hooks were added once
    with pytest.raises(ValueError, match="Duplicated"):      # two wheels: one registry each
        instrument(b, registry)
    instrument(a)                                            # the default registry works too
    try:
        assert "timewheel_store_up" in {m.name for m in REGISTRY.collect()}
    finally:
        REGISTRY.unregister(collector(a))
    a.close()
    b.close()


def test_a_store_that_cannot_be_read_shows_as_down_not_as_a_failed_scrape(tmp_path) -> None:
    path = tmp_path / "not-a-store.db"
    path.write_bytes(b"this is not a database" * 100)
    hu = TimeWheel(str(path))
    got = samples(exposition(hu)[0].decode())
    assert value(got, "timewheel_store_up") == 0
    assert not any(name == "timewheel_tasks" for name, _ in got)
    assert path.read_bytes() == b"this is not a database" * 100     # untouched


def test_a_burst_counts_every_run_also_those_queued_before_a_worker_took_them(served) -> None:
    hu, scrape = served
    quick = hu.task(name="quick")(lambda i: i)
    with hu.batch():
        handles = [quick.delay(i) for i in range(200)]
    hu.start()
    for h in handles:
        h.result(timeout=30)
    wait_for(lambda: value(scrape(), "timewheel_runs_total", name="quick", outcome="succeeded") == 200,
             timeout=10)
    got = scrape()
    assert value(got, "timewheel_lateness_seconds_count", name="quick") == 200
    assert value(got, "timewheel_duration_seconds_count", name="quick") == 200
    assert collector(hu)._etas == {}                   # nothing left behind per task
