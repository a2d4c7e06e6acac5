"""`_summary=true|text|data|false` on searches and reads, against subsets computed here from the NDJSON files
with the summary elements of the R4 specification written out by hand for Patient and Observation (and the
data types they use), independently of the shipped table."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SEARCH_DATASETS
from tests.search_data import entries, get_bundle, resources

# Synthea's Patients and Observations, from the search modules' template (Plan-Net adds neither).
SEARCH_DATA = pytest.mark.dataset(*SEARCH_DATASETS)

CODING = {"system", "version", "code", "display", "userSelected"}
# Element -> its summary children (None: kept whole), as the R4 specification's "Σ" flags say.
TYPES: dict[str, dict[str, Any]] = {
    "Coding": dict.fromkeys(CODING),
    "CodeableConcept": {"coding": "Coding", "text": None},
    "Period": {"start": None, "end": None},
    "Reference": {"reference": None, "type": None, "identifier": "Identifier", "display": None},
    "Identifier": {"use": None, "type": "CodeableConcept", "system": None, "value": None, "period": "Period",
                   "assigner": "Reference"},
    "HumanName": dict.fromkeys(["use", "text", "family", "given", "prefix", "suffix"]) | {"period": "Period"},
    "ContactPoint": dict.fromkeys(["system", "value", "use", "rank"]) | {"period": "Period"},
    "Address": dict.fromkeys(["use", "type", "text", "line", "city", "district", "state", "postalCode",
                              "country"]) | {"period": "Period"},
    "Quantity": dict.fromkeys(["value", "comparator", "unit", "system", "code"]),
}
VALUES = {"valueQuantity": "Quantity", "valueCodeableConcept": "CodeableConcept", "valueString": None,
          "valueBoolean": None, "valueInteger": None, "valueDateTime": None, "valuePeriod": "Period"}
TYPES["Patient"] = {"id": None, "implicitRules": None, "identifier": "Identifier", "active": None,
                    "name": "HumanName", "telecom": "ContactPoint", "gender": None, "birthDate": None,
                    "deceasedBoolean": None, "deceasedDateTime": None, "address": "Address",
                    "managingOrganization": "Reference"}
TYPES["Observation.component"] = {"code": "CodeableConcept", **VALUES}
TYPES["Observation"] = {"id": None, "implicitRules": None, "identifier": "Identifier", "basedOn": "Reference",
                        "partOf": "Reference", "status": None, "code": "CodeableConcept", "subject": "Reference",
                        "focus": "Reference", "encounter": "Reference", "effectiveDateTime": None,
                        "effectivePeriod": "Period", "issued": None, "performer": "Reference", **VALUES,
                        "hasMember": "Reference", "derivedFrom": "Reference", "component": "Observation.component"}
MANDATORY = {"Patient": set(), "Observation": {"status", "code"}}


def summary_of(value: Any, structure: str | None) -> Any:
    if structure is None:
        return value
    if isinstance(value, list):
        return [summary_of(item, structure) for item in value]
    children = TYPES[structure]
    return {key: summary_of(item, children[key]) for key, item in value.items() if key in children}


def expected(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """What a mode keeps of a loaded resource, `meta` aside (the server sets part of it)."""
    res_type = resource["resourceType"]
    if mode == "true":
        kept = summary_of(resource, res_type)
    elif mode == "text":
        kept = {k: v for k, v in resource.items() if k in {"id", "text"} | MANDATORY[res_type]}
    elif mode == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    else:
        kept = dict(resource)
    kept.pop("meta", None)
    return {**kept, "resourceType": res_type}


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key != "meta"}


def subsetted(resource: dict[str, Any]) -> bool:
    return "SUBSETTED" in [tag.get("code") for tag in resource.get("meta", {}).get("tag", [])]


def by_id(res_type: str) -> dict[str, dict[str, Any]]:
    return {resource["id"]: resource for resource in resources(res_type)}


@SEARCH_DATA
@pytest.mark.parametrize("mode", ["true", "text", "data", "false"])
@pytest.mark.parametrize("res_type", ["Patient", "Observation"])
async def test_summary_modes_on_search(client, res_type, mode):
    bundle = await get_bundle(client, f"/fhir/{res_type}?_summary={mode}&_count=60")
    found = [entry["resource"] for entry in entries(bundle)]
    assert len(found) == 60
    loaded = by_id(res_type)
    for resource in found:
        assert without_meta(resource) == expected(loaded[resource["id"]], mode)
        assert subsetted(resource) == (mode != "false")
        assert "versionId" in resource["meta"]


@SEARCH_DATA
async def test_summary_drops_elements_that_are_not_summary_at_every_level(client):
    """Addresses (a data type) lose their geolocation extension, not a summary element of Address."""
    patients = [r for r in resources("Patient") if any("extension" in a for a in r.get("address", []))]
    assert patients
    response = await client.get(f"/fhir/Patient/{patients[0]['id']}", params={"_summary": "true"})
    patient = await response.json()
    assert all("extension" not in address for address in patient["address"])
    assert "text" not in patient and "extension" not in patient and "communication" not in patient


@SEARCH_DATA
@pytest.mark.parametrize("mode", ["true", "text", "data", "false"])
async def test_summary_modes_on_read_and_vread(client, mode):
    patient = resources("Patient")[3]
    for url in (f"/fhir/Patient/{patient['id']}", f"/fhir/Patient/{patient['id']}/_history/1"):
        response = await client.get(url, params={"_summary": mode})
        body = await response.json()
        assert response.status == 200, body
        assert without_meta(body) == expected(patient, mode)
        assert subsetted(body) == (mode != "false")


@SEARCH_DATA
async def test_elements_win_over_summary_and_bad_modes_are_refused(client):
    patient = resources("Patient")[0]
    response = await client.get(f"/fhir/Patient/{patient['id']}?_summary=text&_elements=gender")
    body = await response.json()
    assert without_meta(body) == {"resourceType": "Patient", "id": patient["id"], "gender": patient["gender"]}
    for url in ("/fhir/Patient?_summary=yes", f"/fhir/Patient/{patient['id']}?_summary=count",
                f"/fhir/Patient/{patient['id']}?_summary=maybe"):
        refused = await client.get(url)
        assert refused.status == 400, url
        assert (await refused.json())["issue"][0]["code"] == "invalid"
