"""Every refused request answers with an OperationOutcome and the right status, and writes nothing."""

from __future__ import annotations

import asyncpg
import pytest

from service.app import create_app

FHIR_JSON = "application/fhir+json"
ORG = b'{"resourceType":"Organization","id":"org-1","name":"Acme"}'


async def store_counts(db) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM resource"),
            await db.fetchval("SELECT count(*) FROM resource_version"))


async def assert_outcome(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    body = await response.json(content_type=None)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["diagnostics"]
    assert "<h1>Operation Outcome</h1>" in body["text"]["div"]
    return body


REFUSED = [
    # (name, method, path, body, headers, status, code)
    ("malformed json", "POST", "/fhir/Organization", b'{"resourceType": "Organization",', {}, 400, "invalid"),
    ("empty body", "POST", "/fhir/Organization", b"", {}, 400, "invalid"),
    ("json array", "POST", "/fhir/Organization", b'[{"resourceType": "Organization"}]', {}, 400, "invalid"),
    ("json string", "PUT", "/fhir/Organization/org-1", b'"Organization"', {}, 400, "invalid"),
    ("no resourceType", "POST", "/fhir/Organization", b'{"name": "Acme"}', {}, 400, "invalid"),
    ("type mismatch", "POST", "/fhir/Organization", b'{"resourceType": "Patient"}', {}, 400, "invalid"),
    ("not indexable", "POST", "/fhir/Organization", b'{"resourceType": "Organization", "identifier": "x"}', {}, 400, "structure"),
    ("not indexable update", "PUT", "/fhir/Organization/org-1", b'{"resourceType":"Organization","id":"org-1","identifier":[1]}', {}, 400, "structure"),
    ("put type mismatch", "PUT", "/fhir/Organization/org-1", b'{"resourceType":"Patient","id":"org-1"}', {}, 400, "invalid"),
    ("unknown type create", "POST", "/fhir/Organisation", ORG, {}, 404, "not-found"),
    ("unknown type read", "GET", "/fhir/Organisation/org-1", None, {}, 404, "not-found"),
    ("unknown type update", "PUT", "/fhir/Foo/org-1", ORG, {}, 404, "not-found"),
    ("put id mismatch", "PUT", "/fhir/Organization/other", ORG, {}, 400, "invalid"),
    ("put without id", "PUT", "/fhir/Organization/org-1", b'{"resourceType":"Organization"}', {}, 400, "invalid"),
    ("invalid id put", "PUT", "/fhir/Organization/bad_id!", b'{"resourceType":"Organization","id":"bad_id!"}', {}, 400, "invalid"),
    ("invalid id read", "GET", "/fhir/Organization/" + "x" * 65, None, {}, 400, "invalid"),
    ("invalid version id", "GET", "/fhir/Organization/org-1/_history/first", None, {}, 400, "invalid"),
    ("text/plain body", "POST", "/fhir/Organization", ORG, {"Content-Type": "text/plain"}, 415, "not-supported"),
    ("xml body", "PUT", "/fhir/Organization/org-1", b"<Organization/>", {"Content-Type": "application/fhir+xml"}, 415, "not-supported"),
    ("form body", "POST", "/fhir/Organization", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "not-supported"),
    ("accept xml", "GET", "/fhir/Organization/org-1", None, {"Accept": "application/fhir+xml"}, 406, "not-supported"),
    ("accept html only", "POST", "/fhir/Organization", ORG, {"Accept": "text/html"}, 406, "not-supported"),
    ("format xml", "GET", "/fhir/metadata?_format=xml", None, {}, 406, "not-supported"),
    ("method not allowed", "POST", "/fhir/Organization/org-1", ORG, {}, 405, "not-supported"),
    ("delete on type without criteria", "DELETE", "/fhir/Organization", None, {}, 400, "invalid"),
    ("conditional update, unknown parameter", "PUT", "/fhir/Organization?nonsense=1", ORG, {}, 400, "invalid"),
    ("conditional create, bad criteria", "POST", "/fhir/Organization", ORG, {"If-None-Exist": "_lastUpdated=soon"}, 400, "invalid"),
    ("unknown path", "GET", "/fhir/Organization/org-1/_nonsense", None, {}, 404, "not-found"),
    ("bad If-Match", "PUT", "/fhir/Organization/org-1", ORG, {"If-Match": "W/\"one\""}, 400, "invalid"),
    ("If-Match on absent", "PUT", "/fhir/Organization/org-1", ORG, {"If-Match": "W/\"1\""}, 412, "conflict"),
    ("bad _count", "GET", "/fhir/Organization/_history?_count=ten", None, {}, 400, "invalid"),
    ("bad _since", "GET", "/fhir/_history?_since=yesterday", None, {}, 400, "invalid"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "status", "code"), REFUSED,
                         ids=[case[0] for case in REFUSED])
async def test_refused_request_changes_nothing(client, db, name, method, path, body, headers, status, code):
    before = await store_counts(db)
    sent_headers = {"Content-Type": FHIR_JSON, **headers} if body is not None else headers
    response = await client.request(method, path, data=body, headers=sent_headers)
    await assert_outcome(response, status, code)
    assert await store_counts(db) == before


async def test_existing_resource_unchanged_by_refused_update(client, db):
    created = await client.put("/fhir/Organization/org-1", data=ORG, headers={"Content-Type": FHIR_JSON})
    assert created.status == 201
    before = await store_counts(db)
    for body, headers in [
        (b'{"resourceType":"Organization","id":"org-1","name":', {}),
        (ORG, {"If-Match": 'W/"7"'}),
        (b'{"resourceType":"Organization","id":"org-2"}', {}),
    ]:
        response = await client.put("/fhir/Organization/org-1", data=body, headers={"Content-Type": FHIR_JSON, **headers})
        assert response.status in (400, 412)
    assert await store_counts(db) == before
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'org-1'") == 1


async def test_body_over_limit_is_413(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"max_body_bytes": 2048})))
    big = b'{"resourceType":"Organization","name":"' + b"x" * 4096 + b'"}'
    response = await client.post("/fhir/Organization", data=big, headers={"Content-Type": FHIR_JSON})
    await assert_outcome(response, 413, "too-costly")
    assert await store_counts(db) == (0, 0)


async def test_chunked_body_over_limit_is_413(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"max_body_bytes": 2048})))

    async def chunks():
        yield b'{"resourceType":"Organization","name":"'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post("/fhir/Organization", data=chunks(), headers={"Content-Type": FHIR_JSON})
    await assert_outcome(response, 413, "too-costly")
    assert await store_counts(db) == (0, 0)


async def test_row_locked_by_another_transaction_is_409(aiohttp_client, settings, database_url, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"lock_timeout_ms": 100})))
    assert (await client.put("/fhir/Organization/org-1", data=ORG, headers={"Content-Type": FHIR_JSON})).status == 201
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM resource WHERE fhir_id = 'org-1' FOR UPDATE")
            response = await client.put("/fhir/Organization/org-1", data=ORG, headers={"Content-Type": FHIR_JSON})
            await assert_outcome(response, 409, "conflict")
            deleted = await client.delete("/fhir/Organization/org-1")
            await assert_outcome(deleted, 409, "conflict")
    finally:
        await holder.close()
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'org-1'") == 1


async def test_unexpected_error_is_500_without_internals_and_rolls_back(client, db):
    # Break the schema under the running app: the version insert fails after the resource insert.
    await db.execute("ALTER TABLE resource_version RENAME TO resource_version_gone")
    response = await client.post("/fhir/Organization", data=ORG, headers={"Content-Type": FHIR_JSON,
                                                                          "X-Request-Id": "req-500"})
    body = await assert_outcome(response, 500, "exception")
    diagnostics = body["issue"][0]["diagnostics"]
    assert "req-500" in diagnostics
    assert "Traceback" not in diagnostics and "resource_version" not in diagnostics
    assert await db.fetchval("SELECT count(*) FROM resource") == 0
