"""A real camfx server on a loopback port, in a thread with its own event loop, for tests whose
driver is synchronous (Playwright's sync API, hypothesis)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request

from aiohttp import web

from camfx.engine.config import ServerConfig
from camfx.engine.transport import http_server
from camfx.engine.transport.http import HUB, SESSIONS, create_app, http_limits


class ServerThread:
    """camfx's aiohttp app on 127.0.0.1 (a free port), served from a background event loop so
    the synchronous Playwright API can drive the browser from the test thread."""

    def __init__(self, config: ServerConfig, ssl_context=None, port: int = 0):
        self.config = config
        self.port = port  # 0: a free one, chosen at start
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="camfx-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def call(self, coro, timeout: float = 60.0):
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def hub(self):
        return self._runner.app[HUB]

    @property
    def sessions(self):
        return self._runner.app[SESSIONS]

    def start(self) -> "ServerThread":
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        # Port 0: the system picks a free one; setup runs on_startup, which loads the models.
        self._runner = await http_server.start(create_app(self.config), "127.0.0.1", self.port,
                                               limits=http_limits(self.config), ssl_context=self.ssl_context)
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def stop(self) -> None:
        try:
            if self._runner is not None:
                self.call(self._runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    # Plain blocking HTTP from the test thread.
    def get(self, path: str):
        import ssl

        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        context = ssl._create_unverified_context() if self.ssl_context else None  # the tests' own certificate
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=10,
                                    context=context) as response:
            return json.loads(response.read())

    def session_count(self) -> int:
        return self.get("/healthz")["sessions"]

    def wait_sessions(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (n := self.session_count()) != count:
            assert time.monotonic() < deadline, f"server still has {n} sessions, expected {count}"
            time.sleep(0.1)
