"""What `camfx cluster up` sets: how many replicas, what each may use, and the camfx server
every replica runs: ServerConfig's own fields and defaults, with the proxy's port. It travels
to the replicas inside the Serve application's arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ServerConfig

APP_NAME = "camfx"


@dataclass
class ClusterSettings(ServerConfig):
    """ServerConfig's fields are each replica's server; host, port and the certificate are those
    of Serve's HTTP proxy (a replica serves on loopback behind it)."""

    port: int = 8000  # the proxy's
    # None: the replica's own default (from its node's cores), not this machine's.
    workers: int | None = None  # type: ignore[assignment]
    # Replicas: a fixed count, or autoscaling (replicas None) between min and max on sessions.
    replicas: int | None = 1
    min_replicas: int = 1
    max_replicas: int = 4
    target_sessions: float | None = None  # sessions per replica the autoscaler aims at (None: 3/4 of the cap)
    upscale_delay_s: float = 10.0  # how long the autoscaler must want more replicas before it adds one
    downscale_delay_s: float = 300.0  # and fewer, before it removes one
    gpus_per_replica: float = 1.0
    cpus_per_replica: float = 1.0
    max_replicas_per_node: int | None = None
    proxy_location: str = "HeadOnly"
    media_host: str = "127.0.0.1"  # an address, "0.0.0.0" (every interface) or "node" (the node's Ray address)
    stats_period_s: float = 1.0  # how often replicas report their load to the routers
    app_name: str = APP_NAME

    def autoscaling(self) -> bool:
        return self.replicas is None

    def target(self) -> float:
        return self.target_sessions or max(1.0, 0.75 * self.max_sessions)

    def server_config(self, session_id_prefix: str = "") -> ServerConfig:
        """The camfx server of one replica: plain http on loopback behind the proxy."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(ServerConfig)
               if f.name not in ("port", "tls_cert", "tls_key", "workers")}
        extra = {"workers": self.workers} if self.workers else {}
        return ServerConfig(**{**own, "session_id_prefix": session_id_prefix}, **extra)
