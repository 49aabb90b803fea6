"""Presets: named sets of effect parameters, kept in one JSON file in the user's config folder
($XDG_CONFIG_HOME/camfx/presets.json, else ~/.config/camfx/presets.json; $CAMFX_PRESETS names
another file). `camfx serve --preset NAME` and `camfx camera --preset NAME` start with one; the
page saves and loads them (`GET/PUT/DELETE /presets/{name}`).

A preset holds only the fields it sets (the rest keep their defaults), each checked by the params
schema when saved and again when used. Names, sizes and the count are capped, so the file stays
small enough to read whole.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from .params import Params, ParamsError, field_error

MAX_PRESETS = 50
MAX_FILE_BYTES = 1024 * 1024
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
NAME_RULE = "1 to 40 letters, digits, spaces, '_', '-' or '.', starting with a letter or digit"


class PresetError(ValueError):
    """A preset that cannot be saved or used; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def default_path() -> Path:
    if os.environ.get("CAMFX_PRESETS"):
        return Path(os.environ["CAMFX_PRESETS"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "camfx" / "presets.json"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise PresetError(f"bad preset name {name!r}: {NAME_RULE}")
    return name


def validated(params: Any) -> dict[str, Any]:
    """The fields of `params` as the schema normalises them; ParamsError naming a bad field."""
    if not isinstance(params, dict) or not params:
        raise ParamsError([field_error("", "expected a JSON object of parameters, like {\"effect\": \"blur\"}")])
    full = Params().updated(params).model_dump()
    return {field: full[field] for field in params}


class PresetStore:
    """The presets file. Reads and writes whole (it is small); a lock keeps writers in turn and
    a write goes to a temporary file first, so a crash never leaves half a file."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise PresetError(f"{self.path} is over {MAX_FILE_BYTES // 1024} KiB; it is not a presets file")
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            if isinstance(exc, PresetError):
                raise
            raise PresetError(f"cannot read the presets file {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise PresetError(f"the presets file {self.path} should hold a JSON object of presets")
        return {name: params for name, params in data.items() if isinstance(params, dict)}

    def all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._read()

    def get(self, name: str) -> dict[str, Any]:
        """The preset's params, checked against the schema (a file edited by hand may be wrong)."""
        check_name(name)
        presets = self.all()
        if name not in presets:
            saved = ", ".join(sorted(presets)) or "none yet"
            raise PresetError(f"no preset named {name!r} (saved: {saved})", status=404)
        return validated(presets[name])

    def put(self, name: str, params: Any) -> dict[str, Any]:
        check_name(name)
        clean = validated(params)
        with self._lock:
            presets = self._read()
            if name not in presets and len(presets) >= MAX_PRESETS:
                raise PresetError(f"there are {MAX_PRESETS} presets already; delete one first", status=409)
            presets[name] = clean
            self._write(presets)
        return clean

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            presets = self._read()
            if name not in presets:
                raise PresetError(f"no preset named {name!r}", status=404)
            del presets[name]
            self._write(presets)

    def _write(self, presets: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(presets, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def preset_params(name: str, store: PresetStore | None = None) -> dict[str, Any]:
    """The params of preset `name`, for a command's `--preset`; ParamsError (naming `preset`) if
    there is none or it does not fit the schema."""
    try:
        return (store or PresetStore()).get(name)
    except PresetError as exc:
        raise ParamsError([field_error("preset", str(exc))]) from None
    except ParamsError as exc:
        raise ParamsError([field_error("preset", f"preset {name!r}: {exc}")]) from None
