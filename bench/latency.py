"""`camfx bench latency`: glass-to-glass latency and received fps over real WebRTC.

A real aiortc client sends a synthetic moving-person clip with a frame id stamped in its top
rows, and matches each frame that comes back to the moment it was sent. Three ways:

  camfx bench latency                       starts camfx and two echo servers here (loopback):
                                            `echo`, plain aiortc sending the video straight back,
                                            and `echo-marker`, the same with camfx's receiver, whose
                                            difference to camfx is the engine alone
  camfx bench latency --url URL [--token T] a camfx server already running, here or elsewhere
  camfx bench latency --whip URL --whep URL any WHIP / WHEP pair: publish to one, view the other

For every size x codec x configuration it reports fps, latency p50 / p95 / p99, each row's p50
less each baseline's and, for servers it started, the server process's CPU in cores. Rows whose
sender or receiver fell below 95% of the camera's rate, or whose machine was over 90% busy,
are marked UNRELIABLE. It prints one line per configuration and round, and writes JSON (with
versions, machine, command line and the servers' own stats) and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from camfx.engine.transport.ice import serve_media_on

from .clip import person_clip, still_clip
from .peer import ClientPeer, OfferRefused, SyntheticCamera, http_client
from .stats import axes, machine, save, summary_ms
from .usage import Usage, unreliable_reasons
from .whip import WhepViewer, WhipError, WhipPublisher


def free_port() -> int:
    """A loopback port nobody is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if process is not None and process.poll() is not None:
                raise SystemExit(f"camfx bench latency: the server for {url} exited ({process.returncode}); "
                                 "is its port in use?")
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
    """A server process on a loopback port (`port`, or a free one), stopped on exit."""

    def __init__(self, args: list[str], probe_path: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args, self._probe = [*args, "--port", str(self.port)], probe_path
        self._proc: subprocess.Popen | None = None

    async def __aenter__(self) -> "Server":
        self._proc = subprocess.Popen([sys.executable, *self._args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await _wait_http(self.url + self._probe, process=self._proc)
        except BaseException:
            await self.__aexit__()
            raise
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


@dataclass
class Target:
    """Where one row's frames go. `kind` "offer": POST /offer to a camfx (or echo) server, the
    stream coming back on the same peer; "whip": publish to `url`, view `whep` with a second
    peer. `stats` is the camfx URL whose JSON describes the row's session or stream; `pid` the
    server process whose CPU is counted (a server this run started)."""

    name: str
    kind: str
    url: str
    params: dict | None = None
    whep: str | None = None
    stats: str | None = None
    pid: int | None = None


@dataclass
class Options:
    camera_fps: float
    send_fps: float
    seconds: float
    warmup: float
    token: str | None = None
    insecure: bool = False


async def _window(received, camera: SyntheticCamera, options: Options, pid: int | None) -> dict:
    """Wait out the warm-up, then count what is sent, received and spent for `options.seconds`."""
    await asyncio.sleep(options.warmup)
    arrivals0, fresh0, sent0 = len(received.arrivals), len(received.fresh), camera.frames_sent
    usage = Usage({"server": pid} if pid else None).start()
    t0 = time.perf_counter()
    await asyncio.sleep(options.seconds)
    elapsed = time.perf_counter() - t0
    cost = usage.stop()
    sample = {"elapsed": elapsed, "sent": camera.frames_sent - sent0, "arrivals": len(received.arrivals) - arrivals0,
              "fresh": len(received.fresh) - fresh0, "latencies": received.latencies[fresh0:],
              "machine_cpu_percent": cost["machine_cpu_percent"], "server_cores": cost["cores"].get("server")}
    sample["unreliable"] = unreliable_reasons(options.camera_fps, sample["sent"] / elapsed,
                                              sample["arrivals"] / elapsed, sample["machine_cpu_percent"])
    return sample


async def _stats(url: str | None, options: Options, end: bool = False) -> dict | None:
    if url is None:
        return None
    async with http_client(options.token, options.insecure) as http:
        async with http.get(url) as resp:
            resp.raise_for_status()
            stats = await resp.json()
        if end:
            async with http.delete(url) as resp:
                resp.raise_for_status()
    return stats


async def measure(target: Target, clip, codec: str, options: Options) -> dict:
    """One run of one row: connect, warm up, measure, read the server's stats, end the session."""
    camera = SyntheticCamera(clip, fps=options.send_fps)
    if target.kind == "whip":
        return await _measure_whip(target, camera, codec, options)
    peer = ClientPeer(camera, codec=codec)
    try:
        await peer.connect(target.url, target.params, token=options.token, insecure=options.insecure)
        await peer.wait_frames(5, timeout=30)
        sample = await _window(peer.received, camera, options, target.pid)
        # camfx (the echo has no sessions): its stats, then the session ended
        stats_url = f"{target.url}/sessions/{peer.session_id}" if peer.session_id else None
        sample["server"] = await _stats(stats_url, options, end=True)
        return sample
    finally:
        await peer.close()


async def _measure_whip(target: Target, camera: SyntheticCamera, codec: str, options: Options) -> dict:
    publisher = WhipPublisher(camera, codec=codec, token=options.token, insecure=options.insecure)
    viewer = WhepViewer(camera.sent_at, token=options.token, insecure=options.insecure)
    try:
        await publisher.publish(target.url)
        await viewer.view(target.whep)
        await viewer.wait_frames(5, timeout=30)
        sample = await _window(viewer.received, camera, options, target.pid)
        sample["server"] = await _stats(target.stats, options)
        return sample
    finally:
        await viewer.close()
        await publisher.close()


BASELINES = ("echo", "echo-marker")
WHIP_ROW = "whip-whep blur"


def _p50(results: list[dict], size: str, codec: str, config: str) -> float | None:
    row = next((r for r in results if (r["size"], r["codec"], r["config"]) == (size, codec, config)), None)
    return row["latency_ms"].get("p50") if row else None


def summarise(samples: list[dict]) -> dict:
    """One configuration's rounds pooled into one row; a round that cannot be trusted makes the
    row unreliable, with its reasons, rather than being averaged in."""
    elapsed = sum(m["elapsed"] for m in samples)
    cores = [m["server_cores"] for m in samples if m["server_cores"] is not None]
    reasons = [f"round {i}: {why}" for i, m in enumerate(samples, 1) for why in m["unreliable"]]
    return {
        "fps": round(sum(m["arrivals"] for m in samples) / elapsed, 1),  # what the viewer sees, repeats included
        "fresh_fps": round(sum(m["fresh"] for m in samples) / elapsed, 1),  # distinct input frames that came back
        "sent_fps": round(sum(m["sent"] for m in samples) / elapsed, 1),
        "frames_lost": sum(max(0, m["sent"] - m["fresh"]) for m in samples),  # sent, never seen back
        "latency_ms": summary_ms([x for m in samples for x in m["latencies"]]),
        "machine_cpu_percent": max(m["machine_cpu_percent"] for m in samples),
        "server_cores": round(sum(cores) / len(cores), 3) if cores else None,  # one session: cores per session
        "unreliable": reasons,
        "server": samples[-1]["server"],
    }


def _fmt(value: float | None, spec: str = "6.1f") -> str:
    return format(value, spec) if value is not None else "   n/a"


def describe(row: dict) -> str:
    """The row as one line of the table."""
    lat = row["latency_ms"]
    line = (f"{row['size']:>9} {row['codec']:>4} {row['config']:>14}: {row['fps']:5.1f} fps ({row['fresh_fps']:4.1f} fresh)  "
            f"p50 {_fmt(lat.get('p50'))}  p95 {_fmt(lat.get('p95'))}  p99 {_fmt(lat.get('p99'))} ms")
    if row["server_cores"] is not None:
        line += f"  server {row['server_cores']:.2f} cores"
    if row.get("p50_over_ms"):
        line += "  p50 " + ", ".join(f"{d:+.1f} vs {b}" for b, d in row["p50_over_ms"].items())
    server = row["server"]
    if server and "stage_ms" in server:
        line += f"; engine {sum(server['stage_ms'].values()):.1f} ms, in to out {server['engine_latency_ms_p50']:.1f} ms"
        line += f" ({server['quality']})  dropped {server['frames_dropped']}  misses {server['deadline_misses']}"
    if row["unreliable"]:
        line += "\n" + " " * 16 + "UNRELIABLE: " + "; ".join(row["unreliable"])
    return line


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def _camfx_targets(url: str, effects: list[str], whip: bool, stream: str, pid: int | None = None) -> list[Target]:
    targets = [Target(effect, "offer", url, {"effect": effect, "probe": True}, pid=pid) for effect in effects]
    if whip:
        targets.append(Target(WHIP_ROW, "whip", f"{url}/whip/{stream}?effect=blur&probe=true",
                              whep=f"{url}/whep/{stream}", stats=f"{url}/streams/{stream}", pid=pid))
    return targets


async def _health(url: str, options: Options) -> dict | None:
    try:
        return await _stats(f"{url}/healthz", options)
    except aiohttp.ClientError as exc:
        raise SystemExit(f"camfx bench latency: {url} did not answer /healthz ({exc}); is it a camfx server?") from None


async def run(args) -> dict:
    urls = [u for u in (args.url, args.whip_url, args.whep_url) if u]
    if all(_loopback(u) for u in urls):  # the client's peer connections, like the servers', stay on loopback
        serve_media_on(["127.0.0.1"])
    options = Options(args.fps, args.send_fps or args.fps, args.seconds / args.rounds, args.warmup,
                      args.token, args.insecure)
    servers: dict[str, dict | None] = {}
    async with AsyncExitStack() as stack:
        targets: list[Target] = []
        if args.url or args.whip_url:
            if args.url:
                url = args.url.rstrip("/")
                servers[url] = await _health(url, options)
                stream = f"bench-{secrets.token_hex(3)}"  # a running server may have streams of its own
                targets += _camfx_targets(url, args.effects, args.whip_row, stream)
            if args.whip_url:
                targets.append(Target("whip-whep", "whip", args.whip_url, whep=args.whep_url))
        else:
            print("starting the echo, echo-marker and camfx servers (camfx loads its models first) ...", flush=True)
            port = args.port
            echo_cmd = ["-m", "camfx.bench.echo"]
            camfx_cmd = ["-m", "camfx.engine.cli", "serve", "--log-level", "WARNING", "--max-sessions", "1", *args.serve_args]
            echo = await stack.enter_async_context(Server(echo_cmd, "/offer", port and port + 1))
            marker = await stack.enter_async_context(Server([*echo_cmd, "--release-at-marker"], "/offer", port and port + 2))
            camfx = await stack.enter_async_context(Server(camfx_cmd, "/healthz", port))
            servers[camfx.url] = await _health(camfx.url, options)
            targets += [Target("echo", "offer", echo.url, pid=echo.pid), Target("echo-marker", "offer", marker.url, pid=marker.pid)]
            targets += _camfx_targets(camfx.url, args.effects, args.whip_row, "bench", camfx.pid)
        samples = await _rounds(args, targets, options)
    results = _rows(samples)
    for row in results:
        print(describe(row), flush=True)
    bad = sum(1 for r in results if r["unreliable"])
    if bad:
        print(f"{bad} of {len(results)} rows are UNRELIABLE (marked in the JSON and the plot): their figures are "
              f"not the server's alone", flush=True)
    return {
        "benchmark": "latency", "machine": machine(), "command": " ".join(["camfx bench latency", *args.argv]),
        "seconds": args.seconds, "rounds": args.rounds, "camera_fps": args.fps, "send_fps": options.send_fps,
        "whole_pixels": args.whole_pixels, "clip": args.clip, "servers": servers, "results": results,
    }


async def _rounds(args, targets: list[Target], options: Options) -> dict[tuple[str, str, str], list[dict]]:
    # Rounds interleave the configurations, so a slow drift of the machine (other tenants,
    # clocks) lands on all of them alike instead of on whichever ran at that moment.
    samples: dict[tuple[str, str, str], list[dict]] = {}
    for round_no in range(1, args.rounds + 1):
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            clip = (still_clip(width, height, 60) if args.clip == "still"
                    else person_clip(width, height, 60, whole_pixels=args.whole_pixels))
            for codec in args.codecs:
                for target in targets:
                    try:
                        sample = await measure(target, clip, codec, options)
                    except (OfferRefused, WhipError, aiohttp.ClientError, TimeoutError) as exc:
                        raise SystemExit(f"camfx bench latency: {target.name} at {target.url}: {exc}") from None
                    samples.setdefault((size, codec, target.name), []).append(sample)
                    lat = summary_ms(sample["latencies"])
                    note = f"  UNRELIABLE: {'; '.join(sample['unreliable'])}" if sample["unreliable"] else ""
                    print(f"round {round_no}/{args.rounds} {size} {codec} {target.name}: "
                          f"{sample['arrivals'] / sample['elapsed']:.1f} fps, p50 {_fmt(lat.get('p50'), '.1f')} ms, "
                          f"CPU {sample['machine_cpu_percent']:.0f}%{note}", flush=True)
    return samples


def _rows(samples: dict[tuple[str, str, str], list[dict]]) -> list[dict]:
    results = []
    for (size, codec, name), runs in samples.items():
        row = summarise(runs)
        row.update(size=size, codec=codec, config=name)
        if name not in BASELINES:  # each row's p50 less each baseline's, same size and codec
            row["p50_over_ms"] = {
                base: round(row["latency_ms"]["p50"] - base_p50, 2)
                for base in BASELINES
                if "p50" in row["latency_ms"] and (base_p50 := _p50(results, size, codec, base)) is not None
            }
        results.append(row)
    return results


def plot(data: dict):
    rows = data["results"]
    groups = sorted({(r["size"], r["codec"]) for r in rows}, key=lambda g: (int(g[0].split("x")[0]), g[1]))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, ax = axes(max(10, 1.2 * len(groups) * len(configs)), 5.5)
    width = 0.8 / len(configs)
    colours = [f"C{i}" for i in range(10)]
    top = max([r["latency_ms"].get("p95", 0) for r in rows] + [1])
    for i, config in enumerate(configs):
        for j, group in enumerate(groups):
            row = next((r for r in rows if (r["size"], r["codec"]) == group and r["config"] == config), None)
            if row is None or "p50" not in row["latency_ms"]:
                continue
            x, lat = j + i * width, row["latency_ms"]
            bad = bool(row["unreliable"])
            ax.bar(x, lat["p50"], width, color=colours[i % 10], alpha=0.35 if bad else 1.0, hatch="//" if bad else None,
                   edgecolor="black" if bad else None, label=config if j == 0 else None)
            ax.scatter([x], [lat["p95"]], marker="_", s=200, color="black", label="p95" if i == j == 0 else None)
            text = f"{row['fps']:.1f} fps\n{row['frames_lost']} lost" + ("\nUNRELIABLE" if bad else "")
            ax.text(x, lat["p95"] + top * 0.02, text, ha="center", va="bottom", fontsize=6,
                    color="red" if bad else "black")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [f"{s} {c}" for s, c in groups])
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("glass-to-glass ms (bar: p50, tick: p95)")
    where = "loopback" if all(_loopback(u) for u in data["servers"] or ["http://127.0.0.1"]) else "network"
    ax.set_title(f"glass to glass, {where}, {data['machine']['cores']} cores, {data['camera_fps']:g} fps camera;"
                 " labels: received fps, frames lost", fontsize=9)
    if any(r["unreliable"] for r in rows):
        ax.bar([0], [0], 0, color="white", hatch="//", edgecolor="black", label="unreliable")
    ax.legend(fontsize=7, ncol=min(len(configs) + 2, 6))
    return fig


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65533:
        raise argparse.ArgumentTypeError("a port from 1 to 65533 (the echo servers take the next two)")
    return port


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_argument_group("what to measure (default: camfx and the echo baselines, started here)")
    target.add_argument("--url", help="a running camfx server (http[s]://host:port): its effects, and WHIP -> WHEP")
    target.add_argument("--whip", dest="whip_url", metavar="URL", help="any WHIP endpoint to publish the clip to (with --whep)")
    target.add_argument("--whep", dest="whep_url", metavar="URL", help="the WHEP endpoint that plays what --whip receives")
    target.add_argument("--token", help="bearer token for --url / --whip / --whep")
    target.add_argument("--insecure", action="store_true", help="accept any TLS certificate (a --tls self-signed server)")
    target.add_argument("--port", type=_port, help="where this run starts servers: camfx on PORT, the echoes on the next two")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--codecs", nargs="+", default=["VP8", "H264"], choices=["VP8", "H264"])
    parser.add_argument("--effects", nargs="+", default=["none", "blur", "replace"])
    parser.add_argument("--no-whip", dest="whip_row", action="store_false",
                        help="leave out camfx's WHIP -> WHEP row (publisher and viewer separate peers, blur)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration, all rounds together")
    parser.add_argument("--rounds", type=int, default=1, help="split each configuration's time into this many interleaved runs")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=30.0, help="the camera's frame rate, which rows are judged against")
    parser.add_argument("--send-fps", type=float,
                        help="send at this rate instead (a starved sender: its rows are marked unreliable)")
    parser.add_argument("--whole-pixels", action="store_true",
                        help="the clip's person moves by whole pixels, a rigid picture (for comparison)")
    parser.add_argument("--clip", choices=["moving", "still"], default="moving",
                        help="the swaying person, or a person sitting still (sensor noise only)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to `camfx serve` (e.g. --model-threads 2)")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if bool(args.whip_url) != bool(args.whep_url):
        parser.error("--whip and --whep go together: publish to one, view the other")
    if (args.url or args.whip_url) and (args.port or args.serve_args):
        parser.error("--port and --serve-args are for the servers this run starts, not with --url / --whip")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    data = asyncio.run(run(args))
    save(args.out, "latency", data, plot)
    return 0
