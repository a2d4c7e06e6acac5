"""Non-negative integers of URLs and headers (versions, counts, cursors), read within the range they are
stored in: `int()` alone accepts other scripts' digits ('²' passes `isdigit` and then fails) and any size."""

from __future__ import annotations

MAX_INTEGER = 2**31 - 1  # a PostgreSQL integer: resource versions
MAX_BIGINT = 2**63 - 1  # a PostgreSQL bigint: row ids


def parse_natural(text: str, maximum: int) -> int | None:
    """`text` as an integer when it is ASCII digits only and at most `maximum`, else None."""
    digits = text.lstrip("0") or "0"
    if not text.isascii() or not text.isdigit() or len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if value <= maximum else None
