"""Backgrounds: the bundled ones and those users upload, pictures and looped videos.

A picture is kept scaled to each frame size and fit in use (a small cache). A video plays on a
decoder thread of its own while a stream shows it (see `video_background`); the frame path
only picks its current picture. Before the decoder has one, the video's first frame, decoded
when it was uploaded, stands in.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import OrderedDict
from importlib import resources
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import fit
from .video_background import (
    IDLE_STOP_S,
    Clip,
    Player,
    UnreadableVideo,
    VideoError,
    looks_like_video,
    probe,
    scaled_picture,
)

log = logging.getLogger("camfx.backgrounds")

MAX_UPLOADS = 32
MAX_VIDEO_UPLOADS = 8  # kept whole in memory, 8 MiB at most each
MAX_PLAYERS = 4  # video decoders running at once, server-wide; more videos show their first frame
MAX_UPLOAD_PIXELS = 16_000_000  # checked from the header, before decoding (decompression bombs)
STORED_MAX_SIDE = 1920  # uploads are scaled down to this once, on arrival
THUMBNAIL_SIZE = (90, 160)  # (height, width): a 16:9 tile for a picker
VIDEO_SUFFIXES = (".webm", ".mp4", ".gif")
UNREADABLE = ("the upload is not a readable image or video; send a JPEG, PNG or WebP picture, "
              "or an MP4, WebM or GIF video")

Background = np.ndarray | Clip  # an RGB picture, or a video


class BackgroundError(ValueError):
    """An upload that is not a usable image or video."""


def _bundled_files():
    return [entry for entry in (resources.files("camfx.demo") / "backgrounds").iterdir()
            if entry.name.endswith((".jpg", ".png", *VIDEO_SUFFIXES))]


def bundled_names() -> list[str]:
    """The bundled pictures' and videos' names (what `background_image` may name besides
    uploads), sorted."""
    return sorted(entry.name.rsplit(".", 1)[0] for entry in _bundled_files())


def _bundled() -> dict[str, Background]:
    found: dict[str, Background] = {}
    for entry in _bundled_files():
        name = entry.name.rsplit(".", 1)[0]
        if entry.name.endswith((".jpg", ".png")):
            data = np.frombuffer(entry.read_bytes(), dtype=np.uint8)
            found[name] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        elif entry.name.endswith(VIDEO_SUFFIXES):
            found[name] = probe(entry.read_bytes())
    return found


def _read_image(data: bytes) -> np.ndarray:
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
            return np.asarray(upright.convert("RGB"))
    except BackgroundError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap, far above ours
        raise BackgroundError(f"uploads are limited to {MAX_UPLOAD_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # Pillow's text would say which decoder choked, which is no use to the user.
        raise BackgroundError(UNREADABLE) from None


def _read_video(data: bytes) -> Background:
    try:
        clip = probe(data)
    except UnreadableVideo:
        raise BackgroundError(UNREADABLE) from None
    except VideoError as exc:
        raise BackgroundError(str(exc)) from None
    if clip.frames == 1:  # a still gif
        image = clip.first.to_ndarray(format="rgb24")
        scale = STORED_MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return image
    return clip


def _fitted(background: Background, view: tuple) -> np.ndarray:
    """A picture, or a video's first frame, fitted to `view` as I420."""
    if isinstance(background, Clip):
        return scaled_picture(background.first, view)
    return fit.fit_image(background, *view)


class Backgrounds:
    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_stop_s: float = IDLE_STOP_S,
                 max_players: int = MAX_PLAYERS):
        self._bundled = _bundled()
        self._uploads: OrderedDict[str, Background] = OrderedDict()  # oldest first, capped
        self._scaled: OrderedDict[tuple, np.ndarray] = OrderedDict()  # pictures fitted to frames
        self._thumbnails: dict[str, bytes] = {}
        self._players: dict[str, Player] = {}
        self._clock, self._idle_stop_s, self._max_players = clock, idle_stop_s, max_players
        self._refused_player = False
        self._lock = threading.Lock()

    def names(self) -> dict[str, list[str]]:
        with self._lock:
            return {"bundled": sorted(self._bundled), "uploaded": list(self._uploads)}

    def items(self) -> list[dict]:
        """Every background for a picker: {"id", "kind": "image" | "video", "bundled"}."""
        with self._lock:
            listed = [(name, self._bundled[name], True) for name in sorted(self._bundled)]
            listed += [(name, background, False) for name, background in self._uploads.items()]
        return [{"id": name, "kind": "video" if isinstance(background, Clip) else "image", "bundled": bundled}
                for name, background, bundled in listed]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._bundled or name in self._uploads

    def _get(self, name: str) -> Background:
        """Under the lock. Unknown names raise KeyError."""
        background = self._bundled.get(name)
        return background if background is not None else self._uploads[name]

    # ---- uploads --------------------------------------------------------------------------------
    def add_upload(self, data: bytes) -> str:
        """Decode and keep an uploaded picture, or probe and keep a video; returns its id.
        Raises BackgroundError with a message for the user."""
        background = _read_video(data) if looks_like_video(data) else _read_image(data)
        upload_id = "u-" + secrets.token_hex(6)
        with self._lock:
            self._uploads[upload_id] = background
            players = [self._forget(name) for name in self._over_caps()]
        for player in players:
            if player is not None:
                player.stop(wait=False)
        return upload_id

    def _over_caps(self) -> list[str]:
        """Under the lock: the oldest uploads past MAX_VIDEO_UPLOADS videos / MAX_UPLOADS in all."""
        videos = [name for name, kept in self._uploads.items() if isinstance(kept, Clip)]
        gone = videos[: max(0, len(videos) - MAX_VIDEO_UPLOADS)]
        rest = [name for name in self._uploads if name not in gone]
        return gone + rest[: max(0, len(rest) - MAX_UPLOADS)]

    def _forget(self, name: str) -> Player | None:
        """Under the lock: drop an upload and all made from it; its player, to stop."""
        del self._uploads[name]
        self._thumbnails.pop(name, None)
        for key in [key for key in self._scaled if key[0] == name]:
            del self._scaled[key]
        return self._players.pop(name, None)

    # ---- the frame path -------------------------------------------------------------------------
    def frame(self, name: str, height: int, width: int, fit_mode: str = "cover",
              colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """Background `name` now, as an I420 frame of (height, width) fitted by `fit_mode`
        (`colour` fills contain's bars). Never waits for a video's decoder. Unknown names raise
        KeyError. The array is shared: read it, never write to it."""
        view = (height, width, fit_mode, tuple(colour) if fit_mode == "contain" else (0, 0, 0))
        with self._lock:
            background = self._get(name)
            player = self._player(name, background) if isinstance(background, Clip) else None
        if player is not None:
            shown = player.current(view)
            if shown is not None:
                return shown[1]
        return self._still(name, background, view)

    def _still(self, name: str, background: Background, view: tuple) -> np.ndarray:
        """A picture, or a video's first frame, fitted to `view` (cached)."""
        key = (name, *view)
        with self._lock:
            cached = self._scaled.get(key)
            if cached is not None:
                self._scaled.move_to_end(key)
                return cached
        scaled = _fitted(background, view)
        with self._lock:
            self._scaled[key] = scaled
            while len(self._scaled) > 8:
                self._scaled.popitem(last=False)
        return scaled

    def _player(self, name: str, clip: Clip) -> Player | None:
        """Under the lock: the running player of video `name`, started if need be; None when
        MAX_PLAYERS others are running."""
        player = self._players.get(name)
        if player is not None:
            if player.alive:
                return player
            if player.failed:  # once, not at every frame: its first frame stays
                return None
            del self._players[name]
        if sum(p.alive for p in self._players.values()) >= self._max_players:
            if not self._refused_player:
                log.warning("%d video backgrounds are playing; more show their first frame", self._max_players)
                self._refused_player = True
            return None
        player = Player(clip, self._clock, self._idle_stop_s, name)
        self._players[name] = player
        return player

    def player(self, name: str) -> Player | None:
        """The live decoder of video `name`, if one runs."""
        with self._lock:
            player = self._players.get(name)
        return player if player is not None and player.alive else None

    def live_decoders(self) -> int:
        with self._lock:
            return sum(player.alive for player in self._players.values())

    # ---- for a picker ---------------------------------------------------------------------------
    def thumbnail(self, name: str) -> bytes:
        """A small JPEG of background `name` (a video's first frame), made once. KeyError if
        unknown. A few milliseconds the first time: call it off the event loop."""
        with self._lock:
            cached = self._thumbnails.get(name)
            if cached is not None:
                return cached
            background = self._get(name)
        bgr = cv2.cvtColor(_fitted(background, (*THUMBNAIL_SIZE, "cover", (0, 0, 0))), cv2.COLOR_YUV2BGR_I420)
        jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        with self._lock:
            if name in self._bundled or name in self._uploads:  # not dropped meanwhile
                self._thumbnails[name] = jpeg
        return jpeg

    def close(self) -> None:
        """Stop every video decoder (the server is shutting down)."""
        with self._lock:
            players, self._players = list(self._players.values()), {}
        for player in players:
            player.stop()
