"""What the machine and its processes say, mostly from ``/proc`` (Linux): memory and CPU time
of a process or a process tree, killing a tree, the load, the versions and commit measured.

Every measurement process imports this module (for :func:`memory_kib`) and has its RSS
measured: what only the parent asks for (:func:`package_version`, :func:`facts`) imports
``importlib.metadata`` and ``platform`` when called, not at the top.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sqlite3
import subprocess
from typing import Optional, Union

from .harness import ROOT


# -- processes --------------------------------------------------------------------------------
def memory_kib(pid: Union[int, str] = "self") -> dict[str, int]:
    """``{"rss_kib": VmRSS, "hwm_kib": VmHWM (the peak)}`` of process ``pid``, KiB; {} once
    it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out["rss_kib" if key == "VmRSS" else "hwm_kib"] = int(value.split()[0])
    except OSError:
        pass
    return {k: out[k] for k in ("rss_kib", "hwm_kib") if k in out}


def descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, its children's children included."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, with reaped children's) of ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid] + descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])      # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds used so far by the processes ``pids`` (all their threads, user + system)
    and by the whole machine (busy time of all cores, whoever used it), from /proc: on a
    shared machine, what the run got of the cores is what bounds its CPU-bound speed-up."""
    hz = os.sysconf("SC_CLK_TCK")
    ours = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:                              # it died: the run reports that
            continue
        ours += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15)
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]     # all but idle and iowait
    return ours / hz, busy / hz


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and every process it started, as when its host or container dies (RQ's
    work horses and scheduler are forks in their own process groups).  The tree is frozen with
    SIGSTOP first, so that nothing forks between the listing and the kill.  Returns how many
    processes were killed."""
    seen: list[int] = []
    for _ in range(10):
        new = [p for p in [pid] + descendants(pid) if p not in seen]
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        seen += new
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(seen)


# -- the machine ------------------------------------------------------------------------------
def loadavg() -> float:
    return os.getloadavg()[0]


def package_version(dist: str) -> Optional[str]:
    """The installed version of distribution ``dist``, or None."""
    from importlib.metadata import version  # the parent's only: see the module docstring
    try:
        return version(dist)
    except Exception:
        return None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()


def timewheel_rev() -> str:
    """The commit of the checkout, with ``+dirty`` if timewheel/ has uncommitted changes: the
    checkout is shared, so the code under test can change during a run."""
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "timewheel")
        return rev + ("+dirty" if dirty else "")
    except Exception:
        return ""


def facts() -> dict:
    """The machine, interpreter and packages a run measured on (``doc["machine"]``)."""
    import platform  # the parent's only: see the module docstring
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = _git("rev-parse", "--short", "HEAD")
    except Exception:
        commit = ""
    return {
        "cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
        "packages": {m: package_version(m) for m in
                     ("timewheel", "sqlitedict", "huey", "APScheduler", "SQLAlchemy", "matplotlib")},
        "git_commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
