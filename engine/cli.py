"""The `camfx` command: serve, export, bench."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing


from .params import Params, ParamsError


def _add_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per effect parameter, generated from the schema so the two never drift."""
    group = parser.add_argument_group("default effect parameters (also settable live from the page or API)")
    for name, info in Params.model_fields.items():
        flag = "--" + name.replace("_", "-")
        choices = typing.get_args(info.annotation) or None
        if info.annotation is bool:
            group.add_argument(flag, dest=f"param_{name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(
                flag, dest=f"param_{name}", default=None, choices=choices,
                help=f"default: {info.default}",
            )


def _params_from_args(args: argparse.Namespace) -> Params:
    patch = {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    return Params().updated(patch)  # pydantic coerces the strings ("12" -> 12.0)


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx serve", description="Serve the demo page and the WebRTC engine.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-sessions", type=int, default=4, help="concurrent peers; more get 503")
    parser.add_argument("--model-threads", type=int, default=1, help="onnxruntime threads per model run")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where frames are processed: cuda keeps them on the GPU (needs torch); default: cuda if present")
    parser.add_argument(
        "--batch-sessions", default="auto", choices=["auto", "on", "off"],
        help="one segmentation call for frames that sessions send together; default: on with --device cuda",
    )
    diffusion = parser.add_argument_group("diffusion models (the `diffusion` effect; needs the diffusion extra)")
    diffusion.add_argument(
        "--add-diffusion-model", action="append", default=[], metavar="NAME=MODEL",
        help="serve an sd-turbo-family model (hub id or local folder) under NAME; repeatable",
    )
    diffusion.add_argument("--taesd", help="tiny autoencoder (hub id or folder; default madebyollin/taesd)")
    diffusion.add_argument(
        "--random-weights", action="store_true",
        help="also serve random/sd-turbo: the full-size architecture, untrained (timing, no download)",
    )
    _add_param_flags(parser)
    args = parser.parse_args(argv)
    try:
        defaults = _params_from_args(args)
    except ParamsError as exc:
        parser.error(str(exc))

    from aiohttp import web

    from .server import ServerConfig, create_app
    from .stylize import DiffusionModelSpec, default_specs

    models = default_specs(random_weights=args.random_weights)
    for entry in args.add_diffusion_model:
        name, _, model = entry.partition("=")
        if not name or not model:
            parser.error(f"--add-diffusion-model wants NAME=MODEL, got {entry!r}")
        models[name] = DiffusionModelSpec(model)
    if args.taesd:
        models = {name: dataclasses.replace(spec, taesd_id=args.taesd) for name, spec in models.items()}

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        host=args.host, port=args.port, max_sessions=args.max_sessions,
        model_threads=args.model_threads, defaults=defaults, diffusion_models=models, device=args.device,
        batch_sessions=args.batch_sessions,
    )
    print(f"camfx: open http://{args.host}:{args.port}/ in a browser", flush=True)
    web.run_app(create_app(config), host=args.host, port=args.port, print=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "serve": serve,
        "export": lambda rest: _delegate("camfx.export.cli", rest),
        "bench": lambda rest: _delegate("camfx.bench.cli", rest),
        "doctor": lambda rest: _delegate("camfx.engine.doctor", rest),
    }
    if not argv or argv[0] not in commands:
        print("usage: camfx {serve,export,bench,doctor} [options]  (camfx COMMAND --help for more)", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:]) or 0


def _delegate(module: str, argv: list[str]) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        print(f"camfx: {exc}. Install the extra it needs, e.g. pip install 'camfx[export,bench]'", file=sys.stderr)
        return 1
    return mod.main(argv) or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
