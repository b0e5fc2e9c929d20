"""The web view as a WSGI application: routing, the pages, the JSON API, the actions.

Every handler reads the store through :mod:`timewheel.query` -- the layer that also makes
the CLI's ``--json`` output -- so a page, its ``/api`` twin and ``timewheel inspect --json``
say the same thing.  Nothing is kept between requests but the open store: the view shows
what the store holds, and survives its own restarts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Optional, Union
from urllib.parse import quote, unquote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, PathConverter, RequestRedirect, Rule
from werkzeug.utils import redirect, send_from_directory
from werkzeug.wrappers import Request, Response

from .. import __version__, query, text
from ..errors import BatchNotFound, StoreBusy, StoreError, TaskNotFound
from ..records import (
    ABORTED,
    FAILED,
    MISFIRED,
    PENDING,
    RETRYABLE,
    RUNNING,
    STATUSES,
    TERMINAL,
    RecordDecodeError,
)
from ..store import WheelStore, open_store
from ..store.base import LISTABLE
from . import params
from .security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    TOKEN_COOKIE,
    Access,
    Authorize,
    HostGuard,
    csrf_error,
    csrf_token,
    host_name,
    same_site_path,
)

__all__ = ["WebView"]

log = logging.getLogger("timewheel.web")

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
#: at most this many tasks change per bulk action (press again for more)
BULK_LIMIT = 1000
MAX_PAGE = 500
_VERBS = {"retry": "retried", "cancel": "cancelled", "abort": "aborting"}
_WHY_NOT = {"retry": "only failed, misfired, cancelled or aborted tasks can be retried",
            "cancel": "only pending tasks can be cancelled",
            "abort": "only pending and running tasks can be stopped"}
FLASH_COOKIE = "timewheel_flash"

StoreSource = Union[str, "os.PathLike[str]", WheelStore, Any]

class TaskIdConverter(PathConverter):
    """A task id in a URL.  Ids are free text: the whole id is one segment (a slash in it
    sent as %2F; servers decode the path, so the id comes back whole, slashes and all), so
    that no part of it is a ``.`` or ``..`` segment a browser would resolve away.  The ids
    ``.`` and ``..`` themselves cannot be a segment at all: their links take the query
    form (``/task?id=..``, see WebView.url)."""

    regex = ".+?"
    part_isolating = False          # (it spans slashes; Werkzeug infers this from "/" in regex)

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


#: the ids whose links cannot carry them in the path (browsers resolve them as dot segments)
DOT_IDS = (".", "..")

_RULES = [
    Rule("/", endpoint="overview"),
    Rule("/wheel", endpoint="wheel"),
    Rule("/timeline", endpoint="timeline"),
    Rule("/tasks", endpoint="tasks"),
    Rule("/tasks/<taskid:task_id>", endpoint="task", methods=["GET"]),
    Rule("/task", endpoint="task_query", methods=["GET"]),
    Rule("/tasks/<taskid:task_id>/<any(retry, cancel, abort):verb>", endpoint="task_action",
         methods=["POST"]),
    Rule("/failed", endpoint="failed"),
    Rule("/running", endpoint="running"),
    Rule("/processes", endpoint="processes"),
    Rule("/batches", endpoint="batches"),
    Rule("/batches/<taskid:batch_id>", endpoint="batch"),
    Rule("/bulk", endpoint="bulk", methods=["POST"]),
    Rule("/purge", endpoint="purge", methods=["POST"]),
    Rule("/queues", endpoint="queue_action", methods=["POST"]),
    Rule("/login", endpoint="login", methods=["GET", "POST"]),
    Rule("/logout", endpoint="logout", methods=["POST"]),
    Rule("/static/<path:filename>", endpoint="static"),
    Rule("/metrics", endpoint="metrics"),
    Rule("/api/inspect", endpoint="api_inspect"),
    Rule("/api/tasks", endpoint="api_tasks"),
    Rule("/api/tasks/<taskid:task_id>", endpoint="api_task", methods=["GET"]),
    Rule("/api/task", endpoint="api_task_query", methods=["GET"]),
    Rule("/api/tasks/<taskid:task_id>/<any(retry, cancel, abort):verb>", endpoint="api_task_action",
         methods=["POST"]),
    Rule("/api/<any(retry, cancel, abort):verb>", endpoint="api_bulk", methods=["POST"]),
    Rule("/api/purge", endpoint="api_purge", methods=["POST"]),
    Rule("/api/<any(pause, resume):verb>", endpoint="api_queue_action", methods=["POST"]),
    Rule("/api/stats", endpoint="api_stats"),
    Rule("/api/processes", endpoint="api_processes"),
    Rule("/api/batches", endpoint="api_batches"),
    Rule("/api/batches/<taskid:batch_id>", endpoint="api_batch"),
    Rule("/api/timeline", endpoint="api_timeline"),
    Rule("/api/wheel", endpoint="api_wheel"),
    Rule("/api/wheel/slots/<int:slot>", endpoint="api_slot"),
    Rule("/api/series", endpoint="api_series"),
]
#: endpoints anyone may reach (the sign-in page and the files it needs)
_PUBLIC = {"login", "static"}


class _BatchPages:
    """The Batches pages and their JSON (issue 23): a mixin of :class:`WebView`."""

    store: WheelStore
    _page: Callable[..., Response]

    def on_batches(self, request: Request) -> Response:
        limit = params.integer(request.args, "limit", 50, 1, 10_000)
        data = query.batches_data(self.store, time.time(), limit=limit)
        return self._page(request, "batches.html", title="Batches", batches=data["batches"],
                          now=data["now"], limit=limit)

    def on_batch(self, request: Request, batch_id: str) -> Response:
        limit = params.integer(request.args, "limit", 100, 0, MAX_PAGE)
        start = params.integer(request.args, "start", 0, 0, 10 ** 12)
        data = query.batch_data(self.store, batch_id, time.time(), limit=limit, start=start)
        return self._page(request, "batch.html", title=f"Batch {batch_id}", batch=data, now=data["now"],
                          limit=limit)

    def on_api_batches(self, request: Request) -> Response:
        limit = params.integer(request.args, "limit", 50, 1, 10_000)
        return _json(query.batches_data(self.store, time.time(), limit=limit))

    def on_api_batch(self, request: Request, batch_id: str) -> Response:
        limit = params.integer(request.args, "limit", 100, 0, MAX_PAGE)
        start = params.integer(request.args, "start", 0, 0, 10 ** 12)
        return _json(query.batch_data(self.store, batch_id, time.time(), limit=limit, start=start))


class WebView(_BatchPages):
    """The web view of one store, as a WSGI application (see :func:`timewheel.web.make_app`).

    :param store: a file path or ``redis://`` URL (opened lazily, read-only, on the first
        request: safe to create before a fork), a :class:`~timewheel.store.WheelStore`, or a
        :class:`~timewheel.TimeWheel` whose store is used.
    :param allow_actions: retry, cancel and purge from the page and the API; a callable
        ``(environ) -> bool`` decides per request (e.g. admins only).
    :param access: who may look (:class:`~timewheel.web.security.Access`).
    :param refresh: seconds between the live pages' polls.
    :param allowed_hosts: ``Host`` names to answer besides loopback names and IP addresses
        (:class:`~timewheel.web.security.HostGuard`).  Without authentication every other
        name is refused (DNS rebinding); with it, names are checked only if this is given.
    """

    def __init__(self, store: StoreSource, *, allow_actions: Union[bool, Authorize] = False,
                 access: Access = Access(), refresh: float = 3.0,
                 allowed_hosts: Optional[Iterable[str]] = None) -> None:
        self._source = store
        self._reader: Optional[WheelStore] = None
        self._writer: Optional[WheelStore] = None
        self._opening = threading.Lock()
        self._owned: list[WheelStore] = []
        self._allow_actions = allow_actions
        self.access = access
        self.refresh = refresh
        guard = HostGuard.of(allowed_hosts or ())
        self.hosts: Optional[HostGuard] = guard if access.open or allowed_hosts is not None else None
        # Fresh copies: a rule belongs to one map, and a process may mount several views.
        # (merge_slashes off: a task id may hold "//"; a path that only matches with slashes
        # merged is a 404 that says so)
        self.url_map = Map([rule.empty() for rule in _RULES], strict_slashes=False, merge_slashes=False,
                           converters={"taskid": TaskIdConverter})
        self.templates = Environment(
            loader=PackageLoader("timewheel.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined, finalize=_finalize, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(when=_when, ago=_ago, dur=_dur, clean=_clean_lines, count=_count,
                                      name=_name, progress=text.progress)

    # -- the store -------------------------------------------------------------------------------
    def open(self, writable: bool = False) -> WheelStore:
        """The store to read (or, ``writable``, to change); opened on first use."""
        source = self._source
        if isinstance(source, WheelStore):
            return source
        if _is_wheel(source):
            return source.store
        location = os.fspath(source)
        with self._opening:
            if self._reader is None:
                # Read-only first: a missing file or a foreign one is refused, never created.
                self._reader = open_store(location, readonly=True)
                self._owned.append(self._reader)
            if writable and self._writer is None:
                self._writer = open_store(location)
                self._owned.append(self._writer)
            return self._writer if writable else self._reader

    @property
    def store(self) -> WheelStore:
        """The store pages read."""
        return self.open(writable=False)

    def close(self) -> None:
        """Close the stores this view opened itself."""
        for s in self._owned:
            s.close()
        self._owned.clear()
        self._reader = self._writer = None

    def actions_allowed(self, request: Request) -> bool:
        allow = self._allow_actions
        return bool(allow(request.environ)) if callable(allow) else bool(allow)

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        # Bounded bodies: a bulk action names at most BULK_LIMIT ids.
        request.max_content_length = request.max_form_memory_size = 1024 * 1024
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        api = request.path.startswith(("/api/", "/metrics"))
        if self.hosts is not None and not self.hosts.allows(request.host):
            return self._headers(self._refuse_host(request, api))
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            rule, args = adapter.match(return_rule=True)
            endpoint = rule.endpoint
            request.url_rule, request.view_args = rule, args
            if endpoint not in _PUBLIC and not self._allowed(request):
                return self._headers(self._refuse_unauthenticated(request, api))
            if request.method == "POST":
                why = csrf_error(request, self.access)
                if why is not None:
                    raise Forbidden(why)
            response = getattr(self, "on_" + endpoint)(request, **args)
        except RequestRedirect as exc:
            parts = urlsplit(exc.new_url)
            target = same_site_path(parts.path + ("?" + parts.query if parts.query else ""), "")
            response = redirect(target or self._url(request, "overview"), code=exc.code)
        except MethodNotAllowed as exc:
            response = self._error(request, api, exc.code or 405,
                                   f"{request.method} is not allowed here", exc.get_headers())
        except NotFound as exc:
            said = exc.description if exc.description != NotFound.description else None
            response = self._error(request, api, 404, said or f"nothing at {request.path}")
        except HTTPException as exc:
            response = self._error(request, api, exc.code or 400, exc.description or exc.name)
        except (TaskNotFound, BatchNotFound) as exc:
            response = self._error(request, api, 404, _one_line(str(exc)))
        except ValueError as exc:        # the query layer's word for a bad argument
            response = self._error(request, api, 400, _one_line(str(exc)))
        except StoreBusy as exc:
            response = self._error(request, api, 503, _one_line(str(exc)), [("Retry-After", "1")])
        except StoreError as exc:
            response = self._error(request, api, 503, _one_line(str(exc)))
        except Exception:  # noqa: BLE001 - a bug must not show a traceback to the user
            log.exception("error serving %s %s", request.method, request.path)
            response = self._error(request, api, 500, "internal error; the server log has the details")
        return self._headers(response)

    @staticmethod
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'self'; form-action 'self'; base-uri 'none'")
        return response

    def _error(self, request: Request, api: bool, code: int, message: str,
               headers: Iterable[tuple[str, str]] = ()) -> Response:
        if api:
            response = _json({"error": message}, code)
        else:
            response = self._page(request, "error.html", status=code, code=code, message=message,
                                  title=f"{code}")
        for k, v in headers:
            if k.lower() != "content-type":
                response.headers[k] = v
        return response

    def _allowed(self, request: Request) -> bool:
        """Whether this request may see the store (asked once per request)."""
        allowed = request.environ.get("timewheel.allowed")
        if allowed is None:
            try:
                allowed = self.access.allows(request)
            except Exception:  # noqa: BLE001 - a failing host hook must not open the view
                log.exception("the authorize hook failed")
                allowed = False
            request.environ["timewheel.allowed"] = allowed
        return allowed

    def _refuse_host(self, request: Request, api: bool) -> Response:
        name = host_name(request.host)
        shown = repr(text.clean(name)[:100]) if name else "in this Host header"
        message = (f"refused: this view does not answer to the host name {shown} (a guard against "
                   "DNS rebinding); open it at 127.0.0.1 or localhost, or allow the name with "
                   "--allow-host (allowed_hosts= when mounted in an app)")
        if api:
            return _json({"error": message}, 403)
        return Response(message + "\n", status=403, mimetype="text/plain")

    def _refuse_unauthenticated(self, request: Request, api: bool) -> Response:
        if self.access.basic is not None:
            response = self._error(request, api, 401, "sign in to see this store")
            response.headers["WWW-Authenticate"] = 'Basic realm="timewheel", charset="UTF-8"'
            return response
        if self.access.token is not None:
            if api or request.method != "GET":
                response = self._error(request, api, 401, "a bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="timewheel"'
                return response
            return redirect(self._url(request, "login", next=self._here(request)))
        return self._error(request, api, 403, "not authorized to see this store")

    # -- rendering -------------------------------------------------------------------------------
    def _url(self, request: Request, endpoint: str, **values: Any) -> str:
        if endpoint in ("task", "api_task") and values.get("task_id") in DOT_IDS:
            endpoint, values["id"] = endpoint + "_query", values.pop("task_id")
        adapter = self.url_map.bind_to_environ(request.environ)
        return adapter.build(endpoint, {k: v for k, v in values.items() if v not in (None, "")})

    def _page(self, request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
        token, new = csrf_token(request)
        flash = request.cookies.get(FLASH_COOKIE)
        context.setdefault("now", time.time())
        body = self.templates.get_template(template).render(
            url=lambda endpoint, **v: self._url(request, endpoint, **v),
            csrf=token, csrf_field=CSRF_FIELD, actions=self._actions_safe(request),
            # (before sign-in a page tells nothing of the store, nor which version runs it)
            store_location=self._location() if self._allowed(request) else None,
            version=__version__ if self._allowed(request) else None, refresh=self.refresh,
            signed_in=self.access.token is not None and TOKEN_COOKIE in request.cookies,
            flash=unquote(flash)[:300] if flash else None, endpoint=template[:-5],
            request_path=self._here(request), **context)
        response = Response(body, status=status, mimetype="text/html")
        path = request.script_root or "/"
        if new:
            response.set_cookie(CSRF_COOKIE, token, path=path, httponly=True, samesite="Strict",
                                secure=request.is_secure)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path=path)
        return response

    def _actions_safe(self, request: Request) -> bool:
        try:
            return self.actions_allowed(request)
        except Exception:  # noqa: BLE001 - the error page must render even if the hook fails
            return False

    def _location(self) -> str:
        try:
            return self.store.location
        except Exception:  # noqa: BLE001 - the error page must render without a store
            if isinstance(self._source, (str, os.PathLike)):
                from ..store import public_location
                return public_location(os.fspath(self._source))
            return "(store)"

    def _here(self, request: Request) -> str:
        """This request's path and query, as a link from the page (mount prefix included):
        built again from its rule, as links are (``request.path`` is decoded: a task id's
        slashes and dots in it would lead elsewhere)."""
        query = request.query_string.decode("latin-1")
        rule, args = getattr(request, "url_rule", None), getattr(request, "view_args", None)
        if rule is not None and args is not None and "GET" in (rule.methods or ()):
            path = self._url(request, rule.endpoint, **args)
            return path + ("&" if "?" in path else "?") + query if query else path
        return request.script_root + quote(request.path, safe="/") + ("?" + query if query else "")

    def _back(self, request: Request, message: str, default: str) -> Response:
        """Redirect after a form post to the page it came from (only our own pages)."""
        target = same_site_path(request.form.get("next", ""), request.script_root) or default
        response = redirect(target, code=303)
        response.set_cookie(FLASH_COOKIE, quote(message, safe=" ,.:;()'/-"),
                            path=request.script_root or "/", httponly=True, samesite="Strict",
                            max_age=60)
        return response

    # -- pages -----------------------------------------------------------------------------------
    def on_overview(self, request: Request) -> Response:
        now = time.time()
        store = self.store
        return self._page(request, "overview.html", title="Overview",
                          data={"inspect": query.inspect_data(store, now, next_n=10),
                                "stats": query.stats_data(store, now, recent=1000),
                                "series": query.series_data(store, now)})

    def on_wheel(self, request: Request) -> Response:
        now = time.time()
        revolutions = _revolutions(request)
        wheel = query.wheel_data(self.store, now, revolutions=revolutions)
        return self._page(request, "wheel.html", title="The wheel", data=wheel,
                          revolutions=revolutions, choices=_revolution_choices(wheel))

    def on_timeline(self, request: Request) -> Response:
        hours = params.number(request.args, "hours", 24.0, 0.0, 24.0 * 366)
        name = params.text(request.args, "name")
        data = query.timeline_data(self.store, time.time(), hours=hours, name=name)
        return self._page(request, "timeline.html", title="Timeline", data=data, hours=hours, name=name)

    def on_tasks(self, request: Request) -> Response:
        f = _task_filter(request)
        if f["id_prefix"] and f["after"] is None and self._exists(f["id_prefix"]):
            # a whole id: straight to the task (a prefix search reads every id it matches)
            return redirect(self._url(request, "task", task_id=f["id_prefix"]), code=303)
        data = query.tasks_data(self.store, time.time(), **f)
        tasks = data["tasks"]
        return self._page(request, "tasks.html", title="Tasks", filter=f, tasks=tasks, now=data["now"],
                          statuses=LISTABLE, next_after=data["next_after"],
                          counts=query.counts_by_status(self.store)[0])

    def _exists(self, task_id: str) -> bool:
        try:
            return self.store.get(task_id) is not None
        except RecordDecodeError:
            return True          # a broken record: its page says why

    def on_task(self, request: Request, task_id: str) -> Response:
        full = params.flag(request.args, "full")
        data = query.show_data(self.store, task_id, time.time(), full=full)
        return self._page(request, "task.html", title=f"Task {task_id}", task=data, full=full,
                          can_retry=data["status"] in RETRYABLE, can_cancel=data["status"] == PENDING,
                          can_abort=data["status"] == RUNNING and data["abort_requested"] is None)

    def on_task_query(self, request: Request) -> Response:
        return self.on_task(request, _required_id(request))

    def on_failed(self, request: Request) -> Response:
        name = params.text(request.args, "name")
        limit = params.integer(request.args, "limit", 100, 1, MAX_PAGE)
        now = time.time()
        sections = [(s, query.tasks_data(self.store, now, status=s, name=name, limit=limit))
                    for s in (FAILED, MISFIRED, ABORTED)]
        counts = query.counts_by_status(self.store)[0]
        return self._page(request, "failed.html", title="Failed, misfired and aborted", sections=sections,
                          name=name, limit=limit, counts=counts, now=now, terminal=sorted(TERMINAL))

    def on_running(self, request: Request) -> Response:
        name = params.text(request.args, "name")
        limit = params.integer(request.args, "limit", 200, 1, MAX_PAGE)
        data = query.tasks_data(self.store, time.time(), status=RUNNING, name=name, limit=limit)
        return self._page(request, "running.html", title="Running", tasks=data["tasks"], now=data["now"],
                          name=name, limit=limit, more=data["next_after"] is not None)

    def on_processes(self, request: Request) -> Response:
        data = query.processes_data(self.store, self.store.now())
        return self._page(request, "processes.html", title="Processes", **data)

    def on_login(self, request: Request) -> Response:
        target = (same_site_path(request.values.get("next", ""), request.script_root)
                  or self._url(request, "overview"))
        if self.access.token is None:
            return redirect(target, code=303)
        if request.method == "POST":
            if self.access.token_matches(request.form.get("token", "")):
                response = redirect(target, code=303)
                response.set_cookie(TOKEN_COOKIE, request.form["token"], path=request.script_root or "/",
                                    httponly=True, samesite="Strict", secure=request.is_secure)
                return response
            return self._page(request, "login.html", status=401, title="Sign in", next=target,
                              wrong=True)
        return self._page(request, "login.html", title="Sign in", next=target, wrong=False)

    def on_logout(self, request: Request) -> Response:
        response = redirect(self._url(request, "login"), code=303)
        response.delete_cookie(TOKEN_COOKIE, path=request.script_root or "/")
        return response

    def on_static(self, request: Request, filename: str) -> Response:
        response = send_from_directory(STATIC, filename, request.environ, max_age=3600)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def on_metrics(self, request: Request) -> Response:
        """Prometheus metrics (timewheel.metrics): the store's (tasks per status) and, when
        the view was made for the app's TimeWheel, this process's per-run series too."""
        try:
            from .. import metrics  # type: ignore[attr-defined]
        except ImportError:
            raise NotFound("no metrics here: they need prometheus_client "
                           "(pip install 'timewheel[metrics]')") from None
        source = self._source if _is_wheel(self._source) else self.store
        body, content_type = metrics.exposition(source, accept=request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    # -- actions from the pages ------------------------------------------------------------------
    def _require_actions(self, request: Request) -> None:
        if not self.actions_allowed(request):
            raise Forbidden("actions are off: this view is read-only (start it with --allow-actions)")

    def on_task_action(self, request: Request, task_id: str, verb: str) -> Response:
        self._require_actions(request)
        result = _change(self.open(writable=True), [task_id], verb)
        back = self._url(request, "task", task_id=task_id)
        return self._back(request, _summary(result, verb), back)

    def on_bulk(self, request: Request) -> Response:
        self._require_actions(request)
        verb = params.choice(request.form, "verb", _VERBS, None)
        if verb is None:
            raise BadRequest("verb is required: retry, cancel or abort")
        ids = self._selection(request.form)
        result = _change(self.open(writable=True), ids, verb)
        return self._back(request, _summary(result, verb, selected=len(ids)),
                          self._url(request, "failed" if verb == "retry" else "tasks"))

    def on_purge(self, request: Request) -> Response:
        self._require_actions(request)
        result = self._purge(request.form)
        return self._back(request, f"purged {result['purged']} task(s) ({', '.join(result['statuses'])})",
                          self._url(request, "failed"))

    def on_queue_action(self, request: Request) -> Response:
        """Pause or resume a queue (the overview's buttons): form ``queue`` and ``verb``."""
        self._require_actions(request)
        verb = params.choice(request.form, "verb", ("pause", "resume"), None)
        if verb is None:
            raise BadRequest("verb is required: pause or resume")
        result = self._queue_action(request.form, verb)
        done, already = ("paused", "paused") if verb == "pause" else ("resumed", "running")
        message = (f"queue {result['queue']} {done}" if result["changed"]
                   else f"queue {result['queue']} was already {already}")
        return self._back(request, message, self._url(request, "overview"))

    def _queue_action(self, form: Any, verb: str) -> dict[str, Any]:
        queue = params.text(form, "queue")
        if queue is None:
            raise BadRequest("queue is required")
        return query.pause_data(self.open(writable=True), queue, verb == "pause")     # bad: 400

    def _selection(self, form: Any) -> list[str]:
        """The ids a bulk action applies to: those ticked, or the first BULK_LIMIT that match
        the filter (``all=1`` with ``status``, ``name``, ``id``)."""
        if params.flag(form, "all"):
            status = params.choice(form, "status", STATUSES)
            if status is None:
                raise BadRequest("a bulk action on every matching task needs a status")
            found = query.tasks_data(self.store, time.time(), status=status, name=params.text(form, "name"),
                                     id_prefix=params.text(form, "id"), limit=BULK_LIMIT)
            return [t["id"] for t in found["tasks"]]
        ids = [i for i in form.getlist("ids") if i]
        if not ids:
            raise BadRequest("select at least one task (or all matching)")
        if len(ids) > BULK_LIMIT:
            raise BadRequest(f"at most {BULK_LIMIT} tasks per action, got {len(ids)}")
        return ids

    def _purge(self, form: Any) -> dict[str, Any]:
        older_than = params.duration(form, "older_than")
        statuses = params.choices(form, "status", sorted(TERMINAL)) or None
        return query.purge_data(self.open(writable=True), time.time(), older_than=older_than,
                                statuses=statuses)

    # -- the JSON API ----------------------------------------------------------------------------
    def on_api_inspect(self, request: Request) -> Response:
        next_n = params.integer(request.args, "next", 5, 0, 100)
        return _json(query.inspect_data(self.store, time.time(), next_n=next_n))

    def on_api_tasks(self, request: Request) -> Response:
        return _json(query.tasks_data(self.store, time.time(), **_task_filter(request)))

    def on_api_task(self, request: Request, task_id: str) -> Response:
        full = params.flag(request.args, "full")
        return _json(query.show_data(self.store, task_id, time.time(), full=full))

    def on_api_task_query(self, request: Request) -> Response:
        return self.on_api_task(request, _required_id(request))

    def on_api_task_action(self, request: Request, task_id: str, verb: str) -> Response:
        self._require_actions(request)
        result = _change(self.open(writable=True), [task_id], verb)
        if result["unknown"]:
            raise TaskNotFound(f"no task {task_id} in {self.store.location}")
        if result["skipped"]:
            status = result["skipped"][0]["status"]
            return _json({"error": f"task {task_id} is {status}; {_WHY_NOT[verb]}", **result}, 409)
        return _json(result)

    def on_api_bulk(self, request: Request, verb: str) -> Response:
        self._require_actions(request)
        ids = self._selection(_body(request))
        return _json(_change(self.open(writable=True), ids, verb))

    def on_api_purge(self, request: Request) -> Response:
        self._require_actions(request)
        return _json(self._purge(_body(request)))

    def on_api_queue_action(self, request: Request, verb: str) -> Response:
        self._require_actions(request)
        return _json(self._queue_action(_body(request), verb))

    def on_api_processes(self, request: Request) -> Response:
        return _json(query.processes_data(self.store, self.store.now()))

    def on_api_stats(self, request: Request) -> Response:
        recent = params.integer(request.args, "recent", 1000, 1, 100_000)
        return _json(query.stats_data(self.store, time.time(), recent=recent))

    def on_api_timeline(self, request: Request) -> Response:
        hours = params.number(request.args, "hours", 24.0, 0.0, 24.0 * 366)
        name = params.text(request.args, "name")
        return _json(query.timeline_data(self.store, time.time(), hours=hours, name=name))

    def on_api_wheel(self, request: Request) -> Response:
        return _json(query.wheel_data(self.store, time.time(), revolutions=_revolutions(request)))

    def on_api_slot(self, request: Request, slot: int) -> Response:
        store = self.store
        if slot >= store.wheel.slots:
            raise NotFound()
        cycle = request.args.get("cycle")
        return _json(query.slot_data(
            store, time.time(), slot, revolutions=_revolutions(request),
            cycle=None if cycle in (None, "") else params.integer(request.args, "cycle", 0, 0, 2 ** 53),
            limit=params.integer(request.args, "limit", 50, 1, MAX_PAGE)))

    def on_api_series(self, request: Request) -> Response:
        minutes = params.integer(request.args, "minutes", 60, 1, 24 * 60)
        return _json(query.series_data(self.store, time.time(), minutes=minutes))


# -- helpers ---------------------------------------------------------------------------------------

def _is_wheel(source: Any) -> bool:
    from ..api import TimeWheel
    return isinstance(source, TimeWheel)


def _required_id(request: Request) -> str:
    task_id = request.args.get("id", "")
    if not task_id:
        raise BadRequest("id is required: the task's id")
    return task_id


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str, separators=(",", ":")), status=status,
                    mimetype="application/json")


def _body(request: Request) -> Any:
    """Form fields, or a JSON object's (lists become repeated fields)."""
    if request.mimetype == "application/json":
        try:
            data = json.loads(request.get_data(cache=True) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        from werkzeug.datastructures import MultiDict
        items = []
        for k, v in data.items():
            for x in (v if isinstance(v, list) else [v]):
                items.append((str(k), "1" if x is True else "0" if x is False else str(x)))
        return MultiDict(items)
    return request.form


def _task_filter(request: Request) -> dict[str, Any]:
    args = request.args
    after = params.text(args, "after")
    return {"status": params.choice(args, "status", LISTABLE), "name": params.text(args, "name"),
            "id_prefix": params.text(args, "id"), "limit": params.integer(args, "limit", 50, 1, MAX_PAGE),
            "after": after, "queue": params.text(args, "queue")}


def _revolutions(request: Request) -> int:
    return params.integer(request.args, "revolutions", 24, 1, query.MAX_REVOLUTIONS)


def _revolution_choices(wheel: dict[str, Any]) -> list[tuple[int, str]]:
    turn = wheel["slots"] * wheel["tick"]
    return [(k, text.span(k * turn)) for k in sorted({1, 6, 12, query.MAX_REVOLUTIONS})]


def _change(store: WheelStore, ids: list[str], verb: str) -> dict[str, Any]:
    """Retry, cancel or abort (issue 23: a running task asked to, a pending one cancelled)."""
    return query.abort_tasks(store, ids) if verb == "abort" else query.change_tasks(store, ids, verb)


def _summary(result: dict[str, Any], verb: str, selected: Optional[int] = None) -> str:
    done = result[_VERBS[verb]]
    parts = [f"{_VERBS[verb]} {len(done)} task(s)"]
    if verb == "abort":
        parts = [f"asked {len(done)} running task(s) to abort"]
        if result["cancelled"]:
            parts.append(f"cancelled {len(result['cancelled'])} pending task(s)")
    if result["skipped"]:
        parts.append(f"{len(result['skipped'])} skipped ({_WHY_NOT[verb]})")
    if result["unknown"]:
        parts.append(f"{len(result['unknown'])} unknown")
    if selected == BULK_LIMIT:
        parts.append(f"at most {BULK_LIMIT} per action: press again for more")
    return "; ".join(parts)


def _one_line(message: str) -> str:
    return text.clean(" ".join(message.split()))[:500] or "error"


def _finalize(value: Any) -> Any:
    """Every value a template prints: None as ``-``, text from the store made visible."""
    if value is None:
        return "-"
    if isinstance(value, str) and not isinstance(value, Markup):
        return text.clean(value)
    return value


def _clean_lines(value: Optional[str]) -> Markup:
    """Multi-line text (a traceback): HTML-escaped here, newlines kept, every other control
    made visible (``_finalize`` would make the newlines visible too)."""
    return Markup("-") if value is None else escape(text.clean(value, lines=True))


def _name(value: Optional[str]) -> Markup:
    """A task name that may wrap after its dots (``reports.<wbr>monthly``), never inside a
    part: the table's column is then as wide as the longest part (the JS's nameCell)."""
    if value is None:
        return Markup("-")
    return Markup(".<wbr>").join(escape(part) for part in text.clean(value).split("."))


def _when(ts: Optional[float]) -> str:
    return text.local(ts)


def _ago(ts: Optional[float], now: float) -> str:
    return "-" if ts is None else text.relative(ts, now)


def _dur(x: Optional[float]) -> str:
    return text.seconds(x)


def _count(n: int) -> str:
    return f"{n:,}"
