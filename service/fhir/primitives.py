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
# One regex per string type accepts exactly its valid values (not empty, no control character, the published
# format) in one pass. The published formats of the types below admit some control characters (Java's `\s`
# and `\S`): these are the same formats without them. base64Binary's `(\s*([0-9a-zA-Z\+/=]){4}\s*)+` also
# lets two `\s*` share each run of whitespace, so a backtracking engine takes exponential time to refuse a
# long value: its form here has one way to match. The other published formats (dates, times, id, oid,
# uuid) admit printable ASCII only, and are used as they are.
NO_CONTROL = f"[^{CONTROLS}]+"
PRINTABLE = r"[^\x00-\x20]"  # neither a control character nor whitespace
ACCEPTED = {
    "string": NO_CONTROL, "markdown": NO_CONTROL, "xhtml": NO_CONTROL,
    "uri": PRINTABLE + "+", "url": PRINTABLE + "+", "canonical": PRINTABLE + "+",
    "code": rf"{PRINTABLE}+(?:[ \t\n\r]{PRINTABLE}+)*",
    "base64Binary": r"[ \t\n\r]*(?:[0-9a-zA-Z+/=]{4}[ \t\n\r]*)+",
}
UNNAMED_GROUP = re.compile(r"(?<!\\)\((?!\?)")  # `(`, neither escaped nor `(?...`
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
    quick = QUICK.get(type_name)
    return quick(_string_check(type_name, regex)) if quick is not None else _string_check(type_name, regex)


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


def _printable_text(slow: Check) -> Check:
    def check(value: object) -> str | None:
        return None if type(value) is str and value.isprintable() and value != "" else slow(value)
    return check


def _printable_uri(slow: Check) -> Check:
    def check(value: object) -> str | None:
        if type(value) is str and value.isprintable() and value != "" and " " not in value:
            return None
        return slow(value)
    return check


def _printable_code(slow: Check) -> Check:
    def check(value: object) -> str | None:
        if (type(value) is str and value.isprintable() and value != "" and value[0] != " " and value[-1] != " "
                and "  " not in value):
            return None
        return slow(value)
    return check


# A quicker sufficient test first for the most frequent types: printable text has no control character and
# no whitespace but spaces, so these accept only what the types' regexes accept; the rest goes to the regex.
QUICK = {"string": _printable_text, "markdown": _printable_text, "xhtml": _printable_text,
         "uri": _printable_uri, "url": _printable_uri, "canonical": _printable_uri, "code": _printable_code}


def _string_check(type_name: str, regex: str) -> Check:
    # ASCII classes: the regexes are written for Java, where `\s` is ASCII whitespace only. Groups made
    # non-capturing: nothing reads them, and capturing costs. One match accepts a valid value; the rest
    # explains a refusal.
    accept = re.compile(UNNAMED_GROUP.sub("(?:", ACCEPTED.get(type_name, regex)), re.ASCII)
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
    if len(value) < 10 or value[8:10] <= "28":  # every month has 28 days
        return None
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    days = calendar.monthrange(year, month)[1]
    if day > days:
        return f"{quoted(value)} is not a valid date: {MONTHS[month - 1]} {year} has {days} days"
    return None
