"""``flask timewheel ...``: timewheel's own commands, on the app's store.

    flask --app myapp timewheel run                 # a worker: runs the app's tasks until SIGTERM
    flask --app myapp timewheel inspect --json      # timewheel inspect <the app's store> --json
    flask --app myapp timewheel retry --all-failed

Every ``timewheel`` command that takes a store (inspect, tasks, show, stats, timeline,
cancel, retry, purge) is here with the same options and output, the store (and its Redis
namespace) taken from the app's config: they are :mod:`timewheel.cli`'s commands, called with
it.  ``run`` is ``timewheel run`` for the app's wheel: start, run until SIGTERM or SIGINT,
then take no new tasks, let running ones finish for up to ``--grace`` seconds and exit 0.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from ... import cli as timewheel_cli

__all__ = ["group"]


def _wheel(command: str) -> Any:
    state = current_app.extensions["timewheel"]
    wheel = state.wheel
    if wheel.location == "memory":
        raise click.ClickException(f"flask timewheel {command}: the app keeps its tasks in memory "
                                   "(TIMEWHEEL_STORE is None, or TIMEWHEEL_IMMEDIATE): there is no store")
    return wheel


def _on_app_store(command: click.Command) -> click.Command:
    """``command`` without its store argument and ``--namespace``: the app's are used."""
    run_it: Callable[..., Any] = command.callback  # type: ignore[assignment]

    @with_appcontext
    def callback(**kwargs: Any) -> Any:
        wheel = _wheel(command.name or "")
        ctx = click.get_current_context()
        ctx.meta[timewheel_cli.NAMESPACE] = wheel.namespace
        db = timewheel_cli.StoreLocation().convert(wheel.url or wheel.path, None, ctx)
        return ctx.invoke(run_it, db=db, **kwargs)

    # Its examples name a store: here there is none to name.
    text = re.sub(r"timewheel (\w+) \S+", r"flask timewheel \1", command.help or "")
    return click.Command(command.name, callback=callback, help=text, short_help=command.short_help,
                         params=[p for p in command.params if p.name not in ("db", "namespace")],
                         context_settings=command.context_settings)


group = AppGroup("timewheel", help="timewheel's commands on this app's store, and a worker (run).")
for _command in timewheel_cli.cli.commands.values():
    if any(p.name == "db" for p in _command.params):
        group.add_command(_on_app_store(_command))


@group.command("run", params=[p for p in timewheel_cli.run.params if p.name != "app"])
def run(grace: float, log_level: str, as_json: bool, queues: Optional[str] = None) -> None:
    """Run the app's TimeWheel in the foreground: a worker process.

    It runs the tasks registered on the app's wheel (each inside an app context) until
    SIGTERM or SIGINT.  Then it takes no new tasks, lets running ones finish for up to
    --grace seconds, records them and exits 0.  A second signal ends the process at once
    (tasks still running then run again after a restart).

    \b
    Example:
      flask --app myapp timewheel run
      flask --app myapp timewheel run --grace 60 --log-level DEBUG
      flask --app myapp timewheel run --queues default,emails

    Without --queues it serves the app's TIMEWHEEL_QUEUES (default: every queue).
    """
    served = timewheel_cli.queues_option(queues) if queues is not None else \
        current_app.extensions["timewheel"].settings.queues
    timewheel_cli.run_wheel(_wheel("run"), current_app.import_name, grace, log_level, as_json, served)
