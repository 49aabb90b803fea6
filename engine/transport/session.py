"""A stream carried by one WebRTC peer: its peer connection and the `control` data channel, on
the peer base (the deadlines that free the slot of a peer that is gone, a teardown that always
completes)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection

from ..params import Params, ParamsError, field_error
from ..stream import Stream
from . import safe_json
from .peer import Peer

if TYPE_CHECKING:
    from ..hub import Hub

log = logging.getLogger("camfx.session")

STATS_INTERVAL_S = 1.0
MAX_MESSAGE_BYTES = 16 * 1024  # a control message is a few hundred bytes


class PeerSession(Peer):
    """One peer's session: its video track feeds a `Stream`, whose first output goes back.

    A peer that never connects goes after `connect_timeout` seconds, one that stops sending
    after `media_timeout`; a remote track that ends, a failed connection or `close()` end it too,
    and `on_closed(session)` is then called exactly once, whatever failed on the way.
    """

    kind = "session"
    silence = "no video from the peer"

    def __init__(self, session_id: str, pc: RTCPeerConnection, hub: "Hub", params: Params,
                 on_closed: Callable[["PeerSession"], None], connect_timeout: float, media_timeout: float,
                 name: str | None = None, sends_back: bool = True):
        """`name`: the stream's published name (WHEP viewers and /view pages find it by it).
        `sends_back`: the processed video goes back to this peer (a WHIP publisher's does not)."""
        self.name = name
        self.stream = Stream(hub, params, name or session_id, on_input_ended=self.input_ended,
                             on_error=self.report_error)
        self.output = self.stream.subscribe(own_frames=False) if sends_back else None
        self._channel: RTCDataChannel | None = None
        super().__init__(session_id, pc, on_closed, connect_timeout, media_timeout)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            return
        self.stream.start(track)
        self.tasks.spawn(self._report_stats())

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
    async def _last_heard(self) -> float:
        return self.stream.last_input

    def input_ended(self) -> None:
        """The peer's video track ended: the session ends with it."""
        log.info("session %s: the remote track ended", self.id)
        self.tasks.spawn(self.close())

    async def _teardown(self) -> None:
        await self.stream.close()
