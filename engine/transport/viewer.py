"""A WHEP viewer: a peer connection that sends a published stream's processed video, read at
this viewer's own pace (a slow viewer skips frames; it never holds the stream or another viewer)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from aiortc import RTCPeerConnection

from .session import WATCH_INTERVAL_S, PeerSession

log = logging.getLogger("camfx.viewer")


class ViewerSession:
    """Ends when the viewer leaves (DELETE, a closed or failed connection), does not connect
    within `connect_timeout`, stops reporting reception (no RTCP for `media_timeout`: it is gone),
    or the stream it watches ends. `on_closed(viewer)` is then called exactly once."""

    def __init__(self, viewer_id: str, pc: RTCPeerConnection, publisher: PeerSession,
                 on_closed: Callable[["ViewerSession"], None], connect_timeout: float, media_timeout: float):
        self.id = viewer_id
        self.etag = ""  # the WHEP session's entity tag, set when it is answered
        self.pc = pc
        self.publisher = publisher
        self.output = publisher.stream.subscribe()
        self.closed = asyncio.Event()
        self._on_closed = on_closed
        self._connect_timeout, self._media_timeout = connect_timeout, media_timeout
        pc.on("connectionstatechange", self._on_connection_state)
        self._watch = asyncio.ensure_future(self._close_when_viewer_is_gone())

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _last_report(self) -> float | None:
        """When the viewer's newest RTCP receiver report came (time.time()), if one did."""
        times = [s.timestamp for s in (await self.pc.getStats()).values() if s.type == "remote-inbound-rtp"]
        return max(times).timestamp() if times else None

    async def _close_when_viewer_is_gone(self) -> None:
        opened, connected_at = time.perf_counter(), None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if connected_at is None and self.pc.connectionState != "connected":
                if time.perf_counter() - opened > self._connect_timeout:
                    log.info("viewer %s: did not connect within %g s; closing", self.id, self._connect_timeout)
                    break
                continue
            connected_at = connected_at or time.time()
            last = await self._last_report()
            silent = time.time() - max(last or 0.0, connected_at)
            if silent > self._media_timeout:
                log.info("viewer %s: no reception report for %.0f s; closing", self.id, silent)
                break
        asyncio.ensure_future(self.close())

    async def close(self) -> None:
        """Idempotent; always frees the viewer's slot, whatever fails on the way."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            if self._watch is not asyncio.current_task():
                self._watch.cancel()
                await asyncio.gather(self._watch, return_exceptions=True)
            self.publisher.stream.unsubscribe(self.output)
            await self.pc.close()
        except Exception:
            log.warning("viewer %s: teardown failed; the viewer is freed anyway", self.id, exc_info=True)
        finally:
            self._on_closed(self)
            log.info("viewer %s of %s: closed", self.id, self.publisher.name)

