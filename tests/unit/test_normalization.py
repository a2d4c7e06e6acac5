"""Value -> row normalisation: strings, tokens, dates, numbers, quantities, references."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from service.search.dates import MAX_INSTANT, MIN_INSTANT, date_range
from service.search.rows import DateRow, NumberRow, QuantityRow, ReferenceRow, StringRow, TokenRow, UriRow
from service.search.values import bound_code_token, converter, normalize

UTC = timezone.utc


def rows(parameter_type: str, fhir_type: str, value: object) -> tuple:
    return converter(parameter_type, fhir_type)("p", value)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("Müller", "muller"), ("Ærøskøbing", "ærøskøbing"), ("ÉLODIE Çà", "elodie ca"), ("São Paulo", "sao paulo"),
    ("plain ASCII", "plain ascii"), ("Åström", "astrom"),
])
def test_strings_are_lower_cased_without_accents(text, expected):
    assert normalize(text) == expected
    assert rows("string", "string", text) == (StringRow("p", expected, text),)


def test_human_name_and_address_give_their_component_strings():
    """As HAPI's string extraction: every HumanName part including `text`; Address parts but not `text`."""
    name = {"family": "Dürr", "given": ["Anna", "Lena"], "prefix": ["Dr."], "suffix": ["PhD"], "text": "Dr. Anna Dürr",
            "use": "official"}
    expected = {"Dürr", "Anna", "Lena", "Dr.", "PhD", "Dr. Anna Dürr"}
    assert {r.exact for r in rows("string", "HumanName", name)} == expected
    address = {"line": ["1 Main St", "Apt 2"], "city": "Boston", "district": "Suffolk", "state": "MA",
               "postalCode": "02101", "country": "US", "text": "1 Main St, Boston", "use": "home"}
    assert {r.exact for r in rows("string", "Address", address)} == {
        "1 Main St", "Apt 2", "Boston", "Suffolk", "MA", "02101", "US"}
    assert rows("string", "Address", {"text": "1 Main St, Boston"}) == ()


def test_tokens():
    concept = {"coding": [{"system": "http://loinc.org", "code": "1-8", "display": "Acid"}, {"code": "x"}],
               "text": "Acid test"}
    assert rows("token", "CodeableConcept", concept) == (
        TokenRow("p", "http://loinc.org", "1-8", "Acid"), TokenRow("p", None, "x", None),
        TokenRow("p", None, None, "Acid test"))
    identifier = {"system": "urn:oid:1.2", "value": "42", "type": {"text": "MRN"}}
    assert rows("token", "Identifier", identifier) == (TokenRow("p", "urn:oid:1.2", "42", "MRN"),)
    assert rows("token", "Identifier", {"system": "urn:oid:1.2"}) == ()
    assert rows("token", "Coding", {"system": "http://loinc.org", "display": "no code"}) == ()
    assert rows("token", "ContactPoint", {"system": "phone", "value": "555", "use": "home"}) == (
        TokenRow("p", "phone", "555", None),)
    assert rows("token", "boolean", False) == (TokenRow("p", None, "false", None),)
    assert rows("token", "code", "final") == (TokenRow("p", None, "final", None),)  # no binding known here
    assert rows("token", "System.String", "abc") == (TokenRow("p", None, "abc", None),)


@pytest.mark.parametrize(("text", "low", "high"), [
    ("2020", utc(2020, 1, 1), utc(2020, 12, 31, 23, 59, 59, 999999)),
    ("2020-02", utc(2020, 2, 1), utc(2020, 2, 29, 23, 59, 59, 999999)),  # leap year
    ("2100-02", utc(2100, 2, 1), utc(2100, 2, 28, 23, 59, 59, 999999)),  # not a leap year
    ("2019-12", utc(2019, 12, 1), utc(2019, 12, 31, 23, 59, 59, 999999)),
    ("2024-02-29", utc(2024, 2, 29), utc(2024, 2, 29, 23, 59, 59, 999999)),
    ("2020-03-04T10:20Z", utc(2020, 3, 4, 10, 20), utc(2020, 3, 4, 10, 20, 59, 999999)),
    ("2020-03-04T10:20:30+02:00", utc(2020, 3, 4, 8, 20, 30), utc(2020, 3, 4, 8, 20, 30, 999999)),
    ("2020-12-31T23:30:00-05:00", utc(2021, 1, 1, 4, 30), utc(2021, 1, 1, 4, 30, 0, 999999)),
    ("2020-03-04T10:20:30.25Z", utc(2020, 3, 4, 10, 20, 30, 250000), utc(2020, 3, 4, 10, 20, 30, 259999)),
    ("2020-03-04T10:20:30", utc(2020, 3, 4, 10, 20, 30), utc(2020, 3, 4, 10, 20, 30, 999999)),  # no zone: UTC
])
def test_dates_cover_their_precision(text, low, high):
    assert date_range(text) == (low, high)
    assert rows("date", "dateTime", text) == (DateRow("p", low, high),)


@pytest.mark.parametrize("text", ["2019-02-29", "2020-13", "20200101", "2020-01-01T25:00Z", "", "yesterday"])
def test_invalid_dates_give_no_row(text):
    assert date_range(text) is None
    assert rows("date", "date", text) == ()


def test_period_open_ends_and_timing():
    assert rows("date", "Period", {"start": "2020-01"}) == (
        DateRow("p", utc(2020, 1, 1), MAX_INSTANT),)
    assert rows("date", "Period", {"end": "2020"}) == (
        DateRow("p", MIN_INSTANT, utc(2020, 12, 31, 23, 59, 59, 999999)),)
    assert rows("date", "Period", {}) == ()
    assert MIN_INSTANT.tzinfo is UTC and MAX_INSTANT - MIN_INSTANT > timedelta(days=3_000_000)
    timing = {"event": ["2020-01-01"], "repeat": {"boundsPeriod": {"start": "2020-02-01", "end": "2020-02-02"}}}
    assert rows("date", "Timing", timing) == (
        DateRow("p", utc(2020, 1, 1), utc(2020, 1, 1, 23, 59, 59, 999999)),
        DateRow("p", utc(2020, 2, 1), utc(2020, 2, 2, 23, 59, 59, 999999)))


def test_numbers_and_quantities():
    assert rows("number", "decimal", 0.1) == (NumberRow("p", Decimal("0.1")),)
    assert rows("number", "integer", 3) == (NumberRow("p", Decimal(3)),)
    quantity = {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert rows("quantity", "Quantity", quantity) == (
        QuantityRow("p", Decimal("5.4"), "http://unitsofmeasure.org", "mg", "mg"),)
    assert rows("quantity", "Age", {"value": 40, "code": "a"}) == (QuantityRow("p", Decimal(40), None, "a", None),)
    assert rows("quantity", "Quantity", {"unit": "mg"}) == ()
    assert rows("quantity", "Money", {"value": 12.5, "currency": "EUR"}) == (
        QuantityRow("p", Decimal("12.5"), "urn:iso:std:iso:4217", "EUR", None),)
    assert rows("quantity", "Range", {"low": {"value": 1}, "high": {"value": 2}}) == (
        QuantityRow("p", Decimal(1), None, None, None), QuantityRow("p", Decimal(2), None, None, None))
    assert rows("quantity", "SampledData", {"origin": {"value": 1}, "data": "1 2"}) == ()


@pytest.mark.parametrize(("reference", "expected"), [
    ("Patient/1", ("Patient", "1", None)),
    ("Patient/1/_history/3", ("Patient", "1", None)),
    ("http://x.org/fhir/Patient/1", (None, None, "http://x.org/fhir/Patient/1")),
    ("http://x.org/fhir/Patient/1/_history/2", (None, None, "http://x.org/fhir/Patient/1")),
    ("https://x.org/documents/123", (None, None, "https://x.org/documents/123")),
])
def test_references(reference, expected):
    """An absolute URL on no local base is an external reference: matched by its URL only."""
    assert rows("reference", "Reference", {"reference": reference}) == (ReferenceRow("p", *expected),)


@pytest.mark.parametrize(("reference", "expected"), [
    ("https://fhir.example.org/fhir/Patient/23", ("Patient", "23", None)),
    ("https://fhir.example.org/fhir/Patient/23/_history/4", ("Patient", "23", None)),
    ("http://fhir.example.org/fhir/Patient/23", (None, None, "http://fhir.example.org/fhir/Patient/23")),
    ("https://fhir.example.org/Patient/23", (None, None, "https://fhir.example.org/Patient/23")),
    ("https://fhir.example.org/fhir/other/Patient/23", (None, None, "https://fhir.example.org/fhir/other/Patient/23")),
    ("https://fhir.example.org/fhir/documents/1", (None, None, "https://fhir.example.org/fhir/documents/1")),
    ("Patient/23", ("Patient", "23", None)),
])
def test_references_on_a_local_base(reference, expected):
    """Only a URL whose base is exactly a local base is local `Type/id`, as HAPI's treatBaseUrlsAsLocal."""
    convert = converter("reference", "Reference", ("https://fhir.example.org/fhir",))
    assert convert("p", {"reference": reference}) == (ReferenceRow("p", *expected),)
    extension = {"url": "http://e", "valueReference": {"reference": reference}}
    assert converter("reference", "Extension", ("https://fhir.example.org/fhir",))("p", extension) == (
        ReferenceRow("p", *expected),)


def test_bound_codes_carry_their_code_system():
    gender = bound_code_token("Patient.gender")
    assert gender("p", "male") == (TokenRow("p", "http://hl7.org/fhir/administrative-gender", "male", None),)
    assert gender("p", "mystery") == (TokenRow("p", None, "mystery", None),)  # outside the value set: no system
    assert gender("p", "") == () and gender("p", 1) == ()
    task_intent = bound_code_token("Task.intent")  # a value set drawn from two code systems
    assert task_intent("p", "order") == (TokenRow("p", "http://hl7.org/fhir/request-intent", "order", None),)
    assert task_intent("p", "unknown") == (TokenRow("p", "http://hl7.org/fhir/task-intent", "unknown", None),)


@pytest.mark.parametrize("reference", [
    {"reference": "#contained"}, {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
    {"reference": "Practitioner?identifier=x|1"}, {"identifier": {"system": "s", "value": "v"}},
    {"reference": "NotAType/1"}, {"display": "only a display"},
])
def test_references_that_are_not_links(reference):
    assert rows("reference", "Reference", reference) == ()


def test_canonicals_and_uris():
    assert rows("reference", "canonical", "http://hl7.org/fhir/ValueSet/x|4.0.1") == (
        ReferenceRow("p", None, None, "http://hl7.org/fhir/ValueSet/x|4.0.1"),)
    assert rows("uri", "uri", "http://a/b") == (UriRow("p", "http://a/b"),)
    assert rows("uri", "canonical", "http://a/p") == (UriRow("p", "http://a/p"),)


def test_extension_values_are_unwrapped():
    extension = {"url": "http://e", "valueReference": {"reference": "Organization/9"}}
    assert rows("reference", "Extension", extension) == (ReferenceRow("p", "Organization", "9", None),)
    assert rows("token", "Extension", {"url": "http://e", "valueCode": "x"}) == (TokenRow("p", None, "x", None),)
    assert rows("string", "Extension", {"url": "http://e", "extension": []}) == ()
