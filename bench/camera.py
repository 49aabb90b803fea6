"""`camfx bench camera`: what `camfx camera` costs, from a .y4m camera at 30 fps to an output.

For each size, in interleaved rounds (so the machine's drift lands on all alike):
- `passthrough`: the camera's frames straight to the output, no pipeline: the floor;
- each effect in local mode (the pipeline in this process);
- with --remote, the thin client against a `camfx serve` started on loopback (WebRTC both ways).
Each row reports the output's fps, camera-to-output latency p50 / p95 (from the frame's read
to the output's write), and p50 over the passthrough's. Target: 720p30 blur at 30.0 fps with
p50 at most 8 ms over the passthrough.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiortc.mediastreams import MediaStreamError

from camfx.engine.client.app import CameraApp
from camfx.engine.client.local import LocalProcessor
from camfx.engine.client.remote import RemoteProcessor, Sent
from camfx.engine.client.sinks import NullSink, SinkRunner
from camfx.engine.client.sources import open_source
from camfx.engine.config import ServerConfig
from camfx.engine.media.frame_slot import Broadcast
from camfx.engine.params import Params
from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip, write_y4m
from .stats import axes, machine, save, summary_ms


class Passthrough:
    """The camera's frames straight to the outputs: what an output costs with no pipeline."""

    mode = "passthrough"

    def __init__(self):
        self.ended, self.idle, self.params = False, True, Params(effect="none")
        self._out: Broadcast = Broadcast()
        self._task: asyncio.Task | None = None

    async def start(self, track) -> None:
        async def read():
            try:
                while True:
                    frame = await track.recv()
                    self._out.publish((frame, Sent(time.perf_counter())))
            except MediaStreamError:
                self.ended = True

        self._task = asyncio.ensure_future(read())

    def reader(self):
        return self._out.reader()

    def pause(self, paused: bool) -> None:
        pass

    def stats(self) -> dict:
        return {"mode": self.mode, "fps_in": 0.0, "frames_dropped": 0}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def measure(processor, clip_file: Path, seconds: float, warmup: float) -> dict:
    source = open_source(str(clip_file), loop=True)
    runner = SinkRunner(NullSink(), 30.0)
    app = CameraApp(source, processor, [runner])
    run = asyncio.ensure_future(app.run_until_done())
    try:
        await asyncio.sleep(warmup)
        written, skip = runner.written, len(runner.latencies)
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - start
        latencies = list(runner.latencies)[skip:]
        return {"frames": runner.written - written, "elapsed": elapsed, "latencies": latencies,
                "dropped": runner.dropped + app.run.skipped}
    finally:
        app.stop_event.set()
        await run


async def run(args) -> dict:
    serve_media_on(["127.0.0.1"])
    server = None
    if args.remote:
        from .latency import Server

        server = Server(["-m", "camfx", "serve", "--log-level", "WARNING"], "/healthz")
        await server.__aenter__()
    samples: dict[tuple[str, str], list[dict]] = {}
    try:
        clips = {}
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            clips[size] = write_y4m(args.out / f"camera-{size}.y4m", person_clip(width, height, 60))
        for round_ in range(args.rounds):
            for size, clip_file in clips.items():
                configs = [("passthrough", Passthrough)] + [
                    (effect, lambda e=effect: LocalProcessor(ServerConfig(), Params(effect=e))) for effect in args.effects
                ]
                if server is not None:
                    configs.append((f"remote {args.effects[0]}",
                                    lambda: RemoteProcessor(server.url, Params(effect=args.effects[0]))))
                for name, make in configs:
                    sample = await measure(make(), clip_file, args.seconds / args.rounds, args.warmup)
                    samples.setdefault((size, name), []).append(sample)
                    print(f"round {round_ + 1}/{args.rounds} {size} {name}: {sample['frames'] / sample['elapsed']:.1f} fps",
                          flush=True)
    finally:
        if server is not None:
            await server.__aexit__(None, None, None)
    results = []
    for (size, name), runs in samples.items():
        elapsed = sum(r["elapsed"] for r in runs)
        row = {"size": size, "config": name, "fps": round(sum(r["frames"] for r in runs) / elapsed, 1),
               "latency_ms": summary_ms([x for r in runs for x in r["latencies"]]),
               "dropped": sum(r["dropped"] for r in runs)}
        results.append(row)
    for row in results:
        base = next(r for r in results if r["size"] == row["size"] and r["config"] == "passthrough")
        if "p50" in row["latency_ms"] and "p50" in base["latency_ms"]:
            row["p50_over_passthrough_ms"] = round(row["latency_ms"]["p50"] - base["latency_ms"]["p50"], 2)
        lat = row["latency_ms"]
        print(f"{row['size']:>9} {row['config']:>14}: {row['fps']:5.1f} fps  p50 {lat.get('p50', float('nan')):6.2f}"
              f"  p95 {lat.get('p95', float('nan')):6.2f} ms  +{row.get('p50_over_passthrough_ms', 0):.2f} over "
              f"passthrough  dropped {row['dropped']}", flush=True)
    return {"benchmark": "camera", "machine": machine(), "rounds": args.rounds, "seconds": args.seconds,
            "results": results}


def plot(data: dict):
    rows = data["results"]
    fig, ax = axes(9, 4)
    labels = [f"{r['size']}\n{r['config']}" for r in rows]
    ax.bar(range(len(rows)), [r["latency_ms"].get("p50", 0) for r in rows], label="p50")
    ax.scatter(range(len(rows)), [r["latency_ms"].get("p95", 0) for r in rows], marker="_", s=200, color="black",
               label="p95")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("camera to output, ms")
    ax.set_title(f"camfx camera, {data['machine']['cores']} cores")
    ax.legend()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench camera", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--effects", nargs="+", default=["blur"])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds per row, all rounds together")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--remote", action="store_true", help="add the thin client against a local camfx serve")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    save(args.out, "camera", asyncio.run(run(args)), plot)
    return 0
