"""Every effect parameter as a command-line flag, from the one schema (`camfx serve`, `camfx
camera` and `camfx cluster up` take them), with its description and range in the help, and
`--preset NAME` to start from a saved preset; and the parser and number types the commands
share, so a bad value is one line and exit 2."""

from __future__ import annotations

import argparse
import typing

from .params import Params
from .presets import preset_params


def _range(info) -> str:
    """"1..50" from a field's constraints, for its flag's help."""
    bounds = {attr: getattr(m, attr) for m in info.metadata for attr in ("ge", "gt", "le", "lt", "multiple_of")
              if hasattr(m, attr)}
    low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    if low is None or high is None:
        return ""
    text = f"{'(' if 'gt' in bounds else '['}{low}, {high}{')' if 'lt' in bounds else ']'}"
    if "multiple_of" in bounds:
        text += f", a multiple of {bounds['multiple_of']}"
    return text


def add_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per effect parameter, generated from the schema so the two never drift."""
    group = parser.add_argument_group("effect parameters (defaults; each also changes live from the page or API)")
    group.add_argument("--preset", metavar="NAME",
                       help="start from a saved preset (the page's Presets, or PUT /presets/NAME); "
                            "the flags below change it further")
    for name, info in Params.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_ = f"{info.description}; default {info.default!r}"
        if info.annotation is bool:
            group.add_argument(flag, dest=f"param_{name}", action=argparse.BooleanOptionalAction, default=None,
                               help=help_)
            continue
        choices = typing.get_args(info.annotation) or None
        span = _range(info)
        group.add_argument(flag, dest=f"param_{name}", default=None, choices=choices,
                           metavar=None if choices else name.upper(), help=help_ + (f"; range {span}" if span else ""))


def params_from_args(args: argparse.Namespace) -> Params:
    patch = {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    preset = preset_params(args.preset) if getattr(args, "preset", None) else {}
    return Params().updated({**preset, **patch})  # pydantic coerces the strings ("12" -> 12.0)


class Parser(argparse.ArgumentParser):
    """camfx's commands' parser: a mistake in a flag is one line (no page of usage) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def positive(kind):
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def non_negative(text: str) -> float:
    """An argparse type: a number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, got {text!r}")
    return int(text)
