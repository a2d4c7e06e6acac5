"""Behaviour every response shares: security headers, request ids, negotiation, gzip, _pretty."""

from __future__ import annotations

import gzip

import orjson
import pytest

from service.http.middlewares import COMMON_HEADERS

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/Organization/missing", "/livez", "/readyz", "/metrics",
                                  "/nowhere"])
async def test_common_headers_on_every_response(client, path):
    response = await client.get(path)
    for name, value in COMMON_HEADERS.items():
        assert response.headers[name] == value
    assert "FHIR 4.0.1/R4" in response.headers["X-Powered-By"]


async def test_request_id_is_echoed_or_created(client):
    echoed = await client.get("/fhir/metadata", headers={"X-Request-Id": "a805ac6b-b507"})
    assert echoed.headers["X-Request-Id"] == "a805ac6b-b507"
    made = await client.get("/fhir/metadata")
    other = await client.get("/fhir/metadata")
    assert len(made.headers["X-Request-Id"]) == 36
    assert made.headers["X-Request-Id"] != other.headers["X-Request-Id"]


@pytest.mark.parametrize(("accept", "expected"), [
    ("application/fhir+json;q=1.0, application/json+fhir;q=0.9", "application/fhir+json"),
    ("application/json+fhir", "application/json+fhir"),
    ("application/json", "application/json"),
    ("application/fhir+xml;q=0.9, application/json;q=0.5", "application/json"),
    ("text/html, */*;q=0.1", "application/fhir+json"),
    ("application/json;q=0.2, application/fhir+json;q=0.8", "application/fhir+json"),
    ("application/fhir+json;q=0, application/json", "application/json"),
    (None, "application/fhir+json"),
])
async def test_accept_negotiation(client, accept, expected):
    headers = {"Accept": accept} if accept else {}
    response = await client.get("/fhir/metadata", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == f"{expected};charset=UTF-8"


@pytest.mark.parametrize(("fmt", "expected"), [("json", "application/fhir+json"),
                                               ("application/json", "application/json"),
                                               ("application/fhir+json", "application/fhir+json")])
async def test_format_parameter_overrides_accept(client, fmt, expected):
    response = await client.get(f"/fhir/metadata?_format={fmt}", headers={"Accept": "application/fhir+xml"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(expected)


@pytest.mark.parametrize("content_type", ["application/fhir+json; charset=UTF-8", "application/json+fhir",
                                          "application/json"])
async def test_json_request_media_types_accepted(client, content_type):
    response = await client.post("/fhir/Organization", data=b'{"resourceType":"Organization"}',
                                 headers={"Content-Type": content_type})
    assert response.status == 201


async def test_gzip_when_asked(client):
    response = await client.get("/fhir/metadata", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    body = orjson.loads(gzip.decompress(await response.read()))
    assert body["resourceType"] == "CapabilityStatement"
    plain = await client.get("/fhir/metadata", headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    assert "Content-Encoding" not in plain.headers


async def test_pretty(client):
    created = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "A"},
                                headers=FHIR_JSON)
    fhir_id = (await created.json(content_type=None))["id"]
    compact = await (await client.get(f"/fhir/Organization/{fhir_id}")).read()
    pretty = await (await client.get(f"/fhir/Organization/{fhir_id}?_pretty=true")).read()
    assert b"\n" not in compact
    assert pretty.startswith(b'{\n  "resourceType": "Organization"')
    assert orjson.loads(pretty) == orjson.loads(compact)


async def test_capability_statement(client):
    response = await client.get("/fhir/metadata")
    body = await response.json(content_type=None)
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    types = {resource["type"]: resource for resource in body["rest"][0]["resource"]}
    assert len(types) == 146
    codes = {interaction["code"] for interaction in types["Organization"]["interaction"]}
    assert {"read", "vread", "update", "delete", "create", "history-instance", "history-type"} <= codes
    organization = types["Organization"]
    assert (organization["conditionalCreate"], organization["conditionalUpdate"]) == (True, True)
    assert (organization["conditionalRead"], organization["conditionalDelete"]) == ("full-support", "single")
