"""`camfx cluster up | status | down`: camfx as a Ray Serve application on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..params import ParamsError
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


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text!r}")
    return int(text)


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                        help="the Ray cluster: auto (the one this machine belongs to), HOST:PORT of its head, "
                             "or ray://HOST:10001 (Ray Client); default $RAY_ADDRESS or %(default)s")
    parser.add_argument("--name", default=APP_NAME, help="the Serve application's name (default %(default)s)")


def parser() -> argparse.ArgumentParser:
    from ..param_flags import add_param_flags
    from ..transport.ice import add_ice_flags

    p = argparse.ArgumentParser(prog="camfx cluster", description=DESCRIPTION)
    sub = p.add_subparsers(dest="action", required=True, metavar="up|status|down")
    up = sub.add_parser("up", help="deploy camfx (or update it) on the cluster",
                        description="Deploy camfx as a Ray Serve application, or update the one running.")
    _add_address(up)
    scale = up.add_argument_group("replicas (each a whole camfx server)")
    scale.add_argument("--replicas", type=_replicas, default=1, metavar="N|auto",
                       help="how many, or auto: between --min-replicas and --max-replicas on sessions per "
                            "replica (default %(default)s)")
    scale.add_argument("--min-replicas", type=_positive_int, default=1, help="with --replicas auto (default 1)")
    scale.add_argument("--max-replicas", type=_positive_int, default=4, help="with --replicas auto (default 4)")
    scale.add_argument("--target-sessions", type=float,
                       help="with --replicas auto: sessions per replica to aim at (default 3/4 of --max-sessions)")
    scale.add_argument("--gpus-per-replica", type=_non_negative, default=1.0,
                       help="GPUs each replica takes; Ray places replicas on nodes with them free; 0 for CPU "
                            "replicas (default %(default)s)")
    scale.add_argument("--cpus-per-replica", type=_non_negative, default=1.0,
                       help="CPUs each replica reserves (default %(default)s)")
    scale.add_argument("--max-replicas-per-node", type=_positive_int,
                       help="at most this many replicas on one node (default: as many as fit)")
    scale.add_argument("--max-sessions", type=_positive_int, default=4,
                       help="streams per replica; beyond every replica's cap an offer gets 503 (default %(default)s)")
    scale.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where each replica processes frames (default: cuda where torch sees a GPU)")
    net = up.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address of Serve's HTTP proxy (default %(default)s; 0.0.0.0 for all)")
    net.add_argument("--port", type=int, default=8000, help="its port (default %(default)s)")
    net.add_argument("--proxy-location", default="HeadOnly", choices=["HeadOnly", "EveryNode"],
                     help="run the HTTP proxy on the head node only, or on every node (default %(default)s)")
    net.add_argument("--media-host", default=None,
                     help="where each replica binds media: node (its node's address as Ray knows it), an "
                          "address, or 0.0.0.0 (every interface); default 127.0.0.1 with a loopback --host, "
                          "else node")
    net.add_argument("--token", default=os.environ.get("CAMFX_TOKEN"),
                     help="every API call must send `Authorization: Bearer TOKEN` (default: $CAMFX_TOKEN); needed "
                          "beyond loopback")
    net.add_argument("--no-auth", action="store_true", help="serve beyond loopback without a token")
    net.add_argument("--tls-cert", metavar="PEM", help="the proxy serves https with this certificate (and --tls-key); "
                                                       "the files must be on the node the proxy runs on")
    net.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    add_ice_flags(net, "for the replicas' peer connections and for clients")
    net.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="also accept API calls from pages of ORIGIN; repeatable")
    net.add_argument("--replace-publisher", action="store_true",
                     help="a WHIP publish to a name in use replaces that stream (default: 409)")
    add_param_flags(up)
    status = sub.add_parser("status", help="the application, its replicas, their nodes, sessions and runtimes")
    _add_address(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    down = sub.add_parser("down", help="remove camfx from the cluster (its sessions end)")
    _add_address(down)
    return p


def _fail(message: str) -> int:
    print(f"camfx cluster: {message}", file=sys.stderr)
    return 1


def settings_from_args(args: argparse.Namespace) -> ClusterSettings:
    """Raises ValueError with a message for the user."""
    from ..param_flags import params_from_args
    from ..transport.ice import ice_servers_from
    from ..transport.origins import is_loopback

    if not is_loopback(args.host) and not args.token and not args.no_auth:
        raise ValueError(f"--host {args.host} lets other machines in, and there is no token: set --token (or "
                         "CAMFX_TOKEN), or pass --no-auth if everyone who reaches the port may use it")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    ice_servers_from(args)  # ValueError naming what is wrong
    if args.replicas is None and args.min_replicas > args.max_replicas:
        raise ValueError("--min-replicas is above --max-replicas")
    try:
        params = params_from_args(args)
    except ParamsError as exc:
        raise ValueError(str(exc)) from None
    media = args.media_host or ("127.0.0.1" if is_loopback(args.host) else "node")
    return ClusterSettings(
        replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_sessions=args.target_sessions, gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica, max_replicas_per_node=args.max_replicas_per_node,
        host=args.host, port=args.port, proxy_location=args.proxy_location, media_host=media,
        tls_cert=args.tls_cert, tls_key=args.tls_key, max_sessions=args.max_sessions, token=args.token,
        allowed_origins=tuple(args.allow_origin),
        ice_servers=tuple((url, args.ice_username, args.ice_credential) for url in args.ice_server),
        replace_publisher=args.replace_publisher, device=args.device,
        defaults=params.model_dump(exclude_defaults=True), app_name=args.name,
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
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args) if args.action == "up" else None
    except ValueError as exc:
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
