"""`_has` (reverse chains, nested), chains of any depth and `_include:iterate` / `_revinclude:iterate` on Plan-Net
and Synthea, against sets computed here by following the references in the NDJSON files; the privileges each
needs; and the SQL plans, which must not run a subquery per row."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest

from service.app import create_app
from service.search.query import parse_search
from service.search.registry import Registry
from service.search.sql import page_statement
from service.search.terms import SearchContext
from tests.search_data import (
    entries,
    folded,
    get_bundle,
    resources,
    search_ids,
    search_settings,
)
from tests.tokens import bearer, claims, hs256

TAXONOMY = "http://nucc.org/provider-taxonomy"
HEIGHT = "http://loinc.org|8302-2"


@pytest.fixture
async def client(aiohttp_client, search_database):
    return await aiohttp_client(create_app(search_settings(search_database)))


# --- the oracle: references followed in the loaded resources ------------------------------------------------

def by_id(res_type: str) -> dict[str, dict[str, Any]]:
    return {resource["id"]: resource for resource in resources(res_type)}


def refs(resource: dict[str, Any], element: str, res_type: str) -> list[str]:
    """Ids of `res_type` that `resource.element` (one reference or a list) refers to."""
    value = resource.get(element, [])
    found = value if isinstance(value, list) else [value]
    prefix = f"{res_type}/"
    return [r["reference"][len(prefix):] for r in found if r.get("reference", "").startswith(prefix)]


def referred(sources: Iterable[dict[str, Any]], element: str, res_type: str) -> set[str]:
    return {target for source in sources for target in refs(source, element, res_type)}


def where(res_type: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [resource for resource in resources(res_type) if predicate(resource)]


def has_code(element: str, system: str, code: str) -> Callable[[dict[str, Any]], bool]:
    def test(resource: dict[str, Any]) -> bool:
        value = resource.get(element, [])
        concepts = value if isinstance(value, list) else [value]
        return any(c.get("system") == system and c.get("code") == code
                   for concept in concepts for c in concept.get("coding", []))
    return test


def common_specialty() -> str:
    codes = [c["code"] for r in resources("PractitionerRole") for s in r["specialty"] for c in s["coding"]]
    return max(set(codes), key=codes.count)


# --- _has -----------------------------------------------------------------------------------------------------

async def test_has_finds_the_resources_referred_to_by_matching_ones(client):
    specialty = common_specialty()
    roles = where("PractitionerRole", has_code("specialty", TAXONOMY, specialty))
    expected = referred(roles, "practitioner", "Practitioner") & set(by_id("Practitioner"))
    assert 1 < len(expected) < len(resources("Practitioner"))
    url = f"/fhir/Practitioner?_has:PractitionerRole:practitioner:specialty={TAXONOMY}|{specialty}&_count=50"
    assert await search_ids(client, url) == expected


async def test_nested_has_and_has_with_a_chain_inside(client):
    encounters = referred(where("Observation", has_code("code", "http://loinc.org", "8302-2")), "encounter",
                          "Encounter")
    patients = referred((by_id("Encounter")[e] for e in encounters if e in by_id("Encounter")), "subject", "Patient")
    assert patients
    url = f"/fhir/Patient?_has:Encounter:patient:_has:Observation:encounter:code={HEIGHT}&_count=100"
    assert await search_ids(client, url) == patients
    practitioners = by_id("Practitioner")
    female_roles = [r for r in resources("PractitionerRole")
                    if any(practitioners.get(p, {}).get("gender") == "female"
                           for p in refs(r, "practitioner", "Practitioner"))]
    organizations = referred(female_roles, "organization", "Organization") & set(by_id("Organization"))
    assert 1 < len(organizations)
    url = "/fhir/Organization?_has:PractitionerRole:organization:practitioner.gender=female&_count=100"
    assert await search_ids(client, url) == organizations


async def test_has_with_not_and_and(client):
    specialty = common_specialty()
    with_specialty = referred(where("PractitionerRole", has_code("specialty", TAXONOMY, specialty)),
                              "practitioner", "Practitioner")
    female = {p["id"] for p in where("Practitioner", lambda p: p.get("gender") == "female")}
    url = (f"/fhir/Practitioner?_has:PractitionerRole:practitioner:specialty={TAXONOMY}|{specialty}"
           "&gender=female&_count=200")
    assert await search_ids(client, url) == with_specialty & female


# --- chains of any depth ---------------------------------------------------------------------------------------

async def test_chains_two_and_three_links_deep(client):
    locations, organizations = by_id("Location"), by_id("Organization")

    def managing(location_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [organizations[o] for lid in location_ids if lid in locations
                for o in refs(locations[lid], "managingOrganization", "Organization") if o in organizations]

    state = "MA"
    roles = {r["id"] for r in resources("PractitionerRole")
             if any(o.get("address", [{}])[0].get("state") == state for o in managing(refs(r, "location", "Location")))}
    assert 1 < len(roles)
    url = f"/fhir/PractitionerRole?location.organization.address-state={state}&_count=200"
    assert await search_ids(client, url) == roles
    # Synthea: an explanation of benefit -> its claim -> the claim items' encounters -> their service provider.
    claims, encounters = by_id("Claim"), by_id("Encounter")
    providers = by_id("Organization")

    def provider_names(eob: dict[str, Any]) -> list[str]:
        items = [item for c in refs(eob, "claim", "Claim") if c in claims for item in claims[c].get("item", [])]
        return [providers[o]["name"] for item in items for e in refs(item, "encounter", "Encounter")
                if e in encounters for o in refs(encounters[e], "serviceProvider", "Organization") if o in providers]

    name = sorted(n for eob in resources("ExplanationOfBenefit") for n in provider_names(eob))[0].split()[0]
    deep = {eob["id"] for eob in resources("ExplanationOfBenefit")
            if any(folded(n).startswith(folded(name)) for n in provider_names(eob))}
    assert 1 < len(deep) < len(resources("ExplanationOfBenefit"))
    url = f"/fhir/ExplanationOfBenefit?claim.encounter.service-provider.name={name}&_count=200"
    assert await search_ids(client, url) == deep


# --- :iterate ----------------------------------------------------------------------------------------------------

def included(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(bundle, "include")}


async def test_include_iterate_follows_the_included_resources(client):
    specialty = common_specialty()
    page = await get_bundle(client, f"/fhir/PractitionerRole?specialty={TAXONOMY}|{specialty}&_count=30"
                                    "&_include=PractitionerRole:location&_include:iterate=Location:organization")
    roles = by_id("PractitionerRole")
    matched = [roles[e["resource"]["id"]] for e in entries(page)]
    locations = referred(matched, "location", "Location") & set(by_id("Location"))
    organizations = referred((by_id("Location")[lid] for lid in locations), "managingOrganization",
                             "Organization") & set(by_id("Organization"))
    assert locations and organizations
    assert included(page) == {f"Location/{i}" for i in locations} | {f"Organization/{i}" for i in organizations}


async def test_revinclude_iterate_walks_down_an_organization_tree(client):
    organizations = by_id("Organization")
    children = {o["id"]: set(refs(o, "partOf", "Organization")) for o in organizations.values()}
    root = next(oid for oid in sorted(organizations) if any(oid in parents for parents in children.values()))
    tree, frontier = set(), {root}
    for _ in range(4):  # the matches' own round and three :iterate rounds
        frontier = {oid for oid, parents in children.items() if parents & frontier} - tree - {root}
        tree |= frontier
    managed = {lo["id"] for lo in resources("Location")
               if set(refs(lo, "managingOrganization", "Organization")) & (tree | {root})}
    page = await get_bundle(client, f"/fhir/Organization?_id={root}&_revinclude:iterate=Organization:partof"
                                    "&_revinclude:iterate=Location:organization&_count=10")
    assert tree and included(page) == {f"Organization/{i}" for i in tree} | {f"Location/{i}" for i in managed}


async def test_iteration_stops_after_three_rounds_and_says_so(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings))
    for index in range(7):  # org0 <- org1 <- ... <- org6 (partOf)
        body = {"resourceType": "Organization", "id": f"org{index}", "name": f"level {index}",
                **({"partOf": {"reference": f"Organization/org{index - 1}"}} if index else {})}
        assert (await client.put(f"/fhir/Organization/org{index}", json=body)).status == 201
    page = await get_bundle(client, "/fhir/Organization?_id=org0&_revinclude:recurse=Organization:partof")
    assert included(page) == {f"Organization/org{i}" for i in range(1, 5)}
    notes = [issue for entry in entries(page, "outcome") for issue in entry["resource"]["issue"]]
    assert [(n["severity"], n["code"]) for n in notes] == [("warning", "incomplete")]
    assert "3 rounds" in notes[0]["diagnostics"]
    whole = await get_bundle(client, "/fhir/Organization?_id=org3&_revinclude:iterate=Organization:partof")
    assert included(whole) == {"Organization/org4", "Organization/org5", "Organization/org6"}
    assert not entries(whole, "outcome")


# --- privileges -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "roles", "message"), [
    ("/fhir/Practitioner?_has:PractitionerRole:practitioner:active=true", ["Practitioner.search"],
     "The privilege PractitionerRole.read is required for this search "
     "(_has:PractitionerRole:practitioner:active)"),
    ("/fhir/Patient?_has:Encounter:patient:_has:Observation:encounter:code=x", ["Patient.search", "Encounter.read"],
     "The privilege Observation.read is required for this search "
     "(_has:Encounter:patient:_has:Observation:encounter:code)"),
    ("/fhir/PractitionerRole?location.organization.name=x", ["PractitionerRole.search", "Organization.read"],
     "The privilege Location.read is required for this search (location:Location.organization:Organization.name)"),
    ("/fhir/PractitionerRole?_include:iterate=Location:organization", ["PractitionerRole.search", "Location.read"],
     "The privilege Organization.read is required for this search (_include:iterate=Location:organization)"),
    ("/fhir/Organization?_revinclude:iterate=Location:organization&_summary=count", ["Organization.search"],
     "The privilege Location.read is required for this search (_revinclude:iterate=Location:organization)"),
])
async def test_every_type_a_search_reads_needs_its_read_privilege(client, url, roles, message):
    outcome = await get_bundle(client, url, status=403, headers=bearer(hs256(claims(roles))))
    assert outcome["issue"][0]["code"] == "forbidden"
    assert outcome["issue"][0]["diagnostics"] == message


async def test_with_the_read_privileges_the_same_searches_run(client):
    roles = ["Patient.search", "Encounter.read", "Observation.read"]
    url = f"/fhir/Patient?_has:Encounter:patient:_has:Observation:encounter:code={HEIGHT}&_summary=count"
    bundle = await get_bundle(client, url, headers=bearer(hs256(claims(roles))))
    assert bundle["total"] > 0


# --- SQL plans ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parameters", [
    [("_has:Encounter:patient:_has:Observation:encounter:code", HEIGHT)],
    [("_has:PractitionerRole:practitioner:specialty", f"{TAXONOMY}|{'207Q00000X'}")],
    [("location.organization.partof.name", "acme")],
])
async def test_plans_join_instead_of_running_a_subquery_per_row(search_database, parameters):
    res_type = {"_has:E": "Patient", "_has:P": "Practitioner", "locati": "PractitionerRole"}[parameters[0][0][:6]]
    context = SearchContext(Registry.builtin(), "http://localhost/fhir", datetime.now(timezone.utc), False, 20, 100)
    statement = page_statement(parse_search(res_type, parameters, context))
    conn = await asyncpg.connect(search_database)
    try:
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement.text}", *statement.params))
    finally:
        await conn.close()
    assert "SubPlan" not in plan, plan  # a correlated subquery run for every outer row


@pytest.mark.parametrize(("url", "message"), [
    ("/fhir/Patient?_has:Observation:code:status=final", "'code' is a token parameter of Observation, not a reference"),
    ("/fhir/Patient?_has:Nope:patient:code=1", "'Nope' is not a resource type"),
    ("/fhir/Patient?_has:Observation:patient=1", "expected _has:Type:reference parameter:search parameter"),
    ("/fhir/Practitioner?_has:Observation:patient:code=1",
     "Observation:patient refers to Patient, Group, not Practitioner"),
    ("/fhir/Patient?_has:Observation:patient:nonsense=1", "Unknown search parameter 'nonsense' for resource type "
     "'Observation'"),
    ("/fhir/Patient?_has:Encounter:patient:_has:Observation:encounter:_has:Observation:has-member:_has:Observation:"
     "derived-from:_has:Observation:part-of:code=1", "chains more than 4 references"),
    ("/fhir/PractitionerRole?_include:iterate=Nope:organization", "'organization' is not a reference parameter"),
])
async def test_refusals(client, url, message):
    outcome = await get_bundle(client, url, status=400)
    assert message in outcome["issue"][0]["diagnostics"]
