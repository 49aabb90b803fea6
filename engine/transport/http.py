"""The HTTP app: the demo page, signalling (`/offer`), the control API, health and metrics, and
the registry of live sessions."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..config import ServerConfig
from ..hub import Hub
from ..param_ui import schema_with_ui
from ..params import Params, ParamsError
from . import presets, signalling, whip
from .auth import token_guard
from .body import read_body, read_json
from .errors import REQUEST_ID, HTTPError, json_errors
from .http_server import HttpLimits
from .ice import as_json
from .origins import cors, origin_guard
from .rate_limit import RateLimiter
from .registry import HUB_KEY, SESSIONS_KEY, Sessions, check_name
from .session import PeerSession
from .uploads import MAX_UPLOAD_BYTES, Uploads

log = logging.getLogger("camfx.http")

MAX_JSON_BYTES = 64 * 1024  # an SDP offer is a few KB, 20 with many candidates
OFFER_SHAPE = ('expected a JSON object {"sdp": "<the SDP offer>", "type": "offer", "params": {...}, '
               '"name": "<optional: publish the stream under this name>"}')
DEFAULT_STREAM_NAME = "main"  # an unnamed /offer's stream: main, or main-2, main-3, ... while main is taken


HUB = HUB_KEY  # the app's keys, for tests and tools that hold an app
SESSIONS = SESSIONS_KEY
UPLOADS = web.AppKey("uploads", Uploads)
PAGE_FILES = web.AppKey("page_files", dict)


def _hub(request: web.Request) -> Hub:
    return request.app[HUB]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "index.html")


def page_files() -> dict[str, Any]:
    """The pages' files by their path under /static (pages, their modules in ui/, styles,
    background images)."""
    demo = resources.files("camfx.demo")
    files = {}
    for folder, prefix in ((demo, ""), (demo / "ui", "ui/"), (demo / "backgrounds", "backgrounds/")):
        for entry in folder.iterdir():
            if entry.is_file() and entry.name.endswith((".html", ".js", ".css", ".jpg")):
                files[prefix + entry.name] = entry
    return files


async def static_file(request: web.Request) -> web.StreamResponse:
    # A fixed list, not a folder: nothing else can be reached, and a miss is a JSON 404.
    path = request.match_info["path"]
    entry = request.app[PAGE_FILES].get(path)
    if entry is not None:
        # The modules import each other by name: a stale one from the cache would mix versions.
        return web.FileResponse(entry, headers={"Cache-Control": "no-cache"})
    name = path.removeprefix("backgrounds/").removesuffix(".jpg")
    hub = request.app.get(HUB)  # the camera's control page has one only in local mode
    if f"backgrounds/{name}.jpg" == path and hub is not None and name in hub.backgrounds.names()["bundled"]:
        return await background_thumbnail(request, name)  # a bundled video's picture for the page
    raise HTTPError(404, f"there is no file {path!r} in the page's files")


def _params_or_422(hub: Hub, update: Callable[[], Params]) -> Params:
    try:
        params = update()
        hub.check_params(params)
    except ParamsError as exc:
        raise HTTPError(422, "invalid params", exc.errors) from None
    return params


async def offer(request: web.Request) -> web.Response:
    hub = _hub(request)
    body = await read_json(request, MAX_JSON_BYTES, hub.config.body_timeout)
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        raise HTTPError(400, OFFER_SHAPE)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise HTTPError(400, OFFER_SHAPE)
    params = _params_or_422(hub, lambda: hub.config.defaults.updated(body.get("params") or {}))
    signalling.check_offer(body["sdp"])  # before a slot is taken
    # Published under its name (or the default, "main" while free), so /view pages and WHEP
    # players can watch it.
    session = await request.app[SESSIONS].open(params, name=check_name(name) if name else None,
                                               auto_name=DEFAULT_STREAM_NAME)
    answer = await signalling.answer_or_close(
        session, signalling.answer(session.pc, body["sdp"], session.output, f"request {request[REQUEST_ID]}:"))
    log.info("session %s: opened (%s)", session.id, params.effect)
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": session.id, "name": session.name})


def _session(request: web.Request) -> PeerSession:
    session = request.app[SESSIONS].get(request.match_info["session_id"])
    if session is None:
        raise HTTPError(404, "no such session (it ended, or the id is wrong)")
    return session


async def update_params(request: web.Request) -> web.Response:
    session = _session(request)
    patch = await read_json(request, MAX_JSON_BYTES, _hub(request).config.body_timeout)
    params = _params_or_422(_hub(request), lambda: session.stream.update_params(patch))
    return web.json_response(params.model_dump())


async def session_stats(request: web.Request) -> web.Response:
    session = _session(request)
    return web.json_response({**session.stats(), "params": session.stream.params.model_dump()})


async def close_session(request: web.Request) -> web.Response:
    await _session(request).close()
    return web.json_response({"closed": True})


def _named(request: web.Request) -> PeerSession:
    name = check_name(request.match_info["name"])
    session = request.app[SESSIONS].named(name)
    if session is None:
        raise HTTPError(404, f"no stream named {name!r} is publishing")
    return session


async def stream_params(request: web.Request) -> web.Response:
    session = _named(request)
    patch = await read_json(request, MAX_JSON_BYTES, _hub(request).config.body_timeout)
    params = _params_or_422(_hub(request), lambda: session.stream.update_params(patch))
    return web.json_response(params.model_dump())


async def stream_stats(request: web.Request) -> web.Response:
    session = _named(request)
    return web.json_response({**session.stats(), "params": session.stream.params.model_dump()})


async def list_streams(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    return web.json_response({name: {"viewers": len(sessions.viewers_of(sessions.named(name)))}
                              for name in sessions.names()})


async def view_page(request: web.Request) -> web.StreamResponse:
    check_name(request.match_info["name"])
    return web.FileResponse(resources.files("camfx.demo") / "view.html")


async def ice_servers(request: web.Request) -> web.Response:
    """The STUN / TURN servers for the page's own peer connection (credentials: token-protected)."""
    return web.json_response({"iceServers": as_json(_hub(request).config.ice_servers)})


async def upload_background(request: web.Request) -> web.Response:
    timeout = _hub(request).config.body_timeout
    image_id = await request.app[UPLOADS].add(request.remote or "unknown",
                                              lambda: read_body(request, MAX_UPLOAD_BYTES, timeout))
    return web.json_response({"id": image_id}, status=201)


async def list_backgrounds(request: web.Request) -> web.Response:
    backgrounds = _hub(request).backgrounds
    return web.json_response({**backgrounds.names(), "items": backgrounds.items()})


async def background_thumbnail(request: web.Request, name: str | None = None) -> web.Response:
    name = name or request.match_info["background_id"]
    backgrounds = _hub(request).backgrounds
    if name not in backgrounds:
        raise HTTPError(404, f"no background {name!r} (GET /backgrounds lists them)")
    try:
        jpeg = await asyncio.to_thread(backgrounds.thumbnail, name)  # the first time: a JPEG to encode
    except KeyError:  # dropped by a newer upload meanwhile
        raise HTTPError(404, f"no background {name!r} (GET /backgrounds lists them)") from None
    # An id always names the same picture: a browser may keep it.
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


async def healthz(request: web.Request) -> web.Response:
    hub = _hub(request)
    # Off the event loop: with diffusion loaded this lists the export folder on disk.
    diffusion_runtimes = await asyncio.to_thread(hub.diffusion_models.runtimes)
    runtimes, fallbacks = hub.segmenters.runtimes(), hub.segmenters.fallbacks()
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(request.app[SESSIONS]),
            "max_sessions": hub.config.max_sessions,
            "device": hub.device,
            "runtimes": runtimes,
            "runtime_fallbacks": fallbacks,
            # The names of 0.1; kept for one release, then gone (use runtimes, runtime_fallbacks).
            "backends": runtimes,
            "backend_fallbacks": fallbacks,
            "batching": hub.segmenters.batching(),
            "diffusion_models": sorted(hub.diffusion_models.specs),
            "diffusion_loaded": hub.diffusion_models.loaded(),
            "diffusion_runtimes": diffusion_runtimes,
            # The diffusion scheduler: streams, busy share, batches/s, mean batch size.
            "diffusion": hub.diffusion.stats(),
            "face_runtimes": hub.faces.runtimes(),  # empty until a stream turns a face setting on
            "face_runtime_fallbacks": hub.faces.fallbacks(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(_hub(request).metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def schema(request: web.Request) -> web.Response:
    """The params' JSON schema, with what the page shows (groups, when each field matters, the
    models served, this server's defaults) under `x-camfx-ui`."""
    hub = _hub(request)
    return web.json_response(schema_with_ui(defaults=hub.config.defaults, diffusion_specs=hub.diffusion_models.specs))


def http_limits(config: ServerConfig) -> HttpLimits:
    return HttpLimits(max_connections=config.max_connections, header_timeout=config.header_timeout)


def create_app(config: ServerConfig | None = None, pipeline_factory: Callable[[], Any] | None = None) -> web.Application:
    """The whole server as an aiohttp app; serve it with `http_server.start` (or `run`)."""
    config = config or ServerConfig()
    # A token lets pages of any origin call the API (they need the token too); without one, only
    # the server's own pages and the origins allowed by name may.
    any_origin = config.token is not None
    middlewares = [cors(config.allowed_origins, any_origin), json_errors,
                   origin_guard(config.host, config.allowed_origins, any_origin)]
    if config.token:
        middlewares.append(token_guard(config.token))
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=middlewares)
    hub = Hub(config, pipeline_factory)
    app[HUB] = hub
    app[SESSIONS] = Sessions(hub)
    app[UPLOADS] = Uploads(hub.backgrounds, RateLimiter(config.upload_burst, config.upload_every_s))
    app[PAGE_FILES] = page_files()
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_post("/offer", offer)
    app.router.add_get("/params/schema", schema)
    app.router.add_post("/sessions/{session_id}/params", update_params)
    app.router.add_get("/sessions/{session_id}", session_stats)
    app.router.add_delete("/sessions/{session_id}", close_session)
    app.router.add_get("/backgrounds", list_backgrounds)
    app.router.add_post("/backgrounds", upload_background)
    app.router.add_get("/backgrounds/{background_id}/thumbnail", background_thumbnail)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ice-servers", ice_servers)
    app.router.add_get("/streams", list_streams)
    app.router.add_get("/streams/{name}", stream_stats)
    app.router.add_post("/streams/{name}/params", stream_params)
    app.router.add_get("/view/{name}", view_page)
    presets.add_routes(app)
    whip.add_routes(app)

    async def load_models(app: web.Application) -> None:
        # Load before the first offer so /healthz names each model's runtime from the start.
        await asyncio.get_running_loop().run_in_executor(hub.executor, hub.load_models)

    async def close_all(app: web.Application) -> None:
        await app[SESSIONS].close_all()
        app[UPLOADS].shutdown()
        hub.shutdown()

    app.on_startup.append(load_models)
    app.on_shutdown.append(close_all)
    return app
