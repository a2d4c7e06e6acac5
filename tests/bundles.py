"""Helpers of the batch and transaction tests: entries, posting a Bundle, and counting what was stored."""

from __future__ import annotations

from typing import Any

import orjson

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test:ids"
TABLES = ("resource", "resource_version", "idx_string", "idx_token", "idx_reference", "idx_date", "idx_missing")


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None,
          **conditions: str) -> dict[str, Any]:
    """A Bundle entry; `conditions` are request elements such as ifNoneExist."""
    item: dict[str, Any] = {"request": {"method": method, "url": url, **conditions}}
    if resource is not None:
        item["resource"] = resource
    if full_url is not None:
        item["fullUrl"] = full_url
    return item


def post(resource: dict[str, Any], full_url: str | None = None, **conditions: str) -> dict[str, Any]:
    return entry("POST", resource["resourceType"], resource, full_url, **conditions)


def bundle(bundle_type: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def org(name: str, value: str | None = None, **extra: Any) -> dict[str, Any]:
    # R4 refuses an empty array: an Organization without a value has no identifier element at all.
    identifier = {"identifier": [{"system": SYSTEM, "value": value}]} if value else {}
    return {"resourceType": "Organization", "name": name, **identifier, **extra}


async def send(client: Any, body: dict[str, Any], status: int = 200, **headers: str) -> dict[str, Any]:
    response = await client.post("/fhir", json=body, headers={**FHIR_JSON, **headers})
    text = await response.text()
    assert response.status == status, text
    result: dict[str, Any] = await response.json(content_type=None)
    return result


def statuses(response: dict[str, Any]) -> list[str]:
    return [item["response"]["status"] for item in response["entry"]]


def locations(response: dict[str, Any]) -> list[str]:
    """`Type/id` of each response entry's location (without its version)."""
    return ["/".join(item["response"]["location"].split("/")[:2]) for item in response["entry"]]


async def row_counts(db: Any) -> dict[str, int]:
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}


async def stored(db: Any, name: str) -> dict[str, Any]:
    """The stored body of `Type/id`."""
    res_type, fhir_id = name.split("/")
    body = await db.fetchval("SELECT body FROM resource WHERE res_type = $1 AND fhir_id = $2", res_type, fhir_id)
    assert body is not None, name
    value: dict[str, Any] = orjson.loads(body)
    return value
