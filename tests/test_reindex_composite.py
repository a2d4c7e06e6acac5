"""Composite and `near` rows go through `$reindex` like the others: verify reports their damage per parameter,
force rewrites them to what a clean extraction gives."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_reindex_http import parameters, poll_until_ended

FHIR_JSON = {"Content-Type": "application/fhir+json"}
DAMAGED = {("Observation", "combo-code-value-quantity"): "idx_composite", ("Location", "near"): "idx_position"}


async def run(client, option: str) -> str:
    started = await client.post("/fhir/$reindex", json=parameters((option, "valueBoolean", True)), headers=FHIR_JSON)
    assert started.status == 202, await started.text()
    ended = await poll_until_ended(client, started.headers["Content-Location"])
    return (await ended.json(content_type=None))["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]


# 3,000 of Synthea's 12,652 Observations hold every kind of composite the test damages, at a quarter of the cost.
@pytest.mark.dataset("synthea-r4-2019/Observation.ndjson.gz:3000", "plannet/Location.ndjson.gz")
async def test_verify_reports_and_force_repairs_composite_and_position_rows(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    registry = Registry.builtin()
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)  # as loaded
    for (res_type, code), table in DAMAGED.items():
        deleted = await db.execute(f"DELETE FROM {table} WHERE sp_hash = $1 AND res_id % 5 = 0",
                                   sp_hash(res_type, code))
        assert deleted != "DELETE 0"
    report = await run(client, "verify")
    lines = [line.strip() for line in report.splitlines()]
    for _, code in DAMAGED:
        assert any(line.startswith(f"{code}: ") for line in lines), report
    await run(client, "force")
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)
