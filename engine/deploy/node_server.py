"""A whole camfx server on a thread and event loop of its own, reached over loopback.

A cluster replica runs one: the same app `camfx serve` runs (every route, limit, token check and
error), on 127.0.0.1 and a port the system picks, so no signalling port opens beyond the
machine. The replica replays each request the ingress hands it (`forward`) to that port and
returns the answer; media goes from the server's peer connections straight to the peers.
"""

from __future__ import annotations

import aiohttp

from ..config import ServerConfig
from ..serve import ServerThread
from .routes import Forwarded

FORWARD_TIMEOUT_S = 60.0  # an offer's answer waits for ICE gathering: well under a second here
# Hop-by-hop headers and those the proxy sets itself are not passed on either way.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer",
            "proxy-connection", "date", "server"}


class NodeServer(ServerThread):
    """`start()` serves `config` on 127.0.0.1; `forward()` may be called from any thread's loop."""

    def __init__(self, config: ServerConfig):
        super().__init__(config, name="camfx-node")
        self._client: aiohttp.ClientSession | None = None

    async def started(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))

    async def stopping(self) -> None:
        if self._client is not None:
            await self._client.close()

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
        return await self.call_async(self._forward(request))
