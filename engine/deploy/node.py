"""The replica: a whole camfx server in a Serve replica actor.

Serve places each replica on a node with the resources it asks for (`ray_actor_options`: a GPU
per replica by default), restarts it when it dies or fails its health check, and scales the
count. The replica serves camfx on 127.0.0.1 (`node_server`) and binds media on its node's
address, so peers connect to it directly (or through TURN); Ray carries signalling only.

Its session and viewer ids start with its replica id, so requests for them find it again.
"""

from __future__ import annotations

import logging

import ray
from ray import serve
from ray.serve import metrics as serve_metrics

from ..transport.ice import media_addresses, serve_media_on
from .node_server import NodeServer
from .node_stats import NodeStats
from .routes import EACH, Answer, Forwarded, Route
from .settings import ClusterSettings

log = logging.getLogger("camfx.cluster")


def media_host(setting: str) -> str:
    """The address media binds on: `node` is this node's address as Ray knows it."""
    return ray.util.get_node_ip_address() if setting == "node" else setting


class CamfxNode:
    def __init__(self, settings: ClusterSettings):
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self.media = media_host(settings.media_host)
        serve_media_on(media_addresses(self.media))  # this process is this replica's alone
        self._stats = NodeStats()
        # The same figures through Ray's own metrics export (each node's Prometheus endpoint),
        # tagged by Serve with the deployment and replica; the ingress's /metrics merges camfx's own.
        self._gauges = {name: serve_metrics.Gauge(f"camfx_replica_{name}", description=text)
                        for name, text in (("sessions", "Open sessions on this replica"),
                                           ("viewers", "WHEP viewers on this replica"),
                                           ("busy", "Share of frame-worker time spent processing"),
                                           ("degraded", "Streams below full quality"))}
        self._server = NodeServer(settings.server_config(session_id_prefix=f"{self.replica}-")).start()
        log.info("camfx replica %s on node %s (%s): media on %s, device %s", self.replica, self.node_id[:8],
                 self.node_ip, self.media, self._server.hub.device)

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes, **extra) -> Answer:
        return Answer(status, headers, body, self.replica, self.node_id, self.node_ip, extra)

    async def forward(self, request: Forwarded, route: dict | None = None) -> Answer:
        """Replay one HTTP request to this replica's camfx server. `route` is for the router."""
        status, headers, body = await self._server.forward(request)
        extra = {}
        if Route.from_dict(route).kind == EACH:
            extra = {"media": self.media, **(await self._server.call_async(self._report(advance=False)))}
        return self._answer(status, headers, body, **extra)

    async def _report(self, advance: bool = True) -> dict:
        return self._stats.report(self._server.sessions, self._server.hub, advance)

    async def record_routing_stats(self) -> dict:
        """Serve calls this every `request_routing_stats_period_s`; the routers read it."""
        report = await self._server.call_async(self._report())
        for name, gauge in self._gauges.items():
            gauge.set(report[name])
        return report

    async def record_autoscaling_stats(self) -> dict:
        """Serve's custom autoscaling metrics: the policy (`autoscale`) scales on sessions."""
        return {"sessions": float(len(self._server.sessions))}

    async def check_health(self) -> None:
        if not self._server.alive:
            raise RuntimeError("the camfx server of this replica has stopped")

    def __del__(self) -> None:  # Serve calls it on a graceful shutdown: sessions end, pools stop
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()
