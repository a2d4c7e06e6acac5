"""OperationOutcome resources with the generated narrative HAPI FHIR sends."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from service.fhir.errors import Severity

_XHTML_NS = "http://www.w3.org/1999/xhtml"


@dataclass(frozen=True, slots=True)
class Issue:
    severity: Severity
    code: str
    diagnostics: str
    expression: str | None = None  # FHIRPath of the element concerned, e.g. `Patient.name[0].given[1]`

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression is not None:
            found["expression"] = [self.expression]
        return found


def operation_outcome(*issues: Issue) -> dict[str, Any]:
    """An OperationOutcome with one narrative table row per issue, in the layout of the seed."""
    rows = "".join(
        f'<tr><td style="font-weight: bold;">{issue.severity.upper()}</td>'
        f"<td>[{escape(issue.expression or '', quote=False)}]</td>"
        f"<td>{escape(issue.diagnostics, quote=False)}</td></tr>"
        for issue in issues
    )
    div = f'<div xmlns="{_XHTML_NS}"><h1>Operation Outcome</h1><table border="0">{rows}</table></div>'
    return {
        "resourceType": "OperationOutcome",
        "text": {"status": "generated", "div": div},
        "issue": [issue.to_json() for issue in issues],
    }
