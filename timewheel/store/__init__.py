"""Stores: where the wheel lives.  ``SqliteDictStore`` (one file) is the default,
``RedisStore`` (``timewheel.store.redis``) and ``PostgresStore`` (``timewheel.store.postgres``)
serve several hosts, ``MemoryStore`` is for tests and ``immediate=True``.  :func:`open_store`
picks one from a path or URL."""

from __future__ import annotations

from typing import Any, Optional

from ..text import without_password
from .base import Advanced, Claimed, Doorbell, Liveness, StoreState, WheelStore
from .memory import MemoryStore
from .postgres_url import is_postgres
from .sqlite import SqliteDictStore

__all__ = ["WheelStore", "Liveness", "Doorbell", "SqliteDictStore", "MemoryStore", "Claimed",
           "Advanced", "StoreState", "open_store", "is_url", "public_location"]

URL_SCHEMES = ("redis://", "rediss://", "unix://")


def is_url(location: str) -> bool:
    """Whether ``location`` names a server (Redis, PostgreSQL) rather than a file."""
    return location.startswith(URL_SCHEMES) or is_postgres(location)


def public_location(location: str) -> str:
    """``location`` as it may be shown: a server's without its password."""
    if is_postgres(location):
        from .postgres_url import parse
        try:
            return parse(location).public
        except ValueError:
            return without_password(location) if "://" in location else "(a PostgreSQL connection string)"
    return without_password(location) if is_url(location) else location


def open_store(location: str, *, readonly: bool = False, wheel: Any = None,
               namespace: str = "timewheel", timeout: float = 10.0,
               clock: Optional[Any] = None, result_ttl: Optional[float] = None,
               serializer: Optional[str] = None, durability: str = "normal") -> WheelStore:
    """The store at ``location``: a ``redis://``/``rediss://``/``unix://`` URL, a PostgreSQL
    connection string (``postgresql://``, ``postgres://``, a libpq keyword string:
    :mod:`timewheel.store.postgres_url`) or a file path.

    ``readonly`` opens an existing store for reading only: nothing is created or written.
    ``namespace``: Redis's key prefix; PostgreSQL's schema unless the location names one.
    ``result_ttl`` (Redis only): seconds a finished task is kept, as a Redis TTL.
    ``serializer``: the wheel's, checked against the store's (:meth:`WheelStore.agree_serializer`).
    ``durability`` (files only): ``"normal"`` or ``"fsync"`` (see :class:`SqliteDictStore`); a
    server's is its own setting, so a server's location takes ``"normal"`` only.
    """
    kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    if durability != "normal" and is_url(location):
        raise ValueError(f"durability={durability!r} is for a store file; a server's durability is "
                         "its own setting (Redis: appendfsync always; PostgreSQL: fsync and "
                         "synchronous_commit on, its defaults)")
    store: WheelStore
    if is_postgres(location):
        from .postgres import PostgresStore
        store = PostgresStore(location, wheel, namespace=namespace, timeout=timeout, readonly=readonly, **kw)
    elif is_url(location):
        from .redis import RedisStore
        store = RedisStore(location, wheel, namespace=namespace, timeout=timeout, readonly=readonly,
                           result_ttl=result_ttl, **kw)
    else:
        store = SqliteDictStore(location, wheel, readonly=readonly, busy_timeout=timeout,
                                durability=durability, **kw)
    if serializer is not None:
        try:
            store.agree_serializer(serializer)
        except BaseException:
            store.close()
            raise
    return store
