"""The timewheel web view inside a FastAPI app, at /timewheel, behind the app's own check.

    TIMEWHEEL_DB=tasks.db DASHBOARD_TOKEN=a-long-random-token python examples/fastapi_dashboard.py
    open http://127.0.0.1:8000/login and sign in with the token; then /timewheel/ -- or, from a script:
    curl -H "Authorization: Bearer $DASHBOARD_TOKEN" http://127.0.0.1:8000/timewheel/api/inspect

The app is ``examples/fastapi_app.py`` (its TimeWheel runs in its lifespan); this adds the view
with ``mount_view`` (``timewheel.contrib.fastapi``) and a sign-in of its own.  ``authorize``
gets each request (a Starlette ``Request``: headers, cookies, ``request.session`` under
SessionMiddleware) and may be ``async``: here it takes the token as a bearer header or as the
cookie ``/login`` sets.  Retry, cancel and purge are allowed to whoever passes it; every change
carries the view's CSRF token (a cookie sent back in the ``X-CSRF-Token`` header or the form).

Environment: as for fastapi_app.py, plus ``DASHBOARD_TOKEN`` (required, at least 8
characters) and ``PORT`` (default 8000).
"""

from __future__ import annotations

import hmac
import os
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from timewheel.contrib.fastapi import mount_view

# uvicorn examples.fastapi_dashboard:app, or python examples/fastapi_dashboard.py
try:
    from examples.fastapi_app import app, hu
except ImportError:
    from fastapi_app import app, hu  # type: ignore[no-redef,import-not-found]

TOKEN = os.environ["DASHBOARD_TOKEN"]
if len(TOKEN) < 8:
    raise SystemExit("DASHBOARD_TOKEN must have at least 8 characters")
COOKIE = "dashboard_token"


def _same(given: str) -> bool:
    return hmac.compare_digest(given.encode(), TOKEN.encode())


async def signed_in(request: Request) -> bool:
    """The app's own check: the token as a bearer header (scripts) or the sign-in cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _same(value.strip()):
        return True
    return _same(request.cookies.get(COOKIE, ""))


mount_view(app, hu, "/timewheel", authorize=signed_in, allow_actions=True)


@app.get("/login", response_class=HTMLResponse)
def login_form() -> str:
    return '<form method="post"><input type="password" name="token"><button>Sign in</button></form>'


@app.post("/login")
async def login(request: Request) -> Response:
    # A real app has its own users, CSRF protection on this form, and so on.  (The form is
    # read by hand: FastAPI's Form() needs the python-multipart package.)
    token = parse_qs((await request.body()).decode("utf-8", "replace")).get("token", [""])[0]
    if not _same(token):
        return Response("wrong token", status_code=403)
    response = RedirectResponse("/timewheel/", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
