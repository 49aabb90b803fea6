"""`camfx bench soak`: one 640x480 blur session for a long time, watched minute by minute.

A real aiortc client streams the probe-stamped clip to a `camfx serve` process on loopback; per
window (a minute by default) it records received fps, glass-to-glass p50 / p95, the server's
RSS, threads and open file descriptors, and the server's drops and deadline misses. At the end:
the p95 drift between the first and the last five windows, and how RSS moved after the first.
Targets: p95 drift <= 5 %, RSS flat after the first minute, 30.0 fps throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip
from .latency import Server
from .peer import ClientPeer, SyntheticCamera
from .stats import axes, machine, save, summary_ms


async def _server_stats(url: str, session_id: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/sessions/{session_id}") as resp:
        return await resp.json()


def drift(windows: list[dict], edge: int = 5) -> dict:
    """p95 of the last `edge` windows' frames over that of the first `edge` (fewer when short)."""
    edge = max(1, min(edge, len(windows) // 2))
    first = [x for w in windows[:edge] for x in w["latencies"]]
    last = [x for w in windows[-edge:] for x in w["latencies"]]
    if not first or not last:
        return {"windows": edge}
    p95_first, p95_last = float(np.percentile(first, 95)), float(np.percentile(last, 95))
    return {"windows": edge, "p95_first_ms": round(p95_first * 1000, 2), "p95_last_ms": round(p95_last * 1000, 2),
            "p95_drift_percent": round((p95_last / p95_first - 1) * 100, 1)}


def summary_text(summary: dict, windows: int) -> str:
    """The soak's verdict as a person reads it (the same figures are in soak.json)."""
    def mb(value):
        return "n/a" if value is None else f"{value:.1f} MB"

    lines = [f"summary of {windows} windows:",
             f"  lowest fps        {summary['fps_min'] if summary['fps_min'] is not None else 'n/a'}"]
    if "p95_first_ms" in summary:
        n = summary["windows"]
        lines.append(f"  latency p95       {summary['p95_first_ms']:.1f} ms in the first {n} window(s), "
                     f"{summary['p95_last_ms']:.1f} ms in the last {n} ({summary['p95_drift_percent']:+.1f} %)")
    lines.append(f"  server memory     {mb(summary['rss_after_first_mb'])} after the first window, at most "
                 f"{mb(summary['rss_max_after_first_mb'])} after it, {mb(summary['rss_last_mb'])} at the end")
    return "\n".join(lines)


async def run(args) -> dict:
    serve_media_on(["127.0.0.1"])
    width, height = (int(v) for v in args.size.split("x"))
    clip = person_clip(width, height, 60)
    windows: list[dict] = []
    serve = ["-m", "camfx", "serve", "--log-level", "WARNING", "--max-sessions", "1"]
    async with Server(serve, "/healthz") as server:
        process = psutil.Process(server.pid)
        peer = ClientPeer(SyntheticCamera(clip, fps=args.fps))
        try:
            await peer.connect(server.url, {"effect": args.effect, "probe": True})
            await peer.wait_frames(30, timeout=60)
            got = peer.received
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                got.latencies.clear(), got.fresh.clear()  # each window on its own frames; bounded
                del got.arrivals[:-10]
                t0 = time.perf_counter()
                await asyncio.sleep(min(args.interval, max(0.5, end - time.monotonic())))
                elapsed = time.perf_counter() - t0
                stats = await _server_stats(server.url, peer.session_id)
                memory = process.memory_info().rss / 2**20
                window = {
                    "t_s": round(time.monotonic() - end + args.minutes * 60, 1),
                    "fresh_fps": round(len(got.fresh) / elapsed, 2),
                    "latency_ms": summary_ms(got.latencies),
                    "rss_mb": round(memory, 1), "threads": process.num_threads(), "fds": process.num_fds(),
                    "frames_dropped": stats["frames_dropped"], "deadline_misses": stats["deadline_misses"],
                    "quality": stats["quality"], "latencies": list(got.latencies),
                }
                windows.append(window)
                print(f"{window['t_s']:7.0f} s  {window['fresh_fps']:5.1f} fps  p50 "
                      f"{window['latency_ms'].get('p50', float('nan')):6.1f}  p95 "
                      f"{window['latency_ms'].get('p95', float('nan')):6.1f} ms  RSS {memory:6.1f} MB  "
                      f"threads {window['threads']}  fds {window['fds']}  dropped {window['frames_dropped']}  "
                      f"misses {window['deadline_misses']}", flush=True)
        finally:
            await peer.close()
    rss = [w["rss_mb"] for w in windows]
    summary = {
        **drift(windows),
        "rss_after_first_mb": rss[0] if rss else None,
        "rss_max_after_first_mb": max(rss[1:], default=None),
        "rss_last_mb": rss[-1] if rss else None,
        "fps_min": min((w["fresh_fps"] for w in windows), default=None),
    }
    for w in windows:
        del w["latencies"]
    print(summary_text(summary, len(windows)), flush=True)
    return {"benchmark": "soak", "machine": machine(), "command": " ".join(["camfx", "bench", "soak", *args.argv]),
            "size": args.size, "effect": args.effect, "camera_fps": args.fps, "windows": windows, "summary": summary}


def plot(data: dict):
    rows = data["windows"]
    t = [r["t_s"] / 60 for r in rows]
    fig, ax = axes(10, 4.5)
    ax.plot(t, [r["latency_ms"].get("p50", np.nan) for r in rows], label="p50 ms")
    ax.plot(t, [r["latency_ms"].get("p95", np.nan) for r in rows], label="p95 ms")
    ax.plot(t, [r["fresh_fps"] for r in rows], label="fresh fps")
    ax.set_xlabel("minutes")
    ax.set_ylabel("ms / fps")
    memory = ax.twinx()
    memory.plot(t, [r["rss_mb"] for r in rows], color="grey", linestyle="--", label="server RSS MB")
    memory.set_ylabel("RSS MB")
    lines = ax.get_legend_handles_labels(), memory.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="upper left")
    ax.set_title(f"soak: one {data['size']} {data['effect']} session, {data['machine']['cores']} cores")
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default %(default)s)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per window (default %(default)s)")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--effect", default="blur")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.argv = argv
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be above 0")
    save(args.out, "soak", asyncio.run(run(args)), plot)
    return 0
