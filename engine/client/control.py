"""`camfx camera`'s live control: a small HTTP API and page on 127.0.0.1:8081 (by default).

    GET  /                 the control page: the serve page's controls, and a preview of the output
    GET  /static/...       the page's modules, styles and bundled backgrounds (the serve page's files)
    GET  /params/schema    the same schema as `camfx serve`, with the page metadata
    GET  /params           the current params;  POST /params  a partial update (422 naming the field)
    GET  /backgrounds      the background images;  POST /backgrounds  an upload (this process's engine)
    GET  /presets ...      saved presets, as on `camfx serve`
    GET  /stats            fps in and out, latency, drops, per output
    GET  /preview.mjpg     the output as MJPEG (a few frames a second, for the page)
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import cv2
from aiohttp import web
from av.video.reformatter import VideoReformatter

from ..param_ui import schema_with_ui
from ..params import ParamsError
from ..transport import presets
from ..transport.body import read_body, read_json
from ..transport.errors import HTTPError, json_errors
from ..transport.http import HUB, PAGE_FILES, page_files, static_file
from ..transport.origins import origin_guard
from ..transport.rate_limit import RateLimiter
from ..transport.uploads import MAX_UPLOAD_BYTES, Uploads

log = logging.getLogger("camfx.camera")

PREVIEW_FPS = 8
MAX_JSON_BYTES = 64 * 1024
APP = web.AppKey("camera_app", object)
UPLOADS = web.AppKey("camera_uploads", object)
PREVIEWS = web.AppKey("previews", object)


def _app(request: web.Request):
    return request.app[APP]


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "camera.html")


def _hub(request: web.Request):
    """The engine of this process (local mode); None when a camfx server does the processing."""
    return getattr(_app(request).processor, "hub", None)


async def schema(request: web.Request) -> web.Response:
    hub = _hub(request)
    if hub is None:  # the server applies the effects: it decides what it serves
        return web.json_response(schema_with_ui(check_diffusion=False))
    return web.json_response(schema_with_ui(diffusion_specs=hub.diffusion_models.specs))


async def list_backgrounds(request: web.Request) -> web.Response:
    hub = _hub(request)
    if hub is None:  # the server's are the ones in use: its bundled ones are these too
        bundled = sorted(path[len("backgrounds/"):].rsplit(".", 1)[0] for path in request.app[PAGE_FILES]
                         if path.startswith("backgrounds/"))
        return web.json_response({"bundled": bundled, "uploaded": []})
    return web.json_response(hub.backgrounds.names())


async def upload_background(request: web.Request) -> web.Response:
    uploads = request.app.get(UPLOADS)
    if uploads is None:
        raise HTTPError(409, "the camfx server applies the effects: upload the background on its page")
    image_id = await uploads.add(request.remote or "local", lambda: read_body(request, MAX_UPLOAD_BYTES))
    return web.json_response({"id": image_id}, status=201)


async def get_params(request: web.Request) -> web.Response:
    return web.json_response(_app(request).processor.params.model_dump())


async def set_params(request: web.Request) -> web.Response:
    patch = await read_json(request, MAX_JSON_BYTES)
    try:
        params = _app(request).processor.update_params(patch)
    except ParamsError as exc:
        raise HTTPError(422, "invalid params", exc.errors) from None
    return web.json_response(params.model_dump())


async def stats(request: web.Request) -> web.Response:
    return web.json_response(_app(request).stats())


class PreviewJpegs:
    """The newest output frame as JPEG, made once for every page that shows it: one conversion at
    a time (two threads converting the same PyAV frame at once crashed the process)."""

    def __init__(self):
        self._lock = asyncio.Lock()
        self._frame = None
        self._jpeg = b""

    async def of(self, frame) -> bytes:
        async with self._lock:
            if frame is not self._frame:
                self._jpeg = await asyncio.get_running_loop().run_in_executor(None, _jpeg, frame)
                self._frame = frame
            return self._jpeg


async def preview(request: web.Request) -> web.StreamResponse:
    """The newest output frame as JPEG, a few times a second (encoded off the event loop)."""
    camera = _app(request)
    jpegs = request.app[PREVIEWS]
    response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    last = None
    # Until the page goes or the run ends (a stream left open would hold the server's shutdown).
    try:
        while not camera.stop_event.is_set() and request.transport is not None and not request.transport.is_closing():
            frame = camera.preview
            if frame is not None and frame is not last:
                last = frame
                jpeg = await jpegs.of(frame)
                await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            await asyncio.sleep(1 / PREVIEW_FPS)
    except ConnectionResetError:  # the page was closed or reloaded: the usual end of a preview
        pass
    if not camera.stop_event.is_set():
        log.info("preview: the page left")
    return response


def _jpeg(frame) -> bytes:
    # A reformatter of its own: the frame's cached one may be converting for an output right now.
    image = VideoReformatter().reformat(frame, format="bgr24").to_ndarray()
    scale = 640 / max(image.shape[1], 1)
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


def control_app(camera, host: str, preset_store=None) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=[json_errors, origin_guard(host)])
    app[APP] = camera
    app[PAGE_FILES] = page_files()
    app[PREVIEWS] = PreviewJpegs()
    hub = getattr(camera.processor, "hub", None)
    if hub is not None:
        app[HUB] = hub  # the page's files include the bundled videos' pictures, made from it
        app[UPLOADS] = Uploads(hub.backgrounds, RateLimiter(hub.config.upload_burst, hub.config.upload_every_s))

        async def stop_uploads(app: web.Application) -> None:
            app[UPLOADS].shutdown()

        app.on_shutdown.append(stop_uploads)
    app.router.add_get("/", page)
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_get("/params/schema", schema)
    app.router.add_get("/params", get_params)
    app.router.add_post("/params", set_params)
    app.router.add_get("/stats", stats)
    app.router.add_get("/preview.mjpg", preview)
    app.router.add_get("/backgrounds", list_backgrounds)
    app.router.add_post("/backgrounds", upload_background)
    presets.add_routes(app, preset_store)
    return app
