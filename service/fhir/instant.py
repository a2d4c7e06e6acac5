"""FHIR instant formatting and parsing (millisecond precision, explicit offset)."""

from __future__ import annotations

from datetime import datetime, timezone

from service.fhir.errors import invalid


def now_ms() -> datetime:
    """The current UTC time truncated to milliseconds, so the stored column equals meta.lastUpdated."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def format_instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def parse_instant(value: str, parameter: str) -> datetime:
    """Parse a FHIR dateTime/instant query value with a time zone (a date alone means midnight UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC: an offset that moves the instant out of the years 0001 to 9999 fails here, not in the database.
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise invalid(f"Invalid date/time value for {parameter}: {value[:40]!r}") from None
