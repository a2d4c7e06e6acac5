"""The one exception type that carries a FHIR error to the client as an OperationOutcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from service.fhir.outcome import Issue

Severity = Literal["fatal", "error", "warning", "information"]


class FhirError(Exception):
    """A refused request: HTTP status, OperationOutcome issue code and diagnostics, or the `issues` to
    list when there are several (`diagnostics` then sums them up, for logs and the loader).

    Raised anywhere below the HTTP layer; the error middleware turns it into the response.
    """

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str = "processing",
        severity: Severity = "error",
        headers: dict[str, str] | None = None,
        issues: Sequence[Issue] = (),
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code
        self.severity = severity
        self.headers = headers or {}
        self.issues = issues


def invalid(diagnostics: str) -> FhirError:
    return FhirError(400, diagnostics, code="invalid")


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, diagnostics, code="not-found")
