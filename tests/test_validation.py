"""A resource that is not valid R4 is refused with every problem named (one issue each, with its FHIRPath
expression), and nothing is written; `$validate` runs the same checks and stores nothing."""

from __future__ import annotations

import orjson
import pytest

from service.fhir.resource import MAX_DEPTH
from tests.test_errors import store_counts

FHIR_JSON = {"Content-Type": "application/fhir+json"}
OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}


def patient(**elements) -> bytes:
    return orjson.dumps({"resourceType": "Patient", **elements})


def observation(**elements) -> bytes:
    return orjson.dumps({**OBSERVATION, **elements})


def nested(levels: int) -> bytes:
    """A Patient whose JSON nests `levels` deep: extensions within extensions (two levels each)."""
    inner = b'{"url":"http://example.org/x","valueString":"x"}'
    for _ in range((levels - 3) // 2):
        inner = b'{"url":"http://example.org/x","extension":[' + inner + b"]}"
    body = b'{"resourceType":"Patient","extension":[' + inner + b"]}"
    return body if (levels - 3) % 2 == 0 else body.replace(b'"valueString":"x"', b'"valueCoding":{"code":"x"}')


REFUSED = [
    # (name, path, body, status, [(issue code, expression), ...]): every listed issue, and no other.
    ("boolean as string", "/fhir/Patient", patient(active="yes"), 400, [("value", "Patient.active")]),
    ("name a number", "/fhir/Patient", patient(name=123), 400, [("structure", "Patient.name")]),
    ("date a number", "/fhir/Patient", patient(birthDate=2020), 400, [("value", "Patient.birthDate")]),
    ("single value as array", "/fhir/Patient", patient(gender=["male"]), 400, [("structure", "Patient.gender")]),
    ("quantity value a string", "/fhir/Observation", observation(valueQuantity={"value": "abc"}), 400,
     [("value", "Observation.value.ofType(Quantity).value")]),
    ("unknown element", "/fhir/Patient", patient(nickname="Bob"), 400, [("structure", "Patient.nickname")]),
    ("invalid date", "/fhir/Patient", patient(birthDate="2020-13-45"), 400, [("value", "Patient.birthDate")]),
    ("no such day", "/fhir/Patient", patient(birthDate="2021-02-29"), 400, [("value", "Patient.birthDate")]),
    ("dateTime without zone", "/fhir/Patient", patient(deceasedDateTime="2020-01-01T10:00:00"), 400,
     [("value", "Patient.deceased.ofType(dateTime)")]),
    ("identifier.system a number", "/fhir/Patient", patient(identifier=[{"system": 1, "value": "x"}]), 400,
     [("value", "Patient.identifier[0].system")]),
    ("code.text a number", "/fhir/Observation", observation(code={"text": 5}), 400,
     [("value", "Observation.code.text")]),
    ("coding.code a number", "/fhir/Observation", observation(code={"coding": [{"code": 5}]}), 400,
     [("value", "Observation.code.coding[0].code")]),
    ("identifier.value an object", "/fhir/Patient", patient(identifier=[{"value": {}}]), 400,
     [("value", "Patient.identifier[0].value")]),
    ("meta.tag.code an array", "/fhir/Patient", patient(meta={"tag": [{"code": []}]}), 400,
     [("structure", "Patient.meta.tag[0].code")]),
    ("string where an object belongs", "/fhir/Patient", patient(name=["Bob"]), 400, [("structure", "Patient.name[0]")]),
    ("NUL in a string", "/fhir/Patient", patient(name=[{"family": "a\u0000b"}]), 400,
     [("value", "Patient.name[0].family")]),
    ("control character", "/fhir/Patient", patient(name=[{"given": ["a", "b\u001bc"]}]), 400,
     [("value", "Patient.name[0].given[1]")]),
    ("empty string", "/fhir/Patient", patient(gender=""), 400, [("value", "Patient.gender")]),
    ("empty array", "/fhir/Patient", patient(name=[]), 400, [("structure", "Patient.name")]),
    ("empty object", "/fhir/Patient", patient(maritalStatus={}), 400, [("structure", "Patient.maritalStatus")]),
    ("null", "/fhir/Patient", patient(active=None), 400, [("value", "Patient.active")]),
    ("decimal in an integer", "/fhir/Patient", patient(multipleBirthInteger=1.5), 400,
     [("value", "Patient.multipleBirth.ofType(integer)")]),
    ("boolean in an integer", "/fhir/Patient", patient(multipleBirthInteger=True), 400,
     [("value", "Patient.multipleBirth.ofType(integer)")]),
    ("integer beyond 32 bits", "/fhir/Patient", patient(multipleBirthInteger=2**31), 400,
     [("value", "Patient.multipleBirth.ofType(integer)")]),
    ("boolean in a decimal", "/fhir/Observation", observation(valueQuantity={"value": True}), 400,
     [("value", "Observation.value.ofType(Quantity).value")]),
    ("positiveInt zero", "/fhir/Account", orjson.dumps({"resourceType": "Account", "status": "active", "coverage": [
        {"coverage": {"reference": "Coverage/1"}, "priority": 0}]}), 400, [("value", "Account.coverage[0].priority")]),
    ("two types of a choice", "/fhir/Patient", patient(deceasedBoolean=True, deceasedDateTime="2020"), 400,
     [("structure", "Patient.deceased")]),
    ("required element missing", "/fhir/Observation", orjson.dumps({"resourceType": "Observation", "code": {}}), 400,
     [("structure", "Observation.code"), ("required", "Observation.status")]),
    ("required in a backbone", "/fhir/Patient", patient(link=[{"type": "seealso"}]), 400,
     [("required", "Patient.link[0].other")]),
    ("extension without url", "/fhir/Patient", patient(extension=[{"valueString": "x"}]), 400,
     [("required", "Patient.extension[0].url")]),
    ("invalid primitive extension", "/fhir/Patient", patient(birthDate="2020", _birthDate={"extension": "x"}), 400,
     [("structure", "Patient.birthDate.extension")]),
    ("primitive arrays of unequal length", "/fhir/Patient",
     patient(name=[{"given": ["a", "b"], "_given": [{"id": "g"}]}]), 400, [("structure", "Patient.name[0].given")]),
    ("uri with a space", "/fhir/Patient", patient(implicitRules="http://a b"), 400, [("value", "Patient.implicitRules")]),
    ("code with two spaces", "/fhir/Patient", patient(language="en  US"), 400, [("value", "Patient.language")]),
    ("invalid id in the body", "/fhir/Patient", patient(id="not an id"), 400, [("value", "Patient.id")]),
    ("invalid instant", "/fhir/Patient", patient(meta={"lastUpdated": "2020-01-01"}), 400,
     [("value", "Patient.meta.lastUpdated")]),
    ("invalid base64", "/fhir/Patient", patient(photo=[{"data": "abc"}]), 400, [("value", "Patient.photo[0].data")]),
    ("invalid time", "/fhir/Observation", observation(valueTime="25:00:00"), 400,
     [("value", "Observation.value.ofType(time)")]),
    ("contained of no type", "/fhir/Patient", patient(contained=[{"resourceType": "Nonsense", "id": "c"}]), 400,
     [("structure", "Patient.contained[0]")]),
    ("invalid contained resource", "/fhir/Patient",
     patient(contained=[{"resourceType": "Organization", "id": "o", "active": "yes"}]), 400,
     [("value", "Patient.contained[0].active")]),
    ("invalid Bundle entry", "/fhir/Bundle", orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "active": 1}}]}), 400, [("value", "Bundle.entry[0].resource.active")]),
    ("invalid Parameters resource", "/fhir/Parameters", orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "p", "resource": {"resourceType": "Patient", "gender": 1}}]}), 400,
     [("value", "Parameters.parameter[0].resource.gender")]),
    ("every problem listed", "/fhir/Patient", patient(active="yes", birthDate="2020-13-45", gender=["x"], x=1), 400,
     [("value", "Patient.active"), ("value", "Patient.birthDate"), ("structure", "Patient.gender"),
      ("structure", "Patient.x")]),
    ("nested 250 levels", "/fhir/Patient", b'{"resourceType":"Patient","x":' + b"[" * 250 + b"]" * 250 + b"}", 400,
     [("structure", None)]),
    ("nested one level too deep", "/fhir/Patient", nested(MAX_DEPTH + 1), 400, [("structure", None)]),
]


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(("name", "path", "body", "status", "issues"), REFUSED, ids=[case[0] for case in REFUSED])
async def test_invalid_resource_is_refused_with_every_problem_and_changes_nothing(client, db, method, name, path, body,
                                                                                  status, issues):
    await client.put("/fhir/Patient/p", data=patient(id="p"), headers=FHIR_JSON)
    before = await store_counts(db)
    if method == "PUT":  # the same body as an update of a resource that exists (its id added)
        fhir_id = "p" if path == "/fhir/Patient" else "x"
        resource = orjson.loads(body) if len(body) < 10_000 and b"[[" not in body else None
        if resource is not None and "id" not in resource:
            body = orjson.dumps({"id": fhir_id, **resource})
        path = f"{path}/{fhir_id}"
    response = await client.request(method, path, data=body, headers=FHIR_JSON)
    assert response.status == status, await response.text()
    outcome = await response.json(content_type=None)
    assert outcome["resourceType"] == "OperationOutcome"
    found = [(issue["code"], (issue.get("expression") or [None])[0]) for issue in outcome["issue"]]
    assert found == issues
    assert all(issue["severity"] == "error" and issue["diagnostics"] for issue in outcome["issue"])
    assert await store_counts(db) == before


async def test_nesting_up_to_the_limit_is_accepted(client):
    response = await client.post("/fhir/Patient", data=nested(MAX_DEPTH), headers=FHIR_JSON)
    assert response.status == 201, await response.text()
    too_deep = await client.post("/fhir/Patient", data=nested(MAX_DEPTH + 1), headers=FHIR_JSON)
    assert f"more than {MAX_DEPTH} levels deep" in (await too_deep.json(content_type=None))["issue"][0]["diagnostics"]


@pytest.mark.parametrize("body", [
    patient(name=[{"given": ["Ann", None], "_given": [None, {"extension": [
        {"url": "http://example.org/x", "valueString": "y"}]}]}]),
    patient(birthDate="2020-02-29", _birthDate={"id": "b"}, multipleBirthInteger=-2**31),
    patient(name=[{"text": "tab\tCR\rLF\n and ünïcödé \u00a0 \u2028"}]),
    observation(valueQuantity={"value": 1}, component=[{"code": {"text": "c"}, "valueQuantity": {"value": 1e-7}}]),
    observation(effectiveDateTime="2020-01-01T10:00:00.123+14:00", issued="2020-01-01T23:59:60Z"),
    patient(photo=[{"data": "aGVs bG8g d29y bGQ="}], contained=[{"resourceType": "Organization", "id": "o"}]),
], ids=["primitive extensions", "edges", "whitespace and unicode", "numbers", "times", "base64 and contained"])
async def test_valid_resources_are_accepted(client, body):
    response = await client.post(f"/fhir/{orjson.loads(body)['resourceType']}", data=body, headers=FHIR_JSON)
    assert response.status == 201, await response.text()


async def validate(client, path: str, body: bytes) -> list[tuple[str, str, str | None]]:
    response = await client.post(path, data=body, headers=FHIR_JSON)
    assert response.status == 200, await response.text()
    outcome = await response.json(content_type=None)
    return [(i["severity"], i["code"], (i.get("expression") or [None])[0]) for i in outcome["issue"]]


def parameters(*parameter: dict) -> bytes:
    return orjson.dumps({"resourceType": "Parameters", "parameter": list(parameter)})


async def test_validate_answers_200_with_the_problems_and_stores_nothing(client, db):
    all_ok = [("information", "informational", None)]
    assert await validate(client, "/fhir/Patient/$validate", patient(name=[{"family": "Ng"}])) == all_ok
    assert await validate(client, "/fhir/Patient/$validate", patient(active="yes", x=1)) == [
        ("error", "value", "Patient.active"), ("error", "structure", "Patient.x")]
    assert await validate(client, "/fhir/Patient/$validate", observation()) == [("error", "invalid", None)]
    wrapped = parameters({"name": "resource", "resource": orjson.loads(patient(birthDate="2020-02-30"))})
    assert await validate(client, "/fhir/Patient/$validate", wrapped) == [("error", "value", "Patient.birthDate")]
    update = parameters({"name": "resource", "resource": orjson.loads(patient())},
                        {"name": "mode", "valueCode": "update"})
    assert await validate(client, "/fhir/Patient/$validate", update) == [("error", "required", "Patient.id")]
    # Parameters is validated as itself: its parameter needs a name.
    assert await validate(client, "/fhir/Parameters/$validate", parameters({"valueString": "x"})) == [
        ("error", "required", "Parameters.parameter[0].name")]
    assert await store_counts(db) == (0, 0)


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/fhir/Patient/$validate", parameters({"name": "resource", "resource": {"resourceType": "Patient"}},
                                           {"name": "profile", "valueUri": "http://example.org/p"}), 400, "not-supported"),
    ("/fhir/Patient/$validate", parameters({"name": "resources", "resource": {"resourceType": "Patient"}}), 400, "invalid"),
    ("/fhir/Patient/$validate", parameters({"name": "mode", "valueCode": "create"}), 400, "invalid"),
    ("/fhir/Patient/$validate", parameters({"name": "resource", "resource": {"resourceType": "Patient"}},
                                           {"name": "mode", "valueCode": "delete"}), 400, "invalid"),
    ("/fhir/Patient/$validate", b'{"resourceType":"Patient",', 400, "invalid"),
    ("/fhir/Nonsense/$validate", patient(), 404, "not-found"),
], ids=["profile", "unknown parameter", "no resource", "mode delete", "not JSON", "unknown type"])
async def test_validate_refuses_what_it_cannot_run(client, db, path, body, status, code):
    response = await client.post(path, data=body, headers=FHIR_JSON)
    assert response.status == status
    assert (await response.json(content_type=None))["issue"][0]["code"] == code
    assert await store_counts(db) == (0, 0)


@pytest.mark.dataset("plannet")
async def test_stored_resources_are_valid_as_served_and_update_unchanged(client, db):
    """A body as the server serves it (its id and meta added) passes the checks it passed when written."""
    rows = await db.fetch("SELECT DISTINCT ON (res_type) res_type, fhir_id, body FROM resource ORDER BY res_type, res_id")
    assert len(rows) == 8
    for row in rows:
        assert await validate(client, f"/fhir/{row['res_type']}/$validate", row["body"]) == [
            ("information", "informational", None)]
        response = await client.put(f"/fhir/{row['res_type']}/{row['fhir_id']}", data=row["body"], headers=FHIR_JSON)
        assert response.status == 200, await response.text()
