"""`camfx camera`'s live control: a small HTTP API and page on 127.0.0.1:8081 (by default).

    GET  /                 the control page: every effect control, and a preview of the output
    GET  /params/schema    the same schema as `camfx serve`
    GET  /params           the current params;  POST /params  a partial update (422 naming the field)
    GET  /stats            fps in and out, latency, drops, per output
    GET  /preview.mjpg     the output as MJPEG (a few frames a second, for the page)
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import cv2
from aiohttp import web

from ..params import Params, ParamsError
from ..transport.body import read_json
from ..transport.errors import HTTPError, json_errors
from ..transport.origins import origin_guard

log = logging.getLogger("camfx.camera")

PREVIEW_FPS = 8
MAX_JSON_BYTES = 64 * 1024
APP = web.AppKey("camera_app", object)


def _app(request: web.Request):
    return request.app[APP]


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "camera.html")


async def script(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(resources.files("camfx.demo") / "camera.js")


async def schema(request: web.Request) -> web.Response:
    return web.json_response(Params.model_json_schema())


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


async def preview(request: web.Request) -> web.StreamResponse:
    """The newest output frame as JPEG, a few times a second (encoded off the event loop)."""
    camera = _app(request)
    response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    last = None
    try:
        while True:
            frame = camera.preview
            if frame is not None and frame is not last:
                last = frame
                jpeg = await loop.run_in_executor(None, _jpeg, frame)
                await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            await asyncio.sleep(1 / PREVIEW_FPS)
    except ConnectionResetError:  # the page was closed or reloaded: the usual end of a preview
        log.info("preview: the page left")
        return response


def _jpeg(frame) -> bytes:
    image = frame.to_ndarray(format="bgr24")
    scale = 640 / max(image.shape[1], 1)
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


def control_app(camera, host: str) -> web.Application:
    app = web.Application(middlewares=[json_errors, origin_guard(host)])
    app[APP] = camera
    app.router.add_get("/", page)
    app.router.add_get("/static/camera.js", script)
    app.router.add_get("/params/schema", schema)
    app.router.add_get("/params", get_params)
    app.router.add_post("/params", set_params)
    app.router.add_get("/stats", stats)
    app.router.add_get("/preview.mjpg", preview)
    return app
