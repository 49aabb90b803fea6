"""Offer in, answer out: the SDP checked, the receiver and the sender set up. Used by `/offer`
(and by WHIP, which has the same job in another envelope).

aiortc accepts some broken offers half-way and then fails in ways that leave a peer connection
it cannot close (a BUNDLE group naming a media section that is not there made `close()` raise),
so what can be told from the text is refused first, with a message that says what is wrong.
"""

from __future__ import annotations

import logging
import re

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from .jitter import release_frames_at_marker

log = logging.getLogger("camfx.signalling")

_MID = re.compile(r"^a=mid:(\S+)", re.M)
_BUNDLE = re.compile(r"^a=group:BUNDLE((?: \S+)*)\s*$", re.M)
_MEDIA = re.compile(r"^m=(\w+) ", re.M)


def offer_problem(sdp: str) -> str | None:
    """What makes `sdp` an offer camfx cannot take, or None."""
    if not sdp.startswith("v=0"):
        return "the SDP offer must start with v=0"
    kinds = _MEDIA.findall(sdp)
    if "video" not in kinds:
        return "the offer has no video; camfx needs a camera track (m=video)"
    mids = set(_MID.findall(sdp))
    for group in _BUNDLE.findall(sdp):
        missing = [mid for mid in group.split() if mid not in mids]
        if missing:
            return (f"the offer's BUNDLE group names media section {missing[0]!r}, "
                    "which the offer does not have")
    return None


class OfferError(ValueError):
    """An offer camfx cannot answer; the message is for the sender."""


UNUSABLE = ("the SDP offer could not be used: it is incomplete, or asks for something camfx does "
            "not support (see the server log under this request id)")


async def answer(pc: RTCPeerConnection, sdp: str, output: MediaStreamTrack, context: str = "") -> RTCSessionDescription:
    """Answer the offer `sdp` on `pc`, sending `output` back on its video transceiver (sendrecv),
    with frames decoded as soon as they are whole. Raises OfferError; `context` names the request
    in the log line of an unexpected failure."""
    problem = offer_problem(sdp)
    if problem:
        raise OfferError(problem)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        video = next((t for t in pc.getTransceivers() if t.kind == "video"), None)
        if video is None:
            raise OfferError("the offer has no video; camfx needs a camera track (m=video)")
        release_frames_at_marker(pc)  # decode each frame when its last packet is in, not a frame later
        pc.addTrack(output)
        video.direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
    except OfferError:
        raise
    except Exception as exc:  # aiortc raises many types for SDP it cannot use
        log.warning("%s offer refused: %r", context, exc)
        raise OfferError(UNUSABLE) from None
    return pc.localDescription
