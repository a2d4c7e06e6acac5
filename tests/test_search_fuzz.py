"""Fuzzed search query strings, as GET queries and `_search` form bodies: no answer is a 5xx.

The strings mix the parameters each type really has (with modifiers, chains and the result controls) with
values at the edges of every parameter type: prefixes, huge and tiny numbers, dates at the ends of the
calendar, escapes, cursors, control characters and percent-encodings that are not UTF-8.
`FHIR_FUZZ_EXAMPLES` runs more than the suite's few hundred (e.g. 5000, before a release)."""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from service.search.registry import Registry

TYPES = ("Patient", "Observation", "RiskAssessment", "Organization", "PractitionerRole", "Encounter")
MODIFIERS = ("", "", "", ":exact", ":contains", ":not", ":text", ":missing", ":above", ":below", ":Patient",
             ":Organization", ":iterate", ":", "::")
PREFIXES = ("", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz")
SEED = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ågren", "given": ["Zoë"]}], "gender": "female",
     "birthDate": "1970-01-01", "generalPractitioner": [{"reference": "Practitioner/x"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Smith"}], "birthDate": "9999-12-31"},
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
     "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "0001-01-01T00:00:00Z",
     "valueQuantity": {"value": 1e300, "system": "http://unitsofmeasure.org", "code": "mg"}},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/p2"},
     "prediction": [{"probabilityDecimal": 0.000001}]},
    {"resourceType": "Organization", "id": "g1", "name": "Acme, Inc. | 100%"},
]


def _kinds(resource_type: str) -> dict[str, str]:
    return {p.definition.code: p.definition.type for p in Registry.builtin().parameters(resource_type)}


KINDS = {resource_type: _kinds(resource_type) for resource_type in TYPES}

numbers = st.one_of(
    st.integers().map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{0,6})?[eE][+-]?[0-9]{1,12}", fullmatch=True),
    st.sampled_from(["NaN", "Infinity", "-0", "1e999999999", "1e-999999999", "0x10", "1_000", "٣"]),
)
dates = st.from_regex(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
                      r"(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?", fullmatch=True)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("dvr"), inner),
                           max_leaves=6)
# Cursors: shaped like the server's (direction, sort values, row id) with any JSON in them, or any JSON at all.
cursors = st.one_of(
    st.fixed_dictionaries({"d": st.sampled_from(["n", "p", "x"]), "v": st.lists(
        st.one_of(numbers, dates.map(lambda d: d + "T00:00:00+14:00"), dates, st.text(max_size=4)), max_size=2),
        "r": st.integers()}),
    json_values,
).map(lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode())
texts = st.text(max_size=10)
typed_values = {
    "number": st.tuples(st.sampled_from(PREFIXES), numbers).map("".join),
    "quantity": st.tuples(st.sampled_from(PREFIXES), numbers, st.sampled_from(["", "||mg", "|http://x|mg", "|"])).map(
        "".join),
    "date": st.tuples(st.sampled_from(PREFIXES), dates).map("".join),
    "token": st.tuples(texts, st.sampled_from(["", "|", "\\|", "||"]), texts).map("".join),
    "reference": st.sampled_from(["Patient/p1", "p1", "http://other.example/fhir/Patient/p1", "Patient/", "/",
                                  "a/b/c/d", "Patient/p1/_history/1", "Foo/1"]) | texts,
}
controls = {
    "_count": numbers, "_sort": st.sampled_from(["birthdate", "-birthdate", "_id", "-_lastUpdated", "probability",
                                                 "name,-_id", "date", "value-quantity", "x"]),
    "_total": st.sampled_from(["accurate", "none", "estimate", "x"]), "_summary": st.sampled_from(["count", "x"]),
    "_include": st.sampled_from(["*", "Observation:subject", "Patient:general-practitioner", "x:y:z"]),
    "_revinclude": st.sampled_from(["Observation:subject", "RiskAssessment:subject:Patient", "*"]),
    "_cursor": cursors, "_elements": texts, "_lastUpdated": typed_values["date"], "_id": texts,
}


@st.composite
def parameter(draw: st.DrawFn, resource_type: str) -> tuple[str, str]:
    """Mostly a real parameter of the type with a value of its kind; otherwise anything."""
    choice = draw(st.integers(0, 9))
    if choice < 6:
        code, kind = draw(st.sampled_from(sorted(KINDS[resource_type].items())))
        modifier = draw(st.sampled_from(MODIFIERS)) if choice == 0 else ""
        chain = "." + draw(st.sampled_from(["name", "family", "identifier", "x", "_id"])) if choice == 1 else ""
        value = draw(st.lists(typed_values.get(kind, texts), min_size=1, max_size=3).map(",".join))
        return code + modifier + chain, value
    if choice < 9:
        name = draw(st.sampled_from(sorted(controls)))
        return name, draw(controls[name])
    return draw(texts) + draw(st.sampled_from(MODIFIERS)), draw(st.lists(single_values, min_size=1, max_size=4).map(
        ",".join))


single_values = st.one_of(*typed_values.values(), cursors, texts)


def encoded(text: str, raw: str) -> str:
    return quote(text, safe="") + raw


@st.composite
def query_string(draw: st.DrawFn, resource_type: str) -> str:
    """Parameters percent-encoded as clients do, now and then with a raw percent sequence that is not UTF-8
    (or not a percent sequence at all) appended."""
    raw = st.sampled_from([""] * 12 + ["%FF", "%", "%G1", "%00", "%C3", "%ED%A0%80", "+", "&&", "="])
    pairs = draw(st.lists(parameter(resource_type), max_size=4))
    return "&".join(f"{encoded(name, draw(raw))}={encoded(value, draw(raw))}" for name, value in pairs)


@pytest.fixture
async def seeded(client):
    for resource in SEED:
        response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=orjson.dumps(resource),
                                    headers={"Content-Type": "application/fhir+json"})
        assert response.status == 201, await response.text()
    return client


@settings(max_examples=int(os.environ.get("FHIR_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
          derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_fuzzed_search_is_never_a_5xx(seeded, data) -> None:
    resource_type = data.draw(st.sampled_from(TYPES))
    query = data.draw(query_string(resource_type))
    if data.draw(st.booleans()):
        response = await seeded.get(URL(f"/fhir/{resource_type}?{query}", encoded=True))
    else:
        response = await seeded.post(f"/fhir/{resource_type}/_search", data=query.encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    body = await response.read()
    assert response.status < 500, (query, body[:500])
    if response.status >= 400 and response.content_type == "application/fhir+json":
        assert orjson.loads(body)["resourceType"] == "OperationOutcome"
