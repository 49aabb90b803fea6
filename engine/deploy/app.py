"""The Serve application, and putting it up on a Ray cluster, reading its state, taking it down.

    Ingress (1 replica, no CPU reserved)  --handle, HeadroomRouter-->  CamfxNode x N

The CamfxNode replicas ask for `gpus_per_replica` GPUs and `cpus_per_replica` CPUs each; Ray
places them on nodes that have those free, Serve restarts one that dies or fails its health
check, and, with autoscaling, adds or removes replicas on sessions per replica.
"""

from __future__ import annotations

import os
from typing import Any

from .settings import ClusterSettings

ROUTER = "camfx.engine.deploy.router:HeadroomRouter"
POLICY = "camfx.engine.deploy.autoscale:SessionsPolicy"


def quiet_ray() -> None:
    """Before Ray starts in this process: no usage report leaves the machine."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def node_options(settings: ClusterSettings) -> dict[str, Any]:
    from ray.serve.config import RequestRouterConfig

    options: dict[str, Any] = dict(
        name="CamfxNode",
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        # Signalling calls are short; the cap bounds the queue, it is not the session cap.
        max_ongoing_requests=64,
        max_queued_requests=256,
        request_router_config=RequestRouterConfig(
            request_router_class=ROUTER,
            request_routing_stats_period_s=settings.stats_period_s,
            request_routing_stats_timeout_s=max(5.0, 5 * settings.stats_period_s),
        ),
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
        graceful_shutdown_timeout_s=10.0,
    )
    if settings.max_replicas_per_node:
        options["max_replicas_per_node"] = settings.max_replicas_per_node
    if settings.autoscaling():
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "upscale_delay_s": settings.upscale_delay_s,
            "downscale_delay_s": settings.downscale_delay_s,
            "look_back_period_s": 15.0,  # over Serve's metrics interval (10 s)
            "policy": {"policy_function": POLICY,
                       "policy_kwargs": {"target_sessions": settings.target(), "max_sessions": settings.max_sessions}},
        }
    else:
        options["num_replicas"] = settings.replicas
    return options


def build(settings: ClusterSettings):
    """The bound application: `serve.run(build(settings), name=..., route_prefix="/")`."""
    from ray import serve
    from ray.serve.config import BackpressureConfig

    from .ingress import Ingress
    from .node import CamfxNode

    node = serve.deployment(**node_options(settings))(CamfxNode)
    ingress = serve.deployment(
        name="Ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=256, max_queued_requests=512,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=5),
    )(Ingress)
    return ingress.bind(node.bind(settings))


def http_options(settings: ClusterSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if settings.tls_cert:
        options.update(ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key)
    return options


def up(settings: ClusterSettings) -> None:
    """Start Serve's proxy (if Serve is not running yet) and deploy, or update, the application;
    returns once its replicas are up (raises if they cannot be)."""
    from ray import serve

    serve.start(proxy_location=settings.proxy_location, http_options=http_options(settings))
    serve.run(build(settings), name=settings.app_name, route_prefix="/")


def status(app_name: str) -> dict[str, Any]:
    """The application's and deployments' states from Serve, and every replica's health."""
    from ray import serve

    state = serve.status()
    app = state.applications.get(app_name)
    if app is None:
        return {"application": None}
    deployments = {name: {"status": str(d.status.value if hasattr(d.status, "value") else d.status),
                          "message": d.message, "replicas": {str(k.value if hasattr(k, "value") else k): v
                                                             for k, v in d.replica_states.items()}}
                   for name, d in app.deployments.items()}
    out: dict[str, Any] = {"application": str(app.status.value if hasattr(app.status, "value") else app.status),
                           "message": app.message, "deployments": deployments, "replicas": []}
    if out["application"] == "RUNNING":
        handle = serve.get_app_handle(app_name)
        out["replicas"] = handle.replicas.remote().result(timeout_s=60)
    return out


def down(app_name: str) -> bool:
    from ray import serve

    if app_name not in serve.status().applications:
        return False
    serve.delete(app_name)
    return True
