"""What a replica reports to Serve (its routing stats, read by `router.HeadroomRouter`) and to
the autoscaler: how full and how busy it is.

    sessions, max_sessions   streams open, and the cap (beyond it the replica answers 503)
    viewers                  WHEP viewers
    names                    the stream names it publishes (WHEP viewers and /streams/{name} go there)
    busy                     share of the frame workers' time spent processing frames since the
                             last report (0..1; on a GPU box, the time the pipelines hold the GPU)
    diffusion_busy           share of the diffusion device's time spent on batches (0..1), from its
                             scheduler (camfx.engine.diffusion.scheduler)
    diffusion_queue          streams on the diffusion scheduler
    degraded                 streams whose budget controller stepped below full quality
    seq                      counts reports, so a router can tell a fresh one from the last
"""

from __future__ import annotations

import time
from typing import Any

from ..metrics import Metrics

_STAGES = ("convert_in", "background", "segment", "refine", "effect", "convert_out")


def _seconds(metrics: Metrics, name: str, stages: tuple[str, ...]) -> float:
    total = 0.0
    for stage in stages:
        value = metrics.registry.get_sample_value(f"{name}_sum", {"stage": stage})
        total += value or 0.0
    return total


class NodeStats:
    """Call `report(sessions, hub)` on the server's event loop: busy times are over the time
    since the previous report (`advance=False`: the last ones again, the window kept)."""

    def __init__(self) -> None:
        self._seq = 0
        self._last: tuple[float, float] | None = None  # (time, frame seconds)
        self._busy = 0.0

    def report(self, sessions, hub, advance: bool = True) -> dict[str, Any]:
        if advance:
            now = time.monotonic()
            frame_s = _seconds(hub.metrics, "camfx_stage_seconds", _STAGES)
            if self._last is not None and now > self._last[0]:
                self._busy = (frame_s - self._last[1]) / ((now - self._last[0]) * max(1, hub.config.workers))
            self._last = (now, frame_s)
            self._seq += 1
        busy, diffusion = self._busy, hub.diffusion.stats()
        live = sessions.all()
        return {
            "seq": self._seq,
            "sessions": len(sessions),
            "max_sessions": hub.config.max_sessions,
            "viewers": len(sessions.viewer_ids()),
            "names": sessions.names(),
            "busy": round(min(1.0, max(0.0, busy)), 3),
            "diffusion_busy": diffusion["busy_share"],
            "diffusion_queue": diffusion["streams"],
            "degraded": sum(1 for s in live if s.stream.budget.level > 0),
        }
