"""Bearer tokens: every API call carries `Authorization: Bearer <token>` when a token is set.

What needs no token: `/healthz` (load balancers), the page and its files (`/`, `/static/...`,
`/view/...`: they ask for the token themselves) and CORS preflights (a browser sends those
without credentials). The comparison takes the same time whatever the guess.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .errors import HTTPError

OPEN_PREFIXES = ("/static/", "/view/")
OPEN_PATHS = ("/", "/healthz", "/favicon.ico")


def needs_token(request: web.Request) -> bool:
    if request.method == "OPTIONS":
        return False
    path = request.path
    return not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def token_guard(token: str):
    """The middleware that refuses requests without `token` (401, WWW-Authenticate: Bearer)."""
    expected = token.encode()

    @web.middleware
    async def guard(request: web.Request, handler):
        if needs_token(request):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                message = ("this server needs a token: send `Authorization: Bearer <token>` (in OBS, the "
                           "Bearer Token field; on the page, the token prompt)")
                if scheme:
                    message = "the token is wrong"
                raise HTTPError(401, message, headers={"WWW-Authenticate": 'Bearer realm="camfx"'})
        return await handler(request)

    return guard
