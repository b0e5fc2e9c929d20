"""The whole suite as the parent runs it: the workloads in run order, the cases of each for a
mode, and which module measures each and summarises its results in the progress output.

* ``enqueue``, ``batch``, ``pending``, ``startup``, ``lateness``, ``burst``, ``kill``,
  ``multiproc``: :mod:`benchmarks.sqlite_peers`;
* ``scale``: :mod:`benchmarks.scale`;
* ``commands``, ``web``, ``downtime``: :mod:`benchmarks.bigstore`;
* ``redis``: :mod:`benchmarks.redis_peers`;
* ``postgres``: :mod:`benchmarks.pg_peers`;
* ``enqueue-load``: :mod:`benchmarks.enqueue_load`.

The measurement processes' side is registered in :mod:`benchmarks.child`, the report's in
:mod:`benchmarks.report`.
"""

from __future__ import annotations

from typing import Callable

from . import bigstore, enqueue_load, peers, pg_peers, redis_peers, scale, sqlite_peers
from .harness import Case, Runner

WORKLOAD_ORDER = (*sqlite_peers.WORKLOADS, "scale", *bigstore.WORKLOADS, "redis", "postgres",
                  enqueue_load.WORKLOAD)

MEASURE: dict[str, Callable[[Runner, Case], dict]] = {
    **{w: sqlite_peers.measure for w in sqlite_peers.WORKLOADS},
    "scale": scale.measure,
    **{w: bigstore.measure for w in bigstore.WORKLOADS},
    "redis": redis_peers.measure,
    "postgres": pg_peers.measure,
    enqueue_load.WORKLOAD: enqueue_load.measure,
}

BRIEF: dict[str, Callable[[dict], str]] = {
    **sqlite_peers.BRIEF, "scale": scale.brief, **bigstore.BRIEF, "redis": peers.brief,
    "postgres": peers.brief, enqueue_load.WORKLOAD: enqueue_load.brief,
}


def plan(mode: str) -> dict[str, list[Case]]:
    """Every workload's cases for ``mode`` (``"quick"`` or ``"full"``)."""
    return {**sqlite_peers.plan(mode), "scale": scale.plan(mode), **bigstore.plan(mode),
            "redis": redis_peers.plan(mode),      # timewheel's Redis store vs RQ, RedisHuey, arq
            "postgres": pg_peers.plan(mode),      # its PostgreSQL store vs Procrastinate, pgqueuer, SqlHuey
            enqueue_load.WORKLOAD: enqueue_load.plan(mode)}


def measure(runner: Runner, case: Case) -> dict:
    """One repetition of ``case``, by the module its workload belongs to."""
    return MEASURE[case.workload](runner, case)


def brief(workload: str, res: dict) -> str:
    """One line of the progress output for a result of ``workload``."""
    if "error" in res:
        return "ERROR " + str(res["error"])[:200]
    try:
        return BRIEF[workload](res)
    except Exception as exc:
        return f"({exc.__class__.__name__}: {exc})"
