async def test_smoke(client, db):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Organization", "name": "A"}, "request": {"method": "POST", "url": "Organization"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Location", "name": "L", "managingOrganization": {"reference": "urn:uuid:1"}}, "request": {"method": "POST", "url": "Location"}},
        {"request": {"method": "GET", "url": "Organization?name=A"}},
    ]}
    r = await client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json", "Prefer": "return=representation"})
    print(r.status, await r.text())
    assert r.status == 200
    print(await db.fetch("select fhir_id, body from resource"))
