"""`camfx bench diffusion --sessions 1,2,4,8 [--simulated]`: many streams on one diffusion device,
the scheduler next to one first-in-first-out executor (how camfx served them before), in the
same run.

Simulated (always): the device of a profile (camfx.engine.diffusion.simulated: call times from
published GPU figures, a batch of 4 costing 1.6x a batch of 1), cameras at 30 fps, streams
joining 2 s apart and asking admission, then 10 simulated seconds measured. Per stream: its rate
against its target, picture age p50 / p95, batch size and rung; per device: busy share,
batches per second, mean batch size; refused streams are listed as such.

Real (without --simulated): the same on the model's real networks (the tiny test model, or
`--random-weights` for sd-turbo's full shapes, on CUDA when there is one): each policy for
`--seconds` per session count, frames fed at the camera's rate from a thread. FIFO here is the
scheduler held to batches of one stream with no rate target, which is what one executor thread
taking each stream's newest frame in turn does. And the batch-scaling curve: one
`img2img_batch` of 1..N streams, timed interleaved, over the batch of 1 (the `fixed` share of
the simulated profiles is what this measures).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from camfx.engine.diffusion.simulated import PROFILES, run_fifo, run_scheduler

from .stats import summary_ms


def _print_row(n: int, policy: str, row: dict) -> None:
    streams = row["streams"]
    admitted = [s for s in streams if s["admitted"]]
    rates = " ".join(f"{s['achieved_fps']:.1f}/{s['target_fps']:.0f}" for s in admitted)
    ages = [s["age_ms_p95"] for s in admitted if s["age_ms_p95"] is not None]
    rungs = sorted({s["rung"] for s in admitted if s["rung"]})
    print(f"  {n} sessions {policy:<9} busy {row['busy_share']:.2f}  batches/s {row['batches_per_s']:.1f}  "
          f"mean batch {row['mean_batch_size'] or 0:.2f}  fps achieved/target: {rates}  "
          f"age p95 max {max(ages) if ages else 0:.0f} ms  rungs {', '.join(rungs)}"
          + (f"  refused {len(streams) - len(admitted)}" if len(admitted) < len(streams) else ""), flush=True)


def simulated(sessions: list[int], profile: str, fps: float, size: int, steps: int) -> dict[str, Any]:
    device = PROFILES[profile]
    print(f"simulated {device.name} ({device.source}; batch of 4 = "
          f"{device.batch_s([_rung(size, steps)] * 4) / device.batch_s([_rung(size, steps)]):.2f}x a batch of 1), "
          f"{size}px, {steps} step(s), target {fps:g} fps, cameras at 30 fps", flush=True)
    rows = []
    for n in sessions:
        for policy, run in (("fifo", run_fifo), ("scheduler", run_scheduler)):
            result = run(device, n, fps=fps, size=size, steps=steps).as_dict()
            _print_row(n, policy, result)
            rows.append({"sessions": n, **result})
    return {"profile": device.__dict__, "fps": fps, "size": size, "steps": steps, "rows": rows}


def _rung(size: int, steps: int):
    from camfx.engine.diffusion.scheduler import Rung

    return Rung(size, steps, False)


def real(sessions: list[int], args) -> dict[str, Any]:
    """The service on real networks; returns rows like `simulated`'s and the batch scaling."""
    import torch

    from camfx.engine.diffusion.served import DiffusionModels, DiffusionModelSpec
    from camfx.engine.diffusion.scheduler import AdmissionError, Budget, DiffusionScheduler, ladder
    from camfx.engine.diffusion.service import DiffusionService, Job, StreamDiffusion
    from camfx.engine.params import Params

    from .clip import person_clip

    spec = DiffusionModelSpec(args.model, taesd_id=args.taesd, random_weights=args.random_weights)
    models = DiffusionModels({"bench": spec}, exported=False)
    loaded = models.load("bench")
    device = str(loaded.parts.device)
    clip = person_clip(640, 480, 8)
    height = width = args.size
    params = Params(effect="diffusion", diffusion_mode="frame", diffusion_model="bench", prompt=args.prompt,
                    steps=args.steps, strength=args.strength, diffusion_size=max(128, args.size // 64 * 64))
    print(f"real networks ({'random sd-turbo architecture' if args.random_weights else args.model}) on {device}, "
          f"{height}x{width}, {args.seconds:g} s per policy and session count", flush=True)
    rows = []
    for n in sessions:
        for policy in ("fifo", "scheduler"):
            service = DiffusionService(models)
            if policy == "fifo":
                service.scheduler = DiffusionScheduler(time.perf_counter, max_batch=1)
                budget, rungs = Budget(1000.0, 3600.0), ladder(args.size, args.steps, False)[:1]
            else:
                budget, rungs = Budget(args.fps or None), ladder(args.size, args.steps, False)
            handles = []
            for i in range(n):
                try:
                    handles.append((service.scheduler.open("bench", rungs, budget), StreamDiffusion(models)))
                except AdmissionError:
                    handles.append(None)
            service._start()
            stop = threading.Event()

            def feed():
                k = 0
                while not stop.is_set():
                    for i, pair in enumerate(handles):
                        if pair is not None:
                            frame = clip[(k + i) % len(clip)]
                            pair[0].offer(Job(pair[1], frame, None, params, (height, width)), time.perf_counter(),
                                          ("bench", height, width))
                    k += 1
                    stop.wait(1 / 30)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            time.sleep(args.seconds)
            end = time.perf_counter()
            streams = []
            for pair in handles:
                if pair is None:
                    streams.append({"admitted": False, "target_fps": args.fps, "achieved_fps": 0.0, "age_ms_p50": None,
                                    "age_ms_p95": None, "batch_size": None, "rung": None, "stale": 0})
                    continue
                st = pair[0].stats(end)
                streams.append({"admitted": True, "target_fps": st["target_fps"] if policy != "fifo" else 0.0,
                                "achieved_fps": st["achieved_fps"], "age_ms_p50": st["age_ms_p50"],
                                "age_ms_p95": st["age_ms_p95"], "batch_size": st["batch_size"], "rung": st["rung"],
                                "stale": st["stale"]})
            dev = service.scheduler.stats(end, horizon_s=args.seconds)
            stop.set()
            feeder.join()
            for pair in handles:
                if pair is not None:
                    pair[0].close()
            service.shutdown()
            row = {"sessions": n, "policy": policy, "busy_share": dev["busy_share"],
                   "batches_per_s": dev["batches_per_s"], "mean_batch_size": dev["mean_batch_size"], "streams": streams}
            _print_row(n, policy, row)
            rows.append(row)
    scaling = batch_scaling(loaded, max(sessions), args)
    return {"device": device, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "rows": rows, "batch_scaling": scaling}


def batch_scaling(loaded, most: int, args) -> list[dict[str, Any]]:
    """ms per `img2img_batch` of 1..`most` streams (powers of two), interleaved, and the ratio to 1."""
    from camfx.engine.diffusion.stylizer import Stylizer, img2img_batch

    sizes = [n for n in (1, 2, 4, 8, 16) if n <= most] or [1]
    stylizers = [Stylizer(loaded.parts, loaded.networks, prompt=args.prompt, seed=i, steps=args.steps,
                          strength=args.strength) for i in range(max(sizes))]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(max(sizes))]
    laps: dict[int, list[float]] = {n: [] for n in sizes}
    for i in range(args.warmup + args.frames):
        for n in sizes:
            start = time.perf_counter()
            img2img_batch(stylizers[:n], frames[:n])
            if i >= args.warmup:
                laps[n].append(time.perf_counter() - start)
    base = float(np.median(laps[sizes[0]]))
    out = []
    for n in sizes:
        ms = summary_ms(laps[n])
        out.append({"batch": n, "ms": ms, "over_batch_1": round(float(np.median(laps[n])) / base, 2)})
        print(f"  batch scaling: {n} stream(s) in one batch: p50 {ms['p50']:.1f} ms = "
              f"{out[-1]['over_batch_1']:.2f}x a batch of 1", flush=True)
    return out
