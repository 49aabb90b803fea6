"""Every effect parameter as a command-line flag, from the one schema (`camfx serve` and
`camfx camera` both take them), with its description and range in the help; `--preset NAME`
starts from a saved preset."""

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
