"""JSON from strangers: size and nesting are capped before the parser sees a byte.

`json.loads` recurses once per nesting level, so a 2 KB body nested a thousand deep raises
RecursionError (a 500 over HTTP; on a data channel it escaped through aiortc's event emitter
and ended the session). Numbers are checked too: an integer past Python's 4300-digit limit
raised a bare ValueError (a 500), `1e999` became inf and `NaN` / `Infinity` (not JSON) were
read as floats. Every body and message camfx parses goes through `loads` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32  # camfx's own messages nest two levels deep
MAX_NUMBER_CHARS = 64  # a double needs 17 significant digits; camfx's integers fit in 10

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
        return json.loads(raw, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except JSONInputError:
        raise
    except UnicodeDecodeError:
        raise JSONInputError("JSON must be UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # whatever else the reader refuses: never a 500
        raise JSONInputError("malformed JSON") from None


def _integer(text: str) -> int:
    _check_length(text)
    return int(text)


def _float(text: str) -> float:
    _check_length(text)
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONInputError(f"the number {text} is too large")
    return value


def _constant(name: str) -> float:
    raise JSONInputError(f"{name} is not a JSON number")


def _check_length(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONInputError(f"a number of {len(text)} characters is refused (at most {MAX_NUMBER_CHARS})")


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
