"""The HTTP + WebRTC server: the demo page, signalling, control API, health and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .backends import nvidia_gpu_present
from .backgrounds import BackgroundError, Backgrounds
from .jitter import release_frames_at_marker
from .metrics import Metrics
from .params import Params, ParamsError
from .pipeline import default_pipeline
from .segmenter import Segmenters
from .session import Session
from .stylize import DiffusionModels, DiffusionModelSpec, Generator, default_specs

log = logging.getLogger("camfx.server")

MAX_JSON_BYTES = 256 * 1024  # an SDP offer is a few KB
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    model_threads: int = 1
    connect_timeout: float = 30.0  # seconds for a peer to connect before its session is dropped
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
    import torch

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
        self.sessions: dict[str, Session] = {}
        self._pipeline_factory = pipeline_factory or self._default_pipeline

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
            raise ParamsError(
                [{"field": "background_image", "message": f"no background image {params.background_image!r}"}]
            )
        self.diffusion_models.check(params)

    def new_generator(self, on_error) -> Generator:
        return Generator(self.diffusion_models, self.diffusion, on_error, self.metrics)

    def forget(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.metrics.sessions.set(len(self.sessions))

    async def shutdown(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self.sessions.values())), return_exceptions=True)
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.helper.shutdown(wait=True, cancel_futures=True)
        self.diffusion.shutdown(wait=True, cancel_futures=True)


def _error_body(message: str, errors: list | None = None) -> dict[str, Any]:
    return {"error": message} if errors is None else {"error": message, "errors": errors}


def _error(status: int, message: str, errors: list | None = None) -> web.Response:
    response = web.json_response(_error_body(message, errors), status=status)
    if status == 413:
        response.force_close()  # the rest of the body is never read: do not reuse the connection
    return response


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body, or raise an HTTP error response."""
    too_large = _HTTPJSON(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise too_large
    raw = await request.content.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise too_large
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _HTTPJSON(400, f"malformed JSON: {exc}") from None


class _HTTPJSON(web.HTTPException):
    """An error response with a JSON body, raised from helpers."""

    def __init__(self, status: int, message: str, errors: list | None = None):
        self.status_code = status
        super().__init__(text=json.dumps(_error_body(message, errors)), content_type="application/json")
        if status == 413:
            self.force_close()


ENGINE = web.AppKey("engine", Engine)


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "index.html")


async def offer(request: web.Request) -> web.Response:
    engine = _engine(request)
    body = await _read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        return _error(400, 'expected {"sdp": "...", "type": "offer", "params": {...}}')
    try:
        params = engine.config.defaults.updated(body.get("params") or {})
        engine.check_params(params)
    except ParamsError as exc:
        return _error(422, "invalid params", exc.errors)
    if len(engine.sessions) >= engine.config.max_sessions:
        return _error(503, f"session limit reached ({engine.config.max_sessions}); try again later")

    pc = RTCPeerConnection()
    session = Session(
        uuid.uuid4().hex, pc, params, engine.new_pipeline(), engine.executor, engine.metrics, engine.forget,
        check_params=engine.check_params, connect_timeout=engine.config.connect_timeout,
        make_generator=engine.new_generator, runtimes=engine.runtimes,
    )
    engine.sessions[session.id] = session
    engine.metrics.sessions.set(len(engine.sessions))
    engine.metrics.sessions_total.inc()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("the offer has no video")
        release_frames_at_marker(pc)  # decode each frame when its last packet is in, not a frame later
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                pc.addTrack(session.output)
                transceiver.direction = "sendrecv"
                break
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises several types for bad SDP
        log.warning("offer refused: %s", exc)
        await session.close()
        return _error(400, f"bad SDP offer: {exc}")
    log.info("session %s: opened (%s)", session.id, params.effect)
    return web.json_response(
        {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session_id": session.id}
    )


def _session(request: web.Request) -> Session:
    session = _engine(request).sessions.get(request.match_info["session_id"])
    if session is None:
        raise _HTTPJSON(404, "no such session")
    return session


async def update_params(request: web.Request) -> web.Response:
    session = _session(request)
    patch = await _read_json(request)
    try:
        params = session.update_params(patch)
    except ParamsError as exc:
        return _error(422, "invalid params", exc.errors)
    return web.json_response(params.model_dump())


async def session_stats(request: web.Request) -> web.Response:
    session = _session(request)
    return web.json_response({**session.stats(), "params": session.params.model_dump()})


async def close_session(request: web.Request) -> web.Response:
    await _session(request).close()
    return web.json_response({"closed": True})


async def upload_background(request: web.Request) -> web.Response:
    engine = _engine(request)
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        return _error(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    data = await request.content.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        return _error(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    loop = asyncio.get_running_loop()
    try:
        image_id = await loop.run_in_executor(engine.executor, engine.backgrounds.add_upload, data)
    except BackgroundError as exc:
        return _error(400, str(exc))
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


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error is JSON {"error": ...}, aiohttp's own (404, 405, 413) included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text)


def create_app(config: ServerConfig | None = None, pipeline_factory=None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=[json_errors])
    engine = Engine(config, pipeline_factory)
    app[ENGINE] = engine
    demo = resources.files("camfx.demo")
    app.router.add_get("/", index)
    app.router.add_static("/static", str(demo), show_index=False)
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
