"""The HTTP + WebRTC server: the demo page, signalling, control API, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCIceServer, RTCSessionDescription
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import sdp
from .backends import nvidia_gpu_present
from .backgrounds import Backgrounds
from .body import BODY_TIMEOUT_S, read_body, read_json
from .errors import REQUEST_ID, HTTPError, json_errors
from .http_server import HttpLimits
from .ice import peer_connection
from .jitter import release_frames_at_marker
from .memory import Trimmer
from .metrics import Metrics
from .origins import origin_guard
from .params import Params, ParamsError, field_error
from .pipeline import default_pipeline
from .segmenter import Segmenters
from .session import CONNECT_TIMEOUT_S, MEDIA_TIMEOUT_S, Session
from .stylize import DiffusionModels, DiffusionModelSpec, Generator, default_specs
from .rate_limit import RateLimiter
from .uploads import MAX_UPLOAD_BYTES, RATE_BURST, RATE_PER_S, Uploads

log = logging.getLogger("camfx.server")

MAX_JSON_BYTES = 64 * 1024  # an SDP offer is a few KB, 20 with many candidates


@dataclass
class ServerConfig:
    """The server's settings; `camfx serve` sets them from its flags."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    model_threads: int = 1
    connect_timeout: float = CONNECT_TIMEOUT_S  # seconds for a peer to connect before its session is dropped
    media_timeout: float = MEDIA_TIMEOUT_S  # seconds without a frame before a connected peer counts as gone
    max_connections: int = HttpLimits.max_connections  # open HTTP connections; one more gets 503
    header_timeout: float = HttpLimits.header_timeout  # seconds for a request's headers to arrive
    body_timeout: float = BODY_TIMEOUT_S  # seconds for a request's body to arrive
    upload_burst: int = RATE_BURST  # uploads a client may send at once,
    upload_every_s: float = RATE_PER_S  # then one per this many seconds
    # Browser pages of other origins allowed to call the API (the server's own always are).
    allowed_origins: tuple[str, ...] = ()
    ice_servers: tuple[RTCIceServer, ...] = ()  # STUN / TURN for the server's peer connections
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    defaults: Params = field(default_factory=Params)
    # Where frames are processed: "cuda" keeps each frame on the GPU (torch, see
    # device_pipeline); "cpu" is the OpenCV path; "auto" picks cuda when torch sees a GPU.
    device: str = "auto"
    # Stack frames that sessions send together into one segmentation call: "auto" does on cuda,
    # where it pays; on a CPU the sessions' runs go side by side on the cores instead.
    batch_sessions: str = "auto"
    # The models `diffusion_model` may name (see camfx.engine.stylize.default_specs).
    diffusion_models: dict[str, DiffusionModelSpec] = field(default_factory=default_specs)


def resolve_device(device: str) -> str:
    """Where frames are processed ("cpu" or "cuda") for a configured "auto", "cpu" or "cuda";
    asking for cuda without a GPU is an error, not a quiet CPU fallback."""
    import importlib.util

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    no_gpu_here = importlib.util.find_spec("torch") is None or not nvidia_gpu_present()
    if device == "cpu" or (device == "auto" and no_gpu_here):  # no torch import for nothing
        return "cpu"
    try:
        import torch
    except ImportError:
        raise ValueError("the GPU path needs torch with CUDA: pip install 'camfx[gpu]'") from None
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device cuda was asked for, but torch sees no CUDA GPU")
    return "cpu"


class Engine:
    """What every session shares: models, backgrounds, the worker threads, metrics."""

    def __init__(self, config: ServerConfig, pipeline_factory=None):
        self.config = config
        self.metrics = Metrics()
        self.device = resolve_device(config.device)
        if config.batch_sessions not in ("auto", "on", "off"):
            raise ValueError(f"batch_sessions must be auto, on or off, got {config.batch_sessions!r}")
        batch = config.batch_sessions == "on" or (config.batch_sessions == "auto" and self.device == "cuda")
        self.segmenters = Segmenters(threads=config.model_threads, on_fallback=self._count_fallback, batch=batch)
        self.backgrounds = Backgrounds()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="camfx-worker")
        # Work a frame's pipeline hands off to run alongside itself (a separate pool: a worker
        # waiting on its own pool could deadlock it).
        self.helper = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="camfx-helper")
        # Diffusion runs one picture at a time, on its own thread: it must never take the
        # workers' place, and two at once would only share the same cores or GPU.
        self.diffusion_models = DiffusionModels(config.diffusion_models, on_fallback=self._count_fallback)
        self.diffusion = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camfx-diffusion")
        self.uploads = Uploads(self.backgrounds, rate=RateLimiter(config.upload_burst, config.upload_every_s))
        self.sessions: dict[str, Session] = {}
        self._pipeline_factory = pipeline_factory or self._default_pipeline
        self._trimmer = Trimmer()

    def runtimes(self) -> dict[str, Any]:
        """Per segmentation model: the runtime in use and those that failed (for the page)."""
        fallbacks = self.segmenters.fallbacks()
        return {name: {"runtime": runtime, "failed": fallbacks.get(name, [])}
                for name, runtime in self.segmenters.backends().items()}

    def _count_fallback(self, model: str, failed: str, reason: str) -> None:
        self.metrics.backend_fallbacks.labels(model, failed).inc()

    def _default_pipeline(self):
        pipeline = default_pipeline(self.segmenters, self.backgrounds, self.helper)
        if self.device == "cuda":
            from .device_pipeline import DevicePipeline

            return DevicePipeline(self.segmenters, self.backgrounds, pipeline, "cuda")
        return pipeline

    def new_pipeline(self):
        return self._pipeline_factory()

    def check_params(self, params: Params) -> None:
        """What the schema cannot know: that a named background image exists, that this server
        serves the diffusion model named."""
        if params.background_image not in self.backgrounds:
            raise ParamsError([field_error("background_image", f"no background image {params.background_image!r}")])
        self.diffusion_models.check(params)

    def new_generator(self, on_error) -> Generator:
        return Generator(self.diffusion_models, self.diffusion, on_error, self.metrics)

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions.set(len(self.sessions))
        if not self.sessions:
            self._trimmer.soon()  # give the ended sessions' frame buffers back to the system

    async def shutdown(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self.sessions.values())), return_exceptions=True)
        self._trimmer.cancel()
        self.uploads.shutdown()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.helper.shutdown(wait=True, cancel_futures=True)
        self.diffusion.shutdown(wait=True, cancel_futures=True)


ENGINE = web.AppKey("engine", Engine)


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "index.html")


def _page_files() -> dict[str, object]:
    """The demo's files by their path under /static (pages, scripts, styles, background images)."""
    demo = resources.files("camfx.demo")
    files = {}
    for folder, prefix in ((demo, ""), (demo / "backgrounds", "backgrounds/")):
        for entry in folder.iterdir():
            if entry.is_file() and entry.name.endswith((".html", ".js", ".css", ".jpg")):
                files[prefix + entry.name] = entry
    return files


PAGE_FILES = web.AppKey("page_files", dict)


async def static_file(request: web.Request) -> web.StreamResponse:
    # A fixed list, not a folder: nothing else can be reached, and a miss is a JSON 404.
    entry = request.app[PAGE_FILES].get(request.match_info["path"])
    if entry is None:
        raise HTTPError(404, f"there is no file {request.match_info['path']!r} in the page's files")
    return web.FileResponse(entry)


OFFER_SHAPE = 'expected a JSON object {"sdp": "<the SDP offer>", "type": "offer", "params": {...}}'


def _params_or_422(engine: Engine, update) -> Params:
    try:
        params = update()
        engine.check_params(params)
    except ParamsError as exc:
        raise HTTPError(422, "invalid params", exc.errors) from None
    return params


async def offer(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await read_json(request, MAX_JSON_BYTES, engine.config.body_timeout)
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        raise HTTPError(400, OFFER_SHAPE)
    params = _params_or_422(engine, lambda: engine.config.defaults.updated(body.get("params") or {}))
    problem = sdp.offer_problem(body["sdp"])
    if problem:
        raise HTTPError(400, problem)
    if len(engine.sessions) >= engine.config.max_sessions:
        raise HTTPError(503, f"the session limit ({engine.config.max_sessions}) is reached; try again in a few seconds",
                        headers={"Retry-After": "5"})

    pc = peer_connection(engine.config.ice_servers)
    session = Session(
        secrets.token_hex(16), pc, params, engine.new_pipeline(), engine.executor, engine.metrics, engine.forget,
        check_params=engine.check_params, connect_timeout=engine.config.connect_timeout,
        media_timeout=engine.config.media_timeout, make_generator=engine.new_generator, runtimes=engine.runtimes,
    )
    engine.sessions[session.id] = session
    engine.metrics.sessions.set(len(engine.sessions))
    engine.metrics.sessions_total.inc()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        video = next((t for t in pc.getTransceivers() if t.kind == "video"), None)
        if video is None:
            raise HTTPError(400, "the offer has no video; camfx needs a camera track (m=video)")
        release_frames_at_marker(pc)  # decode each frame when its last packet is in, not a frame later
        pc.addTrack(session.output)
        video.direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises many types for SDP it cannot use
        await session.close()  # never raises, and always frees the slot
        if isinstance(exc, HTTPError):
            raise
        log.warning("request %s: offer refused: %r", request[REQUEST_ID], exc)
        raise HTTPError(400, "the SDP offer could not be used: it is incomplete, or asks for something "
                             "camfx does not support (see the server log under this request id)") from None
    log.info("session %s: opened (%s)", session.id, params.effect)
    return web.json_response(
        {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session_id": session.id}
    )


def _session(request: web.Request) -> Session:
    session = _engine(request).sessions.get(request.match_info["session_id"])
    if session is None:
        raise HTTPError(404, "no such session (it ended, or the id is wrong)")
    return session


async def update_params(request: web.Request) -> web.Response:
    session = _session(request)
    patch = await read_json(request, MAX_JSON_BYTES, _engine(request).config.body_timeout)
    params = _params_or_422(_engine(request), lambda: session.update_params(patch))
    return web.json_response(params.model_dump())


async def session_stats(request: web.Request) -> web.Response:
    session = _session(request)
    return web.json_response({**session.stats(), "params": session.params.model_dump()})


async def close_session(request: web.Request) -> web.Response:
    await _session(request).close()
    return web.json_response({"closed": True})


async def upload_background(request: web.Request) -> web.Response:
    engine = _engine(request)
    client = request.remote or "unknown"
    image_id = await engine.uploads.add(
        client, lambda: read_body(request, MAX_UPLOAD_BYTES, engine.config.body_timeout))
    return web.json_response({"id": image_id}, status=201)


async def list_backgrounds(request: web.Request) -> web.Response:
    return web.json_response(_engine(request).backgrounds.names())


async def healthz(request: web.Request) -> web.Response:
    engine = _engine(request)
    # Off the event loop: with diffusion loaded this lists the export folder on disk.
    diffusion_runtimes = await asyncio.to_thread(engine.diffusion_models.runtimes)
    return web.json_response(
        {
            "status": "ok",
            "sessions": len(engine.sessions),
            "max_sessions": engine.config.max_sessions,
            "device": engine.device,
            "backends": engine.segmenters.backends(),
            "backend_fallbacks": engine.segmenters.fallbacks(),
            "batching": engine.segmenters.batching(),
            "diffusion_models": sorted(engine.diffusion_models.specs),
            "diffusion_loaded": engine.diffusion_models.loaded(),
            "diffusion_runtimes": diffusion_runtimes,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(_engine(request).metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def schema(request: web.Request) -> web.Response:
    return web.json_response(Params.model_json_schema())


def http_limits(config: ServerConfig) -> HttpLimits:
    return HttpLimits(max_connections=config.max_connections, header_timeout=config.header_timeout)


def create_app(config: ServerConfig | None = None, pipeline_factory=None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application(
        client_max_size=MAX_UPLOAD_BYTES,
        middlewares=[json_errors, origin_guard(config.host, config.allowed_origins)],
    )
    engine = Engine(config, pipeline_factory)
    app[ENGINE] = engine
    app[PAGE_FILES] = _page_files()
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_post("/offer", offer)
    app.router.add_get("/params/schema", schema)
    app.router.add_post("/sessions/{session_id}/params", update_params)
    app.router.add_get("/sessions/{session_id}", session_stats)
    app.router.add_delete("/sessions/{session_id}", close_session)
    app.router.add_get("/backgrounds", list_backgrounds)
    app.router.add_post("/backgrounds", upload_background)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)

    async def load_models(app: web.Application) -> None:
        # Load before the first offer so /healthz names each model's backend from the start.
        await asyncio.get_running_loop().run_in_executor(engine.executor, engine.segmenters.load_all)

    async def close_all(app: web.Application) -> None:
        await engine.shutdown()

    app.on_startup.append(load_models)
    app.on_shutdown.append(close_all)
    return app
