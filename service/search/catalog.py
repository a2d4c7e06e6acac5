"""The search parameters in force: the registry used for extraction and search, and which custom
parameters are still pending (not every stored resource of their base types indexed yet)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.search.registry import Registry


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot; a change of the custom parameters produces a new Catalog."""

    registry: Registry
    generation: int = 0
    # resource type -> codes of custom parameters still pending for that type
    pending: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def pending_codes(self, resource_type: str) -> frozenset[str]:
        return self.pending.get(resource_type, frozenset())
