"""A real aiortc client peer for camfx (and for a plain echo server): it sends a synthetic
camera, receives the processed stream, and matches each received frame to the frame it was
made from by the id stamped in the probe rows."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame

from camfx.engine.transport.ice import peer_connection
from camfx.engine.transport.jitter import release_frames_at_marker

from camfx.engine.media import frame_ids



class SyntheticCamera(MediaStreamTrack):
    """Plays `clip` (I420 frames) in a loop at `fps`, stamping a frame id into each frame and
    remembering when each id was sent."""

    kind = "video"

    def __init__(self, clip: list[np.ndarray], fps: float = 30.0, stamp_ids: bool = True):
        super().__init__()
        self._clip, self._fps, self._stamp = clip, fps, stamp_ids
        self._count = 0
        self._start: float | None = None
        self.sent_at: dict[int, float] = {}

    @property
    def frames_sent(self) -> int:
        return self._count

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        due = self._start + self._count / self._fps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        frame_id = self._count
        image = self._clip[frame_id % len(self._clip)].copy()
        if self._stamp:
            frame_ids.stamp(image, frame_id % (1 << frame_ids.BITS))
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = int(frame_id * VIDEO_CLOCK_RATE / self._fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        self.sent_at[frame_id % (1 << frame_ids.BITS)] = time.perf_counter()
        if len(self.sent_at) > 4096:  # bounded: forget the oldest ids
            self.sent_at.pop(next(iter(self.sent_at)))
        return frame


@dataclass
class Received:
    """What came back: arrival times, glass-to-glass latencies (s) and the last frames."""

    arrivals: list[float] = field(default_factory=list)  # every frame, repeats included
    fresh: list[float] = field(default_factory=list)  # frames made from an input not seen before
    latencies: list[float] = field(default_factory=list)  # one per fresh frame
    last_frames: list[tuple[int | None, np.ndarray]] = field(default_factory=list)  # (input id, I420)
    keep_frames: int = 4


async def read_frames(track, got: Received, sent_at: dict[int, float], read_ids: bool = True) -> None:
    """Receive `track` into `got` until it ends, matching each frame to the time its id was sent."""
    last_id = None
    try:
        while True:
            frame = await track.recv()
            now = time.perf_counter()
            got.arrivals.append(now)
            image = frame.to_ndarray(format="yuv420p")
            frame_id = frame_ids.read(image) if read_ids else None
            sent = sent_at.get(frame_id) if frame_id is not None else None
            if sent is not None and frame_id != last_id:  # a repeat is not a new latency sample
                got.fresh.append(now)
                got.latencies.append(now - sent)
            last_id = frame_id
            got.last_frames.append((frame_id if sent is not None else None, image))
            del got.last_frames[: -got.keep_frames]
    except MediaStreamError:
        return


def prefer_codec(transceiver, codec: str) -> None:
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == f"video/{codec.lower()}"]
    if not codecs:
        raise ValueError(f"codec {codec} not supported by aiortc")
    transceiver.setCodecPreferences(codecs)


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_client(token: str | None = None, insecure: bool = False) -> aiohttp.ClientSession:
    """An HTTP session that sends `token` as a bearer token; `insecure` accepts any TLS
    certificate (a server started with --tls self-signed)."""
    connector = aiohttp.TCPConnector(ssl=False) if insecure else None
    return aiohttp.ClientSession(headers=auth(token), connector=connector)


class OfferRefused(RuntimeError):
    """The server answered the offer with an error (status and its JSON in the message)."""


class ClientPeer:
    """Connects a SyntheticCamera to `base_url` (POST /offer) and collects the stream back."""

    def __init__(self, camera: SyntheticCamera, codec: str = "VP8", read_ids: bool = True):
        self.camera = camera
        self.codec = codec
        self.read_ids = read_ids
        self.pc = peer_connection()
        self.received = Received()
        self.session_id: str | None = None
        self.control = None
        self.control_messages: list[dict] = []
        self._reader: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None

    async def connect(self, base_url: str, params: dict | None = None, timeout: float = 20.0,
                      token: str | None = None, name: str | None = None, insecure: bool = False) -> None:
        transceiver = self.pc.addTransceiver(self.camera, direction="sendrecv")
        prefer_codec(transceiver, self.codec)
        release_frames_at_marker(self.pc)  # as a browser does: no frame waits for the next one
        self.control = self.pc.createDataChannel("control")

        @self.control.on("message")
        def on_message(message):
            self.control_messages.append(json.loads(message))
            del self.control_messages[:-50]  # bounded

        @self.pc.on("track")
        def on_track(track):
            self._reader = asyncio.ensure_future(read_frames(track, self.received, self.camera.sent_at, self.read_ids))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "params": params or {}}
        if name:
            body["name"] = name
        self._http = http_client(token, insecure)
        self.base_url = base_url
        async with self._http.post(f"{base_url}/offer", json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise OfferRefused(f"offer refused: {resp.status} {answer.get('error', answer)}")
        self.session_id = answer.get("session_id")
        self.name = answer.get("name")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def wait_frames(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` frames have come back (raises TimeoutError)."""
        deadline = time.perf_counter() + timeout
        while len(self.received.arrivals) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(self.received.arrivals)} of {count} frames came back")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.pc.close()
        if self._http is not None:
            await self._http.close()


async def _stream_until_killed(url: str, size: str, effect: str) -> None:
    from camfx.engine.transport.ice import serve_media_on

    from .clip import person_clip

    serve_media_on(["127.0.0.1"])
    width, height = (int(v) for v in size.split("x"))
    peer = ClientPeer(SyntheticCamera(person_clip(width, height, 30)))
    await peer.connect(url, {"effect": effect})
    await peer.wait_frames(5)
    print(f"streaming {peer.session_id}", flush=True)
    await asyncio.Event().wait()  # until the process is stopped; no goodbye is ever sent


def main(argv: list[str] | None = None) -> int:
    """`python -m camfx.bench.peer URL`: one synthetic camera streaming to a loopback camfx server
    until the process is killed (tests use it as a peer that vanishes without closing)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m camfx.bench.peer", description=main.__doc__)
    parser.add_argument("url")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--effect", default="blur")
    args = parser.parse_args(argv)
    asyncio.run(_stream_until_killed(args.url, args.size, args.effect))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
