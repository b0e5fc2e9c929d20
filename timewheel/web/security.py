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

DNS rebinding: a page on a name the attacker controls can make that name resolve to
127.0.0.1, and the victim's browser then reads (and, with actions allowed, posts to) the
view as a page of the attacker's own origin -- Host and Origin both name the attacker's
name, so the CSRF check passes.  So a view without authentication answers only requests
whose ``Host`` is a loopback name (``localhost``, ``*.localhost``), an IP address (a
rebinding needs a name) or a name it was told to allow (:class:`HostGuard`), as Jupyter
and Vite do.  With authentication the attacker's origin has no credentials to send.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional
from urllib.parse import quote, urlsplit

from werkzeug.wrappers import Request

__all__ = ["Access", "HostGuard", "is_address", "same_site_path", "CSRF_COOKIE", "TOKEN_COOKIE", "csrf_token",
           "csrf_error", "parse_basic"]

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


def host_name(host: str) -> Optional[str]:
    """The name (or address) in a ``Host`` header, lower case, without port, brackets or a
    final dot; None if it is not one."""
    host = host.strip()
    if not host or not host.isprintable() or any(c in host for c in "/\\@?# "):
        return None          # (no browser sends these: urlsplit would read some as a URL's parts)
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return None
    if not name:
        return None
    return name[:-1] if name.endswith(".") else name


def is_address(name: str) -> bool:
    """True if ``name`` is an IP address, not a name."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


#: loopback names: browsers resolve localhost and *.localhost to 127.0.0.1 themselves
LOOPBACK = (".localhost",)


@dataclass(frozen=True)
class HostGuard:
    """The ``Host`` names a view answers to: loopback names, IP addresses, and ``allowed``:
    exact names, ``.example.com`` (that name and every name under it), or ``*`` (any)."""

    allowed: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: Iterable[str]) -> "HostGuard":
        """Checks each name; ValueError names a bad one."""
        out = []
        for raw in names:
            spec = raw.strip().lower()
            name = spec[1:] if spec.startswith(".") else spec
            if spec != "*" and (host_name(name) != name.rstrip(".") or ":" in name or not name.strip(".")):
                raise ValueError(f"not a host name: {raw!r} (allow a name such as tasks.example.com, "
                                 ".example.com for it and every name under it, or *)")
            out.append(spec.rstrip(".") if spec != "*" else spec)
        return cls(tuple(out))

    def allows(self, host: str) -> bool:
        """True if a request with this ``Host`` header may be answered."""
        name = host_name(host)
        if name is None:
            return False
        if is_address(name) or "*" in self.allowed:
            return True
        for spec in LOOPBACK + self.allowed:
            if name == spec or (spec.startswith(".") and (name == spec[1:] or name.endswith(spec))):
                return True
        return False


def same_site_path(target: str, root: str) -> Optional[str]:
    """``target`` as the ``Location`` of a redirect within this view (mounted at ``root``,
    ``""`` or ``/prefix``), or None if a browser could read it as another site.

    Browsers drop tabs and newlines from a URL, read a backslash as a slash, and take
    ``//host`` (so also ``/\\host`` and ``/<tab>/host``) as another host: only a path under
    ``root`` passes, free of control characters and backslashes, whose next character after
    the root's slash is not another slash.  It comes back percent-encoded (what is encoded
    already stays so), so a browser reads it as the path it is.
    """
    if not target.startswith(root + "/") or target[len(root) + 1:len(root) + 2] == "/":
        return None
    if "\\" in target or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return quote(target, safe="/?&=%:@!$'()*+,;~-._")


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
