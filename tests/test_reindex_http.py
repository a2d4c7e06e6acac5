"""$reindex over HTTP: the seed exchange, status polling through every state, refusals, cancel, and a
custom SearchParameter that becomes searchable (and stops warning) after a reindex."""

from __future__ import annotations

import asyncio
import gzip
import re

import orjson
import pytest

from service.app import create_app
from tests.conftest import DATA_DIR
from tests.test_search_parameters import NETWORK_URL, PLANNET_SEARCH_PARAMETERS

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SEED_TOKEN = ("eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoiZjRiYWMxMmItM2M2Yy00MTliLWI5NGYtMTNkNjFkZmUzOTg2IiwicmVhbG1fYWNjZXNz"
              "Ijp7InJvbGVzIjpbIiR0ZXN0LW9ubHktY3JlYXRlIiwiJHJlaW5kZXgiXX0sInVzZXJfdHlwZSI6IlNZU1RFTSJ9.")
SEED_HEADERS = {
    "Authorization": f"Bearer {SEED_TOKEN}",
    "Accept": "application/fhir+json;q=1.0, application/json+fhir;q=0.9",
    "User-Agent": "HAPI-FHIR/8.6.5 (FHIR Client; FHIR 4.0.1/R4; apache)",
    "Prefer": "respond-async",
    "Accept-Encoding": "gzip",
    "Content-Type": "application/fhir+json; charset=UTF-8",
    # The mesh terminates TLS in front of the service.
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "organization.cit-organization-1498.local",
}
SEED_BODY = (b'{\n  "resourceType": "Parameters",\n  "parameter": [\n    {\n      "name": "url",\n'
             b'      "valueString": "Organization?"\n    }\n  ]\n}')
POLL = re.compile(r"^https://organization\.cit-organization-1498\.local/fhir/\$hapi\.fhir\.reindex-status\?_jobId="
                  r"[0-9a-f-]{36}$")


def parameters(*entries: tuple[str, str, object]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": n, kind: v} for n, kind, v in entries]}


def local(url: str) -> str:
    return url[url.index("/fhir/"):]


async def poll_until_ended(client, url: str, timeout: float = 30, headers: dict | None = None):
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get(local(url), headers=headers)
            if response.status == 200:
                return response
            assert response.status == 202, await response.text()
            assert response.headers["X-Progress"].startswith("$reindex job has")
            assert "Retry-After" in response.headers
            await asyncio.sleep(0.05)


@pytest.fixture
def worker_settings(settings):
    return settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})


async def test_seed_exchange_is_answered_as_hapi_does(aiohttp_client, worker_settings, db):
    unsigned = worker_settings.model_copy(update={"auth_mode": "unsigned", "jwt_audience": None, "jwt_issuers": []})
    client = await aiohttp_client(create_app(unsigned))
    for number in range(32):
        organization = {"resourceType": "Organization", "name": f"Org {number}"}
        created = await client.post("/fhir/Organization", json=organization, headers=FHIR_JSON)
        assert created.status == 201
    response = await client.post("/fhir/$reindex", data=SEED_BODY, headers=SEED_HEADERS)
    assert response.status == 202
    location = response.headers["Content-Location"]
    assert POLL.match(location)
    outcome = await response.json(content_type=None)
    diagnostics = f"$reindex job has been accepted. Poll for status at the following URL: {location}"
    assert outcome["issue"] == [{"severity": "information", "code": "informational", "diagnostics": diagnostics}]
    assert outcome["text"]["div"] == ('<div xmlns="http://www.w3.org/1999/xhtml"><h1>Operation Outcome</h1>'
                                      '<table border="0"><tr><td style="font-weight: bold;">INFORMATION</td><td>[]</td>'
                                      f'<td>{diagnostics}</td></tr></table></div>')
    assert response.headers["X-Frame-Options"] == "DENY"

    ended = await poll_until_ended(client, location, headers=SEED_HEADERS)
    assert ended.headers["X-Progress"] == "$reindex job has completed successfully"
    bundle = await ended.json(content_type=None)
    assert bundle["type"] == "batch-response"
    entry = bundle["entry"][0]["response"]
    assert entry["status"] == "200 OK"
    report, link = (issue["diagnostics"] for issue in entry["outcome"]["issue"])
    assert report.startswith("Reindex (v3) Report")
    changed = int(re.search(r"Changed   : (\d+)", report).group(1))
    unchanged = int(re.search(r"Unchanged : (\d+)", report).group(1))
    assert "ResourceType[Organization]" in report and changed + unchanged == 32
    assert link == f"Access raw text report at URL: {location}&_return=report"
    raw = await client.get(local(location) + "&_return=report", headers=SEED_HEADERS)
    assert raw.headers["Content-Type"].startswith("text/plain") and await raw.text() == report
    assert await db.fetchval("SELECT created_by_type FROM job") == "SYSTEM"
    metrics = await (await client.get("/metrics")).text()
    counted = sum(float(value) for value in re.findall(r'^fhir_reindex_resources_total\{outcome="\w+"\} (\S+)$',
                                                        metrics, re.MULTILINE))
    assert counted == 32
    assert "fhir_reindex_batch_duration_seconds_count" in metrics


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"resourceType": "Parameters", "parameter": [', "JSON"),
    (b'{"resourceType": "Organization"}', "Parameters"),
    (orjson.dumps(parameters(("url", "valueString", "Organisation?"))), "Organisation"),
    (orjson.dumps(parameters(("url", "valueString", "Organization"))), "Organization"),
    (orjson.dumps(parameters(("url", "valueString", "Organization?nickname=x"))), "nickname"),
    (orjson.dumps(parameters(("reindexSearchParameters", "valueCode", "SOME"))), "reindexSearchParameters"),
    (orjson.dumps(parameters(("batchSize", "valueInteger", 0))), "batchSize"),
    (orjson.dumps(parameters(("correctCurrentVersion", "valueCode", "ALL"))), "optimisticLock"),
    (orjson.dumps(parameters(("reindexSearchParameters", "valueCode", "NONE"))), "nothing to do"),
    (orjson.dumps(parameters(("optimizeStorage", "valueCode", "EVERYTHING"))), "optimizeStorage"),
    (orjson.dumps(parameters(("force", "valueString", "always"))), "'force' must be a boolean"),
], ids=["malformed json", "not parameters", "unknown type", "no question mark", "unknown search parameter",
        "bad code", "zero batch", "correct with lock", "nothing to do", "bad storage mode", "bad force"])
async def test_bad_requests_are_400_and_create_no_job(client, db, body, problem):
    response = await client.post("/fhir/$reindex", data=body, headers=FHIR_JSON)
    assert response.status == 400
    outcome = await response.json(content_type=None)
    assert outcome["issue"][0]["severity"] == "error" and problem in outcome["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT count(*) FROM job") == 0


async def test_status_and_cancel_of_unknown_missing_and_queued_jobs(client, db):
    unknown = "/fhir/$hapi.fhir.reindex-status?_jobId=2f0e8e1c-0000-4000-8000-000000000000"
    for response in (await client.get(unknown), await client.delete(unknown)):
        assert response.status == 404
        assert "Invalid/unknown job ID: 2f0e8e1c-0000-4000-8000-000000000000" in await response.text()
    assert (await client.get("/fhir/$hapi.fhir.reindex-status")).status == 400
    created = await client.post("/fhir/Organization", json={"resourceType": "Organization"}, headers=FHIR_JSON)
    assert created.status == 201
    started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?")),
                                headers=FHIR_JSON)  # no Prefer: the extra warning issue
    codes = [issue["code"] for issue in (await started.json(content_type=None))["issue"]]
    assert codes == ["informational", "required"]
    path = local(started.headers["Content-Location"])
    queued = await client.get(path)  # this app runs no workers
    assert queued.status == 202 and queued.headers["X-Progress"] == "$reindex job has not yet started"
    job_id = path.rpartition("=")[2]
    metrics = await (await client.get("/metrics")).text()
    assert f'fhir_reindex_job_total{{job_id="{job_id}",state="queued"}} 0.0' in metrics  # not planned yet
    again = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?")),
                              headers={**FHIR_JSON, "Prefer": "respond-async"})
    assert again.headers["Content-Location"] == started.headers["Content-Location"]
    assert await db.fetchval("SELECT count(*) FROM job") == 1
    assert (await client.delete(path)).status == 202
    cancelled = await client.get(path)
    assert cancelled.status == 200 and cancelled.headers["X-Progress"] == "$reindex job has been cancelled"
    assert (await client.delete(path)).status == 200  # already ended: stays as it ended


def network_targets() -> dict[str, set[str]]:
    """PractitionerRole ids per network reference, read from the Plan-Net file itself."""
    targets: dict[str, set[str]] = {}
    with gzip.open(DATA_DIR / "plannet" / "PractitionerRole.ndjson.gz", "rb") as lines:
        for line in lines:
            role = orjson.loads(line)
            for extension in role.get("extension", []):
                if extension.get("url") == NETWORK_URL and "valueReference" in extension:
                    targets.setdefault(extension["valueReference"]["reference"], set()).add(role["id"])
    return targets


async def search_all(client, url: str) -> tuple[set[str], list[dict]]:
    body = await (await client.get(url)).json(content_type=None)
    matches = {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}
    outcomes = [e["resource"] for e in body.get("entry", []) if e["search"]["mode"] == "outcome"]
    return matches, outcomes


@pytest.mark.dataset("plannet")
async def test_custom_parameter_is_searchable_after_reindex(aiohttp_client, worker_settings, database_url):
    client = await aiohttp_client(create_app(worker_settings))
    for resource in PLANNET_SEARCH_PARAMETERS:
        response = await client.put(f"/fhir/SearchParameter/{resource['id']}", json=resource, headers=FHIR_JSON)
        assert response.status == 201
    network, expected = max(network_targets().items(), key=lambda item: len(item[1]))
    url = f"/fhir/PractitionerRole?network={network}&_count=1000"
    before, warnings = await search_all(client, url)
    assert before == set() and warnings  # stored before the parameter existed: not indexed yet, and said so

    started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "PractitionerRole?")),
                                headers={**FHIR_JSON, "Prefer": "respond-async"})
    ended = await poll_until_ended(client, started.headers["Content-Location"])
    assert ended.headers["X-Progress"] == "$reindex job has completed successfully"
    async with asyncio.timeout(5):  # the catalog learns the parameter is indexed through NOTIFY
        while True:
            after, warnings = await search_all(client, url)
            if not warnings:
                break
            await asyncio.sleep(0.05)
    assert after == expected


@pytest.mark.dataset("plannet")
async def test_a_search_filter_limits_the_job(aiohttp_client, worker_settings, database_url, db):
    client = await aiohttp_client(create_app(worker_settings))
    matching = await db.fetchval(
        "SELECT count(*) FROM resource WHERE res_type = 'Organization' AND "
        "jsonb_path_exists(convert_from(body, 'UTF8')::jsonb, '$.type[*].coding[*] ? (@.code == \"prvgrp\")')")
    started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?type=prvgrp")),
                                headers=FHIR_JSON)
    await poll_until_ended(client, started.headers["Content-Location"])
    assert 0 < matching < await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Organization'")
    assert await db.fetchval("SELECT sum(processed) FROM job_chunk") == matching
    assert await db.fetchval("SELECT full_coverage FROM job") is False


def sections(parameters: dict) -> dict[str, dict[str, list[dict]]]:
    """{section: {code: [parts of each entry]}} of an instance $reindex answer."""
    result: dict[str, dict[str, list[dict]]] = {}
    for parameter in parameters["parameter"]:
        for part in parameter.get("part", []):
            values = {sub["name"]: next(v for k, v in sub.items() if k.startswith("value")) for sub in part["part"]}
            result.setdefault(parameter["name"], {}).setdefault(part["name"], []).append(values)
    return result


def message_of(parameters: dict) -> str:
    return next(p["valueString"] for p in parameters["parameter"] if p["name"] == "Message")


async def test_instance_dryrun_and_reindex(client, db):
    org = {"resourceType": "Organization", "id": "o1", "name": "Acme",
           "identifier": [{"system": "urn:oid:1.2", "value": "42"}]}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    # Make the stored name row stale, as an older definition would have left it.
    await db.execute("UPDATE idx_string SET exact = 'Old', normalized = 'old' WHERE exact = 'Acme'")
    stale = await db.fetchval("SELECT count(*) FROM idx_string WHERE exact = 'Old'")  # name and phonetic

    dry = await client.get("/fhir/Organization/o1/$reindex-dryrun?code=name")
    body = await dry.json(content_type=None)
    assert dry.status == 200
    assert message_of(body).startswith("Reindex dry-run completed in")
    assert "No changes were committed" in message_of(body)
    names = sections(body)["StringIndexes"]["name"]
    assert {(n["Action"], n["ValueExact"]) for n in names} == {("ADD", "Acme"), ("REMOVE", "Old")}
    assert "TokenIndexes" not in sections(body)  # limited to `name`
    assert await db.fetchval("SELECT count(*) FROM idx_string WHERE exact = 'Old'") == stale  # nothing written

    done = await client.post("/fhir/Organization/o1/$reindex")
    body = await done.json(content_type=None)
    assert message_of(body).startswith("Reindex completed in")
    tokens = sections(body)["TokenIndexes"]["identifier"]
    assert {(t["Action"], t["System"], t["Value"]) for t in tokens} == {("NO_CHANGE", "urn:oid:1.2", "42")}
    assert await db.fetchval("SELECT count(*) FROM idx_string WHERE exact = 'Old'") == 0
    assert await db.fetchval("SELECT count(*) FROM idx_string WHERE exact = 'Acme'") == stale
    assert (await client.post("/fhir/Organization/nobody/$reindex")).status == 404
