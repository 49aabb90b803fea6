"""Hand each received video frame to the decoder as soon as its last packet is in.

aiortc's video jitter buffer knows a frame is complete only when a packet of the *next* frame
arrives, so every frame waits a whole frame interval (33 ms at 30 fps) before decoding. Senders
(browsers, OBS, aiortc itself) set the RTP marker bit on a frame's last packet (RFC 7741 for
VP8, RFC 6184 for H264): once the packets from the buffer's start up to a marked packet are all
there and belong to one frame, that frame is complete. The stock rule stays as the fallback for
frames whose end is not marked, or when an older frame still has a gap.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

log = logging.getLogger("camfx.jitter")

# aiortc keeps the buffer in a private attribute of RTCRtpReceiver (aiortc 1.x).
_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, releasing a frame at its marked last packet."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame: list = []  # the first frame's packets, from the buffer's start
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (frame and packet.timestamp != frame[0].timestamp):
                break  # a gap, or an unmarked frame end: the stock rule decides
            frame.append(packet)
            if packet.marker:
                self.remove(len(frame))
                return JitterFrame(data=b"".join(p._data for p in frame), timestamp=packet.timestamp)
        return super()._remove_frame(sequence_number)


def release_frames_at_marker(pc: RTCPeerConnection) -> int:
    """Give the video receivers of `pc` a MarkerJitterBuffer; returns how many it changed.

    Call it once the receivers exist (after setRemoteDescription for an answerer, after
    addTransceiver for an offerer) and before media flows. If aiortc ever stops keeping its
    buffer where we expect, this logs a warning and leaves the stock buffer working.
    """
    changed = 0
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        current = getattr(transceiver.receiver, _RECEIVER_BUFFER, None)
        if isinstance(current, MarkerJitterBuffer):
            continue
        if not isinstance(current, JitterBuffer):
            log.warning("aiortc's receiver has no jitter buffer where expected; frames will wait for the next one")
            continue
        setattr(transceiver.receiver, _RECEIVER_BUFFER, MarkerJitterBuffer(current.capacity, is_video=True))
        changed += 1
    return changed
