"""The ``timewheel`` console script as users run it, and a command's cost measured from
outside its process (POSIX: ``fork``, ``wait4``).

    code, out, err, seconds, peak_mib, cpu_s = measured([console_script(), "stats", "tasks.db"])
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from .processes import popen

__all__ = ["console_script", "measured"]


def console_script() -> str:
    """The installed ``timewheel`` command next to this interpreter (tests run it as users do)."""
    found = shutil.which("timewheel", path=os.path.dirname(sys.executable))
    if not found:
        raise AssertionError("the timewheel console script is not installed next to this python")
    return found


# A process's peak RSS (ru_maxrss) survives exec(): a command spawned straight from this test
# process would report this process's size.  So a small helper forks it and reports its peak.
_MEASURE = """
import ctypes, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    ctypes.CDLL(None).prctl(1, 9)      # PR_SET_PDEATHSIG, SIGKILL: it dies with this helper
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime} {time.perf_counter() - t0}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(args: list[str], timeout: float = 30.0) -> tuple[int, str, str, float, float, float]:
    """Run a command; (exit code, stdout, stderr, its wall seconds, its own peak RSS in MiB,
    its CPU seconds), measured from outside it.  Killed (its whole session) after ``timeout``."""
    with tempfile.TemporaryDirectory() as scratch:
        usage = os.path.join(scratch, "usage")
        p = popen([sys.executable, "-c", _MEASURE, usage, *args], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate(timeout=10)
        with open(usage) as fh:
            rss, cpu, took = fh.read().split()
        return p.returncode, out, err, float(took), int(rss) / 1024, float(cpu)
