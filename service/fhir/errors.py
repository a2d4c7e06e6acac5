"""The one exception type that carries a FHIR error to the client as an OperationOutcome."""

from __future__ import annotations

from typing import Literal

Severity = Literal["fatal", "error", "warning", "information"]


class FhirError(Exception):
    """A refused request: HTTP status, OperationOutcome issue code and diagnostics.

    Raised anywhere below the HTTP layer; the error middleware turns it into the response.
    """

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str = "processing",
        severity: Severity = "error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code
        self.severity = severity
        self.headers = headers or {}


def invalid(diagnostics: str) -> FhirError:
    return FhirError(400, diagnostics, code="invalid")


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, diagnostics, code="not-found")
