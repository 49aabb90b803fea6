"""Background images: the bundled ones and those users upload, with a small cache of each
image already scaled to a frame size."""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from importlib import resources

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import effects

MAX_UPLOADS = 32
MAX_UPLOAD_PIXELS = 16_000_000  # checked from the header, before decoding (decompression bombs)
STORED_MAX_SIDE = 1920  # uploads are scaled down to this once, on arrival


class BackgroundError(ValueError):
    """An upload that is not a usable image."""


def _bundled_files():
    return [entry for entry in (resources.files("camfx.demo") / "backgrounds").iterdir()
            if entry.name.endswith((".jpg", ".png"))]


def bundled_names() -> list[str]:
    """The bundled images' names (what `background_image` may name besides uploads), sorted."""
    return sorted(entry.name.rsplit(".", 1)[0] for entry in _bundled_files())


def _bundled() -> dict[str, np.ndarray]:
    images = {}
    for entry in _bundled_files():
        data = np.frombuffer(entry.read_bytes(), dtype=np.uint8)
        images[entry.name.rsplit(".", 1)[0]] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return images


class Backgrounds:
    def __init__(self) -> None:
        self._bundled = _bundled()
        self._uploads: OrderedDict[str, np.ndarray] = OrderedDict()  # oldest first, capped
        self._scaled: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> dict[str, list[str]]:
        with self._lock:
            return {"bundled": sorted(self._bundled), "uploaded": list(self._uploads)}

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._bundled or name in self._uploads

    def add_upload(self, data: bytes) -> str:
        """Decode and keep an uploaded image; returns its id. Raises BackgroundError."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_UPLOAD_PIXELS:
                    raise BackgroundError(
                        f"the image is {img.width}x{img.height}; uploads are limited to "
                        f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels (scale it down first)"
                    )
                img.draft("RGB", (STORED_MAX_SIDE, STORED_MAX_SIDE))  # a JPEG decodes at 1/2..1/8 scale
                img.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE))
                upright = ImageOps.exif_transpose(img)  # phone photos are stored sideways, with a tag
                image = np.asarray(upright.convert("RGB"))
        except BackgroundError:
            raise
        except Image.DecompressionBombError:  # Pillow's own cap, far above ours
            raise BackgroundError(f"uploads are limited to {MAX_UPLOAD_PIXELS // 1_000_000} megapixels") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            # Pillow's text would say which decoder choked, which is no use to the user.
            raise BackgroundError("the upload is not a readable image; send a JPEG, PNG or WebP file") from None
        image_id = "u-" + secrets.token_hex(6)
        with self._lock:
            self._uploads[image_id] = image
            while len(self._uploads) > MAX_UPLOADS:
                self._uploads.popitem(last=False)
        return image_id

    def frame(self, name: str, height: int, width: int) -> np.ndarray:
        """The image `name` as an I420 frame of (height, width). Unknown names raise KeyError."""
        key = (name, height, width)
        with self._lock:
            cached = self._scaled.get(key)
            if cached is not None:
                self._scaled.move_to_end(key)
                return cached
            image = self._bundled.get(name)
            if image is None:
                image = self._uploads[name]
        scaled = effects.cover(image, height, width)
        with self._lock:
            self._scaled[key] = scaled
            while len(self._scaled) > 8:
                self._scaled.popitem(last=False)
        return scaled
