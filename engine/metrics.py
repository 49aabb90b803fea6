"""Prometheus metrics. One registry per server so tests can run several servers side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

# Milliseconds matter here: buckets from 0.5 ms to 1 s.
_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("camfx_frames_in", "Frames received from peers", registry=r)
        self.frames_out = Counter("camfx_frames_out", "Frames sent to peers (repeats included)", registry=r)
        self.frames_dropped = Counter(
            "camfx_frames_dropped", "Received frames replaced by a newer one before processing", registry=r
        )
        self.deadline_misses = Counter(
            "camfx_deadline_misses", "Output ticks where no new processed frame was ready in time", registry=r
        )
        self.stage_seconds = Histogram(
            "camfx_stage_seconds", "Time spent in each pipeline stage", ["stage"], buckets=_BUCKETS, registry=r
        )
        for stage in ("convert_in", "background", "segment", "refine", "effect", "convert_out"):
            self.stage_seconds.labels(stage)  # listed from the start, before any frame
        self.frame_latency = Histogram(
            "camfx_frame_latency_seconds", "From a frame's arrival to its processed frame being sent",
            buckets=_BUCKETS, registry=r,
        )
        self.pipeline_errors = Counter(
            "camfx_pipeline_errors", "Frames whose pipeline raised (sent on unprocessed)", registry=r
        )
        self.runtime_fallbacks = Counter(
            "camfx_runtime_fallbacks", "Runtimes dropped for a model (failed at load or run)",
            ["model", "runtime"], registry=r,
        )
        # The name of 0.1, counted alike for one release; then gone (use camfx_runtime_fallbacks).
        self._backend_fallbacks = Counter(
            "camfx_backend_fallbacks", "Deprecated: camfx_runtime_fallbacks", ["model", "runtime"], registry=r,
        )
        self.diffusion_pictures = Counter("camfx_diffusion_pictures", "Pictures the diffusion effect made", registry=r)
        self.diffusion_errors = Counter("camfx_diffusion_errors", "Diffusion generations that failed", registry=r)
        self.diffusion_stage_seconds = Histogram(
            "camfx_diffusion_stage_seconds", "Time per diffusion stage (encode, unet, decode)", ["stage"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r,
        )
        self.sessions = Gauge("camfx_sessions", "Open sessions", registry=r)
        self.sessions_total = Counter("camfx_sessions_opened", "Sessions opened", registry=r)

    def count_fallback(self, model: str, runtime: str) -> None:
        self.runtime_fallbacks.labels(model, runtime).inc()
        self._backend_fallbacks.labels(model, runtime).inc()

    def watch_diffusion(self, diffusion) -> None:
        """Export the diffusion scheduler's figures, read at each scrape: `diffusion.stats()`
        (server-wide) and `diffusion.stream_stats()` ((stream number, stats) per stream)."""
        self.registry.register(_DiffusionCollector(diffusion))


class _DiffusionCollector:
    _DEVICE = (("busy_share", "camfx_diffusion_busy_share", "Share of the diffusion device's time spent on batches"),
               ("batches_per_s", "camfx_diffusion_batches_per_second", "Diffusion batches run per second"),
               ("mean_batch_size", "camfx_diffusion_mean_batch_size", "Streams per diffusion batch, mean"),
               ("streams", "camfx_diffusion_streams", "Streams on the diffusion scheduler"))
    _STREAM = (("target_fps", "camfx_diffusion_stream_target_fps", "A stream's target picture rate"),
               ("achieved_fps", "camfx_diffusion_stream_achieved_fps", "A stream's picture rate"),
               ("age_ms_p50", "camfx_diffusion_stream_age_ms_p50", "A stream's picture age, median (ms)"),
               ("age_ms_p95", "camfx_diffusion_stream_age_ms_p95", "A stream's picture age, 95th percentile (ms)"),
               ("batch_size", "camfx_diffusion_stream_batch_size", "Streams in this stream's batches, mean"),
               ("rung_level", "camfx_diffusion_stream_rung", "A stream's quality rung (0 = full)"))

    def __init__(self, diffusion) -> None:
        self._diffusion = diffusion

    def describe(self):
        return []  # collected at scrape time only

    def collect(self):
        device = self._diffusion.stats()
        for key, name, doc in self._DEVICE:
            yield GaugeMetricFamily(name, doc, value=device[key] or 0.0)
        streams = list(self._diffusion.stream_stats())
        for key, name, doc in self._STREAM:
            family = GaugeMetricFamily(name, doc, labels=["stream"])
            for number, stats in streams:
                if stats[key] is not None:
                    family.add_metric([str(number)], float(stats[key]))
            yield family
