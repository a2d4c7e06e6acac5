"""The compiled FHIRPath subset: what it accepts, and what it evaluates to."""

from __future__ import annotations

import pytest

from service.search.fhirpath_compiler import compile_expression
from service.search.fhirpath_parser import Unsupported


def evaluate(expression: str, resource: dict) -> list[tuple[str, object]]:
    """(FHIR type, value) of every result, branch by branch."""
    results = []
    for branch in compile_expression(expression, resource["resourceType"]):
        start = [resource] if branch.first_key is None else _values(resource.get(branch.first_key))
        values = branch.rest(start) if branch.rest else start
        results.extend((branch.type, value) for value in values)
    return results


def _values(value: object) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


OBSERVATION = {"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 1},
               "effectiveDateTime": "2020", "extension": [{"url": "a", "valueString": "x"},
                                                          {"url": "b", "valueCode": "y"}],
               "component": [{"valueString": "s"}, {"valueQuantity": {"value": 2}}]}


@pytest.mark.parametrize(("expression", "expected"), [
    ("Observation.value", [("Quantity", {"value": 1})]),
    ("Observation.value as Quantity", [("Quantity", {"value": 1})]),
    ("(Observation.value as Quantity)", [("Quantity", {"value": 1})]),
    ("Observation.value.as(string)", []),
    ("Observation.effective", [("dateTime", "2020")]),
    ("Observation.effective.ofType(dateTime)", [("dateTime", "2020")]),
    ("Observation.component.value as Quantity", [("Quantity", {"value": 2})]),
    ("(Observation.component.value as string) | Observation.id", [("string", "s"), ("System.String", "o")]),
    ("Resource.id", [("System.String", "o")]),
    ("Patient.name | Observation.id", [("System.String", "o")]),
    ("Observation.extension('b')", [("Extension", {"url": "b", "valueCode": "y"})]),
    ("Observation.extension.where(url = 'a').value", [("string", "x")]),
    ("Observation.component[1].value", [("Quantity", {"value": 2})]),
    ("Observation.component.where(value.exists() and value != 's').value", [("Quantity", {"value": 2})]),
    ("Observation.component.where(value = 's' or value = 't').value", [("string", "s")]),
    ("Observation.value.exists()", [("boolean", True)]),
    ("Observation.note.exists()", [("boolean", False)]),
])
def test_compiled_evaluation(expression, expected):
    assert evaluate(expression, OBSERVATION) == expected


@pytest.mark.parametrize("expression", [
    "Observation.code.select(text)",  # functions outside the subset
    "Observation.subject.resolve()",  # resolve() only as `resolve() is Type` in a where
    "Observation.value is Quantity",
    "Observation.nonsense",  # unknown element: left to fhirpathpy (which yields nothing)
    "Observation.contained.ofType(Patient).name",  # the type of a contained resource is not static
    "%resource.id",
    "Observation.value + 1",
])
def test_outside_the_subset(expression):
    with pytest.raises(Unsupported):
        compile_expression(expression, "Observation")


@pytest.mark.parametrize(("expression", "resource_type", "paths"), [
    ("Patient.gender", "Patient", ["Patient.gender"]),
    ("Patient.address.use", "Patient", ["Address.use"]),
    ("Appointment.participant.status", "Appointment", ["Appointment.participant.status"]),
    ("Questionnaire.item.item.type", "Questionnaire", ["Questionnaire.item.type"]),
    ("Observation.value as Quantity", "Observation", ["Observation.value"]),
    ("Patient.gender | Patient.birthDate", "Patient", ["Patient.gender", "Patient.birthDate"]),
    ("Patient.name.where(use = 'official').family", "Patient", ["HumanName.family"]),
    ("Patient.active.exists()", "Patient", [""]),
])
def test_branches_know_the_definition_path_of_their_element(expression, resource_type, paths):
    assert [branch.path for branch in compile_expression(expression, resource_type)] == paths
