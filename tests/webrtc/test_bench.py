"""The benchmarks: their synthetic camera moves like a person, not like a rigid picture; the
encode and latency benchmarks run end to end and report what they claim."""

import os

import numpy as np
import pytest

from camfx.bench.clip import person_clip
from camfx.engine.media import yuv

pytestmark = pytest.mark.webrtc


def closest_whole_pixel_shift(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean difference between a patch of `current` (inside the portrait) and the best-matching
    whole-pixel shift of it in `previous`: 0 when the picture moved rigidly by whole pixels."""
    patch = current[300:364, 300:364]
    return min(
        np.abs(previous[300 + dy : 364 + dy, 300 + dx : 364 + dx] - patch).mean()
        for dy in range(-8, 9)
        for dx in range(-24, 25)
    )


def test_the_person_moves_by_fractions_of_a_pixel():
    """No patch of a frame is a whole-pixel shift of the frame before: an encoder finds no exact
    match, as with a real camera (the echo baseline would otherwise encode unrealistically cheaply)."""
    luma = [yuv.planes(f)[0].astype(np.int16) for f in person_clip(640, 480, 60)]
    for i in (5, 20, 40):
        assert np.abs(luma[i] - luma[i - 1]).mean() > 1.0  # it moves
        assert closest_whole_pixel_shift(luma[i - 1], luma[i]) > 0.5
    rigid = [yuv.planes(f)[0].astype(np.int16) for f in person_clip(640, 480, 60, whole_pixels=True)]
    assert closest_whole_pixel_shift(rigid[19], rigid[20]) == 0  # the comparison clip does


def test_the_clip_loops_smoothly():
    clip = person_clip(320, 240, 30)
    step = np.abs(clip[1].astype(int) - clip[0]).mean()
    wrap = np.abs(clip[0].astype(int) - clip[-1]).mean()
    assert wrap < 2 * step


def test_bench_encode_reports_each_effect_against_the_camera_picture(tmp_path):
    import json


    from camfx.bench.encode import main

    argv = ["--sizes", "320x240", "--codecs", "VP8", "--effects", "blur", "none", "--frames", "5", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "encode.json").read_text())
    assert [r["effect"] for r in data["results"]] == ["none", "blur"]  # the baseline first
    for row in data["results"]:
        assert row["encode_ms"]["n"] == 5 and row["encode_ms"]["p50"] > 0 and row["bytes_per_frame"] > 0
    assert (tmp_path / "encode.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["--frames", "0", "--out", str(tmp_path)])


def test_bench_latency_measures_camfx_against_the_echo(tmp_path):
    """The whole benchmark, briefly: three server processes, a real client, matched frames."""
    import json

    from camfx.bench.latency import main

    argv = ["--sizes", "320x240", "--codecs", "VP8", "--effects", "none", "blur",
            "--seconds", "1.5", "--warmup", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "latency.json").read_text())
    rows = {r["config"]: r for r in data["results"]}
    assert set(rows) == {"echo", "echo-marker", "none", "blur", "whip-whep blur"} and data["whole_pixels"] is False
    for row in rows.values():
        assert row["fresh_fps"] > 10 and row["latency_ms"]["n"] > 10
        assert 0 < row["latency_ms"]["p50"] < 1000
        assert row["server_cores"] > 0 and 0 < row["machine_cpu_percent"] <= 100  # this run's servers: their CPU
    assert rows["echo"]["server"] is None and rows["echo-marker"]["server"] is None  # echoes have no camfx stats
    # Each effect's p50 less each baseline's, from the same run.
    for base in ("echo", "echo-marker"):
        expected = rows["blur"]["latency_ms"]["p50"] - rows[base]["latency_ms"]["p50"]
        assert rows["blur"]["p50_over_ms"][base] == pytest.approx(expected, abs=0.01)
    assert rows["blur"]["server"]["effect"] == "blur" and rows["blur"]["server"]["stage_ms"]["segment"] > 0
    # WHIP in, WHEP out: publisher and viewer are separate peers, the server's stats are the stream's.
    assert rows["whip-whep blur"]["server"]["name"] == "bench" and rows["whip-whep blur"]["server"]["viewers"] == 1
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_bench_camera_reports_local_and_remote_against_the_passthrough(tmp_path):
    import json

    from camfx.bench.camera import main

    argv = ["--sizes", "320x240", "--seconds", "2", "--rounds", "1", "--warmup", "1", "--remote", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = {r["config"]: r for r in json.loads((tmp_path / "camera.json").read_text())["results"]}
    assert set(rows) == {"passthrough", "blur", "remote blur"}
    for row in rows.values():
        assert row["fps"] > 10 and row["latency_ms"]["n"] > 10
    assert rows["passthrough"]["p50_over_passthrough_ms"] == 0
    assert rows["blur"]["p50_over_passthrough_ms"] == pytest.approx(
        rows["blur"]["latency_ms"]["p50"] - rows["passthrough"]["latency_ms"]["p50"], abs=0.01)
    assert (tmp_path / "camera.png").stat().st_size > 0


def test_bench_capacity_adds_sessions_until_one_falls_short(tmp_path):
    """Steps of 1, 2 sessions from a niced client process of its own; each says what it cost.
    Whether a step holds depends on the machine: the test checks the verdicts follow the figures,
    and the sessions per box with the clients elsewhere follow the server's own cost."""
    import json
    import math
    import os

    from camfx.bench.capacity import BOX_LOAD, CLIENT_NICE, HOLD_FPS, main

    argv = ["--sizes", "320x240", "--effects", "blur", "--max-sessions", "2", "--seconds", "2", "--warmup", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "capacity.json").read_text())
    steps = data["steps"]
    assert [s["sessions"] for s in steps] == list(range(1, len(steps) + 1))
    for step in steps:
        assert step["effect"] == "blur" and len(step["per_session"]) == step["sessions"]
        assert step["holds"] == (step["min_fps"] >= HOLD_FPS)
        assert step["server_cores"] > 0 and step["client_cores"] > 0  # both sides' cost is shown
        assert step["server_cores_per_session"] == pytest.approx(step["server_cores"] / step["sessions"], abs=0.001)
        assert all(s["latency_ms"]["n"] > 0 for s in step["per_session"])
        assert step["client_placement"] == {"nice": CLIENT_NICE, "cores": sorted(os.sched_getaffinity(0))}
        assert step["full_quality"] == (step["qualities"] == ["full"])
        assert all(s["quality"] in ("full", "no-feather", "lean", "mask-every-2nd") for s in step["per_session"])
    holding = [s for s in steps if s["holds"]]
    assert data["capacity"]["blur"]["320x240"] == (holding[-1]["sessions"] if holding else 0)
    full = [s for s in holding if s["full_quality"]]
    expected = math.floor(data["box_cores"] * BOX_LOAD / full[-1]["server_cores_per_session"]) if full else 0
    assert data["per_box"]["blur"]["320x240"] == expected
    assert all(s["holds"] for s in steps[:-1])  # it stops at the first step that does not hold
    assert len(steps) == 2 or not steps[-1]["holds"]
    assert (tmp_path / "capacity.png").stat().st_size > 0


def test_bench_capacity_pin_keeps_the_clients_off_the_servers_cores():
    from camfx.bench.capacity import split_cores

    cores = sorted(os.sched_getaffinity(0))
    assert split_cores("nice") == (cores, cores)
    if len(cores) >= 2:
        server, clients = split_cores("pin")
        assert server == cores[:-1] and clients == cores[-1:] and not set(server) & set(clients)


def test_bench_soak_watches_window_by_window(tmp_path, capsys):
    """Six 2-second windows of one session: each says what it saw, and the summary follows them,
    printed for a person (not a Python dict)."""
    import json

    from camfx.bench.soak import main

    assert main(["--minutes", "0.2", "--interval", "2", "--size", "320x240", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    summary_text = printed[printed.index("summary of"):]
    assert "{" not in summary_text and "lowest fps" in summary_text and "server memory" in summary_text
    data = json.loads((tmp_path / "soak.json").read_text())
    windows, summary = data["windows"], data["summary"]
    assert len(windows) >= 4
    for window in windows:
        assert window["fresh_fps"] > 0 and window["latency_ms"]["n"] > 0
        assert window["rss_mb"] > 0 and window["threads"] > 0 and window["fds"] > 0
    assert summary["fps_min"] == min(w["fresh_fps"] for w in windows)
    assert summary["rss_last_mb"] == windows[-1]["rss_mb"]
    assert summary["rss_max_after_first_mb"] == max(w["rss_mb"] for w in windows[1:])
    assert (tmp_path / "soak.png").stat().st_size > 0


def test_bench_backgrounds_plays_the_bundled_video_against_a_still(tmp_path):
    import json

    from camfx.bench.backgrounds import main

    out = tmp_path / "backgrounds.json"
    assert main(["--height", "360", "--rounds", "1", "--seconds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["frame"] == [360, 640]
    assert result["frame_path_ms"]["still"]["n"] > 5 and result["frame_path_ms"]["video"]["n"] > 5
    assert result["video_frames_shown"] > 1 and result["video_fps"] == 24.0  # it played
    assert result["decoder_cpu_per_second"] > 0


def test_bench_reference_times_both_on_the_same_frames(tmp_path):
    """The reference compose blurs the background and keeps the person; the bench writes both
    systems' figures per size and the ratios between them."""
    import json

    import cv2

    from camfx.bench.reference import ReferenceBlur, main

    frame = cv2.cvtColor(yuv.to_rgb(person_clip(640, 480, 1)[0]), cv2.COLOR_RGB2BGR)
    reference = ReferenceBlur()
    out = reference(frame)
    reference.close()
    diff = np.abs(out.astype(int) - frame).mean(axis=2)
    assert diff[:, :60].mean() > 3 * diff[200:400, 280:360].mean()  # the wall's edge blurred, the face kept

    assert main(["--sizes", "320x240", "--frames", "3", "--rounds", "1", "--pace-fps", "0", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "reference.json").read_text())["results"][0]
    assert row["size"] == "320x240" and row["camfx"]["wall_ms"]["n"] == 3 and row["reference"]["wall_ms"]["n"] == 3
    assert row["wall_ratio"] == pytest.approx(row["reference"]["wall_ms"]["p50"] / row["camfx"]["wall_ms"]["p50"], abs=0.01)


def test_bench_segment_skip_counts_the_model_calls_and_keeps_the_figures(tmp_path):
    """Without segment_skip the model runs on every frame; with it, on every frame of the
    swaying person and on fewer of the still one; the quality figures are there per system."""
    import json

    from camfx.bench.segment_skip import main

    argv = ["--size", "640x480", "--clips", "busy", "--frames", "8", "--levels", "4", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "segment_skip.json").read_text())
    assert data["quality_clip_model_calls"]["busy"]["camfx"] == {"calls": 8, "reused": 0}
    skipped = data["quality_clip_model_calls"]["busy"]["camfx-skip4"]
    assert skipped["calls"] + skipped["reused"] == 8 and skipped["calls"] >= 2
    assert data["bench_clip_model_calls"]["moving"]["camfx-skip4"] == {"calls": 8, "reused": 0}
    assert data["bench_clip_model_calls"]["still"]["camfx-skip4"] == {"calls": 2, "reused": 6}
    assert set(data["summary"]["640x480"]["flicker x1e-3"]) == {"camfx", "camfx-skip4", "raw"}
    assert (tmp_path / "segment_skip.md").read_text().startswith("**640x480")


def test_bench_engine_breaks_the_frame_path_down(tmp_path):
    """Every stage, the conversions and what lies outside them; the model calls it made."""
    import json

    from camfx.bench.engine import main

    argv = ["--sizes", "640x480", "--effects", "none", "blur", "--frames", "8", "--clip", "still",
            "--segment-skip", "4", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = {r["effect"]: r for r in json.loads((tmp_path / "engine.json").read_text())["results"]}
    blur = rows["blur"]
    frame_path = ["convert_in", "background", "segment", "refine", "effect", "convert_out"]
    assert [stage for stage in blur["stages_ms"] if stage in frame_path] == frame_path  # and the face stages, off
    assert blur["wall_ms"]["n"] == 8 and blur["overhead_ms"]["n"] == 8 and blur["cpu_ms_per_frame"] > 0
    assert blur["wall_ms"]["p50"] >= blur["stages_ms"]["segment"]["p50"]
    calls = blur["model_calls"]
    assert calls["calls"] + calls["reused"] == 28 and 0 < calls["calls"] < 28  # 20 warm-up frames and 8
    assert rows["none"]["model_calls"] == {"calls": 0, "reused": 0}
