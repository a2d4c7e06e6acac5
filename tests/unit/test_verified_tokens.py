"""The cache of verified tokens: expiry at `exp` or `max_age`, exact-token keys, the bound on its size."""

from __future__ import annotations

import pytest

from service.http.verified_tokens import VerifiedTokens


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("lifetime", "max_age", "kept_for"), [(10, 300, 10), (3600, 5, 5)],
                         ids=["ends at exp", "ends at max_age before exp"])
def test_entry_ends_at_exp_or_max_age(lifetime: float, max_age: float, kept_for: float) -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(clock=clock)
    cache.put("a.b.c", "alice", exp=clock.now + lifetime, max_age=max_age)
    clock.now += kept_for - 0.001
    assert cache.get("a.b.c") == "alice"
    clock.now += 0.001
    assert cache.get("a.b.c") is None
    assert len(cache) == 0  # dropped once found out of date


def test_tokens_without_exp_or_already_expired_or_without_time_are_not_kept() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(clock=clock)
    cache.put("no.exp.x", "alice", exp=None, max_age=300)
    cache.put("old.exp.x", "alice", exp=clock.now - 1, max_age=300)  # accepted within the leeway only
    cache.put("no.age.x", "alice", exp=clock.now + 60, max_age=0)
    assert len(cache) == 0
    assert cache.get("no.exp.x") is None and cache.get("old.exp.x") is None and cache.get("no.age.x") is None


def test_only_the_exact_token_matches() -> None:
    clock = Clock()
    cache: VerifiedTokens[str] = VerifiedTokens(clock=clock)
    cache.put("head.claims.signature", "alice", exp=clock.now + 60, max_age=300)
    assert cache.get("head.claims.signaturf") is None
    assert cache.get("head.claims.") is None
    assert cache.get("head.claims.signature ") is None
    assert cache.get("head.claims.signature") == "alice"


def test_size_is_bounded_and_the_oldest_goes_first() -> None:
    clock = Clock()
    cache: VerifiedTokens[int] = VerifiedTokens(capacity=3, clock=clock)
    for number in range(5):
        cache.put(f"token-{number}", number, exp=clock.now + 60, max_age=300)
    assert len(cache) == 3
    assert [cache.get(f"token-{number}") for number in range(5)] == [None, None, 2, 3, 4]
    cache.put("token-2", 20, exp=clock.now + 60, max_age=300)  # stored again: the newest now
    cache.put("token-5", 5, exp=clock.now + 60, max_age=300)
    assert [cache.get(f"token-{number}") for number in range(2, 6)] == [20, None, 4, 5]
