"""Bearer token verification with python-jose, in the three modes of the settings, and the principal.

No aiohttp here: the JWKS keys come through the `KeySource` protocol (see `service.http.jwks`).
Messages of `TokenRejected` are shown to the client and logged, so they never contain the token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError, JWTError

from service.http.privileges import granted
from service.http.verified_tokens import VerifiedTokens
from service.settings import Settings

Claims = dict[str, Any]
_KEY_TYPES = {"RS": "RSA", "ES": "EC"}
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 .,:;()_\-]")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._\-]{1,32}")
TIME_CLAIMS = ("exp", "nbf", "iat")


class TokenRejected(Exception):
    """The token does not authenticate the request (401); the message says why, without the token."""


class KeysUnavailable(Exception):
    """No signing key could be loaded from any JWKS URL (503): the key server is down, not the token wrong."""


class KeySource(Protocol):
    async def find(self, kid: str, issuer: str) -> dict[str, Any] | None:
        """The JWK with this key id among the keys of `issuer`, refetching when allowed; None when unknown."""

    def fresh_for(self) -> float:
        """Seconds the keys now held stay in use before the key set is due to be fetched again."""

    @property
    def generation(self) -> int:
        """Changes whenever the keys held may have changed (at every fetch of the key sets)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: from the verified token claims."""

    user_id: str | None
    user_type: str | None
    roles: frozenset[str]
    privileges: frozenset[str]
    issuer: str | None = None


class TokenVerifier:
    """Verifies a bearer token per `settings.auth_mode` and returns its principal."""

    def __init__(self, settings: Settings, role_map: Mapping[str, frozenset[str]], keys: KeySource | None) -> None:
        if settings.auth_mode == "jwks" and keys is None:
            raise ValueError("jwks mode needs a key source")
        self._settings = settings
        self._role_map = role_map
        self._keys = keys
        self._algorithms = ["HS256"] if settings.auth_mode == "hs256" else list(settings.jwt_algorithms)
        # token -> (key generation it was verified with, its principal)
        self._verified: VerifiedTokens[tuple[int, Principal]] = VerifiedTokens()

    async def principal(self, token: str) -> Principal:
        """The token's principal: verified in full unless this very token was verified before and has not
        expired (clients send the same token on every request until it runs out)."""
        generation = self._key_generation()
        known = self._verified.get(token)
        if known is not None and known[0] == generation:
            return known[1]
        claims = await self.verify(token)
        principal = principal_from_claims(claims, self._role_map)
        # Until exp. In jwks mode also only while the keys it was verified with stay in use (not when the key
        # sets were fetched meanwhile, and no longer than until they are due to be fetched again): a key dropped
        # from the JWKS is not honoured any longer than it would be without this cache. The hs256 secret is
        # fixed for the life of the process.
        max_age = math.inf if self._keys is None else self._keys.fresh_for()
        if generation == self._key_generation():
            self._verified.put(token, (generation, principal), claims.get("exp"), max_age)
        return principal

    def _key_generation(self) -> int:
        return 0 if self._keys is None else self._keys.generation

    async def verify(self, token: str) -> Claims:
        """The verified claims; raises TokenRejected (or KeysUnavailable in jwks mode)."""
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenRejected("The token header has no algorithm (alg)")
        if self._settings.auth_mode == "unsigned":
            return self._decode(token, "", None, verify_signature=False)
        if alg not in self._algorithms:
            accepted = ", ".join(self._algorithms)
            raise TokenRejected(f"The token algorithm {_name(alg)} is not accepted; accepted: {accepted}")
        if self._settings.auth_mode == "hs256":
            assert self._settings.hs256_secret is not None
            return self._decode(token, self._settings.hs256_secret.get_secret_value(), [alg])
        return self._decode(token, await self._public_key(header, alg, self._claimed_issuer(token)), [alg])

    def _claimed_issuer(self, token: str) -> str:
        """The token's `iss`, read before the signature is checked only to choose the keys that must have signed it."""
        try:
            issuer = jwt.get_unverified_claims(token).get("iss")
        except JWTError as exc:
            raise TokenRejected(f"The token is invalid: {_text(exc)}") from exc
        if not isinstance(issuer, str) or issuer not in self._settings.jwt_issuers:
            raise TokenRejected("The token issuer (iss) is not accepted")
        return issuer

    async def _public_key(self, header: Mapping[str, Any], alg: str, issuer: str) -> Key:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("The token header names no signing key (kid)")
        assert self._keys is not None
        key = await self._keys.find(kid, issuer)
        if key is None:
            raise TokenRejected(f"The token is signed with an unknown key (kid {_name(kid)})")
        _check_key_fits(key, alg)
        try:
            return jwk.construct(key, alg)
        except JOSEError as exc:
            raise TokenRejected(f"The signing key {_name(kid)} cannot be used: {_text(exc)}") from exc

    def _decode(self, token: str, key: str | Key, algorithms: list[str] | None,
                verify_signature: bool = True) -> Claims:
        settings = self._settings
        audience = settings.jwt_audience
        options = {
            "verify_signature": verify_signature, "leeway": settings.jwt_leeway_seconds,
            # Verified tokens must expire; the eHealth test tokens (unsigned mode) carry no exp.
            "require_exp": verify_signature, "verify_aud": audience is not None, "require_aud": audience is not None,
            "require_iss": bool(settings.jwt_issuers), "verify_at_hash": False,
        }
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, options=options, audience=audience,
                                issuer=settings.jwt_issuers or None)
        except ExpiredSignatureError as exc:
            raise TokenRejected("The token has expired") from exc
        except JWTClaimsError as exc:
            raise TokenRejected(f"The token claims are not accepted: {_text(exc)}") from exc
        except JWTError as exc:
            raise TokenRejected(f"The token is invalid: {_text(exc)}") from exc
        except (TypeError, ValueError, OverflowError) as exc:  # jose lets a claim of the wrong JSON type (or
            # a time of 1e400, read as infinity) through as these
            raise TokenRejected("The token has a malformed time or audience claim") from exc
        _check_times(claims)
        return claims


def _check_times(claims: Claims) -> None:
    """RFC 7519 NumericDates are JSON numbers: jose also takes a string of digits, which is refused here."""
    for name in TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            raise TokenRejected(f"The token claim {name} is not a number (RFC 7519 NumericDate)")


def _header(token: str) -> Mapping[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except JWTError as exc:
        raise TokenRejected("The token is not a JWT (compact serialisation)") from exc


def _check_key_fits(key: Mapping[str, Any], alg: str) -> None:
    """The JWK must be of the algorithm's key type, for signatures, and (if it says) for this algorithm."""
    if key.get("kty") != _KEY_TYPES.get(alg[:2]):
        raise TokenRejected(f"The signing key is not a key for {alg}")
    if key.get("use", "sig") != "sig" or key.get("alg", alg) != alg:
        raise TokenRejected(f"The signing key is not meant for {alg} signatures")


def principal_from_claims(claims: Claims, role_map: Mapping[str, frozenset[str]]) -> Principal:
    """The principal of verified claims: eHealth `user_id`, `user_type` and `realm_access.roles`."""
    realm_access = claims.get("realm_access", {})
    roles = realm_access.get("roles", []) if isinstance(realm_access, dict) else None
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TokenRejected("The token claim realm_access.roles is not a list of strings")
    user_type = claims.get("user_type")
    user_id = claims.get("user_id", claims.get("sub"))
    if not isinstance(user_type, str | None) or not isinstance(user_id, str | None):
        raise TokenRejected("The token claims user_id and user_type must be strings")
    issuer = claims.get("iss")
    return Principal(user_id=user_id, user_type=user_type, roles=frozenset(roles),
                     privileges=granted(roles, role_map), issuer=issuer if isinstance(issuer, str) else None)


def _text(exc: BaseException) -> str:
    """An exception message made safe for a log line and a quoted header parameter."""
    return _SAFE_TEXT.sub("", str(exc))[:120] or type(exc).__name__


def _name(value: str) -> str:
    """A client-supplied name (alg, kid) quoted only when short and plain."""
    return repr(value) if _SAFE_NAME.fullmatch(value) else "(unprintable)"
