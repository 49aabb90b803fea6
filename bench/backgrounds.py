"""`camfx bench backgrounds`: what a video background costs, against a still one.

The frame path asks for the background layer at the camera's rate, as a session does: once with
a still (the baseline) and once with a video, in alternating windows. Reported per kind: the
time of that call (the frame path's whole cost of the background: median, p95), and for the
video the decoder thread's CPU time per second of playback (from the OS, per thread) and how
many of the video's frames were shown (late frames are skipped by design).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from camfx.engine.effects.backgrounds import Backgrounds

from .stats import machine, summary_ms, write_json


def _window(backgrounds: Backgrounds, name: str, h: int, w: int, seconds: float, fps: float,
            shown: set[int] | None = None) -> list[float]:
    """Ask for the layer at `fps` for `seconds`, as the frame path does; each call's duration.
    With `shown`, the video frames picked are added to it."""
    took = []
    next_at = time.perf_counter()
    end = next_at + seconds
    view = (h, w, "cover", (0, 0, 0))
    while next_at < end:
        start = time.perf_counter()
        backgrounds.frame(name, h, w)
        took.append(time.perf_counter() - start)
        player = backgrounds.player(name) if shown is not None else None
        current = player.current(view) if player else None
        if current is not None:
            shown.add(current[0])
        next_at += 1 / fps
        time.sleep(max(0.0, next_at - time.perf_counter()))
    return took


def _thread_cpu(native_id: int) -> float:
    import psutil

    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench backgrounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=720, help="frame height (width is 16:9)")
    parser.add_argument("--still", default="studio", help="the baseline: a bundled or uploaded picture")
    parser.add_argument("--video", default="lights", help="a bundled video, or a file to upload")
    parser.add_argument("--rounds", type=int, default=4, help="windows of each kind, alternating")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one window")
    parser.add_argument("--fps", type=float, default=30.0, help="the camera's rate")
    parser.add_argument("--out", type=Path, default=Path("bench-results/backgrounds.json"))
    args = parser.parse_args(argv)
    h, w = args.height, (args.height * 16 // 9) // 2 * 2
    backgrounds = Backgrounds()
    video = args.video
    if Path(video).is_file():
        video = backgrounds.add_upload(Path(video).read_bytes())
    times: dict[str, list[float]] = {"still": [], "video": []}
    decoder_cpu, played, shown, video_fps = 0.0, 0.0, set(), None
    try:
        for _ in range(args.rounds):
            times["still"] += _window(backgrounds, args.still, h, w, args.seconds, args.fps)
            backgrounds.frame(video, h, w)  # starts its decoder
            player = backgrounds.player(video)
            cpu_before = _thread_cpu(player.native_id) if player else 0.0
            start = time.perf_counter()
            times["video"] += _window(backgrounds, video, h, w, args.seconds, args.fps, shown)
            played += time.perf_counter() - start
            if player:
                decoder_cpu += _thread_cpu(player.native_id) - cpu_before
                video_fps = player.fps
    finally:
        backgrounds.close()
    result = {
        "frame": [h, w],
        "frame_path_ms": {kind: summary_ms(values) for kind, values in times.items()},
        "decoder_cpu_per_second": round(decoder_cpu / played, 3) if played else None,
        "video_frames_shown": len(shown),
        "video_fps": video_fps,
        "seconds_played": round(played, 1),
        "machine": machine(),
    }
    write_json(args.out, result)
    print(f"frame path, {h}p: still p50 {result['frame_path_ms']['still']['p50']} ms / p95 "
          f"{result['frame_path_ms']['still']['p95']} ms; video p50 {result['frame_path_ms']['video']['p50']} ms / "
          f"p95 {result['frame_path_ms']['video']['p95']} ms; decoder {result['decoder_cpu_per_second']:.2f} "
          f"CPU-s per s; {len(shown)} video frames shown in {played:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
