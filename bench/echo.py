"""A plain aiortc echo server: the received video track sent straight back, no camfx.

The latency benchmark's baseline: the same transport, codecs and client, without the engine.
With --release-at-marker its receiver hands frames to the decoder the way camfx's does (see
camfx.engine.transport.jitter): the like-for-like baseline, whose difference to camfx is the engine alone.
Run: python -m camfx.bench.echo --port 8090 [--release-at-marker]
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web
from aiortc import RTCSessionDescription

from camfx.engine.transport.ice import media_addresses, peer_connection, serve_media_on
from camfx.engine.transport.jitter import release_frames_at_marker


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = peer_connection()
    request.app["pcs"].add(pc)

    @pc.on("track")
    def on_track(track):
        pc.addTrack(track)

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            request.app["pcs"].discard(pc)
            await pc.close()

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
    if request.app["release_at_marker"]:
        release_frames_at_marker(pc)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def create_app(release_at_marker: bool = False) -> web.Application:
    app = web.Application()
    app["pcs"] = set()
    app["release_at_marker"] = release_at_marker
    app.router.add_post("/offer", offer)

    async def close_all(app):
        await asyncio.gather(*(pc.close() for pc in app["pcs"]))

    app.on_shutdown.append(close_all)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camfx.bench.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--release-at-marker", action="store_true",
                        help="decode each frame when its last packet is in, as camfx does (not a frame later)")
    args = parser.parse_args(argv)
    serve_media_on(media_addresses(args.host))  # as camfx serve does
    web.run_app(create_app(args.release_at_marker), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
