"""The stream core without WebRTC: a real input track in, any number of readers out, each at
its own pace; and what it says about an input it does not like (B-frames)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from camfx.engine.config import ServerConfig
from camfx.engine.media.frame_slot import Broadcast
from camfx.engine.hub import Hub
from camfx.engine.params import Params
from camfx.engine.stream import Stream

pytestmark = pytest.mark.unit


class Frames(MediaStreamTrack):
    """`count` frames of a clip at `fps`, then the end; `pict_type` marks them as a decoder would."""

    kind = "video"

    def __init__(self, clip, count: int, fps: float = 30.0, pict_type: int = 1):
        super().__init__()
        self._clip, self._count, self._fps, self._pict_type = clip, count, fps, pict_type
        self.sent = 0

    async def recv(self) -> VideoFrame:
        if self.sent >= self._count:
            raise MediaStreamError
        await asyncio.sleep(1 / self._fps)
        frame = VideoFrame.from_ndarray(self._clip[self.sent % len(self._clip)], format="yuv420p")
        frame.pict_type = self._pict_type
        self.sent += 1
        return frame


async def test_a_broadcast_gives_each_reader_the_newest_at_its_own_pace():
    source: Broadcast[int] = Broadcast()
    fast, slow = source.reader(), source.reader()
    for item in range(5):
        source.publish(item)
        assert await fast.take(0.1) == item  # keeps up: every item
    assert await slow.take(0.1) == 4  # fell behind: the newest only, nothing queued
    assert await slow.take(0.05) is None and await fast.take(0.05) is None  # nothing new: they wait
    source.clear()
    source.publish(5)
    assert await fast.take(0.1) == 5 and await slow.take(0.1) == 5


async def test_readers_of_one_stream_each_get_frames_of_their_own(clip_640):
    hub = Hub(ServerConfig())
    ended = asyncio.Event()
    stream = Stream(hub, Params(effect="none"), "test", on_input_ended=ended.set)
    first, second = stream.subscribe(own_frames=False), stream.subscribe()
    try:
        stream.start(Frames(clip_640, 30))
        a, b = await first.recv(), await second.recv()
        assert a is not b  # each reader stamps its own timestamps on its own frame object
        assert np.array_equal(a.to_ndarray(), b.to_ndarray())
        await asyncio.wait_for(ended.wait(), 10)
        assert stream.frames_in == 30 and stream.readers == 2
        stream.unsubscribe(second)
        assert stream.readers == 1 and second.readyState == "ended"
    finally:
        await stream.close()
        hub.shutdown()


async def test_b_frames_are_reported_and_the_stream_goes_on(clip_640):
    hub = Hub(ServerConfig())
    errors = []
    stream = Stream(hub, Params(effect="blur"), "test", on_error=lambda field, message: errors.append((field, message)))
    reader = stream.subscribe()
    try:
        stream.start(Frames(clip_640, 20, pict_type=3))
        for _ in range(10):
            await reader.recv()
        assert errors and errors[0][0] == "video" and "B-frames" in errors[0][1] and len(errors) == 1
        assert "bframes=0" in stream.stats()["warning"]
    finally:
        await stream.close()
        hub.shutdown()


async def test_stats_count_the_model_calls_a_still_person_saves():
    """segment_skip on a still person: the stream's stats say how many frames reused the mask."""
    from camfx.bench.clip import still_clip

    hub = Hub(ServerConfig())
    ended = asyncio.Event()
    stream = Stream(hub, Params(effect="blur", segment_skip=3), "test", on_input_ended=ended.set)
    reader = stream.subscribe()
    try:
        stream.start(Frames(still_clip(640, 480, 8), 16, fps=60))
        while not ended.is_set():  # read on, so every frame is processed and sent
            await asyncio.wait_for(reader.recv(), 5)
            await asyncio.sleep(0)
        while not stream.idle:
            await asyncio.sleep(0.01)
        calls = stream.stats()["model_calls"]
        assert calls["calls"] + calls["reused"] == stream.frames_in - stream.stats()["frames_dropped"]
        assert calls["reused"] > calls["calls"] > 0
    finally:
        await stream.close()
        hub.shutdown()
