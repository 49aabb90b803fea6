"""`camfx camera`: your webcam, processed, as a camera other applications open (or a file)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..params import ParamsError

DESCRIPTION = """Your webcam with its background blurred, replaced or restyled, as a virtual camera for
Zoom, Meet, Teams, Discord or OBS, or into a file. Effects run here, or with --server on a remote
`camfx serve` (a GPU box). Change them live at the control page (http://127.0.0.1:8081/)."""


def _size(text: str) -> str:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"want WIDTHxHEIGHT, like 1280x720; got {text!r}")
    return f"{int(width)}x{int(height)}"


def _control(text: str) -> str:
    """off, or HOST:PORT with a port from 1 to 65535 (HOST may be left out)."""
    from ..param_flags import port

    if text != "off":
        port(text.rpartition(":")[2])  # argparse.ArgumentTypeError names what is wrong
    return text


def parser() -> argparse.ArgumentParser:
    from ..param_flags import Parser, add_param_flags, positive
    from ..transport.ice import add_ice_flags

    p = Parser(prog="camfx camera", description=DESCRIPTION)
    source = p.add_argument_group("input")
    source.add_argument("--input", default="/dev/video0" if sys.platform.startswith("linux") else "0",
                        help="a camera (/dev/video0 on Linux; a number or the device's name on macOS and "
                             "Windows) or a video file, played once at its own rate (default %(default)s)")
    source.add_argument("--size", type=_size, help="the camera's picture size, e.g. 1280x720")
    source.add_argument("--fps", type=positive(float), help="the camera's frame rate, e.g. 30")
    source.add_argument("--input-format", choices=["mjpeg", "yuyv"],
                        help="what the camera sends: mjpeg (large sizes at full rate) or yuyv (raw)")
    source.add_argument("--loop", action="store_true", help="play a video file again and again")
    out = p.add_argument_group("output")
    out.add_argument("--output", action="append", default=[], metavar="virtual|FILE.y4m|FILE.mp4|window",
                     help="where the picture goes; repeatable (default: virtual)")
    out.add_argument("--device-path", help="the virtual camera device (e.g. /dev/video10 on Linux)")
    remote = p.add_argument_group("remote (the effects on a camfx serve elsewhere)")
    remote.add_argument("--server", help="a camfx serve URL, e.g. https://gpu-box:8080")
    remote.add_argument("--token", default=os.environ.get("CAMFX_TOKEN"), help="its token (default: $CAMFX_TOKEN)")
    remote.add_argument("--insecure", action="store_true",
                        help="accept the server's certificate unchecked (a camfx serve --tls self-signed; compare "
                             "the fingerprint it printed)")
    add_ice_flags(remote, "for the media (default: the ones the server hands out)")
    control = p.add_argument_group("control")
    control.add_argument("--control", type=_control, default="127.0.0.1:8081", metavar="HOST:PORT|off",
                         help="the live control page and API (default %(default)s)")
    control.add_argument("--stats", action="store_true", help="print fps, latency and drops once a second")
    control.add_argument("--log-level", default="WARNING", type=str.upper,
                         choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                         help="camfx's own log lines (default %(default)s)")
    control.add_argument("-v", "--verbose", action="store_true",
                         help="also the libraries' log lines (aiortc, aioice), which are WARNING and above otherwise")
    add_param_flags(p)
    return p


def main(argv: list[str]) -> int:
    from ..param_flags import params_from_args

    p = parser()
    args = p.parse_args(argv)
    if not args.server and (args.insecure or args.ice_server):
        p.error("--insecure and --ice-server are for a remote server: add --server URL")
    try:
        params = params_from_args(args)
    except ParamsError as exc:
        p.error(str(exc))
    from .. import logs

    logs.setup(args.log_level, verbose=args.verbose)
    try:
        return asyncio.run(_run(args, params))
    except KeyboardInterrupt:
        return 0


def _fail(message: str) -> int:
    print(f"camfx camera: {message}", file=sys.stderr)
    return 1


async def _run(args, params) -> int:
    from .. import memory
    from ..config import ServerConfig
    from ..transport import http_server
    from .app import CameraApp
    from .control import control_app
    from .remote import RemoteError, RemoteProcessor
    from .sinks import SinkError, SinkRunner, make_sink
    from .sources import SourceError, open_source

    memory.limit_arenas()
    try:
        sinks = [make_sink(spec, args.device_path) for spec in (args.output or ["virtual"])]
    except SinkError as exc:
        return _fail(str(exc))
    try:
        source = open_source(args.input, args.size, args.fps, args.input_format, args.loop)
    except SourceError as exc:
        return _fail(str(exc))
    fps = args.fps or source.fps or 30.0
    if args.server:
        from ..transport.ice import ice_servers_from

        try:
            ice = ice_servers_from(args)
        except ValueError as exc:
            source.close()
            return _fail(f"--ice-server: {exc}")
        processor = RemoteProcessor(args.server, params, args.token, ice, insecure=args.insecure)
    else:
        from .local import LocalProcessor

        processor = LocalProcessor(ServerConfig(), params)
    app = CameraApp(source, processor, [SinkRunner(sink, fps) for sink in sinks], print_stats=args.stats)
    control = None
    if args.control != "off":
        host, _, port = args.control.rpartition(":")
        try:
            control = await http_server.start(control_app(app, host or "127.0.0.1"), host or "127.0.0.1", int(port))
        except (http_server.ServeError, ValueError) as exc:
            source.close()
            return _fail(f"--control {args.control}: {exc}")
        print(f"camfx camera: {source.description} -> {', '.join(s.name for s in sinks)}; "
              f"controls at http://{host or '127.0.0.1'}:{port}/", file=sys.stderr, flush=True)
    try:
        code = await app.run_until_done()
    except (SinkError, RemoteError) as exc:
        return _fail(str(exc))  # the one line that matters
    finally:
        if control is not None:
            await control.cleanup()
    for line in app.summary():  # what the run did, with or without --stats
        print(f"camfx camera: {line}", file=sys.stderr, flush=True)
    return code

