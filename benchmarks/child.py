"""Entry point of one measurement process: ``python -m benchmarks.child SPEC.json``.

Runs ``spec["workload"]`` (one of :data:`WORKLOADS`, from the workload modules), writes its
result as JSON to ``spec["out"]`` and leaves with ``os._exit`` so that no consumer thread of
any system can delay or hang the exit.  With ``spec["profile"]`` set, the workload runs under
cProfile and the statistics are dumped to that path.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Callable

from . import batches, bigstore, enqueue_load, flow, pg_peers, redis_peers, scale, workloads

#: workload name in a spec -> the function a measurement process runs
WORKLOADS: dict[str, Callable[[dict], dict]] = {
    **workloads.CHILD_WORKLOADS, "scale": scale.child, **bigstore.CHILD_WORKLOADS,
    **redis_peers.CHILD_WORKLOADS, **pg_peers.CHILD_WORKLOADS, **enqueue_load.CHILD_WORKLOADS,
    **flow.CHILD_WORKLOADS, **batches.CHILD_WORKLOADS,
}


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec = json.load(fh)
    code = 0
    started = time.time()
    try:
        fn = WORKLOADS[spec["workload"]]
        if spec.get("profile"):
            import cProfile  # only when asked: this process's RSS may be what it measures
            prof = cProfile.Profile()
            result = prof.runcall(fn, spec)
            prof.dump_stats(spec["profile"])
        else:
            result = fn(spec)
    except BaseException as exc:
        result = {"error": f"{exc.__class__.__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    result["wall_s"] = time.time() - started
    if spec.get("out"):
        tmp = spec["out"] + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh)
        os.replace(tmp, spec["out"])
    return code


if __name__ == "__main__":
    rc = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
