"""Cross-site requests and DNS rebinding: only the server's own pages may drive its API.

A page on any site can POST to a server on localhost (a "simple" request needs no preflight);
four such offers once filled every session slot. A browser names the page's origin in `Origin`,
so state-changing requests from another origin are refused (403) unless it was allowed. A
server bound to loopback also answers only to loopback host names, so a site that rebinds its
own name to 127.0.0.1 does not become "same origin". Clients that are not browsers (OBS, curl,
aiortc) send no Origin and are not affected.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable
from urllib.parse import urlsplit

from aiohttp import web

from .errors import HTTPError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(netloc: str) -> str:
    return (urlsplit(f"//{netloc}").hostname or "").lower()


def _allowed(request: web.Request, allowed_origins: set[str], any_origin: bool) -> bool:
    origin = request.headers.get("Origin", "").lower()
    return any_origin or origin in allowed_origins or origin == f"{request.scheme}://{request.host}".lower()


def origin_guard(bind_host: str, allowed: Iterable[str] = (), any_origin: bool = False):
    """The middleware for a server bound to `bind_host`, allowing the origins in `allowed` (all of
    them with `any_origin`: when every call needs a token, a page of another origin needs it too)."""
    allowed_origins = {origin.rstrip("/").lower() for origin in allowed}
    loopback_only = is_loopback(bind_host)

    @web.middleware
    async def guard(request: web.Request, handler):
        if loopback_only and not is_loopback(_hostname(request.host)):
            raise HTTPError(403, "this server is bound to loopback and answers only to localhost "
                                 "or 127.0.0.1; open it under one of those names")
        origin = request.headers.get("Origin")
        if origin is not None and request.method not in SAFE_METHODS and not _allowed(request, allowed_origins,
                                                                                       any_origin):
            raise HTTPError(403, f"requests from pages of {origin} are refused; use the page this server "
                                 "serves, or allow that origin with --allow-origin")
        return await handler(request)

    return guard


CORS_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSED = "Location, ETag, Link, Accept-Post, Accept-Patch, X-Request-Id, Retry-After"


def cors(allowed: Iterable[str] = (), any_origin: bool = False):
    """CORS for pages of allowed origins (WHIP / WHEP clients in a browser, a studio page): the
    preflight answered, and on every answer (errors too: it is the outermost middleware) the
    headers such a page may read (Location, ETag, Link)."""
    allowed_origins = {origin.rstrip("/").lower() for origin in allowed}

    @web.middleware
    async def headers(request: web.Request, handler):
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin is None or not _allowed(request, allowed_origins, any_origin):
            return response
        if request.method == "OPTIONS" and response.status == 405:  # a preflight for a route without its own
            response = web.Response(status=204)
        _add(response.headers, origin, request)
        return response

    return headers


def _add(headers, origin: str, request: web.Request) -> None:
    headers["Access-Control-Allow-Origin"] = origin
    headers["Vary"] = "Origin"
    headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
    if request.method == "OPTIONS":
        headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        headers["Access-Control-Max-Age"] = "600"
