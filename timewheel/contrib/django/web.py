"""The web view (``timewheel.web``) inside a Django project, for staff only::

    # urls.py
    path("timewheel/", include("timewheel.contrib.django.urls")),

Every page and API call needs a signed-in active staff user (others are sent to the admin's
login page, or get 403 from the JSON API); retry, cancel and purge need a superuser.  The
view keeps its own CSRF check (a token cookie sent back with each change), so Django's is
not applied to it; its pages and assets are served under the mount point.
"""

from __future__ import annotations

import io
import sys
import threading
from http.cookies import SimpleCookie
from typing import Any, Optional

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_exempt

from . import get_wheel

__all__ = ["web_view"]

_lock = threading.Lock()
_app: Optional[Any] = None


def _web_app() -> Any:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                from ...web import make_app
                # Django has decided who may look before the request gets here.
                _app = make_app(get_wheel(), authorize=lambda environ: True,
                                allow_actions=lambda environ: environ["timewheel.django.superuser"])
    return _app


@csrf_exempt        # the web view checks its own CSRF token on every change
def web_view(request: HttpRequest, path: str = "") -> HttpResponse:
    user = request.user
    if not (user.is_active and user.is_staff):
        if path.startswith("api/") or path == "metrics":
            return HttpResponse("staff only", status=403, content_type="text/plain")
        try:
            login = reverse("admin:login")
        except NoReverseMatch:
            login = None                 # settings.LOGIN_URL
        return redirect_to_login(request.get_full_path(), login)
    body = request.body
    mount = request.path[:len(request.path) - len(path)].rstrip("/")
    environ = dict(request.META, SCRIPT_NAME=_wsgi_str(mount), PATH_INFO=_wsgi_str("/" + path),
                   CONTENT_LENGTH=str(len(body)))
    environ["wsgi.input"] = io.BytesIO(body)
    # Under ASGI, Django's META is not a WSGI environ: give it what WSGI promises.
    environ.setdefault("wsgi.url_scheme", request.scheme)
    environ.setdefault("wsgi.errors", sys.stderr)
    environ.setdefault("wsgi.version", (1, 0))
    environ.setdefault("SERVER_NAME", request.get_host().rsplit(":", 1)[0])
    environ.setdefault("SERVER_PORT", request.get_port())
    environ["timewheel.django.superuser"] = bool(user.is_superuser)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return lambda data: None      # the legacy write(); the view returns its body instead

    chunks = _web_app()(environ, start_response)
    try:
        content = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    response = HttpResponse(content, status=int(got["status"].split(" ", 1)[0]))
    for name, value in got["headers"]:
        if name.lower() == "set-cookie":
            response.cookies.load(SimpleCookie(value))
        else:
            response[name] = value
    return response


def _wsgi_str(text: str) -> str:
    # PEP 3333: paths are the URL's bytes as latin-1 characters; Django has decoded UTF-8.
    return text.encode("utf-8").decode("latin-1")
