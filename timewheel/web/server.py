"""The HTTP server of ``timewheel web``: Werkzeug's request handler behind a front end on which
a silent connection costs no thread.

Werkzeug's threaded server gives each connection a thread that waits for the request with no
timeout: 1,100 silent connections (authentication does not help: nothing has been sent to
check) used up the process's 1,024 file descriptors, and the server then spun a core
retrying ``accept()`` and answered nobody (issue 19.7).  Here one thread, the loop, accepts
connections and reads each request whole -- its head (at most :data:`MAX_HEAD` bytes) and
its body (``Content-Length``, at most :data:`MAX_BODY`) -- without blocking, and closes a
connection that has not sent it within :data:`REQUEST_TIMEOUT` seconds.  Only a request
read whole goes to one of :data:`WORKERS` threads, which runs the application through
Werkzeug's ``WSGIRequestHandler`` and closes the connection (Werkzeug closes every
connection after one response anyway).  At most :data:`MAX_CONNECTIONS` connections are
open (fewer if the process may open fewer files): one more closes the oldest connection
still being read, so silent connections, however many, cannot keep a real request out.

Logic that needs no socket (how much of a request has arrived) is :func:`request_size`.
"""

from __future__ import annotations

import errno
import io
import logging
import re
import resource
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

__all__ = ["ViewServer", "request_size", "BadRequest", "MAX_CONNECTIONS", "REQUEST_TIMEOUT"]

log = logging.getLogger("timewheel.web")

#: threads running requests: the view's requests are short store reads, its users few
WORKERS = 8
#: connections open at once, at most (see _file_room)
MAX_CONNECTIONS = 1000
#: seconds a connection has to send its whole request; also the bound of every later send
REQUEST_TIMEOUT = 10.0
#: bytes of a request's line and headers, at most (as http.server's line limit)
MAX_HEAD = 64 * 1024
#: bytes of a request's body, at most (the application takes 1 MiB of form or JSON)
MAX_BODY = 1024 * 1024 + 64 * 1024
#: files the process keeps for itself beyond its connections (the store, logs, the loop)
_RESERVED_FILES = 64
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


class BadRequest(Exception):
    """A request that is refused before it reaches the application: ``status`` and a one-line
    reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def request_size(data: Union[bytes, bytearray], searched: int = 0) -> tuple[Optional[int], int]:
    """How many bytes the request at the start of ``data`` takes, head and body: None while
    its head has not all arrived.  Also returns where the next search for the head's end
    may start (``searched``: the previous one).  Raises :class:`BadRequest` for a request
    too large, or whose body length cannot be known before it is read."""
    end = _END_OF_HEAD.search(data, max(0, searched - 3))
    if end is None:
        if len(data) > MAX_HEAD:
            raise BadRequest(431, "Request Header Fields Too Large",
                             f"the request's head is longer than {MAX_HEAD} bytes")
        return None, len(data)
    if end.end() > MAX_HEAD:
        raise BadRequest(431, "Request Header Fields Too Large",
                         f"the request's head is longer than {MAX_HEAD} bytes")
    lengths = set()
    for line in bytes(data[:end.start()]).split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if sep and key == b"content-length":
            lengths.add(value.strip())
        elif sep and key == b"transfer-encoding":
            raise BadRequest(411, "Length Required",
                             "send the body with a Content-Length (chunked bodies are not taken)")
    if not lengths:
        return end.end(), end.end()
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise BadRequest(400, "Bad Request", "the request has a bad Content-Length")
    body = int(lengths.pop())
    if body > MAX_BODY:
        raise BadRequest(413, "Content Too Large", f"the request's body is longer than {MAX_BODY} bytes")
    return end.end() + body, end.end()


def _file_room() -> int:
    """Connections the process can open beside the files it needs for itself."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, soft - _RESERVED_FILES)


class _Writer(io.RawIOBase):
    """The response's way out: every write sent whole (within the socket's timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(memoryview(data))


class _Handler(WSGIRequestHandler):
    """Werkzeug's handler, reading a request the loop has read whole already."""

    protocol_version = "HTTP/1.1"          # (chunked responses; Werkzeug closes every connection)

    def __init__(self, sock: socket.socket, address: Any, server: "ViewServer", data: bytes) -> None:
        self._data = data
        super().__init__(sock, address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._data)
        self.wfile = _Writer(self.connection)


@dataclass
class _Reading:
    """A connection whose request is being read."""

    address: Any
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    searched: int = 0


class ViewServer(BaseWSGIServer):
    """Serves a WSGI application on ``host:port`` (see the module's docstring).

    ``serve_forever()`` runs the loop until ``shutdown()`` (from another thread);
    ``server_close()`` then waits for the requests being run and releases everything.
    """

    multithread = True
    request_queue_size = 1024              # the listen backlog, while the loop accepts

    def __init__(self, host: str, port: int, app: Any, *, workers: int = WORKERS,
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.max_connections = max(1, min(max_connections, _file_room()))
        self.request_timeout = request_timeout
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="timewheel-web")
        self._reading: dict[socket.socket, _Reading] = {}     # oldest first: deadline order
        self._running = 0                  # connections handed to a worker
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._started = False
        self._warned = -1e9
        super().__init__(host, port, app, handler=_Handler)   # (calls server_close() if it fails)

    # -- the loop --------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._started = True
        self.socket.setblocking(False)
        self._wake_r.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(self.socket, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        paused_until: Optional[float] = None       # accept() failed for want of files
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if paused_until is not None and now >= paused_until:
                    sel.register(self.socket, selectors.EVENT_READ)
                    paused_until = None
                waits = [poll_interval]
                if self._reading:
                    waits.append(next(iter(self._reading.values())).deadline - now)
                if paused_until is not None:
                    waits.append(paused_until - now)
                for key, _ in sel.select(max(0.0, min(waits))):
                    if key.fileobj is self.socket:
                        if not self._accept(sel):
                            sel.unregister(self.socket)
                            paused_until = time.monotonic() + 0.1
                    elif key.fileobj is self._wake_r:
                        try:
                            self._wake_r.recv(64)
                        except BlockingIOError:
                            pass
                    else:
                        self._read(sel, key.fileobj)  # type: ignore[arg-type]
                self._expire(sel)
        finally:
            for sock in list(self._reading):
                self._forget(sel, sock)
            sel.close()
            self._stopped.set()

    def _accept(self, sel: selectors.BaseSelector) -> bool:
        """Accept what is waiting (a burst at most: reading must not starve); False if the
        process is out of files and nothing could be closed to make room."""
        for _ in range(128):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._full()
                    return self._evict(sel)
                continue                         # (ECONNABORTED and the like: that one is gone)
            with self._lock:
                open_ = len(self._reading) + self._running
            if open_ >= self.max_connections:
                self._full()
                if not self._evict(sel):         # every connection has a request being run
                    sock.close()
                    continue
            sock.setblocking(False)
            self._reading[sock] = _Reading(address, time.monotonic() + self.request_timeout)
            sel.register(sock, selectors.EVENT_READ)
        return True

    def _full(self) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("%d connections open, the most this server keeps: closing the oldest that "
                        "have not sent a whole request", self.max_connections)

    def _evict(self, sel: selectors.BaseSelector) -> bool:
        """Close the oldest connection still being read, if any."""
        if not self._reading:
            return False
        self._forget(sel, next(iter(self._reading)))
        return True

    def _read(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        state = self._reading.get(sock)
        if state is None:
            return
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:                             # the client went away
            self._forget(sel, sock)
            return
        state.data += chunk
        try:
            size, state.searched = request_size(state.data, state.searched)
        except BadRequest as exc:
            self._refuse(sel, sock, exc.status, exc.reason, str(exc))
            return
        if size is None or len(state.data) < size:
            return
        sel.unregister(sock)
        del self._reading[sock]
        with self._lock:
            self._running += 1
        sock.setblocking(True)
        sock.settimeout(self.request_timeout)
        self._workers.submit(self._run, sock, state.address, bytes(state.data[:size]))

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._reading:
            sock, state = next(iter(self._reading.items()))
            if state.deadline > now:
                return
            if state.data:
                self._refuse(sel, sock, 408, "Request Timeout",
                             f"the request did not arrive whole within {self.request_timeout:g}s")
            else:
                self._forget(sel, sock)

    def _refuse(self, sel: selectors.BaseSelector, sock: socket.socket, status: int, reason: str,
                message: str) -> None:
        body = (message + "\n").encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            sock.send(head + body)                # best effort: never waits for the client
        except OSError:
            pass
        self._forget(sel, sock)

    def _forget(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        self._reading.pop(sock, None)
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    # -- the workers -----------------------------------------------------------------------------
    def _run(self, sock: socket.socket, address: Any, data: bytes) -> None:
        try:
            _Handler(sock, address, self, data)
        except Exception:  # noqa: BLE001 - one request's failure must not end the worker
            log.exception("error serving a request from %s", address)
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()
            with self._lock:
                self._running -= 1

    # -- stopping --------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the loop (from another thread) and wait until it has."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._started:
            self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket; wait for the requests being run (each bounded by the
        request timeout on the socket and by the application)."""
        super().server_close()
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()
