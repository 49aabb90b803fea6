"""The presets API, the same on `camfx serve` and `camfx camera`'s control server:

    GET    /presets          {"presets": {NAME: {field: value, ...}, ...}}
    GET    /presets/{name}   that preset's params (404 if none)
    PUT    /presets/{name}   save params under NAME (a JSON object; 422 naming a bad field)
    DELETE /presets/{name}   forget it

The file is read and written off the event loop (it is small, but it is a disk).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web

from ..params import ParamsError
from ..presets import PresetError, PresetStore
from .body import read_json
from .errors import HTTPError

MAX_PRESET_BYTES = 16 * 1024  # a preset with every field is about 1 KB
STORE = web.AppKey("presets", PresetStore)


async def _call(request: web.Request, action: Callable[[PresetStore], Any]) -> Any:
    try:
        return await asyncio.to_thread(action, request.app[STORE])
    except PresetError as exc:
        raise HTTPError(exc.status, str(exc)) from None
    except ParamsError as exc:
        raise HTTPError(422, "invalid params", exc.errors) from None


async def list_presets(request: web.Request) -> web.Response:
    return web.json_response({"presets": await _call(request, lambda store: store.all())})


async def get_preset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response(await _call(request, lambda store: store.get(name)))


async def put_preset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    params = await read_json(request, MAX_PRESET_BYTES)
    saved = await _call(request, lambda store: store.put(name, params))
    return web.json_response({"name": name, "params": saved})


async def delete_preset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _call(request, lambda store: store.delete(name))
    return web.json_response({"deleted": name})


def add_routes(app: web.Application, store: PresetStore | None = None) -> None:
    app[STORE] = store or PresetStore()
    app.router.add_get("/presets", list_presets)
    app.router.add_get("/presets/{name}", get_preset)
    app.router.add_put("/presets/{name}", put_preset)
    app.router.add_delete("/presets/{name}", delete_preset)
