"""Tokens on every endpoint (missing, wrong, right), what stays open without one, and the server
that refuses to serve beyond loopback with no token unless told to."""

from __future__ import annotations

import re
import subprocess
import sys

import aiohttp
import pytest

from camfx.engine.config import ServerConfig

from ..conftest import start_server

pytestmark = pytest.mark.unit

TOKEN = "correct horse battery staple"
OPEN = {("GET", "/"), ("GET", "/healthz"), ("GET", "/static/{path}"), ("GET", "/view/{name}")}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: "style.css" if m.group(1) == "path" else "x", path)


@pytest.fixture
async def guarded():
    runner, server = await start_server(ServerConfig(token=TOKEN))
    yield server
    await runner.cleanup()


async def test_every_endpoint_wants_the_token_but_the_page_and_health(guarded):
    routes = {(r.method, r.resource.canonical) for r in guarded.app.router.routes()
              if r.method not in ("HEAD", "OPTIONS") and r.resource is not None}
    assert len(routes) > 15  # the whole API, WHIP and WHEP included
    async with aiohttp.ClientSession() as http:
        for method, path in sorted(routes):
            template = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)
            url = guarded.url + concrete(path)
            for headers, wanted in (({}, "none"), ({"Authorization": "Bearer wrong"}, "wrong"),
                                    ({"Authorization": "Basic " + TOKEN}, "wrong"),
                                    ({"Authorization": f"Bearer {TOKEN}"}, "right")):
                async with http.request(method, url, headers=headers, data=b"{}") as resp:
                    if (method, template) in OPEN or wanted == "right":
                        assert resp.status != 401, (method, path, wanted)
                    else:
                        assert resp.status == 401, (method, path, wanted, resp.status)
                        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                        body = await resp.json()
                        assert body["error"] and ("wrong" in body["error"]) == (wanted == "wrong")


async def test_a_cors_preflight_needs_no_token_and_names_what_a_page_may_read(guarded):
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": "https://studio.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"}
        async with http.options(f"{guarded.url}/whip/main", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://studio.example"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert {"Location", "ETag", "Link"} <= set(resp.headers["Access-Control-Expose-Headers"].split(", "))
            assert resp.headers["Accept-Post"] == "application/sdp"


async def test_without_a_token_pages_of_other_origins_get_no_cors():
    runner, server = await start_server(ServerConfig())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.options(f"{server.url}/whip/main", headers={"Origin": "https://evil.example"}) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await runner.cleanup()


def test_serving_beyond_loopback_without_a_token_refuses_to_start():
    result = subprocess.run([sys.executable, "-m", "camfx", "serve", "--host", "0.0.0.0", "--port", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--token" in result.stderr and "--no-auth" in result.stderr
    assert "Traceback" not in result.stderr
