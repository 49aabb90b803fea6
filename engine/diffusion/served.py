"""The diffusion models a server serves: their specs by name, weights loaded once on first use and
shared by every stream, and the networks that run them (camfx.engine.diffusion.networks).

torch is imported only when a model is first used: the base install serves every other effect
without it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from camfx.models.registry import LCM_LORA, RANDOM_SD_TURBO, SD15, SD_TURBO, TAESD

from ..params import Params, ParamsError, field_error
from ..runtimes.probe import missing_extra

log = logging.getLogger("camfx.diffusion")


@dataclass(frozen=True)
class DiffusionModelSpec:
    """How to load one servable model. `model_id`, `taesd_id`, `lora_id`: hub ids or folders."""

    model_id: str
    taesd_id: str = TAESD
    lora_id: str | None = None
    random_weights: bool = False


def default_specs(random_weights: bool = False) -> dict[str, DiffusionModelSpec]:
    """The names users pick in `diffusion_model`: sd-turbo, SD 1.5 + LCM-LoRA, and (for
    benchmarks, when asked for) random weights."""
    specs = {
        SD_TURBO: DiffusionModelSpec(SD_TURBO),
        LCM_LORA: DiffusionModelSpec(SD15, lora_id=LCM_LORA),
    }
    if random_weights:
        specs[RANDOM_SD_TURBO] = DiffusionModelSpec(RANDOM_SD_TURBO, random_weights=True)
    return specs


@dataclass
class LoadedModel:
    """One model's weights and the networks that run them."""

    parts: Any  # camfx.models.diffusion.DiffusionParts
    networks: Any  # camfx.engine.diffusion.networks.Networks


class DiffusionModels:
    """Servable diffusion models by name; weights load on first use, once, and are shared.

    exported: run the UNet / TAESD on the runtime chain where `camfx export engines --diffusion`
    exported these weights under `cache` (the default cache if None); torch where it did not.
    on_fallback(model, runtime, reason): called when one of their runtimes is dropped (metrics).
    """

    def __init__(
        self,
        specs: dict[str, DiffusionModelSpec] | None = None,
        *,
        exported: bool = True,
        cache: Path | None = None,
        on_fallback: Callable[[str, str, str], None] = lambda model, runtime, reason: None,
    ):
        self.specs = specs if specs is not None else default_specs()
        self._loaded: dict[str, LoadedModel] = {}
        self._errors: dict[str, Exception] = {}  # models that failed to load, and why
        self._lock = threading.Lock()
        self._missing_extra = missing_extra("diffusion")
        self._exported, self._cache, self._on_fallback = exported, cache, on_fallback

    def check(self, params: Params) -> None:
        """Raises ParamsError (a 422) for a model this server does not serve or cannot load."""
        if params.effect != "diffusion":
            return
        if self._missing_extra:
            raise ParamsError([field_error("effect", self._missing_extra)])
        name = params.diffusion_model
        if name not in self.specs:
            served = ", ".join(sorted(self.specs))
            raise ParamsError([field_error("diffusion_model", f"unknown model {name!r}; this server serves: {served}")])
        if name in self._errors:
            raise ParamsError([field_error("diffusion_model", str(self._errors[name]))])

    def load(self, name: str) -> LoadedModel:
        """The weights of `name` and their networks, loaded on first use (blocking: call from the
        diffusion thread)."""
        with self._lock:
            if name in self._errors:
                raise self._errors[name]
            if name not in self._loaded:
                from camfx.models.diffusion import load_parts

                from .networks import torch_networks

                limit_torch_threads()
                spec = self.specs[name]
                start = time.perf_counter()
                try:
                    parts = load_parts(spec.model_id, taesd_id=spec.taesd_id, lora_id=spec.lora_id,
                                       random_weights=spec.random_weights)
                except Exception as exc:
                    self._errors[name] = exc
                    raise
                log.info("diffusion model %s: loaded on %s (%s) in %.1f s",
                         name, parts.device, str(parts.dtype).removeprefix("torch."), time.perf_counter() - start)
                networks = self._accelerated(name, parts) if self._exported else torch_networks(parts)
                self._loaded[name] = LoadedModel(parts, networks)
            return self._loaded[name]

    def _accelerated(self, name: str, parts):
        """The networks of `parts` on the runtime chain where they were exported."""
        from .networks import accelerated_networks, torch_networks

        try:
            return accelerated_networks(parts, name, self._cache, on_fallback=self._on_fallback)
        except Exception as exc:  # a broken cache must not stop the model: torch serves it as before
            log.warning("diffusion model %s: exported parts not used (%s); torch serves it", name, exc)
            return torch_networks(parts)

    def loaded(self) -> list[str]:
        # No lock: /healthz calls this on the event loop, and a load holds the lock for minutes.
        return sorted(list(self._loaded))

    def runtimes(self) -> dict[str, dict[str, Any]]:
        """Per loaded model, per part (unet, taesd_encoder, taesd_decoder): the runtime that served
        its last call ("tensorrt", "onnxruntime:...", "torch"; None before the first), the sizes
        exported for its weights, the runtime per size used so far, and the fallbacks so far.
        Plain data for /healthz; no lock, like `loaded`."""
        loaded = dict(self._loaded)
        if not loaded:
            return {}  # and torch not imported: the base install has none
        from .networks import runtime_info

        return {name: runtime_info(model.networks) for name, model in sorted(loaded.items())}


def limit_torch_threads() -> None:
    """Leave a core to decoding, encoding and compositing: diffusion on every core of a small
    CPU would starve the camera path (the one thing it must never do)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
