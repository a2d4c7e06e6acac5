"""Search by parameter type, modifier and prefix on Plan-Net and Synthea, against the NDJSON files.

The database is loaded once for this module and never written to; every expected set is computed here
from the loaded files, independently of the server's extraction and SQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import quote

import asyncpg
import pytest

from service.app import create_app
from service.search.query import SearchContext, parse_search
from service.search.registry import Registry
from service.search.sql import count_statement, page_statement
from tests.search_data import (
    entries,
    folded,
    get_bundle,
    ids_where,
    resources,
    search_ids,
    search_settings,
)

PLANNET_TYPE = "http://hl7.org/fhir/us/davinci-pdex-plan-net/CodeSystem/OrgTypeCS"
PROFILE_BASE = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/"
UCUM = "http://unitsofmeasure.org"
ONE_MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
async def client(aiohttp_client, search_database):
    return await aiohttp_client(create_app(search_settings(search_database)))


async def count(client, url: str) -> int:
    bundle = await get_bundle(client, url + ("&" if "?" in url else "?") + "_summary=count")
    assert "entry" not in bundle
    return bundle["total"]


def names(resource) -> list[str]:
    return [resource["name"], *resource.get("alias", [])] if "name" in resource else resource.get("alias", [])


def codings(resource, element) -> list[dict]:
    concepts = resource.get(element, [])
    return [coding for concept in (concepts if isinstance(concepts, list) else [concepts])
            for coding in concept.get("coding", [])]


# --- string -------------------------------------------------------------------------------------------------

async def test_string_default_is_a_case_and_accent_insensitive_prefix(client):
    expected = ids_where("Organization", lambda r: any(folded(n).startswith("acme") for n in names(r)))
    assert expected
    assert await search_ids(client, "/fhir/Organization?name=ACME") == expected
    boston = ids_where("Organization", lambda r: any(folded(a.get("city", "")).startswith("bost")
                                                     for a in r.get("address", [])))
    assert await search_ids(client, "/fhir/Organization?address-city=Bost") == boston


async def test_string_exact_and_contains(client):
    exact = ids_where("Organization", lambda r: any(a.get("city") == "BOSTON" for a in r.get("address", [])))
    assert exact and exact != await search_ids(client, "/fhir/Organization?address-city=boston")
    assert await search_ids(client, "/fhir/Organization?address-city:exact=BOSTON") == exact
    contains = ids_where("Organization", lambda r: any("circle" in folded(n) for n in names(r)))
    assert contains
    assert await search_ids(client, "/fhir/Organization?name:contains=CIRCLE") == contains


async def test_patient_family(client):
    family = resources("Patient")[0]["name"][0]["family"]
    expected = ids_where("Patient", lambda r: any(folded(n.get("family", "")).startswith(folded(family[:4]))
                                                  for n in r.get("name", [])))
    assert await search_ids(client, f"/fhir/Patient?family={family[:4].lower()}") == expected


# --- token --------------------------------------------------------------------------------------------------

async def test_token_system_and_code_forms(client):
    identifier = next(i for r in resources("Organization") for i in r.get("identifier", []) if "system" in i)
    system, value = identifier["system"], identifier["value"]
    with_value = ids_where("Organization", lambda r: any(i.get("value") == value for i in r.get("identifier", [])))
    assert await search_ids(client, f"/fhir/Organization?identifier={quote(system)}|{value}") == with_value
    assert await search_ids(client, f"/fhir/Organization?identifier={value}") == with_value
    no_system = ids_where("Organization", lambda r: any(i.get("value") == value and "system" not in i
                                                        for i in r.get("identifier", [])))
    assert await search_ids(client, f"/fhir/Organization?identifier=|{value}") == no_system
    in_system = ids_where("Organization", lambda r: any(i.get("system") == system for i in r.get("identifier", [])))
    assert await search_ids(client, f"/fhir/Organization?identifier={quote(system)}|") == in_system


async def test_token_codes_not_and_text(client):
    facilities = ids_where("Organization", lambda r: any(c["code"] == "fac" for c in codings(r, "type")))
    assert await search_ids(client, f"/fhir/Organization?type={PLANNET_TYPE}|fac") == facilities
    every = {r["id"] for r in resources("Organization")}
    assert await search_ids(client, "/fhir/Organization?type:not=fac") == every - facilities
    networks = ids_where("Organization", lambda r: any(
        folded(text).startswith("network")
        for concept in r.get("type", []) for text in [concept.get("text", ""), *(
            c.get("display", "") for c in concept.get("coding", []))]))
    assert networks
    assert await search_ids(client, "/fhir/Organization?type:text=Network") == networks


async def test_gender_and_not(client):
    male = ids_where("Patient", lambda r: r.get("gender") == "male")
    assert await search_ids(client, "/fhir/Patient?gender=male") == male
    not_male = ids_where("Patient", lambda r: r.get("gender") != "male")
    assert await search_ids(client, "/fhir/Patient?gender:not=male") == not_male
    observed = ids_where("Observation", lambda r: r["subject"]["reference"].split("/")[1] in not_male)
    assert observed
    assert await search_ids(client, "/fhir/Observation?subject:Patient.gender:not=male&_count=1000") == observed


async def test_not_is_planned_as_an_anti_join(search_database):
    """`:not` must not be a SubPlan run against every candidate row: the plan joins the index table once."""
    context = SearchContext(Registry.builtin(), "https://fhir.example/fhir", datetime.now(timezone.utc), False, 20, 100)
    statements = [build(parse_search("Patient", [("gender:not", "male")], context))
                  for build in (page_statement, count_statement)]
    statements += [page_statement(parse_search(res_type, [item], context)) for res_type, item in (
        ("Organization", ("type:not", "fac")), ("Observation", ("subject:Patient.gender:not", "male")))]
    conn = await asyncpg.connect(search_database)
    try:
        for statement in statements:
            plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement.text}", *statement.params))
            assert "Anti Join" in plan and "SubPlan" not in plan, plan
    finally:
        await conn.close()


async def test_observation_code_and_tag_and_id(client):
    heights = ids_where("Observation", lambda r: any(c["system"] == "http://loinc.org" and c["code"] == "8302-2"
                                                     for c in codings(r, "code")))
    assert heights
    assert await search_ids(client, "/fhir/Observation?code=http://loinc.org|8302-2&_count=1000") == heights
    tagged = ids_where("Organization", lambda r: any(t.get("code") == "synthea-5-2019"
                                                     for t in r.get("meta", {}).get("tag", [])))
    assert tagged
    assert await search_ids(client, "/fhir/Organization?_tag=https://smarthealthit.org/tags|synthea-5-2019") == tagged
    two = [r["id"] for r in resources("Organization")[:2]]
    assert await search_ids(client, f"/fhir/Organization?_id={two[0]},{two[1]}") == set(two)


# --- reference ----------------------------------------------------------------------------------------------

async def test_reference_forms(client):
    parent = next(r["partOf"]["reference"] for r in resources("Organization") if "partOf" in r)
    parent_id = parent.split("/")[1]
    children = ids_where("Organization", lambda r: r.get("partOf", {}).get("reference") == parent)
    assert children
    base = str(client.make_url("/fhir"))
    for value in (parent, parent_id, f"{base}/{parent}"):
        assert await search_ids(client, f"/fhir/Organization?partof={value}") == children
    assert await search_ids(client, f"/fhir/Organization?partof:Organization={parent_id}") == children


async def test_reference_with_several_targets_and_or(client):
    patients = [r["id"] for r in resources("Patient")[:2]]
    expected = ids_where("Observation", lambda r: r["subject"]["reference"] in {f"Patient/{p}" for p in patients})
    joined = ",".join(patients)
    assert await search_ids(client, f"/fhir/Observation?subject:Patient={joined}&_count=1000") == expected
    assert await search_ids(client, f"/fhir/Observation?subject={joined}&_count=1000") == expected
    one = ids_where("Observation", lambda r: r["subject"]["reference"] == f"Patient/{patients[0]}")
    assert await search_ids(client, f"/fhir/Observation?subject=Patient/{patients[0]}&_count=1000") == one


async def test_missing(client):
    with_parent = ids_where("Organization", lambda r: "partOf" in r)
    every = {r["id"] for r in resources("Organization")}
    assert await search_ids(client, "/fhir/Organization?partof:missing=false") == with_parent
    assert await search_ids(client, "/fhir/Organization?partof:missing=true&_count=1000") == every - with_parent


async def test_chains(client):
    family = resources("Patient")[3]["name"][0]["family"]
    patients = ids_where("Patient", lambda r: any(folded(n.get("family", "")).startswith(folded(family))
                                                  for n in r.get("name", [])))
    expected = ids_where("Observation", lambda r: r["subject"]["reference"].split("/")[1] in patients)
    assert expected
    assert await search_ids(client, f"/fhir/Observation?subject:Patient.family={family}&_count=1000") == expected
    acme = ids_where("Organization", lambda r: any(folded(n).startswith("acme") for n in names(r)))
    children = ids_where("Organization", lambda r: r.get("partOf", {}).get("reference", "/").split("/")[1] in acme)
    assert children
    assert await search_ids(client, "/fhir/Organization?partof.name=acme") == children


# --- uri ----------------------------------------------------------------------------------------------------

async def test_uri_exact_below_above(client):
    def profiled(test):
        return ids_where("Organization", lambda r: any(test(p) for p in r.get("meta", {}).get("profile", [])))

    network = PROFILE_BASE + "plannet-Network"
    assert await search_ids(client, f"/fhir/Organization?_profile={network}") == profiled(lambda p: p == network)
    below = profiled(lambda p: p.startswith(PROFILE_BASE))
    assert len(below) > len(profiled(lambda p: p == network))
    assert await search_ids(client, f"/fhir/Organization?_profile:below={PROFILE_BASE}&_count=1000") == below
    above = profiled(lambda p: (network + "/extra").startswith(p))
    assert above == profiled(lambda p: p == network)
    assert await search_ids(client, f"/fhir/Organization?_profile:above={network}/extra") == above


# --- date ---------------------------------------------------------------------------------------------------

def precision_range(text: str) -> tuple[datetime, datetime]:
    """A query date's own range: a year, a month or a day (UTC)."""
    parts = [int(p) for p in text.split("-")]
    low = datetime(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1, tzinfo=timezone.utc)
    if len(parts) == 1:
        end = low.replace(year=low.year + 1)
    elif len(parts) == 2:
        end = low.replace(year=low.year + low.month // 12, month=low.month % 12 + 1)
    else:
        end = low + timedelta(days=1)
    return low, end - ONE_MICROSECOND


def matches_prefix(prefix: str, row: tuple[datetime, datetime], query: tuple[datetime, datetime]) -> bool:
    (low, high), (ql, qh) = row, query
    contained = low >= ql and high <= qh
    return {"eq": contained, "ne": not contained, "gt": high > qh, "lt": low < ql, "ge": high > qh or contained,
            "le": low < ql or contained, "sa": low > qh, "eb": high < ql}[prefix]


def effective_range(observation) -> tuple[datetime, datetime]:
    instant = datetime.fromisoformat(observation["effectiveDateTime"]).astimezone(timezone.utc)
    return instant, instant + timedelta(seconds=1) - ONE_MICROSECOND  # dateTimes to the second


def birth_range(patient) -> tuple[datetime, datetime]:
    return precision_range(patient["birthDate"])


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
@pytest.mark.parametrize("value", ["2015", "2015-06", "2015-06-15"])
async def test_observation_date_prefixes(client, prefix, value):
    query = precision_range(value)
    expected = ids_where("Observation", lambda r: matches_prefix(prefix, effective_range(r), query))
    assert await count(client, f"/fhir/Observation?date={prefix}{value}") == len(expected)


async def test_date_matches_by_id_and_without_prefix(client):
    query = precision_range("2015-06")
    expected = ids_where("Observation", lambda r: matches_prefix("eq", effective_range(r), query))
    assert expected
    assert await search_ids(client, "/fhir/Observation?date=2015-06&_count=1000") == expected
    born = ids_where("Patient", lambda r: matches_prefix("ge", birth_range(r), precision_range("1980")))
    assert await search_ids(client, "/fhir/Patient?birthdate=ge1980") == born
    assert await search_ids(client, "/fhir/Patient?birthdate=ge1980&birthdate=lt1990") == born & ids_where(
        "Patient", lambda r: matches_prefix("lt", birth_range(r), precision_range("1990")))


async def test_date_approximately(client):
    """ap: the query range widened by 10 % of its distance from now on each side, overlapping the value."""
    ql, qh = precision_range("2000-06-15")

    def approximately(margin_change: timedelta) -> set[str]:
        margin = abs(datetime.now(timezone.utc) - (ql + (qh - ql) / 2)) / 10 + margin_change
        return ids_where("Patient", lambda r: birth_range(r)[0] <= qh + margin and birth_range(r)[1] >= ql - margin)

    narrow = approximately(timedelta(minutes=-1))
    found = await search_ids(client, "/fhir/Patient?birthdate=ap2000-06-15")
    assert narrow and narrow <= found <= approximately(timedelta(minutes=1))


async def test_last_updated(client):
    assert await count(client, "/fhir/Patient?_lastUpdated=gt2000-01-01") == len(resources("Patient"))
    assert await count(client, "/fhir/Patient?_lastUpdated=lt2000-01-01") == 0


# --- quantity -----------------------------------------------------------------------------------------------

def quantity(observation) -> dict | None:
    return observation.get("valueQuantity")


@pytest.mark.parametrize(("search", "test"), [
    (f"gt100|{UCUM}|mg/dL", lambda q: q["value"] > 100 and q.get("code") == "mg/dL" and q.get("system") == UCUM),
    ("lt5||mmol/L", lambda q: q["value"] < 5 and q.get("code") == "mmol/L"),
    ("ge100", lambda q: q["value"] >= 100),
    ("le2", lambda q: q["value"] <= 2),
    ("sa300", lambda q: q["value"] > 300),
    ("eb1", lambda q: q["value"] < 1),
    ("72", lambda q: Decimal("71.5") <= Decimal(repr(q["value"])) < Decimal("72.5")),
    ("72.0", lambda q: Decimal("71.95") <= Decimal(repr(q["value"])) < Decimal("72.05")),
    ("ne72", lambda q: not Decimal("71.5") <= Decimal(repr(q["value"])) < Decimal("72.5")),
    ("ap100", lambda q: 90 <= q["value"] <= 110),
])
async def test_value_quantity(client, search, test):
    expected = ids_where("Observation", lambda r: quantity(r) is not None and test(quantity(r)))
    assert expected
    assert await count(client, f"/fhir/Observation?value-quantity={quote(search)}") == len(expected)


# --- refusals and lenient handling --------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "message"), [
    ("/fhir/Organization?nonsense=1", "Unknown search parameter 'nonsense'"),
    ("/fhir/Patient?birthdate=gt2020-13", "Invalid date"),
    ("/fhir/Patient?gender:contains=m", "Modifier ':contains' is not supported"),
    ("/fhir/Observation?subject.name=x", "name the type"),
    ("/fhir/Observation?combo-code-value-quantity=x", "expects 2 values separated by '$'"),
    ("/fhir/Observation?value-quantity=abc", "Invalid number"),
    ("/fhir/Organization?_sort=nonsense", "Cannot sort on 'nonsense'"),
    ("/fhir/Organization?_count=x", "Invalid _count"),
    ("/fhir/Organization?_cursor=garbage", "Invalid _cursor"),
    ("/fhir/Observation?subject:Patient.organization.partof.partof.partof.name=x", "chains more than 4 references"),
])
async def test_refusals(client, url, message):
    outcome = await get_bundle(client, url, status=400)
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]


async def test_lenient_handling_ignores_unknown_parameters(client):
    url = "/fhir/Organization?nonsense=1&name=acme"
    bundle = await get_bundle(client, url, headers={"Prefer": "handling=lenient"})
    outcome = entries(bundle, "outcome")
    assert len(outcome) == 1
    issue = outcome[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning" and "nonsense" in issue["diagnostics"]
    expected = ids_where("Organization", lambda r: any(folded(n).startswith("acme") for n in names(r)))
    assert {entry["resource"]["id"] for entry in entries(bundle)} == expected
