"""Real web servers for the framework tests (gunicorn, uvicorn, ``flask``), each in its own
session, bounded in time, and killed -- its whole process group -- when the test ends."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Callable, Iterator, Optional

import pytest

from timewheel.testing import processes as procs

from .mp_worker import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name: str) -> str:
    """A console script of this environment (the test extra installs them: a missing one
    is a broken set-up, not a skip)."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: pip install -e '.[test]'")
    return path


class Served:
    """One server process: its output (stdout and stderr, in a file) and its address."""

    def __init__(self, proc: subprocess.Popen, out: str) -> None:
        self.proc, self.out = proc, out
        self.url = ""

    def output(self) -> str:
        with open(self.out, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def pids(self, pattern: str) -> list[int]:
        """The pids that ``pattern``'s group matches in the output, in order."""
        return [int(m) for m in re.findall(pattern, self.output())]

    def wait(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        """``wait_for(cond)``, failing with the server's output."""
        try:
            wait_for(cond, timeout, interval=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the server said:\n{self.output()[-3000:]}") from None

    def wait_output(self, pattern: str, count: int = 1, timeout: float = 30.0) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, (f"the server exited {self.proc.returncode}:\n"
                                              f"{self.output()[-3000:]}")
            return len(re.findall(pattern, self.output())) >= count
        wait_for(seen, timeout, interval=0.05, what=f"{count} x {pattern!r} in the server's output")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and its exit code within ``timeout`` s (SIGKILL and fail after that)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(self.proc)
            raise AssertionError(f"the server did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.output()[-3000:]}") from None


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)      # the server and every process it started
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture
def servers(tmp_path) -> Iterator[Callable[..., Served]]:
    """``start(argv, env=..., name=...)``: a server started from the repository's root."""
    started: list[Served] = []

    def start(argv: list[str], env: Optional[dict[str, str]] = None, name: str = "server") -> Served:
        out = str(tmp_path / f"{name}.out")
        with open(out, "wb") as fh:
            proc = procs.popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=fh,
                               stderr=subprocess.STDOUT, start_new_session=True)
        served = Served(proc, out)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGTERM)
    for served in started:
        try:
            served.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        kill(served.proc)
