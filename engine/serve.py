"""A camfx server from the command line: its flags, the ServerConfig they make, and `camfx serve`.

`camfx cluster up` takes the same server flags (each replica runs this server), so both read
them here: one declaration, one set of checks and messages. `ServerThread` runs a whole server
on a thread and event loop of its own, for callers whose own code is elsewhere (a cluster
replica, synchronous tests, benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import os
import sys
import threading
from typing import Any, Coroutine

from camfx.models.registry import RANDOM_SD_TURBO, TAESD

from .config import ServerConfig
from .param_flags import Parser, add_param_flags, params_from_args, port, positive
from .params import Params, ParamsError


class FlagError(ValueError):
    """Flags that cannot serve together (exit 1); the message names the flags."""


def add_server_flags(parser: argparse.ArgumentParser, port_default: int, proxy: bool = False) -> None:
    """The flags of the server `camfx serve` runs and each replica of `camfx cluster up` runs.
    `proxy`: --host, --port and the certificate are those of the cluster's HTTP proxy."""
    from .transport.ice import add_ice_flags

    defaults = ServerConfig()
    where = "Serve's HTTP proxy" if proxy else "the server"
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=defaults.host,
                     help=f"address {where} listens on (default %(default)s; 0.0.0.0 for all)"
                          + ("" if proxy else "; media binds there too"))
    net.add_argument("--port", type=port, default=port_default, help="HTTP port (default %(default)s)")
    net.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="also accept API calls from pages of ORIGIN (e.g. https://studio.example); repeatable")
    limits = parser.add_argument_group("capacity" + (" of each replica" if proxy else ""))
    limits.add_argument("--max-sessions", type=positive(int), default=defaults.max_sessions,
                        help="concurrent streams, 1 or more; more get 503 (default %(default)s)")
    limits.add_argument("--max-viewers", type=positive(int), default=defaults.max_viewers,
                        help="WHEP viewers of all streams together; more get 503 (default %(default)s)")
    limits.add_argument("--model-threads", type=positive(int), default=defaults.model_threads,
                        help="onnxruntime threads per model run, 1 or more (default %(default)s)")
    limits.add_argument("--connect-timeout", type=positive(float), default=defaults.connect_timeout,
                        help="seconds a peer has to connect before its slot is freed (default %(default)s)")
    limits.add_argument("--media-timeout", type=positive(float), default=defaults.media_timeout,
                        help="seconds without a frame from a connected peer before it counts as gone "
                             "(default %(default)s)")
    limits.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"],
                        help="where frames are processed: cuda keeps them on the GPU (needs torch); "
                             "default: cuda if present")
    limits.add_argument("--batch-sessions", default=defaults.batch_sessions, choices=["auto", "on", "off"],
                        help="one segmentation call for frames that sessions send together; default: on with "
                             "--device cuda")
    exposed = parser.add_argument_group("safe to expose (tokens, https, STUN/TURN)")
    exposed.add_argument("--token", default=os.environ.get("CAMFX_TOKEN"),
                         help="every API call must send `Authorization: Bearer TOKEN` (default: $CAMFX_TOKEN); "
                              "needed to serve beyond loopback")
    exposed.add_argument("--no-auth", action="store_true",
                         help="serve beyond loopback without a token (anyone who reaches the port can use it)")
    exposed.add_argument("--tls-cert", metavar="PEM",
                         help=f"{where} serves https with this certificate (and --tls-key)"
                              + ("; the files must be on the node the proxy runs on" if proxy else ""))
    exposed.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    add_ice_flags(exposed, "for the peer connections, also handed to the page and to WHIP/WHEP clients")
    obs = parser.add_argument_group("WHIP / WHEP (OBS)")
    obs.add_argument("--replace-publisher", action="store_true",
                     help="a WHIP publish to a name in use replaces that stream (default: 409)")
    add_param_flags(parser)


def server_fields(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  diffusion_models: dict | None = None) -> dict[str, Any]:
    """ServerConfig's fields from the flags of `add_server_flags`. A bad value exits through
    `parser.error` (one line, exit 2) naming the flag and what it may be; flags that cannot go
    together raise FlagError. `diffusion_models`: the names `--diffusion-model` may pick."""
    from .diffusion.served import default_specs
    from .transport.ice import ice_servers_from
    from .transport.origins import is_loopback

    try:
        params = params_from_args(args)
    except ParamsError as exc:
        parser.error(str(exc))
    problem = default_params_problem(params, diffusion_models if diffusion_models is not None else default_specs())
    if problem:
        parser.error(problem)
    if not is_loopback(args.host) and not args.token and not args.no_auth:
        raise FlagError(f"--host {args.host} lets other machines in, and there is no token: set --token (or "
                        "CAMFX_TOKEN), or pass --no-auth if everyone who reaches the port may use it")
    try:
        ice_servers = ice_servers_from(args)
    except ValueError as exc:
        raise FlagError(f"--ice-server: {exc}") from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise FlagError("--tls-cert and --tls-key go together")
    return dict(
        host=args.host, port=args.port, max_sessions=args.max_sessions, max_viewers=args.max_viewers,
        model_threads=args.model_threads, connect_timeout=args.connect_timeout, media_timeout=args.media_timeout,
        device=args.device, batch_sessions=args.batch_sessions, allowed_origins=tuple(args.allow_origin),
        token=args.token, tls_cert=args.tls_cert, tls_key=args.tls_key, ice_servers=ice_servers,
        replace_publisher=args.replace_publisher, defaults=params,
    )


def default_params_problem(params: Params, diffusion_models: dict) -> str | None:
    """What the schema cannot check in the default params, which every session would be refused
    for (a 422): a background image or a diffusion model that does not exist."""
    from .effects.backgrounds import bundled_names

    images = bundled_names()
    if params.background_image not in images:
        return (f"argument --background-image: no bundled image {params.background_image!r}; pick one of "
                f"{', '.join(images)} (uploads are picked on the page or with POST /backgrounds)")
    if params.diffusion_model not in diffusion_models:
        return (f"argument --diffusion-model: this server does not serve {params.diffusion_model!r}; pick one "
                f"of {', '.join(sorted(diffusion_models))} (or add one with --add-diffusion-model NAME=MODEL)")
    return None


def parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    p = Parser(prog="camfx serve", description="Serve the demo page and the WebRTC engine.")
    add_server_flags(p, port_default=defaults.port)
    p.add_argument("--opencv-threads", type=positive(int), default=defaults.opencv_threads,
                   help="OpenCV threads per resize or blur (default %(default)s: sessions share the cores instead)")
    p.add_argument("--tls", choices=["self-signed"],
                   help="serve https with a certificate made for this machine (kept in the cache folder)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="camfx's own log lines (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the libraries' log lines (aiortc, aioice, aiohttp), which are WARNING and above "
                        "otherwise")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    diffusion = p.add_argument_group("diffusion models (the `diffusion` effect; needs the diffusion extra)")
    diffusion.add_argument("--add-diffusion-model", action="append", default=[], metavar="NAME=MODEL",
                           help="serve an sd-turbo-family model (hub id or local folder) under NAME; repeatable")
    diffusion.add_argument("--taesd", help=f"tiny autoencoder (hub id or folder; default {TAESD})")
    diffusion.add_argument("--random-weights", action="store_true",
                           help=f"also serve {RANDOM_SD_TURBO}: the full-size architecture, untrained "
                                "(timing, no download)")
    return p


def _diffusion_models(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    from .diffusion.served import DiffusionModelSpec, default_specs

    models = default_specs(random_weights=args.random_weights)
    for entry in args.add_diffusion_model:
        name, _, model = entry.partition("=")
        if not name or not model:
            p.error(f"argument --add-diffusion-model: wants NAME=MODEL, got {entry!r}")
        models[name] = DiffusionModelSpec(model)
    if args.taesd:
        models = {name: dataclasses.replace(spec, taesd_id=args.taesd) for name, spec in models.items()}
    return models


def main(argv: list[str]) -> int:
    """`camfx serve`."""
    from . import logs, memory
    from .runtimes.probe import resolve_device
    from .transport import http_server, ice, tls
    from .transport.http import create_app, http_limits

    p = parser()
    args = p.parse_args(argv)
    models = _diffusion_models(p, args)
    try:
        fields = server_fields(p, args, models)
    except FlagError as exc:
        return _fail(str(exc))
    cert, key = fields["tls_cert"], fields["tls_key"]
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

    memory.limit_arenas()  # before any thread starts
    logs.setup(args.log_level, verbose=args.verbose)
    try:
        ice.serve_media_on(ice.media_addresses(args.host))
    except OSError as exc:
        return _fail(f"--host {args.host}: {exc}")
    config = ServerConfig(**{**fields, "tls_cert": cert, "tls_key": key}, opencv_threads=args.opencv_threads,
                          diffusion_models=models)

    def started() -> None:
        print_urls(args.host, args.port, https=ssl_context is not None)
        if args.tls == "self-signed":
            print(f"       certificate {cert}, SHA-256 {tls.fingerprint(cert)}", flush=True)
        if args.token:
            print("       API calls need the token; the page asks for it once", flush=True)

    try:
        http_server.run(create_app(config), args.host, args.port, limits=http_limits(config),
                        access_log=args.access_log, ssl_context=ssl_context, on_started=started)
    except http_server.ServeError as exc:
        return _fail(str(exc))
    return 0


def print_urls(host: str, port: int, https: bool = False) -> None:
    import camfx

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
    print(f"camfx {camfx.__version__}: open {urls[0]} in a browser", flush=True)
    for url in urls[1:]:
        print(f"       or {url}", flush=True)
    if not https and not all(is_loopback(u.split('//')[1].rsplit(':', 1)[0]) for u in urls):
        print("       (browsers give a page the camera only over https or on localhost)", flush=True)


def _fail(message: str) -> int:
    print(f"camfx: {message}", file=sys.stderr)
    return 1


class ServerThread:
    """The whole server (`create_app(config)`, every route, limit and check) on 127.0.0.1 and a
    port the system picks (or `port`), served from a thread with its own event loop. `start()`
    returns once the models are loaded; `stop()` closes every session, then the loop."""

    def __init__(self, config: ServerConfig, port: int = 0, ssl_context=None, name: str = "camfx-server"):
        self.config, self.port, self.ssl_context = config, port, ssl_context
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._runner = None
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """Run `coro` on the server's loop; its future, for any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine, timeout: float = 60.0) -> Any:
        """Run `coro` on the server's loop and wait for its result (from a thread with no loop)."""
        return self.submit(coro).result(timeout)

    async def call_async(self, coro: Coroutine) -> Any:
        """Run `coro` on the server's loop (from another event loop)."""
        return await asyncio.wrap_future(self.submit(coro))

    def start(self, timeout: float = 120.0) -> "ServerThread":
        self._thread.start()
        self.call(self._start(), timeout)
        return self

    async def _start(self) -> None:
        from .transport import http_server
        from .transport.http import create_app, http_limits

        # setup() runs on_startup, which loads the models: /healthz names their runtimes from the start.
        self._runner = await http_server.start(create_app(self.config), "127.0.0.1", self.port,
                                               limits=http_limits(self.config), ssl_context=self.ssl_context)
        self.port = self._runner.addresses[0][1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"
        await self.started()

    async def started(self) -> None:
        """Called on the server's loop once it serves (for subclasses)."""

    async def stopping(self) -> None:
        """Called on the server's loop before it closes (for subclasses)."""

    @property
    def app(self):
        assert self._runner is not None, "not started"
        return self._runner.app

    @property
    def hub(self):
        from .transport.http import HUB

        return self.app[HUB]

    @property
    def sessions(self):
        from .transport.http import SESSIONS

        return self.app[SESSIONS]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._runner is not None

    def stop(self, timeout: float = 30.0) -> None:
        """Close every session and the server, then the loop and its thread. Idempotent."""
        if not self._thread.is_alive():
            return

        async def cleanup() -> None:
            await self.stopping()
            if self._runner is not None:
                await self._runner.cleanup()  # on_shutdown closes the sessions and the hub's pools

        try:
            self.call(cleanup(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()
