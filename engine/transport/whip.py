"""WHIP in (RFC 9725) and WHEP out (the IETF WISH draft): OBS and any WHIP client publishes a
camera to `/whip/{name}`; viewers (the /view page, OBS Browser Sources, any WHEP player) get
the processed stream from `/whep/{name}`.

    POST   /whip/{name}[?param=value...]  application/sdp offer -> 201 answer, Location, ETag, Link
    PATCH  /whip/{name}/{session}          trickle ICE (If-Match); ICE restarts are refused (422)
    DELETE /whip/{name}/{session}          -> 200, the stream and its viewers end
    POST   /whep/{name}                    application/sdp offer (recvonly) -> 201 answer (sendonly)
    PATCH / DELETE /whep/{name}/{viewer}   as above
    OPTIONS on each; HEAD /whep/{name}: 200 while the name publishes, else 404

The server gathers its candidates before answering (no trickle from the server). A viewer of a
name that is not publishing gets 404 (the /view page waits and retries).
"""

from __future__ import annotations

import logging
import secrets
from typing import Callable

from aiohttp import web
from aiortc.sdp import candidate_from_sdp

from ..params import ParamsError
from . import signalling
from .body import read_body
from .errors import REQUEST_ID, HTTPError
from .ice import link_headers
from .registry import HUB_KEY, SESSIONS_KEY, check_name

log = logging.getLogger("camfx.whip")

SDP = "application/sdp"
SDP_FRAGMENT = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES = 64 * 1024


def _etag() -> str:
    return f'"{secrets.token_hex(8)}"'


def _ice_links(request: web.Request) -> dict[str, str]:
    links = link_headers(request.app[HUB_KEY].config.ice_servers)
    return {"Link": ", ".join(links)} if links else {}


async def _read_sdp(request: web.Request, content_type: str = SDP) -> str:
    if request.content_type != content_type:
        raise HTTPError(415, f"send the SDP as Content-Type: {content_type} (got {request.content_type or 'none'})")
    body = await read_body(request, MAX_SDP_BYTES, request.app[HUB_KEY].config.body_timeout)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "the SDP must be UTF-8 text") from None


def _created(answer, location: str, etag: str, request: web.Request) -> web.Response:
    headers = {"Location": location, "ETag": etag, **_ice_links(request)}
    return web.Response(status=201, text=answer.sdp, content_type=SDP, headers=headers)


def _params_from_query(request: web.Request):
    hub = request.app[HUB_KEY]
    try:
        params = hub.config.defaults.updated(dict(request.query))
        hub.check_params(params)
    except ParamsError as exc:
        raise HTTPError(422, "invalid params in the query string", exc.errors) from None
    return params


# ---- WHIP -------------------------------------------------------------------------------------------
async def whip_publish(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    params = _params_from_query(request)
    sdp = await _read_sdp(request)
    signalling.check_offer(sdp, publisher=True)  # before a slot is taken
    session = await request.app[SESSIONS_KEY].open(params, name=name, sends_back=False)
    answer = await signalling.answer_or_close(
        session, signalling.answer(session.pc, sdp, None, f"request {request[REQUEST_ID]}:", publisher=True))
    session.etag = _etag()
    log.info("whip %s: publishing (session %s, %s)", name, session.id, params.effect)
    return _created(answer, f"/whip/{name}/{session.id}", session.etag, request)


def _publisher(request: web.Request):
    session = request.app[SESSIONS_KEY].get(request.match_info["session"])
    if session is None or session.name != request.match_info["name"]:
        raise HTTPError(404, "no such WHIP session (it ended, or the URL is wrong)")
    return session


async def whip_delete(request: web.Request) -> web.Response:
    await _publisher(request).close()
    return web.json_response({"closed": True})


async def whip_patch(request: web.Request) -> web.Response:
    session = _publisher(request)
    return await _trickle(request, session.pc, session.etag)


# ---- WHEP -------------------------------------------------------------------------------------------
async def whep_view(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    sdp = await _read_sdp(request)
    viewer = request.app[SESSIONS_KEY].open_viewer(name)
    answer = await signalling.answer_or_close(
        viewer, signalling.answer_viewer(viewer.pc, sdp, viewer.output, f"request {request[REQUEST_ID]}:"))
    viewer.etag = _etag()
    log.info("whep %s: viewer %s", name, viewer.id)
    return _created(answer, f"/whep/{name}/{viewer.id}", viewer.etag, request)


def _viewer(request: web.Request):
    viewer = request.app[SESSIONS_KEY].viewer(request.match_info["viewer"])
    if viewer is None or viewer.publisher.name != request.match_info["name"]:
        raise HTTPError(404, "no such WHEP session (it ended, or the URL is wrong)")
    return viewer


async def whep_delete(request: web.Request) -> web.Response:
    await _viewer(request).close()
    return web.json_response({"closed": True})


async def whep_patch(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    return await _trickle(request, viewer.pc, viewer.etag, if_match_required=False)


async def whep_head(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    if request.app[SESSIONS_KEY].named(name) is None:
        raise HTTPError(404, f"no stream named {name!r} is publishing")
    return web.Response(status=200)


# ---- trickle ICE (RFC 8840 fragments) -------------------------------------------------------------
async def _trickle(request: web.Request, pc, etag: str, if_match_required: bool = True) -> web.Response:
    """Remote candidates added to `pc`. RFC 9725: If-Match is required (428) and must match the
    session's ETag (412); a fragment with new ICE credentials is an ICE restart, which aiortc
    cannot do (422). WHEP clients that send no If-Match at all are let through (whip-whep's
    WHEP client never reads the POST's ETag); a wrong one is still refused."""
    if_match = request.headers.get("If-Match")
    if if_match is None and if_match_required:
        raise HTTPError(428, "a trickle ICE PATCH needs If-Match with the session's ETag")
    if_match = etag if if_match is None else if_match
    fragment = await _read_sdp(request, SDP_FRAGMENT)
    lines = [line.strip() for line in fragment.splitlines() if line.strip()]
    remote = pc.remoteDescription.sdp if pc.remoteDescription else ""
    ufrag = next((line.split(":", 1)[1] for line in lines if line.startswith("a=ice-ufrag:")), None)
    if if_match == "*" or (ufrag is not None and f"a=ice-ufrag:{ufrag}" not in remote):
        raise HTTPError(422, "ICE restarts are not supported by this server (its WebRTC stack, aiortc, cannot "
                             "restart ICE); start a new session instead")
    if if_match != etag:
        raise HTTPError(412, "If-Match does not match this session's ETag")
    mid = next((line.split(":", 1)[1] for line in lines if line.startswith("a=mid:")), None)
    added = 0
    for line in lines:
        if line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[2:].split(":", 1)[1])
            except (ValueError, IndexError):
                raise HTTPError(400, f"not an ICE candidate line: {line[:120]!r}") from None
            candidate.sdpMid, candidate.sdpMLineIndex = mid, 0 if mid is None else None
            await pc.addIceCandidate(candidate)
            added += 1
        elif line == "a=end-of-candidates":
            await pc.addIceCandidate(None)
    log.debug("trickle: %d candidates", added)
    return web.Response(status=204, headers={"ETag": etag})


# ---- OPTIONS ------------------------------------------------------------------------------------------
def _options(methods: str, accept_post: bool) -> Callable:
    async def options(request: web.Request) -> web.Response:
        headers = {"Allow": methods, **_ice_links(request)}
        if accept_post:
            headers["Accept-Post"] = SDP
        headers["Accept-Patch"] = SDP_FRAGMENT
        return web.Response(status=204, headers=headers)

    return options


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/whip/{name}", whip_publish)
    r.add_route("OPTIONS", "/whip/{name}", _options("POST, OPTIONS", accept_post=True))
    r.add_delete("/whip/{name}/{session}", whip_delete)
    r.add_patch("/whip/{name}/{session}", whip_patch)
    r.add_route("OPTIONS", "/whip/{name}/{session}", _options("PATCH, DELETE, OPTIONS", accept_post=False))
    r.add_post("/whep/{name}", whep_view)
    r.add_head("/whep/{name}", whep_head)  # aiohttp's add_get would add HEAD too; there is no GET
    r.add_route("OPTIONS", "/whep/{name}", _options("POST, HEAD, OPTIONS", accept_post=True))
    r.add_delete("/whep/{name}/{viewer}", whep_delete)
    r.add_patch("/whep/{name}/{viewer}", whep_patch)
    r.add_route("OPTIONS", "/whep/{name}/{viewer}", _options("PATCH, DELETE, OPTIONS", accept_post=False))
