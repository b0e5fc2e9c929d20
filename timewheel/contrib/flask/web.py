"""The web view (``timewheel.web``) inside a Flask app, at ``TIMEWHEEL_WEB_PREFIX``::

    app.config["TIMEWHEEL_WEB_PREFIX"] = "/ops/timewheel"
    tw = FlaskTimeWheel(app, authorize=lambda request: session.get("role") == "admin",
                        allow_actions=lambda request: session.get("role") == "admin")

The view is served by a blueprint (``timewheel``) of the app, so it runs inside the app's own
request handling: ``authorize`` and ``allow_actions`` get the current :class:`flask.Request`
and may use ``session``, ``g`` or Flask-Login's ``current_user``; the app's
``before_request`` functions run first.  Without ``authorize`` every request is refused
(403): the view shows task arguments, results and errors, so it is never open by default.
A hook that raises refuses the request and is logged.

The view keeps its own CSRF check (a cookie token sent back with each change); exempt the
blueprint from an app-wide one such as Flask-WTF's: ``csrf.exempt(timewheel_blueprint)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, Union

from flask import Blueprint, current_app, request
from werkzeug.wrappers import Response

if TYPE_CHECKING:
    from . import AppState, RequestCheck

__all__ = ["timewheel_blueprint", "MountedView", "mount"]

log = logging.getLogger("timewheel.flask")

timewheel_blueprint = Blueprint("timewheel", __name__)
# Every path under the prefix goes to the view, which routes it itself.  merge_slashes off:
# a task id may hold "//" (sent as %2F%2F, decoded by the server).
_METHODS = ["GET", "HEAD", "POST"]


@timewheel_blueprint.route("/", defaults={"subpath": ""}, methods=_METHODS, merge_slashes=False)
@timewheel_blueprint.route("/<path:subpath>", methods=_METHODS, merge_slashes=False)
def web_view(subpath: str) -> Response:
    return current_app.extensions["timewheel"].view.respond()


class MountedView:
    """The view of one app's wheel, mounted at ``prefix`` behind the app's checks."""

    def __init__(self, state: "AppState", prefix: str, authorize: Optional["RequestCheck"],
                 allow_actions: Union[bool, "RequestCheck"]) -> None:
        from ...web import make_app
        self.prefix = prefix
        self.authorize = authorize
        self.allow_actions = allow_actions
        # The checks read flask.request: the view is called inside the app's request.
        self.app = make_app(state.wheel, authorize=self._authorized, allow_actions=self._actions_allowed)

    def _authorized(self, environ: dict[str, Any]) -> bool:
        # (the view refuses and logs when this raises)
        return self.authorize is not None and bool(self.authorize(request))

    def _actions_allowed(self, environ: dict[str, Any]) -> bool:
        allow = self.allow_actions
        if not callable(allow):
            return bool(allow)
        try:
            return bool(allow(request))
        except Exception:  # noqa: BLE001 - a failing check must not allow anything
            log.exception("the allow_actions check failed")
            return False

    def respond(self) -> Response:
        environ = dict(request.environ)
        # PEP 3333: SCRIPT_NAME and PATH_INFO hold the URL's bytes as latin-1 characters;
        # the prefix is ASCII (config.py), so its length is its length in PATH_INFO too.
        path = environ.get("PATH_INFO", "")
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
        environ["PATH_INFO"] = path[len(self.prefix):]
        return current_app.response_class.from_app(self.app, environ)


def mount(state: "AppState", prefix: str, authorize: Optional["RequestCheck"],
          allow_actions: Union[bool, "RequestCheck"]) -> None:
    """Serve the view of ``state``'s wheel at ``prefix`` of its app."""
    if authorize is None:
        log.warning("TIMEWHEEL_WEB_PREFIX is %s but no authorize check was given to FlaskTimeWheel: "
                    "the web view refuses every request", prefix)
    state.view = MountedView(state, prefix, authorize, allow_actions)
    state.app.register_blueprint(timewheel_blueprint, url_prefix=prefix)
