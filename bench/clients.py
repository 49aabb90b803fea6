"""N synthetic cameras streaming to one camfx server at once, as a process of their own, for
`camfx bench capacity`: it prints `measuring` when every session is warm, then one JSON line
with each session's fps and latency over the measured seconds and the quality rung the server's
budget controller had it on at the end.

    python -m camfx.bench.clients URL --sessions 3 --size 640x480 --effect blur [--params JSON] --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip, still_clip
from .peer import ClientPeer, SyntheticCamera, http_client
from .stats import summary_ms


async def stream(url: str, sessions: int, size: str, effect: str, fps: float, seconds: float, warmup: float,
                 params: dict | None = None, still: bool = False) -> list[dict]:
    width, height = (int(v) for v in size.split("x"))
    clip = still_clip(width, height, 60) if still else person_clip(width, height, 60)
    peers = [ClientPeer(SyntheticCamera(clip, fps=fps)) for _ in range(sessions)]
    try:
        for peer in peers:
            await peer.connect(url, {**(params or {}), "effect": effect, "probe": True})
        await asyncio.gather(*(peer.wait_frames(5, timeout=60) for peer in peers))
        await asyncio.sleep(warmup)
        start = [(len(p.received.fresh), p.camera.frames_sent) for p in peers]
        print("measuring", flush=True)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        rows = [{"fresh_fps": round((len(p.received.fresh) - fresh0) / elapsed, 2),
                 "sent_fps": round((p.camera.frames_sent - sent0) / elapsed, 2),
                 "latency_ms": summary_ms(p.received.latencies[fresh0:])}
                for p, (fresh0, sent0) in zip(peers, start)]
        async with http_client() as http:  # the rung each session's budget controller is on
            for row, peer in zip(rows, peers):
                async with http.get(f"{url}/sessions/{peer.session_id}") as resp:
                    stats = await resp.json() if resp.status == 200 else {}
                row["quality"] = stats.get("quality")
        return rows
    finally:
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camfx.bench.clients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--effect", default="blur")
    parser.add_argument("--params", default="{}", help="more session params, as JSON")
    parser.add_argument("--still", action="store_true", help="a person sitting still instead of the swaying one")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args(argv)
    serve_media_on(["127.0.0.1"])
    rows = asyncio.run(stream(args.url, args.sessions, args.size, args.effect, args.fps, args.seconds, args.warmup,
                                   json.loads(args.params), args.still))
    print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
