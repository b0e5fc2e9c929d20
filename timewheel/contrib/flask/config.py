"""Reading a Flask app's ``TIMEWHEEL_*`` config keys: pure, checked, no I/O.

Every :class:`~timewheel.TimeWheel` argument is a key: ``path`` is ``TIMEWHEEL_STORE``, the
others their upper-case names (``workers`` -> ``TIMEWHEEL_WORKERS``), so an option TimeWheel
gains is a key here at once.  Three more belong to the integration: ``TIMEWHEEL_RUN_IN_WEB``,
``TIMEWHEEL_QUEUES`` (the queues the app's processes serve: flow control) and
``TIMEWHEEL_WEB_PREFIX``.  Any other ``TIMEWHEEL_*`` key is a mistake (a typo would
otherwise be ignored in silence), and so is a value TimeWheel refuses: each raises
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ...api import TimeWheel
from ...errors import shown
from ...flow import check_queues
from ...store import is_url

__all__ = ["ConfigError", "Settings", "read", "option_keys", "PREFIX", "STORE", "RUN_IN_WEB", "QUEUES",
           "WEB_PREFIX"]

PREFIX = "TIMEWHEEL_"
STORE = "TIMEWHEEL_STORE"
RUN_IN_WEB = "TIMEWHEEL_RUN_IN_WEB"
QUEUES = "TIMEWHEEL_QUEUES"
WEB_PREFIX = "TIMEWHEEL_WEB_PREFIX"
#: the store when TIMEWHEEL_STORE is not set, in the app's instance folder
DEFAULT_STORE = "tasks.db"
# One URL path of plain characters: nothing that a server decodes or a router reads apart.
_MOUNT = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")


class ConfigError(ValueError):
    """A ``TIMEWHEEL_*`` config key that is unknown, or holds a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """What an app's config says."""

    options: dict[str, Any]       #: TimeWheel's keyword arguments (``path`` made absolute)
    run_in_web: bool              #: start the wheel in each web process at its first request
    queues: Optional[frozenset]   #: the queues the app's processes serve (None: every queue)
    web_prefix: Optional[str]     #: where the web view is mounted (None: it is not)
    instance_dir: Optional[str]   #: the folder to make in the instance path for the store file


def option_keys() -> dict[str, str]:
    """Config key -> TimeWheel argument, for every argument of ``TimeWheel()``."""
    params = [p for p in inspect.signature(TimeWheel.__init__).parameters if p != "self"]
    return {(STORE if p == "path" else PREFIX + p.upper()): p for p in params}


def read(config: Mapping[str, Any], instance_path: str) -> Settings:
    """The settings in ``config``, checked.  A relative store path is taken in
    ``instance_path`` (as Flask-SQLAlchemy does with SQLite paths): every process of the
    app -- web workers, ``flask timewheel run``, ``flask shell`` -- then opens the same
    file, whatever its working directory."""
    keys = option_keys()
    known = [*keys, RUN_IN_WEB, QUEUES, WEB_PREFIX]
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"app.config[{key!r}]: unknown key{hint}; the timewheel keys are "
                              f"{', '.join(known)}")
    options: dict[str, Any] = {}
    for key, param in keys.items():
        if key not in config:
            continue
        value = config[key]
        try:     # alone, so that an error names its own key (nothing is opened or started)
            TimeWheel(**({"path": None} if param != "path" else {}), **{param: value})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"app.config[{key!r}]: {exc}") from None
        options[param] = value
    path = options.get("path", DEFAULT_STORE)      # None: tasks in memory, as TimeWheel(None)
    spec = None if path is None else os.fspath(path)
    in_instance = spec is not None and not is_url(spec) and not os.path.isabs(spec)
    if in_instance:
        spec = os.path.join(instance_path, spec)
    options["path"] = spec
    run_in_web = config.get(RUN_IN_WEB, True)
    if not isinstance(run_in_web, bool):
        raise ConfigError(f"app.config[{RUN_IN_WEB!r}] must be True or False, got {shown(run_in_web)}")
    try:
        queues = check_queues(config.get(QUEUES))
    except ValueError as exc:
        raise ConfigError(f"app.config[{QUEUES!r}]: {exc}, e.g. ['default', 'emails']") from None
    return Settings(options, run_in_web, queues, _mount(config.get(WEB_PREFIX)),
                    os.path.dirname(spec) if in_instance else None)


def _mount(prefix: Any) -> Optional[str]:
    if prefix is None:
        return None
    if isinstance(prefix, str):
        stripped = prefix.rstrip("/")
        if _MOUNT.fullmatch(stripped):
            return stripped
    raise ConfigError(f"app.config[{WEB_PREFIX!r}] must be a URL path such as '/ops/timewheel' "
                      "(letters, digits and -._~!$&'()*+,;=:@ between slashes; None: no web view), "
                      f"got {shown(prefix)}")
