"""The Redis store's line to its server: one redis-py client, its errors in timewheel's terms,
the Lua scripts (:mod:`timewheel.store.redis_lua`), and the server's clock, which is the
store's (see store/redis.py).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from ..errors import StoreBusy, StoreError
from . import redis_lua
from .redis_pipeline import AutoPipeline
from .server_clock import ServerClock

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - the store says what to install
    redis = None

__all__ = ["RedisClient", "redis", "text"]

log = logging.getLogger("timewheel.store")

_RESYNC = 10.0              #: seconds between measurements of the offset to the server's clock
_SCRIPTS = ("init", "put", "add", "claim", "advance", "renew", "purge", "forget", "lead", "resign",
            "mark_broken", "note", "aborting")


def text(v: Any) -> str:
    """A reply's bytes (or number) as text."""
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisClient:
    """The connection of one :class:`~timewheel.store.redis.RedisStore` to its server.

    :param url: the URL for redis-py (our own query parameters taken out).
    :param location: the URL without its password, for messages.
    :param timeout: seconds to wait for the server before :class:`StoreBusy`.
    :param readonly: no script runs.
    :param clock: the local clock; :meth:`now` adds the measured offset to the server's.
    :param meta: the namespace's ``{ns}:meta`` key, every script's KEYS[1].
    """

    def __init__(self, url: str, location: str, *, timeout: float, readonly: bool,
                 clock: Callable[[], float], meta: str) -> None:
        self.location = location
        self.timeout = timeout
        self.readonly = readonly
        self._clock = clock
        self._meta = meta
        self.clock = ServerClock(self._time, clock, _RESYNC)
        try:
            self.redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                # No silent retries: a script whose reply was lost may have run, and running
                # it again would claim twice or report a stored task as a duplicate.
                retry=Retry(NoBackoff(), 0), retry_on_error=[])
        except ValueError as exc:
            raise StoreError(f"{location}: not a usable Redis URL ({exc})") from None
        #: the database number (pub/sub channels are not per database)
        self.db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        self._scripts = {name: self.redis.register_script(getattr(redis_lua, name.upper()))
                         for name in _SCRIPTS}
        #: the script calls of this process's threads, sharing round trips
        self.auto = AutoPipeline(self)
        self._check_server()
        self.sync()

    def close(self) -> None:
        try:
            self.redis.close()
        except Exception:  # noqa: BLE001 - closing must not raise; nothing is pending
            log.debug("closing %s failed", self.location, exc_info=True)

    def io(self, call: Callable[[Any], Any], write: bool = False) -> Any:
        """``call(client)``, with redis-py's errors turned into ours."""
        try:
            return call(self.redis)
        except redis.RedisError as exc:
            raise self.translate(exc, write) from None

    def script(self, name: str, args: Sequence[Any]) -> Any:
        """Run the script ``name`` (of :mod:`timewheel.store.redis_lua`) with ``args``: one
        round trip, shared with other threads' calls meanwhile (store/redis_pipeline.py)."""
        return self.scripts([(name, args)])[0]

    def scripts(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run several scripts, ``(name, args)`` each, in order, in one round trip; their
        replies (the first that failed is raised)."""
        if self.readonly:
            raise StoreError(f"{self.location} is open read-only")
        return self.auto.scripts(calls)

    def run_one(self, name: str, args: Sequence[Any]) -> Any:
        """One script call, alone: one EVALSHA (redis-py loads the script if the server
        does not know it)."""
        return self.io(lambda c: self._scripts[name](keys=[self._meta], args=args, client=c), write=True)

    def pipelined(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several script calls in one pipeline (no MULTI: each script is atomic on its own):
        one write, one read.  Their replies, an error in the place of a script that failed.
        EVALSHA straight away -- redis-py's scripts in a pipeline would first ask the server
        whether it knows them, one round trip more each time; a script it does not know (it
        restarted) is loaded then, and the calls that did not run for it run again."""
        def send(c: Any, todo: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for name, args in todo:
                pipe.evalsha(self._scripts[name].sha, 1, self._meta, *args)
            return pipe.execute(raise_on_error=False)

        replies = self.io(lambda c: send(c, calls), write=True)
        unknown = [k for k, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if unknown:
            for name in {calls[k][0] for k in unknown}:
                self.io(lambda c, name=name: c.script_load(self._scripts[name].script))
            again = self.io(lambda c: send(c, [calls[k] for k in unknown]), write=True)
            for k, r in zip(unknown, again):
                replies[k] = r
        return replies

    def translate(self, exc: Exception, write: bool) -> StoreError:
        text = str(exc) or exc.__class__.__name__
        where = f"the Redis server at {self.location}"
        maybe = "; the change may or may not have been made" if write else ""
        if isinstance(exc, redis.BusyLoadingError):
            return StoreBusy(f"{where} is loading its data set ({text}); nothing was written")
        if isinstance(exc, redis.AuthenticationError):
            return StoreError(f"{where} refused the credentials ({text}); nothing was written")
        if isinstance(exc, redis.TimeoutError):
            return StoreBusy(f"{where} did not answer within {self.timeout:g}s ({text}){maybe}")
        if isinstance(exc, redis.ConnectionError):
            if "connecting to" in text or "Connection refused" in text:
                return StoreError(f"cannot reach {where} ({text}); nothing was written")
            return StoreError(f"lost the connection to {where} ({text}){maybe}")
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
            return StoreError(f"{where} is out of memory (maxmemory) and refuses writes; nothing "
                              "was written")
        if isinstance(exc, redis.exceptions.ReadOnlyError):
            return StoreError(f"{where} is a read-only replica; nothing was written")
        if isinstance(exc, redis.exceptions.NoPermissionError):
            return StoreError(f"{where}: the Redis user may not do this ({text}); nothing was written")
        if text.startswith("BUSY"):
            return StoreBusy(f"{where} is busy running a script ({text}); nothing was written")
        return StoreError(f"{where}: {text}")

    def _check_server(self) -> None:
        """Refuse servers older than 7.0; warn about settings that can lose tasks."""
        try:
            info = self.redis.info("server")
        except redis.exceptions.NoPermissionError:      # a restricted user: trust the server
            info = {"redis_version": "7"}
        except redis.RedisError as exc:
            raise self.translate(exc, False) from None
        version = str(info.get("redis_version", "0"))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        if major < 7:
            raise StoreError(f"the Redis server at {self.location} runs {version}; timewheel needs 7.0 "
                             "or later")
        if self.readonly:
            return
        try:
            cfg = {}
            for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                cfg.update({text(k): text(v) for k, v in self.redis.config_get(name).items()})
        except redis.RedisError as exc:       # managed servers often forbid CONFIG
            log.debug("cannot read the configuration of %s: %s", self.location, exc)
            return
        if cfg.get("appendonly") != "yes":
            log.warning("the Redis server at %s has appendonly %s: tasks added since its last "
                        "snapshot are lost if it restarts (set appendonly yes; docs/stores.md, "
                        "\"Redis\")", self.location, cfg.get("appendonly"))
        elif cfg.get("appendfsync") == "no":
            log.warning("the Redis server at %s has appendfsync no: a crash of its host loses the "
                        "writes the OS had not flushed (set appendfsync always or everysec)",
                        self.location)
        elif cfg.get("appendfsync") == "everysec":
            log.info("the Redis server at %s has appendfsync everysec: a crash of its host can "
                     "lose the last second of writes", self.location)
        policy = cfg.get("maxmemory-policy")
        if policy is not None and policy != "noeviction":
            log.warning("the Redis server at %s has maxmemory-policy %s: at its memory limit it "
                        "deletes keys, tasks included (set maxmemory-policy noeviction)",
                        self.location, policy)

    # -- the server's clock (timewheel.store.server_clock) --------------------------------------
    def _time(self) -> float:
        sec, usec = self.io(lambda c: c.time())
        return sec + usec / 1e6

    def sync(self) -> None:
        self.clock.sync()

    def saw(self, server_time: float) -> None:
        self.clock.saw(server_time)

    def now(self) -> float:
        """The server's clock (see :class:`~timewheel.store.server_clock.ServerClock`)."""
        return self.clock.now()

    def server_us(self) -> int:
        sec, usec = self.io(lambda c: c.time())
        self.saw(sec + usec / 1e6)
        return sec * 1_000_000 + usec
