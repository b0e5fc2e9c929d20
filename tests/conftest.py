"""Shared fixtures.  Tests use real files under pytest's tmp_path."""

from __future__ import annotations

import os
import sys
from typing import Callable

import pytest

from .mp_worker import wait_for as _poll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "tasks.db")


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
             what: str = "") -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    return _poll(cond, timeout, interval, what or str(cond))


@pytest.fixture
def python() -> str:
    return sys.executable
