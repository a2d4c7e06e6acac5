"""Search results on Plan-Net and Synthea: paging, sorting, totals, summaries, elements, includes, POST
_search, and searches that meet writes (created, deleted, accented and pending-parameter resources).

Expected results come from the NDJSON files or from direct SQL on the stored resources, never from the
search code."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import asyncpg
import orjson
import pytest

from service.app import create_app
from service.http.keys import CATALOG
from service.search.catalog import ChangeLog
from tests.search_data import (
    entries,
    folded,
    get_bundle,
    ids_where,
    links,
    match_ids,
    resources,
    search_ids,
    search_settings,
)

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SUBSETTED = "SUBSETTED"
NPI = "http://hl7.org/fhir/sid/us-npi"


@pytest.fixture
async def app(search_database):
    return create_app(search_settings(search_database))


@pytest.fixture
async def client(aiohttp_client, app):
    return await aiohttp_client(app)


@pytest.fixture
async def stored(search_database):
    conn = await asyncpg.connect(search_database)
    yield conn
    await conn.close()


async def live_ids(conn: asyncpg.Connection, res_type: str) -> set[str]:
    rows = await conn.fetch("SELECT fhir_id FROM resource WHERE res_type = $1 AND NOT deleted", res_type)
    return {row["fhir_id"] for row in rows}


async def create(client, resource: dict) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", data=orjson.dumps(resource), headers=FHIR_JSON)
    assert response.status == 201, await response.text()
    return (await response.json(content_type=None))["id"]


async def pages(client, url: str) -> list[list[dict]]:
    """Every page's matched resources, following `next` links."""
    found = []
    while url:
        bundle = await get_bundle(client, url)
        found.append([entry["resource"] for entry in entries(bundle)])
        url = links(bundle).get("next")
    return found


def location_key(resource: dict) -> str:
    return folded(resource["name"])


# --- paging -------------------------------------------------------------------------------------------------

async def test_paging_yields_every_match_once_in_order_while_resources_are_created(client):
    expected = {r["id"] for r in resources("Location")}
    url = "/fhir/Location?_sort=name&_count=50"
    first = await get_bundle(client, url)
    assert "previous" not in links(first) and "total" not in first
    early = await create(client, {"resourceType": "Location", "name": "0000 before every page"})
    late = await create(client, {"resourceType": "Location", "name": "zzzz after every page"})
    rest = await pages(client, links(first)["next"])
    seen = [entry["resource"] for entry in entries(first)] + [r for page in rest for r in page]
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected | {late} and early not in ids
    keys = [location_key(r) for r in seen]
    assert keys == sorted(keys)


async def test_previous_links_walk_back_over_the_same_pages(client):
    forward = await pages(client, "/fhir/Location?_sort=-name&_count=100")
    assert len(forward) > 2
    url = links(await get_bundle(client, "/fhir/Location?_sort=-name&_count=100"))["next"]
    while (bundle := await get_bundle(client, url)) and "next" in links(bundle):
        url = links(bundle)["next"]
    backward = [[entry["resource"] for entry in entries(bundle)]]
    while "previous" in links(bundle):
        bundle = await get_bundle(client, links(bundle)["previous"])
        backward.append([entry["resource"] for entry in entries(bundle)])
    assert [[r["id"] for r in page] for page in backward[::-1]] == [[r["id"] for r in page] for page in forward]


async def walk_back(client, bundle: dict) -> list[list[str]]:
    """From the last page reached by `next` from `bundle`, the pages' ids following `previous`, first page first."""
    while "next" in links(bundle):
        bundle = await get_bundle(client, links(bundle)["next"])
    backward = [match_ids(bundle)]
    while "previous" in links(bundle):
        bundle = await get_bundle(client, links(bundle)["previous"])
        backward.append(match_ids(bundle))
    return backward[::-1]


@pytest.mark.parametrize(("sort", "key"), [
    ("", lambda p: None),
    ("family", lambda p: min(families(p), default=None)),
    ("-birthdate", lambda p: p.get("birthDate")),
])
async def test_pages_of_a_search_term_walk_both_ways(client, stored, sort, key):
    """A page chosen from the term's index rows: every match once, in order, and `previous` walks the same pages."""
    url = "/fhir/Patient?gender=female,other&_count=10" + (f"&_sort={sort}" if sort else "")
    forward = await pages(client, url)
    assert len(forward) > 2
    found = [r for page in forward for r in page]
    assert {r["id"] for r in found} == {row["fhir_id"] for row in await stored.fetch(
        "SELECT fhir_id FROM resource WHERE res_type = 'Patient' AND NOT deleted "
        "AND convert_from(body, 'UTF8')::jsonb ->> 'gender' IN ('female', 'other')")}
    assert len(found) == len({r["id"] for r in found})
    if sort:
        assert ordered([key(r) for r in found], sort.startswith("-"))
    assert await walk_back(client, await get_bundle(client, url)) == [[r["id"] for r in page] for page in forward]


async def test_a_resource_with_several_matching_index_rows_is_one_match(client):
    twice = [{"system": "urn:test:a", "value": "twice-1"}, {"system": "urn:test:b", "value": "twice-1"}]
    practitioner = await create(client, {"resourceType": "Practitioner", "identifier": twice,
                                         "name": [{"family": "Twofold"}, {"family": "Twofolder"}]})
    gone = await create(client, {"resourceType": "Practitioner", "identifier": twice})
    await create(client, {"resourceType": "Organization", "identifier": twice})  # another type, the same values
    assert (await client.delete(f"/fhir/Practitioner/{gone}")).status == 200
    for search in ("identifier=twice-1", "identifier=twice-1&name=twofold,twofolder", "name=twofold&_sort=-family",
                   "identifier=urn:test:a|twice-1,urn:test:b|twice-1&_sort=identifier"):
        bundle = await get_bundle(client, f"/fhir/Practitioner?{search}&_total=accurate")
        assert match_ids(bundle) == [practitioner] and bundle["total"] == 1, search


# --- sorting ------------------------------------------------------------------------------------------------

def families(patient: dict) -> list[str]:
    return [folded(name["family"]) for name in patient.get("name", []) if "family" in name]


def ordered(keys: list, descending: bool) -> bool:
    """Keys in order, resources without a value (None) last."""
    present = [key for key in keys if key is not None]
    return keys == present + [None] * (len(keys) - len(present)) and present == sorted(present, reverse=descending)


@pytest.mark.parametrize(("sort", "key"), [
    ("family", lambda p: min(families(p), default=None)),
    ("-family", lambda p: max(families(p), default=None)),
    ("birthdate", lambda p: p.get("birthDate")),
    ("-birthdate", lambda p: p.get("birthDate")),
    ("_id", lambda p: p["id"]),
    ("-_lastUpdated", lambda p: p["meta"]["lastUpdated"]),
    ("_lastUpdated", lambda p: p["meta"]["lastUpdated"]),
])
async def test_sort_patients(client, stored, sort, key):
    found = [r for page in await pages(client, f"/fhir/Patient?_sort={sort}&_count=30") for r in page]
    assert {r["id"] for r in found} == await live_ids(stored, "Patient")
    assert ordered([key(r) for r in found], sort.startswith("-"))


async def test_sort_on_token_then_date(client, stored):
    found = [r for page in await pages(client, "/fhir/Patient?_sort=gender,-birthdate&_count=40") for r in page]
    assert {r["id"] for r in found} == await live_ids(stored, "Patient")
    genders = [r["gender"] for r in found]
    assert genders == sorted(genders)
    for gender in set(genders):
        dates = [r["birthDate"] for r in found if r["gender"] == gender]
        assert dates == sorted(dates, reverse=True)


@pytest.mark.parametrize("sort", ["address-city", "-address-city"])
async def test_resources_without_a_sort_value_come_last(client, stored, sort):
    found = [r for page in await pages(client, f"/fhir/Organization?_sort={sort}&_count=100") for r in page]
    assert {r["id"] for r in found} == await live_ids(stored, "Organization")
    cities = [[folded(a["city"]) for a in r.get("address", []) if "city" in a] for r in found]
    choose = max if sort.startswith("-") else min
    keys = [choose(values) if values else None for values in cities]
    assert None in keys and ordered(keys, sort.startswith("-"))


# --- totals, summaries, elements ----------------------------------------------------------------------------

async def test_totals(client):
    heights = ids_where("Observation", lambda r: any(c["code"] == "8302-2" for c in r["code"]["coding"]))
    url = "/fhir/Observation?code=http://loinc.org|8302-2&_count=10"
    assert "total" not in await get_bundle(client, url)
    assert (await get_bundle(client, url + "&_total=accurate"))["total"] == len(heights)
    assert "total" not in await get_bundle(client, url + "&_total=none")
    summary = await get_bundle(client, url + "&_summary=count")
    assert summary["total"] == len(heights) and "entry" not in summary
    whole = await get_bundle(client, "/fhir/Observation?code=http://loinc.org|8302-2&_count=1000")
    assert whole["total"] == len(heights) == len(match_ids(whole))


async def test_elements_keep_listed_elements_and_mark_subsetted(client):
    bundle = await get_bundle(client, "/fhir/Patient?_elements=birthDate,gender&_count=5")
    assert len(entries(bundle)) == 5
    for entry in entries(bundle):
        resource = entry["resource"]
        assert set(resource) <= {"resourceType", "id", "meta", "birthDate", "gender"}
        assert {"birthDate", "gender"} <= set(resource)
        assert SUBSETTED in [tag["code"] for tag in resource["meta"]["tag"]]


# --- includes -----------------------------------------------------------------------------------------------

async def test_include_observation_subject(client):
    bundle = await get_bundle(client, "/fhir/Observation?code=http://loinc.org|8302-2&_count=25"
                                      "&_include=Observation:subject")
    matched = [entry["resource"] for entry in entries(bundle)]
    subjects = {r["subject"]["reference"].split("/")[1] for r in matched}
    included = [entry["resource"] for entry in entries(bundle, "include")]
    assert len(subjects) > 1
    assert sorted(r["id"] for r in included) == sorted(subjects)
    assert {r["resourceType"] for r in included} == {"Patient"}
    star = await get_bundle(client, "/fhir/Observation?code=http://loinc.org|8302-2&_count=25&_include=*")
    star_included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries(star, "include")}
    encounters = {tuple(r["encounter"]["reference"].split("/")) for r in matched if "encounter" in r}
    assert {("Patient", s) for s in subjects} | encounters <= star_included


async def test_revinclude_observations_of_patients(client):
    patients = [r["id"] for r in resources("Patient")[:2]]
    expected = ids_where("Observation", lambda r: r["subject"]["reference"] in {f"Patient/{p}" for p in patients})
    bundle = await get_bundle(client, f"/fhir/Patient?_id={','.join(patients)}&_revinclude=Observation:subject")
    assert set(match_ids(bundle)) == set(patients)
    included = [entry["resource"]["id"] for entry in entries(bundle, "include")]
    assert len(included) == len(set(included)) and set(included) == expected


async def walk_both_ways(client, url: str, pages: int) -> list[dict]:
    """`pages` pages from `url` following `next`, then back to the first following `previous`."""
    walked = [await get_bundle(client, url)]
    while len(walked) < pages:
        walked.append(await get_bundle(client, links(walked[-1])["next"]))
    while "previous" in links(walked[-1]):
        walked.append(await get_bundle(client, links(walked[-1])["previous"]))
    return walked


@pytest.mark.parametrize("sort", ["", "&_sort=birthdate", "&_sort=-_lastUpdated"])
async def test_every_page_both_ways_includes_what_refers_to_its_own_matches(client, sort):
    """The page and its includes are one statement: each page has the matches the same search without includes
    has, in the same order, and the includes of those `_count` matches, paging forwards and backwards, never of
    the row read beyond them to tell whether there is a further page."""
    url = f"/fhir/Patient?_count=2{sort}"  # at most 403 Observations a Patient: never the include limit
    plain = await walk_both_ways(client, url, 6)
    with_includes = await walk_both_ways(client, f"{url}&_revinclude=Observation:subject", 6)
    assert len(plain) == len(with_includes) == 11
    by_subject: dict[str, set[str]] = {}
    for observation in resources("Observation"):
        by_subject.setdefault(observation["subject"]["reference"], set()).add(observation["id"])
    for page, included_page in zip(plain, with_includes, strict=True):
        assert match_ids(included_page) == match_ids(page)
        included = [entry["resource"]["id"] for entry in entries(included_page, "include")]
        expected = set().union(*(by_subject.get(f"Patient/{id_}", set()) for id_ in match_ids(page)))
        assert len(included) == len(set(included)) and set(included) == expected


# --- POST _search -------------------------------------------------------------------------------------------

async def test_post_search_with_a_form_body(client):
    expected = await search_ids(client, "/fhir/Organization?name=acme")
    response = await client.post("/fhir/Organization/_search", data={"name": "acme", "_count": "3"})
    assert response.status == 200
    bundle = await response.json(content_type=None)
    found = set(match_ids(bundle))
    if "next" in links(bundle):
        assert links(bundle)["next"].startswith("/fhir/Organization?")
        found |= await search_ids(client, links(bundle)["next"])
    assert found == expected
    refused = await client.post("/fhir/Organization/_search", data=b'{"name": "acme"}', headers=FHIR_JSON)
    assert refused.status == 415


# --- searches that meet writes ------------------------------------------------------------------------------

async def test_number_precision_and_prefixes(client):
    values = ["0.1", "0.25", "0.3", "0.35", "1", "100"]
    made = {}
    for value in values:
        made[await create(client, {"resourceType": "RiskAssessment", "status": "final",
                                   "subject": {"reference": "Patient/x"},
                                   "prediction": [{"probabilityDecimal": float(value)}]})] = Decimal(value)

    def where(test) -> set[str]:
        return {fhir_id for fhir_id, value in made.items() if test(value)}

    assert await search_ids(client, "/fhir/RiskAssessment?probability=0.3") == where(
        lambda v: Decimal("0.25") <= v < Decimal("0.35"))
    assert await search_ids(client, "/fhir/RiskAssessment?probability=gt0.3") == where(lambda v: v > Decimal("0.3"))
    assert await search_ids(client, "/fhir/RiskAssessment?probability=le1") == where(lambda v: v <= 1)
    assert await search_ids(client, "/fhir/RiskAssessment?probability=ap95") == where(lambda v: 85.5 <= v <= 104.5)
    assert await search_ids(client, "/fhir/RiskAssessment?probability=ne0.3") == where(
        lambda v: not Decimal("0.25") <= v < Decimal("0.35"))


async def test_accents_and_deletion(client):
    fhir_id = await create(client, {"resourceType": "Organization", "name": "Église Zéphyr-Test"})
    assert await search_ids(client, "/fhir/Organization?name=eglise%20zeph") == {fhir_id}
    assert await search_ids(client, f"/fhir/Organization?name={quote('ÉGLISE')}") == {fhir_id}
    assert await search_ids(client, f"/fhir/Organization?name:exact={quote('Église Zéphyr-Test')}") == {fhir_id}
    assert await search_ids(client, "/fhir/Organization?name:exact=eglise%20zephyr-test") == set()
    assert (await client.delete(f"/fhir/Organization/{fhir_id}")).status == 200
    assert await search_ids(client, "/fhir/Organization?name=eglise%20zeph") == set()
    assert await search_ids(client, f"/fhir/Organization?_id={fhir_id}") == set()


async def test_chain_general_practitioner_identifier(client):
    practitioner = next(r for r in resources("Practitioner") if any(i.get("system") == NPI
                                                                    for i in r.get("identifier", [])))
    npi = next(i["value"] for i in practitioner["identifier"] if i.get("system") == NPI)
    patient = await create(client, {"resourceType": "Patient", "name": [{"family": "Chained"}],
                                    "generalPractitioner": [{"reference": f"Practitioner/{practitioner['id']}"}]})
    url = f"/fhir/Patient?general-practitioner:Practitioner.identifier={NPI}|{npi}"
    assert await search_ids(client, url) == {patient}


async def test_pending_parameter_adds_an_incomplete_warning(app, client):
    catalogs = app[CATALOG]
    catalogs.install(ChangeLog(catalogs.current.generation + 10**9, pending=[("name", ["Organization"])]))
    bundle = await get_bundle(client, "/fhir/Organization?name=acme")
    outcome = entries(bundle, "outcome")
    assert len(outcome) == 1
    issue = outcome[0]["resource"]["issue"][0]
    assert (issue["severity"], issue["code"]) == ("warning", "incomplete")
    assert "Organization:name" in issue["diagnostics"]
    assert match_ids(bundle)
    plain = await get_bundle(client, "/fhir/Organization?address-city=boston")
    assert not entries(plain, "outcome")
