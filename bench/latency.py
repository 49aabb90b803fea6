"""`camfx bench latency`: glass-to-glass latency and received fps over real WebRTC.

A real aiortc client sends the synthetic moving-person clip (frame ids stamped in the probe
rows) to a camfx server and, in the same run, to two echo servers that send the video straight
back: `echo`, plain aiortc, the baseline; and `echo-marker`, the same with camfx's receiver
(frames decoded when their last packet is in, see camfx.engine.transport.jitter), whose difference to
camfx is the engine alone. All servers run as their own processes on loopback. For every
codec x size x effect it reports received fps, latency p50 / p95 / p99 from a frame's creation
at the client to its decoded return, and each effect's p50 less each baseline's; it writes
JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip
from .peer import ClientPeer, SyntheticCamera
from .stats import axes, machine, save, summary_ms


def free_port() -> int:
    """A loopback port nobody is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:  # not listening yet: the process is still starting
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{url} did not come up")
            await asyncio.sleep(0.2)


class Server:
    """A server process on a free loopback port, stopped on exit."""

    def __init__(self, args: list[str], probe_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args, self._probe = [*args, "--port", str(self.port)], probe_path
        self._proc: subprocess.Popen | None = None

    async def __aenter__(self) -> "Server":
        self._proc = subprocess.Popen([sys.executable, *self._args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _wait_http(self.url + self._probe)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    async def __aexit__(self, *exc) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


async def measure(url: str, clip, codec: str, params: dict | None, seconds: float, warmup: float, fps: float) -> dict:
    peer = ClientPeer(SyntheticCamera(clip, fps=fps), codec=codec)
    try:
        await peer.connect(url, params)
        await peer.wait_frames(5, timeout=30)
        await asyncio.sleep(warmup)
        got = peer.received
        start_arrivals, start_fresh = len(got.arrivals), len(got.fresh)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        arrivals = len(got.arrivals) - start_arrivals
        fresh = len(got.fresh) - start_fresh
        latencies = got.latencies[start_fresh:]
        server_stats = None
        if peer.session_id:  # camfx (the echo has no sessions): read its stats, then end it
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/sessions/{peer.session_id}") as resp:
                    server_stats = await resp.json()
                async with http.delete(f"{url}/sessions/{peer.session_id}") as resp:
                    resp.raise_for_status()
        return {"elapsed": elapsed, "arrivals": arrivals, "fresh": fresh, "latencies": latencies, "server": server_stats}
    finally:
        await peer.close()


async def measure_whip(url: str, clip, codec: str, params: dict, seconds: float, warmup: float, fps: float) -> dict:
    """The same measurement through WHIP in and WHEP out: the camera publishes to
    /whip/bench, a separate viewer peer watches /whep/bench."""
    from urllib.parse import urlencode

    from .whip import WhepViewer, WhipPublisher

    camera = SyntheticCamera(clip, fps=fps)
    publisher, viewer = WhipPublisher(camera, codec=codec), WhepViewer(camera.sent_at)
    try:
        query = urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()})
        await publisher.publish(f"{url}/whip/bench?{query}")
        await viewer.view(f"{url}/whep/bench")
        await viewer.wait_frames(5, timeout=30)
        await asyncio.sleep(warmup)
        got = viewer.received
        start_arrivals, start_fresh = len(got.arrivals), len(got.fresh)
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        async with aiohttp.ClientSession() as http, http.get(f"{url}/streams/bench") as resp:
            server_stats = await resp.json()
        return {"elapsed": elapsed, "arrivals": len(got.arrivals) - start_arrivals, "fresh": len(got.fresh) - start_fresh,
                "latencies": got.latencies[start_fresh:], "server": server_stats}
    finally:
        await viewer.close()
        await publisher.close()


BASELINES = ("echo", "echo-marker")
WHIP_ROW = "whip-whep blur"


def _p50(results: list[dict], size: str, codec: str, config: str) -> float | None:
    row = next((r for r in results if (r["size"], r["codec"], r["config"]) == (size, codec, config)), None)
    return row["latency_ms"].get("p50") if row else None


def summarise(samples: list[dict]) -> dict:
    """One configuration's rounds pooled into one row."""
    elapsed = sum(m["elapsed"] for m in samples)
    return {
        "fps": round(sum(m["arrivals"] for m in samples) / elapsed, 1),  # what the viewer sees, repeats included
        "fresh_fps": round(sum(m["fresh"] for m in samples) / elapsed, 1),  # distinct input frames that came back
        "latency_ms": summary_ms([x for m in samples for x in m["latencies"]]),
        "server": samples[-1]["server"],
    }


async def run(args) -> dict:
    serve_media_on(["127.0.0.1"])  # the client's peer connections, like the servers', stay on loopback
    camfx_cmd = ["-m", "camfx.engine.cli", "serve", "--log-level", "WARNING", "--max-sessions", "1", *args.serve_args]
    echo_cmd = ["-m", "camfx.bench.echo"]
    samples: dict[tuple[str, str, str], list[dict]] = {}
    async with (
        Server(echo_cmd, "/offer") as echo,
        Server([*echo_cmd, "--release-at-marker"], "/offer") as echo_marker,
        Server(camfx_cmd, "/healthz") as camfx,
    ):
        # Rounds interleave the configurations, so a slow drift of the machine (other tenants,
        # clocks) lands on all of them alike instead of on whichever ran at that moment.
        for _ in range(args.rounds):
            for size in args.sizes:
                width, height = (int(v) for v in size.split("x"))
                clip = person_clip(width, height, 60, whole_pixels=args.whole_pixels)
                for codec in args.codecs:
                    configs = [("echo", echo.url, None), ("echo-marker", echo_marker.url, None)] + [
                        (effect, camfx.url, {"effect": effect, "probe": True}) for effect in args.effects
                    ]
                    if args.whip:
                        configs.append((WHIP_ROW, camfx.url, {"effect": "blur", "probe": True}))
                    for name, url, params in configs:
                        how = measure_whip if name == WHIP_ROW else measure
                        sample = await how(url, clip, codec, params, args.seconds / args.rounds, args.warmup, args.fps)
                        samples.setdefault((size, codec, name), []).append(sample)
    results = []
    for (size, codec, name), runs in samples.items():
        row = summarise(runs)
        row.update(size=size, codec=codec, config=name)
        results.append(row)
        lat = row["latency_ms"]
        engine = ""
        if row["server"]:
            row["p50_over_ms"] = {  # this effect's p50 less each baseline's, same size and codec
                base: round(lat["p50"] - base_p50, 2)
                for base in BASELINES
                if "p50" in lat and (base_p50 := _p50(results, size, codec, base)) is not None
            }
            stages = row["server"]["stage_ms"]
            engine = "  p50 " + ", ".join(f"{d:+.1f} vs {b}" for b, d in row["p50_over_ms"].items())
            engine += f"; engine {sum(stages.values()):.1f} ms, in to out {row['server']['engine_latency_ms_p50']:.1f} ms"
            engine += f" ({row['server']['quality']})"
            engine += f"  dropped {row['server']['frames_dropped']}  misses {row['server']['deadline_misses']}"
        print(f"{size:>9} {codec:>4} {name:>11}: {row['fps']:5.1f} fps ({row['fresh_fps']:4.1f} fresh)  "
              f"p50 {lat.get('p50', float('nan')):6.1f}  p95 {lat.get('p95', float('nan')):6.1f}  "
              f"p99 {lat.get('p99', float('nan')):6.1f} ms{engine}", flush=True)
    return {
        "benchmark": "latency", "machine": machine(), "seconds": args.seconds, "rounds": args.rounds,
        "camera_fps": args.fps, "whole_pixels": args.whole_pixels, "results": results,
    }


def plot(data: dict):
    rows = data["results"]
    groups = sorted({(r["size"], r["codec"]) for r in rows}, key=lambda g: (int(g[0].split("x")[0]), g[1]))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, ax = axes(10, 4.5)
    width = 0.8 / len(configs)
    for i, config in enumerate(configs):
        p50 = [next((r["latency_ms"].get("p50", 0) for r in rows if (r["size"], r["codec"]) == g and r["config"] == config), 0) for g in groups]
        p95 = [next((r["latency_ms"].get("p95", 0) for r in rows if (r["size"], r["codec"]) == g and r["config"] == config), 0) for g in groups]
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, p50, width, label=f"{config} p50")
        ax.scatter(xs, p95, marker="_", s=200, color="black")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [f"{s} {c}" for s, c in groups])
    ax.set_ylabel("glass-to-glass ms (bar p50, tick p95)")
    ax.set_title(f"camfx vs echo servers, loopback, {data['machine']['cores']} cores")
    ax.legend(fontsize=8, ncol=len(configs))
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench latency", description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--codecs", nargs="+", default=["VP8", "H264"], choices=["VP8", "H264"])
    parser.add_argument("--effects", nargs="+", default=["none", "blur", "replace"])
    parser.add_argument("--no-whip", dest="whip", action="store_false",
                        help="leave out the WHIP -> camfx -> WHEP row (publisher and viewer separate peers, blur)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration, all rounds together")
    parser.add_argument("--rounds", type=int, default=1, help="split each configuration's time into this many interleaved runs")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--whole-pixels", action="store_true",
                        help="the clip's person moves by whole pixels, a rigid picture (for comparison)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to `camfx serve` (e.g. --model-threads 2)")
    args = parser.parse_args(argv)
    data = asyncio.run(run(args))
    save(args.out, "latency", data, plot)
    return 0
