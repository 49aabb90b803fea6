"""`camfx cluster up | status | down`: camfx as a Ray Serve application on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .settings import APP_NAME, ClusterSettings

DESCRIPTION = """camfx on a Ray cluster (KubeRay, `ray up`, or `ray start` on your own machines): every
replica is a whole camfx server with its own GPU, models and peer connections; signalling goes
through Ray Serve's HTTP proxy, which places each new session on the replica with the most
headroom; media goes from the peer to the replica's node directly (or through TURN)."""


def _replicas(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a number of replicas (1 or more) or auto; got {text!r}")
    return int(text)


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                        help="the Ray cluster: auto (the one this machine belongs to), HOST:PORT of its head, "
                             "or ray://HOST:10001 (Ray Client); default $RAY_ADDRESS or %(default)s")
    parser.add_argument("--name", default=APP_NAME, help="the Serve application's name (default %(default)s)")


def parser() -> argparse.ArgumentParser:
    from ..param_flags import Parser, non_negative, positive
    from ..serve import add_server_flags

    p = Parser(prog="camfx cluster", description=DESCRIPTION)
    sub = p.add_subparsers(dest="action", required=True, metavar="up|status|down")
    up = sub.add_parser("up", help="deploy camfx (or update it) on the cluster",
                        description="Deploy camfx as a Ray Serve application, or update the one running.")
    _add_address(up)
    scale = up.add_argument_group("replicas (each a whole camfx server)")
    scale.add_argument("--replicas", type=_replicas, default=1, metavar="N|auto",
                       help="how many, or auto: between --min-replicas and --max-replicas on sessions per "
                            "replica (default %(default)s)")
    scale.add_argument("--min-replicas", type=positive(int), default=1, help="with --replicas auto (default 1)")
    scale.add_argument("--max-replicas", type=positive(int), default=4, help="with --replicas auto (default 4)")
    scale.add_argument("--target-sessions", type=positive(float),
                       help="with --replicas auto: sessions per replica to aim at (default 3/4 of --max-sessions)")
    scale.add_argument("--gpus-per-replica", type=non_negative, default=1.0,
                       help="GPUs each replica takes; Ray places replicas on nodes with them free; 0 for CPU "
                            "replicas (default %(default)s)")
    scale.add_argument("--cpus-per-replica", type=non_negative, default=1.0,
                       help="CPUs each replica reserves (default %(default)s)")
    scale.add_argument("--max-replicas-per-node", type=positive(int),
                       help="at most this many replicas on one node (default: as many as fit)")
    scale.add_argument("--proxy-location", default="HeadOnly", choices=["HeadOnly", "EveryNode"],
                       help="run the HTTP proxy on the head node only, or on every node (default %(default)s)")
    scale.add_argument("--media-host", default=None,
                       help="where each replica binds media: node (its node's address as Ray knows it), an "
                            "address, or 0.0.0.0 (every interface); default 127.0.0.1 with a loopback --host, "
                            "else node")
    add_server_flags(up, port_default=ClusterSettings.port, proxy=True)
    status = sub.add_parser("status", help="the application, its replicas, their nodes, sessions and runtimes")
    _add_address(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    down = sub.add_parser("down", help="remove camfx from the cluster (its sessions end)")
    _add_address(down)
    return p


def _fail(message: str) -> int:
    print(f"camfx cluster: {message}", file=sys.stderr)
    return 1


def settings_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> ClusterSettings:
    """Raises FlagError with a message for the user (a bad value exits through `p.error`)."""
    from ..serve import FlagError, server_fields
    from ..transport.origins import is_loopback

    server = server_fields(p, args)
    if args.replicas is None and args.min_replicas > args.max_replicas:
        raise FlagError("--min-replicas is above --max-replicas")
    media = args.media_host or ("127.0.0.1" if is_loopback(args.host) else "node")
    return ClusterSettings(
        **server, replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_sessions=args.target_sessions, gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica, max_replicas_per_node=args.max_replicas_per_node,
        proxy_location=args.proxy_location, media_host=media, app_name=args.name,
    )


def _loopback_address(address: str) -> bool:
    from urllib.parse import urlsplit

    from ..transport.origins import is_loopback

    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    return is_loopback(host)


def _connect(address: str) -> None:
    from .app import quiet_ray

    quiet_ray()
    if _loopback_address(address):
        # A Ray bound to loopback (`ray start --head --node-ip-address 127.0.0.1`): without this,
        # Ray turns 127.0.0.1 into this machine's LAN address, where such a head does not answer.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import logging

    import ray
    from ray import serve  # noqa: F401  (it sets up its logger on import)

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines are not for this console
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConnectionError(f"cannot reach a Ray cluster at {address} ({str(exc).splitlines()[0][:200]}); start one "
                              "with `ray start --head`, or pass its address with --address") from None


def _print_status(state: dict) -> None:
    if state["application"] is None:
        print("camfx is not deployed on this cluster (camfx cluster up)")
        return
    print(f"application: {state['application']} {state.get('message') or ''}".rstrip())
    for name, deployment in state["deployments"].items():
        counts = ", ".join(f"{n} {k.lower()}" for k, n in deployment["replicas"].items())
        print(f"  {name}: {deployment['status']} ({counts}) {deployment.get('message') or ''}".rstrip())
    for replica in state["replicas"]:
        runtimes = ", ".join(f"{m}: {r}" for m, r in (replica.get("runtimes") or {}).items())
        print(f"  replica {replica['replica']} on {replica['node_ip']} (node {replica['node_id'][:8]}): "
              f"{replica.get('sessions', '?')}/{replica.get('max_sessions', '?')} sessions, "
              f"busy {replica.get('busy', 0):.0%}, {replica.get('device', '?')}, media on "
              f"{replica.get('media', '?')}; {runtimes}")


def main(argv: list[str]) -> int:
    from ..serve import FlagError

    p = parser()
    args = p.parse_args(argv)
    try:
        settings = settings_from_args(p, args) if args.action == "up" else None
    except FlagError as exc:
        return _fail(str(exc))
    try:
        _connect(args.address)
    except ConnectionError as exc:
        return _fail(str(exc))
    from . import app

    if args.action == "up":
        import ray

        gpus = ray.cluster_resources().get("GPU", 0)
        if settings.gpus_per_replica > 0 and gpus == 0:
            return _fail("this Ray cluster has no GPU; pass --gpus-per-replica 0 to run the replicas on CPUs")
        print(f"camfx cluster: deploying {args.name} ({'auto' if settings.autoscaling() else settings.replicas} "
              f"replicas, {settings.gpus_per_replica:g} GPU and {settings.cpus_per_replica:g} CPU each)...",
              flush=True)
        app.up(settings)
        scheme = "https" if settings.tls_cert else "http"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"camfx cluster: {scheme}://{host}:{settings.port}/ (Serve's HTTP proxy)", flush=True)
        _print_status(app.status(args.name))
        return 0
    if args.action == "status":
        state = app.status(args.name)
        print(json.dumps(state, indent=2)) if args.json else _print_status(state)
        return 0 if state["application"] is not None else 1
    if app.down(args.name):
        print(f"camfx cluster: {args.name} removed")
        return 0
    print(f"camfx cluster: {args.name} is not deployed on this cluster")
    return 0
