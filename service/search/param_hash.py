"""The key of every index row: a stable hash of (resource type, search parameter code)."""

from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=65536)
def sp_hash(res_type: str, code: str) -> int:
    """A stable signed 64-bit hash of `ResourceType|code` (fits a Postgres bigint)."""
    digest = hashlib.blake2b(f"{res_type}|{code}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
