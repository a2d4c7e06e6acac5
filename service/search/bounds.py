"""How much of a long value the index keeps (pure): a bounded prefix, as HAPI indexes it.

The body keeps every value whole; index rows keep strings 200 characters (normalized and exact), token
codes, systems and texts 200, URIs 254 and reference URLs 200 (HAPI's column lengths). At 4 bytes a
character at most, no index entry comes near PostgreSQL's b-tree limit (2,704 bytes). Query values are
bounded the same way (service/search/query_values.py), so a value longer than the prefix matches on it.
"""

from __future__ import annotations

from typing import Any

STRING_LENGTH = 200
TOKEN_LENGTH = 200
URI_LENGTH = 254
URL_LENGTH = 200
ID_LENGTH = 64  # a longer id part names no resource of this server: such a reference is no local `Type/id`


def bounded(text: Any, length: int) -> Any:
    """`text` cut to `length` characters; anything but a long string is returned as it is."""
    return text[:length] if text.__class__ is str and len(text) > length else text
