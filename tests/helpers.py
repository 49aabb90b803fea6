"""Helpers the tests share: an offer, a connected client, what a frame that came back shows and
which frame it was, and small videos made with PyAV with a clock to step through them."""

from __future__ import annotations

import io
import time

import av
import cv2
import numpy as np
from aiortc import RTCPeerConnection

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.transport.ice import peer_connection

from camfx.engine.media import yuv


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


async def make_offer(kind: str = "video") -> tuple[RTCPeerConnection, str]:
    pc = peer_connection()
    pc.addTransceiver(kind, direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def connect(server, clip, params, codec="VP8"):
    peer = ClientPeer(SyntheticCamera(clip), codec=codec)
    await peer.connect(server.url, params)
    await peer.wait_frames(20)
    return peer


FPS = 12
FORMATS = {"mp4": ("mp4", "libx264", "yuv420p"), "webm": ("webm", "libvpx-vp9", "yuv420p"),
           "gif": ("gif", "gif", "rgb8")}


def picture(i: int, count: int, h: int, w: int) -> np.ndarray:
    """Frame i of a clip: a colour that steps each frame and a bar that moves across."""
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[...] = (40 + 200 * i // count, 200 - 150 * i // count, 90)
    x = w * i // count
    rgb[:, x : x + max(2, w // count)] = (250, 250, 250)
    return rgb


def make_video(kind: str = "mp4", frames: int = 12, w: int = 64, h: int = 48, fps: int = FPS,
               streams: int = 1) -> bytes:
    fmt, codec, pix_fmt = FORMATS[kind]
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        encoders = [container.add_stream(codec, rate=fps) for _ in range(streams)]
        for stream in encoders:
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(i, frames, h, w), format="rgb24")
            for stream in encoders:
                container.mux(stream.encode(frame))
        for stream in encoders:
            container.mux(stream.encode())
    return out.getvalue()


def header_only_webm() -> bytes:
    """A WebM with a video track and not one frame."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return out.getvalue()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def show(backgrounds: Backgrounds, clock: FakeClock, name: str, number: int, view: tuple) -> np.ndarray:
    """Move the clock to frame `number` of video `name` (counting on through its loops) and hold
    it there; the picture the frame path gets once the decoder has that frame."""
    backgrounds.frame(name, *view)  # starts the player if it is not running
    player = backgrounds.player(name)
    clock.now = player.started + (number + 0.5) / backgrounds._uploads[name].fps
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        layer = backgrounds.frame(name, *view)
        shown = player.current(view)
        if shown is not None and shown[0] == number and shown[1] is layer:
            return layer
        time.sleep(0.005)
    raise AssertionError(f"frame {number} never came")
