"""Background uploads, decoded where they cannot slow a video frame.

A small picture file can hold a huge image (a 40 KB PNG of 40 megapixels took 0.4 s to decode),
and on the pool that runs the frames thirty of them took a live session's p95 from 60 to 700 ms.
So uploads get a thread of their own at a lower CPU priority, a few at a time (reading or
decoding; one more is refused with 429, never queued), and each client a rate limit.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

from ..effects.backgrounds import BackgroundError, Backgrounds
from .errors import HTTPError
from .rate_limit import RateLimiter

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
IN_PROGRESS = 3  # uploads being read or decoded at once, server-wide


def _lower_priority() -> None:
    """Runs on the upload thread: nice 10, so the frames' threads win the cores (Linux, where a
    thread has a priority of its own; elsewhere nothing changes)."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass


class Uploads:
    def __init__(self, backgrounds: Backgrounds, rate: RateLimiter, in_progress: int = IN_PROGRESS):
        self._backgrounds = backgrounds
        self._capacity = in_progress
        self._busy = 0
        self._rate = rate
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="camfx-upload", initializer=_lower_priority)

    async def add(self, client: str, read: Callable[[], Awaitable[bytes]]) -> str:
        """Read the body with `read` and keep the image; its id. HTTPError 429 / 400 / 413."""
        wait = self._rate.take(client)
        if wait:
            raise HTTPError(429, f"too many uploads from this address; try again in {math.ceil(wait)} s",
                            headers={"Retry-After": str(math.ceil(wait))})
        if self._busy >= self._capacity:
            raise HTTPError(429, "the server is busy with other uploads; try again in a few seconds",
                            headers={"Retry-After": "2"})
        self._busy += 1
        try:
            data = await read()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._backgrounds.add_upload, data)
        except BackgroundError as exc:
            raise HTTPError(400, str(exc)) from None
        finally:
            self._busy -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
