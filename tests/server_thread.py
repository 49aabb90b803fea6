"""A real camfx server on a loopback port, in a thread with its own event loop (the engine's
ServerThread), for tests whose driver is synchronous (Playwright's sync API, hypothesis)."""

from __future__ import annotations

import json
import time
import urllib.request

from camfx.engine import serve


class ServerThread(serve.ServerThread):
    """camfx's server on 127.0.0.1 (a free port) from a background event loop, so the synchronous
    Playwright API can drive the browser from the test thread; plus blocking HTTP helpers."""

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
