"""Decoded VideoFrames to I420 planes and processed I420 arrays back, without copying pixels."""

from __future__ import annotations

import numpy as np
from av import VideoFrame


def as_i420(frame: VideoFrame) -> VideoFrame:
    """The frame itself when it is I420 of even size (as decoders give), else converted to it:
    a rare odd-sized source loses its last row or column."""
    w, h = frame.width & ~1, frame.height & ~1
    if (w, h) != (frame.width, frame.height) or frame.format.name != "yuv420p":
        frame = frame.reformat(width=w, height=h, format="yuv420p")
    return frame


def plane_views(frame: VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of an I420 frame as arrays over its own buffers, without the copy
    `to_ndarray` makes (a quarter of a millisecond at 720p). Decoders pad rows, so each is a view
    of the first `width` bytes of its rows; the arrays keep the frame alive."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
        views.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width])
    return tuple(views)


def to_video_frame(i420: np.ndarray) -> VideoFrame:
    """A VideoFrame of a processed I420 array."""
    # Wrapping the array costs microseconds; copying a 720p frame costs about half a millisecond.
    # PyAV only wraps it right when the chroma planes fill whole rows (height % 4 == 0).
    if i420.flags.c_contiguous and (i420.shape[0] * 2 // 3) % 4 == 0:
        return VideoFrame.from_numpy_buffer(i420, format="yuv420p")
    return VideoFrame.from_ndarray(i420, format="yuv420p")


def another_frame(frame: VideoFrame, i420) -> VideoFrame:
    """A second VideoFrame of `frame`'s picture, for another reader to stamp with its own time:
    a wrapper over the same pixels where they are one I420 array (`i420`), else a copy."""
    if isinstance(i420, np.ndarray):
        return to_video_frame(i420)
    return VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
