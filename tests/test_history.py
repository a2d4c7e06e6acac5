"""History at instance, type and system level, with keyset paging that survives concurrent writes."""

from __future__ import annotations

from urllib.parse import urlsplit

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def put(client, res_type, fhir_id, **fields):
    response = await client.put(f"/fhir/{res_type}/{fhir_id}", json={"resourceType": res_type, "id": fhir_id, **fields},
                                headers=FHIR_JSON)
    assert response.status in (200, 201)


async def get_json(client, url):
    response = await client.get(url)
    assert response.status == 200, await response.text()
    return await response.json(content_type=None)


def relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def test_instance_history_newest_first_with_delete(client):
    await put(client, "Organization", "o1", name="v1")
    await put(client, "Organization", "o1", name="v2")
    assert (await client.delete("/fhir/Organization/o1")).status == 200
    bundle = await get_json(client, "/fhir/Organization/o1/_history")
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    entries = bundle["entry"]
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in entries[0]
    assert entries[0]["request"] == {"method": "DELETE", "url": "Organization/o1"}
    assert entries[1]["resource"]["name"] == "v2"
    assert entries[2]["request"]["method"] == "PUT"
    assert entries[2]["response"]["status"] == "201 Created" or entries[2]["response"]["status"] == "200 OK"


async def test_type_history_pages_with_next_links(client):
    for number in range(7):
        await put(client, "Organization", f"o{number}", name=f"n{number}")
    await put(client, "Patient", "p1")
    seen: list[str] = []
    url = "/fhir/Organization/_history?_count=3"
    pages = 0
    while url:
        bundle = await get_json(client, url)
        pages += 1
        seen.extend(entry["resource"]["id"] for entry in bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        # A write between pages must not shift the pages already keyed.
        if pages == 1:
            await put(client, "Organization", "late", name="late")
        url = relative(links["next"]) if "next" in links else None
    assert seen == [f"o{n}" for n in range(6, -1, -1)]
    assert pages == 3


async def test_system_history_and_since(client):
    await put(client, "Organization", "o1")
    await put(client, "Patient", "p1")
    bundle = await get_json(client, "/fhir/_history")
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient", "Organization"]
    last = bundle["entry"][0]["response"]["lastModified"]
    later = await get_json(client, f"/fhir/_history?_since={last.replace('+', '%2B')}")
    assert [e["resource"]["id"] for e in later["entry"]] == ["p1"]


async def test_instance_history_of_unknown_resource_is_404(client):
    response = await client.get("/fhir/Organization/nobody/_history")
    assert response.status == 404
