"""Verified tokens are remembered through the real app: never past their exp, never for another token
(a forged signature), never beyond the key set they were verified with."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.http.keys import TOKEN_VERIFIER
from service.settings import Settings
from tests.test_auth_jwks import KEY_A, KEY_B, ORG_ROLES, KeyServer
from tests.tokens import ALL_TYPE_ROLES, bearer, claims, hs256

MISSING = "/fhir/Organization/missing"


async def counting_client(aiohttp_client, settings: Settings, **update: Any) -> tuple[TestClient, list[str]]:
    """A client of the app with these settings, and the list of tokens it verified in full."""
    app = create_app(settings.model_copy(update=update))
    client = await aiohttp_client(app, headers={})
    verifier = app[TOKEN_VERIFIER]
    verified: list[str] = []
    full = verifier.verify

    async def verify(token: str) -> dict[str, Any]:
        verified.append(token)
        return await full(token)

    verifier.verify = verify  # type: ignore[method-assign]
    return client, verified


async def status(client: TestClient, token: str) -> int:
    return (await client.get(MISSING, headers=bearer(token))).status


async def test_a_cached_token_is_refused_once_it_expires(aiohttp_client, settings: Settings) -> None:
    client, verified = await counting_client(aiohttp_client, settings, jwt_leeway_seconds=0)
    exp = int(time.time()) + 3  # time for three requests on a busy machine before it passes
    token = hs256(claims(ALL_TYPE_ROLES, exp=exp))
    assert [await status(client, token) for _ in range(3)] == [404] * 3
    assert verified == [token]  # verified once, then remembered
    await asyncio.sleep(exp + 1.05 - time.time())  # jose compares whole seconds: `exp` itself still passes
    response = await client.get(MISSING, headers=bearer(token))
    assert response.status == 401
    assert "expired" in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert verified == [token, token]


async def test_a_forged_signature_is_refused_though_the_genuine_token_is_cached(aiohttp_client,
                                                                               settings: Settings) -> None:
    client, verified = await counting_client(aiohttp_client, settings)
    same_claims = claims(ALL_TYPE_ROLES)
    genuine = hs256(same_claims)
    forged = hs256(same_claims, secret="another-secret-of-thirty-two-characters!")
    assert genuine.rpartition(".")[0] == forged.rpartition(".")[0]  # header and claims alike
    assert await status(client, genuine) == 404
    for _ in range(2):
        assert await status(client, forged) == 401
    assert await status(client, genuine) == 404
    assert verified == [genuine, forged, forged]


async def test_privileges_are_checked_on_every_request_with_a_cached_token(aiohttp_client,
                                                                          settings: Settings) -> None:
    client, verified = await counting_client(aiohttp_client, settings)
    token = hs256(claims(["Organization.read"]))
    assert await status(client, token) == 404
    assert (await client.get("/fhir/Patient/x", headers=bearer(token))).status == 403
    assert (await client.post("/fhir/Organization", json={"resourceType": "Organization"},
                              headers=bearer(token))).status == 403
    assert verified == [token]


@pytest.fixture
async def key_server(aiohttp_server) -> KeyServer:
    state = KeyServer([KEY_A])
    app = web.Application()
    app.router.add_get("/certs", state.certs)
    state.url = str((await aiohttp_server(app)).make_url("/certs"))
    return state


async def cached_key_a_token(aiohttp_client, settings: Settings, key_server: KeyServer,
                             **update: Any) -> tuple[TestClient, str]:
    """A client in jwks mode, and a token of key A it has verified and remembered."""
    client, verified = await counting_client(aiohttp_client, settings, auth_mode="jwks", jwks_urls=[key_server.url],
                                             jwt_algorithms=["RS256"], **update)
    token_a = KEY_A.sign(claims(ORG_ROLES))
    assert [await status(client, token_a) for _ in range(3)] == [404] * 3
    assert verified == [token_a, token_a]  # the first verification fetched the keys: remembered from the second
    return client, token_a


async def test_a_cached_token_goes_with_a_key_dropped_from_the_key_set(aiohttp_client, settings: Settings,
                                                                      key_server: KeyServer) -> None:
    client, token_a = await cached_key_a_token(aiohttp_client, settings, key_server, jwks_min_refetch_seconds=0.2)
    key_server.keys = [KEY_B]  # rotated: key A retired
    await asyncio.sleep(0.25)
    assert await status(client, KEY_B.sign(claims(ORG_ROLES))) == 404  # an unknown kid: the keys are fetched again
    assert key_server.requests == 2
    assert await status(client, token_a) == 401


async def test_a_cached_token_is_verified_again_when_the_key_set_is_due(aiohttp_client, settings: Settings,
                                                                       key_server: KeyServer) -> None:
    client, token_a = await cached_key_a_token(aiohttp_client, settings, key_server, jwks_cache_seconds=1)
    key_server.keys = [KEY_B]
    await asyncio.sleep(1.05)  # the key cache's period has passed: the token is not trusted beyond it
    assert await status(client, token_a) == 401
    assert key_server.requests == 2
