"""Which eHealth privilege a FHIR request needs: a pure function of (method, path below the base path).

No aiohttp here, so the rules are tested (and read) on their own. The rules:

- `GET|HEAD /metadata`: public, no token.
- `POST /$reindex`, `GET|DELETE|POST /$hapi.fhir.reindex-status`: `$reindex`, and the user type must be SYSTEM
  (a POST pauses, resumes or throttles the job, as a DELETE cancels it).
- `POST /{Type}/{id}/$reindex`, `GET|POST /{Type}/{id}/$reindex-dryrun`: the same and `Type.read`, since their
  Parameters answer shows the resource's index values (names, identifiers...).
- `GET /{Type}/{id}`, `.../_history`, `.../_history/{vid}`, `GET /{Type}/_history`: `Type.read`.
- `GET /{Type}`, `POST /{Type}/_search`: `Type.search`; what else a search reads is checked once it is parsed
  (`service.http.search_access`). `GET /` and `POST /_search` (system-level search): a valid token here, and
  `Type.search` for each type searched there.
- `POST /{Type}`: `Type.create`; `PUT|PATCH /{Type}/{id}`: `Type.update`; `DELETE /{Type}/{id}`: `Type.delete`.
  `Type.write` grants create, update and delete.
- Conditional interactions search as well, so they also need `Type.search`: `PUT|PATCH /{Type}?criteria`
  (`Type.update`), `DELETE /{Type}?criteria` (`Type.delete`), and `POST /{Type}` with `If-None-Exist`
  (`Type.create`), which is the one rule that depends on more than method and path.
- `POST /` (a batch or transaction Bundle): a valid token; each entry needs what its request would need alone,
  checked by the handler (`service.http.bundle_plan`) once the Bundle is read.
- `POST /{Type}/$validate`: a valid token only: it reads and writes nothing, and its answer depends on the
  body sent and the public R4 definitions alone.
- `GET /_history` (system history, every type): `Type.read` for every resource type, which in practice
  only a role-map entry such as `auditor=*.read` grants.
- A path naming an unknown resource type needs no privilege: the handler answers 404 (the types are public
  in the CapabilityStatement). Any other path has no rule (`None`); the middleware refuses it when a route
  matches it (fail closed) and lets the router answer 404/405 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.fhir.resource_types import RESOURCE_TYPES

REINDEX = "$reindex"
SYSTEM = "SYSTEM"
WRITE_IMPLIES = ("create", "update", "delete")
_REINDEX_ROUTES = {
    ("POST", "$reindex"), ("GET", "$hapi.fhir.reindex-status"), ("DELETE", "$hapi.fhir.reindex-status"),
    ("POST", "$hapi.fhir.reindex-status"),
}
_INSTANCE_OPERATIONS = {("POST", "$reindex"), ("GET", "$reindex-dryrun"), ("POST", "$reindex-dryrun")}
_TYPE_ACTIONS = {"GET": "search", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_CONDITIONAL_TYPE_METHODS = frozenset({"PUT", "PATCH", "DELETE"})  # on `/{Type}` they act on a search's match
_INSTANCE_ACTIONS = {"GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_SHOWN_MISSING = 3


@dataclass(frozen=True)
class Rule:
    """What a request needs: no token at all (`public`), or a token with all of `privileges` and a user type."""

    privileges: frozenset[str] = frozenset()
    user_type: str | None = None
    public: bool = False


PUBLIC = Rule(public=True)
AUTHENTICATED = Rule()
REINDEX_RULE = Rule(frozenset({REINDEX}), user_type=SYSTEM)
SYSTEM_HISTORY_RULE = Rule(frozenset(f"{res_type}.read" for res_type in RESOURCE_TYPES))


def rule_for(method: str, path: str, if_none_exist: bool = False) -> Rule | None:
    """The rule for `method` on `path` (below the base path, e.g. `/Organization/1`); None: no rule.
    `if_none_exist`: the request has a non-blank `If-None-Exist` header (a conditional create)."""
    method = "GET" if method == "HEAD" else method
    parts = [part for part in path.split("/") if part]
    if not parts:  # system search, batch and transaction: each checks what it reads or writes once parsed
        return AUTHENTICATED if method in ("GET", "POST") else None
    if len(parts) == 1:
        return _system_rule(method, parts[0], if_none_exist)
    if not parts or parts[0].startswith(("$", "_")) or parts[0] == "metadata":
        return None
    res_type = parts[0]
    if res_type not in RESOURCE_TYPES:
        return AUTHENTICATED
    if len(parts) == 3 and (method, parts[2]) in _INSTANCE_OPERATIONS:
        return Rule(REINDEX_RULE.privileges | {f"{res_type}.read"}, user_type=SYSTEM)
    if (method, parts[1:]) == ("POST", ["$validate"]):
        return AUTHENTICATED
    action = _rest_action(method, parts[1:])
    return Rule(frozenset({f"{res_type}.{action}"})) if action else None


def _system_rule(method: str, name: str, if_none_exist: bool) -> Rule | None:
    if name == "metadata":
        return PUBLIC if method == "GET" else None
    if (method, name) in _REINDEX_ROUTES:
        return REINDEX_RULE
    if name == "_history":
        return SYSTEM_HISTORY_RULE if method == "GET" else None
    if name == "_search":
        return AUTHENTICATED if method == "POST" else None
    if name.startswith(("$", "_")):
        return None
    if name not in RESOURCE_TYPES:
        return AUTHENTICATED
    action = _TYPE_ACTIONS.get(method)
    if action is None:
        return None
    conditional = method in _CONDITIONAL_TYPE_METHODS or (method == "POST" and if_none_exist)
    return Rule(frozenset({f"{name}.{action}", *((f"{name}.search",) if conditional else ())}))


def _rest_action(method: str, rest: list[str]) -> str | None:
    """The REST action on `/{Type}/...rest`, or None when no REST interaction has that shape."""
    if rest == ["_search"]:
        return "search" if method == "POST" else None
    if rest == ["_history"]:
        return "read" if method == "GET" else None
    if rest[0].startswith(("$", "_")):
        return None
    if len(rest) == 1:
        return _INSTANCE_ACTIONS.get(method)
    if rest[1] == "_history" and len(rest) in (2, 3):
        return "read" if method == "GET" else None
    return None


def expand_role_map(role_map: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """Role-map privileges with `*.action` expanded to that action on every resource type."""
    expanded: dict[str, frozenset[str]] = {}
    for role, privileges in role_map.items():
        names: set[str] = set()
        for privilege in privileges:
            if privilege.startswith("*."):
                names.update(f"{res_type}{privilege[1:]}" for res_type in RESOURCE_TYPES)
            else:
                names.add(privilege)
        expanded[role] = frozenset(names)
    return expanded


def granted(roles: Iterable[str], role_map: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The privileges held with these token roles: the roles themselves, mapped roles, `Type.write` expanded.

    Token roles are taken literally: only the operator's role map can use the `*` wildcard.
    """
    privileges: set[str] = set()
    for role in roles:
        privileges.add(role)
        privileges.update(role_map.get(role, ()))
    for privilege in list(privileges):
        res_type, dot, action = privilege.rpartition(".")
        if dot and action == "write" and res_type:
            privileges.update(f"{res_type}.{implied}" for implied in WRITE_IMPLIES)
    return frozenset(privileges)


def refusal(rule: Rule, privileges: frozenset[str], user_type: str | None) -> str | None:
    """Why a principal with `privileges` and `user_type` may not do what `rule` guards; None: allowed."""
    missing = sorted(rule.privileges - privileges)
    if missing:
        shown = ", ".join(missing[:_SHOWN_MISSING])
        more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
        return f"The privilege {shown}{more} is required for this request"
    if rule.user_type is not None and user_type != rule.user_type:
        return f"The user_type {rule.user_type} is required for this request, not {user_type or 'none'}"
    return None
