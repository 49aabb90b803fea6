"""The HTTP API against a real server on loopback: happy paths and every error path."""

import asyncio
import json
import struct
import zlib

import aiohttp
import cv2
import numpy as np
import pytest

from camfx.engine.config import ServerConfig
from camfx.engine.transport.http import MAX_JSON_BYTES, MAX_UPLOAD_BYTES

from ..conftest import start_server
from ..helpers import make_offer

pytestmark = pytest.mark.webrtc


async def post(url, **kwargs):
    async with aiohttp.ClientSession() as http:
        async with http.post(url, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


async def get(url):
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def raw_post(server, path: str, head_length: int, body: bytes) -> tuple[int, dict]:
    """POST over a bare socket that announces `head_length` bytes, sends `body`, reads the
    reply and hangs up (aiohttp's client would keep uploading a refused body)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {head_length}\r\n\r\n".encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    headers = await reader.readuntil(b"\r\n\r\n")
    length = int(next(h.split(b":")[1] for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length")))
    reply = json.loads(await reader.readexactly(length))
    writer.close()
    return int(status_line.split()[1]), reply


async def open_session(server, params=None) -> str:
    pc, sdp = await make_offer()
    status, body = await post(f"{server.url}/offer", json={"sdp": sdp, "type": "offer", "params": params or {}})
    await pc.close()
    assert status == 200, body
    assert body["type"] == "answer" and "m=video" in body["sdp"]
    return body["session_id"]


async def test_offer_returns_an_answer_with_a_session(server):
    session_id = await open_session(server, {"effect": "remove"})
    assert server.sessions[session_id].stream.params.effect == "remove"


async def test_page_health_and_metrics(server):
    status, ctype, text = await get(f"{server.url}/")
    assert status == 200 and "text/html" in ctype and "<video" in text
    status, _, text = await get(f"{server.url}/healthz")
    health = json.loads(text)
    assert health["status"] == "ok" and health["sessions"] == 0
    assert health["runtimes"] == {"general": "onnxruntime:CPUExecutionProvider", "landscape": "onnxruntime:CPUExecutionProvider"}
    status, ctype, text = await get(f"{server.url}/metrics")
    assert status == 200 and "text/plain" in ctype
    for name in ("camfx_frames_in_total", "camfx_frames_dropped_total", "camfx_deadline_misses_total",
                 "camfx_stage_seconds_bucket", "camfx_sessions"):
        assert name in text


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b'{"sdp": "v=0 nonsense", "type": "offer"}', 400),
        (b'{"sdp": 5, "type": "offer"}', 400),
        (b'{"sdp": "x", "type": "answer"}', 400),
        (b"[]", 400),
    ],
)
async def test_malformed_offers_get_400(server, body, status):
    got, reply = await post(f"{server.url}/offer", data=body, headers={"Content-Type": "application/json"})
    assert got == status and reply["error"]
    assert len(server.sessions) == 0  # nothing left behind


async def test_offer_without_video_gets_400(server):
    pc, sdp = await make_offer("audio")
    status, body = await post(f"{server.url}/offer", json={"sdp": sdp, "type": "offer"})
    await pc.close()
    assert status == 400 and "video" in body["error"]
    assert len(server.sessions) == 0


@pytest.mark.parametrize(
    "params, field",
    [({"effect": "sepia"}, "effect"), ({"blur_strength": 0}, "blur_strength"), ({"background_image": "nope"}, "background_image")],
)
async def test_offer_with_bad_params_gets_422_naming_the_field(server, params, field):
    pc, sdp = await make_offer()
    status, body = await post(f"{server.url}/offer", json={"sdp": sdp, "type": "offer", "params": params})
    await pc.close()
    assert status == 422 and body["errors"][0]["field"] == field
    assert len(server.sessions) == 0


@pytest.mark.parametrize("announced, sent", [(MAX_JSON_BYTES + 10, 0), (MAX_JSON_BYTES + 10, MAX_JSON_BYTES + 10)])
async def test_oversized_body_gets_413(server, announced, sent):
    status, body = await raw_post(server, "/offer", announced, b"x" * sent)
    assert status == 413 and "limited" in body["error"]


async def test_params_update_validates_and_applies(server):
    session_id = await open_session(server)
    url = f"{server.url}/sessions/{session_id}/params"
    status, body = await post(url, json={"effect": "toon", "toon_edges": 0.2})
    assert status == 200 and body["effect"] == "toon" and body["toon_edges"] == 0.2
    status, body = await post(url, json={"mask_feather": 99})
    assert status == 422 and body["errors"][0]["field"] == "mask_feather"
    status, body = await post(url, data=b"{oops")
    assert status == 400
    assert server.sessions[session_id].stream.params.effect == "toon"  # the bad updates changed nothing


async def test_unknown_session_gets_404(server):
    status, body = await post(f"{server.url}/sessions/nope/params", json={"effect": "none"})
    assert status == 404


async def test_upload_background_then_use_it(server):
    image = np.zeros((90, 160, 3), np.uint8)
    image[:] = (10, 200, 30)
    png = cv2.imencode(".png", image)[1].tobytes()
    status, body = await post(f"{server.url}/backgrounds", data=png)
    assert status == 201
    image_id = body["id"]
    status, _, text = await get(f"{server.url}/backgrounds")
    assert image_id in text and "studio" in text
    session_id = await open_session(server)
    status, body = await post(
        f"{server.url}/sessions/{session_id}/params", json={"effect": "replace", "background_image": image_id}
    )
    assert status == 200 and body["background_image"] == image_id


async def test_upload_that_is_not_an_image_gets_400(server):
    status, body = await post(f"{server.url}/backgrounds", data=b"GIF89a but not really")
    assert status == 400 and "image" in body["error"]


async def test_oversized_upload_gets_413(server):
    status, body = await raw_post(server, "/backgrounds", MAX_UPLOAD_BYTES + 1, b"\0" * 1024)
    assert status == 413 and "limited" in body["error"]


async def test_upload_with_huge_dimensions_is_refused_before_decoding(server):
    # A tiny PNG whose header claims 20000 x 20000 pixels: refused from the header alone.
    png = cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes()
    ihdr = b"IHDR" + struct.pack(">II", 20000, 20000) + png[24:29]
    big = png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]
    status, body = await post(f"{server.url}/backgrounds", data=big)
    assert status == 400 and "pixels" in body["error"]


async def test_session_cap_gets_503():
    runner, server = await start_server(ServerConfig(max_sessions=1))
    try:
        await open_session(server)
        pc, sdp = await make_offer()
        status, body = await post(f"{server.url}/offer", json={"sdp": sdp, "type": "offer"})
        await pc.close()
        assert status == 503 and "limit" in body["error"]
        assert len(server.sessions) == 1
    finally:
        await runner.cleanup()


async def test_delete_closes_the_session(server):
    session_id = await open_session(server)
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{server.url}/sessions/{session_id}") as resp:
            assert resp.status == 200
    assert session_id not in server.sessions
