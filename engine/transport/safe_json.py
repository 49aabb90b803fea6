"""JSON from strangers: size and nesting are capped before the parser sees a byte.

`json.loads` recurses once per nesting level, so a 2 KB body nested a thousand deep raises
RecursionError (a 500 over HTTP; on a data channel it escaped through aiortc's event emitter
and ended the session). Every body and message camfx parses goes through `loads` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32  # camfx's own messages nest two levels deep

# A string literal (whatever brackets it holds) or one bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JSONInputError(ValueError):
    """Input that is not JSON camfx will parse; the message is written for the sender."""


def loads(data: bytes | str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data`, refusing more than `max_bytes` or nesting deeper than `max_depth`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise JSONInputError(f"JSON is limited to {max_bytes} bytes; this is {len(raw)}")
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else it cannot nest too deep
        _check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise JSONInputError("JSON must be UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _check_depth(raw: bytes, max_depth: int) -> None:
    depth = 0
    for token in _TOKENS.finditer(raw):
        first = token.group()[0]
        if first in b"[{":
            depth += 1
            if depth > max_depth:
                raise JSONInputError(f"JSON nested deeper than {max_depth} levels is refused")
        elif first in b"]}":
            depth -= 1
