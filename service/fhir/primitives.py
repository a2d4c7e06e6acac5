"""Checks of one JSON value against an R4 primitive type: its JSON kind, and for strings the format
its definition publishes, no control characters, and real calendar dates.

`checker(type, kind, regex)` builds the check once per type; a check returns None for a valid value,
else why it is not one. Values are as orjson reads them: `true` is a bool, which Python also counts as
an int, so every test compares classes exactly.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable

Check = Callable[[object], "str | None"]

INT32 = (-(2**31), 2**31 - 1)  # FHIR integers are 32-bit; larger counts use decimal
INTEGER_MINIMUM = {"integer": INT32[0], "unsignedInt": 0, "positiveInt": 1}
# FHIR strings allow no control character but tab, CR and LF (the database also refuses U+0000).
CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f"
CONTROL = re.compile(f"[{CONTROLS}]")
ANYTHING = r"[\s\S]*"  # the format of a type that publishes none (xhtml)
# The published base64Binary regex, `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`, lets two `\s*` share each run of
# whitespace, so a backtracking engine takes exponential time to refuse a long value: this is the same
# language with one way to match it.
EQUIVALENT_REGEXES = {"base64Binary": r"\s*(?:[0-9a-zA-Z+/=]{4}\s*)+"}
CALENDAR_TYPES = frozenset({"date", "dateTime", "instant"})
SHOWN = 40  # characters of a wrong value quoted in a message
FORMATS = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD was expected",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with a time zone (Z or +hh:mm) was expected",
    "instant": "YYYY-MM-DDThh:mm:ss[.fff] with a time zone (Z or +hh:mm) was expected",
    "time": "hh:mm:ss[.fff] was expected",
    "id": "1 to 64 characters of A-Z, a-z, 0-9, '-' and '.' were expected",
}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def describe(value: object) -> str:
    """The JSON kind of a value, for messages."""
    if value is None:
        return "null"
    if type(value) is bool:
        return f"the boolean {'true' if value else 'false'}"
    if type(value) is int or type(value) is float:
        return f"the number {value}"
    if type(value) is str:
        return f"the string {quoted(value)}"
    return "an array" if type(value) is list else "an object"


def quoted(text: str) -> str:
    shown = text if len(text) <= SHOWN else text[:SHOWN] + "…"
    return repr(shown)


def checker(type_name: str, kind: str, regex: str) -> Check:
    """The check of values of one primitive type, whose JSON kind and published regex are given."""
    if kind == "boolean":
        return _boolean_check
    if kind == "decimal":
        return _decimal_check
    if kind == "integer":
        return _integer_check(type_name, INTEGER_MINIMUM[type_name])
    return _string_check(type_name, EQUIVALENT_REGEXES.get(type_name, regex))


def _article(type_name: str) -> str:
    """`A` or `An`, as the type name is said: an id, an instant, a uri, a url."""
    return "An" if type_name[0] in "aeioAEIO" or type_name.startswith("unsigned") else "A"


def _boolean_check(value: object) -> str | None:
    return None if type(value) is bool else f"A boolean must be JSON true or false, not {describe(value)}"


def _decimal_check(value: object) -> str | None:
    if type(value) is int or type(value) is float:
        return None
    return f"A decimal must be a JSON number, not {describe(value)}"


def _integer_check(type_name: str, minimum: int) -> Check:
    def check(value: object) -> str | None:
        if type(value) is not int:
            return f"{_article(type_name)} {type_name} must be a JSON integer, not {describe(value)}"
        if not minimum <= value <= INT32[1]:
            return f"{value} is out of range for {_article(type_name).lower()} {type_name} ({minimum} to {INT32[1]})"
        return None
    return check


def _string_check(type_name: str, regex: str) -> Check:
    # ASCII classes: the regexes are written for Java, where `\s` is ASCII whitespace only. One match
    # accepts a valid value (not empty, no control character, the format); the rest explains a refusal.
    accept = re.compile(rf"(?=[^{CONTROLS}]+\Z)(?:{regex or ANYTHING})", re.ASCII)
    real_date = _calendar_problem if type_name in CALENDAR_TYPES else None

    def check(value: object) -> str | None:
        if type(value) is not str:
            return f"{_article(type_name)} {type_name} must be a JSON string, not {describe(value)}"
        if accept.fullmatch(value) is None:
            return _string_problem(type_name, regex, value)
        return real_date(value) if real_date is not None else None
    return check


def _string_problem(type_name: str, regex: str, value: str) -> str:
    if not value:
        return "Empty strings are not allowed: leave the element out instead"
    if (control := CONTROL.search(value)) is not None:
        return (f"Control character U+{ord(control.group()):04X} at position {control.start()}: strings "
                "may hold no control characters but tab, CR and LF")
    return f"{quoted(value)} is not a valid {type_name}: {FORMATS.get(type_name, 'it must match ' + regex)}"


def _calendar_problem(value: str) -> str | None:
    """Why a date that matches the format names no real day (`2020-02-30`), or None. The format limits
    months to 01-12 and days to 01-31 already."""
    if len(value) < 10:
        return None
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    days = calendar.monthrange(year, month)[1]
    if day > days:
        return f"{quoted(value)} is not a valid date: {MONTHS[month - 1]} {year} has {days} days"
    return None
