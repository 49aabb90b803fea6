"""A one-place buffer between two tasks: the newest item wins.

The producer never waits and the consumer always gets the freshest item, so a slow consumer
costs dropped items (counted), never growing latency.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameSlot(Generic[T]):
    """Capacity 1. `put` replaces an unread item and counts it in `dropped`."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._has_item = asyncio.Event()
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced an unread one (a drop)."""
        replaced = self._has_item.is_set()
        self.dropped += replaced
        self._item = item
        self.put_count += 1
        self._has_item.set()
        return replaced

    def take_nowait(self) -> T | None:
        """The unread item, or None when there is none."""
        if not self._has_item.is_set():
            return None
        item, self._item = self._item, None
        self._has_item.clear()
        return item

    async def take(self) -> T:
        """Wait for an unread item and take it."""
        await self._has_item.wait()
        item = self.take_nowait()
        assert item is not None
        return item

    @property
    def pending(self) -> bool:
        return self._has_item.is_set()
