"""Checks on an SDP offer before aiortc sees it, each with a message for the sender.

aiortc accepts some broken offers half-way and then fails in ways that leave a peer connection
it cannot close (a BUNDLE group naming a media section that is not there made `close()` raise),
so what can be told from the text is refused here, with a 400 that says what is wrong.
"""

from __future__ import annotations

import re

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
