"""timewheel for FastAPI and Starlette: a lifespan that runs the wheel, and the web view.

    # app.py                                           pip install 'timewheel[fastapi]'
    from fastapi import FastAPI
    from timewheel import TimeWheel
    from timewheel.contrib.fastapi import mount_view, timewheel_lifespan

    hu = TimeWheel("tasks.db", workers=4)
    app = FastAPI(lifespan=timewheel_lifespan(hu))                  # or lifespan=..., your own inside
    mount_view(app, hu, "/ops/timewheel", authorize=is_admin)       # behind your check

The lifespan runs in each worker process of the server (``uvicorn --workers N`` starts each
worker anew, and gunicorn's ``UvicornWorker`` runs it after the fork), never in a supervisor
or pre-fork master: so the wheel starts there, before the app's own start-up, and stops --
letting running tasks finish for ``grace`` seconds and recording them -- after the app's own
shutdown.  A store that cannot be used fails the start-up (the server says so and exits),
as any other lifespan error.

The view is the WSGI application of :func:`timewheel.web.make_asgi_app` (each request in a
thread pool, off the event loop), behind ``authorize(request) -> bool``: it gets the
:class:`starlette.requests.Request` (headers, cookies, ``request.session`` under
SessionMiddleware, ``request.state``; not the body), may be ``async def``, and a plain ``def``
runs in the thread pool as FastAPI runs plain dependencies.  There is no default: the view
shows task arguments, results and errors, so it is never mounted open.  A check that raises
refuses the request and is logged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, Union

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..api import TimeWheel

__all__ = ["timewheel_lifespan", "timewheel_view", "mount_view"]

log = logging.getLogger("timewheel.fastapi")

#: ``authorize`` and ``allow_actions``: given the request, may it?  (sync or async)
RequestCheck = Callable[["Request"], Union[bool, Awaitable[bool]]]
Lifespan = Callable[[Any], Any]        # app -> an async context manager (Starlette's lifespan=)
# Where the decisions made on the event loop travel to the view's thread: the ASGI scope,
# which a2wsgi hands to the WSGI side as environ["asgi.scope"].
_ALLOWED = "timewheel.allowed"
_ACTIONS = "timewheel.actions"


def timewheel_lifespan(hu: "TimeWheel", *, grace: Optional[float] = None,
                       lifespan: Optional[Lifespan] = None) -> Callable[[Any], Any]:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)`` that starts
    ``hu`` in each worker process and stops it at shutdown, waiting up to ``grace`` seconds
    (default: ``hu.exit_grace``) for running tasks.  ``lifespan``: the app's own, run inside
    it (the wheel is started for its start-up and still running during its shutdown); what
    it yields (Starlette's lifespan state) is passed on."""
    wait = hu.exit_grace if grace is None else grace
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 86400:
        raise ValueError(f"grace must be a number of seconds from 0 to 86400, got {wait!r}")

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        # start() opens the store (a file lock, a connection): blocking, so off the loop
        await asyncio.to_thread(hu.start)
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            stopped = await asyncio.to_thread(hu.stop, wait=True, timeout=wait)
            if stopped.unfinished:
                log.warning("%d task(s) still running after %gs; they run again after a restart",
                            stopped.unfinished, wait)

    return run


async def _decide(check: Union[bool, RequestCheck], request: "Request") -> bool:
    if not callable(check):
        return bool(check)
    from starlette.concurrency import run_in_threadpool
    try:
        if inspect.iscoroutinefunction(check):
            answer = await check(request)
        else:
            answer = await run_in_threadpool(check, request)
            if inspect.isawaitable(answer):      # an object whose __call__ is async
                answer = await answer
    except Exception:  # noqa: BLE001 - a failing check must not open the view
        log.exception("the web view's %s check failed", getattr(check, "__name__", "authorize"))
        return False
    return bool(answer)


class _GuardedView:
    """The view's ASGI application, asking the app's checks on the event loop first."""

    def __init__(self, hu: "TimeWheel", authorize: RequestCheck, allow_actions: Union[bool, RequestCheck],
                 refresh: float) -> None:
        from ..web import make_asgi_app
        self.authorize = authorize
        self.allow_actions = allow_actions
        self.app = make_asgi_app(hu, authorize=_scope_flag(_ALLOWED), allow_actions=_scope_flag(_ACTIONS),
                                 refresh=refresh)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            from starlette.requests import Request
            request = Request(scope)         # no receive: a check cannot consume the body
            allowed = await _decide(self.authorize, request)
            actions = allowed and await _decide(self.allow_actions, request)
            scope = {**scope, _ALLOWED: allowed, _ACTIONS: actions}
        await self.app(scope, receive, send)


def _scope_flag(key: str) -> Callable[[dict[str, Any]], bool]:
    def flag(environ: dict[str, Any]) -> bool:
        return environ.get("asgi.scope", {}).get(key) is True      # missing: refused
    return flag


def timewheel_view(hu: "TimeWheel", *, authorize: RequestCheck,
                   allow_actions: Union[bool, RequestCheck] = False, refresh: float = 3.0) -> Any:
    """The web view of ``hu``'s store as an ASGI application behind ``authorize``, to mount
    anywhere (``app.mount(path, ...)``, a Starlette ``Mount``).  ``allow_actions``: retry,
    cancel and purge, a bool or the same kind of check (asked only of requests ``authorize``
    let through)."""
    if not callable(authorize):
        raise TypeError(f"authorize must be a check taking the request, got {type(authorize).__name__}")
    if not (isinstance(allow_actions, bool) or callable(allow_actions)):
        raise TypeError(f"allow_actions must be a bool or a check taking the request, got "
                        f"{type(allow_actions).__name__}")
    return _GuardedView(hu, authorize, allow_actions, refresh)


def mount_view(app: Any, hu: "TimeWheel", path: str = "/timewheel", *, authorize: RequestCheck,
               allow_actions: Union[bool, RequestCheck] = False, refresh: float = 3.0,
               name: str = "timewheel") -> None:
    """``app.mount(path, timewheel_view(hu, ...), name=name)``."""
    app.mount(path, timewheel_view(hu, authorize=authorize, allow_actions=allow_actions, refresh=refresh),
              name=name)
