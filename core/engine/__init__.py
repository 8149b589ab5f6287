"""The Engine seam: everything stateful (history, offsets, presence, limits) behind one interface."""

from .base import Engine, HistoryResult, PresenceEntry, PublishResult
from .memory import MemoryEngine

__all__ = ["Engine", "HistoryResult", "PresenceEntry", "PublishResult", "MemoryEngine"]
