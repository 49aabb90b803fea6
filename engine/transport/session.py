"""A stream carried by one WebRTC peer: its peer connection, the `control` data channel, the
deadlines that free the slot of a peer that is gone, and a teardown that always completes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection

from ..params import Params, ParamsError, field_error
from ..stream import Stream
from . import safe_json

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("camfx.session")

STATS_INTERVAL_S = 1.0
WATCH_INTERVAL_S = 0.5
MAX_MESSAGE_BYTES = 16 * 1024  # a control message is a few hundred bytes


class PeerSession:
    """One peer's session: its video track feeds a `Stream`, whose first output goes back.

    A peer that never connects goes after `connect_timeout` seconds, one that stops sending
    after `media_timeout`; a remote track that ends, a failed connection or `close()` end it too,
    and `on_closed(session)` is then called exactly once, whatever failed on the way.
    """

    def __init__(self, session_id: str, pc: RTCPeerConnection, hub: "Hub", params: Params,
                 on_closed: Callable[["PeerSession"], None], connect_timeout: float, media_timeout: float,
                 name: str | None = None, sends_back: bool = True):
        """`name`: the stream's published name (WHEP viewers and /view pages find it by it).
        `sends_back`: the processed video goes back to this peer (a WHIP publisher's does not)."""
        self.id = session_id
        self.name = name
        self.etag = ""  # a WHIP session's entity tag (RFC 9725), set when it is answered
        self.pc = pc
        self.stream = Stream(hub, params, name or session_id, on_input_ended=self.input_ended,
                             on_error=self.report_error)
        self.output = self.stream.subscribe(own_frames=False) if sends_back else None
        self.closed = asyncio.Event()
        self._on_closed = on_closed
        self._connect_timeout, self._media_timeout = connect_timeout, media_timeout
        self._channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task] = set()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        self._spawn(self._close_when_peer_is_gone())

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            return
        self.stream.start(track)
        self._spawn(self._report_stats())

    # ---- the control channel ------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "control":
            return
        self._channel = channel

        @channel.on("message")
        def on_message(message: Any) -> None:
            # Nothing may escape: aiortc's event emitter would end the whole session with it.
            try:
                reply = self._control(message)
            except Exception:
                log.exception("session %s: control message failed", self.id)
                reply = {"type": "error", "errors": [field_error("", "the server could not apply this message")]}
            self.send(reply)

    def _control(self, message: Any) -> dict:
        """One message on the control channel: a params patch in, the answer out."""
        if not isinstance(message, (str, bytes)):
            return {"type": "error", "errors": [field_error("", "expected a JSON object as text")]}
        try:
            patch = safe_json.loads(message, MAX_MESSAGE_BYTES)
            params = self.stream.update_params(patch)
        except safe_json.JSONInputError as exc:
            return {"type": "error", "errors": [field_error("", str(exc))]}
        except ParamsError as exc:
            return {"type": "error", "errors": exc.errors}
        return {"type": "params", "params": params.model_dump()}

    def send(self, message: dict) -> None:
        """A message to the peer on the control channel, if it is open."""
        if self._channel is not None and self._channel.readyState == "open":
            try:
                self._channel.send(json.dumps(message))
            except Exception:  # the channel closed under us: the session's own teardown follows
                log.debug("session %s: control message not sent", self.id, exc_info=True)

    def report_error(self, field: str, message: str) -> None:
        self.send({"type": "error", "errors": [field_error(field, message)]})

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self.send({"type": "stats", **self.stats()})

    def stats(self) -> dict[str, Any]:
        return {"session_id": self.id, "name": self.name, "viewers": self.stream.readers - (self.output is not None),
                **self.stream.stats()}

    # ---- teardown -------------------------------------------------------------------------------
    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _close_when_peer_is_gone(self) -> None:
        """A peer that never connects, or stops sending, frees its slot within seconds (ICE
        consent would take 30)."""
        opened, connected_at = time.perf_counter(), None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.perf_counter()
            if connected_at is None and self.pc.connectionState != "connected":
                if now - opened > self._connect_timeout:
                    log.info("session %s: the peer did not connect within %g s; closing", self.id, self._connect_timeout)
                    break
                continue
            connected_at = connected_at or now
            silent = now - max(self.stream.last_input, connected_at)
            if silent > self._media_timeout:
                log.info("session %s: no video from the peer for %.0f s; closing", self.id, silent)
                break
        self._spawn(self.close())

    def input_ended(self) -> None:
        """The peer's video track ended: the session ends with it."""
        log.info("session %s: the remote track ended", self.id)
        self._spawn(self.close())

    async def close(self) -> None:
        """Idempotent, and it always frees the slot: a failure while tearing down (aiortc raises
        closing a connection it half set up) is logged, never kept."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stream.close()
            await self.pc.close()
        except Exception:
            log.warning("session %s: teardown failed; the session is freed anyway", self.id, exc_info=True)
        finally:
            self._on_closed(self)
            log.info("session %s: closed", self.id)
