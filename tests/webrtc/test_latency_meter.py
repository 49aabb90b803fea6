"""`camfx bench latency` as a meter for servers it did not start: a running camfx (https, a
token), any WHIP / WHEP pair, and rows it cannot trust marked as such."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from camfx.bench.latency import main
from camfx.bench.usage import unreliable_reasons
from camfx.bench.latency import free_port

pytestmark = pytest.mark.webrtc

TOKEN = "meter-test-token"
BRIEF = ["--sizes", "320x240", "--codecs", "VP8", "--seconds", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`camfx serve --tls self-signed --token T` as its own process: what a user points the meter at."""
    port = free_port()
    env = {**os.environ, "CAMFX_CACHE": str(tmp_path_factory.mktemp("cache"))}
    proc = subprocess.Popen([sys.executable, "-m", "camfx", "serve", "--port", str(port), "--tls", "self-signed",
                             "--token", TOKEN, "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"https://127.0.0.1:{port}"
    unverified = ssl._create_unverified_context()
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5, context=unverified)
        except urllib.error.HTTPError:
            break  # up (and asking for the token)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "camfx serve did not come up"
            time.sleep(0.3)
        else:
            break
    yield url
    proc.terminate()
    proc.wait(30)


def rows_of(out) -> dict[str, dict]:
    data = json.loads((out / "latency.json").read_text())
    return {r["config"]: r for r in data["results"]}, data


def fair(row: dict) -> bool:
    """What the meter's own figures say about the row: every fps at 95% of 30 and the machine
    not saturated. On a busy machine a row may rightly fail this; then it must say so."""
    return row["fps"] >= 28.5 and row["sent_fps"] >= 28.5 and row["machine_cpu_percent"] <= 90


def test_a_running_server_with_a_token_over_https(served, tmp_path, capsys):
    assert main(["--url", served, "--token", TOKEN, "--insecure", "--effects", "blur", *BRIEF,
                 "--out", str(tmp_path)]) == 0
    rows, data = rows_of(tmp_path)
    assert set(rows) == {"blur", "whip-whep blur"}  # no baselines: nothing was started here
    for row in rows.values():
        assert row["latency_ms"]["n"] > 10 and 0 < row["latency_ms"]["p50"] < 1000
        assert row["server_cores"] is None  # not this run's process: its CPU is not ours to read
        assert bool(row["unreliable"]) == (not fair(row)), row
    assert rows["blur"]["server"]["effect"] == "blur"
    stream = rows["whip-whep blur"]["server"]
    assert stream["name"].startswith("bench-") and stream["viewers"] == 1  # a name of its own on a shared server
    server = data["servers"][served]
    assert server["status"] == "ok" and server["sessions"] <= 1
    # What a reader needs to trust the figures.
    assert {"camfx", "aiortc", "av", "onnxruntime", "numpy"} <= set(data["machine"]["versions"])
    assert data["machine"]["cores"] > 0 and isinstance(data["machine"]["gpu"], list)
    assert data["command"].startswith("camfx bench latency --url https://")
    out = capsys.readouterr().out
    assert "round 1/1 320x240 VP8 blur:" in out and "round 1/1 320x240 VP8 whip-whep blur:" in out
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_without_the_token_it_says_so(served, tmp_path):
    with pytest.raises(SystemExit, match="at https:.*offer refused: 401 this server needs a token"):
        main(["--url", served, "--insecure", *BRIEF, "--out", str(tmp_path)])


def test_any_whip_whep_pair(served, tmp_path):
    whip, whep = f"{served}/whip/pair?effect=blur&probe=true", f"{served}/whep/pair"
    assert main(["--whip", whip, "--whep", whep, "--token", TOKEN, "--insecure", *BRIEF, "--out", str(tmp_path)]) == 0
    rows, _ = rows_of(tmp_path)
    assert set(rows) == {"whip-whep"}
    row = rows["whip-whep"]
    assert row["latency_ms"]["n"] > 10 and row["fresh_fps"] > 10
    assert bool(row["unreliable"]) == (not fair(row)), row


def test_a_starved_sender_is_marked_unreliable(served, tmp_path, capsys):
    assert main(["--url", served, "--token", TOKEN, "--insecure", "--effects", "none", "--no-whip",
                 "--send-fps", "15", *BRIEF, "--out", str(tmp_path)]) == 0
    rows, data = rows_of(tmp_path)
    row = rows["none"]
    assert row["sent_fps"] < 17 and data["camera_fps"] == 30 and data["send_fps"] == 15
    assert any("the sender held" in why for why in row["unreliable"])
    assert any("came back" in why for why in row["unreliable"])
    assert "UNRELIABLE" in capsys.readouterr().out


def test_the_rule_for_unreliable_rows():
    assert unreliable_reasons(30, 30.0, 29.9, 60) == []
    assert unreliable_reasons(30, 28.5, 28.5, 90) == []  # at the edges: still fair
    assert unreliable_reasons(30, 30, 28.4, 50) == ["28.4 of 30 fps came back"]
    assert unreliable_reasons(30, 15, 15, 50) == ["the sender held 15.0 of 30 fps", "15.0 of 30 fps came back"]
    assert unreliable_reasons(30, 30, 30, 97.4) == ["the machine's CPU was 97% busy"]


@pytest.mark.parametrize("argv, expected", [
    (["--whip", "http://127.0.0.1:1/whip/x"], "--whip and --whep go together"),
    (["--url", "http://127.0.0.1:1", "--port", "9000"], "--port and --serve-args are for the servers this run starts"),
    (["--port", "70000"], "a port from 1 to 65533"),
    (["--rounds", "0"], "--rounds must be at least 1"),
])
def test_bad_options_are_one_clear_error(argv, expected, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert expected in capsys.readouterr().err


def test_a_server_that_is_not_there(tmp_path):
    with pytest.raises(SystemExit, match="did not answer /healthz"):
        main(["--url", f"http://127.0.0.1:{free_port()}", *BRIEF, "--out", str(tmp_path)])
