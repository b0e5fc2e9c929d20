"""Shared fixtures.  Tests use real files under pytest's tmp_path."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "tasks.db")


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             what: str = "") -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or cond} not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def python() -> str:
    return sys.executable
