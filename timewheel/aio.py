"""Running ``async def`` tasks from the worker threads."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

__all__ = ["run_coroutine"]


def run_coroutine(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable to completion from a worker thread and return its value."""
    async def _await() -> Any:
        return await awaitable
    return asyncio.run(_await())
