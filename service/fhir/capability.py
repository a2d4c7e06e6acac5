"""The CapabilityStatement served at `/metadata`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service import SERVICE_NAME, __version__
from service.fhir.instant import format_instant
from service.fhir.resource_types import RESOURCE_TYPES

_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create")


def capability_statement(base: str, started: datetime) -> dict[str, Any]:
    resources = [
        {
            "type": res_type,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
        }
        for res_type in sorted(RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(started),
        "publisher": SERVICE_NAME,
        "kind": "instance",
        "software": {"name": SERVICE_NAME, "version": __version__},
        "implementation": {"description": "FHIR R4 server with HAPI-compatible $reindex", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", "resource": resources, "interaction": [{"code": "history-system"}]}],
    }
