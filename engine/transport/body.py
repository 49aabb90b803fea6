"""Request bodies read whole, under a size cap and a deadline.

`request.content.read(n)` returns what has arrived so far, not the body: over a real network a
JSON offer in two TCP segments, or any upload bigger than one socket read, came back short.
`read_body` reads until the end of the body, refuses more than `limit` bytes (413) and gives
up on a sender that is too slow (408), so a connection that stops sending cannot hold a handler.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterable

from aiohttp import web

from . import safe_json
from .errors import HTTPError

BODY_TIMEOUT_S = 30.0  # an 8 MiB upload at 2.5 Mbit/s


async def read_capped(chunks: AsyncIterable[bytes], limit: int, timeout: float, error: type[Exception]) -> bytes:
    """A body's chunks joined, or `error(413, ...)` past `limit` bytes / `error(408, ...)` past
    `timeout` seconds; `error` is the HTTP error type of whichever server reads (aiohttp's
    handlers here, the cluster's starlette ingress)."""

    async def whole() -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise error(413, f"the request body is limited to {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(whole(), timeout)
    except asyncio.TimeoutError:
        raise error(408, f"the request body did not arrive within {timeout:g} seconds") from None


async def read_body(request: web.Request, limit: int, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, or HTTPError 413 (over `limit` bytes) / 408 (not sent within `timeout`)."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPError(413, f"the request body is limited to {limit} bytes")
    return await read_capped(request.content.iter_any(), limit, timeout, HTTPError)


async def read_json(request: web.Request, limit: int, timeout: float = BODY_TIMEOUT_S) -> Any:
    """The body parsed as JSON (size and depth capped), or HTTPError 400 / 408 / 413."""
    raw = await read_body(request, limit, timeout)
    try:
        return safe_json.loads(raw, limit)
    except safe_json.JSONInputError as exc:
        raise HTTPError(400, str(exc)) from None
