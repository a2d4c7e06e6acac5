"""`POST [base]/{type}/$validate`: the checks of a create or update, run on a body that is not stored.

The body is the resource itself, or a `Parameters` with the operation's `resource` parameter (and
optionally `mode`: `create`, the default, or `update`, which also needs the resource's id). The answer
is an OperationOutcome listing every problem, or one information issue when there is none. A `profile`
parameter is refused: only the base R4 definitions are checked.
"""

from __future__ import annotations

from typing import Any

from service.fhir.errors import FhirError, invalid
from service.fhir.outcome import Issue
from service.fhir.resource import resource_problems

MODES = ("create", "update")
ALL_OK = Issue("information", "informational", "No issues detected during validation")


def validation_outcome(body: dict[str, Any], res_type: str) -> list[Issue]:
    """The issues of the resource in `body` (a request to `{res_type}/$validate`)."""
    resource, mode = _operation_input(body, res_type)
    issues = resource_problems(resource, res_type)
    if not issues and mode == "update" and resource.get("id") is None:
        issues = [Issue("error", "required", "An update (mode 'update') needs the resource's id", f"{res_type}.id")]
    return issues or [ALL_OK]


def _operation_input(body: dict[str, Any], res_type: str) -> tuple[dict[str, Any], str]:
    """(resource, mode) of the request. A Parameters body is the operation's input, unless Parameters is
    the type being validated."""
    if body.get("resourceType") != "Parameters" or res_type == "Parameters":
        return body, "create"
    parameters = body.get("parameter")
    if type(parameters) is not list or not all(type(p) is dict for p in parameters):
        raise invalid("The Parameters of $validate need a 'parameter' array of objects")
    found: dict[str, dict[str, Any]] = {}
    for parameter in parameters:
        name = parameter.get("name")
        if name not in ("resource", "mode", "profile"):
            raise invalid(f"Unknown $validate parameter {name!r}: resource and mode are accepted")
        if name in found:
            raise invalid(f"The $validate parameter '{name}' is given more than once")
        found[name] = parameter
    if "profile" in found:
        raise FhirError(400, "Validation against a profile is not supported: resources are checked against the "
                             "base R4 definitions only; leave 'profile' out", code="not-supported")
    resource = found.get("resource", {}).get("resource")
    if type(resource) is not dict:
        raise invalid("The $validate parameter 'resource' must hold the resource to validate")
    return resource, _mode(found.get("mode"))


def _mode(parameter: dict[str, Any] | None) -> str:
    if parameter is None:
        return "create"
    mode = parameter.get("valueCode", parameter.get("valueString"))
    if mode not in MODES:
        raise invalid(f"The $validate mode must be a code, create or update, not {str(mode)[:40]!r}")
    return str(mode)
