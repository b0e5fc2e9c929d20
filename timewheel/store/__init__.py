"""Stores: where the wheel lives.  ``SqliteDictStore`` (one file) is the default,
``RedisStore`` (``timewheel.store.redis``) serves several hosts, ``MemoryStore`` is for tests
and ``immediate=True``.  :func:`open_store` picks one from a path or URL."""

from __future__ import annotations

from typing import Any, Optional

from .base import Advanced, Claimed, Doorbell, Liveness, StoreState, WheelStore
from .memory import MemoryStore
from .sqlite import SqliteDictStore

__all__ = ["WheelStore", "Liveness", "Doorbell", "SqliteDictStore", "MemoryStore", "Claimed",
           "Advanced", "StoreState", "open_store", "is_url"]

URL_SCHEMES = ("redis://", "rediss://", "unix://")


def is_url(location: str) -> bool:
    return location.startswith(URL_SCHEMES)


def open_store(location: str, *, readonly: bool = False, wheel: Any = None,
               namespace: str = "timewheel", timeout: float = 10.0,
               clock: Optional[Any] = None, result_ttl: Optional[float] = None,
               durability: str = "normal") -> WheelStore:
    """The store at ``location``: a ``redis://``/``rediss://``/``unix://`` URL or a file path.

    ``readonly`` opens an existing store for reading only: nothing is created or written.
    ``result_ttl`` (Redis only): seconds a finished task is kept, as a Redis TTL.
    ``durability`` (files only): ``"normal"`` or ``"fsync"`` (see :class:`SqliteDictStore`); a
    Redis server's is its own ``appendfsync``, so a URL takes ``"normal"`` only.
    """
    kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    if is_url(location):
        if durability != "normal":
            raise ValueError(f"durability={durability!r} is for a store file; a Redis server's "
                             "durability is its appendfsync setting (appendfsync always: every "
                             "write is on disk before it is acknowledged)")
        from .redis import RedisStore
        return RedisStore(location, wheel, namespace=namespace, timeout=timeout, readonly=readonly,
                          result_ttl=result_ttl, **kw)
    return SqliteDictStore(location, wheel, readonly=readonly, busy_timeout=timeout,
                           durability=durability, **kw)
