"""Composite search parameters on Synthea's Observations: every result equals a filter computed here from the
NDJSON, with the components taken from one element (a code and a value of the same Observation.component)."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.conftest import DATA_DIR, SEARCH_DATASETS
from tests.search_data import search_ids

# Plan-Net adds no Observations: the search modules' template serves, where Synthea alone is another load.
SYNTHEA = pytest.mark.dataset(*SEARCH_DATASETS)
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
Element = dict[str, Any]
COMPARE: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": lambda a, b: a > b, "lt": lambda a, b: a < b, "ge": lambda a, b: a >= b, "le": lambda a, b: a <= b}
# Each composite's elements, as its definition's expression selects them.
ELEMENTS: dict[str, Callable[[Element], list[Element]]] = {
    "code-value-quantity": lambda o: [o],
    "code-value-concept": lambda o: [o],
    "code-value-string": lambda o: [o],
    "combo-code-value-quantity": lambda o: [o, *o.get("component", [])],
    "combo-code-value-concept": lambda o: [o, *o.get("component", [])],
    "component-code-value-quantity": lambda o: o.get("component", []),
    "component-code-value-concept": lambda o: o.get("component", []),
}


@cache
def observations() -> tuple[Element, ...]:
    with gzip.open(DATA_DIR / "synthea-r4-2019" / "Observation.ndjson.gz", "rb") as lines:
        return tuple(orjson.loads(line) for line in lines)


def codings(concept: Element | None) -> Iterator[tuple[str | None, str | None]]:
    for coding in (concept or {}).get("coding", []):
        yield coding.get("system"), coding.get("code")


def has_code(element: Element, system: str, code: str) -> bool:
    return (system, code) in set(codings(element.get("code")))


def quantity_test(prefix: str, number: str, unit: str | None = None) -> Callable[[Element], bool]:
    def test(element: Element) -> bool:
        quantity = element.get("valueQuantity")
        if quantity is None or (unit is not None and (quantity.get("system"), quantity.get("code")) != (UCUM, unit)):
            return False
        return COMPARE[prefix](Decimal(str(quantity["value"])), Decimal(number))
    return test


def concept_test(system: str, code: str) -> Callable[[Element], bool]:
    return lambda element: (system, code) in set(codings(element.get("valueCodeableConcept")))


def string_test(start: str) -> Callable[[Element], bool]:
    return lambda element: str(element.get("valueString", "")).lower().startswith(start.lower())


def expected(parameter: str, system: str, code: str, value_test: Callable[[Element], bool]) -> set[str]:
    """Observations with one element that has the code and a matching value."""
    return {o["id"] for o in observations()
            if any(has_code(e, system, code) and value_test(e) for e in ELEMENTS[parameter](o))}


def across_elements(parameter: str, system: str, code: str, value_test: Callable[[Element], bool]) -> set[str]:
    """What a search that took the code from one element and the value from another would find."""
    return {o["id"] for o in observations()
            if any(has_code(e, system, code) for e in ELEMENTS[parameter](o))
            and any(value_test(e) for e in ELEMENTS[parameter](o))}


def median_value(system: str, code: str, elements: Callable[[Element], list[Element]]) -> str:
    values = sorted(Decimal(str(e["valueQuantity"]["value"])) for o in observations() for e in elements(o)
                    if has_code(e, system, code) and "valueQuantity" in e)
    return str(values[len(values) // 2])


def most_common_code(elements: Callable[[Element], list[Element]], value_key: str) -> tuple[str, str]:
    found = Counter(coding for o in observations() for e in elements(o) if value_key in e
                    for coding in codings(e.get("code")))
    system, code = found.most_common(1)[0][0]
    assert system and code
    return system, code


async def search(client, parameter: str, value: str) -> set[str]:
    return await search_ids(client, f"/fhir/Observation?{parameter}={quote(value)}&_count=500&_elements=id")


@SYNTHEA
@pytest.mark.parametrize("parameter", ["code-value-quantity", "combo-code-value-quantity",
                                       "component-code-value-quantity"])
async def test_quantity_composites(client, parameter):
    system, code = most_common_code(ELEMENTS[parameter], "valueQuantity")
    middle = median_value(system, code, ELEMENTS[parameter])
    for prefix, unit in (("gt", None), ("le", None), ("ge", "mm[Hg]"), ("lt", "mm[Hg]")):
        value_test = quantity_test(prefix, middle, unit)
        wanted = expected(parameter, system, code, value_test)
        unit_part = f"|{UCUM}|{unit}" if unit else ""
        assert await search(client, parameter, f"{system}|{code}${prefix}{middle}{unit_part}") == wanted
        assert wanted or unit  # the median splits the values: both sides have matches


@SYNTHEA
async def test_component_values_stay_with_their_code(client):
    """Blood pressure: the systolic code with a value only the diastolic component has."""
    systolic = (LOINC, "8480-6")
    diastolic_median = median_value(LOINC, "8462-4", ELEMENTS["component-code-value-quantity"])
    value_test = quantity_test("le", diastolic_median)
    for parameter in ("component-code-value-quantity", "combo-code-value-quantity"):
        wanted = expected(parameter, *systolic, value_test)
        assert wanted != across_elements(parameter, *systolic, value_test)  # the test tells the two apart
        assert await search(client, parameter, f"{LOINC}|8480-6$le{diastolic_median}") == wanted


@SYNTHEA
@pytest.mark.parametrize("parameter", ["code-value-concept", "combo-code-value-concept",
                                       "component-code-value-concept"])
async def test_concept_composites(client, parameter):
    pairs = Counter((code, value) for o in observations() for e in ELEMENTS["combo-code-value-concept"](o)
                    for code in codings(e.get("code")) for value in codings(e.get("valueCodeableConcept")))
    (code, value), (other_code, other_value) = (pair for pair, _ in pairs.most_common(2))
    wanted = (expected(parameter, *code, concept_test(*value))
              | expected(parameter, *other_code, concept_test(*other_value)))
    either = f"{code[0]}|{code[1]}${value[0]}|{value[1]},{other_code[0]}|{other_code[1]}${other_value[1]}"
    assert await search(client, parameter, either) == wanted
    if parameter != "component-code-value-concept":  # Synthea's components hold quantities only
        assert wanted


@SYNTHEA
async def test_string_composite(client):
    system, code = most_common_code(ELEMENTS["code-value-string"], "valueString")
    word = next(o["valueString"] for o in observations() if "valueString" in o and has_code(o, system, code))[:3]
    wanted = expected("code-value-string", system, code, string_test(word))
    assert wanted
    assert await search(client, "code-value-string", f"{system}|{code}${word}") == wanted


async def test_written_observation_is_found_by_its_components(client):
    observation = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": LOINC, "code": "85354-9"}]}, "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 150, "system": UCUM, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": {"value": 95, "system": UCUM, "code": "mm[Hg]"}}]}
    response = await client.post("/fhir/Observation", data=orjson.dumps(observation), headers=FHIR_JSON)
    assert response.status == 201
    created = (await response.json(content_type=None))["id"]
    assert await search(client, "component-code-value-quantity", f"{LOINC}|8480-6$gt140") == {created}
    assert await search(client, "component-code-value-quantity", f"{LOINC}|8462-4$gt140") == set()
    observation["component"][1]["valueQuantity"]["value"] = 145
    response = await client.put(f"/fhir/Observation/{created}", data=orjson.dumps({**observation, "id": created}),
                                headers=FHIR_JSON)
    assert response.status == 200
    assert await search(client, "component-code-value-quantity", f"{LOINC}|8462-4$gt140") == {created}


@pytest.mark.parametrize("value", ["http://loinc.org|8480-6", "a$b$c", "$gt5", "http://loinc.org|8480-6$gtx"])
async def test_malformed_composite_values_are_refused(client, value):
    response = await client.get(f"/fhir/Observation?code-value-quantity={quote(value)}")
    assert response.status == 400


async def test_composite_modifiers_other_than_missing_are_refused(client):
    response = await client.get("/fhir/Observation?code-value-quantity:exact=x")
    assert response.status == 400


@SYNTHEA
async def test_missing_composite(client):
    with_value = {o["id"] for o in observations() if "valueQuantity" in o and o.get("code", {}).get("coding")}
    assert await search(client, "code-value-quantity:missing", "false") == with_value
    missing = await search(client, "code-value-quantity:missing", "true")
    assert missing == {o["id"] for o in observations()} - with_value


async def post(client, resource: Element) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", data=orjson.dumps(resource), headers=FHIR_JSON)
    assert response.status == 201, await response.text()
    return (await response.json(content_type=None))["id"]


async def test_date_and_number_components(client):
    code = {"coding": [{"system": LOINC, "code": "21112-8"}]}
    dated = await post(client, {"resourceType": "Observation", "status": "final", "code": code,
                                "valueDateTime": "2019-03-04"})
    assert await search(client, "code-value-date", f"{LOINC}|21112-8$ge2019-03") == {dated}
    assert await search(client, "code-value-date", f"{LOINC}|21112-8$lt2019-03") == set()
    # The chromosome comes from the resource (`%resource`), start and end from each variant.
    sequence = await post(client, {"resourceType": "MolecularSequence", "coordinateSystem": 0,
                                   "referenceSeq": {"chromosome": {"coding": [{"system": "urn:chr", "code": "7"}]}},
                                   "variant": [{"start": 100, "end": 200}, {"start": 500, "end": 600}]})
    url = "/fhir/MolecularSequence?chromosome-variant-coordinate="
    assert await search_ids(client, url + quote("urn:chr|7$ge500$le600")) == {sequence}
    assert await search_ids(client, url + quote("urn:chr|7$ge150$le250")) == set()  # start of one, end of another


async def test_document_relationship_reads_its_components_in_expression_order(client):
    target = await post(client, {"resourceType": "DocumentReference", "status": "current",
                                 "content": [{"attachment": {"url": "http://example.org/a"}}]})
    newer = await post(client, {"resourceType": "DocumentReference", "status": "current",
                                "content": [{"attachment": {"url": "http://example.org/b"}}],
                                "relatesTo": [{"code": "replaces",
                                               "target": {"reference": f"DocumentReference/{target}"}}]})
    url = "/fhir/DocumentReference?relationship="
    assert await search_ids(client, url + quote(f"replaces$DocumentReference/{target}")) == {newer}
    assert await search_ids(client, url + quote(f"transforms$DocumentReference/{target}")) == set()
