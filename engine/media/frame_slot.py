"""One-place buffers between tasks: the newest item wins (`FrameSlot`, one reader; `Broadcast`,
many readers).

The producer never waits and the consumer always gets the freshest item, so a slow consumer
costs dropped items (counted), never growing latency.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class FrameSlot(Generic[T]):
    """Capacity 1, one consumer. `put` replaces an unread item and counts it in `dropped`.

    The consumer waits on a bare future, not an Event under `asyncio.wait_for`: a put wakes it
    in the very next turn of the loop, with no helper task in between (this hop is on every
    frame's way out).
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._waiter: asyncio.Future | None = None
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced an unread one (a drop)."""
        replaced = self._full
        self.dropped += replaced
        self._item, self._full = item, True
        if self._waiter is not None:
            _wake(self._waiter)
        return replaced

    def take_nowait(self) -> T | None:
        """The unread item, or None when there is none."""
        if not self._full:
            return None
        item, self._item, self._full = self._item, None, False
        return item

    async def take(self, timeout: float | None = None) -> T | None:
        """Wait for an unread item and take it; None when `timeout` seconds pass first."""
        if not self._full:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(max(timeout, 0.0), _wake, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self.take_nowait()

    @property
    def pending(self) -> bool:
        return self._full


class Broadcast(Generic[T]):
    """One item, many readers: `publish` replaces the item, and each reader gets the newest item
    it has not had yet, at its own pace. A slow reader skips items; it never holds the publisher
    or another reader up, and nothing queues."""

    def __init__(self) -> None:
        self._item: T | None = None
        self.serial = 0  # of the current item; 0 before the first
        self._waiters: set[asyncio.Future] = set()

    def publish(self, item: T) -> None:
        self._item = item
        self.serial += 1
        for waiter in self._waiters:
            _wake(waiter)
        self._waiters.clear()

    def clear(self) -> None:
        """Forget the item (its buffers can go); readers wait for the next one."""
        self._item = None

    def reader(self) -> "BroadcastReader[T]":
        return BroadcastReader(self)


class BroadcastReader(Generic[T]):
    def __init__(self, source: Broadcast[T]):
        self._source = source
        self._seen = source.serial  # only items published from now on
        self.skipped = 0  # items published while this reader was busy: it never saw them

    @property
    def pending(self) -> bool:
        return self._source.serial > self._seen and self._source._item is not None

    async def take(self, timeout: float | None = None) -> T | None:
        """The newest item this reader has not had; None when `timeout` seconds pass first."""
        source = self._source
        if not self.pending:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            source._waiters.add(waiter)
            timer = loop.call_later(max(timeout, 0.0), _wake, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                source._waiters.discard(waiter)
                if timer is not None:
                    timer.cancel()
            if not self.pending:
                return None
        self.skipped += source.serial - self._seen - 1
        self._seen = source.serial
        return source._item
