"""Entry point of one measurement process: ``python -m benchmarks.child SPEC.json``.

Runs ``spec["workload"]`` (see :mod:`benchmarks.workloads`), writes its result as JSON to
``spec["out"]`` and leaves with ``os._exit`` so that no consumer thread of any system can delay
or hang the exit.  With ``spec["profile"]`` set, the workload runs under cProfile and the
statistics are dumped to that path.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec = json.load(fh)
    from .workloads import WORKLOADS
    code = 0
    started = time.time()
    try:
        fn = WORKLOADS[spec["workload"]]
        if spec.get("profile"):
            import cProfile
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
