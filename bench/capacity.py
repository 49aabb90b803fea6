"""`camfx bench capacity`: how many sessions of one size and effect one camfx server holds at the
camera's rate, and how many a box of this machine's cores would hold with the clients elsewhere.

A camfx server process on loopback; for N = 1, 2, ... a separate client process (in a process
group of its own, `python -m camfx.bench.clients`) streams N synthetic 30 fps cameras to it at
once. A step holds when every session gets at least HOLD_FPS fresh frames per second back; the
first step that does not ends that size. Each step reports the sessions' fps and pooled latency,
the whole machine's CPU, the server process's cores (in total and per session) and the client
process's. Writes JSON and a PNG plot.

The clients cost CPU too, which a real deployment pays on other machines. How this run keeps
them off the server's share (`--clients`):

  nice  (default) the client process runs at nice 19: when both want a core the server gets it
        first (Linux CFS weights 1024 to 15), so the clients slow the server down little;
  pin   as nice, and the server's threads are pinned to every core but the last, the clients
        to the last one: nothing of theirs runs on the server's cores (the box is then the
        server's cores, one fewer than the machine's).

Either way the held steps measured here still share the machine with the clients, so the run
also gives `per_box`: the sessions a box of BOX cores (the machine's, or the server's cores under
pin) holds with its clients elsewhere, projected from the server process's own CPU per session
at the largest step that held with every session at full quality (the budget controller had
stepped none down): floor(BOX x BOX_LOAD / cores a session). The projection assumes
cost per session stays linear in N (it falls slightly in practice: shared models, one event
loop), and the held steps show how far it was checked by measurement.

`--effects` takes any effects the server knows, and `--params JSON` adds session params to every
one (a later stage that is a param, such as face processing, is measured the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path

import psutil

from camfx.engine.pipeline.budget import LADDER

from .latency import Server
from .stats import axes, machine, save
from .usage import Usage

HOLD_FPS = 29.5  # "at 30 fps": every session within half a frame per second of the camera
BOX_LOAD = 0.9  # a box is full at 90% busy: beyond it frames start to miss their deadline
CLIENT_NICE = 19


def _client_placement(mode: str, cores: list[int]):
    """What the client process does before it starts (a preexec_fn): nice, and pinned under pin."""
    def place() -> None:
        os.nice(CLIENT_NICE)
        if mode == "pin":
            os.sched_setaffinity(0, cores)
    return place


def pin_process(pid: int, cores: list[int]) -> None:
    """Pin every thread of `pid` to `cores` (threads it starts later inherit it)."""
    for thread in psutil.Process(pid).threads():
        try:
            os.sched_setaffinity(thread.id, cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def split_cores(mode: str) -> tuple[list[int], list[int]]:
    """(server's cores, clients' cores): all for both under nice; the last one for the clients
    under pin."""
    cores = sorted(os.sched_getaffinity(0))
    if mode == "pin":
        if len(cores) < 2:
            raise SystemExit("camfx bench capacity: --clients pin needs 2 cores or more")
        return cores[:-1], cores[-1:]
    return cores, cores


async def _step(url: str, server_pid: int, sessions: int, size: str, effect: str, args) -> dict:
    """N sessions at once from a fresh client process: their figures and the CPU they cost."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "camfx.bench.clients", url, "--sessions", str(sessions), "--size", size,
        "--effect", effect, "--params", args.params, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        *(["--still"] if args.clip == "still" else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        preexec_fn=_client_placement(args.clients, args.client_cores))
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60 + 10 * sessions)
        if line.strip() != b"measuring":
            raise RuntimeError((line + await proc.stderr.read()).decode(errors="replace")[-600:])
        client = psutil.Process(proc.pid)
        placement = {"nice": client.nice(), "cores": sorted(client.cpu_affinity())}
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
    qualities = sorted({str(r.get("quality")) for r in rows})
    return {
        "size": size, "effect": effect, "sessions": sessions, "holds": fps[0] >= HOLD_FPS,
        "qualities": qualities, "full_quality": qualities == [LADDER[0].name],
        "min_fps": fps[0], "median_fps": fps[len(fps) // 2],
        "worst_p50_ms": p50s[-1], "worst_p95_ms": p95s[-1],
        "machine_cpu_percent": cost["machine_cpu_percent"],
        "server_cores": server, "server_cores_per_session": round(server / sessions, 3),
        "client_cores": cost["cores"]["clients"], "client_placement": placement, "per_session": rows,
    }


def per_box(steps: list[dict], box_cores: int) -> int:
    """Sessions a box of `box_cores` holds with its clients elsewhere, from the server's own CPU per
    session at the largest step that held with every session at full quality (0 when none did:
    a session the budget controller stepped down costs less than it should)."""
    held = [s for s in steps if s["holds"] and s["full_quality"]]
    if not held or held[-1]["server_cores_per_session"] <= 0:
        return 0
    return math.floor(box_cores * BOX_LOAD / held[-1]["server_cores_per_session"])


async def run(args) -> dict:
    from camfx.engine.transport.ice import serve_media_on

    serve_media_on(["127.0.0.1"])
    server_cores, args.client_cores = split_cores(args.clients)
    serve = ["-m", "camfx.engine.cli", "serve", "--log-level", "WARNING", "--max-sessions", str(args.max_sessions),
             *args.serve_args]
    steps, capacity, projected = [], {}, {}
    async with Server(serve, "/healthz", args.port) as camfx:
        if args.clients == "pin":
            pin_process(camfx.pid, server_cores)
        for effect in args.effects:
            capacity[effect], projected[effect] = {}, {}
            for size in args.sizes:
                capacity[effect][size] = 0
                mine = []
                for sessions in range(1, args.max_sessions + 1):
                    try:
                        step = await _step(camfx.url, camfx.pid, sessions, size, effect, args)
                    except (RuntimeError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                        raise SystemExit(f"camfx bench capacity: {effect} {size} x{sessions}: the clients failed: {exc}") from None
                    steps.append(step)
                    mine.append(step)
                    print(f"{size:>9} {effect} x{sessions}: {step['min_fps']:5.1f} fps worst ({step['median_fps']:.1f} median), "
                          f"p95 {step['worst_p95_ms']:.0f} ms worst; machine CPU {step['machine_cpu_percent']:.0f}%, "
                          f"server {step['server_cores']:.2f} cores ({step['server_cores_per_session']:.3f} a session), "
                          f"clients {step['client_cores']:.2f} cores, quality {'/'.join(step['qualities'])}  "
                          f"{'holds' if step['holds'] else 'DOES NOT HOLD'}", flush=True)
                    if not step["holds"]:
                        break
                    capacity[effect][size] = sessions
                projected[effect][size] = per_box(mine, len(server_cores))
    for effect in capacity:
        for size, n in capacity[effect].items():
            limit = " (the most tried)" if n == args.max_sessions else ""
            print(f"{size} {effect}: {n} session{'s' * (n != 1)} held at {HOLD_FPS}+ fps each with the clients here{limit}; "
                  f"a {len(server_cores)}-core box with the clients elsewhere: {projected[effect][size]} (projected)",
                  flush=True)
    return {"benchmark": "capacity", "machine": machine(), "command": " ".join(["camfx bench capacity", *args.argv]),
            "effects": args.effects, "params": json.loads(args.params), "clip": args.clip, "hold_fps": HOLD_FPS,
            "seconds": args.seconds,
            "clients": args.clients, "client_nice": CLIENT_NICE, "server_cores": server_cores,
            "client_cores": args.client_cores, "box_cores": len(server_cores), "box_load": BOX_LOAD,
            "capacity": capacity, "per_box": projected, "steps": steps}


def plot(data: dict):
    fig, ax = axes(9, 4.5)
    cpu = ax.twinx()
    series = sorted({(s["effect"], s["size"]) for s in data["steps"]})
    for i, (effect, size) in enumerate(series):
        steps = [s for s in data["steps"] if (s["effect"], s["size"]) == (effect, size)]
        n = [s["sessions"] for s in steps]
        name = f"{effect} {size}"
        ax.plot(n, [s["min_fps"] for s in steps], marker="o", color=f"C{i}", label=f"{name} worst session fps")
        cpu.plot(n, [s["server_cores"] for s in steps], linestyle="--", color=f"C{i}", label=f"{name} server cores")
        cpu.plot(n, [s["client_cores"] for s in steps], linestyle=":", color=f"C{i}", label=f"{name} client cores")
    ax.axhline(data["hold_fps"], color="grey", linewidth=0.8)
    ax.set_xlabel("sessions at once")
    ax.set_ylabel("fresh fps, worst session")
    cpu.set_ylabel("cores")
    ax.set_title(f"one camfx server, {data['machine']['cores']} cores (clients on the same machine, "
                 f"{data['clients']}: nice {data['client_nice']})", fontsize=9)
    lines = ax.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--effects", nargs="+", default=["blur", "replace"])
    parser.add_argument("--params", default="{}", help="more session params for every session, as JSON")
    parser.add_argument("--clip", choices=["moving", "still"], default="moving",
                        help="every camera shows the swaying person, or a person sitting still")
    parser.add_argument("--clients", choices=["nice", "pin"], default="nice",
                        help="keep the clients off the server's share: niced, or niced and pinned to the last core")
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
    try:
        if not isinstance(json.loads(args.params), dict):
            raise ValueError
    except ValueError:
        parser.error("--params must be a JSON object")
    data = asyncio.run(run(args))
    save(args.out, "capacity", data, plot)
    return 0
