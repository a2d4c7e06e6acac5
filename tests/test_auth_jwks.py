"""jwks mode against a JWKS endpoint served by the test: refusals, key rotation, rate-limited refetching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.settings import Settings
from tests.tokens import ISSUER, SEED_TOKEN, SigningKey, bearer, claims, hs256_raw, unsigned

KEY_A = SigningKey.generate("key-a")
KEY_B = SigningKey.generate("key-b")
IMPOSTOR = SigningKey.generate("key-a")  # same kid as KEY_A, another key: its signatures must not verify
ORG_ROLES = ["Organization.read", "Organization.search", "Organization.write"]
ORG = {"resourceType": "Organization", "name": "Acme"}


@dataclass
class KeyServer:
    """A Keycloak realm's certs endpoint: publishes `keys`, counts requests, can be made to fail."""

    keys: list[SigningKey]
    url: str = ""
    requests: int = 0
    status: int = 200

    async def certs(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.json_response({"keys": [key.public_jwk() for key in self.keys]})


StartKeyServer = Callable[..., Awaitable[KeyServer]]
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_key_server(aiohttp_server) -> StartKeyServer:
    async def start(*keys: SigningKey) -> KeyServer:
        state = KeyServer(list(keys))
        app = web.Application()
        app.router.add_get("/realms/ehealth/protocol/openid-connect/certs", state.certs)
        server = await aiohttp_server(app)
        state.url = str(server.make_url("/realms/ehealth/protocol/openid-connect/certs"))
        return state

    return start


@pytest.fixture
def jwks_client(aiohttp_client, settings: Settings) -> MakeClient:
    """A client of the app in jwks mode against the given key servers; it sends no token of its own."""

    async def make(*servers: KeyServer, **overrides: Any) -> TestClient:
        jwks = settings.model_copy(update={"auth_mode": "jwks", "jwks_urls": [s.url for s in servers],
                                           "jwt_algorithms": ["RS256", "ES256"], **overrides})
        return await aiohttp_client(create_app(jwks), headers={})

    return make


@pytest.fixture
async def key_server(start_key_server: StartKeyServer) -> KeyServer:
    return await start_key_server(KEY_A)


def org_token(key: SigningKey = KEY_A, **extra: Any) -> dict[str, str]:
    return bearer(key.sign(claims(ORG_ROLES, **extra)))


def without(name: str) -> dict[str, Any]:
    token_claims = claims(ORG_ROLES)
    del token_claims[name]
    return token_claims


INVALID = 'error="invalid_token"'
CASES: list[tuple[str, Callable[[], dict[str, str]], str, str, int, str, str | None]] = [
    # (name, headers, method, path, status, issue code, WWW-Authenticate must contain)
    ("no header", lambda: {}, "POST", "/fhir/Organization", 401, "login", 'Bearer realm="fhir"'),
    ("wrong scheme", lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, "POST", "/fhir/Organization", 401, "login",
     'Bearer realm="fhir"'),
    ("empty bearer", lambda: {"Authorization": "Bearer "}, "POST", "/fhir/Organization", 401, "login", "Bearer"),
    ("garbage token", lambda: bearer("garbage"), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("garbage segments", lambda: bearer("a.b.c"), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("bad signature", lambda: bearer(IMPOSTOR.sign(claims(ORG_ROLES))), "POST", "/fhir/Organization", 401, "login",
     INVALID),
    ("expired", lambda: org_token(lifetime=-120), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("future nbf", lambda: org_token(nbf=int(time.time()) + 600), "POST", "/fhir/Organization", 401, "login",
     INVALID),
    ("no exp", lambda: bearer(KEY_A.sign(without("exp"))), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("wrong iss", lambda: org_token(iss="https://evil.test/realms/ehealth"), "POST", "/fhir/Organization", 401,
     "login", INVALID),
    ("no iss", lambda: bearer(KEY_A.sign(without("iss"))), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("wrong aud", lambda: org_token(aud="another-service"), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("alg none", lambda: bearer(unsigned(claims(ORG_ROLES))), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("alg none with kid", lambda: bearer(unsigned(claims(ORG_ROLES), {"alg": "none", "kid": "key-a"})), "POST",
     "/fhir/Organization", 401, "login", INVALID),
    ("alg None", lambda: bearer(unsigned(claims(ORG_ROLES), {"alg": "None"})), "POST", "/fhir/Organization", 401,
     "login", INVALID),
    ("seed token", lambda: bearer(SEED_TOKEN), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("hs256 with the public key", lambda: bearer(hs256_raw(claims(ORG_ROLES), KEY_A.public_pem.encode(), "key-a")),
     "POST", "/fhir/Organization", 401, "login", INVALID),
    ("unknown kid", lambda: org_token(KEY_B), "POST", "/fhir/Organization", 401, "login", INVALID),
    ("missing privilege", lambda: bearer(KEY_A.sign(claims(["Organization.read", "Patient.write"]))), "POST",
     "/fhir/Organization", 403, "forbidden", None),
    ("patient calls $reindex", lambda: bearer(KEY_A.sign(claims(["$reindex"], user_type="PATIENT"))), "POST",
     "/fhir/$reindex", 403, "forbidden", None),
    ("$reindex without privilege", lambda: org_token(), "POST", "/fhir/$reindex", 403, "forbidden", None),
    ("unknown route without token", lambda: {}, "GET", "/fhir/Organization/1/_nope", 401, "login", "Bearer"),
]


@pytest.mark.parametrize(("name", "headers", "method", "path", "status", "code", "challenge"), CASES,
                         ids=[case[0] for case in CASES])
async def test_refused(jwks_client: MakeClient, key_server: KeyServer, db, name, headers, method, path, status,
                       code, challenge) -> None:
    client = await jwks_client(key_server)
    sent = headers()
    with structlog.testing.capture_logs() as logs:
        response = await client.request(method, path, json=ORG, headers=sent)
    body = await response.json(content_type=None)
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    diagnostics = body["issue"][0]["diagnostics"]
    if challenge is None:
        assert "WWW-Authenticate" not in response.headers
        assert "is required" in diagnostics
    else:
        assert challenge in response.headers["WWW-Authenticate"]
        assert (INVALID in challenge) == ("error_description=" in response.headers["WWW-Authenticate"])
    assert await db.fetchval("SELECT count(*) FROM resource") == 0
    refused = [entry for entry in logs if entry["event"] == "request_refused"]
    assert refused and refused[0]["status"] == status and refused[0]["reason"] == diagnostics
    token = sent.get("Authorization", "").partition(" ")[2]
    if len(token) > 8:
        assert token not in str(logs) and token not in diagnostics
        assert token.split(".")[-1] not in str(logs) or not token.split(".")[-1]


async def test_valid_token_is_accepted(jwks_client: MakeClient, key_server: KeyServer, db) -> None:
    client = await jwks_client(key_server)
    with structlog.testing.capture_logs() as logs:
        created = await client.post("/fhir/Organization", json=ORG, headers=org_token(user_id="u-1"))
    assert created.status == 201, await created.text()
    assert await db.fetchval("SELECT count(*) FROM resource") == 1
    access = next(entry for entry in logs if entry["event"] == "access")
    assert access["user_id"] == "u-1" and access["user_type"] == "SYSTEM" and access["status"] == 201
    # The clock-skew leeway (30 s by default) accepts a token that expired a moment ago.
    assert (await client.get("/fhir/Organization/x", headers=org_token(lifetime=-5))).status == 404
    # A SYSTEM user with `$reindex` passes: the job is accepted.
    reindex = bearer(KEY_A.sign(claims(["$reindex"])))
    assert (await client.post("/fhir/$reindex", json={"resourceType": "Parameters"}, headers=reindex)).status == 202


async def test_key_rotation_is_picked_up_with_one_refetch(jwks_client: MakeClient, key_server: KeyServer) -> None:
    client = await jwks_client(key_server, jwks_min_refetch_seconds=0.2)
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_A))).status == 404
    assert key_server.requests == 1
    key_server.keys = [KEY_B]  # Keycloak rotated: key B signs, key A is retired
    await asyncio.sleep(0.25)
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_B))).status == 404
    assert key_server.requests == 2
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_B))).status == 404
    assert key_server.requests == 2
    # The retired key was dropped with the refetch; within the interval its kid costs no new fetch.
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_A))).status == 401
    assert key_server.requests == 2


async def test_unknown_kid_flood_is_rate_limited(jwks_client: MakeClient, key_server: KeyServer) -> None:
    client = await jwks_client(key_server, jwks_min_refetch_seconds=1.0)
    # Minted up front: RSA signing is slow enough to blur the timing of the floods.
    floods = [[bearer(KEY_A.sign(claims(ORG_ROLES), kid=f"made-up-{round_}-{i}")) for i in range(40)]
              for round_ in range(2)]

    async def flood(headers: list[dict[str, str]]) -> list[int]:
        responses = await asyncio.gather(*(client.get("/fhir/Organization/x", headers=h) for h in headers))
        return [response.status for response in responses]

    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert key_server.requests == 1
    assert await flood(floods[0]) == [401] * 40
    assert key_server.requests == 1  # within the minimum interval of the first fetch: none at all
    await asyncio.sleep(1.05)
    assert await flood(floods[1]) == [401] * 40
    assert key_server.requests == 2  # one refetch for the whole concurrent flood
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert key_server.requests == 2


async def test_keys_expire_after_the_cache_time(jwks_client: MakeClient, key_server: KeyServer) -> None:
    client = await jwks_client(key_server, jwks_cache_seconds=1, jwks_min_refetch_seconds=0)
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert key_server.requests == 1
    await asyncio.sleep(1.05)
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert key_server.requests == 2


async def test_key_server_down(jwks_client: MakeClient, key_server: KeyServer) -> None:
    key_server.status = 500
    client = await jwks_client(key_server, jwks_cache_seconds=1)
    response = await client.get("/fhir/Organization/x", headers=org_token())
    assert response.status == 503
    assert (await response.json(content_type=None))["issue"][0]["code"] == "transient"
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 503
    assert key_server.requests == 1  # failed fetches are rate-limited too


async def test_stale_keys_stay_in_use_while_the_key_server_is_down(jwks_client: MakeClient,
                                                                   key_server: KeyServer) -> None:
    client = await jwks_client(key_server, jwks_cache_seconds=1, jwks_min_refetch_seconds=0)
    assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    key_server.status = 500
    await asyncio.sleep(1.05)
    with structlog.testing.capture_logs() as logs:
        assert (await client.get("/fhir/Organization/x", headers=org_token())).status == 404
    assert key_server.requests == 2
    assert any(entry["event"] == "jwks_fetch_failed" and entry["keeping_keys"] == 1 for entry in logs)


ISSUER_B = "https://keycloak.test/realms/partners"


async def test_several_realms(jwks_client: MakeClient, start_key_server: StartKeyServer) -> None:
    first, second = await start_key_server(KEY_A), await start_key_server(KEY_B)
    second.status = 503  # one realm down does not stop the other
    client = await jwks_client(first, second, jwt_issuers=[ISSUER, ISSUER_B])
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_A))).status == 404
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_B, iss=ISSUER_B))).status == 503
    second.status = 200
    client = await jwks_client(first, second, jwt_issuers=[ISSUER, ISSUER_B])
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_B, iss=ISSUER_B))).status == 404


async def test_each_issuer_is_bound_to_its_own_key_set(jwks_client: MakeClient,
                                                       start_key_server: StartKeyServer) -> None:
    realm_a, realm_b = await start_key_server(KEY_A), await start_key_server(KEY_B)
    client = await jwks_client(realm_a, realm_b, jwt_issuers=[ISSUER, ISSUER_B])
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_A, iss=ISSUER))).status == 404
    assert (await client.get("/fhir/Organization/x", headers=org_token(KEY_B, iss=ISSUER_B))).status == 404
    # A key of realm A signing a token that claims realm B's issuer (and the other way round) is refused,
    # although both keys are known to the service.
    for key, issuer in [(KEY_A, ISSUER_B), (KEY_B, ISSUER)]:
        response = await client.get("/fhir/Organization/x", headers=org_token(key, iss=issuer))
        body = await response.json(content_type=None)
        assert response.status == 401, body
        assert body["issue"][0]["diagnostics"] == f"Authentication failed: The token is signed with an unknown key " \
                                                  f"(kid '{key.kid}')"
        assert INVALID in response.headers["WWW-Authenticate"]
    # An issuer that is not configured is refused before any key is looked up.
    fetched = realm_a.requests + realm_b.requests
    response = await client.get("/fhir/Organization/x", headers=org_token(KEY_A, iss="https://evil.test/realms/x"))
    assert response.status == 401
    assert "issuer (iss) is not accepted" in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert realm_a.requests + realm_b.requests == fetched


def test_one_key_set_serves_every_issuer_and_several_are_paired(settings: Settings) -> None:
    one = settings.model_copy(update={"jwks_urls": ["https://kc/a/certs"], "jwt_issuers": ["A", "B"]})
    assert one.jwks_urls_by_issuer() == {"A": ("https://kc/a/certs",), "B": ("https://kc/a/certs",)}
    paired = settings.model_copy(update={"jwks_urls": ["https://kc/a/certs", "https://kc/b/certs"],
                                         "jwt_issuers": ["A", "B"]})
    assert paired.jwks_urls_by_issuer() == {"A": ("https://kc/a/certs",), "B": ("https://kc/b/certs",)}


@pytest.mark.parametrize(("update", "message"), [
    ({"jwks_urls": []}, "FHIR_JWKS_URLS is empty"),
    ({"jwt_issuers": []}, "FHIR_JWT_ISSUERS is empty"),
    ({"jwt_algorithms": ["RS256", "HS256"]}, "FHIR_JWT_ALGORITHMS"),
    ({"jwt_algorithms": ["none"]}, "FHIR_JWT_ALGORITHMS"),
    ({"jwks_urls": ["http://kc.invalid/a/certs", "http://kc.invalid/b/certs"]},
     "FHIR_JWT_ISSUERS has 1 value\\(s\\) for 2 FHIR_JWKS_URLS"),
    ({"jwt_issuers": ["https://a", "https://b", "https://c"],
      "jwks_urls": ["http://kc.invalid/a/certs", "http://kc.invalid/b/certs"]}, "FHIR_JWT_ISSUERS has 3 value"),
])
def test_jwks_mode_refuses_to_start_without_what_it_needs(settings: Settings, update: dict, message: str) -> None:
    broken = settings.model_copy(update={"auth_mode": "jwks", "jwks_urls": ["http://kc.invalid/certs"], **update})
    with pytest.raises(ValueError, match=message):
        create_app(broken)


def test_jwks_is_the_default_mode_of_a_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FHIR_AUTH_MODE", "FHIR_JWKS_URLS", "FHIR_JWT_ISSUERS"):
        monkeypatch.delenv(name, raising=False)
    deployed = Settings(database_url="postgresql://db.invalid/fhir")
    assert deployed.auth_mode == "jwks"
    with pytest.raises(ValueError, match="FHIR_JWKS_URLS is empty"):
        create_app(deployed)
    assert Settings(database_url=None).auth_mode == "unsigned"
