"""Hostile and unlucky input against a real server on loopback: every defect found by trying the
server as an attacker would has a test here that failed before its fix."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.config import ServerConfig
from camfx.engine.transport.ice import peer_connection

from ..conftest import start_server

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(120)]


async def browser_like_offer() -> str:
    """An offer shaped like the demo page's: a video transceiver and the control data channel."""
    pc = peer_connection()
    pc.addTransceiver("video", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post_json(url: str, body, **kwargs) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, **kwargs) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.json(content_type=None)


async def raw_exchange(url: str, *parts: bytes, pause: float = 0.0, read_timeout: float = 10.0) -> bytes:
    """Send `parts` on one bare TCP connection, `pause` seconds apart, and read until it closes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for i, part in enumerate(parts):
        if i and pause:
            await asyncio.sleep(pause)
        writer.write(part)
        await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_user_error(status: int, ctype: str, body: dict, expected: int) -> None:
    """A JSON error for a person: the status, a message, no exception text, a request id."""
    assert status == expected, body
    assert ctype.startswith("application/json")
    assert body["error"] and isinstance(body["errors"], list) and body["request_id"]
    assert not re.search(r"0x[0-9a-f]{6,}|Traceback|NoneType|object has no attribute|StopIteration", body["error"])


# 1. A broken offer must not lock the server -----------------------------------------------------

async def test_offers_whose_bundle_names_a_missing_section_get_400_and_leave_no_slot():
    runner, server = await start_server(ServerConfig(max_sessions=4))
    try:
        sdp = (await browser_like_offer()).replace("a=group:BUNDLE ", "a=group:BUNDLE 7 ")
        for _ in range(5):  # more than the session cap: each used to hold a slot for ever
            status, ctype, body = await post_json(f"{server.url}/offer", {"sdp": sdp, "type": "offer"})
            assert_user_error(status, ctype, body, 400)
            assert "BUNDLE" in body["error"]
        assert len(server.sessions) == 0
        status, _, body = await post_json(f"{server.url}/offer", {"sdp": await browser_like_offer(), "type": "offer"})
        assert status == 200, body
    finally:
        await runner.cleanup()


async def test_a_failing_teardown_still_frees_the_slot(server):
    """aiortc raised from close() on connections it half set up; the slot must go all the same."""
    status, _, body = await post_json(f"{server.url}/offer", {"sdp": await browser_like_offer(), "type": "offer"})
    assert status == 200
    session = server.sessions[body["session_id"]]
    real_close = session.pc.close

    async def broken_close():
        await real_close()
        raise AttributeError("'NoneType' object has no attribute 'stop'")

    session.pc.close = broken_close
    async with aiohttp.ClientSession() as http, http.delete(f"{server.url}/sessions/{session.id}") as resp:
        assert resp.status == 200
    assert len(server.sessions) == 0


async def test_unusable_sdp_gets_a_message_without_exception_text(server):
    sdp = (await browser_like_offer()).replace("a=rtpmap:97 VP8/90000", "a=rtpmap:97 VP8/abc")
    status, ctype, body = await post_json(f"{server.url}/offer", {"sdp": sdp, "type": "offer"})
    assert_user_error(status, ctype, body, 400)
    assert "invalid literal" not in body["error"]  # what int() said about "abc"
    assert len(server.sessions) == 0


# 2. Bodies are read whole ------------------------------------------------------------------------

def noisy_jpeg(width: int, height: int) -> bytes:
    """A photo-sized JPEG that does not compress: well over what one socket read returns."""
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.mark.parametrize("width, height", [(1200, 900), (2400, 1800)])
async def test_photo_uploads_of_megabytes_are_read_whole(server, width, height):
    jpeg = noisy_jpeg(width, height)
    assert len(jpeg) > 1_000_000
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/backgrounds", data=jpeg) as resp:
        assert resp.status == 201, await resp.text()
        image_id = (await resp.json())["id"]
    assert image_id in server.hub.backgrounds.names()["uploaded"]


async def test_a_json_offer_sent_in_two_pieces_is_read_whole(server):
    body = json.dumps({"sdp": await browser_like_offer(), "type": "offer"}).encode()
    head = (f"POST /offer HTTP/1.1\r\nHost: {server.url[7:]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    raw = await raw_exchange(server.url, head + body[:300], body[300:], pause=0.2)
    status, _, reply = split_response(raw)
    assert status == 200, reply
    assert json.loads(reply)["type"] == "answer"


# 3. Slots held by nobody -------------------------------------------------------------------------

async def test_an_offer_that_never_connects_frees_its_slot_within_seconds(server):
    status, _, body = await post_json(f"{server.url}/offer", {"sdp": await browser_like_offer(), "type": "offer"})
    assert status == 200 and len(server.sessions) == 1
    deadline = time.monotonic() + 10  # "a few seconds": it was 30
    while server.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(server.sessions) == 0


async def test_a_peer_that_stops_sending_is_dropped_within_seconds(clip_640):
    runner, server = await start_server(ServerConfig(media_timeout=2.0))
    peer = ClientPeer(SyntheticCamera(clip_640[:4]))
    try:
        await peer.connect(server.url, {"effect": "none"})
        await peer.wait_frames(5)
        # The peer goes silent without a goodbye: its camera stops and no BYE, no DELETE is sent.
        peer.pc.getSenders()[0].replaceTrack(None)
        deadline = time.monotonic() + 2.0 + 4
        while server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(server.sessions) == 0
    finally:
        await peer.close()
        await runner.cleanup()


@pytest.mark.parametrize("origin", ["http://attacker.example", "null"])
async def test_cross_site_posts_are_refused(server, origin):
    sdp = await browser_like_offer()
    # What a "simple" cross-site form or fetch sends: no preflight, the page's origin named.
    status, ctype, body = await post_json(f"{server.url}/offer", {"sdp": sdp, "type": "offer"},
                                          headers={"Origin": origin, "Content-Type": "text/plain"})
    assert_user_error(status, ctype, body, 403)
    assert len(server.sessions) == 0
    status, _, _ = await post_json(f"{server.url}/offer", {"sdp": sdp, "type": "offer"}, headers={"Origin": server.url})
    assert status == 200  # the server's own page


async def test_a_rebound_host_name_is_refused_on_a_loopback_server(server):
    status, ctype, body = await post_json(f"{server.url}/offer", {"sdp": "v=0", "type": "offer"},
                                          headers={"Host": "attacker.example:8080"})
    assert_user_error(status, ctype, body, 403)


# 4. Deep JSON ------------------------------------------------------------------------------------

async def test_deeply_nested_json_gets_400(server):
    deep = "[" * 1000 + "]" * 1000
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", data=deep, headers={"Content-Type": "application/json"}) as resp:
            assert_user_error(resp.status, resp.headers["Content-Type"], await resp.json(), 400)
            assert "nested" in (await resp.json())["error"]


# Numbers Python's json reads into values camfx must not accept, or cannot read at all: an integer
# past Python's 4300-digit limit raised ValueError (a 500), a float past 1e308 became inf.
UNREADABLE_NUMBERS = {
    "a 5000-digit integer": '{"type": "offer", "sdp": "v=0", "params": {"seed": ' + "7" * 5000 + "}}",
    "a 5000-digit float": '{"type": "offer", "sdp": "v=0", "params": {"strength": 0.' + "5" * 5000 + "}}",
    "an exponent past float": '{"type": "offer", "sdp": "v=0", "params": {"strength": 1e999}}',
    "NaN": '{"type": "offer", "sdp": "v=0", "params": {"strength": NaN}}',
    "Infinity": '{"type": "offer", "sdp": "v=0", "params": {"blur_strength": Infinity}}',
    "-Infinity": '{"type": "offer", "sdp": "v=0", "params": {"blur_strength": -Infinity}}',
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_NUMBERS))
async def test_json_numbers_python_cannot_or_should_not_read_get_400(server, case):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", data=UNREADABLE_NUMBERS[case],
                             headers={"Content-Type": "application/json"}) as resp:
            body = await resp.json()
            assert_user_error(resp.status, resp.headers["Content-Type"], body, 400)
            assert "number" in body["error"] or "NaN" in body["error"], body
    assert len(server.sessions) == 0


async def test_no_control_message_can_end_a_session(server, clip_640):
    peer = ClientPeer(SyntheticCamera(clip_640[:4]))
    try:
        await peer.connect(server.url, {"effect": "blur"})
        await peer.wait_frames(10)
        numbers = ['{"seed": ' + "7" * 5000 + "}", '{"strength": 1e999}', '{"strength": NaN}']
        for message in ["[" * 1000 + "]" * 1000, '{"effect": ' * 500, "x" * 20000, b"\xff\xfe\x00", "null", "[]",
                        *numbers]:
            peer.control.send(message)
        await asyncio.sleep(1.0)
        errors = [m for m in peer.control_messages if m["type"] == "error"]
        assert len(errors) == 9
        assert any("nested" in e["errors"][0]["message"] for e in errors)
        messages = [e["errors"][0]["message"] for e in errors[-3:]]
        assert all("number" in m or "NaN" in m for m in messages), messages
        assert "could not apply" not in " ".join(messages)
        count = len(peer.received.arrivals)
        await peer.wait_frames(count + 15, timeout=10)  # still streaming
        peer.control.send('{"effect": "none"}')
        await asyncio.sleep(0.5)
        assert server.sessions[peer.session_id].stream.params.effect == "none"
    finally:
        await peer.close()


# 5. Uploads off the frame threads ----------------------------------------------------------------

def big_png(pixels_wide: int = 4000, pixels_high: int = 3000) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (pixels_wide, pixels_high), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def test_uploads_decode_on_their_own_thread_and_never_queue(server):
    backgrounds = server.hub.backgrounds
    threads: list[str] = []
    real_add = backgrounds.add_upload
    release = threading.Event()

    def watched_add(data):
        threads.append(threading.current_thread().name)
        release.wait(10)  # hold the decoder so the uploads pile up
        return real_add(data)

    backgrounds.add_upload = watched_add
    png = big_png()
    async with aiohttp.ClientSession() as http:

        async def upload():
            async with http.post(f"{server.url}/backgrounds", data=png) as resp:
                return resp.status, resp.headers.get("Retry-After"), await resp.json()

        pending = [asyncio.ensure_future(upload()) for _ in range(5)]
        await asyncio.sleep(1.0)
        release.set()
        results = await asyncio.gather(*pending)
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(201) == 3 and statuses.count(429) == 2  # three in progress at most
    assert all(retry for status, retry, _ in results if status == 429)
    assert threads and all(name.startswith("camfx-upload") for name in threads)


async def test_each_client_has_an_upload_rate_limit(server):
    png = big_png(64, 48)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(7):
            async with http.post(f"{server.url}/backgrounds", data=png) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    body = await resp.json()
                    assert "try again" in body["error"] and int(resp.headers["Retry-After"]) > 0
    assert statuses[:5] == [201] * 5 and 429 in statuses[5:]


async def test_huge_images_are_refused_from_their_header(server):
    # 5000 x 4000 = 20 megapixels: refused before decoding, with the size in the message.
    status, ctype, body = await post_json(f"{server.url}/backgrounds", None, data=big_png(5000, 4000))
    assert_user_error(status, ctype, body, 400)
    assert "megapixels" in body["error"]


async def test_unreadable_uploads_say_so_without_internals(server):
    status, ctype, body = await post_json(f"{server.url}/backgrounds", None, data=b"\x89PNG\r\n\x1a\nbroken")
    assert_user_error(status, ctype, body, 400)
    assert "readable image" in body["error"]


# 6. Read timeouts and a connection cap -----------------------------------------------------------

async def test_slow_headers_and_bodies_are_cut_off_and_connections_are_capped():
    runner, server = await start_server(ServerConfig(header_timeout=1.0, body_timeout=1.0, max_connections=8))
    try:
        started = time.monotonic()
        # Headers that never end: closed after the header deadline.
        raw = await raw_exchange(server.url, b"POST /offer HTTP/1.1\r\nHost: x\r\n", read_timeout=5)
        assert raw == b"" and time.monotonic() - started < 4
        # A body that never comes: 408, JSON.
        head = f"POST /offer HTTP/1.1\r\nHost: {server.url[7:]}\r\nContent-Length: 500\r\n\r\n{{".encode()
        status, headers, body = split_response(await raw_exchange(server.url, head, read_timeout=5))
        assert status == 408 and headers["content-type"].startswith("application/json")
        assert "did not arrive" in json.loads(body)["error"]
        # Eight idle connections fill the server; the ninth gets 503 at once.
        idle = [await asyncio.open_connection("127.0.0.1", server.hub.config.port) for _ in range(8)]
        await asyncio.sleep(0.2)
        status, _, body = split_response(await raw_exchange(server.url, b"GET /healthz HTTP/1.1\r\n\r\n"))
        assert status == 503 and "too many open connections" in json.loads(body)["error"]
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(1.5)
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200  # slots come back when connections go
    finally:
        await runner.cleanup()


# 7. Nothing beyond loopback ----------------------------------------------------------------------

async def test_the_answer_offers_only_the_served_address_and_no_stun(server):
    status, _, body = await post_json(f"{server.url}/offer", {"sdp": await browser_like_offer(), "type": "offer"})
    assert status == 200
    candidates = [line for line in body["sdp"].splitlines() if line.startswith("a=candidate:")]
    assert candidates, body["sdp"]
    assert all(line.split()[4] == "127.0.0.1" and " typ host" in line for line in candidates), candidates


def test_every_peer_connection_is_made_with_an_explicit_configuration():
    """aiortc's peer connection without a configuration asks a public STUN server: only
    camfx.engine.ice may construct one."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("engine", "bench", "export", "models", "tests")
        for path in (root / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<!new )RTCPeerConnection\(", line) and path.name != "ice.py" and path != Path(__file__)
    ]
    assert offenders == []


async def test_peer_connections_have_no_ice_servers_unless_configured():
    pc = peer_connection()
    try:
        transceiver = pc.addTransceiver("video")
        agent = transceiver.sender.transport.transport.iceGatherer._connection  # aioice's, as aiortc made it
        assert agent.stun_server is None and agent.turn_server is None
    finally:
        await pc.close()


# 9. Every error is JSON --------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_requests_aiohttp_cannot_parse_get_json_errors(server, request_bytes):
    status, headers, body = split_response(await raw_exchange(server.url, request_bytes))
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    reply = json.loads(body)
    assert reply["error"] and reply["request_id"] and headers["x-request-id"] == reply["request_id"]


@pytest.mark.parametrize("method, path, status", [("GET", "/nothing-here", 404), ("PUT", "/offer", 405)])
async def test_aiohttp_routing_errors_are_json(server, method, path, status):
    async with aiohttp.ClientSession() as http, http.request(method, server.url + path) as resp:
        body = await resp.json()
        assert resp.status == status and body["error"] and body["request_id"]


async def test_an_unexpected_failure_is_a_json_500_with_the_detail_only_in_the_log(caplog):
    from aiohttp import web

    from camfx.engine.transport import http_server
    from camfx.engine.transport.errors import json_errors

    async def broken(request):
        raise RuntimeError("secret detail <_io.BytesIO object at 0x7f00deadbeef>")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/broken", broken)
    runner = await http_server.start(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/broken") as resp:
            body = await resp.json()
            assert resp.status == 500 and resp.headers["X-Request-Id"] == body["request_id"]
        assert "secret" not in json.dumps(body)
        assert body["request_id"] in body["error"]
        assert any("secret detail" in r.exc_text for r in caplog.records if r.exc_text and body["request_id"] in r.message)
    finally:
        await runner.cleanup()

