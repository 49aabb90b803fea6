"""The `Stylize` pipeline stage: a stream's handle on the device's diffusion scheduler.

On each frame of the `diffusion` effect it hands the newest picture to the effect stage
(`work.stylized`) and offers this frame and its mask to the scheduler (newest wins); it never
waits for generation. It opens the handle on the first such frame, closes it as soon as the
effect changes or the stream ends (the device's share goes to the others at once), checks
parameter changes against the loaded text encoder and the device's room (`check`), and says
how the stream is served (`stats`) and what went wrong (`notices`).
"""

from __future__ import annotations

import threading
from typing import Any

from ..media import yuv
from ..params import Params
from .picture import diffusion_size
from .scheduler import AdmissionError
from .service import DiffusionService, Job

STATS_KEY = "diffusion"  # the session stats' key for this stage's figures


class Stylize:
    """See the module docstring. Called from the stream's executor thread, one frame at a time."""

    name = "stylize"

    def __init__(self, service: DiffusionService):
        self._service = service
        self._handle = None
        self._state = None
        self._lock = threading.Lock()  # open / close from the frame thread, stats from the loop
        self._refusal: str | None = None
        self._closed = False  # the stream has ended: a frame still on its way takes no new slot

    def check(self, params: Params) -> None:
        self._service.check(params, self._handle, self._state)

    def __call__(self, work) -> None:
        p = work.params
        if p.effect != "diffusion" or self._closed:
            self._release()
            return
        if self._handle is None and not self._open(p):
            return
        handle, state = self._handle, self._state
        self._service.configure(handle, p)
        work.stylized = handle.latest
        if p == state.failed_params:
            return  # after an error, wait for a change of parameters
        height, width = diffusion_size(yuv.frame_size(work.image), handle.rung.size)
        handle.offer(Job(state, work.image, work.alpha, p, (height, width)), work.t_recv,
                     (p.diffusion_model, height, width))

    def _open(self, params: Params) -> bool:
        try:
            handle, state = self._service.open(params)
        except AdmissionError as exc:
            if self._refusal is None:
                self._refusal = str(exc)
            return False
        with self._lock:
            if self._closed:  # the stream ended while the slot was being opened: give it back
                handle.close()
                return False
            self._handle, self._state, self._refusal = handle, state, None
        return True

    def notices(self) -> list[tuple[str, str]]:
        """Errors for the user since the last call: (field, message)."""
        out = []
        state = self._state
        if state is not None:
            while state.notices:
                out.append(state.notices.popleft())
        if self._refusal is not None and self._refusal != "reported":
            out.append(("diffusion_fps", self._refusal))
            self._refusal = "reported"
        return out

    @property
    def latest(self):
        """The newest picture shown (None before the first)."""
        return self._handle.latest if self._handle is not None else None

    @property
    def frames(self) -> int:
        """Pictures made so far."""
        return self._state.serial if self._state is not None else 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            handle, state = self._handle, self._state
        if handle is None:
            return {STATS_KEY: None}
        s = state.stylizer
        served = handle.stats()
        return {STATS_KEY: {
            "status": state.status,
            "error": state.error,
            "fps": served["achieved_fps"],
            "frames": state.serial,
            "skipped": s.frames_skipped if s is not None else 0,
            "stage_ms": state.stage_ms,
            "lag_frames": s.lag_frames if s is not None else 0,
            "device": str(s.device) if s is not None else None,
            **served,
        }}

    def _release(self) -> None:
        """Give the scheduler's slot back (the effect is no longer diffusion, or the stream ended)."""
        with self._lock:
            handle, self._handle, self._refusal = self._handle, None, None
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """The stream's end (the pipeline's close): the slot is given back, and a frame the worker
        thread still carries through the stages afterwards does not take a new one."""
        with self._lock:
            self._closed = True
        self._release()
