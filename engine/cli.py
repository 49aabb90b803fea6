"""The `camfx` command: serve, camera, cluster, export, bench, doctor."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import logging
import os
import sys

from camfx.models.registry import RANDOM_SD_TURBO, TAESD

from .param_flags import add_param_flags, params_from_args
from .params import ParamsError

COMMANDS = {  # name -> (one line of help, module with main(argv), the extra it needs)
    "serve": ("serve the demo page and the WebRTC effects engine", "camfx.engine.cli", None),
    "camera": ("your webcam, processed, as a virtual camera for calls (here or on a camfx server)",
               "camfx.engine.client.cli", "camera"),
    "cluster": ("camfx on a Ray cluster: up, status, down (sessions placed by load, a GPU per replica)",
                "camfx.engine.deploy.cli", "cluster"),
    "export": ("rebuild the bundled models, or ONNX / TensorRT engines ahead of time", "camfx.export.cli", "export"),
    "bench": ("benchmarks that write JSON and PNG plots (latency, engine, soak, ...)", "camfx.bench.cli", "bench"),
    "doctor": ("what this machine can run, and which runtime each model will use", "camfx.engine.doctor", None),
}


def version() -> str:
    try:
        return importlib.metadata.version("camfx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: camfx COMMAND [options]   (camfx COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (help_, _, _) in COMMANDS.items()]
    lines += ["", "  --version  print camfx's version"]
    return "\n".join(lines)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def serve(argv: list[str]) -> int:
    from .config import ServerConfig
    from .transport.ice import add_ice_flags

    defaults = ServerConfig()
    parser = argparse.ArgumentParser(prog="camfx serve", description="Serve the demo page and the WebRTC engine.")
    parser.add_argument("--host", default=defaults.host,
                        help="address to serve on; media binds there too (default %(default)s; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=defaults.port, help="HTTP port (default %(default)s)")
    parser.add_argument("--max-sessions", type=_positive(int), default=defaults.max_sessions,
                        help="concurrent streams, 1 or more; more get 503 (default %(default)s)")
    parser.add_argument("--model-threads", type=_positive(int), default=defaults.model_threads,
                        help="onnxruntime threads per model run, 1 or more (default %(default)s)")
    parser.add_argument("--opencv-threads", type=_positive(int), default=defaults.opencv_threads,
                        help="OpenCV threads per resize or blur (default %(default)s: sessions share the cores instead)")
    parser.add_argument("--connect-timeout", type=_positive(float), default=defaults.connect_timeout,
                        help="seconds a peer has to connect before its slot is freed (default %(default)s)")
    parser.add_argument("--media-timeout", type=_positive(float), default=defaults.media_timeout,
                        help="seconds without a frame from a connected peer before it counts as gone "
                             "(default %(default)s)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="also accept API calls from pages of ORIGIN (e.g. https://studio.example); repeatable")
    exposed = parser.add_argument_group("safe to expose (tokens, https, STUN/TURN)")
    exposed.add_argument("--token", default=os.environ.get("CAMFX_TOKEN"),
                         help="every API call must send `Authorization: Bearer TOKEN` (default: $CAMFX_TOKEN); "
                              "needed to serve beyond loopback")
    exposed.add_argument("--no-auth", action="store_true",
                         help="serve beyond loopback without a token (anyone who reaches the port can use it)")
    exposed.add_argument("--tls", choices=["self-signed"],
                         help="serve https with a certificate made for this machine (kept in the cache folder)")
    exposed.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate (and --tls-key)")
    exposed.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    add_ice_flags(exposed, "for the peer connections, also handed to the page and to WHIP/WHEP clients")
    obs = parser.add_argument_group("WHIP / WHEP (OBS)")
    obs.add_argument("--replace-publisher", action="store_true",
                     help="a WHIP publish to a name in use replaces that stream (default: 409)")
    obs.add_argument("--max-viewers", type=_positive(int), default=defaults.max_viewers,
                     help="WHEP viewers of all streams together; more get 503 (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where frames are processed: cuda keeps them on the GPU (needs torch); "
                             "default: cuda if present")
    parser.add_argument(
        "--batch-sessions", default="auto", choices=["auto", "on", "off"],
        help="one segmentation call for frames that sessions send together; default: on with --device cuda",
    )
    diffusion = parser.add_argument_group("diffusion models (the `diffusion` effect; needs the diffusion extra)")
    diffusion.add_argument(
        "--add-diffusion-model", action="append", default=[], metavar="NAME=MODEL",
        help="serve an sd-turbo-family model (hub id or local folder) under NAME; repeatable",
    )
    diffusion.add_argument("--taesd", help=f"tiny autoencoder (hub id or folder; default {TAESD})")
    diffusion.add_argument(
        "--random-weights", action="store_true",
        help=f"also serve {RANDOM_SD_TURBO}: the full-size architecture, untrained (timing, no download)",
    )
    add_param_flags(parser)
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args)
    except ParamsError as exc:
        parser.error(str(exc))

    from . import memory
    from .diffusion.models import DiffusionModelSpec, default_specs
    from .runtimes.probe import resolve_device
    from .transport import http_server, ice, tls
    from .transport.http import create_app, http_limits
    from .transport.origins import is_loopback

    if not is_loopback(args.host) and not args.token and not args.no_auth:
        return _fail(f"--host {args.host} lets other machines in, and there is no token: set --token (or "
                     "CAMFX_TOKEN), or pass --no-auth if everyone who reaches the port may use it")
    try:
        ice_servers = ice.ice_servers_from(args)
    except ValueError as exc:
        return _fail(f"--ice-server: {exc}")
    if bool(args.tls_cert) != bool(args.tls_key):
        return _fail("--tls-cert and --tls-key go together")
    cert, key = args.tls_cert, args.tls_key
    if args.tls == "self-signed":
        from .runtimes.cache import cache_dir

        cert, key = tls.self_signed(cache_dir().parent / "tls")
    ssl_context = None
    if cert:
        try:
            ssl_context = tls.server_context(cert, key)
        except tls.TLSError as exc:
            return _fail(f"--tls: {exc}")

    try:
        resolve_device(args.device)
    except (ValueError, ImportError) as exc:
        return _fail(f"--device {args.device}: {exc}")
    models = default_specs(random_weights=args.random_weights)
    for entry in args.add_diffusion_model:
        name, _, model = entry.partition("=")
        if not name or not model:
            parser.error(f"--add-diffusion-model wants NAME=MODEL, got {entry!r}")
        models[name] = DiffusionModelSpec(model)
    if args.taesd:
        models = {name: dataclasses.replace(spec, taesd_id=args.taesd) for name, spec in models.items()}

    memory.limit_arenas()  # before any thread starts
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        ice.serve_media_on(ice.media_addresses(args.host))
    except OSError as exc:
        return _fail(f"--host {args.host}: {exc}")
    config = ServerConfig(
        host=args.host, port=args.port, max_sessions=args.max_sessions, model_threads=args.model_threads,
        opencv_threads=args.opencv_threads, connect_timeout=args.connect_timeout, media_timeout=args.media_timeout,
        allowed_origins=tuple(args.allow_origin), defaults=params, diffusion_models=models, device=args.device,
        batch_sessions=args.batch_sessions, token=args.token, tls_cert=cert, tls_key=key, ice_servers=ice_servers,
        replace_publisher=args.replace_publisher, max_viewers=args.max_viewers,
    )

    def started() -> None:
        _print_urls(args.host, args.port, https=ssl_context is not None)
        if args.tls == "self-signed":
            print(f"       certificate {cert}, SHA-256 {tls.fingerprint(cert)}", flush=True)
        if args.token:
            print("       API calls need the token; the page asks for it once", flush=True)

    try:
        http_server.run(create_app(config), args.host, args.port, limits=http_limits(config), access_log=args.access_log,
                        ssl_context=ssl_context, on_started=started)
    except http_server.ServeError as exc:
        return _fail(str(exc))
    return 0


def _print_urls(host: str, port: int, https: bool = False) -> None:
    from .transport.origins import is_loopback

    scheme = "https" if https else "http"
    if host in ("0.0.0.0", "::", ""):
        import ifaddr

        addresses = ["127.0.0.1"] + sorted(
            ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
        )
        urls = [f"{scheme}://{a}:{port}/" for a in addresses]
    else:
        urls = [f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}/"]
    print(f"camfx {version()}: open {urls[0]} in a browser", flush=True)
    for url in urls[1:]:
        print(f"       or {url}", flush=True)
    if not https and not all(is_loopback(u.split('//')[1].rsplit(':', 1)[0]) for u in urls):
        print("       (browsers give a page the camera only over https or on localhost)", flush=True)


def _fail(message: str) -> int:
    print(f"camfx: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"camfx {version()}")
        return 0
    if argv[0] not in COMMANDS:
        _fail(f"unknown command {argv[0]!r}; `camfx --help` lists them")
        return 2
    if argv[0] == "serve":
        return serve(argv[1:])
    _, module, extra = COMMANDS[argv[0]]
    try:
        return importlib.import_module(module).main(argv[1:]) or 0
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top == "camfx":
            raise  # a bug of ours, not a missing extra
        hint = f"pip install 'camfx[{extra}]'" if extra else "reinstall camfx"
        return _fail(f"`camfx {argv[0]}` needs {top}, which is not installed: {hint}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
