"""The server's settings: what `camfx serve` sets from its flags, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from aiortc import RTCIceServer

from .diffusion.served import DiffusionModelSpec, default_specs
from .params import Params


@dataclass
class ServerConfig:
    """The server's settings; `camfx serve` sets them from its flags."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4
    model_threads: int = 1
    # OpenCV's own threads per call. One: the sessions and the helper pool already keep the
    # cores busy, and splitting each small resize or blur across threads cost a 480p blur
    # session 0.06 of a core in wake-ups for no gain in latency (camfx bench latency).
    opencv_threads: int = 1
    connect_timeout: float = 6.0  # seconds from the answer to "connected"; ICE and DTLS take well under one
    media_timeout: float = 5.0  # seconds without a frame before a connected peer counts as gone
    max_connections: int = 256  # open HTTP connections; one more gets 503
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive
    body_timeout: float = 30.0  # seconds for a request's body to arrive (8 MiB at 2.5 Mbit/s)
    upload_burst: int = 5  # uploads a client address may send at once,
    upload_every_s: float = 6.0  # then one per this many seconds
    # Browser pages of other origins allowed to call the API (the server's own always are).
    allowed_origins: tuple[str, ...] = ()
    ice_servers: tuple[RTCIceServer, ...] = ()  # STUN / TURN for the server's peer connections
    # A bearer token every API call must carry (None: no check, which only loopback allows).
    token: str | None = None
    tls_cert: str | None = None  # PEM files: serve https (browsers give a page the camera only so)
    tls_key: str | None = None
    replace_publisher: bool = False  # a WHIP publish to a name in use replaces it (else 409)
    max_viewers: int = 32  # WHEP viewers, all streams together; one more gets 503
    # Put before every session and viewer id: on a Ray cluster, the replica's id, so that later
    # requests for a session find the replica that holds it (camfx.engine.deploy).
    session_id_prefix: str = ""
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    defaults: Params = field(default_factory=Params)
    # Where frames are processed: "cuda" keeps each frame on the GPU (torch, see
    # device_pipeline); "cpu" is the OpenCV path; "auto" picks cuda when torch sees a GPU.
    device: str = "auto"
    # Stack frames that sessions send together into one segmentation call: "auto" does on cuda,
    # where it pays; on a CPU the sessions' runs go side by side on the cores instead.
    batch_sessions: str = "auto"
    # The models `diffusion_model` may name (see camfx.engine.diffusion.served.default_specs).
    diffusion_models: dict[str, DiffusionModelSpec] = field(default_factory=default_specs)
