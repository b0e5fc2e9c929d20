"""``timewheel web STORE``: serve the web view of a store (registered in :mod:`timewheel.cli`).

Imports the web stack only when run, so the CLI works without the ``web`` extra.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional

import click

__all__ = ["web"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.argument("store", metavar="STORE")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; think about --auth first).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on; 0 picks a free one (printed at start).")
@click.option("--allow-actions", is_flag=True,
              help="Allow retry, cancel and purge from the page and the API (default: read-only).")
@click.option("--auth", metavar="USER:PASSWORD", envvar="TIMEWHEEL_WEB_AUTH",
              help="Require HTTP basic authentication (or set TIMEWHEEL_WEB_AUTH).")
@click.option("--token", metavar="TOKEN", envvar="TIMEWHEEL_WEB_TOKEN",
              help="Require a bearer token, at least 8 characters (or set TIMEWHEEL_WEB_TOKEN); "
                   "browsers sign in with it once.")
@click.option("--allow-host", "allow_hosts", metavar="NAME", multiple=True,
              help="Answer requests for this host name too (repeatable; .example.com: it and every "
                   "name under it; *: any).  Without --auth or --token the view answers only "
                   "localhost, IP addresses and --host: a guard against DNS rebinding.")
@click.option("--refresh", type=click.FloatRange(0.5, 3600), default=3.0, show_default=True,
              help="Seconds between the live pages' updates.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--json", "as_json", is_flag=True,
              help='At start, print {"url", "store", "actions", "pid"} as one JSON line.')
def web(store: str, host: str, port: int, allow_actions: bool, auth: Optional[str],
        token: Optional[str], allow_hosts: tuple[str, ...], refresh: float, access_log: bool,
        as_json: bool) -> None:
    """Serve a web view of the store: overview, the wheel, timeline, tasks.

    STORE is a store file or a redis:// URL.  It is read-only unless --allow-actions is given;
    it listens on 127.0.0.1 unless --host says otherwise.  Stops on SIGTERM or Ctrl-C.

    \b
    Example:
      timewheel web tasks.db
      timewheel web tasks.db --port 0 --json      # a free port; the URL as JSON
      timewheel web tasks.db --allow-actions --auth admin:s3cret --port 9000
      TIMEWHEEL_WEB_TOKEN=... timewheel web redis://localhost:6379/0 --host 0.0.0.0
    """
    try:
        from . import make_app
        from .security import is_address
        from .server import ViewServer
    except ImportError as exc:
        raise click.ClickException(f"timewheel web needs the web extra ({exc}): "
                                   "pip install 'timewheel[web]'") from None
    from ..errors import TimeWheelError
    from ..records import RecordDecodeError

    if auth and token:
        raise click.UsageError("use --auth or --token, not both")
    try:
        # --host NAME is a name to answer; with authentication names are checked only if
        # --allow-host asks for it (see make_app)
        names = [*allow_hosts, *([] if is_address(host) else [host])]
        app = make_app(store, allow_actions=allow_actions, auth=auth, token=token, refresh=refresh,
                       allowed_hosts=names if allow_hosts or not (auth or token) else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # (before the store opens: what opening it warns of -- a Redis server that may lose
    # writes -- is shown)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.INFO if access_log else logging.WARNING)
    try:
        app.open(writable=allow_actions)          # fail now, not at the first request
    except (TimeWheelError, RecordDecodeError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None

    try:
        server = ViewServer(host, port, app)
    except (OSError, SystemExit) as exc:
        app.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever() to return: not from the thread running it.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)           # before the address is printed: a caller may stop us then
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/"
    if as_json:
        click.echo(json.dumps({"url": url, "store": app.store.location, "actions": allow_actions,
                               "pid": os.getpid()}))
    else:
        mode = "actions allowed" if allow_actions else "read-only"
        click.echo(f"timewheel web: {app.store.location} at {url} ({mode}); Ctrl-C stops")
    sys.stdout.flush()
    if not _loopback(host) and not (auth or token):
        click.echo(f"Warning: listening on {host} without --auth or --token: anyone who can reach "
                   "it sees task arguments and errors" + (" and can change tasks" if allow_actions else ""),
                   err=True)

    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
