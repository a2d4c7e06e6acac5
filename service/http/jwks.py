"""JWKS client: the signing keys of one or more Keycloak realms, cached, refetched on an unknown `kid`.

Each accepted issuer has its own key set(s) (`Settings.jwks_urls_by_issuer`): a token is checked only against
the keys of the realm its `iss` names, so one realm's key cannot sign tokens that claim another realm.

The key sets are fetched lazily (the first token), kept for `jwks_cache_seconds`, and fetched again early when a
token names an unknown key, at most once per `jwks_min_refetch_seconds` whatever the number of such tokens:
a flood of made-up `kid`s costs the key server one request per interval. Concurrent requests share one fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog

from service.http.tokens import KeysUnavailable
from service.settings import Settings

Jwk = dict[str, Any]
log = structlog.get_logger(__name__)
_MAX_JWKS_BYTES = 1024 * 1024


class JwksError(Exception):
    """A JWKS URL that did not answer with a usable key set."""


class JwksCache:
    """Implements `service.http.tokens.KeySource` over the configured JWKS URLs."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._urls = list(settings.jwks_urls)
        self._issuer_urls = settings.jwks_urls_by_issuer()
        self._ttl = settings.jwks_cache_seconds
        self._min_interval = settings.jwks_min_refetch_seconds
        self._clock = clock
        self._keys: dict[str, dict[str, Jwk]] = {url: {} for url in self._urls}
        self._attempted_at: float | None = None
        self._generation = 0
        self._last_ok = False
        self._lock = asyncio.Lock()

    async def find(self, kid: str, issuer: str) -> Jwk | None:
        urls = self._issuer_urls.get(issuer, ())
        if not urls:
            return None
        if self._due(self._interval()):
            await self._refresh("expired", self._interval())
        if (key := self._lookup(kid, urls)) is not None:
            return key
        await self._refresh("unknown_kid", self._min_interval)
        if (key := self._lookup(kid, urls)) is not None:
            return key
        if not any(self._keys[url] for url in urls):
            raise KeysUnavailable("No signing keys could be loaded from the JWKS URL of the token's issuer")
        return None

    @property
    def generation(self) -> int:
        return self._generation

    def fresh_for(self) -> float:
        if self._attempted_at is None:
            return 0.0
        return max(0.0, self._attempted_at + self._interval() - self._clock())

    def _interval(self) -> float:
        """How long fetched keys are used: the cache period after a success, the refetch interval after a failure."""
        return self._ttl if self._last_ok else self._min_interval

    def _lookup(self, kid: str, urls: tuple[str, ...]) -> Jwk | None:
        for url in urls:
            if kid in self._keys[url]:
                return self._keys[url][kid]
        return None

    def _due(self, interval: float) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= interval

    async def _refresh(self, reason: str, interval: float) -> None:
        """Fetch every URL, unless another request did within `interval` (checked again under the lock)."""
        async with self._lock:
            if not self._due(interval):
                return
            self._attempted_at = self._clock()
            results = await asyncio.gather(*(self._fetch(url) for url in self._urls), return_exceptions=True)
            self._last_ok = True
            for url, result in zip(self._urls, results, strict=True):
                self._store(url, result, reason)
            self._generation += 1

    def _store(self, url: str, result: dict[str, Jwk] | BaseException, reason: str) -> None:
        if isinstance(result, dict):
            self._keys[url] = result
            log.info("jwks_fetched", url=url, reason=reason, kids=sorted(result))
            return
        if not isinstance(result, Exception):
            raise result  # cancellation and other non-errors go on up
        # The previous keys of this URL stay in use; the next attempt comes after the minimum interval.
        self._last_ok = False
        log.warning("jwks_fetch_failed", url=url, reason=reason, error=f"{type(result).__name__}: {result}",
                    keeping_keys=len(self._keys[url]))

    async def _fetch(self, url: str) -> dict[str, Jwk]:
        async with self._session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise JwksError(f"HTTP {response.status}")
            body = await response.content.read(_MAX_JWKS_BYTES + 1)
            if len(body) > _MAX_JWKS_BYTES:
                raise JwksError(f"key set larger than {_MAX_JWKS_BYTES} bytes")
        return parse_jwks(body)


def parse_jwks(body: bytes) -> dict[str, Jwk]:
    """kid -> JWK of the signature keys of a JWKS document; keys without a kid cannot be chosen and are left out."""
    try:
        document = orjson.loads(body)
    except ValueError as exc:
        raise JwksError(f"not JSON: {exc}") from exc
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError("no 'keys' array")
    return {key["kid"]: key for key in keys
            if isinstance(key, dict) and isinstance(key.get("kid"), str) and key.get("use", "sig") == "sig"}
