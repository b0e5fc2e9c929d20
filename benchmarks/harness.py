"""The parent's machinery, shared by every workload: :class:`Case` (one planned measurement),
:class:`Measurement` (one record of a run's JSON) and :class:`Runner`, which runs measurement
processes (``python -m benchmarks.child SPEC.json``, :mod:`benchmarks.child`) and builds the
stores that several measurements start from.

It names no workload: each workload module plans its cases and measures them through a
:class:`Runner`, and :mod:`benchmarks.suite` says which module measures which workload.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from typing import Optional, TypedDict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")         #: raw results, JSON (git-ignored)
SCRATCH = os.path.join(HERE, "scratch")         #: stores and logs while a run lasts (git-ignored)


class Case:
    """One planned measurement: ``workload`` on ``system`` with ``params``, ``reps`` times;
    ``label`` tells it apart from the workload's other cases of the same system."""

    # Not a dataclass: every measurement process imports this module, and ``dataclasses``
    # would add 0.2-0.4 MB to the RSS they measure.
    def __init__(self, workload: str, system: str, params: dict, reps: int, label: str = "") -> None:
        self.workload = workload
        self.system = system
        self.params = params
        self.reps = reps
        self.label = label

    def key(self) -> str:
        return self.label or self.system

    def __repr__(self) -> str:
        return f"Case({self.workload!r}, {self.system!r}, {self.params!r}, {self.reps!r}, {self.label!r})"


class Measurement(TypedDict):
    """One repetition of one case, as the run's JSON keeps it (``doc["measurements"]``)."""

    workload: str
    system: str
    case: str                   #: :meth:`Case.key`
    params: dict
    rep: int
    loadavg_before: float
    rev: str                    #: the checkout's commit, ``+dirty`` if timewheel/ had changes
    sync_before_s: float        #: how long the ``sync`` before it took
    seconds: float
    result: dict                #: what the workload returned; ``"error"`` in it if it failed


class Runner:
    """Runs measurement processes for one run, each in its own directory under ``run_dir``."""

    def __init__(self, run_dir: str, verbose: bool = True) -> None:
        self.run_dir = run_dir
        self.verbose = verbose
        self._seq = 0
        self.bases: dict[tuple[str, int], str] = {}
        self.builds: list[dict] = []

    def paths(self, tag: str) -> tuple[str, str, str]:
        """A new directory for one measurement, and its spec and result paths in it."""
        self._seq += 1
        d = os.path.join(self.run_dir, f"{self._seq:04d}-{tag}")
        os.makedirs(d, exist_ok=True)
        return d, os.path.join(d, "spec.json"), os.path.join(d, "out.json")

    @staticmethod
    def env() -> dict:
        """The environment of a measurement process: this checkout first on its path."""
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONHASHSEED"] = "0"
        return env

    def spawn(self, spec: dict, d: str, spec_path: str, pipe: bool = False) -> subprocess.Popen:
        with open(spec_path, "w") as fh:
            json.dump(spec, fh)
        err = open(os.path.join(d, f"stderr-{os.path.basename(spec_path)}.txt"), "w")
        return subprocess.Popen([sys.executable, "-m", "benchmarks.child", spec_path], cwd=ROOT,
                                env=self.env(), stdout=subprocess.PIPE if pipe else subprocess.DEVNULL,
                                stderr=err, text=True)

    def run(self, spec: dict, tag: str, timeout: float = 900.0) -> dict:
        """One measurement process to its end: what it returned (``{"error": ...}`` if it
        failed or took longer than ``timeout`` seconds)."""
        d, spec_path, out = self.paths(tag)
        spec = dict(spec, out=out)
        spec.setdefault("store", os.path.join(d, "store.db"))
        proc = self.spawn(spec, d, spec_path)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout:g}s"}
        res = self.read(out, d)
        self._clean(d)
        return res

    def read(self, out: str, d: str) -> dict:
        """The result a process wrote to ``out``, or the tail of its stderr (in ``d``)."""
        try:
            with open(out) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            tail = ""
            for name in os.listdir(d):
                if name.startswith("stderr"):
                    with open(os.path.join(d, name)) as fh:
                        tail += fh.read()[-2000:]
            return {"error": "no result", "stderr": tail}

    @staticmethod
    def _clean(d: str) -> None:
        for name in os.listdir(d):
            if name.endswith((".db", ".db-wal", ".db-shm", ".db.lock")):
                os.remove(os.path.join(d, name))

    # -- pre-built stores -------------------------------------------------------------------
    def base_store(self, system: str, n: int) -> str:
        """A store of ``n`` pending tasks of ``system``, built once per run (the ``build``
        workload of :mod:`benchmarks.workloads`)."""
        key = (system, n)
        if key not in self.bases:
            d = os.path.join(self.run_dir, "bases")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{system}-{n}.db")
            t0 = time.time()
            res = self.run({"workload": "build", "system": system, "n": n, "store": path},
                           f"build-{system}-{n}", timeout=1800)
            if "error" in res:
                raise RuntimeError(f"building the {n}-task {system} store failed: {res}")
            res.update(system=system, wall=time.time() - t0)
            self.builds.append(res)
            self.log(f"  built {system} store with {n:,} pending: {res['rate']:,.0f} tasks/s, "
                     f"{res['bytes'] / 2**20:.0f} MiB")
            self.bases[key] = path
        return self.bases[key]

    def copy_of(self, base: str, d: str) -> str:
        """A copy of a prebuilt store, written to disk before it is measured: otherwise the
        first checkpoint's fsync in the measured process writes back the whole copy (350 MB
        for timewheel's 1M store, 130 MB for sqlite3's), inside the enqueue rate."""
        dst = os.path.join(d, "store.db")
        shutil.copyfile(base, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return dst

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)


def stop_processes(procs: list[subprocess.Popen], stopfile: str) -> None:
    """Ask measured processes to leave (they poll for ``stopfile``); kill any still up after 15 s."""
    open(stopfile, "w").close()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_file(path: str, poll: float = 0.05) -> None:
    """In a measurement process: wait until the parent creates ``path`` (a stop or go file)."""
    while not os.path.exists(path):
        time.sleep(poll)



def await_ready(procs: list[subprocess.Popen], timeout: float) -> Optional[list[str]]:
    """What follows ``READY`` in the first line of each process's stdout (spawned with
    ``pipe=True``), in order, or None if one died or did not say so in ``timeout`` s."""
    sel = selectors.DefaultSelector()
    for k, proc in enumerate(procs):
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ, k)
    got: dict[int, str] = {}
    deadline = time.time() + timeout
    try:
        while len(got) < len(procs):
            events = sel.select(max(0.0, deadline - time.time()))
            if not events:
                return None
            for key, _ in events:
                line = key.fileobj.readline()      # type: ignore[union-attr]
                if not line.startswith("READY"):
                    return None
                got[key.data] = line[len("READY"):].strip()
                sel.unregister(key.fileobj)
    finally:
        sel.close()
    return [got[k] for k in range(len(procs))]
