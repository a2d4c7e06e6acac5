"""PATCH through the real app: every JSON Patch and FHIRPath Patch operation, failures naming the operation,
If-Match, history, search on the patched value, exact numbers, and conditional PATCH."""

from __future__ import annotations

from typing import Any

import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
# Written as a client would, with numbers orjson would respell: they must come back as sent.
PATIENT = (b'{"resourceType":"Patient","id":"p1","active":true,"birthDate":"1970-01-01",'
           b'"identifier":[{"system":"urn:a","value":"1"},{"system":"urn:b","value":"2"}],'
           b'"name":[{"family":"Smith","given":["Ann"]}],'
           b'"extension":[{"url":"urn:weight","valueDecimal":1.50}],'
           b'"contact":[{"name":{"family":"Kin"}}]}')


@pytest.fixture
async def patient(client) -> str:
    response = await client.put("/fhir/Patient/p1", data=PATIENT, headers=FHIR_JSON)
    assert response.status == 201, await response.text()
    return "/fhir/Patient/p1"


def operation(kind: str, path: str, name: str | None = None, index: int | None = None, source: int | None = None,
              **value: Any) -> dict[str, Any]:
    parts = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    parts += [{"name": "name", "valueString": name}] if name is not None else []
    parts += [{"name": "index", "valueInteger": index}] if index is not None else []
    parts += [{"name": "source", "valueInteger": source}] if source is not None else []
    parts += [{"name": "value", **value}] if value else []
    return {"name": "operation", "part": parts}


def fhirpath_patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


JSON_PATCH_CASES = [
    ("add member", [{"op": "add", "path": "/gender", "value": "female"}],
     lambda r: r["gender"] == "female"),
    ("add into array", [{"op": "add", "path": "/identifier/0", "value": {"system": "urn:z", "value": "0"}}],
     lambda r: [i["system"] for i in r["identifier"]] == ["urn:z", "urn:a", "urn:b"]),
    ("add at end", [{"op": "add", "path": "/name/0/given/-", "value": "Beth"}],
     lambda r: r["name"][0]["given"] == ["Ann", "Beth"]),
    ("remove", [{"op": "remove", "path": "/identifier/1"}], lambda r: len(r["identifier"]) == 1),
    ("replace", [{"op": "replace", "path": "/name/0/family", "value": "Jones"}],
     lambda r: r["name"][0]["family"] == "Jones"),
    ("move", [{"op": "move", "from": "/identifier/1", "path": "/identifier/0"}],
     lambda r: [i["system"] for i in r["identifier"]] == ["urn:b", "urn:a"]),
    ("copy", [{"op": "copy", "from": "/name/0/family", "path": "/contact/0/name/family"}],
     lambda r: r["contact"][0]["name"]["family"] == "Smith"),
    ("test then replace", [{"op": "test", "path": "/active", "value": True},
                           {"op": "test", "path": "/extension/0/valueDecimal", "value": 1.5},
                           {"op": "replace", "path": "/active", "value": False}],
     lambda r: r["active"] is False),
]

FHIRPATH_CASES = [
    ("add", [operation("add", "Patient", "gender", valueCode="female")], lambda r: r["gender"] == "female"),
    ("add to a repeating element", [operation("add", "Patient.name[0]", "given", valueString="Beth")],
     lambda r: r["name"][0]["given"] == ["Ann", "Beth"]),
    ("add a backbone element from parts",
     [{"name": "operation", "part": [
         {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
         {"name": "name", "valueString": "contact"},
         {"name": "value", "part": [{"name": "name", "valueHumanName": {"family": "Doe"}},
                                    {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "5"}}]}]}],
     lambda r: r["contact"][1] == {"name": {"family": "Doe"}, "telecom": [{"system": "phone", "value": "5"}]}),
    ("insert", [operation("insert", "Patient.identifier", index=1, valueIdentifier={"system": "urn:z"})],
     lambda r: [i["system"] for i in r["identifier"]] == ["urn:a", "urn:z", "urn:b"]),
    ("delete with where()", [operation("delete", "Patient.identifier.where(system = 'urn:a')")],
     lambda r: r["identifier"] == [{"system": "urn:b", "value": "2"}]),
    ("delete of nothing changes nothing", [operation("delete", "Patient.telecom")], lambda r: "telecom" not in r),
    ("replace", [operation("replace", "Patient.identifier.where(system = 'urn:b').value", valueString="22")],
     lambda r: r["identifier"][1]["value"] == "22"),
    ("replace a choice element's type", [operation("replace", "Patient.extension('urn:weight').value",
                                                   valueString="heavy")],
     lambda r: r["extension"] == [{"url": "urn:weight", "valueString": "heavy"}]),
    ("move", [operation("move", "Patient.identifier", index=0, source=1)],
     lambda r: [i["system"] for i in r["identifier"]] == ["urn:b", "urn:a"]),
    ("replace by index and first()", [operation("replace", "Patient.name.first().given[0]", valueString="Anne")],
     lambda r: r["name"][0]["given"] == ["Anne"]),
]


async def patched(client, url, body, headers) -> dict[str, Any]:
    kwargs = {"json": body} if not isinstance(body, bytes) else {"data": body}
    response = await client.patch(url, headers=headers, **kwargs)
    assert response.status == 200, await response.text()
    assert response.headers["ETag"] == 'W/"2"'
    return await response.json(content_type=None)


@pytest.mark.parametrize(("name", "operations", "check"), JSON_PATCH_CASES, ids=[c[0] for c in JSON_PATCH_CASES])
async def test_json_patch_operations(client, patient, name, operations, check):
    result = await patched(client, patient, operations, JSON_PATCH)
    assert check(result)
    assert result["meta"]["versionId"] == "2"
    assert await (await client.get(patient)).json(content_type=None) == result


@pytest.mark.parametrize(("name", "operations", "check"), FHIRPATH_CASES, ids=[c[0] for c in FHIRPATH_CASES])
async def test_fhirpath_patch_operations(client, patient, name, operations, check):
    result = await patched(client, patient, fhirpath_patch(*operations), FHIR_JSON)
    assert check(result)
    assert await (await client.get(patient)).json(content_type=None) == result


FAILURES = [
    # (name, content type, body, status, text the diagnostics must hold)
    ("json test fails", JSON_PATCH, [{"op": "replace", "path": "/active", "value": False},
                                     {"op": "test", "path": "/birthDate", "value": "2000-01-01"}], 422, "Operation 1"),
    ("json remove missing", JSON_PATCH, [{"op": "remove", "path": "/telecom"}], 422, "Operation 0"),
    ("json index out of range", JSON_PATCH, [{"op": "add", "path": "/identifier/5", "value": {}}], 422, "Operation 0"),
    ("json unknown op", JSON_PATCH, [{"op": "test", "path": "/active", "value": True},
                                     {"op": "merge", "path": "/x"}], 400, "Operation 1"),
    ("json bad pointer", JSON_PATCH, [{"op": "remove", "path": "active"}], 400, "Operation 0"),
    ("json not an array", JSON_PATCH, {"op": "remove", "path": "/active"}, 400, "array"),
    ("json result not a resource", JSON_PATCH, [{"op": "remove", "path": "/resourceType"}], 422, "not valid"),
    ("json changes the id", JSON_PATCH, [{"op": "replace", "path": "/id", "value": "p2"}], 422, "id"),
    ("json result not indexable", JSON_PATCH, [{"op": "replace", "path": "/identifier", "value": "x"}], 422,
     "not valid"),
    ("fhirpath no such element", FHIR_JSON, fhirpath_patch(operation("replace", "Patient.nonsense", valueString="x")),
     422, "Operation 0"),
    ("fhirpath several matches", FHIR_JSON, fhirpath_patch(operation("add", "Patient", "gender", valueCode="male"),
                                                           operation("replace", "Patient.identifier.value",
                                                                     valueString="x")), 422, "Operation 1"),
    ("fhirpath replace nothing", FHIR_JSON, fhirpath_patch(operation("replace", "Patient.telecom",
                                                                     valueContactPoint={"value": "1"})),
     422, "Operation 0"),
    ("fhirpath insert out of range", FHIR_JSON, fhirpath_patch(operation("insert", "Patient.identifier", index=7,
                                                                         valueIdentifier={"value": "x"})),
     422, "Operation 0"),
    ("fhirpath unknown type", FHIR_JSON, fhirpath_patch(operation("upsert", "Patient.active")), 400, "Operation 0"),
    ("fhirpath missing value", FHIR_JSON, fhirpath_patch(operation("replace", "Patient.active")), 400, "Operation 0"),
    ("fhirpath path syntax", FHIR_JSON, fhirpath_patch(operation("delete", "Patient.name[")), 400, "Operation 0"),
    ("fhirpath not Parameters", FHIR_JSON, [{"op": "remove", "path": "/active"}], 400, "Parameters"),
]


@pytest.mark.parametrize(("name", "headers", "body", "status", "text"), FAILURES, ids=[c[0] for c in FAILURES])
async def test_failed_patch_changes_nothing(client, db, patient, name, headers, body, status, text):
    response = await client.patch(patient, json=body, headers=headers)
    assert response.status == status, await response.text()
    outcome = await response.json(content_type=None)
    assert outcome["resourceType"] == "OperationOutcome"
    assert text in outcome["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'p1'") == 1
    assert await db.fetchval("SELECT body FROM resource WHERE fhir_id = 'p1'") == \
        await (await client.get(patient)).read()


async def test_if_match_history_search_and_exact_numbers(client, db, patient):
    body = [{"op": "replace", "path": "/name/0/family", "value": "Jones"},
            {"op": "add", "path": "/extension/-", "value": {"url": "urn:height", "valueDecimal": 170.0}}]
    stale = await client.patch(patient, json=body, headers={**JSON_PATCH, "If-Match": 'W/"3"'})
    assert stale.status == 412
    response = await client.patch(patient, data=b'[{"op":"replace","path":"/name/0/family","value":"Jones"},'
                                  b'{"op":"add","path":"/extension/-","value":{"url":"urn:height","valueDecimal":170.0}}]',
                                  headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert response.status == 200
    stored = await db.fetchval("SELECT body FROM resource WHERE fhir_id = 'p1'")
    assert b'"valueDecimal":1.50' in stored and b'"valueDecimal":170.0' in stored
    history = await (await client.get(f"{patient}/_history")).json(content_type=None)
    assert [entry["resource"]["meta"]["versionId"] for entry in history["entry"]] == ["2", "1"]
    assert [entry["resource"]["name"][0]["family"] for entry in history["entry"]] == ["Jones", "Smith"]
    found = await (await client.get("/fhir/Patient?family=jones")).json(content_type=None)
    assert [entry["resource"]["id"] for entry in found["entry"]] == ["p1"]
    gone = await (await client.get("/fhir/Patient?family=smith")).json(content_type=None)
    assert gone.get("entry", []) == []


async def test_patch_of_unknown_and_deleted_resources(client, patient):
    body = [{"op": "replace", "path": "/active", "value": False}]
    assert (await client.patch("/fhir/Patient/nobody", json=body, headers=JSON_PATCH)).status == 404
    await client.delete(patient)
    assert (await client.patch(patient, json=body, headers=JSON_PATCH)).status == 410


async def test_prefer_minimal_and_json_patch_media_type_only_on_patch(client, patient):
    body = [{"op": "replace", "path": "/active", "value": False}]
    minimal = await client.patch(patient, json=body, headers={**JSON_PATCH, "Prefer": "return=minimal"})
    assert minimal.status == 200 and await minimal.read() == b""
    put = await client.put(patient, data=PATIENT, headers=JSON_PATCH)
    assert put.status == 415


async def test_conditional_patch(client, db, patient):
    body = fhirpath_patch(operation("replace", "Patient.active", valueBoolean=False))
    response = await client.patch("/fhir/Patient?identifier=urn:a|1", json=body, headers=FHIR_JSON)
    assert response.status == 200
    assert (await response.json(content_type=None))["active"] is False
    none = await client.patch("/fhir/Patient?identifier=urn:a|nobody", json=body, headers=FHIR_JSON)
    assert none.status == 404
    await client.put("/fhir/Patient/p2", data=PATIENT.replace(b'"p1"', b'"p2"'), headers=FHIR_JSON)
    several = await client.patch("/fhir/Patient?identifier=urn:a|1", json=body, headers=FHIR_JSON)
    assert several.status == 412
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'p1'") == 2
