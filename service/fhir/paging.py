"""The `_count` parameter shared by search and history."""

from __future__ import annotations

from service.fhir.errors import invalid
from service.fhir.integers import parse_natural


def parse_count(text: str | None, default: int, maximum: int) -> int:
    """`_count`: `default` when absent, 400 when not a non-negative integer, capped at `maximum`."""
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise invalid(f"Invalid _count '{text}': a non-negative integer was expected")
    count = parse_natural(text, maximum)
    return maximum if count is None else count
