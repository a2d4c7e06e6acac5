"""Clients as they are: fhirpy's `count()` and `fetch_all()` against the real app, and what happens to the
parameters a client sends that the server does not know."""

from __future__ import annotations

import gzip

import orjson
import pytest
from fhirpy import AsyncFHIRClient

from tests.conftest import DATA_DIR
from tests.search_data import entries, folded, get_bundle
from tests.tokens import admin_claims, hs256


def fhirpy_client(client) -> AsyncFHIRClient:
    return AsyncFHIRClient(str(client.make_url("/fhir")), authorization=f"Bearer {hs256(admin_claims())}")


def plannet_ids(res_type: str, predicate=lambda resource: True) -> set[str]:
    with gzip.open(DATA_DIR / "plannet" / f"{res_type}.ndjson.gz", "rb") as lines:
        return {resource["id"] for resource in map(orjson.loads, lines) if predicate(resource)}


@pytest.mark.dataset("plannet")
async def test_fhirpy_count_and_fetch_all(client):
    fhir = fhirpy_client(client)
    everything = {resource["id"] for resource in await fhir.resources("Organization").limit(40).fetch_all()}
    assert everything == plannet_ids("Organization")
    assert await fhir.resources("Organization").count() == len(everything)
    named = fhir.resources("Organization").search(name="health")
    expected = plannet_ids("Organization", lambda r: folded(r.get("name", "")).startswith("health")
                           or any(folded(alias).startswith("health") for alias in r.get("alias", [])))
    assert expected and await named.count() == len(expected)
    assert {resource["id"] for resource in await named.limit(7).fetch_all()} == expected


@pytest.mark.dataset("plannet")
async def test_unknown_underscore_parameters_are_ignored_and_said(client):
    bundle = await get_bundle(client, "/fhir/Organization?_totalMethod=count&_x:y.z=1&_count=5")
    assert len(entries(bundle)) == 5
    notes = [issue for entry in entries(bundle, "outcome") for issue in entry["resource"]["issue"]]
    assert [issue["severity"] for issue in notes] == ["warning", "warning"]
    assert "'_totalMethod'" in notes[0]["diagnostics"] and "'_x:y.z'" in notes[1]["diagnostics"]
    assert "_totalMethod=count" in bundle["link"][0]["url"]  # the paging links repeat the request as sent


@pytest.mark.parametrize(("url", "message"), [
    ("/fhir/Organization?nonsense=1", "Unknown search parameter 'nonsense'"),
    ("/fhir/Organization?_query=acme", "'_query' (token) of 'Organization' is not supported"),
    ("/fhir/Organization?_list=42", "Unknown search parameter '_list'"),
    ("/fhir/Organization?_filter=name eq x", "Unknown search parameter '_filter'"),
])
async def test_other_unknown_parameters_are_refused(client, url, message):
    outcome = await get_bundle(client, url, status=400)
    assert message in outcome["issue"][0]["diagnostics"]
