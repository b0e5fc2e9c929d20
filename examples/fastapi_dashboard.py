"""The timewheel web view inside a FastAPI app, at /timewheel, behind a bearer token.

    TIMEWHEEL_DB=tasks.db DASHBOARD_TOKEN=a-long-random-token python examples/fastapi_dashboard.py
    open http://127.0.0.1:8000/timewheel/ and sign in with the token; or, from a script:
    curl -H "Authorization: Bearer $DASHBOARD_TOKEN" http://127.0.0.1:8000/timewheel/api/inspect

The app is ``examples/fastapi_app.py`` (its TimeWheel starts in its lifespan); this adds one
line to it.  ``make_asgi_app`` wraps the same WSGI application as ``make_app`` for ASGI
hosts (FastAPI, Starlette), through a2wsgi: each request runs in a thread pool, off the event
loop, as the view's blocking store reads must.  Retry, cancel and purge are allowed here;
every change from a page carries a CSRF token, and from a script the bearer token.  To use
the app's own authentication instead, pass ``authorize=lambda environ: ...`` (it gets the
WSGI environ: headers as ``HTTP_*`` keys, cookies in ``HTTP_COOKIE``).

Environment: as for fastapi_app.py, plus ``DASHBOARD_TOKEN`` (required, at least 8
characters) and ``PORT`` (default 8000).
"""

from __future__ import annotations

import os

from timewheel.web import make_asgi_app

# uvicorn examples.fastapi_dashboard:app, or python examples/fastapi_dashboard.py
try:
    from examples.fastapi_app import app, hu
except ImportError:
    from fastapi_app import app, hu  # type: ignore[no-redef]

app.mount("/timewheel", make_asgi_app(hu, token=os.environ["DASHBOARD_TOKEN"], allow_actions=True))

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
