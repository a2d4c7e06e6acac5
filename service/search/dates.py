"""FHIR date, dateTime and instant strings as inclusive UTC instant ranges.

A value covers everything its precision allows: `2020` is the whole year, `2020-02` the whole
month (leap years included), `2020-03-04T10:20Z` the whole minute, `…:30Z` the whole second,
`…:30.5Z` a tenth of a second. Values without a time zone (dates, and dateTimes that omit it against
the spec) are read as UTC; values with an offset are converted to UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache

UTC = timezone.utc
MIN_INSTANT = datetime.min.replace(tzinfo=UTC)  # an open Period start
MAX_INSTANT = datetime.max.replace(tzinfo=UTC)  # an open Period end
ONE_MICROSECOND = timedelta(microseconds=1)
# How far the last microsecond of a time value lies from its start: a minute when it has no seconds, else
# by the number of fraction digits (0 to 6).
_MINUTE_SPAN = timedelta(minutes=1) - ONE_MICROSECOND
_SPANS = tuple(timedelta(microseconds=10 ** (6 - digits)) - ONE_MICROSECOND for digits in range(7))
DATE_TIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)

# Entries of a cache of values that repeat across neighbouring resources (here and in values.py). Kept small: an
# entry outlives the batch it was parsed in, and a reindex at 1,000,000 Organizations (each partOf another) churned
# 65,536 references through the allocator's arenas, pinning one more arena every few seconds: its peak RSS grew
# with the table (86 MiB at 100,000, 112 MiB at 1,000,000).
REPEATS_CACHED = 2048


@lru_cache(maxsize=256)  # a handful of zones in practice; building a timezone costs more than the lookup
def _offset(zone: str | None) -> timezone:
    if not zone or zone == "Z":
        return UTC
    sign = -1 if zone[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))


def _date_range(year: int, month: str | None, day: str | None) -> tuple[datetime, datetime]:
    if month is None:
        low = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
    elif day is None:
        low = datetime(year, int(month), 1, tzinfo=UTC)
        following = (year + 1, 1) if low.month == 12 else (year, low.month + 1)
        end = datetime(*following, 1, tzinfo=UTC) if following[0] <= 9999 else None
    else:
        low = datetime(year, int(month), int(day), tzinfo=UTC)
        end = low + timedelta(days=1) if low.date() < datetime.max.date() else None
    return low, (end - ONE_MICROSECOND if end else MAX_INSTANT)


def _time_range(match: re.Match[str]) -> tuple[datetime, datetime]:
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    digits = (fraction or "")[:6]
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                     int(digits.ljust(6, "0")) if digits else 0, tzinfo=_offset(zone))
    low = local.astimezone(UTC)
    return low, low + (_MINUTE_SPAN if second is None else _SPANS[len(digits)])


@lru_cache(maxsize=REPEATS_CACHED)  # resources repeat their dates (effective = issued, period bounds)
def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The [low, high] UTC range a FHIR date/dateTime/instant covers, or None when it is not one."""
    match = DATE_TIME.fullmatch(text) if type(text) is str else None
    if match is None:
        return None
    try:
        if match.group(4) is None:
            return _date_range(int(match.group(1)), match.group(2), match.group(3))
        return _time_range(match)
    except (ValueError, OverflowError):  # month 13, February 30th, year 0...
        return None
