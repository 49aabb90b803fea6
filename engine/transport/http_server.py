"""aiohttp's server with the limits an exposed server needs.

- A cap on open connections: one more is answered 503 (JSON) and closed at once.
- A header deadline: a connection whose request has not fully arrived within `header_timeout`
  of opening (or of its last response) is closed. aiohttp's keep-alive timer does exactly this,
  so it is set to the header deadline; body deadlines are `transport.body`'s, and a body no
  one reads is drained for at most `linger` seconds.
- Errors from aiohttp's own HTTP parser (a bad request line, oversized headers) are JSON like
  every other error, without the parser's exception text.
- `run` starts it and turns the failures people hit (a port in use) into one clear line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import ssl
from dataclasses import dataclass
from typing import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .errors import error_bytes, error_response, new_request_id

log = logging.getLogger("camfx.http")


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive
    # After an answer that did not need the body (a 413, a 408), aiohttp keeps reading what is
    # still coming for this long, so the client sees the answer rather than a reset.
    linger: float = 2.0


class ServeError(RuntimeError):
    """The server could not start; the message says why, for one line on the console."""


class GuardedConnection(RequestHandler):
    """aiohttp's per-connection protocol, with the connection cap and JSON parser errors."""

    __slots__ = ("_max_connections",)

    def __init__(self, manager: "GuardedServer", **kwargs):
        super().__init__(manager, **kwargs)
        self._max_connections = manager.limits.max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._manager is not None and len(self._manager.connections) >= self._max_connections:
            self._force_close = True  # ignore whatever it sends before the close completes
            message = "the server has too many open connections; try again in a few seconds"
            transport.write(error_bytes(503, "Service Unavailable", message))  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        request_id = new_request_id()
        log.info("request %s: refused by the HTTP parser (%d): %s", request_id, status, message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was partly sent; the connection is closed instead")
        text = ("the request is not valid HTTP/1.1 (request line, headers or body framing)"
                if status < 500 else f"the server failed on this request; its log has the details under {request_id}")
        response = error_response(status, text, None, request_id)
        response.force_close()
        return response


class GuardedServer(web.Server):
    def __init__(self, *args, limits: HttpLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedConnection(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are `GuardedConnection`s."""

    def __init__(self, app: web.Application, limits: HttpLimits = HttpLimits(), **kwargs):
        super().__init__(app, keepalive_timeout=limits.header_timeout, lingering_time=limits.linger, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app, as AppRunner does
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             loop=asyncio.get_running_loop(), limits=self._limits, **self._kwargs)


async def start(app: web.Application, host: str, port: int, *, limits: HttpLimits = HttpLimits(),
                ssl_context: ssl.SSLContext | None = None, access_log: bool = False) -> GuardedRunner:
    """Serve `app` on host:port; returns the runner (`await runner.cleanup()` to stop)."""
    kwargs = {} if access_log else {"access_log": None}
    runner = GuardedRunner(app, limits, **kwargs)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is already in use; stop what uses it or pick another "
                             "with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(f"{host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one of "
                             "its own addresses with --host") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return runner


def run(app: web.Application, host: str, port: int, *, on_started: Callable[[], None] = lambda: None,
        **kwargs) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly. Raises ServeError."""

    async def main() -> None:
        runner = await start(app, host, port, **kwargs)
        on_started()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
                pass
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
