"""Probes and metrics: open without a token, honest about the database and draining."""

from __future__ import annotations

from service.http.keys import LIFECYCLE


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


async def test_metrics_count_requests(client):
    await client.get("/fhir/metadata")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'fhir_http_requests_total{method="GET",route="/fhir/metadata",status="200"} 1.0' in text
    assert "fhir_http_request_duration_seconds_bucket" in text
    assert "fhir_db_pool_size" in text
