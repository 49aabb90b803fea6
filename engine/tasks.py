"""One way to run a background task: a `TaskSet`.

asyncio keeps only a weak reference to a running task, so a task nobody holds can be collected
before it ends. Every task camfx starts is spawned into the `TaskSet` of its owner (a stream, a
peer, the session registry, the camera client): the set holds it until it is done, starts
nothing once closed, and on close cancels what is left and waits for it, for a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, TypeVar

log = logging.getLogger("camfx.tasks")

T = TypeVar("T")
CLOSE_TIMEOUT_S = 5.0  # a task that ignores its cancellation this long is logged and let be


class TaskSet:
    """The tasks of one owner; `name` appears in the log."""

    def __init__(self, name: str = "", close_timeout: float = CLOSE_TIMEOUT_S):
        self.name = name
        self._close_timeout = close_timeout
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T] | None:
        """Run `coro` as a task held until it is done. Once the set is closed nothing starts:
        the coroutine is closed unrun and None comes back."""
        if self.closed:
            coro.close()
            log.debug("%s: closed; a task was not started", self.name)
            return None
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self):
        return iter(list(self._tasks))

    async def close(self) -> None:
        """Refuse new tasks, cancel the running ones and wait for them (at most `close_timeout`
        seconds). The task calling close, if it is one of the set's, is left to finish itself."""
        self.closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._close_timeout)
        if pending:
            log.warning("%s: %d task(s) still running %g s after their cancellation", self.name, len(pending),
                        self._close_timeout)
