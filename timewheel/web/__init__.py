"""The web view of a store: ``timewheel web STORE``, or mounted inside an application.

    pip install 'timewheel[web]'
    timewheel web tasks.db                       # http://127.0.0.1:8080/, read-only

    # Flask (or any WSGI app: Django, Pyramid ...), at any prefix:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/timewheel": make_app(hu)})

    # FastAPI / Starlette (ASGI):
    app.mount("/timewheel", make_asgi_app(hu))

Why these dependencies.  The view is a plain WSGI application on Werkzeug (routing, requests,
responses, safe static files) with Jinja2 templates (autoescaping HTML) -- the two libraries
Flask is made of, so mounting it in a Flask app adds nothing, and WSGI is what Flask, Django
and every WSGI server take as is.  For ASGI hosts (FastAPI, Starlette) :func:`make_asgi_app`
wraps the same application with a2wsgi's ``WSGIMiddleware``, the adapter Starlette itself
recommends, which runs each request in a thread pool: right for a view whose every request
is a blocking store read (SQLite, Redis) that must not run on the event loop anyway.  One
application, one set of tests, two ways in.  ``timewheel web`` serves it with
:class:`~timewheel.web.server.ViewServer`: Werkzeug's request handler on a few threads behind
one loop that reads each request whole, with a timeout, and caps the connections, so a silent
connection costs no thread -- enough for the few operators of one store.
The charts are uPlot (MIT, 50 KB), shipped in ``static/vendor`` so the pages work offline.

What it reads: only the store interface, through :mod:`timewheel.query` (the layer behind the
CLI's ``--json``), on each request -- nothing is held in memory between requests, so the view
shows the same history after a restart.  It is read-only unless actions are allowed; see
:mod:`timewheel.web.security` for authentication and CSRF protection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

if TYPE_CHECKING:
    from .app import WebView

__all__ = ["make_app", "make_asgi_app"]

# Nothing here imports Werkzeug or Jinja2 at import time: ``timewheel.web.command`` is part of
# the CLI, which must work without the ``web`` extra installed.


def make_app(store: Any, *, allow_actions: Union[bool, Callable[[dict], bool]] = False,
             auth: Optional[Union[str, tuple[str, str]]] = None, token: Optional[str] = None,
             authorize: Optional[Callable[[dict], bool]] = None, refresh: float = 3.0,
             allowed_hosts: Optional[Iterable[str]] = None) -> "WebView":
    """The web view as a WSGI application.

    :param store: a :class:`~timewheel.TimeWheel` (its store is used, opened lazily, so this
        is safe at import time before a fork), a store, or a file path / ``redis://`` URL
        (opened read-only on the first request; a second, writable connection is opened for
        the first action).
    :param allow_actions: retry, cancel and purge from the page and the API.  A callable
        ``(environ) -> bool`` decides per request (e.g. only for admins).
    :param auth: ``"user:password"`` or ``(user, password)``: HTTP basic authentication.
    :param token: a bearer token (``Authorization: Bearer T``; browsers sign in on ``/login``).
    :param authorize: the host application's own check, ``(environ) -> bool``, called for
        every request; False answers 403.  Use one of ``auth``, ``token``, ``authorize``.
    :param refresh: seconds between the live pages' polls.
    :param allowed_hosts: host names to answer (``tasks.example.com``; ``.example.com``: it
        and every name under it; ``*``: any) besides ``localhost``, ``*.localhost`` and IP
        addresses.  A view without authentication refuses every other ``Host`` with a 403
        (a page on a name that resolves to 127.0.0.1 would otherwise read it: DNS
        rebinding); so mounted without ``auth``, ``token`` or ``authorize`` in an app served
        under a name, list that name.  With authentication, names are checked only if given.
    """
    from .app import WebView
    from .security import Access, parse_basic

    basic = parse_basic(auth) if isinstance(auth, str) else auth
    return WebView(store, allow_actions=allow_actions, refresh=refresh, allowed_hosts=allowed_hosts,
                   access=Access(basic=basic, token=token, authorize=authorize))


def make_asgi_app(store: Any, **options: Any) -> Any:
    """The same view as an ASGI application (for FastAPI / Starlette ``app.mount``); takes
    :func:`make_app`'s options.  Each request runs in a2wsgi's thread pool."""
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(make_app(store, **options))
