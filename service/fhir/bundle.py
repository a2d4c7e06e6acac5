"""Bundle builders: history and search sets, links and entries."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from service.fhir.outcome import Issue, operation_outcome


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


def search_entry(full_url: str, resource: Any, mode: str) -> dict[str, Any]:
    """A searchset entry; `resource` may be an orjson.Fragment of the stored bytes."""
    return {"fullUrl": full_url, "resource": resource, "search": {"mode": mode}}


def outcome_entry(issues: list[Issue]) -> dict[str, Any]:
    """The OperationOutcome entry of a searchset (warnings about the search itself)."""
    return {"fullUrl": f"urn:uuid:{uuid4()}", "resource": operation_outcome(*issues), "search": {"mode": "outcome"}}
