"""A whole camfx server on a thread and event loop of its own, reached over loopback.

A cluster replica runs one: the same app `camfx serve` runs (every route, limit, token check and
error), on 127.0.0.1 and a port the system picks, so no signalling port opens beyond the
machine. The replica replays each request the ingress hands it (`forward`) to that port and
returns the answer; media goes from the server's peer connections straight to the peers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine

import aiohttp
from aiohttp import web

from ..config import ServerConfig
from ..transport import http_server
from ..transport.http import HUB, SESSIONS, create_app, http_limits
from .routes import Forwarded

FORWARD_TIMEOUT_S = 60.0  # an offer's answer waits for ICE gathering: well under a second here
# Hop-by-hop headers and those the proxy sets itself are not passed on either way.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer",
            "proxy-connection", "date", "server"}


class NodeServer:
    """`start()` serves `config` on 127.0.0.1; `forward()` may be called from any thread's loop."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="camfx-node", daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def start(self, timeout: float = 120.0) -> "NodeServer":
        self._thread.start()
        self.submit(self._start()).result(timeout)
        return self

    async def _start(self) -> None:
        # setup() runs on_startup, which loads the models: /healthz names their runtimes from the start.
        self._runner = await http_server.start(create_app(self.config), "127.0.0.1", 0,
                                               limits=http_limits(self.config))
        self.port = self._runner.addresses[0][1]
        self._client = aiohttp.ClientSession(auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))

    @property
    def app(self) -> web.Application:
        assert self._runner is not None, "not started"
        return self._runner.app

    @property
    def hub(self):
        return self.app[HUB]

    @property
    def sessions(self):
        return self.app[SESSIONS]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._runner is not None

    async def _forward(self, request: Forwarded) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        url = f"http://127.0.0.1:{self.port}{request.path}" + (f"?{request.query}" if request.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in _DROPPED]
        async with self._client.request(request.method, url, headers=headers, data=request.body or None,
                                        allow_redirects=False, skip_auto_headers=("User-Agent",)) as response:
            body = await response.read()
            kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROPPED]
            return response.status, kept, body

    async def forward(self, request: Forwarded) -> tuple[int, list[tuple[str, str]], bytes]:
        """Replay `request` to this server (from any event loop); (status, headers, body)."""
        return await asyncio.wrap_future(self.submit(self._forward(request)))

    async def call(self, coro: Coroutine) -> Any:
        """Run `coro` on the server's loop (from any event loop)."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 30.0) -> None:
        """Close every session and the server, then the loop and its thread. Idempotent."""
        if not self._thread.is_alive():
            return

        async def cleanup() -> None:
            if self._client is not None:
                await self._client.close()
            if self._runner is not None:
                await self._runner.cleanup()  # on_shutdown closes the sessions and the hub's pools

        try:
            self.submit(cleanup()).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()
