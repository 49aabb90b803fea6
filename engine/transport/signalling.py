"""Offer in, answer out: the SDP checked, the receiver and the sender set up, and a peer whose
offer fails closed at once. Used by `/offer`, WHIP and WHEP (the same job in three envelopes).

aiortc accepts some broken offers half-way and then fails in ways that leave a peer connection
it cannot close (a BUNDLE group naming a media section that is not there made `close()` raise),
so what can be told from the text is refused first, with a message that says what is wrong.
"""

from __future__ import annotations

import logging
import re
from typing import Awaitable

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from .errors import HTTPError
from .jitter import release_frames_at_marker
from .peer import Peer

log = logging.getLogger("camfx.signalling")

_MID = re.compile(r"^a=mid:(\S+)", re.M)
_BUNDLE = re.compile(r"^a=group:BUNDLE((?: \S+)*)\s*$", re.M)
_MEDIA = re.compile(r"^m=(\w+) ", re.M)


class OfferError(ValueError):
    """An offer camfx cannot answer; the message is for the sender. `status`: 400 for an offer
    that is broken, 422 for one that is well formed but asks for what camfx does not take."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


CODECS = ("camfx decodes VP8 or H.264 constrained baseline / baseline (packetization-mode 1); in OBS, "
          "set the encoder's profile to baseline")


def _video_codecs_problem(sdp: str) -> str | None:
    """Whether the offer's video has a codec camfx can decode, as aiortc will judge it."""
    from aiortc.codecs import CODECS as AIORTC_CODECS
    from aiortc.rtcpeerconnection import find_common_codecs
    from aiortc.sdp import SessionDescription

    try:
        media = [m for m in SessionDescription.parse(sdp).media if m.kind == "video"]
    except Exception:  # aiortc's parser raises anything, StopIteration included, on broken SDP
        return None  # answer() runs it again and turns the failure into a 400
    ours = AIORTC_CODECS["video"]
    for section in media:
        offered = [c for c in section.rtp.codecs if c.mimeType.lower() != "video/rtx"]
        common = [c for c in find_common_codecs(ours, offered) if c.mimeType.lower() != "video/rtx"]
        if offered and not common:
            names = ", ".join(sorted({f"{c.mimeType.split('/')[-1]} {c.parameters.get('profile-level-id', '')}".strip()
                                      for c in offered}))
            return f"the offer's video codecs ({names}) are none camfx can decode: {CODECS}"
    return None


def offer_problem(sdp: str, publisher: bool = False) -> OfferError | None:
    """What makes `sdp` an offer camfx cannot take, or None. `publisher`: a WHIP offer, which
    carries at most one video and one audio track (RFC 9725)."""
    if not sdp.startswith("v=0"):
        return OfferError("the SDP offer must start with v=0")
    kinds = _MEDIA.findall(sdp)
    if not kinds:
        return OfferError("the SDP offer has no media sections (m= lines): it is not a complete offer")
    if "video" not in kinds:
        return OfferError("the offer has no video; camfx needs a camera track (m=video)", 422 if publisher else 400)
    if publisher and (kinds.count("video") > 1 or kinds.count("audio") > 1):
        return OfferError("a WHIP offer carries one video track (and at most one audio track); this one has "
                          f"{kinds.count('video')} video and {kinds.count('audio')} audio", 422)
    mids = set(_MID.findall(sdp))
    for group in _BUNDLE.findall(sdp):
        missing = [mid for mid in group.split() if mid not in mids]
        if missing:
            return OfferError(f"the offer's BUNDLE group names media section {missing[0]!r}, "
                              "which the offer does not have")
    codecs = _video_codecs_problem(sdp)
    return OfferError(codecs, 422) if codecs else None


def check_offer(sdp: str, publisher: bool = False) -> None:
    """HTTPError (400 or 422) for an offer camfx cannot take: called before a slot is taken."""
    problem = offer_problem(sdp, publisher)
    if problem:
        raise HTTPError(problem.status, str(problem))


async def answer_or_close(peer: Peer, answering: Awaitable[RTCSessionDescription]) -> RTCSessionDescription:
    """The answer (`answering`: `answer(...)` or `answer_viewer(...)`) for `peer`, just opened.
    Whatever fails, the peer is closed first, which frees its slot; an OfferError becomes the
    HTTPError its sender reads."""
    try:
        return await answering
    except OfferError as exc:
        await peer.close()  # never raises, and always frees the slot
        raise HTTPError(exc.status, str(exc)) from None
    except BaseException:
        await peer.close()
        raise


UNUSABLE = ("the SDP offer could not be used: it is incomplete, or asks for something camfx does "
            "not support (see the server log under this request id)")


async def answer(pc: RTCPeerConnection, sdp: str, output: MediaStreamTrack | None, context: str = "",
                 publisher: bool = False) -> RTCSessionDescription:
    """Answer the offer `sdp` on `pc`, with frames decoded as soon as they are whole. `output`
    goes back on the video transceiver (sendrecv); without one the video is received only
    (a WHIP publisher's). Audio is declined (inactive): camfx processes video. Raises OfferError;
    `context` names the request in the log line of an unexpected failure."""
    problem = offer_problem(sdp, publisher)
    if problem:
        raise problem
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        video = next((t for t in pc.getTransceivers() if t.kind == "video"), None)
        if video is None:
            raise OfferError("the offer has no video; camfx needs a camera track (m=video)")
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.direction = "inactive"
        release_frames_at_marker(pc)  # decode each frame when its last packet is in, not a frame later
        if output is not None:
            pc.addTrack(output)
            video.direction = "sendrecv"
        else:
            video.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
    except OfferError:
        raise
    except Exception as exc:  # aiortc raises many types for SDP it cannot use
        log.warning("%s offer refused: %r", context, exc)
        raise OfferError(UNUSABLE) from None
    return pc.localDescription


async def answer_viewer(pc: RTCPeerConnection, sdp: str, output: MediaStreamTrack,
                        context: str = "") -> RTCSessionDescription:
    """Answer a WHEP viewer's offer (video to receive): `output` is sent (sendonly), audio declined."""
    if not sdp.startswith("v=0") or "video" not in _MEDIA.findall(sdp):
        raise OfferError("a WHEP offer needs a video section to receive the stream on (m=video, recvonly)")
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.direction = "inactive"
        pc.addTrack(output)
        video.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        log.warning("%s WHEP offer refused: %r", context, exc)
        raise OfferError(UNUSABLE) from None
    return pc.localDescription
