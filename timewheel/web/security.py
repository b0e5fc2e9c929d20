"""Who may see the web view, and proof that a change was asked for by its own pages.

Authentication is one of: HTTP basic (``--auth user:password``), a bearer token (``--token``:
API clients send ``Authorization: Bearer T``, a browser signs in once on ``/login`` and keeps
the token in an HttpOnly cookie), or, when the view is mounted in an application, the host's
own check (``authorize(environ) -> bool``).  Secrets are compared in constant time.

Cross-site request forgery: every change is a POST that must carry the token of the
``timewheel_csrf`` cookie back, in the form field ``csrf_token`` or the ``X-CSRF-Token``
header (the double-submit pattern: another site can make the browser send the cookie, but
cannot read it to copy it into the request).  POSTs whose ``Origin`` is another site are
refused outright.  A request authenticated by an ``Authorization: Bearer`` header needs no
CSRF token: browsers never add that header on their own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

__all__ = ["Access", "CSRF_COOKIE", "TOKEN_COOKIE", "csrf_token", "csrf_error", "parse_basic"]

CSRF_COOKIE = "timewheel_csrf"
TOKEN_COOKIE = "timewheel_token"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

#: a host application's check: given the WSGI environ, may this request see the view?
Authorize = Callable[[dict[str, Any]], bool]


def parse_basic(spec: str) -> tuple[str, str]:
    """``user:password`` -> (user, password); the password may contain colons."""
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth takes USER:PASSWORD, both non-empty")
    return user, password


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Access:
    """How requests are authenticated (at most one of the three; none: anyone who can
    reach the address may look)."""

    basic: Optional[tuple[str, str]] = None
    token: Optional[str] = None
    authorize: Optional[Authorize] = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.basic, self.token, self.authorize)) > 1:
            raise ValueError("choose one of basic auth, a token or an authorize hook")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("a token must have at least 8 characters")

    @property
    def open(self) -> bool:
        return self.basic is None and self.token is None and self.authorize is None

    def bearer(self, request: Request) -> bool:
        """True if the request carries the right ``Authorization: Bearer`` token."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and _same(value.strip(), self.token)

    def allows(self, request: Request) -> bool:
        if self.authorize is not None:
            return bool(self.authorize(request.environ))
        if self.basic is not None:
            return self._basic_ok(request)
        if self.token is not None:
            cookie = request.cookies.get(TOKEN_COOKIE)
            return self.bearer(request) or (cookie is not None and _same(cookie, self.token))
        return True

    def _basic_ok(self, request: Request) -> bool:
        assert self.basic is not None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            user, sep, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always: no early exit that tells a right user name by its timing.
        ok_user = _same(user, self.basic[0])
        ok_password = _same(password, self.basic[1])
        return bool(sep) and ok_user and ok_password

    def token_matches(self, candidate: str) -> bool:
        return self.token is not None and _same(candidate, self.token)


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token and whether it is new (then the response must set the
    cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43 and current.replace("-", "").replace("_", "").isalnum():
        return current, False
    return secrets.token_urlsafe(32), True


def csrf_error(request: Request, access: Access) -> Optional[str]:
    """Why this POST must be refused as possibly forged, or None if it may go on."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != request.host.lower():
            return f"refused: a request from another site ({origin})"
    elif origin == "null":
        return "refused: a request from an opaque origin"
    if access.bearer(request):
        return None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    if not cookie or not sent or not _same(cookie, sent):
        return "refused: missing or wrong CSRF token (reload the page and try again)"
    return None
