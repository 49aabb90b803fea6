"""What `camfx cluster up` sets: how many replicas, what each may use, and the camfx server
settings every replica runs with. Plain data: it travels to the replicas inside the Serve
application's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ServerConfig
from ..params import Params
from ..transport.ice import ice_server

APP_NAME = "camfx"


@dataclass
class ClusterSettings:
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
    # Serve's HTTP proxy (signalling) and where media binds on each node.
    host: str = "127.0.0.1"
    port: int = 8000
    proxy_location: str = "HeadOnly"
    media_host: str = "127.0.0.1"  # an address, "0.0.0.0" (every interface) or "node" (the node's Ray address)
    tls_cert: str | None = None
    tls_key: str | None = None
    # The camfx server each replica runs.
    max_sessions: int = 4
    max_viewers: int = 32
    connect_timeout: float = 6.0
    media_timeout: float = 5.0
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    ice_servers: tuple[tuple[str, str | None, str | None], ...] = ()  # (url, username, credential)
    replace_publisher: bool = False
    device: str = "auto"
    batch_sessions: str = "auto"
    model_threads: int = 1
    workers: int | None = None  # frame worker threads per replica (None: camfx's default)
    defaults: dict = field(default_factory=dict)  # default params, as JSON
    stats_period_s: float = 1.0  # how often replicas report their load to the routers
    app_name: str = APP_NAME

    def autoscaling(self) -> bool:
        return self.replicas is None

    def target(self) -> float:
        return self.target_sessions or max(1.0, 0.75 * self.max_sessions)

    def server_config(self, session_id_prefix: str = "") -> ServerConfig:
        """The camfx server of one replica."""
        extra = {"workers": self.workers} if self.workers else {}
        return ServerConfig(
            host=self.host, max_sessions=self.max_sessions, max_viewers=self.max_viewers,
            connect_timeout=self.connect_timeout, media_timeout=self.media_timeout, token=self.token,
            allowed_origins=tuple(self.allowed_origins),
            ice_servers=tuple(ice_server(url, user, credential) for url, user, credential in self.ice_servers),
            replace_publisher=self.replace_publisher, device=self.device, batch_sessions=self.batch_sessions,
            model_threads=self.model_threads, defaults=Params().updated(self.defaults),
            session_id_prefix=session_id_prefix, **extra,
        )
