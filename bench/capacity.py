"""`camfx bench capacity`: how many sessions of one size one camfx server holds at the camera's
rate.

A camfx server process on loopback; for N = 1, 2, ... a separate client process (in a process
group of its own, `python -m camfx.bench.clients`) streams N synthetic 30 fps cameras to it at
once. A step holds when every session gets at least HOLD_FPS fresh frames per second back; the
first step that does not ends that size. Each step reports the sessions' fps and pooled latency,
the whole machine's CPU, the server process's cores (in total and per session) and the client
process's, so what the clients cost on the same machine is in plain sight, not hidden in the
server's figure. Writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .latency import Server
from .stats import axes, machine, save
from .usage import Usage

HOLD_FPS = 29.5  # "at 30 fps": every session within half a frame per second of the camera


async def _step(url: str, server_pid: int, sessions: int, size: str, args) -> dict:
    """N sessions at once from a fresh client process: their figures and the CPU they cost."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "camfx.bench.clients", url, "--sessions", str(sessions), "--size", size,
        "--effect", args.effect, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60 + 10 * sessions)
        if line.strip() != b"measuring":
            raise RuntimeError((line + await proc.stderr.read()).decode(errors="replace")[-600:])
        usage = Usage({"server": server_pid, "clients": proc.pid}).start()
        line = await asyncio.wait_for(proc.stdout.readline(), args.seconds + 30)
        cost = usage.stop()
        rows = json.loads(line)
    finally:
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    fps = sorted(r["fresh_fps"] for r in rows)
    p50s = sorted(r["latency_ms"].get("p50", float("nan")) for r in rows)
    p95s = sorted(r["latency_ms"].get("p95", float("nan")) for r in rows)
    server = cost["cores"]["server"]
    return {
        "size": size, "sessions": sessions, "holds": fps[0] >= HOLD_FPS,
        "min_fps": fps[0], "median_fps": fps[len(fps) // 2],
        "worst_p50_ms": p50s[-1], "worst_p95_ms": p95s[-1],
        "machine_cpu_percent": cost["machine_cpu_percent"],
        "server_cores": server, "server_cores_per_session": round(server / sessions, 3),
        "client_cores": cost["cores"]["clients"], "per_session": rows,
    }


async def run(args) -> dict:
    from camfx.engine.transport.ice import serve_media_on

    serve_media_on(["127.0.0.1"])
    serve = ["-m", "camfx.engine.cli", "serve", "--log-level", "WARNING", "--max-sessions", str(args.max_sessions),
             *args.serve_args]
    steps, capacity = [], {}
    async with Server(serve, "/healthz", args.port) as camfx:
        for size in args.sizes:
            capacity[size] = 0
            for sessions in range(1, args.max_sessions + 1):
                try:
                    step = await _step(camfx.url, camfx.pid, sessions, size, args)
                except (RuntimeError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                    raise SystemExit(f"camfx bench capacity: {size} x{sessions}: the clients failed: {exc}") from None
                steps.append(step)
                print(f"{size:>9} {args.effect} x{sessions}: {step['min_fps']:5.1f} fps worst ({step['median_fps']:.1f} median), "
                      f"p95 {step['worst_p95_ms']:.0f} ms worst; machine CPU {step['machine_cpu_percent']:.0f}%, "
                      f"server {step['server_cores']:.2f} cores ({step['server_cores_per_session']:.2f} a session), "
                      f"clients {step['client_cores']:.2f} cores  {'holds' if step['holds'] else 'DOES NOT HOLD'}", flush=True)
                if not step["holds"]:
                    break
                capacity[size] = sessions
    for size, n in capacity.items():
        limit = " (the most tried)" if n == args.max_sessions else ""
        print(f"{size}: {n} {args.effect} session{'s' * (n != 1)} at {HOLD_FPS}+ fps each{limit}", flush=True)
    return {"benchmark": "capacity", "machine": machine(), "command": " ".join(["camfx bench capacity", *args.argv]),
            "effect": args.effect, "hold_fps": HOLD_FPS, "seconds": args.seconds, "capacity": capacity, "steps": steps}


def plot(data: dict):
    fig, ax = axes(9, 4.5)
    cpu = ax.twinx()
    for i, size in enumerate(data["capacity"]):
        steps = [s for s in data["steps"] if s["size"] == size]
        n = [s["sessions"] for s in steps]
        ax.plot(n, [s["min_fps"] for s in steps], marker="o", color=f"C{i}", label=f"{size} worst session fps")
        cpu.plot(n, [s["server_cores"] for s in steps], linestyle="--", color=f"C{i}", label=f"{size} server cores")
        cpu.plot(n, [s["client_cores"] for s in steps], linestyle=":", color=f"C{i}", label=f"{size} client cores")
    ax.axhline(data["hold_fps"], color="grey", linewidth=0.8)
    ax.set_xlabel(f"{data['effect']} sessions at once")
    ax.set_ylabel("fresh fps, worst session")
    cpu.set_ylabel("cores")
    ax.set_title(f"one camfx server, {data['machine']['cores']} cores (clients on the same machine)", fontsize=9)
    lines = ax.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--effect", default="blur")
    parser.add_argument("--max-sessions", type=int, default=6, help="stop there even if it still holds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, help="where the camfx server listens (default: a free port)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to `camfx serve`")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.max_sessions < 1 or args.seconds <= 0:
        parser.error("--max-sessions must be at least 1 and --seconds above 0")
    data = asyncio.run(run(args))
    save(args.out, "capacity", data, plot)
    return 0
