"""A plain aiortc echo server: the received video track sent straight back, no camfx.

The latency benchmark's baseline: the same transport, codecs and client, without the engine.
Run: python -m camfx.bench.echo --port 8090
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection()
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
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def create_app() -> web.Application:
    app = web.Application()
    app["pcs"] = set()
    app.router.add_post("/offer", offer)

    async def close_all(app):
        await asyncio.gather(*(pc.close() for pc in app["pcs"]))

    app.on_shutdown.append(close_all)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camfx.bench.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    web.run_app(create_app(), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
