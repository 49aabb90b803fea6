"""What every peer connection the server holds shares (a publishing session, a WHEP viewer): a
deadline to connect, a watchdog that closes a peer gone silent, and a teardown that always
completes and frees the peer's slot exactly once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from aiortc import RTCPeerConnection

from ..tasks import TaskSet

log = logging.getLogger("camfx.peer")

WATCH_INTERVAL_S = 0.5


class Peer:
    """One remote peer on `pc`. It ends when its connection fails or closes, when it does not
    connect within `connect_timeout` seconds, when nothing is heard from it for `media_timeout`
    (what "heard" means is the subclass's `_last_heard`), or on `close()`; `on_closed(peer)` is
    then called exactly once, whatever failed on the way. Subclasses free their own parts in
    `_teardown` and start their tasks in `self.tasks`."""

    kind = "peer"  # for the log
    silence = "nothing heard from the peer"  # what the log says when the watchdog closes it

    def __init__(self, peer_id: str, pc: RTCPeerConnection, on_closed: Callable[[Any], None],
                 connect_timeout: float, media_timeout: float):
        self.id = peer_id
        self.etag = ""  # the WHIP / WHEP session's entity tag (RFC 9725), set when it is answered
        self.pc = pc
        self.closed = asyncio.Event()
        self.tasks = TaskSet(f"{self.kind} {peer_id}")
        self._on_closed = on_closed
        self._connect_timeout, self._media_timeout = connect_timeout, media_timeout
        pc.on("connectionstatechange", self._on_connection_state)
        self.tasks.spawn(self._close_when_gone())

    async def _last_heard(self) -> float:
        """When the peer was last heard from (time.perf_counter()); 0 if never."""
        raise NotImplementedError

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _close_when_gone(self) -> None:
        """A peer that never connects, or goes silent, frees its slot within seconds (ICE
        consent would take 30)."""
        opened, connected_at = time.perf_counter(), None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.perf_counter()
            if connected_at is None and self.pc.connectionState != "connected":
                if now - opened > self._connect_timeout:
                    log.info("%s %s: did not connect within %g s; closing", self.kind, self.id, self._connect_timeout)
                    break
                continue
            connected_at = connected_at or now
            silent = time.perf_counter() - max(await self._last_heard(), connected_at)
            if silent > self._media_timeout:
                log.info("%s %s: %s for %.0f s; closing", self.kind, self.id, self.silence, silent)
                break
        self.tasks.spawn(self.close())

    async def _teardown(self) -> None:
        """The subclass's own parts, freed after the peer's tasks and before its connection."""

    async def close(self) -> None:
        """Idempotent, and it always frees the slot: a failure while tearing down (aiortc raises
        closing a connection it half set up) is logged, never kept."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            await self.tasks.close()
            await self._teardown()
            await self.pc.close()
        except Exception:
            log.warning("%s %s: teardown failed; it is freed anyway", self.kind, self.id, exc_info=True)
        finally:
            self._on_closed(self)
            log.info("%s %s: closed", self.kind, self.id)
