"""A real PostgreSQL server for tests and benchmarks: its own data directory and free port, never
a shared one.

    server = PostgresServer()             # initdb (once per test process, then copied)
    server.start(); url = server.url      # postgresql://postgres@127.0.0.1:<port>/postgres
    server.kill()                         # SIGKILL of the whole server: what survives is on disk
    server.start()                        # the same port and data: crash recovery from the WAL
    server.stop()                         # SIGKILL and the data directory removed

Durability is the production default (``fsync=on``, ``synchronous_commit=on``): a task whose
``delay()`` returned is in the WAL on disk.  The binaries are Debian's (``apt-get install
postgresql``; ``.ci/run`` does): found by ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin``, else ``$TIMEWHEEL_PG_BIN``.  A missing PostgreSQL raises (the tests
that need it fail, they do not skip).

PostgreSQL refuses to run as root: as root (CI) the server runs as the ``postgres`` user the
Debian package creates, in a directory of its own under the system's temp dir (pytest's are
readable by root only).  The server is a direct child of the process that starts it, with
``PR_SET_PDEATHSIG``: the kernel kills it when that process dies, however it dies; its
backends notice their postmaster's death and exit.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Optional, Sequence

from .processes import popen, run
from .redis_server import free_port

__all__ = ["PostgresServer", "pg_bindir"]

_template_lock = threading.Lock()
_template: dict[str, str] = {}          # pid -> a data directory made by initdb, copied per server


def pg_bindir() -> str:
    """Where ``postgres`` and ``initdb`` are."""
    env = os.environ.get("TIMEWHEEL_PG_BIN")
    candidates = [env] if env else []
    try:
        out = run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                         reverse=True)
    for d in candidates:
        if d and os.path.exists(os.path.join(d, "postgres")) and os.path.exists(os.path.join(d, "initdb")):
            return d
    raise RuntimeError("PostgreSQL is not installed: the PostgreSQL store's tests need a real server "
                       "(Debian/Ubuntu: apt-get install postgresql; see README)")


def _as_server_user() -> dict:
    """Popen arguments that run the server as ``postgres`` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _owned(path: str) -> None:
    """Hand ``path`` (recursively) to the server's user."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in dirs + files:
            os.lchown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def _run(args: Sequence[str], timeout: float) -> None:
    # (popen's preexec_fn, which sets PDEATHSIG, runs after the switch of user: a credential
    # change would clear it)
    done = run(list(args), capture_output=True, text=True, timeout=timeout, **_as_server_user())
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout[-1500:]} "
                           f"{done.stderr[-1500:]}")


def _template_dir() -> str:
    """A fresh cluster made by initdb, once per test process; servers start from copies."""
    with _template_lock:
        key = str(os.getpid())
        if key not in _template:
            base = tempfile.mkdtemp(prefix="timewheel-pg-template-")
            os.chmod(base, 0o755)
            _owned(base)
            data = os.path.join(base, "data")
            _run([os.path.join(pg_bindir(), "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)
            _template[key] = data
            atexit.register(shutil.rmtree, base, True)
        return _template[key]


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1 (and a unix socket) in a directory of its own."""

    def __init__(self, *, port: Optional[int] = None, settings: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="timewheel-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = port or free_port()
        self.settings = list(settings)
        self.proc: Optional[subprocess.Popen] = None
        shutil.copytree(_template_dir(), self.data, symlinks=True)
        os.chmod(self.data, 0o700)
        _owned(self.dir)

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (f"?{q}" if q else "")

    def args(self) -> list[str]:
        conf = ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.dir}",
                "fsync=on", "synchronous_commit=on", "max_connections=300", "shared_buffers=64MB",
                "log_min_messages=warning", "log_line_prefix=%m [%p] ",
                *self.settings]
        out = [os.path.join(pg_bindir(), "postgres"), "-D", self.data, "-p", str(self.port)]
        for c in conf:
            out += ["-c", c]
        return out

    def start(self, timeout: float = 30.0) -> "PostgresServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log, "ab")
        try:
            self.proc = popen(self.args(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              **_as_server_user())
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"postgres did not accept connections within {timeout}s: "
                                   f"{self.log_tail()}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """True once the server accepts a connection and answers a query."""
        import psycopg
        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False
        except OSError:
            return False

    def pids(self) -> list[int]:
        """The postmaster and its children (each backend is a session of its own: a signal to
        the postmaster's process group does not reach them)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as fh:
                        stat = fh.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == self.proc.pid:
                    out.append(int(entry))
        return out

    def _signal(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server and every backend at once with ``sig`` (SIGKILL by default: a crash,
        no shutdown checkpoint; a restart recovers from the WAL)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP every process of the server: it stops answering, its connections stay open."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGKILL the server (nothing of it is kept) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self.kill(signal.SIGKILL)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> list:
        """Run one statement as the superuser, autocommit; its rows (if any)."""
        import psycopg
        with psycopg.connect(self.url_for(database), connect_timeout=5, autocommit=True) as c:
            cur = c.execute(statement)
            return cur.fetchall() if cur.description else []

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

