"""Index values a HAPI client expects (issue 9, section 6), through the real app and PostgreSQL: the code
system of bound codes, which absolute references are local, and the Address parts a string search sees."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from service.app import create_app
from service.jobs.start import ReindexPlan
from service.search.param_hash import sp_hash
from service.settings import Settings
from tests.search_data import search_ids
from tests.test_reindex_modes import run_job

FHIR_JSON = {"Content-Type": "application/fhir+json"}
LOCAL_BASE = "https://fhir.example.org/fhir"
GENDER = "http://hl7.org/fhir/administrative-gender"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"local_base_urls": [LOCAL_BASE + "/"]})  # the slash is dropped


def test_local_bases_are_the_configured_ones_and_the_public_base():
    settings = Settings(local_base_urls=" https://a.example/fhir/, http://b.example:8080/fhir ",
                        public_base_url="http://b.example:8080/fhir/")
    assert settings.local_bases == ("https://a.example/fhir", "http://b.example:8080/fhir")
    assert Settings(local_base_urls="", public_base_url=None).local_bases == ()


async def put(client, resource: dict) -> None:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                                headers=FHIR_JSON)
    assert response.status == 201, await response.text()


async def found(client, query: str) -> set[str]:
    return await search_ids(client, query.replace("|", quote("|")))


async def test_bound_codes_match_with_and_without_their_system(client):
    await put(client, {"resourceType": "Patient", "id": "m", "gender": "male"})
    await put(client, {"resourceType": "Patient", "id": "f", "gender": "female"})
    await put(client, {"resourceType": "Patient", "id": "none"})
    assert await found(client, "/fhir/Patient?gender=male") == {"m"}
    assert await found(client, f"/fhir/Patient?gender={GENDER}|male") == {"m"}
    assert await found(client, f"/fhir/Patient?gender={GENDER}|male,{GENDER}|female") == {"m", "f"}
    assert await found(client, f"/fhir/Patient?gender={GENDER}|") == {"m", "f"}
    assert await found(client, "/fhir/Patient?gender=|male") == set()  # `|code` means "no system", as in HAPI
    assert await found(client, "/fhir/Patient?gender=http://example.org/sex|male") == set()
    assert await found(client, f"/fhir/Patient?gender:not={GENDER}|male") == {"f", "none"}

    await put(client, {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}})
    assert await found(client, "/fhir/Observation?status=http://hl7.org/fhir/observation-status|final") == {"o"}


async def test_only_references_on_a_local_base_are_local(client):
    request_base = str(client.make_url("/fhir"))  # the base clients of this request see; not configured
    await put(client, {"resourceType": "Patient", "id": "23", "name": [{"family": "Local"}]})
    subjects = {"relative": "Patient/23", "remote": "http://example.org/fhir/Patient/23",
                "local-absolute": f"{LOCAL_BASE}/Patient/23/_history/1", "request-base": f"{request_base}/Patient/23"}
    for observation_id, reference in subjects.items():
        await put(client, {"resourceType": "Observation", "id": observation_id, "status": "final",
                           "code": {"text": "x"}, "subject": {"reference": reference}})

    assert await found(client, "/fhir/Observation?subject=Patient/23") == {"relative", "local-absolute"}
    assert await found(client, "/fhir/Observation?patient=23") == {"relative", "local-absolute"}
    assert await found(client, f"/fhir/Observation?subject={LOCAL_BASE}/Patient/23") == {"relative", "local-absolute"}
    assert await found(client, "/fhir/Observation?subject=http://example.org/fhir/Patient/23") == {"remote"}
    assert await found(client, "/fhir/Observation?patient=http://example.org/fhir/Patient/23") == {"remote"}
    # a URL on the request's own base matches references written either way
    assert await found(client, f"/fhir/Observation?subject={request_base}/Patient/23") == {
        "relative", "local-absolute", "request-base"}
    assert await found(client, "/fhir/Observation?subject:Patient.name=Local") == {"relative", "local-absolute"}
    bundle = await (await client.get("/fhir/Observation?_id=local-absolute,remote&_include=Observation:subject")).json()
    assert [entry["resource"]["id"] for entry in bundle["entry"] if entry["search"]["mode"] == "include"] == ["23"]


async def test_address_search_does_not_see_address_text(client):
    await put(client, {"resourceType": "Patient", "id": "text-only",
                       "address": [{"text": "12 Elm Street, Springfield"}], "name": [{"text": "Ann Smith"}]})
    await put(client, {"resourceType": "Patient", "id": "parts",
                       "address": [{"line": ["12 Elm Street"], "city": "Springfield", "district": "Hampden",
                                    "text": "Text Only Town"}]})
    assert await found(client, "/fhir/Patient?address=Springfield") == {"parts"}
    assert await found(client, "/fhir/Patient?address=12%20Elm") == {"parts"}
    assert await found(client, "/fhir/Patient?address=Hampden") == {"parts"}  # district: indexed, as HAPI
    assert await found(client, "/fhir/Patient?address:contains=Only%20Town") == set()
    assert await found(client, "/fhir/Patient?address:missing=true") == {"text-only"}
    assert await found(client, "/fhir/Patient?name=Ann") == {"text-only"}  # HumanName.text is indexed, as HAPI


async def test_forced_reindex_brings_rows_of_the_previous_extraction_up_to_date(aiohttp_client, settings, db):
    """Rows unlike what their recorded extractor and fingerprint say (changed outside the service) are replaced
    by `$reindex force=true`, which compares with the rows stored; a plain job, trusting the fingerprints,
    leaves them (rows of an older extractor are another matter: tests/test_extractor_upgrade.py)."""
    client = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    await put(client, {"resourceType": "Patient", "id": "m", "gender": "male"})
    # rows without the system, and a fingerprint of those rows, yet this extractor recorded
    await db.execute("UPDATE idx_token SET system = NULL WHERE sp_hash = $1", sp_hash("Patient", "gender"))
    await db.execute("UPDATE resource_index_state SET index_hash = index_hash # 1")
    assert await found(client, f"/fhir/Patient?gender={GENDER}|male") == set()

    plain = await run_job(client, ReindexPlan(types=("Patient",)), db)
    assert (plain["processed"], plain["changed"]) == (1, 0)
    forced = await run_job(client, ReindexPlan(types=("Patient",), force=True), db)
    assert (forced["processed"], forced["changed"]) == (1, 1)
    assert await found(client, f"/fhir/Patient?gender={GENDER}|male") == {"m"}
