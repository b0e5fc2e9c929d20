"""Prometheus metrics for a TimeWheel (``pip install 'timewheel[metrics]'``)::

    from timewheel.metrics import instrument
    instrument(hu)                      # into prometheus_client's default REGISTRY
    instrument(hu, registry=my_registry)

or ``registry.register(collector(hu))``, or :func:`exposition` for a ``/metrics`` endpoint
of your own (the web view serves it; for a bare store it gives the store's series).  Series:

* ``timewheel_tasks{status,name}`` -- tasks in the store, every process's, read from
  ``store.counts()`` at each scrape (counter tables: cheap however big the store);
* ``timewheel_runs_total{name,outcome}`` -- runs that ended **in this process**: outcome
  ``succeeded``, ``failed`` (for good), ``retrying`` (failed, will run again) or ``aborted``
  (stopped as asked: issue 23);
  ``timewheel_misfires_total{name}`` -- tasks this process skipped as too late;
* ``timewheel_lateness_seconds{name}`` -- histogram of ``started - eta`` and
  ``timewheel_duration_seconds{name}`` -- histogram of ``finished - started``, of the runs
  that ended here;
* ``timewheel_store_up``, ``timewheel_ticking``, ``timewheel_running``, ``timewheel_workers``
  -- this process: whether the store answered the scrape and the boss's last calls, whether
  it ticks the wheel, tasks it runs now, and its pool size.

The per-run series come from hooks (:meth:`TimeWheel.on`) and count what happened since
this process created the collector, as Prometheus counters do: scrape every process that
runs tasks (each serves its own), and sum them in queries.  One collector per wheel:
:func:`collector` returns it (creating it registers its hooks once).
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:     # pragma: no cover - the message is the point
    raise ImportError("timewheel.metrics needs prometheus_client: "
                      "pip install 'timewheel[metrics]'") from exc

from .errors import StoreError
from .records import STATUSES, TaskRecord
from .store.base import WheelStore

if TYPE_CHECKING:
    from .api import TimeWheel

__all__ = ["TimeWheelCollector", "StoreCollector", "collector", "instrument", "exposition",
           "LATENESS_BUCKETS", "DURATION_BUCKETS"]

#: seconds late a run started: a healthy wheel starts within a tick, downtime shows in minutes
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
                    3600.0, float("inf"))
#: seconds a run took: web-app tasks are milliseconds to minutes
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0, float("inf"))
_OUTCOMES = ("succeeded", "failed", "retrying", "aborted")      # the events that end a run
_MAX_CLAIMED = 100_000


class StoreCollector:
    """The store's own series, ``timewheel_store_up`` and ``timewheel_tasks``: all there is to
    say about a store without a wheel of this process (the web view of a file or URL)."""

    def __init__(self, store: WheelStore) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        """The names, without reading the store (a registry calls this to check for clashes)."""
        return iter(_store_families())

    def collect(self) -> Iterator[Metric]:
        return iter(_store_metrics(self._store))


def _store_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily("timewheel_store_up",
                              "1 if the store answered this scrape (and the boss's last calls)."),
            GaugeMetricFamily("timewheel_tasks", "Tasks in the store (all processes).",
                              labels=["status", "name"]))


def _store_metrics(store: WheelStore, healthy: bool = True) -> list[Metric]:
    up, tasks = _store_families()
    try:
        counts = store.counts()
    except StoreError:
        up.add_metric([], 0)
        return [up]
    for name in sorted({n for _, n in counts}):
        for status in STATUSES:
            tasks.add_metric([status, name], counts.get((status, name), 0))
        if counts.get(("broken", name)):
            tasks.add_metric(["broken", name], counts[("broken", name)])
    up.add_metric([], 1 if healthy else 0)
    return [up, tasks]


class TimeWheelCollector:
    """A Prometheus collector for one TimeWheel (see the module doc).  Creating it adds hooks
    to the wheel, which stay as long as the wheel: make one per wheel (:func:`collector`)."""

    def __init__(self, hu: "TimeWheel", *, lateness_buckets: Sequence[float] = LATENESS_BUCKETS,
                 duration_buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self._hu = weakref.ref(hu)       # the wheel's hooks hold us; we must not hold it
        # Unregistered children: collect() hands their samples out with the store's.
        self._runs = Counter("timewheel_runs", "Runs that ended in this process, by outcome.",
                             ["name", "outcome"], registry=None)
        self._misfires = Counter("timewheel_misfires", "Tasks this process skipped as misfired.",
                                 ["name"], registry=None)
        self._lateness = Histogram("timewheel_lateness_seconds",
                                   "Seconds between a task's eta and its start, runs ended here.",
                                   ["name"], buckets=lateness_buckets, registry=None)
        self._duration = Histogram("timewheel_duration_seconds",
                                   "Seconds a run took, runs that ended here.",
                                   ["name"], buckets=duration_buckets, registry=None)
        self._registries: "weakref.WeakSet[CollectorRegistry]" = weakref.WeakSet()
        self._etas: dict[str, float] = {}     # id -> eta of the run claimed here, until it ends
        hu.on("started", self._started)
        for outcome in _OUTCOMES:
            hu.on(outcome, functools.partial(self._ended, outcome))
        hu.on("misfired", self._misfired)

    # -- hooks (on the boss thread, after the change is durable) --------------------------
    def _started(self, rec: TaskRecord, exc: Optional[BaseException]) -> None:
        # A claimed task may still wait for a worker here (``started`` None until its outcome
        # says when it began), and a retry's outcome moves ``eta`` on: keep the run's eta.
        if len(self._etas) >= _MAX_CLAIMED:       # outcomes refused (recoveries) leave entries
            self._etas.clear()
        self._etas[rec.id] = rec.eta

    def _ended(self, outcome: str, rec: TaskRecord, exc: Optional[BaseException]) -> None:
        self._runs.labels(rec.name, outcome).inc()
        eta = self._etas.pop(rec.id, None)
        if rec.started is None or rec.finished is None:
            return
        if eta is None and outcome != "retrying":
            eta = rec.eta
        if eta is not None:
            self._lateness.labels(rec.name).observe(max(0.0, rec.started - eta))
        self._duration.labels(rec.name).observe(max(0.0, rec.finished - rec.started))

    def _misfired(self, rec: TaskRecord, exc: Optional[BaseException]) -> None:
        self._misfires.labels(rec.name).inc()

    # -- scrape ---------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        """The names, without reading the store (a registry calls this to check for clashes)."""
        yield from _store_families()
        yield from self._gauges()
        for metric in (self._runs, self._misfires, self._lateness, self._duration):
            yield from metric.describe()

    @staticmethod
    def _gauges() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("timewheel_ticking", "1 while this process ticks the wheel."),
            GaugeMetricFamily("timewheel_running", "Tasks this process is running now."),
            GaugeMetricFamily("timewheel_workers", "Worker threads of this process's pool "
                              "(0 while the wheel is not started here)."))

    def collect(self) -> Iterator[Metric]:
        hu = self._hu()
        if hu is None:
            return
        health = hu.health()
        try:
            store = hu.store
        except StoreError:                  # it cannot even be opened
            up = _store_families()[0]
            up.add_metric([], 0)
            yield up
        else:
            yield from _store_metrics(store, healthy=health is None or health.ok)
        ticking, running, workers = self._gauges()
        ticking.add_metric([], 1 if health is not None and health.ticking else 0)
        running.add_metric([], 0 if health is None else health.running)
        workers.add_metric([], hu.workers if hu.running else 0)
        yield from (ticking, running, workers)
        for metric in (self._runs, self._misfires, self._lateness, self._duration):
            yield from metric.collect()


_collectors: "weakref.WeakKeyDictionary[TimeWheel, TimeWheelCollector]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def collector(hu: "TimeWheel") -> TimeWheelCollector:
    """The collector of ``hu``, made (and its hooks added) on first use."""
    with _lock:
        found = _collectors.get(hu)
        if found is None:
            found = _collectors[hu] = TimeWheelCollector(hu)
        return found


def instrument(hu: "TimeWheel", registry: Optional[CollectorRegistry] = None) -> TimeWheelCollector:
    """Register ``hu``'s collector in ``registry`` (default: prometheus_client's REGISTRY);
    calling it again with the same registry does nothing."""
    if registry is None:
        from prometheus_client import REGISTRY as registry
    found = collector(hu)
    with _lock:
        if registry not in found._registries:
            # A second wheel in the same registry raises ValueError (duplicated series):
            # give each wheel its own registry.
            registry.register(found)
            found._registries.add(registry)
    return found


def exposition(source: "Union[TimeWheel, WheelStore, None]" = None, *,
               registry: Optional[CollectorRegistry] = None,
               accept: Optional[str] = None) -> tuple[bytes, str]:
    """``(body, content type)`` of a ``/metrics`` response: ``registry``'s metrics, or (no
    registry) those of ``source`` alone -- a TimeWheel's (:func:`collector`), or a bare
    store's (:class:`StoreCollector`).  ``accept`` (the request's Accept header) picks
    OpenMetrics when the scraper asks for it, else Prometheus text."""
    if registry is None:
        if source is None:
            raise TypeError("exposition() needs a TimeWheel, a store or a registry")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(source) if isinstance(source, WheelStore)
                          else collector(source))
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
