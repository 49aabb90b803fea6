"""A WHEP viewer: a peer connection that sends a published stream's processed video, read at
this viewer's own pace (a slow viewer skips frames; it never holds the stream or another viewer)."""

from __future__ import annotations

import time
from typing import Callable

from aiortc import RTCPeerConnection

from .peer import Peer
from .session import PeerSession


class ViewerSession(Peer):
    """Ends when the viewer leaves (DELETE, a closed or failed connection), does not connect
    within `connect_timeout`, stops reporting reception (no RTCP for `media_timeout`: it is gone),
    or the stream it watches ends. `on_closed(viewer)` is then called exactly once."""

    kind = "viewer"
    silence = "no reception report"

    def __init__(self, viewer_id: str, pc: RTCPeerConnection, publisher: PeerSession,
                 on_closed: Callable[["ViewerSession"], None], connect_timeout: float, media_timeout: float):
        self.publisher = publisher
        self.output = publisher.stream.subscribe()
        super().__init__(viewer_id, pc, on_closed, connect_timeout, media_timeout)

    async def _last_heard(self) -> float:
        """When the viewer's newest RTCP receiver report came, on time.perf_counter()'s clock."""
        times = [s.timestamp for s in (await self.pc.getStats()).values() if s.type == "remote-inbound-rtp"]
        if not times:
            return 0.0
        return time.perf_counter() - (time.time() - max(times).timestamp())

    async def _teardown(self) -> None:
        self.publisher.stream.unsubscribe(self.output)
