"""Opaque paging cursors: the sort values and res_id of the row a page starts after (or before).

A cursor is base64url (unpadded) of compact JSON `{"d": "n"|"p", "v": [sort values], "r": res_id}`:
`n` pages forward (rows after this one in the sort order), `p` backwards (rows before it). Values are
JSON strings (dates in ISO 8601, numbers as decimal strings) or null for a resource without a value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import orjson

from service.fhir.errors import invalid
from service.search.query_values import searchable

SortValue = str | datetime | Decimal | None
FORWARD, BACKWARD = "n", "p"
BIGINT = range(-2**63, 2**63)  # res_id is a PostgreSQL bigint


@dataclass(frozen=True, slots=True)
class Cursor:
    direction: str  # FORWARD or BACKWARD
    values: tuple[SortValue, ...]  # one per sort key
    res_id: int


def encode_cursor(direction: str, values: Sequence[SortValue], res_id: int) -> str:
    shown = [value.isoformat() if isinstance(value, datetime) else None if value is None else str(value)
             for value in values]
    raw = orjson.dumps({"d": direction, "v": shown, "r": res_id})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str, value_kinds: Sequence[str]) -> Cursor:
    """The cursor of a `_cursor` parameter; `value_kinds` are the sort keys' value kinds
    ("date", "number" or "text"). Raises FhirError 400 for a cursor not made for this sort."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        direction, shown, res_id = data["d"], data["v"], data["r"]
        if (direction not in (FORWARD, BACKWARD) or type(res_id) is not int or res_id not in BIGINT
                or len(shown) != len(value_kinds)):
            raise ValueError("cursor shape")
        values = tuple(_typed(value, kind) for value, kind in zip(shown, value_kinds))
    except (ValueError, TypeError, KeyError, OverflowError, InvalidOperation, binascii.Error, orjson.JSONDecodeError):
        raise invalid(f"Invalid _cursor '{text}': use the links of a previous page with the same _sort") from None
    return Cursor(direction, values, res_id)


def _typed(value: object, kind: str) -> SortValue:
    """A sort value as the cursor's writer made it; anything else (a value no row can have, a date without a
    zone, a NUL character) is a ValueError or an OverflowError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("cursor value")
    if kind == "date":
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("cursor date without a zone")
        return moment.astimezone(timezone.utc)
    if kind == "number":
        number = Decimal(value)
        if not searchable(number):
            raise ValueError("cursor number")
        return number
    if "\x00" in value:  # JSON allows it, PostgreSQL text does not
        raise ValueError("cursor text")
    return value
