"""The registry: built-in definitions, compilation, custom parameters, and extraction behaviour."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from service.search.definitions import InvalidSearchParameter, load_builtin
from service.search.registry import Registry
from service.search.rows import DateRow, QuantityRow, ReferenceRow, StringRow, TokenRow
from tests.conftest import DATA_DIR

PLANNET = DATA_DIR / "plannet" / "plannet-searchparameters.bundle.json"
UTC = timezone.utc


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.builtin()


def rows_for(registry: Registry, resource: dict, code: str) -> set:
    return {row for row in registry.extract(resource).all_rows() if row.code == code}


def plannet_parameters() -> list[dict]:
    return [entry["resource"] for entry in json.loads(PLANNET.read_text())["entry"]]


def test_builtin_definitions():
    definitions = load_builtin()
    assert len(definitions) == 1375
    assert sum(1 for d in definitions if d.expression) == 1372
    patient = next(d for d in definitions if d.url == "http://hl7.org/fhir/SearchParameter/clinical-patient")
    assert "Observation" in patient.base and patient.type == "reference" and "Patient" in patient.target
    birthdate = next(d for d in definitions if d.url == "http://hl7.org/fhir/SearchParameter/individual-birthdate")
    assert {"eq", "lt", "ge"} <= set(birthdate.comparators)


def test_every_builtin_compiles_without_the_fallback(registry):
    for resource_type in ("Observation", "Patient", "Organization", "Bundle", "ActivityDefinition"):
        assert all(p.compiled for p in registry.parameters(resource_type))
    assert registry.parameter("Observation", "value-quantity").branches
    composite = registry.parameter("Observation", "code-value-quantity")
    assert not composite.branches and composite.composite is not None  # rows of its own, per element


def test_composite_rows_keep_the_components_of_one_element_together(registry):
    def component(code, value):
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    observation = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "bp"}]},
                   "component": [component("sys", 120), component("dia", 80)]}
    rows = [orjson.loads(row.parts) for row in registry.extract(observation).composites
            if row.code == "component-code-value-quantity"]
    assert sorted((parts[0]["value"], parts[1]["value"]) for parts in rows) == [("dia", "80"), ("sys", "120")]
    assert "code-value-quantity" in registry.extract(observation).missing  # the Observation itself has no value


def test_resource_level_parameters(registry):
    resource = {"resourceType": "Organization", "id": "o1",
                "meta": {"lastUpdated": "2021-05-06T07:08:09.123+02:00", "source": "http://src#a",
                         "profile": ["http://p"], "tag": [{"system": "s", "code": "t"}],
                         "security": [{"system": "v", "code": "R"}]}}
    rows = registry.extract(resource)
    assert TokenRow("_id", None, "o1", None) in rows.tokens
    assert TokenRow("_tag", "s", "t", None) in rows.tokens and TokenRow("_security", "v", "R", None) in rows.tokens
    instant = datetime(2021, 5, 6, 5, 8, 9, 123000, tzinfo=UTC)
    assert DateRow("_lastUpdated", instant, instant.replace(microsecond=123999)) in rows.dates
    assert {u.uri for u in rows.uris} == {"http://src#a", "http://p"}
    assert "name" in rows.missing and "_id" not in rows.missing


def test_choice_types_and_as(registry):
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                   "valueQuantity": {"value": 7.2, "system": "http://unitsofmeasure.org", "code": "mmol/L"},
                   "effectivePeriod": {"start": "2020-01-01T10:00:00Z"},
                   "component": [{"code": {"text": "c"}, "valueQuantity": {"value": 1}},
                                 {"code": {"text": "d"}, "valueString": "x"}]}
    assert rows_for(registry, observation, "value-quantity") == {
        QuantityRow("value-quantity", Decimal("7.2"), "http://unitsofmeasure.org", "mmol/L", None)}
    assert rows_for(registry, observation, "component-value-quantity") == {
        QuantityRow("component-value-quantity", Decimal(1), None, None, None)}
    low = datetime(2020, 1, 1, 10, tzinfo=UTC)
    assert rows_for(registry, observation, "date") == {DateRow("date", low, datetime.max.replace(tzinfo=UTC))}
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "onsetAge": {"value": 3},
                 "abatementString": "gone"}
    assert rows_for(registry, condition, "onset-age") == {QuantityRow("onset-age", Decimal(3), None, None, None)}
    assert rows_for(registry, condition, "abatement-string") == {StringRow("abatement-string", "gone", "gone")}


def test_where_resolve_is_filters_by_reference_type(registry):
    def observation(subject: str) -> dict:
        return {"resourceType": "Observation", "subject": {"reference": subject}}
    assert rows_for(registry, observation("Patient/1"), "patient") == {ReferenceRow("patient", "Patient", "1", None)}
    assert rows_for(registry, observation("Group/2"), "patient") == set()
    assert rows_for(registry, observation("Group/2"), "subject") == {ReferenceRow("subject", "Group", "2", None)}
    absolute = observation("https://other.org/fhir/Patient/3/_history/1")  # external: the type still selects it
    assert rows_for(registry, absolute, "patient") == {ReferenceRow("patient", None, None, "https://other.org/fhir/Patient/3")}
    assert "patient" in registry.extract(observation("#contained")).missing
    assert "patient" in registry.extract(observation("urn:uuid:1")).missing


def test_where_with_a_comparison(registry):
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "555"},
                                                      {"system": "email", "value": "a@b.c"}]}
    assert rows_for(registry, patient, "phone") == {TokenRow("phone", "phone", "555", None)}
    assert rows_for(registry, patient, "email") == {TokenRow("email", "email", "a@b.c", None)}


def test_boolean_expression(registry):
    def deceased(patient: dict) -> set:
        return {r.value for r in rows_for(registry, {"resourceType": "Patient", **patient}, "deceased")}
    assert deceased({}) == {"false"}
    assert deceased({"deceasedBoolean": False}) == {"false"}
    assert deceased({"deceasedBoolean": True}) == {"true"}
    assert deceased({"deceasedDateTime": "2020-01-01"}) == {"true"}


def test_all_plannet_parameters_load_and_compile():
    registry = Registry.builtin()
    definitions = [registry.add_resource(resource) for resource in plannet_parameters()]
    assert len(definitions) == 48
    for definition in definitions:
        for base in definition.base:
            parameter = registry.parameter(base, definition.code)
            assert parameter.definition is definition and parameter.compiled and parameter.branches


def test_plannet_extension_parameter_indexes_the_unwrapped_value():
    registry = Registry.builtin()
    for resource in plannet_parameters():
        registry.add_resource(resource)
    role = {"resourceType": "PractitionerRole", "extension": [
        {"url": "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/network-reference",
         "valueReference": {"reference": "Organization/net1"}},
        {"url": "http://example.org/other", "valueReference": {"reference": "Organization/no"}}]}
    assert rows_for(registry, role, "network") == {ReferenceRow("network", "Organization", "net1", None)}


def test_custom_parameter_replaces_the_builtin_one_for_its_base_only():
    registry = Registry.builtin()
    registry.add_resource({"resourceType": "SearchParameter", "code": "name", "base": ["Organization"],
                           "type": "string", "expression": "Organization.name | Organization.alias"})
    organization = {"resourceType": "Organization", "name": "Acme", "alias": ["ACME Corp"]}
    assert {r.exact for r in rows_for(registry, organization, "name")} == {"Acme", "ACME Corp"}
    assert registry.parameter("Location", "name").definition.url == "http://hl7.org/fhir/SearchParameter/Location-name"


def test_expressions_outside_the_subset_use_fhirpathpy():
    registry = Registry.builtin()
    registry.add_resource({"resourceType": "SearchParameter", "code": "first-given", "base": ["Patient"],
                           "type": "string", "expression": "Patient.name.first().given.first()"})
    parameter = registry.parameter("Patient", "first-given")
    assert not parameter.compiled
    patient = {"resourceType": "Patient", "name": [{"given": ["Ann", "Bo"]}, {"given": ["Cy"]}]}
    assert rows_for(registry, patient, "first-given") == {StringRow("first-given", "ann", "Ann")}


VALID = {"resourceType": "SearchParameter", "code": "x", "base": ["Patient"], "type": "token",
         "expression": "Patient.gender"}


@pytest.mark.parametrize(("change", "message"), [
    ({"expression": None}, "no expression"),
    ({"expression": "  "}, "no expression"),
    ({"base": ["Patient", "Spaceship"]}, "unknown resource types: Spaceship"),
    ({"base": []}, "at least one"),
    ({"type": "geo"}, "not an R4 search parameter type"),
    ({"code": ""}, "code is required"),
    ({"resourceType": "Patient"}, "resourceType"),
    ({"expression": "Patient.name.("}, "does not compile"),
    ({"expression": "Patient.name )"}, "does not compile"),
    ({"expression": "Patient.link.other.resolve().name"}, "does not compile"),
    ({"expression": "Observation.code"}, "selects nothing on Patient"),
    ({"expression": "Patient.nickname"}, "no element 'nickname' in Patient"),
])
def test_invalid_custom_parameters(change, message):
    registry = Registry.builtin()
    with pytest.raises(InvalidSearchParameter, match=message):
        registry.add_resource({**VALID, **change})
    assert registry.parameter("Patient", "x") is None


def test_unknown_resource_types_and_malformed_bodies_are_rejected(registry):
    with pytest.raises(ValueError, match="not a resource type"):
        registry.extract({"resourceType": "Spaceship"})
    with pytest.raises(ValueError, match="malformed Organization/o1"):
        registry.extract({"resourceType": "Organization", "id": "o1", "address": ["not an object"]})
    assert registry.extract({"resourceType": "Organization", "name": None}).strings == ()


GENDER = "http://hl7.org/fhir/administrative-gender"


def test_bound_codes_are_indexed_with_their_code_system(registry):
    patient = {"resourceType": "Patient", "gender": "female", "address": [{"use": "home", "city": "Oslo"}],
               "extension": [{"url": "http://e", "valueCode": "male"}]}
    assert rows_for(registry, patient, "gender") == {TokenRow("gender", GENDER, "female", None)}
    assert rows_for(registry, patient, "address-use") == {
        TokenRow("address-use", "http://hl7.org/fhir/address-use", "home", None)}
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "t"}}
    assert rows_for(registry, observation, "status") == {
        TokenRow("status", "http://hl7.org/fhir/observation-status", "final", None)}
    # SearchParameter.base is bound to resource-types, which HAPI's R4 model keeps as a plain code
    search_parameter = {"resourceType": "SearchParameter", "base": ["Patient"], "status": "active"}
    assert rows_for(registry, search_parameter, "base") == {TokenRow("base", None, "Patient", None)}


def test_custom_parameters_on_bound_codes_get_the_system_unless_untyped():
    registry = Registry.builtin()
    registry.add_resource({**VALID, "code": "sex"})  # Patient.gender: compiled, so its element is known
    registry.add_resource({**VALID, "code": "ext", "expression": "Patient.extension('http://e').value"})
    registry.add_resource({**VALID, "code": "first", "expression": "Patient.gender.first()"})  # fhirpathpy
    patient = {"resourceType": "Patient", "gender": "male", "extension": [{"url": "http://e", "valueCode": "male"}]}
    assert rows_for(registry, patient, "sex") == {TokenRow("sex", GENDER, "male", None)}
    assert rows_for(registry, patient, "ext") == {TokenRow("ext", None, "male", None)}  # a code, bound to nothing
    assert rows_for(registry, patient, "first") == {TokenRow("first", None, "male", None)}


def test_address_text_is_not_indexed_but_name_text_is(registry):
    patient = {"resourceType": "Patient", "address": [{"text": "12 Elm Street, Springfield"}],
               "name": [{"text": "Ann Smith"}]}
    assert rows_for(registry, patient, "address") == set()
    assert "address" in registry.extract(patient).missing
    assert rows_for(registry, patient, "name") == {StringRow("name", "ann smith", "Ann Smith")}


def test_references_on_the_local_bases_are_local():
    registry = Registry.builtin(("https://fhir.example.org/fhir",))
    registry.add_resource({"resourceType": "SearchParameter", "code": "first-subject", "base": ["Observation"],
                           "type": "reference", "expression": "Observation.subject.first()"})  # fhirpathpy
    copied = registry.copy()
    assert copied.local_bases == ("https://fhir.example.org/fhir",)
    for reference, expected in [
        ("https://fhir.example.org/fhir/Patient/23", ("Patient", "23", None)),
        ("http://example.org/fhir/Patient/23", (None, None, "http://example.org/fhir/Patient/23")),
    ]:
        observation = {"resourceType": "Observation", "subject": {"reference": reference}}
        assert rows_for(copied, observation, "subject") == {ReferenceRow("subject", *expected)}
        assert rows_for(copied, observation, "first-subject") == {ReferenceRow("first-subject", *expected)}
    assert Registry.builtin().local_bases == ()
