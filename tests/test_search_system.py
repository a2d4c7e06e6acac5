"""System-level search (`GET [base]?_type=A,B&...`, `POST [base]/_search`, and `GET [base]?...` over every type the
token may search) on Plan-Net and Synthea, against sets computed here from the NDJSON files."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.fhir.resource_types import RESOURCE_TYPES
from tests.search_data import (
    entries,
    folded,
    get_bundle,
    links,
    resources,
    search_ids,
    search_settings,
)
from tests.tokens import bearer, claims, hs256

PROFILES = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/"
PLANNET_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole", "Endpoint", "HealthcareService",
                 "InsurancePlan", "OrganizationAffiliation")


@pytest.fixture
async def client(aiohttp_client, search_database):
    return await aiohttp_client(create_app(search_settings(search_database)))


def typed_ids(types, predicate=lambda resource: True) -> set[str]:
    return {f"{res_type}/{r['id']}" for res_type in types for r in resources(res_type) if predicate(r)}


async def typed_search(client, url: str, headers=None) -> set[str]:
    """`Type/id` of every match, following `next` links; each must come once."""
    found: list[str] = []
    while url:
        bundle = await get_bundle(client, url, headers=headers)
        found += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(bundle)]
        url = links(bundle).get("next")
    assert len(found) == len(set(found)), "a resource came twice"
    return set(found)


def profiled(*names: str):
    return lambda resource: any(p in resource.get("meta", {}).get("profile", []) for p in names)


async def test_type_list_with_a_common_parameter_pages_across_types(client):
    wanted = profiled(PROFILES + "plannet-Location", PROFILES + "plannet-Organization")
    expected = typed_ids(("Organization", "Location"), wanted)
    assert {name.split("/")[0] for name in expected} == {"Organization", "Location"}
    url = (f"/fhir?_type=Organization,Location&_profile={PROFILES}plannet-Location,{PROFILES}plannet-Organization"
           "&_count=37&_sort=_id")
    assert await typed_search(client, url) == expected
    counted = await get_bundle(client, url + "&_summary=count")
    assert counted["total"] == len(expected)


async def test_a_parameter_every_listed_type_has_searches_each(client):
    """`name` is a string parameter of both Organization and Location."""
    def named(resource):
        return any(folded(n).startswith("bay") for n in [resource.get("name", ""), *resource.get("alias", [])])
    expected = typed_ids(("Organization", "Location"), named)
    assert {name.split("/")[0] for name in expected} == {"Organization", "Location"}
    assert await typed_search(client, "/fhir?_type=Organization,Location&name=bay&_count=5") == expected


async def test_post_search_and_id_over_every_type(client):
    organization, patient = resources("Organization")[0]["id"], resources("Patient")[0]["id"]
    expected = {f"Organization/{organization}", f"Patient/{patient}"}
    assert await typed_search(client, f"/fhir?_id={organization},{patient}") == expected
    response = await client.post("/fhir/_search", data={"_id": f"{organization},{patient}"})
    bundle = await response.json()
    assert response.status == 200, bundle
    assert {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(bundle)} == expected
    assert bundle["link"][0]["url"].endswith(f"/fhir?_id={organization}%2C{patient}")


async def test_one_type_is_a_type_level_search(client):
    expected = {r["id"] for r in resources("Practitioner")}
    assert await search_ids(client, "/fhir?_type=Practitioner&_count=100") == expected


@pytest.mark.parametrize(("url", "message"), [
    ("/fhir?_type=Organization,Observation&name=x", "Unknown search parameter 'name' for resource type 'Observation'"),
    ("/fhir?_type=Nonsense", "Unknown resource type 'Nonsense' in _type"),
    ("/fhir?_type=Organization,Location&_include=Organization:endpoint", "not supported in a search of several"),
    ("/fhir?_type=Organization,Location&partof:Organization.name=x", "not supported in a search of several"),
    ("/fhir/Organization?_type=Location", "_type applies to a system-level search"),
])
async def test_refusals(client, url, message):
    outcome = await get_bundle(client, url, status=400)
    assert message in outcome["issue"][0]["diagnostics"]


async def test_privileges_explicit_types_are_refused_implicit_ones_left_out(client):
    token = bearer(hs256(claims(["Organization.search", "Location.search"], user_type="PRACTITIONER")))
    refused = await get_bundle(client, "/fhir?_type=Organization,Practitioner,Endpoint", status=403, headers=token)
    assert refused["issue"][0]["code"] == "forbidden"
    assert refused["issue"][0]["diagnostics"] == ("The privileges Practitioner.search, Endpoint.search are required "
                                                  "for this search (_type)")
    everything = profiled(*(PROFILES + f"plannet-{name}" for name in ("Organization", "Location", "Practitioner")))
    url = f"/fhir?_profile={PROFILES}plannet-Organization,{PROFILES}plannet-Location,{PROFILES}plannet-Practitioner"
    assert await typed_search(client, url, headers=token) == typed_ids(("Organization", "Location"), everything)
    bundle = await get_bundle(client, url, headers=token)
    notes = [issue for entry in entries(bundle, "outcome") for issue in entry["resource"]["issue"]]
    assert [(issue["severity"], issue["code"]) for issue in notes] == [("information", "suppressed")]
    lacking = notes[0]["diagnostics"].split("it lacks ")[1].split(", ")
    assert set(lacking) == {f"{t}.search" for t in RESOURCE_TYPES - {"Organization", "Location"}}
    nothing = bearer(hs256(claims(["Organization.read"], user_type="PRACTITIONER")))
    assert (await get_bundle(client, "/fhir?_id=x", status=403, headers=nothing))["issue"][0]["code"] == "forbidden"
    assert (await client.get("/fhir?_id=x", headers={"Authorization": ""})).status == 401
