"""The terminal's log lines: camfx's own at the level asked for, the libraries' (aiortc, aioice,
aiohttp, av) at WARNING unless asked for (`--verbose`): aioice alone writes a few INFO lines for
every connection, which say nothing to someone running camfx."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
LIBRARIES = ("aioice", "aiortc", "aiohttp", "av", "asyncio", "urllib3", "PIL", "numba", "matplotlib")


def setup(level: str, verbose: bool = False) -> None:
    """Log to stderr: camfx at `level`, the libraries at WARNING (or `level` too, if verbose)."""
    logging.basicConfig(format=FORMAT)  # a handler on stderr, unless one is there already
    logging.getLogger().setLevel(level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level if verbose else max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aiohttp.access").setLevel(level)  # asked for with --access-log
