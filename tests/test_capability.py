"""The CapabilityStatement tells the truth: its interactions and operations are the app's routes, its search
parameters are exactly those a search accepts (custom ones included, as they are added), and what it lists works."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from service.fhir.capability import StatementCache
from service.fhir.resource_types import RESOURCE_TYPES
from service.http.keys import CAPABILITY_STATEMENTS, CATALOG
from service.search.query import parse_search
from service.search.terms import SearchContext

# The interaction each route shape serves, written out here (the statement derives them on its own).
TYPE_ROUTES = {("GET", "/{type}/{id}"): "read", ("GET", "/{type}/{id}/_history/{vid}"): "vread",
               ("PUT", "/{type}/{id}"): "update", ("PATCH", "/{type}/{id}"): "patch",
               ("DELETE", "/{type}/{id}"): "delete", ("GET", "/{type}/{id}/_history"): "history-instance",
               ("GET", "/{type}/_history"): "history-type", ("POST", "/{type}"): "create",
               ("GET", "/{type}"): "search-type"}
SYSTEM_ROUTES = {("GET", ""): {"search-system"}, ("GET", "/_history"): {"history-system"},
                 ("POST", ""): {"transaction", "batch"}}
NOT_INTERACTIONS = {("POST", "/{type}/_search"), ("POST", "/_search"), ("GET", "/metadata"), ("PUT", "/{type}"),
                    ("DELETE", "/{type}"), ("PATCH", "/{type}"), ("POST", "/")}  # same interactions, other forms


def api_routes(app) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical[len("/fhir"):]) for route in app.router.routes()
            if route.method != "HEAD" and route.resource.canonical.startswith("/fhir")}


async def statement(client) -> dict[str, Any]:
    response = await client.get("/fhir/metadata")
    assert response.status == 200
    return await response.json(content_type=None)


async def test_interactions_and_operations_are_the_routes(client):
    routes, body = api_routes(client.app), await statement(client)
    rest = body["rest"][0]
    operations = {(method, path) for method, path in routes if "$" in path}
    expected_type = {TYPE_ROUTES[route] for route in routes if route in TYPE_ROUTES}
    expected_system = {code for route in routes if route in SYSTEM_ROUTES for code in SYSTEM_ROUTES[route]}
    assert routes - operations - set(TYPE_ROUTES) - set(SYSTEM_ROUTES) - NOT_INTERACTIONS == set(), "unmapped route"
    resources = {entry["type"]: entry for entry in rest["resource"]}
    assert set(resources) == RESOURCE_TYPES
    for entry in resources.values():
        assert {i["code"] for i in entry["interaction"]} == expected_type
    assert {i["code"] for i in rest["interaction"]} == expected_system
    listed = {op["name"] for op in rest.get("operation", [])} | {op["name"] for op in resources["Patient"]["operation"]}
    assert listed == {path.rsplit("$", 1)[1] for _, path in operations}
    assert {"reindex", "reindex-dryrun", "hapi.fhir.reindex-status"} <= listed
    assert rest["security"]["service"][0]["coding"][0]["code"] == "OAuth"
    assert "bearer" in rest["security"]["description"].lower()


async def test_every_listed_interaction_answers(client):
    """Each interaction listed for a type is served: none answers 404 or 405 for want of a route."""
    created = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Truth"})
    assert created.status == 201
    fhir_id = (await created.json())["id"]
    organization = {"resourceType": "Organization", "id": fhir_id, "name": "Truth 2"}
    requests = {"read": ("GET", f"/fhir/Organization/{fhir_id}", None),
                "vread": ("GET", f"/fhir/Organization/{fhir_id}/_history/1", None),
                "update": ("PUT", f"/fhir/Organization/{fhir_id}", organization),
                "patch": ("PATCH", f"/fhir/Organization/{fhir_id}", [{"op": "replace", "path": "/name", "value": "x"}]),
                "history-instance": ("GET", f"/fhir/Organization/{fhir_id}/_history", None),
                "history-type": ("GET", "/fhir/Organization/_history", None),
                "create": ("POST", "/fhir/Organization", {"resourceType": "Organization"}),
                "search-type": ("GET", "/fhir/Organization?name=truth", None),
                "delete": ("DELETE", f"/fhir/Organization/{fhir_id}", None)}
    body = await statement(client)
    listed = [i["code"] for i in body["rest"][0]["resource"][0]["interaction"]]
    assert set(listed) <= set(requests)
    for code in sorted(listed, key=lambda code: code == "delete"):  # delete last
        method, url, payload = requests[code]
        headers = {"Content-Type": "application/json-patch+json"} if code == "patch" else None
        response = await client.request(method, url, json=payload, headers=headers)
        assert response.status in (200, 201), (code, response.status, await response.text())
    for code in (i["code"] for i in body["rest"][0]["interaction"]):
        if code in ("search-system", "history-system"):
            response = await client.get("/fhir?_id=x" if code == "search-system" else "/fhir/_history")
            assert response.status == 200, code


async def test_search_parameters_are_exactly_those_a_search_accepts(client):
    body, registry = await statement(client), client.app[CATALOG].registry
    context = SearchContext(registry, "http://localhost/fhir", datetime.now(timezone.utc), False, 20, 100)
    for entry in body["rest"][0]["resource"]:
        res_type, listed = entry["type"], {p["name"] for p in entry["searchParam"]}
        accepted = {p.definition.code for p in registry.parameters(res_type) if p.definition.indexed}
        assert listed - {"_text", "_content"} == accepted, res_type
        for code in accepted:  # each one parses as a search of the type
            parse_search(res_type, [(f"{code}:missing", "true")], context)
        assert "_content" in listed and "_query" not in listed
    common = {p["name"] for p in body["rest"][0]["searchParam"]}
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= common
    for code in common:
        term = f"{code}=word" if code in ("_text", "_content") else f"{code}:missing=true"
        response = await client.get(f"/fhir?{term}&_summary=count")
        assert response.status == 200, (code, await response.text())
    assert (await client.get("/fhir/Organization?_query=x")).status == 400
    for code in ("_text", "_content"):
        assert (await client.get(f"/fhir/Organization?{code}=x")).status == 200


async def test_a_custom_search_parameter_is_listed_once_added(client):
    custom = {"resourceType": "SearchParameter", "url": "http://example.org/sp/org-alias-text", "name": "aliasText",
              "status": "active", "code": "alias-text", "base": ["Organization"], "type": "string",
              "expression": "Organization.alias", "description": "alias"}
    before = await statement(client)
    assert "alias-text" not in {p["name"] for p in _resource(before, "Organization")["searchParam"]}
    response = await client.post("/fhir/SearchParameter", json=custom)
    assert response.status == 201, await response.text()
    after = await statement(client)
    listed = {p["name"]: p for p in _resource(after, "Organization")["searchParam"]}
    assert listed["alias-text"]["definition"] == custom["url"]
    assert "alias-text" not in {p["name"] for p in _resource(after, "Location")["searchParam"]}


def _resource(body: dict[str, Any], res_type: str) -> dict[str, Any]:
    return next(entry for entry in body["rest"][0]["resource"] if entry["type"] == res_type)


async def test_each_base_url_gets_its_own_statement_and_a_few_are_kept(client):
    """Built once per base URL (and registry): a proxy's forwarded host is named in its own statement, and a
    client sending many hosts cannot make the service keep a statement for each."""
    hosts = [f"h{number}.example" for number in range(StatementCache.MAX_ENTRIES + 3)]
    for host in [*hosts, *hosts]:
        response = await client.get("/fhir/metadata", headers={"X-Forwarded-Host": host})
        body = await response.json(content_type=None)
        assert body["implementation"]["url"] == f"http://{host}/fhir"
    plain = await statement(client)
    assert plain["implementation"]["url"] == f"http://{client.server.host}:{client.server.port}/fhir"
    assert len(client.server.app[CAPABILITY_STATEMENTS]) == StatementCache.MAX_ENTRIES
