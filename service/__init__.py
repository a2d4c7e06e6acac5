"""Asyncio FHIR R4 service with HAPI-compatible $reindex."""

__version__ = "0.1.0"
SERVICE_NAME = "fhir-reindex-service"
