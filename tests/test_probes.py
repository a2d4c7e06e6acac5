"""Probes and metrics: open without a token, honest about the database and draining."""

from __future__ import annotations

import structlog

from service.app import create_app
from service.db import load_migrations
from service.http.keys import LIFECYCLE

# A migration of a newer release than this code, as a rollback leaves it behind.
NEWER = load_migrations()[-1].version + 1
RECORD_NEWER = "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, 'from_a_newer_release', 'x')"


async def test_livez_and_readyz(client):
    live = await client.get("/livez")
    assert live.status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "ready" and body["schema_version"] >= 1
    assert (await client.get("/healthz")).status == 200


async def test_readyz_503_while_draining(client):
    client.server.app[LIFECYCLE].draining = True
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "draining"
    assert (await client.get("/livez")).status == 200


async def test_readyz_503_when_database_is_gone(client, db):
    await db.execute("DROP TABLE schema_migration")
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await client.get("/livez")).status == 200


async def test_replica_started_on_a_newer_schema_is_not_ready(aiohttp_client, settings, db):
    await db.execute(RECORD_NEWER, NEWER)
    client = await aiohttp_client(create_app(settings))  # start-up still succeeds
    with structlog.testing.capture_logs() as logs:
        answers = [await client.get("/readyz") for _ in range(3)]
    assert [answer.status for answer in answers] == [503, 503, 503]
    body = await answers[0].json()
    assert body["status"] == "schema newer than code"
    assert (body["schema_version"], body["code_schema_version"]) == (NEWER, NEWER - 1)
    assert f"version {NEWER}, newer than this release's {NEWER - 1}" in body["detail"]
    (warning,) = [entry for entry in logs if entry["event"] == "schema_newer_than_code"]
    assert warning["log_level"] == "warning" and warning["schema_version"] == NEWER
    assert (await client.get("/livez")).status == 200
    # The check is live: once the newer migration is gone (a restored database), the replica is ready.
    await db.execute("DELETE FROM schema_migration WHERE version = $1", NEWER)
    assert (await client.get("/readyz")).status == 200


async def test_replica_stays_ready_when_an_upgrade_migrates_under_it(client, db):
    assert (await client.get("/readyz")).status == 200
    await db.execute(RECORD_NEWER, NEWER)  # the first pod of the next release has migrated
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["schema_version"] == NEWER
    assert not [entry for entry in logs if entry["event"] == "schema_newer_than_code"]


async def test_metrics_count_requests(client):
    await client.get("/fhir/metadata")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'fhir_http_requests_total{method="GET",route="/fhir/metadata",status="200"} 1.0' in text
    assert "fhir_http_request_duration_seconds_bucket" in text
    assert "fhir_db_pool_size" in text
