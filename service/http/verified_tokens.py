"""Tokens already verified, so a client that sends the same token on every request is verified once.

A token is remembered by the SHA-256 of its whole text, signature included: a token that differs in any
byte (a forged signature over the same claims) is another key and is verified in full. Only successes are
stored. An entry lasts until the token's `exp` (never past it: from then on the token is verified again,
which refuses it once the leeway has passed) and no longer than the verifier says it may (in jwks mode, until
the key set is due to be fetched again, so a key removed from the JWKS is not honoured any longer than
without this cache). The cache holds at most
`capacity` tokens; beyond that the oldest entry goes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
DEFAULT_CAPACITY = 4096


class VerifiedTokens(Generic[T]):
    """token -> what its verification produced, until its expiry; bounded; clock in UNIX seconds."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock = clock
        self._entries: dict[bytes, tuple[float, T]] = {}  # insertion order is age order

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> T | None:
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, token: str, value: T, exp: float | None, max_age: float) -> None:
        """Remember a verified token until `exp`, its claim, for `max_age` seconds at most (a token without
        `exp` is not remembered)."""
        now = self._clock()
        until = min(exp, now + max_age) if exp is not None else now
        if until <= now or self._capacity <= 0:
            return
        key = _key(token)
        self._entries.pop(key, None)
        while len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (until, value)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
