"""JSON parsed so that serialising it again writes every number as it was written.

FHIR decimals carry their precision (`1.50` is not `1.5`), but orjson reads numbers as float or int
and writes them back in its own spelling: `1.50` becomes `1.5`, `1E-7` becomes `1e-7`, `-0` becomes `0`
and a 30-digit integer a float. Most bodies hold no such number, and orjson's tree is used as is; for
the others the numbers become `orjson.Fragment`s of their text, which `orjson.dumps` writes verbatim.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A number token of JSON text from which the strings have been removed (nothing else there has a digit).
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def parse(raw: bytes) -> tuple[Any, Any]:
    """`raw` as orjson reads it (numbers as values: what checks and indexing use), and a tree that
    `orjson.dumps` writes with every number as in `raw` (the same object when orjson's tree is one).
    Raises orjson.JSONDecodeError exactly as `orjson.loads` does: nothing more is accepted."""
    values = orjson.loads(raw)
    return values, values if _numbers_survive(raw) else _with_number_text(raw)


def loads(raw: bytes) -> Any:
    """The tree of `parse` that keeps the numbers' text (to serve stored JSON re-encoded)."""
    return parse(raw)[1]


def _numbers_survive(raw: bytes) -> bool:
    """Whether orjson writes back every number of `raw` (valid JSON) as written."""
    if b"\\" in raw:
        # Escaped backslashes, then escaped quotes, go first: every quote left opens or closes a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(raw.split(b'"')[::2])
    return all(orjson.dumps(orjson.loads(token)) == token for token in set(_NUMBER.findall(outside_strings)))


def _with_number_text(raw: bytes) -> Any:
    # Only called on text orjson accepted, so the standard library sees no NaN, lone surrogate or bad UTF-8.
    return json.loads(raw.decode(), parse_float=orjson.Fragment, parse_int=orjson.Fragment)
