"""JSON parsed so that serialising it again writes every number as it was written.

FHIR decimals carry their precision (`1.50` is not `1.5`), but orjson reads numbers as float or int
and writes them back in its own spelling: `1.50` becomes `1.5`, `1E-7` becomes `1e-7`, `-0` becomes `0`
and a 30-digit integer a float. Most bodies hold no such number, and orjson's tree is used as is; for
the others the numbers become `orjson.Fragment`s of their text, which `orjson.dumps` writes verbatim.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Outside its strings, JSON text is punctuation, whitespace, literals and numbers: with the punctuation
# made spaces, what is left splits into literals and number tokens.
_PUNCTUATION_TO_SPACE = bytes.maketrans(b"{}[],:\t\n\r", b" " * 9)
_LITERALS = frozenset((b"true", b"false", b"null"))
# Objects and arrays alike as `[` and `]`, and everything else deleted: what is left is the nesting.
_OPENERS_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


def parse(raw: bytes) -> tuple[Any, Any]:
    """`raw` as orjson reads it (numbers as values: what checks and indexing use), and a tree that
    `orjson.dumps` writes with every number as in `raw` (the same object when orjson's tree is one).
    Raises orjson.JSONDecodeError exactly as `orjson.loads` does: nothing more is accepted."""
    values = orjson.loads(raw)
    return values, values if _numbers_survive(raw, values) else _with_number_text(raw)


def loads(raw: bytes) -> Any:
    """The tree of `parse` that keeps the numbers' text (to serve stored JSON re-encoded)."""
    return parse(raw)[1]


def nested_deeper(raw: bytes, limit: int) -> bool:
    """Whether the JSON text `raw` nests objects and arrays more than `limit` levels deep (the outermost
    is level 1). Text that is not JSON may be answered either way: the parser refuses it next."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    brackets = _outside_strings(raw).translate(_OPENERS_AS_BRACKETS, _NOT_BRACKETS)
    for _level in range(limit):  # each pass removes the innermost level
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            return False  # empty, or unbalanced
        brackets = inner
    return bool(brackets)


def _outside_strings(raw: bytes) -> bytes:
    """The JSON text `raw` without the content of its strings."""
    if b"\\" in raw:
        # Escaped backslashes, then escaped quotes, go first: every quote left opens or closes a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(raw.split(b'"')[::2])


def _numbers_survive(raw: bytes, values: Any) -> bool:
    """Whether orjson writes back every number of `raw` (JSON that orjson read as `values`) as written."""
    if orjson.dumps(values) == raw.strip():  # orjson's own text, as machine-written NDJSON often is
        return True
    tokens = set(_outside_strings(raw).translate(_PUNCTUATION_TO_SPACE).split()) - _LITERALS
    return all(orjson.dumps(orjson.loads(token)) == token for token in tokens)


def _with_number_text(raw: bytes) -> Any:
    # Only called on text orjson accepted, so the standard library sees no NaN, lone surrogate or bad UTF-8.
    return json.loads(raw.decode(), parse_float=orjson.Fragment, parse_int=orjson.Fragment)
