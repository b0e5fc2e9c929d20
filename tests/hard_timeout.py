"""The test time limit (pytest-timeout's ``timeout``, 120 s in pyproject.toml), made to hold.

pytest-timeout's default method did not stop a hang inside a Hypothesis test (issue 19 item
4: a run hung for 20 minutes in the corrupted-store fuzz case).  Its SIGALRM handler raises
pytest's ``Failed`` once; inside ``@given`` Hypothesis catches ``Failed`` like any failed
example and goes on to shrink and replay it -- and the replay hangs again, with no alarm
left.  (A test's own SIGALRM bound also cancelled that one alarm.)  Its other method,
``thread``, ends the whole run at the first hang.  conftest.py hands both of pytest-timeout's
timer hooks to this module, which does:

1. At the limit a watchdog thread signals the main thread (SIGUSR2: no test uses it, and a
   blocking system call there is interrupted); the handler prints every thread's stack and
   raises :class:`TestTimeout`, a ``BaseException``: Hypothesis lets it through at once (it
   shrinks only ``Exception`` and ``Failed``), and so does ``except Exception:``.  The test
   fails with the traceback of where it hung; its fixtures' teardown runs; the run goes on.
   The signal is repeated every few seconds, so a ``finally:`` that hangs too is interrupted.
2. If the test has still not ended :data:`GRACE` seconds later (the exception was swallowed,
   or the main thread is stuck inside a C call), the watchdog prints the stacks and ends the
   run with ``os._exit(1)``, as the ``thread`` method would; every process the tests started
   through ``timewheel.testing.processes`` dies with it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Any, Optional

import pytest

GRACE = 30.0          #: seconds from the limit to the end of the run, if the test does not end
REPEAT = 5.0          #: seconds between two signals to a test that goes on after the first
_SIGNAL = signal.SIGUSR2


class TestTimeout(BaseException):
    """The test ran past its time limit (a BaseException: nothing on the way catches it)."""

    __test__ = False          # not a test class, whatever its name says


def _stacks() -> str:
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    return "".join(f"\n~~~ stack of thread {names.get(ident, ident)} ~~~\n"
                   + "".join(traceback.format_stack(frame))
                   for ident, frame in sys._current_frames().items() if ident != me)


def _debugging() -> bool:
    from pytest_timeout import is_debugging
    return is_debugging()


class _Watchdog:
    def __init__(self, item: pytest.Item, settings: Any) -> None:
        self.item = item
        self.timeout = float(settings.timeout)
        self.ignore_debugger = settings.disable_debugger_detection
        self.done = threading.Event()
        self.old = signal.signal(_SIGNAL, self._ring)
        self.thread = threading.Thread(target=self._watch, name=f"timeout of {item.nodeid}", daemon=True)
        self.thread.start()

    def _ring(self, signum: int, frame: Any) -> None:
        if self.done.is_set():
            return
        sys.stderr.write(f"\n+++ Timeout after {self.timeout:g}s: stacks of the other threads +++"
                         f"{_stacks()}\n")
        raise TestTimeout(f"Timeout: the test ran longer than {self.timeout:g}s (tests/hard_timeout.py)")

    def _watch(self) -> None:
        if self.done.wait(self.timeout):
            return
        if not self.ignore_debugger and _debugging():
            return
        main = threading.main_thread().ident
        assert main is not None
        waited = 0.0
        while waited < GRACE:
            signal.pthread_kill(main, _SIGNAL)
            if self.done.wait(REPEAT):
                return
            waited += REPEAT
        self._end_the_run()

    def _end_the_run(self) -> None:
        try:
            capture = self.item.config.pluginmanager.getplugin("capturemanager")
            if capture is not None:
                capture.suspend_global_capture(self.item)
            sys.stderr.write(f"\n+++ {self.item.nodeid} did not end {GRACE:g}s after its timeout of "
                             f"{self.timeout:g}s, ending the run +++{_stacks()}\n")
            sys.stderr.flush()
        finally:
            os._exit(1)

    def cancel(self) -> None:
        self.done.set()
        self.thread.join()
        signal.signal(_SIGNAL, self.old)


_armed: dict[str, _Watchdog] = {}


def arm(item: pytest.Item, settings: Any) -> Optional[bool]:
    """pytest_timeout_set_timer: start the watchdog (None: leave it to pytest-timeout)."""
    if threading.current_thread() is not threading.main_thread():
        return None                   # no signal handlers off the main thread
    _armed[item.nodeid] = _Watchdog(item, settings)
    return True


def disarm(item: pytest.Item) -> Optional[bool]:
    """pytest_timeout_cancel_timer."""
    dog = _armed.pop(item.nodeid, None)
    if dog is None:
        return None
    dog.cancel()
    return True
