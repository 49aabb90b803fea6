"""What a control page needs to know about the effect parameters beyond their types: the groups
they are shown in, and when each one matters. Published in `GET /params/schema` (under
`x-camfx-ui`) by `camfx serve` and `camfx camera`, so both pages show the same controls and
neither keeps a copy of the engine's rules.

A field's `when` is a list of alternatives, each a {field: [allowed values]} that must all hold:
the field matters when any alternative does (no `when`: always). Fields in no group are shown
in "Other", so a new parameter appears on the pages before anyone places it.
"""

from __future__ import annotations

from typing import Any

from .params import EFFECTS, Params
from .pipeline.decisions import DIFFUSION_MODES_WITH_MASK, NEEDS_MASK
from .runtimes.probe import missing_extra

KEY = "x-camfx-ui"

# The groups in page order. Names of fields this build may not have are fine: absent ones are left
# out of what is published. collapsed: folded until opened (the simple view shows the rest).
GROUPS: list[dict[str, Any]] = [
    {"name": "Effect", "fields": ["effect", "blur_strength", "key_color", "toon_smoothing", "toon_edges"]},
    {"name": "Background", "fields": ["background", "background_image", "background_color", "background_fit",
                                      "light_wrap"]},
    {"name": "Diffusion", "fields": [
        "diffusion_mode", "backdrop_source", "prompt", "strength", "steps", "seed", "diffusion_size",
        "diffusion_model", "diffusion_feedback", "similarity_threshold", "stream_batch", "guidance",
        "diffusion_fps", "diffusion_max_age_ms"]},
    {"name": "Face", "fields": ["framing", "light", "low_light", "vignette", "touch_up", "people"]},
    {"name": "Mask", "fields": ["model", "mask_region", "mask_mode", "mask_threshold", "mask_smoothing",
                                "mask_feather", "segment_skip"],
     "collapsed": True},
    {"name": "Advanced", "fields": ["probe"], "collapsed": True},
]
OTHER = "Other"

_MASKED = [{"effect": list(NEEDS_MASK)}, {"effect": ["diffusion"], "diffusion_mode": list(DIFFUSION_MODES_WITH_MASK)}]
_REPLACE_IMAGE = [{"effect": ["replace"], "background": ["image"]}]

WHEN: dict[str, list[dict[str, list[Any]]]] = {
    "blur_strength": [{"effect": ["blur"]}],
    "key_color": [{"effect": ["remove"]}],
    "toon_smoothing": [{"effect": ["toon"]}],
    "toon_edges": [{"effect": ["toon"]}],
    "background": [{"effect": ["replace"]}],
    "background_image": _REPLACE_IMAGE,
    "background_fit": _REPLACE_IMAGE,
    "light_wrap": [{"effect": ["blur", "replace"]}],
    "background_color": [{"effect": ["replace"], "background": ["color"]}],
    "backdrop_source": [{"effect": ["diffusion"], "diffusion_mode": ["backdrop"]}],
    "model": _MASKED,
    "mask_region": _MASKED,
    "mask_mode": _MASKED,
    "mask_threshold": [{**alt, "mask_mode": ["threshold"]} for alt in _MASKED],
    "mask_smoothing": _MASKED,
    "mask_feather": _MASKED,
    "segment_skip": _MASKED,
}
for _group in GROUPS:
    if _group["name"] == "Diffusion":
        for _field in _group["fields"]:
            WHEN.setdefault(_field, [{"effect": ["diffusion"]}])


def diffusion_problem(specs: dict | None) -> str | None:
    """Why this process cannot run the diffusion effect (None when it can): a missing extra, or no
    model served."""
    if specs is not None and not specs:
        return "this server serves no diffusion model"
    return missing_extra("diffusion")


def ui_metadata(fields: list[str], *, defaults: Params | None = None, diffusion_models: list[str] | None = None,
                unavailable: dict[str, str] | None = None) -> dict[str, Any]:
    """The page metadata for a schema with `fields`: groups (each field in exactly one; the rest in
    "Other"), each field's `when`, the effects that cannot run here and why, the diffusion models
    served, and the defaults new sessions get."""
    present = set(fields)
    groups, placed = [], set()
    for group in GROUPS:
        names = [f for f in group["fields"] if f in present and f not in placed]
        placed.update(names)
        if names:
            groups.append({**group, "fields": names})
    rest = [f for f in fields if f not in placed]
    if rest:
        groups.append({"name": OTHER, "fields": rest, "collapsed": True})
    meta: dict[str, Any] = {
        "groups": groups,
        "when": {f: alts for f, alts in WHEN.items() if f in present},
        "effects": list(EFFECTS),
        "unavailable": dict(unavailable or {}),
    }
    if diffusion_models is not None:
        meta["diffusion_models"] = list(diffusion_models)
    if defaults is not None:
        meta["defaults"] = defaults.model_dump()
    return meta


def schema_with_ui(*, defaults: Params | None = None, diffusion_specs: dict | None = None,
                   check_diffusion: bool = True) -> dict[str, Any]:
    """`Params`' JSON schema with the page metadata under `x-camfx-ui`. diffusion_specs: the models
    this process serves (None: not known here, e.g. a remote server decides); check_diffusion:
    whether this process runs diffusion itself (False: another server does)."""
    schema = Params.model_json_schema()
    problem = diffusion_problem(diffusion_specs) if check_diffusion else None
    schema[KEY] = ui_metadata(
        list(schema.get("properties", {})), defaults=defaults,
        diffusion_models=sorted(diffusion_specs) if diffusion_specs is not None else None,
        unavailable={"diffusion": problem} if problem else None,
    )
    return schema
