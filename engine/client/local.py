"""`camfx camera` in local mode: the stream core and the pipeline in this process, no WebRTC."""

from __future__ import annotations

from typing import Any

from aiortc import MediaStreamTrack

from ..config import ServerConfig
from ..hub import Hub
from ..media.frame_slot import BroadcastReader
from ..params import Params
from ..stream import Stream


class LocalProcessor:
    """Frames of `track` through a Stream of its own Hub; `reader()` gives each processed frame."""

    mode = "local"

    def __init__(self, config: ServerConfig, params: Params):
        self.hub = Hub(config)
        self.errors: list[tuple[str, str]] = []
        self.ended = False
        self.stream = Stream(self.hub, params, "camera", on_input_ended=self._input_ended,
                             on_error=lambda field, message: self.errors.append((field, message)))

    def _input_ended(self) -> None:
        self.ended = True

    async def start(self, track: MediaStreamTrack) -> None:
        await self._load_models()
        self.stream.start(track)

    async def _load_models(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(self.hub.executor, self.hub.load_models)

    def reader(self) -> BroadcastReader:
        return self.stream.reader()

    @property
    def params(self) -> Params:
        return self.stream.params

    def update_params(self, patch: Any) -> Params:
        return self.stream.update_params(patch)

    @property
    def idle(self) -> bool:
        return self.stream.idle

    def pause(self, paused: bool) -> None:
        self.stream.paused = paused

    def stats(self) -> dict[str, Any]:
        stats = self.stream.stats()
        return {"mode": self.mode, "fps_in": stats["fps_in"], "frames_in": stats["frames_in"],
                "frames_dropped": stats["frames_dropped"], "frames_paused": stats["frames_paused"],
                "latency_ms_p50": stats["engine_latency_ms_p50"], "stage_ms": stats["stage_ms"],
                "quality": stats["quality"], "effect": stats["effect"], "runtimes": stats["runtimes"],
                "diffusion": stats["diffusion"], "warning": stats["warning"]}

    async def close(self) -> None:
        await self.stream.close()
        self.hub.shutdown()
