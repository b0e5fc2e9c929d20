"""Stores: where the wheel lives.  ``SqliteDictStore`` is the default; ``MemoryStore`` is for
tests and ``immediate=True``."""

from .base import Claim, Due, Outcome, StoreState, WheelStore
from .memory import MemoryStore
from .sqlite import SqliteDictStore

__all__ = ["WheelStore", "SqliteDictStore", "MemoryStore", "Due", "Claim", "Outcome", "StoreState"]
