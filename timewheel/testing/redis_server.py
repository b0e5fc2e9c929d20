"""A real ``redis-server`` for tests and benchmarks: its own free port and temp dir, never a
shared one.

    server = RedisServer(tmp_path)        # appendonly yes, appendfsync always
    server.start(); url = server.url      # redis://127.0.0.1:<port>/0
    server.kill()                         # SIGKILL: what survives is what the AOF holds
    server.start()                        # the same port and dir: it reloads its AOF
    server.stop()

A missing ``redis-server`` raises (the tests that need it fail, they do not skip): timewheel's
CI installs it (``.ci/run``), and so must a developer (README, the test command).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Optional, Sequence

from .processes import popen

__all__ = ["RedisServer", "free_port", "redis_server_binary"]


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed: the Redis tests need a real server "
                           "(Debian/Ubuntu: apt-get install redis-server; see README)")
    return path


def free_port(below: int = 65536) -> int:
    """A TCP port nobody listens on, under ``below`` (a cluster node also needs port+10000)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (and a unix socket) in ``directory``."""

    def __init__(self, directory: "str | os.PathLike[str]", *, port: Optional[int] = None,
                 extra: Sequence[str] = ()) -> None:
        self.dir = os.fspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.socket = os.path.join(self.dir, "redis.sock")
        self.extra = list(extra)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def args(self) -> list[str]:
        return [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--maxmemory-policy", "noeviction", "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log"), *self.extra]

    def start(self, timeout: float = 10.0) -> "RedisServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer within {timeout}s: {self.log_tail()}")
            time.sleep(0.01)
        return self

    def _answers(self) -> bool:
        """True once the server answers PING with PONG (not -LOADING while it reads its AOF)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server with ``sig`` (SIGKILL by default: no shutdown, no final save)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its connections open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.kill(signal.SIGKILL)
        self.proc = None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), encoding="utf-8", errors="replace") as fh:
                return fh.read()[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
