"""Authentication in the unsigned and hs256 modes, open paths, and privileges through the real app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests.tokens import ALL_TYPE_ROLES, SEED_TOKEN, bearer, claims, hs256, unsigned

MakeClient = Callable[..., Awaitable[TestClient]]
ORG = {"resourceType": "Organization", "name": "Acme"}


@pytest.fixture
def app_client(aiohttp_client, settings: Settings) -> MakeClient:
    """A client (sending no token of its own) of the app with these settings changes."""

    async def make(**update: Any) -> TestClient:
        return await aiohttp_client(create_app(settings.model_copy(update=update)), headers={})

    return make


async def outcome(response, status: int, code: str) -> str:
    body = await response.json(content_type=None)
    assert response.status == status, body
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code
    return body["issue"][0]["diagnostics"]


async def test_seed_token_authenticates_in_unsigned_mode(app_client: MakeClient, db) -> None:
    client = await app_client(auth_mode="unsigned", jwt_issuers=[], jwt_audience=None)
    read = await client.get("/fhir/Organization/x", headers=bearer(SEED_TOKEN))
    assert "Organization.read" in await outcome(read, 403, "forbidden")
    create = await client.post("/fhir/Organization", json=ORG, headers=bearer(SEED_TOKEN))
    assert "Organization.create" in await outcome(create, 403, "forbidden")
    # Its privileges cover $reindex: authorised and accepted (an empty database: a job with nothing to do).
    reindex = await client.post("/fhir/$reindex", json={"resourceType": "Parameters"}, headers=bearer(SEED_TOKEN))
    assert reindex.status == 202
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


@pytest.mark.parametrize("mode", ["hs256", "jwks"])
async def test_seed_token_is_refused_in_verified_modes(app_client: MakeClient, mode: str) -> None:
    update: dict[str, Any] = {"auth_mode": mode}
    if mode == "jwks":  # never contacted: alg none is refused before any key is looked up
        update |= {"jwks_urls": ["http://127.0.0.1:9/certs"], "jwt_algorithms": ["RS256"]}
    client = await app_client(**update)
    response = await client.get("/fhir/Organization/x", headers=bearer(SEED_TOKEN))
    assert "algorithm 'none' is not accepted" in await outcome(response, 401, "login")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_unsigned_mode_still_checks_expiry(app_client: MakeClient) -> None:
    client = await app_client(auth_mode="unsigned")
    expired = await client.get("/fhir/Organization/x", headers=bearer(unsigned(claims(ALL_TYPE_ROLES, lifetime=-120))))
    assert "expired" in await outcome(expired, 401, "login")
    fresh = await client.get("/fhir/Organization/x", headers=bearer(unsigned(claims(ALL_TYPE_ROLES))))
    assert fresh.status == 404
    missing = await client.get("/fhir/Organization/x")
    await outcome(missing, 401, "login")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'


HS256_REFUSED = [
    ("wrong secret", lambda: hs256(claims(ALL_TYPE_ROLES), secret="another-secret-of-thirty-two-characters!"),
     "Signature verification failed"),
    ("expired", lambda: hs256(claims(ALL_TYPE_ROLES, lifetime=-120)), "expired"),
    ("wrong issuer", lambda: hs256(claims(ALL_TYPE_ROLES, iss="https://other.test")), "Invalid issuer"),
    ("wrong audience", lambda: hs256(claims(ALL_TYPE_ROLES, aud="other")), "Invalid audience"),
    ("alg none", lambda: unsigned(claims(ALL_TYPE_ROLES)), "algorithm 'none' is not accepted"),
    ("HS512", lambda: __import__("jose.jwt").jwt.encode(claims(ALL_TYPE_ROLES), "x" * 40, algorithm="HS512"),
     "algorithm 'HS512' is not accepted"),
    ("no alg", lambda: unsigned(claims(ALL_TYPE_ROLES), {"typ": "JWT"}), "no algorithm"),
    ("roles not a list", lambda: hs256(claims(realm_access={"roles": "Organization.read"})), "realm_access.roles"),
    ("exp not a number", lambda: hs256(claims(ALL_TYPE_ROLES, exp="tomorrow")), "exp"),
]


@pytest.mark.parametrize(("name", "token", "reason"), HS256_REFUSED, ids=[case[0] for case in HS256_REFUSED])
async def test_hs256_refusals(app_client: MakeClient, db, name: str, token, reason: str) -> None:
    client = await app_client()
    response = await client.post("/fhir/Organization", json=ORG, headers=bearer(token()))
    diagnostics = await outcome(response, 401, "login")
    assert reason in diagnostics
    assert reason in response.headers["WWW-Authenticate"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


async def test_open_paths_need_no_token(app_client: MakeClient) -> None:
    client = await app_client()
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/fhir/metadata"):
        assert (await client.get(path)).status == 200, path
    assert (await client.head("/fhir/metadata")).status == 200


async def test_unauthenticated_client_learns_no_routes(app_client: MakeClient) -> None:
    client = await app_client()
    for method, path in [("GET", "/fhir"), ("GET", "/fhir/Nope/1/2/3"), ("PATCH", "/fhir/Organization/1"),
                         ("POST", "/fhir/metadata"), ("GET", "/fhir/$reindex")]:
        response = await client.request(method, path)
        await outcome(response, 401, "login")
    # Outside the base path the router answers as before.
    assert (await client.get("/elsewhere")).status == 404


async def test_authenticated_unknown_routes_and_types_get_404(client) -> None:
    assert (await client.get("/fhir/Organisation/x")).status == 404
    assert (await client.get("/fhir/Organization/x/_nonsense")).status == 404
    assert (await client.post("/fhir/Organization/x", json=ORG)).status == 405


async def test_route_without_a_privilege_rule_is_refused(client, db) -> None:
    # PUT /{type}/{id} matches with id `_history`, but no privilege rule covers it: refused, fail closed.
    response = await client.put("/fhir/Organization/_history", json=ORG)
    assert "No privilege rule" in await outcome(response, 403, "forbidden")
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


async def test_write_privilege_and_403_on_other_interactions(app_client: MakeClient, db) -> None:
    client = await app_client()
    writer = bearer(hs256(claims(["Organization.write"], user_type="PRACTITIONER")))
    created = await client.put("/fhir/Organization/o1", json={**ORG, "id": "o1"}, headers=writer)
    assert created.status == 201
    assert (await client.delete("/fhir/Organization/o1", headers=writer)).status == 200
    read = await client.get("/fhir/Organization/o1", headers=writer)
    assert await outcome(read, 403, "forbidden") == "The privilege Organization.read is required for this request"
    history = await client.get("/fhir/Organization/_history", headers=writer)
    await outcome(history, 403, "forbidden")
    assert await db.fetchval("SELECT count(*) FROM resource_version") == 2


async def test_validate_needs_a_token_and_no_privilege(app_client: MakeClient, db) -> None:
    client = await app_client()
    assert (await client.post("/fhir/Organization/$validate", json=ORG)).status == 401
    reader = bearer(hs256(claims(["Patient.read"], user_type="PRACTITIONER")))
    response = await client.post("/fhir/Organization/$validate", json=ORG, headers=reader)
    assert await outcome(response, 200, "informational") == "No issues detected during validation"
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


async def test_system_history_needs_read_on_every_type(app_client: MakeClient) -> None:
    client = await app_client(role_map={"auditor": ["*.read"]})
    reader = bearer(hs256(claims([f"{t}.read" for t in ("Organization", "Patient")])))
    diagnostics = await outcome(await client.get("/fhir/_history", headers=reader), 403, "forbidden")
    assert "Account.read" in diagnostics and "more" in diagnostics
    auditor = bearer(hs256(claims(["auditor"], user_type="PRACTITIONER")))
    assert (await client.get("/fhir/_history", headers=auditor)).status == 200
    assert (await client.get("/fhir/Patient/x", headers=auditor)).status == 404


INSTANCE_OPERATIONS = [("GET", "/fhir/Organization/o1/$reindex-dryrun"),
                       ("POST", "/fhir/Organization/o1/$reindex-dryrun"), ("POST", "/fhir/Organization/o1/$reindex")]
REINDEX_CASES = [
    # (roles, user_type, status, diagnostics of the refusal)
    (["$reindex"], "SYSTEM", 403, "The privilege Organization.read is required for this request"),
    (["$reindex", "Patient.read"], "SYSTEM", 403, "The privilege Organization.read is required for this request"),
    (["Organization.read"], "SYSTEM", 403, "The privilege $reindex is required for this request"),
    (["$reindex", "Organization.read"], "PRACTITIONER", 403,
     "The user_type SYSTEM is required for this request, not PRACTITIONER"),
    (["$reindex", "Organization.read"], "SYSTEM", 200, None),
]


@pytest.mark.parametrize(("roles", "user_type", "status", "reason"), REINDEX_CASES,
                         ids=["reindex only", "other type's read", "read only", "not SYSTEM", "reindex and read"])
async def test_instance_reindex_shows_index_values_only_to_readers(client, roles, user_type, status, reason) -> None:
    org = {"resourceType": "Organization", "id": "o1", "name": "Acme Hospital"}
    assert (await client.put("/fhir/Organization/o1", json=org)).status == 201
    token = bearer(hs256(claims(roles, user_type=user_type)))
    for method, path in INSTANCE_OPERATIONS:
        response = await client.request(method, path, headers=token)
        if reason is not None:
            assert await outcome(response, status, "forbidden") == reason
            continue
        body = await response.json(content_type=None)
        assert response.status == 200, body
        assert body["resourceType"] == "Parameters" and "Acme Hospital" in str(body)


async def test_role_map_grants_privileges(app_client: MakeClient, db) -> None:
    client = await app_client(role_map={"fhir-admin": ["Organization.read", "Organization.write"]})
    admin = bearer(hs256(claims(["fhir-admin"], user_type="PRACTITIONER")))
    created = await client.post("/fhir/Organization", json=ORG, headers=admin)
    assert created.status == 201
    fhir_id = (await created.json(content_type=None))["id"]
    assert (await client.get(f"/fhir/Organization/{fhir_id}", headers=admin)).status == 200
    patient = await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin)
    await outcome(patient, 403, "forbidden")


async def test_principal_is_logged_and_token_is_not(app_client: MakeClient) -> None:
    client = await app_client()
    token = hs256(claims(["Organization.read"], user_id="u-42", user_type="PRACTITIONER"))
    with structlog.testing.capture_logs() as logs:
        assert (await client.get("/fhir/Organization/x", headers=bearer(token))).status == 404
        assert (await client.post("/fhir/Organization", json=ORG, headers=bearer(token))).status == 403
        assert (await client.get("/fhir/Organization/x", headers=bearer(token + "x"))).status == 401
    access = [entry for entry in logs if entry["event"] == "access"]
    assert [(e["status"], e["user_id"], e["user_type"]) for e in access] == [
        (404, "u-42", "PRACTITIONER"), (403, "u-42", "PRACTITIONER"), (401, None, None)]
    refused = [entry["reason"] for entry in logs if entry["event"] == "request_refused" and entry["status"] != 404]
    assert "Organization.create" in refused[0] and "Signature verification failed" in refused[1]
    assert token.split(".")[2] not in str(logs) and token.split(".")[1] not in str(logs)


def test_hs256_mode_needs_a_long_secret(settings: Settings) -> None:
    for secret in (None, SecretStr("short")):
        with pytest.raises(ValueError, match="FHIR_HS256_SECRET"):
            create_app(settings.model_copy(update={"hs256_secret": secret}))
