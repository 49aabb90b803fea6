"""The HTTP ingress behind Ray Serve's proxy: signalling and the API reach the replicas here.

Each request is read whole (under the same caps as `camfx serve`), classified (`routes`) and
handed to a replica through the `CamfxNode` handle, whose router picks the replica; the answer
goes back as the replica gave it (status, headers, body). Around that:

- a new session refused with 503 by the replica chosen (full since its last report) is offered
  to the next one, and so on once round the replicas; when every one is full the client gets
  that 503 with its `Retry-After` (WHIP's load rule);
- a stream name not found on the replica chosen (404) is looked for on the others, the same way;
- /healthz, /metrics and /streams are asked of every replica and merged (`merge`);
- a replica that dies while answering is a 503 with `Retry-After` (a new session is offered to
  the others first); nothing here keeps a table of sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging

from ray import exceptions as ray_exceptions
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request
from starlette.responses import Response

from ..transport.body import BODY_TIMEOUT_S, read_capped
from ..transport.errors import REQUEST_ID_HEADER, error_body, new_request_id
from ..transport.registry import RETRY_AFTER_S
from . import merge
from .routes import EACH, NAME, PLACE, Answer, Forwarded, Route, classify

log = logging.getLogger("camfx.cluster")

MAX_BODY_BYTES = 8 * 1024 * 1024  # an upload; JSON bodies are capped again by the replica (64 KiB)
ANSWER_TIMEOUT_S = 60.0
MAX_WALK = 64  # replicas asked for one request, at most
_DIED = (ray_exceptions.RayActorError, ray_exceptions.ActorUnavailableError)


class IngressError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# Serve's proxy gives every request an X-Request-Id (the client's own, or a new one) and puts it
# on every response: the ingress and the replicas use that id, and do not add it again.


def json_response(status: int, data, headers: dict | None = None) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, request_id: str, headers: dict | None = None) -> Response:
    return json_response(status, error_body(message, None, request_id), headers)


def _request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")[:64]
    return given if given and given.isascii() and given.replace("-", "").isalnum() else new_request_id()


async def read_body(request: Request, limit: int = MAX_BODY_BYTES, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, or IngressError 413 / 408 / 400."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise IngressError(400, "Content-Length is not a number")
        if int(length) > limit:
            raise IngressError(413, f"the request body is limited to {limit} bytes")
    return await read_capped(request.stream(), limit, timeout, IngressError)


def _passthrough(answer: Answer) -> Response:
    response = Response(answer.body, status_code=answer.status)
    for key, value in answer.headers:
        if key.lower() != REQUEST_ID_HEADER.lower():
            response.headers.append(key, value)
    return response


class Ingress:
    def __init__(self, nodes):
        self._nodes = nodes  # DeploymentHandle of CamfxNode

    async def _ask(self, request: Forwarded, route: Route) -> Answer:
        try:
            return await asyncio.wait_for(self._nodes.forward.remote(request, route=route.as_dict()),
                                          ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise IngressError(503, "no camfx replica answered in time; try again in a few seconds",
                               {"Retry-After": RETRY_AFTER_S}) from None
        except BackPressureError:
            raise IngressError(503, "the cluster is busy with other requests; try again in a few seconds",
                               {"Retry-After": RETRY_AFTER_S}) from None

    async def _walk(self, request: Forwarded, route: Route, next_on: int) -> Answer:
        """The replica the router picks, then the others while they answer `next_on` (503 for a
        new session: that one is full; 404 for a stream name: not published there). The first
        such refusal is the answer when none takes it."""
        refused, died = None, 0
        for _ in range(MAX_WALK):
            try:
                reply = await self._ask(request, route)
            except _DIED:
                died += 1  # the router drops a dead replica; ask again
                if died > 2:
                    break
                continue
            if reply.status != next_on:
                return reply
            if reply.replica in route.avoid:
                return refused or reply  # round the replicas once
            refused, route = refused or reply, route.avoiding(reply.replica)
        if refused is not None:
            return refused
        raise IngressError(503, "the camfx replicas went away while answering; try again in a few seconds",
                           {"Retry-After": RETRY_AFTER_S})

    async def _each(self, request: Forwarded) -> list[Answer]:
        """Every replica's answer, one each."""
        route, answers = Route(EACH), []
        for _ in range(MAX_WALK):
            try:
                reply = await self._ask(request, route)
            except _DIED:
                continue
            if reply.replica in route.avoid:
                break
            answers.append(reply)
            route = route.avoiding(reply.replica)
        return answers

    async def _handle(self, request: Request, request_id: str) -> Response:
        path = request.url.path
        route = classify(request.method, path)
        body = await read_body(request)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != REQUEST_ID_HEADER.lower()]
        forwarded = Forwarded(request.method, path, request.url.query, [*headers, (REQUEST_ID_HEADER, request_id)],
                              body)
        if route.kind == EACH:
            answers = await self._each(forwarded)
            refused = next((a for a in answers if a.status != 200), None)
            if refused is not None and path != "/healthz":  # a missing or wrong token: all say the same
                return _passthrough(refused)
            status, content_type, merged = merge.merged(path, answers)
            extra = {"Retry-After": RETRY_AFTER_S} if status == 503 else {}
            return Response(merged, status_code=status, media_type=content_type, headers=extra)
        if route.kind == PLACE:
            answer = await self._walk(forwarded, route, 503)
        elif route.kind == NAME:
            answer = await self._walk(forwarded, route, 404)
        else:
            try:
                answer = await self._ask(forwarded, route)
            except _DIED:
                raise IngressError(503, "the camfx replica holding this went away; start a new session",
                                   {"Retry-After": RETRY_AFTER_S}) from None
        return _passthrough(answer)

    async def __call__(self, request: Request) -> Response:
        request_id = _request_id(request)
        try:
            return await self._handle(request, request_id)
        except IngressError as exc:
            log.info("request %s: %s %s -> %d %s", request_id, request.method, request.url.path, exc.status,
                     exc.message)
            return error_response(exc.status, exc.message, request_id, exc.headers)
        except Exception:
            log.exception("request %s: %s %s failed", request_id, request.method, request.url.path)
            return error_response(500, f"the cluster failed on this request; its log has the details under "
                                       f"{request_id}", request_id)

    async def replicas(self) -> list[dict]:
        """For `camfx cluster status`: every replica's health and load."""
        request = Forwarded("GET", "/healthz", "", [("Host", "127.0.0.1")])
        return merge.replicas(await self._each(request))
