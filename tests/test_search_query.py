"""Search parsing and SQL generation, without a database: values, escapes, precision, cursors, SQL safety."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from functools import cache

import pytest

from service.fhir.errors import FhirError
from service.search.cursor import BACKWARD, FORWARD, decode_cursor, encode_cursor
from service.search.query import SearchContext, parse_search
from service.search.query_values import (
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    StringMatch,
    TokenMatch,
    parse_number,
    uri_ancestors,
)
from service.search.registry import Registry
from service.search.sql import count_statement, page_statement

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = "https://fhir.example/fhir"


@cache
def registry() -> Registry:
    return Registry.builtin()


def parse(res_type: str, *items: tuple[str, str], lenient: bool = False):
    return parse_search(res_type, items, SearchContext(registry(), BASE, NOW, lenient, 20, 100))


def values(res_type: str, name: str, value: str) -> tuple:
    return parse(res_type, (name, value)).terms[0].values


def test_commas_are_alternatives_unless_escaped():
    assert values("Organization", "name", "a,b") == (StringMatch("prefix", "a"), StringMatch("prefix", "b"))
    assert values("Organization", "name", r"a\,b") == (StringMatch("prefix", "a,b"),)
    assert values("Organization", "name:exact", "Église") == (StringMatch("exact", "Église"),)
    assert values("Organization", "name", "Église") == (StringMatch("prefix", "eglise"),)


def test_repeated_parameters_are_separate_terms():
    query = parse("Patient", ("birthdate", "ge1980"), ("birthdate", "lt1990"))
    assert [term.values[0].prefix for term in query.terms] == ["ge", "lt"]


def test_token_forms():
    assert values("Patient", "identifier", "s|c") == (TokenMatch("c", "s", "equal"),)
    assert values("Patient", "identifier", "|c") == (TokenMatch("c", None, "none"),)
    assert values("Patient", "identifier", "s|") == (TokenMatch(None, "s", "equal"),)
    assert values("Patient", "identifier", r"a\|b") == (TokenMatch("a|b", None, "any"),)
    assert parse("Patient", ("gender:not", "male")).terms[0].negated


def test_reference_forms():
    assert values("Organization", "partof", "o1") == (ReferenceMatch(("Organization",), "o1", None),)
    # on the base of the request, not configured as local: as `Type/id` or as the URL, however it was written
    assert values("Organization", "partof", f"{BASE}/Organization/o1/_history/2") == (
        ReferenceMatch(("Organization",), "o1", f"{BASE}/Organization/o1"),)
    assert values("Observation", "subject", "p1")[0].target_types == ("Group", "Device", "Patient", "Location")
    assert values("Observation", "subject:Patient", "p1") == (ReferenceMatch(("Patient",), "p1", None),)
    assert values("Organization", "partof", "http://other/fhir/Organization/o1") == (
        ReferenceMatch((), None, "http://other/fhir/Organization/o1"),)
    with pytest.raises(FhirError, match="contradicts"):
        parse("Observation", ("subject:Patient", "Group/g1"))


def test_references_on_a_local_base_are_type_and_id():
    local = Registry.builtin(("https://fhir.example.org/fhir", BASE))
    context = SearchContext(local, "http://10.0.0.7:8080/fhir", NOW, False, 20, 100)
    for value in ("https://fhir.example.org/fhir/Patient/23", f"{BASE}/Patient/23/_history/1", "Patient/23"):
        assert parse_search("Observation", [("subject", value)], context).terms[0].values == (
            ReferenceMatch(("Patient",), "23", None),)
    remote = "http://example.org/fhir/Patient/23"
    assert parse_search("Observation", [("subject", remote)], context).terms[0].values == (
        ReferenceMatch((), None, remote),)
    with pytest.raises(FhirError, match="refers to"):
        parse_search("Organization", [("partof", "https://fhir.example.org/fhir/Patient/23")], context)
    sql = page_statement(parse_search("Observation", [("subject", f"{BASE}/Patient/23")],
                                      SearchContext(registry(), BASE, NOW, False, 20, 100)))
    assert "OR target_url = " in sql.text


@pytest.mark.parametrize(("text", "low", "high"), [
    ("100", "99.5", "100.5"),
    ("100.0", "99.95", "100.05"),
    ("1e2", "50", "150"),
    ("0.3", "0.25", "0.35"),
    ("ap100", "90", "110"),
])
def test_number_ranges(text, low, high):
    number = parse_number(text)
    assert (number.low, number.high) == (Decimal(low), Decimal(high))


def test_quantity_forms():
    system_code = values("Observation", "value-quantity", "gt5.4|http://unitsofmeasure.org|mg")[0]
    assert system_code == QuantityMatch(NumberMatch("gt", Decimal("5.4"), Decimal("5.35"), Decimal("5.45")),
                                        "http://unitsofmeasure.org", "mg")
    code_only = values("Observation", "value-quantity", "5.4||mg")[0]
    assert (code_only.system, code_only.code) == (None, "mg")


def test_date_ranges_follow_precision():
    year, minute = values("Patient", "birthdate", "2020")[0], values("Patient", "birthdate", "sa2020-03-04T10:20Z")[0]
    assert (year.low, year.high) == (datetime(2020, 1, 1, tzinfo=timezone.utc),
                                     datetime(2020, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))
    assert minute.prefix == "sa" and (minute.high - minute.low).total_seconds() == pytest.approx(60, abs=1e-5)


def test_uri_ancestors():
    assert uri_ancestors("http://a.org/fhir/x") == ["http://a.org/fhir/x", "http://a.org", "http://a.org/",
                                                    "http://a.org/fhir", "http://a.org/fhir/"]


def test_controls():
    query = parse("Patient", ("_count", "5000"), ("_sort", "-birthdate,_id"), ("_total", "accurate"),
                  ("_elements", "gender, birthDate"), ("_revinclude", "Observation:subject"))
    assert query.count == 100 and query.total == "accurate" and query.elements == ("gender", "birthDate")
    assert [(key.code, key.descending) for key in query.sort] == [("birthdate", True), ("_id", False)]
    include = query.includes[0]
    assert include.reverse and include.parameters == (("Observation", "subject"),)
    assert include.types == ("Observation",) and not include.wildcard
    assert parse("Patient", ("_summary", "count")).summary_count
    assert parse("Patient", ("_summary", "text")).summary == "text"
    with pytest.raises(FhirError, match="Invalid _summary 'short'"):
        parse("Patient", ("_summary", "short"))


def test_unknown_parameters_are_refused_or_ignored():
    with pytest.raises(FhirError, match="Unknown search parameter 'nope'"):
        parse("Patient", ("nope", "1"))
    query = parse("Patient", ("nope", "1"), ("gender", "male"), lenient=True)
    assert len(query.terms) == 1 and "nope" in query.ignored[0]


def test_values_never_enter_the_sql_text():
    hostile = "x'; DROP TABLE resource; --"
    query = parse("Patient", ("name", hostile), ("identifier", hostile), ("general-practitioner:Practitioner.name",
                                                                          hostile), ("_sort", "family"))
    for statement in (page_statement(query), count_statement(query)):
        assert "DROP" not in statement.text and "'" not in statement.text.replace("'/'", "")
        assert any(isinstance(param, str) and "drop" in param.lower() for param in statement.params)
        assert statement.text.count("$") >= len(statement.params)


def test_cursor_round_trip_and_tampering():
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    text = encode_cursor(FORWARD, [when, Decimal("1.5"), "abc", None], 42)
    cursor = decode_cursor(text, ["date", "number", "text", "text"])
    assert (cursor.direction, cursor.values, cursor.res_id) == (FORWARD, (when, Decimal("1.5"), "abc", None), 42)
    with pytest.raises(FhirError, match="Invalid _cursor"):
        decode_cursor(text, ["date"])
    with pytest.raises(FhirError, match="Invalid _cursor"):
        decode_cursor(text[:-3], ["date", "number", "text", "text"])


def test_backward_cursor_reverses_the_order():
    cursor = encode_cursor(BACKWARD, ["m"], 7)
    query = parse("Patient", ("_sort", "family"), ("_cursor", cursor))
    text = page_statement(query).text
    assert "ORDER BY s0.v DESC NULLS FIRST, r.res_id DESC NULLS FIRST" in text
