"""`_text` (the narrative) and `_content` (every string of the resource) through PostgreSQL full-text search,
against the loaded Plan-Net and Synthea data (written by `load`'s COPY) and through REST writes, compared
with word lists computed here from the NDJSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.search_data import get_bundle, resources, search_ids

TAG = re.compile(r"<[^>]*>")
EDGE_PUNCTUATION = ",;:()[]\"'!?*."


def words(text: str) -> list[str]:
    """The plain words of a text, lower-cased: a URL, an e-mail address or a host name (anything with `/`,
    `@`, `:` or an inner `.`) is not one, and a hyphenated word counts as its parts, as PostgreSQL's parser
    reads them."""
    found = []
    for piece in TAG.sub(" ", text).lower().split():
        piece = piece.strip(EDGE_PUNCTUATION)
        if not any(mark in piece for mark in "/@:."):
            found += [part for part in piece.split("-") if part.isalpha()]
    return found


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def narrative_words(resource: dict[str, Any]) -> list[str]:
    return words(resource.get("text", {}).get("div", ""))


def content_words(resource: dict[str, Any]) -> set[str]:
    return {word for text in strings(resource) for word in words(text)}


def expected(res_type: str, test) -> set[str]:
    return {resource["id"] for resource in resources(res_type) if test(resource)}


DATASETS = pytest.mark.dataset("plannet", "synthea-r4-2019")


@DATASETS
@pytest.mark.parametrize(("res_type", "query", "test"), [
    ("CarePlan", "diabetes", lambda r: "diabetes" in narrative_words(r)),
    ("CarePlan", "respiratory therapy", lambda r: {"respiratory", "therapy"} <= set(narrative_words(r))),
    ("CarePlan", "therapy -respiratory", lambda r: "therapy" in (w := narrative_words(r)) and "respiratory" not in w),
    ("CarePlan", "diabetes,antenatal", lambda r: bool({"diabetes", "antenatal"} & set(narrative_words(r)))),
    ("CarePlan", '"physical therapy"',
     lambda r: "physical therapy" in " ".join(narrative_words(r))),
    ("Organization", "network", lambda r: "network" in narrative_words(r)),
    ("Organization", "PAYER", lambda r: "payer" in narrative_words(r)),
])
async def test_text_searches_the_narrative(client, res_type, query, test):
    wanted = expected(res_type, test)
    assert wanted, "the query must match something in the data"
    assert await search_ids(client, f"/fhir/{res_type}?_text={quote(query)}&_count=200") == wanted


@DATASETS
@pytest.mark.parametrize(("res_type", "query", "test"), [
    ("Organization", "acme", lambda r: "acme" in content_words(r)),
    ("Organization", "health network", lambda r: {"health", "network"} <= content_words(r)),
    ("Condition", "diabetes", lambda r: "diabetes" in content_words(r)),
    ("Condition", "hypertension,asthma", lambda r: bool({"hypertension", "asthma"} & content_words(r))),
    ("Practitioner", "dr", lambda r: "dr" in content_words(r)),
    ("Location", "hospital -clinic", lambda r: "hospital" in (w := content_words(r)) and "clinic" not in w),
])
async def test_content_searches_every_string(client, res_type, query, test):
    wanted = expected(res_type, test)
    assert wanted, "the query must match something in the data"
    assert await search_ids(client, f"/fhir/{res_type}?_content={quote(query)}&_count=200") == wanted


@DATASETS
async def test_content_is_wider_than_text(client):
    in_text = await search_ids(client, "/fhir/Organization?_text=acme&_count=200")
    in_content = await search_ids(client, "/fhir/Organization?_content=acme&_count=200")
    assert in_text < in_content  # names and aliases are strings, not always narrative
    both = await search_ids(client, "/fhir/Organization?_content=acme&_text=network&_count=200")
    assert both == in_content & await search_ids(client, "/fhir/Organization?_text=network&_count=200")


async def test_every_rest_write_keeps_the_full_text(client):
    body = {"resourceType": "Organization", "name": "Zebra Clinic",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><b>Okapi</b> ward</div>'}}
    created = await (await client.post("/fhir/Organization", json=body)).json(content_type=None)
    url = f"/fhir/Organization/{created['id']}"

    async def found(parameter: str, word: str) -> bool:
        return created["id"] in await search_ids(client, f"/fhir/Organization?{parameter}={word}")
    assert await found("_text", "okapi") and await found("_content", "zebra") and not await found("_text", "zebra")
    assert not await found("_text", "b")  # the tags are not words
    body["id"], body["name"] = created["id"], "Yak Clinic"
    assert (await client.put(url, json=body)).status == 200
    assert await found("_content", "yak") and not await found("_content", "zebra")
    patch = [{"op": "replace", "path": "/text/div", "value": '<div xmlns="http://www.w3.org/1999/xhtml">Ibex</div>'}]
    response = await client.patch(url, json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert response.status == 200 and await found("_text", "ibex") and not await found("_text", "okapi")
    assert (await client.delete(url)).status == 200
    assert not await found("_content", "yak")


async def test_bundle_entries_are_searchable_at_once(client):
    entry = {"request": {"method": "POST", "url": "Organization"},
             "resource": {"resourceType": "Organization", "name": "Quokka House"}}
    for bundle_type in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": bundle_type, "entry": [entry]}
        assert (await client.post("/fhir", json=bundle)).status == 200
    assert len(await search_ids(client, "/fhir/Organization?_content=quokka")) == 2


@pytest.mark.parametrize("url", ["/fhir/Organization?_content:exact=x", "/fhir/Organization?_text:missing=true",
                                 "/fhir/Organization?_sort=_content"])
async def test_full_text_refusals(client, url):
    await get_bundle(client, url, status=400)
