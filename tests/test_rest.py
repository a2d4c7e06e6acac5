"""REST interactions through the real app: create, read, vread, update, delete, Prefer, If-Match."""

from __future__ import annotations

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def create_org(client, name="Acme", **extra):
    response = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": name, **extra},
                                 headers=FHIR_JSON)
    assert response.status == 201, await response.text()
    return await response.json(content_type=None), response


async def test_create_then_read_round_trips(client):
    created, response = await create_org(client, identifier=[{"system": "urn:x", "value": "1"}])
    fhir_id = created["id"]
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Organization/{fhir_id}/_history/1")
    assert created["meta"]["versionId"] == "1"
    read = await client.get(f"/fhir/Organization/{fhir_id}")
    assert read.status == 200
    assert read.headers["Content-Type"] == "application/fhir+json;charset=UTF-8"
    body = await read.json(content_type=None)
    assert body == created
    assert body["identifier"] == [{"system": "urn:x", "value": "1"}]


async def test_create_ignores_client_id_and_meta_version(client):
    created, _ = await create_org(client, id="mine", meta={"versionId": "7", "profile": ["http://p"]})
    assert created["id"] != "mine"
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["profile"] == ["http://p"]


async def test_update_creates_with_client_id_then_versions(client, db):
    org = {"resourceType": "Organization", "id": "org-1", "name": "One"}
    first = await client.put("/fhir/Organization/org-1", json=org, headers=FHIR_JSON)
    assert first.status == 201
    assert first.headers["Location"].endswith("/fhir/Organization/org-1/_history/1")
    second = await client.put("/fhir/Organization/org-1", json={**org, "name": "Two"}, headers=FHIR_JSON)
    assert second.status == 200
    assert second.headers["ETag"] == 'W/"2"'
    assert (await second.json(content_type=None))["name"] == "Two"
    old = await client.get("/fhir/Organization/org-1/_history/1")
    assert (await old.json(content_type=None))["name"] == "One"
    assert await db.fetchval("SELECT count(*) FROM resource_version WHERE fhir_id = 'org-1'") == 2


async def test_if_match_mismatch_is_412_and_changes_nothing(client, db):
    created, _ = await create_org(client)
    url = f"/fhir/Organization/{created['id']}"
    response = await client.put(url, json={**created, "name": "Changed"}, headers={**FHIR_JSON, "If-Match": 'W/"3"'})
    assert response.status == 412
    outcome = await response.json(content_type=None)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "conflict"
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = $1", created["id"]) == 1
    ok = await client.put(url, json={**created, "name": "Changed"}, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status == 200


async def test_delete_is_soft_and_read_is_gone(client, db):
    created, _ = await create_org(client)
    url = f"/fhir/Organization/{created['id']}"
    deleted = await client.delete(url)
    assert deleted.status == 200
    assert (await deleted.json(content_type=None))["resourceType"] == "OperationOutcome"
    gone = await client.get(url)
    assert gone.status == 410
    assert (await gone.json(content_type=None))["issue"][0]["code"] == "deleted"
    again = await client.delete(url)
    assert again.status == 200
    assert await db.fetchval("SELECT count(*) FROM resource_version WHERE fhir_id = $1", created["id"]) == 2
    assert (await client.get(f"{url}/_history/1")).status == 200
    assert (await client.get(f"{url}/_history/2")).status == 410
    revived = await client.put(url, json=created, headers=FHIR_JSON)
    assert revived.status == 201
    assert revived.headers["ETag"] == 'W/"3"'


async def test_prefer_return(client):
    minimal = await client.post("/fhir/Organization", json={"resourceType": "Organization"},
                                headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert minimal.status == 201
    assert await minimal.read() == b""
    assert "Location" in minimal.headers
    outcome = await client.post("/fhir/Organization", json={"resourceType": "Organization"},
                                headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    body = await outcome.json(content_type=None)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"


async def test_forwarded_headers_shape_location(client):
    response = await client.post(
        "/fhir/Organization", json={"resourceType": "Organization"},
        headers={**FHIR_JSON, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "org.example.local",
                 "X-Forwarded-Prefix": "/gateway"})
    assert response.headers["Location"].startswith("https://org.example.local/gateway/fhir/Organization/")


async def test_unknown_id_is_404(client):
    response = await client.get("/fhir/Organization/does-not-exist")
    assert response.status == 404
    assert (await response.json(content_type=None))["issue"][0]["code"] == "not-found"
