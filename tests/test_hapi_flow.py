"""The requests a HAPI FHIR client makes, replayed as plain HTTP against the real app, each answered with the
status, headers and body shape HAPI FHIR 8.6.5 gives; and fhirpy's `save(fields=...)`."""

from __future__ import annotations

import re
from typing import Any

from fhirpy import AsyncFHIRClient

from tests.tokens import admin_claims, hs256

FHIR_JSON = "application/fhir+json;charset=UTF-8"
SYSTEM = "urn:test:ehealth"
ORG = {"resourceType": "Organization", "name": "Clinic", "identifier": [{"system": SYSTEM, "value": "c1"}]}


def transaction() -> dict[str, Any]:
    location = {"resourceType": "Location", "name": "Ward", "managingOrganization": {"reference": "urn:uuid:org"}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:org", "resource": ORG, "request": {"method": "POST", "url": "Organization"}},
        {"fullUrl": "urn:uuid:loc", "resource": location, "request": {"method": "POST", "url": "Location"}},
    ]}


async def call(client: Any, method: str, url: str, status: int, body: Any = None,
               **headers: str) -> tuple[Any, Any]:
    """One request, as HAPI's client sends it; asserts the status and HAPI's Content-Type on any body."""
    sent = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", **headers}
    response = await client.request(method, url, json=body, headers=sent)
    text = await response.text()
    assert response.status == status, text
    if text:
        assert response.headers["Content-Type"] == FHIR_JSON
    return response.headers, (await response.json(content_type=None) if text else None)


def versioned(base: str, name: str, version: int) -> str:
    return f"{base}/{name}/_history/{version}"


async def test_hapi_client_flow(client):
    base = str(client.make_url("/fhir"))
    org, loc = await _transaction(client)
    await _conditional_create(client, base, org)
    await _search_with_include(client, base, org, loc)
    await _patches(client, base, org)
    await _read_and_history(client, base, org)


async def _transaction(client: Any) -> tuple[str, str]:
    """A transaction creating an Organization and a Location referring to it by urn:uuid."""
    _, reply = await call(client, "POST", "/fhir", 200, transaction())
    assert reply["type"] == "transaction-response"
    assert [item["response"]["status"] for item in reply["entry"]] == ["201 Created"] * 2
    org_at, loc_at = (item["response"]["location"] for item in reply["entry"])
    assert re.fullmatch(r"Organization/[^/]+/_history/1", org_at)
    assert re.fullmatch(r"Location/[^/]+/_history/1", loc_at)
    return org_at.rsplit("/", 2)[0], loc_at.rsplit("/", 2)[0]


async def _conditional_create(client: Any, base: str, org: str) -> None:
    """The same Organization created with If-None-Exist: 200, the existing one, nothing written."""
    headers, body = await call(client, "POST", "/fhir/Organization", 200, ORG,
                               **{"If-None-Exist": f"identifier={SYSTEM}|c1"})
    assert headers["Location"] == headers["Content-Location"] == versioned(base, org, 1)
    assert headers["ETag"] == 'W/"1"' and "Last-Modified" in headers
    assert f"Organization/{body['id']}" == org and body["meta"]["versionId"] == "1"
    _, count = await call(client, "GET", f"/fhir/Organization?identifier={SYSTEM}|c1&_summary=count", 200)
    assert count["total"] == 1


async def _search_with_include(client: Any, base: str, org: str, loc: str) -> None:
    """The Location matches and its Organization is included; a search has no Content-Location or ETag."""
    headers, found = await call(client, "GET", "/fhir/Location?name=Ward&_include=Location:organization", 200)
    assert "Content-Location" not in headers and "ETag" not in headers
    assert found["type"] == "searchset" and found["total"] == 1
    modes = {item["fullUrl"].removeprefix(base + "/"): item["search"]["mode"] for item in found["entry"]}
    assert modes == {loc: "match", org: "include"}
    assert found["entry"][0]["resource"]["managingOrganization"] == {"reference": org}


async def _patches(client: Any, base: str, org: str) -> None:
    """JSON Patch then FHIRPath Patch; HAPI sends Content-Location, and no Location since it is no POST."""
    json_patch = [{"op": "replace", "path": "/name", "value": "Clinic North"}]
    headers, body = await call(client, "PATCH", f"/fhir/{org}", 200, json_patch,
                               **{"Content-Type": "application/json-patch+json"})
    assert headers["ETag"] == 'W/"2"' and headers["Content-Location"] == versioned(base, org, 2)
    assert "Location" not in headers and body["name"] == "Clinic North" and body["meta"]["versionId"] == "2"
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Organization"},
        {"name": "name", "valueString": "alias"}, {"name": "value", "valueString": "North"}]}]}
    headers, body = await call(client, "PATCH", f"/fhir/{org}", 200, fhirpath_patch)
    assert headers["ETag"] == 'W/"3"' and body["alias"] == ["North"] and body["name"] == "Clinic North"


async def _read_and_history(client: Any, base: str, org: str) -> None:
    """A read is 304 with If-None-Match on the current version; history lists every version, newest first."""
    response = await client.get(f"/fhir/{org}", headers={"If-None-Match": 'W/"3"'})
    assert response.status == 304 and response.headers["ETag"] == 'W/"3"' and await response.read() == b""
    headers, body = await call(client, "GET", f"/fhir/{org}", 200, **{"If-None-Match": 'W/"2"'})
    assert headers["ETag"] == 'W/"3"' and headers["Content-Location"] == versioned(base, org, 3)
    assert body["meta"]["versionId"] == "3" and "Last-Modified" in headers
    _, history = await call(client, "GET", f"/fhir/{org}/_history", 200)
    assert history["type"] == "history" and history["total"] == 3
    assert [item["resource"]["meta"]["versionId"] for item in history["entry"]] == ["3", "2", "1"]
    assert [item["request"]["method"] for item in history["entry"]] == ["PUT", "PUT", "POST"]
    assert {item["fullUrl"] for item in history["entry"]} == {f"{base}/{org}"}


async def test_fhirpy_save_fields_patches_only_those(client):
    fhir = AsyncFHIRClient(str(client.make_url("/fhir")), authorization=f"Bearer {hs256(admin_claims())}")
    org = fhir.resource("Organization", name="Clinic", alias=["Old"], identifier=ORG["identifier"])
    await org.save()
    org["name"] = "Clinic South"
    org["alias"] = ["Left alone"]
    await org.save(fields=["name"])
    stored = await fhir.reference("Organization", org["id"]).to_resource()
    assert stored["name"] == "Clinic South" and stored["alias"] == ["Old"]
    assert stored["meta"]["versionId"] == "2" and stored["identifier"] == ORG["identifier"]
    await org.patch(alias=None, active=True)
    stored = await fhir.reference("Organization", org["id"]).to_resource()
    assert "alias" not in stored and stored["active"] is True and stored["meta"]["versionId"] == "3"
