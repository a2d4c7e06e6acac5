"""Signed bearer tokens for the benchmarks: the service in its `jwks` mode (RS256, keys served by this
process as a Keycloak realm serves them) or its `hs256` mode, and one token it accepts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from bench.common import free_port

ISSUER = "https://keycloak.bench/realms/ehealth"
AUDIENCE = "fhir-reindex-service"
HS256_SECRET = "bench-secret-of-at-least-thirty-two-characters"
KID = "bench-key"


def claims(roles: list[str], lifetime: int = 3600) -> dict[str, Any]:
    """Keycloak-like access token claims, with the roles Keycloak adds to every user."""
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + lifetime, "user_id": "bench",
            "user_type": "SYSTEM", "azp": "bench-client", "scope": "openid profile email",
            "realm_access": {"roles": [*roles, "offline_access", "uma_authorization", "default-roles-ehealth"]}}


@asynccontextmanager
async def signed_auth(mode: str, roles: list[str]) -> AsyncIterator[tuple[dict[str, str], str]]:
    """The service's environment for `mode` (`jwks` or `hs256`) and a token with `roles` valid for an hour."""
    common = {"FHIR_AUTH_MODE": mode, "FHIR_JWT_ISSUERS": ISSUER, "FHIR_JWT_AUDIENCE": AUDIENCE}
    if mode == "hs256":
        yield {**common, "FHIR_HS256_SECRET": HS256_SECRET}, jwt.encode(claims(roles), HS256_SECRET, "HS256")
        return
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = jwk.construct(pem, "RS256").public_key().to_dict()
    app = web.Application()
    app.router.add_get("/certs", lambda _: _json({"keys": [{**public, "kid": KID, "use": "sig"}]}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        token = jwt.encode(claims(roles), pem, "RS256", headers={"kid": KID})
        yield {**common, "FHIR_JWKS_URLS": f"http://127.0.0.1:{port}/certs"}, token
    finally:
        await runner.cleanup()


async def _json(value: dict[str, Any]) -> web.Response:
    return web.json_response(value)
