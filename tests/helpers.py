"""Helpers the WebRTC tests share: what a frame that came back shows, and which frame it was."""

from __future__ import annotations

import cv2

from camfx.engine import yuv


def regions(clip, frame_id, segmenter):
    """Boolean (person, background) luma masks of input frame `frame_id`, from the model."""
    frame = clip[frame_id % len(clip)]
    h, w = yuv.frame_size(frame)
    prob = cv2.resize(segmenter(frame), (w, h))
    person, background = prob > 0.95, prob < 0.05
    person[:32], background[:32] = False, False  # probe rows
    return person, background


async def matched_frame(peer):
    """The newest received frame whose input id is known, after letting a few more arrive."""
    await peer.wait_frames(len(peer.received.arrivals) + 5)
    for frame_id, image in reversed(peer.received.last_frames):
        if frame_id is not None:
            return frame_id, image
    raise AssertionError("no received frame carried a readable id")
