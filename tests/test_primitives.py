"""The primitive checks accept exactly what the R4 definitions allow: the published regex of each string type
(Java's ASCII `\\s`), no control character but tab, CR and LF, not empty, and real calendar days; numbers
and booleans by their exact JSON kind. The quicker tests and rewritten regexes must not change that."""

from __future__ import annotations

import calendar
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.fhir.primitives import CONTROL
from service.fhir.structures import _checks, _table

STRING_TYPES = sorted(name for name, (kind, _regex) in _table()["primitives"].items() if kind == "string")
# Characters at every edge of the rules: controls, each kind of whitespace, digits, signs, letters, non-ASCII.
alphabet = st.sampled_from(list("\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f \x7f\xa0\u2028Z09-+.:/=Tazé") + ["12", "2020"])
texts = st.lists(alphabet, max_size=12).map("".join)


def reference(type_name: str, value: str) -> bool:
    """Valid by the definitions, read literally."""
    regex = _table()["primitives"][type_name][1] or r"[\s\S]*"
    if not value or CONTROL.search(value) or not re.fullmatch(regex, value, re.ASCII):
        return False
    if type_name in ("date", "dateTime", "instant") and len(value) >= 10:
        year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
        return day <= calendar.monthrange(year, month)[1]
    return True


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(type_name=st.sampled_from(STRING_TYPES), value=texts | st.sampled_from([
    "2020-02-29", "2021-02-29", "2020-04-31", "2020-12-31T23:59:60Z", "2020-01-01T10:00:00+14:00",
    "urn:oid:1.2.3", "urn:uuid:0b9c2a8e-1f8e-4c4e-9a4e-1c2d3e4f5a6b", "aGVs bG8=", "en  US", " en", "x" * 65]))
def test_string_types_accept_what_the_definitions_allow(type_name: str, value: str) -> None:
    assert (_checks()[type_name](value) is None) == reference(type_name, value), (type_name, value)


@pytest.mark.parametrize(("type_name", "value", "valid"), [
    ("boolean", True, True), ("boolean", "true", False), ("boolean", 1, False),
    ("integer", -(2**31), True), ("integer", 2**31, False), ("integer", 1.0, False), ("integer", True, False),
    ("positiveInt", 0, False), ("positiveInt", 1, True), ("unsignedInt", 0, True), ("unsignedInt", -1, False),
    ("decimal", 1, True), ("decimal", 1.5, True), ("decimal", 1e300, True), ("decimal", "1.5", False),
    ("decimal", False, False), ("string", 5, False), ("string", None, False), ("code", ["a"], False),
])
def test_json_kinds(type_name: str, value: object, valid: bool) -> None:
    assert (_checks()[type_name](value) is None) == valid
