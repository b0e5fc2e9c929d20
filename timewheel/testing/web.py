"""A live ``timewheel web`` subprocess on a free port, for as long as a ``with`` block lasts.

    with serve("tasks.db", "--allow-actions") as server:
        urllib.request.urlopen(server.url + "api/stats")
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from .processes import popen

__all__ = ["Server", "serve", "web_command"]


@dataclass
class Server:
    url: str           #: ends with "/"
    proc: subprocess.Popen
    log: str           #: the server's stderr

    def errors(self) -> str:
        with open(self.log) as fh:
            return fh.read()


def web_command(*args: str, files: Optional[int] = None) -> list[str]:
    """The argv of ``timewheel web ARGS`` run by this interpreter; ``files``: the process may
    open that many (RLIMIT_NOFILE)."""
    limit = ("" if files is None else
             f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, "
             "resource.getrlimit(resource.RLIMIT_NOFILE)[1])); ")
    return [sys.executable, "-c", limit + "from timewheel.cli import main; main()", "web", *args]


@contextmanager
def serve(store_path: str, *options: str, env: Optional[dict] = None,
          timeout: float = 20.0, files: Optional[int] = None) -> Iterator[Server]:
    """A live ``timewheel web STORE --port 0 --json OPTIONS`` until the block ends; then
    SIGTERM, and it must exit 0 having logged no error (AssertionError otherwise)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="timewheel-web-", suffix=".log", delete=False)
    proc = popen(web_command(store_path, "--port", "0", "--json", *options, files=files),
                 stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                line = proc.stdout.readline()
                break
        if not line.startswith("{"):
            raise AssertionError(f"timewheel web did not start: {line}{open(log.name).read()}")
        started = json.loads(line)
        if started["pid"] != proc.pid or started["actions"] != ("--allow-actions" in options):
            raise AssertionError(f"timewheel web said {started} (pid {proc.pid}, options {options})")
        yield Server(started["url"], proc, log.name)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise AssertionError("timewheel web did not stop on SIGTERM") from None
            if code != 0:
                raise AssertionError(f"timewheel web exited {code}")
        text = open(log.name).read()
        log.close()
        os.unlink(log.name)
        if "Traceback" in text:
            raise AssertionError(text)
