"""Every HTTP error is JSON `{"error", "errors", "request_id"}` with a message for a user.

The detail (an exception, a traceback) goes to the log under the request id, which the response
carries too (body and `X-Request-Id`), so a user's report can be matched to the log line.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any, Mapping

from aiohttp import web

log = logging.getLogger("camfx.http")

# The key of the id in each aiohttp request (a typed key where aiohttp has them).
REQUEST_ID = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
REQUEST_ID_HEADER = "X-Request-Id"


class HTTPError(Exception):
    """An error answer: `status`, a message for the user, per-field errors, extra headers."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.errors = errors or []
        self.headers = dict(headers or {})


def new_request_id() -> str:
    return secrets.token_hex(6)


def error_body(message: str, errors: list[dict[str, str]] | None = None, request_id: str | None = None) -> dict[str, Any]:
    return {"error": message, "errors": errors or [], "request_id": request_id}


def error_response(status: int, message: str, errors: list[dict[str, str]] | None = None,
                   request_id: str | None = None, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.json_response(error_body(message, errors, request_id), status=status, headers=headers)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    if status in (408, 413):
        response.force_close()  # the rest of the body is never read: the connection cannot be reused
    return response


def error_bytes(status: int, reason: str, message: str, request_id: str | None = None) -> bytes:
    """A whole HTTP/1.1 error response, for the protocol layer, where there is no request object."""
    body = json.dumps(error_body(message, None, request_id)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if request_id:
        head += f"{REQUEST_ID_HEADER}: {request_id}\r\n"
    return head.encode() + b"\r\n" + body


# What aiohttp's own errors (no route, wrong method, body over client_max_size) say to a user.
_AIOHTTP_MESSAGES = {
    400: "the request could not be read",
    404: "there is nothing at {path}",
    405: "{method} is not allowed on {path}",
    413: "the request body is too large",
}


@web.middleware
async def json_errors(request: web.Request, handler):
    """Gives every request an id, and turns every error, expected or not, into JSON."""
    request_id = request.headers.get(REQUEST_ID_HEADER, "")[:64] or new_request_id()
    if not request_id.isascii() or not request_id.replace("-", "").isalnum():
        request_id = new_request_id()  # never echo a header we did not make sense of
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except HTTPError as exc:
        log.info("request %s: %s %s -> %d %s", request_id, request.method, request.path, exc.status, exc.message)
        return error_response(exc.status, exc.message, exc.errors, request_id, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        template = _AIOHTTP_MESSAGES.get(exc.status, exc.reason)
        message = template.format(path=request.path, method=request.method)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, message, None, request_id, headers)
    except Exception:
        log.exception("request %s: %s %s failed", request_id, request.method, request.path)
        return error_response(500, f"the server failed on this request; its log has the details under {request_id}",
                              None, request_id)
    response.headers.setdefault(REQUEST_ID_HEADER, request_id)
    return response
