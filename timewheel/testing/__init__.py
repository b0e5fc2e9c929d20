"""Helpers for test suites and benchmarks that drive timewheel from outside, as users do.

    from timewheel.testing import PostgresServer, RedisServer, fill, serve

    with RedisServer(tmp_dir) as server:          # a real redis-server on a free port
        hu = TimeWheel(server.url)
    fill(open_store(path), time.time())           # a store holding tasks in every state
    with serve(path, "--allow-actions") as web:   # a live ``timewheel web`` on a free port
        urllib.request.urlopen(web.url)

* :mod:`timewheel.testing.redis_server` -- a real ``redis-server`` of your own: free port,
  temp dir, AOF fsynced at every write; SIGKILL, SIGSTOP and restart it on the same port.
* :mod:`timewheel.testing.pg_server` -- a real PostgreSQL server of your own (Debian's
  binaries): free port, its own data directory (initdb once per process, then copied), fsync
  on, run as the ``postgres`` user when you are root; SIGKILL (a crash), SIGSTOP, restart.
* :mod:`timewheel.testing.demo` -- :func:`fill`: tasks in every status (pending at known
  ticks, running with a dead owner, succeeded, failed, misfired, cancelled), written through
  the store interface, so on every backend.
* :mod:`timewheel.testing.web` -- :func:`serve`: ``timewheel web`` as a subprocess until the
  block ends, which must exit cleanly on SIGTERM having logged no traceback.
* :mod:`timewheel.testing.commands` -- the installed ``timewheel`` console script, and a
  command's wall time, CPU time and own peak RSS measured from outside it (POSIX).
* :mod:`timewheel.testing.processes` -- ``popen``/``run`` (with a required timeout) whose
  child the kernel kills when the test process dies, even by SIGKILL (Linux); every process
  the helpers above start goes through it.

Why here, in the package.  timewheel's own tests (``tests/``) and its benchmarks
(``benchmarks/``) both need these: the benchmarks time the web view on a store that
:func:`fill` completes, run the console script under :func:`measured`, and start their
``redis-server`` with :class:`RedisServer`.  Kept in ``tests/``, the benchmarks had to reach
into the test suite (by ``sys.path`` edits, and by loading a file by path); kept under
``benchmarks/``, the test suite -- which CI runs without the benchmarks' extras -- would depend
on the benchmark harness.  Both already depend on the package, so the helpers live in it,
where they are importable from any directory, and where an application's own test suite can
use them too (a Redis-backed ``TimeWheel`` against a real server it can kill; its web view
mounted and smoke-tested).  Nothing in timewheel imports this package: the scheduler's
runtime does not pay for it.
"""

from __future__ import annotations

from .commands import console_script, measured
from .demo import DEAD_OWNER, HOSTILE_ERROR, HOSTILE_NAME, Demo, fill, record, run_as_worker
from .pg_server import PostgresServer, pg_bindir
from .redis_server import RedisServer, free_port, redis_server_binary
from .web import Server, serve, web_command

__all__ = [
    "RedisServer", "free_port", "redis_server_binary", "PostgresServer", "pg_bindir",
    "Demo", "fill", "record", "run_as_worker", "DEAD_OWNER", "HOSTILE_NAME", "HOSTILE_ERROR",
    "Server", "serve", "web_command",
    "console_script", "measured",
]
