"""A WHIP publisher and a WHEP viewer on aiortc, for the benchmarks and tests (and for measuring
any WHIP / WHEP pair, camfx's or another service's): the publisher sends a probe-stamped clip,
the viewer matches what it receives to the time each frame was sent.

    python -m camfx.bench.whip view URL   a viewer that stays until killed (tests stall it with SIGSTOP)
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiortc import RTCSessionDescription
from yarl import URL

from camfx.engine.transport.ice import peer_connection
from camfx.engine.transport.jitter import release_frames_at_marker

from .peer import Received, SyntheticCamera, http_client, prefer_codec, read_frames

SDP = "application/sdp"


class WhipError(RuntimeError):
    """The WHIP / WHEP endpoint answered with an error: `status`, and the body it sent."""

    def __init__(self, status: int, body: str, headers=None):
        super().__init__(f"{status}: {body[:300]}")
        self.status, self.body, self.headers = status, body, dict(headers or {})


class _Client:
    def __init__(self, token: str | None, insecure: bool = False):
        self.pc = peer_connection()
        self.token = token
        self.location: str | None = None
        self.etag: str | None = None
        self.links: list[str] = []
        self._http = http_client(token, insecure)

    async def _post_offer(self, url: str, timeout: float) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self._http.post(url, data=self.pc.localDescription.sdp, headers={"Content-Type": SDP},
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise WhipError(resp.status, body, resp.headers)
            self.location = str(resp.url.join(URL(resp.headers["Location"])))
            self.etag = resp.headers.get("ETag")
            self.links = resp.headers.getall("Link", [])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def close(self) -> None:
        """DELETE the session (when it still exists) and close the peer connection."""
        try:
            if self.location:
                async with self._http.delete(self.location, timeout=aiohttp.ClientTimeout(total=5)):
                    pass
        except aiohttp.ClientError:
            pass  # the server is gone: nothing to delete
        finally:
            await self.pc.close()
            await self._http.close()


class WhipPublisher(_Client):
    """Publishes `camera` to a WHIP endpoint (`url`, query string = the stream's params)."""

    def __init__(self, camera: SyntheticCamera, codec: str = "VP8", token: str | None = None, insecure: bool = False):
        super().__init__(token, insecure)
        self.camera = camera
        self.codec = codec

    async def publish(self, url: str, timeout: float = 20.0) -> None:
        transceiver = self.pc.addTransceiver(self.camera, direction="sendonly")
        prefer_codec(transceiver, self.codec)
        await self._post_offer(url, timeout)


class WhepViewer(_Client):
    """Views a WHEP endpoint; `sent_at` (the publisher camera's) matches frames to send times."""

    def __init__(self, sent_at: dict[int, float] | None = None, token: str | None = None, insecure: bool = False):
        super().__init__(token, insecure)
        self.sent_at = sent_at if sent_at is not None else {}
        self.received = Received()
        self._reader: asyncio.Task | None = None

    async def view(self, url: str, timeout: float = 20.0) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        release_frames_at_marker(self.pc)  # as a browser does: no frame waits for the next one

        @self.pc.on("track")
        def on_track(track):
            self._reader = asyncio.ensure_future(read_frames(track, self.received, self.sent_at))

        await self._post_offer(url, timeout)

    async def wait_frames(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.received.arrivals) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(self.received.arrivals)} of {count} frames came")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await super().close()


async def _view_until_killed(url: str, token: str | None) -> None:
    from camfx.engine.transport.ice import serve_media_on

    serve_media_on(["127.0.0.1"])
    viewer = WhepViewer(token=token)
    await viewer.view(url)
    await viewer.wait_frames(5)
    print(f"viewing {viewer.location}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m camfx.bench.whip")
    commands = parser.add_subparsers(dest="command", required=True)
    view = commands.add_parser("view", help="view a WHEP URL until killed")
    view.add_argument("url")
    view.add_argument("--token")
    args = parser.parse_args(argv)
    asyncio.run(_view_until_killed(args.url, args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
