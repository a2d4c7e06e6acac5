"""The `Parameters` answer of instance `$reindex` / `$reindex-dryrun`: sections, actions and value parts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from service.jobs.instance_report import format_elapsed, instance_reindex_parameters
from service.search.rows import (
    CompositeRow,
    DateRow,
    IndexRows,
    NumberRow,
    PositionRow,
    QuantityRow,
    ReferenceRow,
    StringRow,
    TokenRow,
    UriRow,
)

UTC = timezone.utc
DAY_LOW = datetime(2024, 1, 1, tzinfo=UTC)
DAY_HIGH = datetime(2024, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC)
MS = timedelta(milliseconds=12)


def by_name(parameters: dict[str, Any]) -> dict[str, Any]:
    return {parameter["name"]: parameter for parameter in parameters["parameter"]}


def flat(part: dict[str, Any]) -> dict[str, Any]:
    """A section part as {sub-part name: value} plus its code under `code`."""
    values = {sub["name"]: next(value for key, value in sub.items() if key != "name") for sub in part["part"]}
    return {"code": part["name"], **values}


def section(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [flat(part) for part in by_name(parameters)[name]["part"]]


def test_every_type_of_row_as_added() -> None:
    new = IndexRows(
        strings=(StringRow("name", "acme", "ACME"),),
        tokens=(TokenRow("identifier", "urn:sys", "42", "text"), TokenRow("active", None, "true", None)),
        dates=(DateRow("birthdate", DAY_LOW, DAY_HIGH),),
        numbers=(NumberRow("probability", Decimal("0.25")), NumberRow("count", Decimal("3"))),
        quantities=(QuantityRow("value-quantity", Decimal("5.5"), "http://unitsofmeasure.org", "mg", "milligram"),
                    QuantityRow("dose", Decimal("2"), None, None, "tablet")),
        uris=(UriRow("url", "http://x/y"),),
        references=(ReferenceRow("partof", "Organization", "123", None),
                    ReferenceRow("endpoint", None, None, "http://other/Endpoint/9")),
        positions=(PositionRow("near", 41.5, -71.25),),
        composites=(CompositeRow("code-value-string", '[{"value":"x"},{"normalized":"y","exact":"Y"}]'),),
        missing=frozenset({"type"}),
    )
    result = instance_reindex_parameters(None, new, MS, dry_run=False)
    assert result["resourceType"] == "Parameters"
    assert [parameter["name"] for parameter in result["parameter"]] == [
        "Narrative", "Message", "DateIndexes", "NumberIndexes", "QuantityIndexes", "UriIndexes", "StringIndexes",
        "TokenIndexes", "ResourceLinks", "CoordinateIndexes", "CompositeIndexes",
        "MissingIndexes",
    ]
    assert by_name(result)["Message"] == {"name": "Message", "valueString": "Reindex completed in 12ms"}
    assert section(result, "DateIndexes") == [{"code": "birthdate", "Action": "ADD", "Type": "Date",
                                               "High": "2024-01-01T23:59:59.999+00:00",
                                               "Low": "2024-01-01T00:00:00.000+00:00"}]
    assert section(result, "NumberIndexes") == [
        {"code": "count", "Action": "ADD", "Type": "Number", "Value": 3},
        {"code": "probability", "Action": "ADD", "Type": "Number", "Value": 0.25},
    ]
    assert section(result, "QuantityIndexes") == [
        {"code": "dose", "Action": "ADD", "Type": "Quantity", "Value": 2, "Units": "tablet"},
        {"code": "value-quantity", "Action": "ADD", "Type": "Quantity", "Value": 5.5,
         "System": "http://unitsofmeasure.org", "Units": "mg"},
    ]
    assert section(result, "UriIndexes") == [{"code": "url", "Action": "ADD", "Type": "Uri", "Value": "http://x/y"}]
    assert section(result, "StringIndexes") == [{"code": "name", "Action": "ADD", "Type": "String",
                                                 "ValueNormalized": "acme", "ValueExact": "ACME"}]
    assert section(result, "TokenIndexes") == [
        {"code": "active", "Action": "ADD", "Type": "Token", "Value": "true"},
        {"code": "identifier", "Action": "ADD", "Type": "Token", "System": "urn:sys", "Value": "42"},
    ]
    assert section(result, "ResourceLinks") == [
        {"code": "endpoint", "Action": "ADD", "Type": "Reference", "TargetUrl": "http://other/Endpoint/9"},
        {"code": "partof", "Action": "ADD", "Type": "Reference", "TargetId": "Organization/123"},
    ]
    assert section(result, "CoordinateIndexes") == [{"code": "near", "Action": "ADD", "Type": "Coords",
                                                     "Latitude": 41.5, "Longitude": -71.25}]
    assert section(result, "CompositeIndexes") == [{"code": "code-value-string", "Action": "ADD", "Type": "Composite",
                                                    "Value": '[{"value":"x"},{"normalized":"y","exact":"Y"}]'}]
    assert section(result, "MissingIndexes") == [{"code": "type", "Action": "ADD", "Missing": True}]
    orjson.dumps(result)  # every value is JSON-serialisable (no Decimal, no datetime)


def test_value_types_follow_hapi() -> None:
    new = IndexRows(dates=(DateRow("d", DAY_LOW, DAY_HIGH),), tokens=(TokenRow("t", "urn:s", "v", None),),
                    references=(ReferenceRow("r", "Patient", "1", None), ReferenceRow("u", None, None, "http://a/b")),
                    quantities=(QuantityRow("q", Decimal(1), "urn:u", "mg", None),), uris=(UriRow("i", "urn:x"),),
                    numbers=(NumberRow("n", Decimal(1)),), strings=(StringRow("s", "a", "A"),),
                    missing=frozenset({"m"}))
    result = instance_reindex_parameters(None, new, MS, dry_run=False)
    keys = {(part["name"], sub["name"]): next(key for key in sub if key != "name")
            for name in ("DateIndexes", "TokenIndexes", "ResourceLinks", "MissingIndexes", "QuantityIndexes",
                         "UriIndexes", "NumberIndexes", "StringIndexes")
            for part in by_name(result)[name]["part"] for sub in part["part"]}
    assert keys == {
        ("d", "Action"): "valueCode", ("d", "Type"): "valueCode", ("d", "High"): "valueInstant",
        ("d", "Low"): "valueInstant", ("t", "Action"): "valueCode", ("t", "Type"): "valueCode",
        ("t", "System"): "valueString", ("t", "Value"): "valueString", ("r", "Action"): "valueCode",
        ("r", "Type"): "valueCode", ("r", "TargetId"): "valueString", ("m", "Action"): "valueCode",
        ("m", "Missing"): "valueBoolean", ("u", "Action"): "valueCode", ("u", "Type"): "valueCode",
        ("u", "TargetUrl"): "valueUrl", ("q", "Action"): "valueCode", ("q", "Type"): "valueCode",
        ("q", "Value"): "valueDecimal", ("q", "System"): "valueUri", ("q", "Units"): "valueCode",
        ("i", "Action"): "valueCode", ("i", "Type"): "valueCode", ("i", "Value"): "valueUri",
        ("n", "Action"): "valueCode", ("n", "Type"): "valueCode", ("n", "Value"): "valueDecimal",
        ("s", "Action"): "valueCode", ("s", "Type"): "valueCode", ("s", "ValueNormalized"): "valueString",
        ("s", "ValueExact"): "valueString",
    }


def test_actions_compare_old_and_new() -> None:
    old = IndexRows(strings=(StringRow("name", "old", "Old"), StringRow("name", "same", "Same")),
                    missing=frozenset({"gone", "still"}))
    new = IndexRows(strings=(StringRow("name", "same", "Same"), StringRow("name", "new", "New")),
                    missing=frozenset({"still", "fresh"}))
    result = instance_reindex_parameters(old, new, MS, dry_run=False)
    assert [(row["ValueExact"], row["Action"]) for row in section(result, "StringIndexes")] == [
        ("New", "ADD"), ("Old", "REMOVE"), ("Same", "NO_CHANGE"),
    ]
    assert [(row["code"], row["Action"]) for row in section(result, "MissingIndexes")] == [
        ("fresh", "ADD"), ("gone", "REMOVE"), ("still", "NO_CHANGE"),
    ]


def test_a_section_present_only_in_the_old_rows_lists_removals() -> None:
    old = IndexRows(uris=(UriRow("url", "http://a"),))
    result = instance_reindex_parameters(old, IndexRows(), MS, dry_run=True)
    assert section(result, "UriIndexes") == [{"code": "url", "Action": "REMOVE", "Type": "Uri", "Value": "http://a"}]


def test_empty_sections_are_left_out() -> None:
    result = instance_reindex_parameters(IndexRows(), IndexRows(), MS, dry_run=False)
    assert [parameter["name"] for parameter in result["parameter"]] == ["Narrative", "Message"]


@pytest.mark.parametrize(("old", "dry_run", "codes", "expected"), [
    (None, False, (), {"name": "ADD", "identifier": "ADD"}),
    (None, True, (), {"name": "ADD", "identifier": "ADD"}),
    (None, True, ("name",), {"name": "UNKNOWN"}),
    (None, False, ("name",), {"name": "ADD"}),
    (IndexRows(strings=(StringRow("name", "a", "A"),)), True, ("name", "identifier"),
     {"name": "NO_CHANGE", "identifier": "ADD"}),
    (IndexRows(tokens=(TokenRow("identifier", "s", "1", None), TokenRow("other", None, "x", None))), True,
     ("identifier",), {"name": None, "identifier": "NO_CHANGE"}),
])
def test_actions_by_knowledge_and_code_filter(
    old: IndexRows | None, dry_run: bool, codes: tuple[str, ...], expected: dict[str, str | None],
) -> None:
    new = IndexRows(strings=(StringRow("name", "a", "A"),), tokens=(TokenRow("identifier", "s", "1", None),))
    result = instance_reindex_parameters(old, new, MS, dry_run=dry_run, codes=codes)
    found = {row["code"]: row["Action"] for name in ("StringIndexes", "TokenIndexes") if name in by_name(result)
             for row in section(result, name)}
    assert found == {code: action for code, action in expected.items() if action}


def test_the_code_filter_applies_to_missing_parameters() -> None:
    new = IndexRows(missing=frozenset({"name", "type"}))
    result = instance_reindex_parameters(None, new, MS, dry_run=True, codes=["type"])
    assert section(result, "MissingIndexes") == [{"code": "type", "Action": "UNKNOWN", "Missing": True}]
    old = IndexRows(missing=frozenset({"type", "name"}))
    result = instance_reindex_parameters(old, IndexRows(), MS, dry_run=True, codes=["type"])
    assert section(result, "MissingIndexes") == [{"code": "type", "Action": "REMOVE", "Missing": True}]


@pytest.mark.parametrize(("dry_run", "message"), [
    (False, "Reindex completed in 12ms"),
    (True, "Reindex dry-run completed in 12ms. No changes were committed to any stored data."),
])
def test_message(dry_run: bool, message: str) -> None:
    assert by_name(instance_reindex_parameters(None, IndexRows(), MS, dry_run))["Message"]["valueString"] == message


@pytest.mark.parametrize(("duration", "text"), [
    (timedelta(0), "0ms"),
    (timedelta(microseconds=999), "0ms"),
    (timedelta(milliseconds=999), "999ms"),
    (timedelta(seconds=9, milliseconds=999), "9999ms"),
    (timedelta(seconds=10, milliseconds=223), "00:00:10.223"),
    (timedelta(seconds=60), "00:01:00.000"),
    (timedelta(seconds=61, milliseconds=234), "00:01:01"),
    (timedelta(hours=23, minutes=59, seconds=59), "23:59:59"),
    (timedelta(days=1), "1.0 day"),
    (timedelta(days=1, hours=17), "1.7 days"),
    (timedelta(days=64, hours=3), "64 days"),
    (timedelta(seconds=-1), "0ms"),
])
def test_format_elapsed(duration: timedelta, text: str) -> None:
    assert format_elapsed(duration) == text


def test_narrative_is_an_escaped_xhtml_table() -> None:
    old = IndexRows(strings=(StringRow("name", "<b>", "<B>&"),))
    new = IndexRows(tokens=(TokenRow("identifier", "urn:s", "1", None),), missing=frozenset({"type"}))
    narrative = by_name(instance_reindex_parameters(old, new, MS, dry_run=False))["Narrative"]["valueString"]
    assert narrative.startswith('<div xmlns="http://www.w3.org/1999/xhtml"><h1>Reindex</h1><table border="0">')
    assert narrative.endswith("</table></div>")
    assert "<tr><td>StringIndexes</td><td>name</td><td>REMOVE</td>" \
           "<td>ValueNormalized=&lt;b&gt;, ValueExact=&lt;B&gt;&amp;</td></tr>" in narrative
    assert "<tr><td>TokenIndexes</td><td>identifier</td><td>ADD</td><td>System=urn:s, Value=1</td></tr>" in narrative
    assert "<tr><td>MissingIndexes</td><td>type</td><td>ADD</td><td>missing</td></tr>" in narrative


def test_large_and_exact_decimals() -> None:
    new = IndexRows(numbers=(NumberRow("n", Decimal("1234567890123456789")), NumberRow("m", Decimal("1.50")),
                             NumberRow("o", Decimal("1E+30"))))
    result = instance_reindex_parameters(None, new, MS, False)
    values = {row["code"]: row["Value"] for row in section(result, "NumberIndexes")}
    assert values == {"n": 1234567890123456789, "m": 1.5, "o": 1e30}
    orjson.dumps(result)


def test_additions_then_removals_then_unchanged_each_sorted_by_code() -> None:
    old = IndexRows(tokens=(TokenRow("a-kept", None, "1", None), TokenRow("b-removed", None, "1", None)),
                    missing=frozenset({"a-missing-kept", "z-missing-removed"}))
    new = IndexRows(tokens=(TokenRow("a-kept", None, "1", None), TokenRow("c-added", None, "1", None),
                            TokenRow("a-added", None, "2", None)),
                    missing=frozenset({"a-missing-kept", "b-missing-added"}))
    result = instance_reindex_parameters(old, new, MS, dry_run=False)
    assert [(row["code"], row["Action"]) for row in section(result, "TokenIndexes")] == [
        ("a-added", "ADD"), ("c-added", "ADD"), ("b-removed", "REMOVE"), ("a-kept", "NO_CHANGE"),
    ]
    assert [(row["code"], row["Action"]) for row in section(result, "MissingIndexes")] == [
        ("b-missing-added", "ADD"), ("z-missing-removed", "REMOVE"), ("a-missing-kept", "NO_CHANGE"),
    ]


def test_missing_parameters_carry_their_type_when_known() -> None:
    new = IndexRows(missing=frozenset({"partof", "type"}))
    result = instance_reindex_parameters(None, new, MS, dry_run=False, missing_types={"partof": "Reference"})
    assert section(result, "MissingIndexes") == [
        {"code": "partof", "Action": "ADD", "Type": "Reference", "Missing": True},
        {"code": "type", "Action": "ADD", "Missing": True},
    ]


def test_blank_values_are_left_out() -> None:
    new = IndexRows(tokens=(TokenRow("identifier", "", "42", None), TokenRow("code", "urn:s", "", None)))
    assert section(instance_reindex_parameters(None, new, MS, dry_run=False), "TokenIndexes") == [
        {"code": "code", "Action": "ADD", "Type": "Token", "System": "urn:s"},
        {"code": "identifier", "Action": "ADD", "Type": "Token", "Value": "42"},
    ]
