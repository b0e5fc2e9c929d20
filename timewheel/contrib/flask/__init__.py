"""timewheel for Flask: an extension with ``init_app``, configured by ``TIMEWHEEL_*`` keys.

    # app.py                                         pip install 'timewheel[flask]'
    from flask import Flask
    from timewheel.contrib.flask import FlaskTimeWheel

    tw = FlaskTimeWheel()

    @tw.task(name="emails.send", retries=3)
    def send_email(to, subject): ...

    def create_app():
        app = Flask(__name__)
        app.config["TIMEWHEEL_STORE"] = "tasks.db"        # in the instance folder
        tw.init_app(app)
        return app

    # in a view, a CLI command, a task: the current app's wheel
    send_email.delay("a@b.c", "hi", count_down=10)

    flask --app app timewheel run                          # a worker process (SIGTERM drains)
    flask --app app timewheel inspect                      # timewheel's commands, on the app's store

Each app gets its own :class:`~timewheel.TimeWheel`, made from its config by ``init_app``
(``app.extensions["timewheel"].wheel``, or ``tw.wheel`` inside an app context); tasks, periodic
tasks and hooks registered on the extension -- before or after ``init_app`` -- are registered
on every app's wheel under the same names.  Tasks and hooks run inside an app context of
their app (``current_app``, and its teardown handlers after each run, as after a request).

Where the wheel starts: in each web process at the first request it serves
(``TIMEWHEEL_RUN_IN_WEB``, on by default), i.e. after the fork of a pre-forking server, also
with ``gunicorn --preload`` -- never in a pre-fork master, ``flask shell`` or another CLI
command.  This works the same under every WSGI server, which is why it is the default; a
worker that has not served a request yet does not run tasks.  To start every gunicorn worker
as soon as it boots, add ``post_worker_init`` from ``examples/gunicorn.conf.py``.  At exit a
started wheel stops, waiting ``exit_grace`` seconds for running tasks (TimeWheel does this).

The web view, off by default: ``TIMEWHEEL_WEB_PREFIX = "/ops/timewheel"`` mounts it there,
behind ``authorize(request) -> bool`` (given to the constructor or ``init_app``; without it
every request is refused), see :mod:`timewheel.contrib.flask.web`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from typing import Any, Callable, Coroutine, Generic, Optional, TypeVar, Union, overload

from flask import Flask, Request, current_app, has_app_context, request_started

from ...api import Delayed, P, Task, TaskHandle, TimeWheel
from ...records import Outcome, TaskRecord
from ..starter import FirstRequestStarter
from .config import ConfigError, Settings, read

__all__ = ["FlaskTimeWheel", "FlaskTask", "FlaskWheel", "AppState", "ConfigError", "EXTENSION"]

log = logging.getLogger("timewheel.flask")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
#: the key of ``app.extensions``
EXTENSION = "timewheel"
#: ``authorize`` and ``allow_actions``: given the current Flask request, may it?
RequestCheck = Callable[[Request], bool]


def _in_app_context(app: Flask, fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` inside an app context of ``app``: a new one, unless this is already
    inside one of ``app``'s (immediate mode runs tasks inside the request that enqueued
    them: a second context popped there would run the app's teardown handlers mid-request)."""
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        return fn(*args)
    with app.app_context():
        return fn(*args)


def _check_hooks(authorize: Optional[RequestCheck], allow_actions: Union[bool, RequestCheck]) -> None:
    if authorize is not None and not callable(authorize):
        raise TypeError(f"authorize must be a check taking the request, got {type(authorize).__name__}")
    if not (isinstance(allow_actions, bool) or callable(allow_actions)):
        raise TypeError(f"allow_actions must be a bool or a check taking the request, got "
                        f"{type(allow_actions).__name__}")


class FlaskWheel(TimeWheel):
    """A TimeWheel whose task runs are framed like requests of its app: each inside an app
    context, so a task sees ``current_app`` and the app's teardown handlers run after it."""

    def __init__(self, app: Flask, **options: Any) -> None:
        super().__init__(**options)
        self.app = app

    def _execute(self, rec: TaskRecord) -> Outcome:
        return _in_app_context(self.app, super()._execute, rec)


class AppState:
    """What the extension keeps for one app, as ``app.extensions["timewheel"]``."""

    def __init__(self, extension: "FlaskTimeWheel", app: Flask, wheel: FlaskWheel,
                 settings: Settings) -> None:
        self.extension = extension
        self.app = app
        self.wheel = wheel              #: the app's TimeWheel
        self.settings = settings        #: what the app's config said
        self.tasks: dict[str, Any] = {}  #: the wheel's Task objects by name
        self.starter: Optional[FirstRequestStarter] = None
        self.view: Any = None           #: the mounted web view (timewheel.contrib.flask.web)

    def start(self) -> None:
        """Start the app's wheel in this process now, e.g. from gunicorn's ``post_worker_init``
        (``examples/gunicorn.conf.py``).  With ``TIMEWHEEL_RUN_IN_WEB`` a store that cannot
        be opened is logged and the requests try again, as at a first request; without it,
        the error is raised."""
        if self.starter is not None:
            self.starter()
        else:
            self.wheel.start(queues=self.settings.queues)


class FlaskTask(Generic[P, R_co]):
    """A task registered through :meth:`FlaskTimeWheel.task`.  Calling it calls the function;
    ``delay()`` and ``schedule()`` enqueue it on the current app's wheel (see
    :class:`~timewheel.Task`), so they need an app context: a request, a CLI command, a task,
    or ``with app.app_context():``.  Typed as :class:`~timewheel.Task` is (``FlaskTask[P, R]``)."""

    def __init__(self, extension: "FlaskTimeWheel", fn: Callable[P, R_co], name: str) -> None:
        self._extension = extension
        self.fn = fn
        self.name = name
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<FlaskTask {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        return self.fn(*args, **kwargs)

    def call_local(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run it here and now, bypassing the wheel."""
        return self.fn(*args, **kwargs)

    def for_app(self, app: Optional[Flask] = None) -> Task[P, R_co]:
        """The :class:`~timewheel.Task` on ``app``'s wheel (default: the current app's)."""
        state = self._extension.state(app, what=f"task {self.name}")
        task: Task[P, R_co] = state.tasks[self.name]
        return task

    @overload
    def delay(self: "FlaskTask[P, Coroutine[Any, Any, T]]", *args: P.args,
              **kwargs: P.kwargs) -> TaskHandle[T]: ...
    @overload
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R_co]: ...

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[Any]:
        """:meth:`timewheel.Task.delay` on the current app's wheel."""
        return self.for_app().delay(*args, **kwargs)

    @overload
    def options(self: "FlaskTask[P, Coroutine[Any, Any, T]]", **options: Any) -> Delayed[P, T]: ...
    @overload
    def options(self, **options: Any) -> Delayed[P, R_co]: ...

    def options(self, **options: Any) -> Delayed[P, Any]:
        """:meth:`timewheel.Task.options` on the current app's wheel: ``count_down``, ``eta``,
        ``task_id``."""
        return self.for_app().options(**options)

    def schedule(self, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """:meth:`timewheel.Task.schedule` on the current app's wheel."""
        return self.for_app().schedule(*args, **kwargs)


class FlaskTimeWheel:
    """The Flask extension: ``FlaskTimeWheel(app)``, or ``tw = FlaskTimeWheel()`` and
    ``tw.init_app(app)`` for each app (an app factory, several apps).

    :param authorize: who may see the web view (``TIMEWHEEL_WEB_PREFIX``): called with the
        current :class:`flask.Request` inside the request, so ``session`` and
        ``flask_login.current_user`` work; True lets it through.  Without it the view
        refuses every request.  ``init_app(app, authorize=...)`` sets it for one app.
    :param allow_actions: retry, cancel and purge from the view: a bool, or the same kind of
        check as ``authorize`` (asked only of requests ``authorize`` let through).
    """

    def __init__(self, app: Optional[Flask] = None, *, authorize: Optional[RequestCheck] = None,
                 allow_actions: Union[bool, RequestCheck] = False) -> None:
        _check_hooks(authorize, allow_actions)
        self.authorize = authorize
        self.allow_actions = allow_actions
        # A wheel of no store, never started: it checks each registration at once (a bad
        # option fails at the decorator, not later in init_app) and names its task.
        self._checker = TimeWheel(None)
        self._registrations: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []
        self._states: "weakref.WeakSet[AppState]" = weakref.WeakSet()
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<FlaskTimeWheel {len(self._states)} app(s)>"

    # -- apps ------------------------------------------------------------------------------------
    def init_app(self, app: Flask, *, authorize: Optional[RequestCheck] = None,
                 allow_actions: Union[bool, RequestCheck, None] = None) -> AppState:
        """Make ``app``'s wheel from its config and register what the extension holds on it;
        mount the web view if ``TIMEWHEEL_WEB_PREFIX`` says so; add ``flask timewheel``.
        Raises :class:`ConfigError` naming a wrong ``TIMEWHEEL_*`` key.  Opens nothing:
        the store is opened by the first use of the wheel."""
        _check_hooks(authorize, False if allow_actions is None else allow_actions)
        if EXTENSION in app.extensions:
            raise RuntimeError(f"a FlaskTimeWheel is already registered on app {app.name!r}")
        settings = read(app.config, app.instance_path)
        if settings.instance_dir is not None:
            os.makedirs(settings.instance_dir, exist_ok=True)     # as Flask-SQLAlchemy does
        state = AppState(self, app, FlaskWheel(app, **settings.options), settings)
        with self._lock:
            for kind, options, fn in self._registrations:
                self._apply(state, kind, options, fn)
            self._states.add(state)
        app.extensions[EXTENSION] = state
        if settings.run_in_web:
            # held by the state, connected weakly: it goes when the app goes
            state.starter = FirstRequestStarter(lambda: state.wheel, log, settings.queues)
            request_started.connect(state.starter, app)
        if settings.web_prefix is not None:
            from .web import mount
            mount(state, settings.web_prefix, self.authorize if authorize is None else authorize,
                  self.allow_actions if allow_actions is None else allow_actions)
        from .cli import group
        app.cli.add_command(group)
        return state

    def state(self, app: Optional[Flask] = None, *, what: str = "this") -> AppState:
        """``app.extensions["timewheel"]`` of ``app`` (default: the current app)."""
        if app is None:
            if not has_app_context():
                raise RuntimeError(f"{what} needs an application context to know which app's "
                                   "TimeWheel to use: call it in a request, a CLI command or a task, "
                                   "or inside `with app.app_context():`")
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get(EXTENSION)
        if state is None or state.extension is not self:
            raise RuntimeError(f"this FlaskTimeWheel is not registered on app {app.name!r}: "
                               "call init_app(app) first")
        return state

    @property
    def wheel(self) -> FlaskWheel:
        """The current app's TimeWheel."""
        return self.state(what="FlaskTimeWheel.wheel").wheel

    # -- registering (on every app's wheel, now and at each init_app) ----------------------------
    @overload
    def task(self, fn: Callable[P, R]) -> FlaskTask[P, R]: ...
    @overload
    def task(self, **options: Any) -> Callable[[Callable[P, R]], FlaskTask[P, R]]: ...

    def task(self, fn: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
        """``@tw.task()`` or ``@tw.task(name=..., retries=3, ...)``: the options of
        :meth:`timewheel.TimeWheel.task`.  Returns a :class:`FlaskTask`."""
        check = self._checker.task(**options)       # a bad option fails here, at the decorator

        def register(f: Callable[..., Any]) -> FlaskTask[..., Any]:
            checked = check(f)
            self._register("task", options, f)
            return FlaskTask(self, f, checked.name)

        return register if fn is None else register(fn)

    def periodic(self, **options: Any) -> Callable[[Callable[[], R]], FlaskTask[[], R]]:
        """``@tw.periodic(every=900)`` or ``@tw.periodic(cron="0 3 * * *", tz=...)``: see
        :meth:`timewheel.TimeWheel.periodic`."""
        check = self._checker.periodic(**options)

        def register(f: Callable[[], R]) -> FlaskTask[[], R]:
            checked = check(f)
            self._register("periodic", options, f)
            return FlaskTask(self, f, checked.name)

        return register

    def on(self, event: str, fn: Optional[Callable[..., Any]] = None) -> Any:
        """``@tw.on("failed")``: a hook on every app's wheel (see :meth:`timewheel.TimeWheel.on`),
        called inside an app context of its app."""
        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            self._checker.on(event, f)
            self._register("on", {"event": event}, f)
            return f

        return add if fn is None else add(fn)

    def _register(self, kind: str, options: dict[str, Any], fn: Callable[..., Any]) -> None:
        with self._lock:
            self._registrations.append((kind, options, fn))
            for state in list(self._states):
                self._apply(state, kind, options, fn)

    @staticmethod
    def _apply(state: AppState, kind: str, options: dict[str, Any], fn: Callable[..., Any]) -> None:
        wheel = state.wheel
        if kind == "on":
            app = state.app
            wheel.on(options["event"], lambda record, exc: _in_app_context(app, fn, record, exc))
            return
        task = (wheel.task(**options) if kind == "task" else wheel.periodic(**options))(fn)
        state.tasks[task.name] = task
