"""Test tokens: an RSA signing key with its JWK, and helpers that mint RS256, HS256 and unsigned tokens."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.backends.base import Key
from jose.utils import base64url_encode

from service.fhir.resource_types import RESOURCE_TYPES

ISSUER = "https://keycloak.test/realms/ehealth"
AUDIENCE = "fhir-reindex-service"
HS256_SECRET = "test-secret-of-at-least-thirty-two-characters"
ALL_TYPE_ROLES = [f"{t}.{p}" for t in sorted(RESOURCE_TYPES) for p in ("read", "search", "write")]

# The seed request's own Authorization token (shared/seed/POST_reindex.txt), verbatim: alg none, no exp.
SEED_TOKEN = (
    "eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoiZjRiYWMxMmItM2M2Yy00MTliLWI5NGYtMTNkNjFkZmUzOTg2IiwicmVhbG1fYWNjZXNzIjp7In"
    "JvbGVzIjpbIiR0ZXN0LW9ubHktY3JlYXRlIiwiJHJlaW5kZXgiXX0sInVzZXJfdHlwZSI6IlNZU1RFTSJ9."
)


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair: the private PEM signs, the public JWK goes into the test JWKS."""

    kid: str
    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
        public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return cls(kid, private_pem, public_pem)

    def public_jwk(self) -> dict[str, Any]:
        return {**jwk.construct(self.public_pem, "RS256").to_dict(), "kid": self.kid, "use": "sig"}

    @cached_property
    def _private_key(self) -> Key:
        return jwk.construct(self.private_pem, "RS256")  # loading the PEM is the slow part of signing

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self._private_key, algorithm="RS256", headers={"kid": kid or self.kid})


def claims(roles: list[str] | None = None, user_type: str = "SYSTEM", user_id: str = "test-user",
           lifetime: int = 3600, **extra: Any) -> dict[str, Any]:
    """Keycloak-like access token claims, valid now for `lifetime` seconds; `extra` overrides any claim."""
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + lifetime, "user_id": user_id,
            "user_type": user_type, "realm_access": {"roles": list(roles or [])}, **extra}


def admin_claims() -> dict[str, Any]:
    """A SYSTEM user with every REST privilege on every type and `$reindex`."""
    return claims(ALL_TYPE_ROLES + ["$reindex"], user_id="test-admin")


def hs256(claims_: dict[str, Any], secret: str = HS256_SECRET, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims_, secret, algorithm="HS256", headers=headers)


def unsigned(claims_: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An `alg: none` token, as the eHealth component tests send (jose does not mint these)."""
    head = base64url_encode(orjson.dumps(header or {"alg": "none"})).decode()
    body = base64url_encode(orjson.dumps(claims_)).decode()
    return f"{head}.{body}."


def hs256_raw(claims_: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over any bytes, e.g. an RSA public key PEM (the algorithm-confusion attack; jose refuses to mint it)."""
    head = base64url_encode(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
    body = base64url_encode(orjson.dumps(claims_))
    signature = base64url_encode(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
