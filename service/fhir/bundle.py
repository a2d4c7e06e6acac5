"""Bundle builders: history and search sets, links and entries."""

from __future__ import annotations

from typing import Any
from uuid import uuid4


def bundle(
    bundle_type: str, entries: list[dict[str, Any]], links: dict[str, str], total: int | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid4()), "type": bundle_type}
    if total is not None:
        result["total"] = total
    if links:
        result["link"] = [{"relation": relation, "url": url} for relation, url in links.items()]
    if entries:  # FHIR JSON forbids empty arrays
        result["entry"] = entries
    return result
