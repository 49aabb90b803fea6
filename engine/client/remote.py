"""`camfx camera --server URL`: the webcam to a remote `camfx serve` over WebRTC, the processed
picture back to the local outputs. How a laptop without a GPU gets diffusion in a call.

The camera is read here all the time (one task, newest frame wins): the frames go to the server
with an id stamped in their top rows, and while there is no server (not yet, or it went away)
straight to the outputs, so the virtual camera never shows black. What comes back is matched to
the time its id was sent (glass-to-glass latency), the id strip painted over with the row below
it, and published to the outputs. The connection is made again by itself, with back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame

from ..media import frame_ids
from ..media.frame_slot import Broadcast, BroadcastReader
from ..media.rate import RateMeter
from ..params import Params
from ..tasks import TaskSet
from ..transport.ice import RTCIceServer, peer_connection
from ..transport.jitter import release_frames_at_marker

log = logging.getLogger("camfx.camera")

BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
SILENT_S = 3.0  # connected, but nothing back for this long: the server is gone


class RemoteError(RuntimeError):
    """The server cannot be used (unreachable, a wrong token, it refused the offer)."""


@dataclass
class Sent:
    """What goes with a frame to the outputs: when its camera frame was read (None: the camera's
    own picture, passed through while there is no server)."""

    sent: float | None


class _CameraToServer(MediaStreamTrack):
    """The newest camera frame, with its id stamped in, for the peer connection's sender."""

    kind = "video"

    def __init__(self, camera: Broadcast, sent_at: dict[int, float]):
        super().__init__()
        self._camera = camera.reader()
        self._sent_at = sent_at
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        item = await self._camera.take()
        if item is None or self.readyState != "live":
            raise MediaStreamError
        frame, read_at = item
        image = frame.to_ndarray(format="yuv420p")
        frame_id = self._count % (1 << frame_ids.BITS)
        frame_ids.stamp(image, frame_id)
        out = VideoFrame.from_ndarray(image, format="yuv420p")
        now = time.perf_counter()
        self._start = self._start or now
        out.pts, out.time_base = int((now - self._start) * VIDEO_CLOCK_RATE), VIDEO_TIME_BASE
        self._sent_at[frame_id] = read_at
        if len(self._sent_at) > 4096:
            self._sent_at.pop(next(iter(self._sent_at)))
        self._count += 1
        return out


def unstamp(image: np.ndarray) -> np.ndarray:
    """The id strip (probe rows, luma and chroma) painted over with the row below it."""
    height = image.shape[0] * 2 // 3
    rows = frame_ids.ROWS
    image[:rows] = image[rows]
    chroma = image[height:]
    quarter = chroma.shape[0] // 2
    for plane in (chroma[:quarter], chroma[quarter:]):  # each chroma plane, two half-rows per row
        plane_rows = rows // 4
        plane[:plane_rows] = plane[plane_rows]
    return image


class RemoteProcessor:
    """See the module doc. `token`: the server's, if it has one."""

    mode = "remote"

    def __init__(self, url: str, params: Params, token: str | None = None, ice_servers: tuple[RTCIceServer, ...] = (),
                 insecure: bool = False):
        """`ice_servers`: STUN / TURN for the media; none given, the server's own (`/ice-servers`)
        are used. `insecure`: accept any TLS certificate (a `camfx serve --tls self-signed`)."""
        self.url, self.token, self.ice_servers, self._insecure = url.rstrip("/"), token, ice_servers, insecure
        self._ice_from_server = not ice_servers
        self.params = params
        self.ended = False
        self.state = "connecting"
        self._camera: Broadcast = Broadcast()  # (frame, time it was read)
        self._out: Broadcast = Broadcast()
        self._sent_at: dict[int, float] = {}
        self._in_rate, self._back_rate = RateMeter(), RateMeter()
        self._tasks = TaskSet(f"camera to {self.url}")
        self._pc = None
        self._session: str | None = None
        self._channel = None
        self._connected_once = asyncio.Event()
        self._first_error: RemoteError | None = None
        self._last_back = 0.0
        self.frames_in = self.reconnects = 0

    # ---- in and out ------------------------------------------------------------------------------
    async def start(self, track: MediaStreamTrack) -> None:
        self._tasks.spawn(self._read_camera(track))
        self._tasks.spawn(self._stay_connected())
        # The first connection must work (say why if not); later losses are retried.
        while not self._connected_once.is_set():
            if self._first_error is not None:
                raise self._first_error
            try:
                await asyncio.wait_for(self._connected_once.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass

    def reader(self) -> BroadcastReader:
        return self._out.reader()

    async def _read_camera(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.perf_counter()
                self.frames_in += 1
                self._in_rate.tick(now)
                self._camera.publish((frame, now))
                if self.state != "connected" or now - self._last_back > SILENT_S:
                    self._out.publish((frame, Sent(None)))  # the camera's own picture, never black
        except MediaStreamError:
            self.ended = True

    # ---- the connection --------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=False) if self._insecure else None)

    def _unreachable(self, exc: Exception) -> RemoteError:
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return RemoteError(f"{self.url} has a certificate this machine does not trust "
                               f"({exc.certificate_error}); if it is a camfx serve --tls self-signed, compare "
                               "the fingerprint it printed and pass --insecure")
        return RemoteError(f"cannot reach {self.url} ({type(exc).__name__}: {exc})")

    async def _server_ice(self, http: aiohttp.ClientSession) -> None:
        """The STUN / TURN servers the server hands its clients, unless ours were given."""
        async with http.get(f"{self.url}/ice-servers", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                return  # a server without the endpoint (or it refused us: the offer will say why)
            listed = (await resp.json(content_type=None)).get("iceServers", [])
        self.ice_servers = tuple(RTCIceServer(urls=e["urls"], username=e.get("username"), credential=e.get("credential"))
                          for e in listed if isinstance(e, dict) and e.get("urls"))
        self._ice_from_server = False
        if self.ice_servers:
            log.info("using the server's ICE servers: %s", ", ".join(str(e.urls) for e in self.ice_servers))

    async def _connect(self) -> None:
        if self._ice_from_server:
            try:
                async with self._http() as http:
                    await self._server_ice(http)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                raise self._unreachable(exc) from None
        pc = peer_connection(self.ice_servers)
        self._pc = pc
        pc.addTransceiver(_CameraToServer(self._camera, self._sent_at), direction="sendrecv")
        release_frames_at_marker(pc)
        channel = pc.createDataChannel("control")
        self._channel = channel

        @pc.on("track")
        def on_track(track):
            self._tasks.spawn(self._read_back(track))

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "params": {**self.params.model_dump(), "probe": True}}
        try:
            async with self._http() as http:
                async with http.post(f"{self.url}/offer", json=body, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status == 401:
                        raise RemoteError(f"{self.url} refused the token: {answer.get('error', '')}".rstrip(": "))
                    if resp.status != 200:
                        raise RemoteError(f"{self.url} refused the camera ({resp.status}): {answer.get('error')}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None
        self._session = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def _read_back(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.perf_counter()
                image = frame.to_ndarray(format="yuv420p")
                frame_id = frame_ids.read(image)
                sent = self._sent_at.get(frame_id) if frame_id is not None else None
                self._last_back = now
                self._back_rate.tick(now)
                self._out.publish((VideoFrame.from_ndarray(unstamp(image), format="yuv420p"), Sent(sent)))
        except MediaStreamError:
            return

    async def _stay_connected(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                deadline = time.perf_counter() + 15
                while self._pc.connectionState != "connected":
                    if self._pc.connectionState == "failed" or time.perf_counter() > deadline:
                        raise RemoteError(f"{self.url} answered, but the media did not connect (a firewall? "
                                          "try --ice-server with a TURN server)")
                    await asyncio.sleep(0.1)
                self.state, attempt = "connected", 0
                self._last_back = time.perf_counter()
                self._connected_once.set()
                log.info("connected to %s (session %s)", self.url, self._session)
                while self._pc.connectionState == "connected" and time.perf_counter() - self._last_back < SILENT_S:
                    await asyncio.sleep(0.25)
                log.warning("lost %s; passing the camera through and trying again", self.url)
            except RemoteError as exc:
                if not self._connected_once.is_set():
                    self._first_error = exc
                    return
                log.warning("%s; trying again", exc)
            self.state = "reconnecting"
            await self._drop_connection()
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1
            self.reconnects += 1

    async def _drop_connection(self) -> None:
        pc, self._pc, self._channel = self._pc, None, None
        if pc is not None:
            await pc.close()

    # ---- control ----------------------------------------------------------------------------------
    def update_params(self, patch: Any) -> Params:
        """Validated here (the same schema), then sent to the server, and kept for reconnects."""
        params = self.params.updated(patch)
        self.params = params
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(params.model_dump() | {"probe": True}))
        return params

    @property
    def idle(self) -> bool:
        return True  # nothing processed here waits

    def pause(self, paused: bool) -> None:
        pass  # the server's work is the server's; the camera keeps going to it

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        return {"mode": self.mode, "server": self.url, "state": self.state, "fps_in": round(self._in_rate.rate(now), 1),
                "fps_back": round(self._back_rate.rate(now), 1), "frames_in": self.frames_in,
                "frames_dropped": 0, "reconnects": self.reconnects, "effect": self.params.effect}

    async def close(self) -> None:
        await self._tasks.close()
        if self._session and self._pc is not None:
            try:
                async with self._http() as http:
                    async with http.delete(f"{self.url}/sessions/{self._session}", timeout=aiohttp.ClientTimeout(total=3)):
                        pass
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # the server is gone: nothing to end there
        await self._drop_connection()

