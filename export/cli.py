"""`camfx export MODEL`: regenerate model files from their sources."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    targets = {"selfie": "camfx.export.selfie", "face": "camfx.export.face", "engines": "camfx.export.engines",
               "backgrounds": "camfx.export.backgrounds", "int8": "camfx.export.int8"}
    if not argv or argv[0] not in targets:
        print(f"usage: camfx export {{{','.join(targets)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(targets[argv[0]]).main(argv[1:]) or 0
