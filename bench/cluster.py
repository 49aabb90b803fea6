"""`camfx bench cluster`: what the Ray cluster path costs against a plain `camfx serve`, in the
same run, the two taking turns round by round.

- signalling: from the client starting its offer to the answer applied, and to the first
  processed frame back (median / p95 over `--offers` offers per target);
- glass to glass (`bench latency`'s measurement): through the cluster the media goes straight
  to the replica, so the cluster path should add nothing; the difference of the p50s is shown;
- sessions per replica before the budget controller steps down: sessions are added one at a
  time to one replica (`--effect`, `--size`, the camera's rate) until a stream's quality leaves
  `full`; the clients run on the same machine, so on a small one they take part of the CPU.

The cluster is a local Ray started here (`--address` for one already running: a GPU box).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import aiohttp

from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip
from .latency import Options, Server, Target, free_port, measure, summarise
from .peer import ClientPeer, SyntheticCamera, http_client
from .stats import axes, machine, save, summary_ms


async def offer_to_first_frame(url: str, clip, fps: float, params: dict) -> dict:
    """One offer: ms to the answer applied and to the first frame back; the session then ended."""
    peer = ClientPeer(SyntheticCamera(clip, fps=fps))
    try:
        t0 = time.perf_counter()
        await peer.connect(url, params)
        answered = time.perf_counter()
        await peer.wait_frames(1, timeout=30)
        return {"answer_ms": (answered - t0) * 1000, "first_frame_ms": (peer.received.arrivals[0] - t0) * 1000}
    finally:
        if peer.session_id:
            async with http_client() as http:
                async with http.delete(f"{url}/sessions/{peer.session_id}"):
                    pass
        await peer.close()


def _ms(values: list[float]) -> dict:
    return summary_ms([v / 1000 for v in values])


async def signalling(targets: dict[str, str], clip, args) -> dict:
    samples: dict[str, list[dict]] = {name: [] for name in targets}
    for i in range(args.offers):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for name in order:
            sample = await offer_to_first_frame(targets[name], clip, args.fps, {"effect": args.effect, "probe": True})
            samples[name].append(sample)
            print(f"offer {i + 1}/{args.offers} {name}: answer {sample['answer_ms']:.0f} ms, first frame "
                  f"{sample['first_frame_ms']:.0f} ms", flush=True)
    return {name: {"answer_ms": _ms([s["answer_ms"] for s in rows]),
                   "first_frame_ms": _ms([s["first_frame_ms"] for s in rows])} for name, rows in samples.items()}


async def glass_to_glass(targets: dict[str, str], clip, args) -> dict:
    options = Options(args.fps, args.fps, args.seconds / args.rounds, args.warmup)
    samples: dict[str, list[dict]] = {name: [] for name in targets}
    for i in range(args.rounds):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for name in order:
            target = Target(name, "offer", targets[name], {"effect": args.effect, "probe": True})
            sample = await measure(target, clip, "VP8", options)
            samples[name].append(sample)
            print(f"round {i + 1}/{args.rounds} {name}: {sample['arrivals'] / sample['elapsed']:.1f} fps, p50 "
                  f"{summary_ms(sample['latencies']).get('p50', float('nan')):.1f} ms", flush=True)
    rows = {name: summarise(runs) for name, runs in samples.items()}
    for row in rows.values():
        row.pop("server", None)
    return rows


async def _quality(url: str, session_id: str) -> str | None:
    async with http_client() as http:
        async with http.get(f"{url}/sessions/{session_id}") as resp:
            return (await resp.json()).get("quality") if resp.status == 200 else None


async def sessions_before_step_down(url: str, clip, args) -> dict:
    """Add sessions one by one; the count that still ran at full quality, and each step's levels."""
    peers: list[ClientPeer] = []
    steps = []
    try:
        for n in range(1, args.max_sessions + 1):
            peer = ClientPeer(SyntheticCamera(clip, fps=args.fps))
            peers.append(peer)
            await peer.connect(url, {"effect": args.effect, "probe": True})
            await peer.wait_frames(5, timeout=30)
            await asyncio.sleep(args.settle)
            levels = [await _quality(url, p.session_id) for p in peers]
            fps = [round(len([t for t in p.received.arrivals if t > time.perf_counter() - 2]) / 2, 1) for p in peers]
            steps.append({"sessions": n, "quality": levels, "received_fps": fps})
            print(f"{n} sessions: quality {', '.join(str(q) for q in levels)}; received fps "
                  f"{', '.join(map(str, fps))}", flush=True)
            if any(q != "full" for q in levels):
                return {"full_quality_sessions": n - 1, "stepped_down_at": n, "steps": steps}
        return {"full_quality_sessions": args.max_sessions, "stepped_down_at": None, "steps": steps}
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


def _start_cluster(args, port: int):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from camfx.engine.deploy import app
    from camfx.engine.deploy.settings import ClusterSettings

    if args.address:
        ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="ERROR", log_to_driver=False)
    settings = ClusterSettings(replicas=args.replicas, gpus_per_replica=args.gpus_per_replica,
                               cpus_per_replica=args.cpus_per_replica, port=port,
                               max_sessions=max(4, args.max_sessions), media_host="127.0.0.1", app_name="camfx-bench")
    app.up(settings)
    return ray


def _stop_cluster(ray) -> None:
    from ray import serve

    try:
        serve.delete("camfx-bench")
    finally:
        ray.shutdown()


async def run(args, port: int) -> dict:
    """Measure, with the cluster's proxy on `port` (up already)."""
    serve_media_on(["127.0.0.1"])
    clip = person_clip(*(int(v) for v in args.size.split("x")), 60)
    serve_cmd = ["-m", "camfx.engine.cli", "serve", "--log-level", "WARNING",
                 "--max-sessions", str(max(4, args.max_sessions))]
    async with Server(serve_cmd, "/healthz") as plain:
        targets = {"serve": plain.url, "cluster": f"http://127.0.0.1:{port}"}
        async with aiohttp.ClientSession() as http:  # the cluster is up: its proxy answers
            async with http.get(targets["cluster"] + "/healthz") as resp:
                health = await resp.json()
        data = {"benchmark": "cluster", "machine": machine(), "command": " ".join(["camfx bench cluster", *args.argv]),
                "size": args.size, "effect": args.effect, "camera_fps": args.fps, "cluster_health": health}
        data["signalling"] = await signalling(targets, clip, args)
        data["glass_to_glass"] = await glass_to_glass(targets, clip, args)
        p50 = {name: row["latency_ms"].get("p50") for name, row in data["glass_to_glass"].items()}
        if None not in p50.values():
            data["cluster_adds_p50_ms"] = round(p50["cluster"] - p50["serve"], 2)
        if args.max_sessions:
            data["sessions_per_replica"] = await sessions_before_step_down(targets["cluster"], clip, args)
    _print(data)
    return data


def _print(data: dict) -> None:
    print(f"\n{data['size']} {data['effect']} at {data['camera_fps']:g} fps, {data['machine']['cores']} cores")
    for name, row in data["signalling"].items():
        a, f = row["answer_ms"], row["first_frame_ms"]
        print(f"  signalling {name:>7}: answer p50 {a['p50']:.0f} / p95 {a['p95']:.0f} ms, first frame p50 "
              f"{f['p50']:.0f} / p95 {f['p95']:.0f} ms")
    for name, row in data["glass_to_glass"].items():
        lat = row["latency_ms"]
        print(f"  glass to glass {name:>7}: {row['fps']:.1f} fps, p50 {lat.get('p50')} / p95 {lat.get('p95')} ms"
              + (f"  UNRELIABLE: {'; '.join(row['unreliable'])}" if row["unreliable"] else ""))
    if "cluster_adds_p50_ms" in data:
        print(f"  the cluster path adds {data['cluster_adds_p50_ms']:+.2f} ms at p50")
    if "sessions_per_replica" in data:
        s = data["sessions_per_replica"]
        print(f"  sessions per replica at full quality: {s['full_quality_sessions']}"
              + (f" (stepped down at {s['stepped_down_at']})" if s["stepped_down_at"] else ""))


def plot(data: dict):
    fig, ax = axes(8, 4.5)
    names = list(data["signalling"])
    labels, values, errors = [], [], []
    for name in names:
        for what, row in (("first frame", data["signalling"][name]["first_frame_ms"]),
                          ("glass to glass", data["glass_to_glass"][name]["latency_ms"])):
            labels.append(f"{name}\n{what}")
            values.append(row.get("p50", 0))
            errors.append(max(0.0, row.get("p95", 0) - row.get("p50", 0)))
    ax.bar(range(len(values)), values, yerr=[[0] * len(errors), errors], color=["C0", "C1"] * len(names), capsize=4)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("ms (bar: p50, whisker: p95)")
    ax.set_title(f"camfx serve vs the Ray cluster path, {data['size']} {data['effect']}, "
                 f"{data['machine']['cores']} cores", fontsize=9)
    return fig


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="camfx bench cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="a running Ray cluster (default: start a local one)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--cpus-per-replica", type=float, default=0.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--effect", default="blur")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--offers", type=int, default=10, help="offers per target for the signalling figures")
    parser.add_argument("--seconds", type=float, default=12.0, help="glass-to-glass seconds per target, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-sessions", type=int, default=8,
                        help="add up to this many sessions to one replica (0: skip that part)")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after each added session")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.offers < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--offers and --rounds must be at least 1, --seconds above 0")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    port = free_port()
    print("starting a Ray cluster with camfx on it, and a camfx serve ...", flush=True)
    ray = _start_cluster(args, port)
    try:
        data = asyncio.run(run(args, port))
    finally:
        _stop_cluster(ray)
    save(args.out, "cluster", data, plot)
    return 0
