"""Processes for test suites that none outlives the test run (timewheel's own tests start
every process through here).

A child started by :func:`popen` or :func:`run` gets ``PR_SET_PDEATHSIG(SIGKILL)``: the
kernel kills it when the test process dies, however it dies (a crash, a timeout's
``os._exit``, a SIGKILL from CI or a user).  The signal fires when the *thread* that forked
the child ends, not the process, so children are forked by one long-lived thread (a test
starting a worker from a short-lived thread would otherwise see it killed when that thread
returns).  :func:`run` needs a ``timeout``: a hung child fails its test instead of the run.

Grandchildren are the children's business: gunicorn's workers get the same signal from
tests/gunicorn_conf.py, ``unshare --kill-child`` kills its child, the scripts under tests/
that fork call :func:`die_with_parent` in the child, and Playwright's driver and browser exit
when the pipe from the test process closes (checked: a SIGKILLed run leaves none of them).
Linux only (``prctl``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

__all__ = ["popen", "run", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def die_with_parent(parent: Optional[int] = None) -> None:
    """Have the kernel SIGKILL this process when its parent (the thread that forked it) ends.
    Call it first thing in a forked child; ``parent``: the pid it must still have."""
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(121)
    if parent is not None and os.getppid() != parent:     # it died before the prctl
        os.kill(os.getpid(), signal.SIGKILL)


class _Spawner:
    """One thread, for the life of the process, that forks every child (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._pool: Optional[ThreadPoolExecutor] = None

    def popen(self, args: Any, kw: dict[str, Any]) -> subprocess.Popen:
        with self._lock:
            if self._pid != os.getpid():       # first use, or a forked test process
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="tests-spawner")
                self._pid = os.getpid()
            pool = self._pool
        parent = os.getpid()
        assert pool is not None
        return pool.submit(subprocess.Popen, args,
                           preexec_fn=lambda: die_with_parent(parent), **kw).result()


_spawner = _Spawner()


def popen(args: Sequence[Any], **kw: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **kw)`` whose process dies with the test process.  Stop it
    when the test ends (a fixture's teardown or a ``finally:``), with a timeout."""
    return _spawner.popen(args, kw)


def run(args: Sequence[Any], *, timeout: float, input: Any = None, capture_output: bool = False,
        check: bool = False, **kw: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` for tests: ``timeout`` is required (the child is killed and
    ``TimeoutExpired`` raised when it passes), and the child dies with the test process."""
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    with popen(args, **kw) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done

