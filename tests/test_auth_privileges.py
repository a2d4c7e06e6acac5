"""The privilege rules as a pure function of (method, path below the base), the role map and the principal."""

from __future__ import annotations

import pytest
from jose import jwt

from service.fhir.resource_types import RESOURCE_TYPES
from service.http.privileges import (
    AUTHENTICATED,
    PUBLIC,
    REINDEX_RULE,
    SYSTEM_HISTORY_RULE,
    Rule,
    expand_role_map,
    granted,
    refusal,
    rule_for,
)
from service.http.tokens import TokenRejected, principal_from_claims
from service.settings import Settings, parse_role_map
from tests.tokens import SEED_TOKEN


def needs(*privileges: str) -> Rule:
    return Rule(frozenset(privileges))


def reindex_instance(res_type: str) -> Rule:
    """Instance $reindex and $reindex-dryrun show index values: the operation privilege and reading the type."""
    return Rule(frozenset({"$reindex", f"{res_type}.read"}), user_type="SYSTEM")


RULES = [
    ("GET", "/metadata", PUBLIC),
    ("HEAD", "/metadata", PUBLIC),
    ("POST", "/$reindex", REINDEX_RULE),
    ("GET", "/$hapi.fhir.reindex-status", REINDEX_RULE),
    ("DELETE", "/$hapi.fhir.reindex-status", REINDEX_RULE),
    ("POST", "/$hapi.fhir.reindex-status", REINDEX_RULE),  # pause, resume, throttle
    ("POST", "/Organization/1/$reindex", reindex_instance("Organization")),
    ("GET", "/Organization/1/$reindex-dryrun", reindex_instance("Organization")),
    ("POST", "/Patient/p-2/$reindex-dryrun", reindex_instance("Patient")),
    ("GET", "/Organization/1", needs("Organization.read")),
    ("HEAD", "/Organization/1", needs("Organization.read")),
    ("GET", "/Organization/1/_history", needs("Organization.read")),
    ("GET", "/Organization/1/_history/3", needs("Organization.read")),
    ("GET", "/Organization/_history", needs("Organization.read")),
    ("GET", "/Organization", needs("Organization.search")),
    ("POST", "/Organization/_search", needs("Organization.search")),
    ("POST", "/Organization", needs("Organization.create")),
    ("PUT", "/Organization/1", needs("Organization.update")),
    ("PATCH", "/Organization/1", needs("Organization.update")),
    ("DELETE", "/Organization/1", needs("Organization.delete")),
    # Conditional interactions search too.
    ("PUT", "/Organization", needs("Organization.update", "Organization.search")),
    ("PATCH", "/Organization", needs("Organization.update", "Organization.search")),
    ("DELETE", "/Organization", needs("Organization.delete", "Organization.search")),
    ("GET", "/_history", SYSTEM_HISTORY_RULE),
    ("POST", "/Organization/$validate", AUTHENTICATED),  # reads and writes nothing
    ("POST", "/Foo/$validate", AUTHENTICATED),
    ("GET", "/Organisation/1", AUTHENTICATED),  # unknown type: the handler answers 404
    ("GET", "", AUTHENTICATED),  # system-level search: `{Type}.search` per searched type, checked by the handler
    ("POST", "/_search", AUTHENTICATED),
    ("POST", "/Foo", AUTHENTICATED),
    # No rule: refused when a route matches, else the router's 404/405.
    ("POST", "/metadata", None),
    ("GET", "/$reindex", None),
    ("PUT", "/$hapi.fhir.reindex-status", None),
    ("GET", "/Organization/1/$reindex", None),
    ("DELETE", "/Organization/1/$reindex-dryrun", None),
    ("PUT", "/Organization/_history", None),
    ("GET", "/Organization/_search", None),
    ("GET", "/Organization/$validate", None),
    ("POST", "/Organization/1/$validate", None),
    ("POST", "/Organization/1", None),
    ("GET", "/Organization/1/_nonsense", None),
    ("GET", "/Organization/1/_history/3/x", None),
    ("DELETE", "/_history", None),
    ("GET", "/$everything", None),
    ("DELETE", "", None),
    ("PUT", "/", None),
    ("GET", "/_search", None),
    # A batch or transaction: a valid token here, each entry is checked by the handler as its own request.
    ("POST", "/", AUTHENTICATED),
    ("POST", "", AUTHENTICATED),
]


@pytest.mark.parametrize(("method", "path", "rule"), RULES, ids=[f"{m} {p or '(base)'}" for m, p, _ in RULES])
def test_rule_for(method: str, path: str, rule: Rule | None) -> None:
    assert rule_for(method, path) == rule


def test_conditional_create_needs_search_too() -> None:
    assert rule_for("POST", "/Organization", if_none_exist=True) == needs("Organization.create", "Organization.search")
    assert rule_for("POST", "/Organization", if_none_exist=False) == needs("Organization.create")
    assert rule_for("POST", "/Organization/_search", if_none_exist=True) == needs("Organization.search")


def test_system_history_needs_read_on_every_type() -> None:
    assert SYSTEM_HISTORY_RULE.privileges == {f"{t}.read" for t in RESOURCE_TYPES}
    everything_but_one = frozenset(f"{t}.read" for t in RESOURCE_TYPES if t != "Account")
    assert refusal(SYSTEM_HISTORY_RULE, everything_but_one, "SYSTEM") == \
        "The privilege Account.read is required for this request"
    few = refusal(SYSTEM_HISTORY_RULE, frozenset({"Organization.read"}), "SYSTEM")
    assert few is not None and few.startswith("The privilege Account.read, ActivityDefinition.read, ")
    assert f"and {len(RESOURCE_TYPES) - 4} more" in few


def test_write_implies_create_update_delete_but_not_read() -> None:
    privileges = granted(["Organization.write"], {})
    assert {"Organization.create", "Organization.update", "Organization.delete"} <= privileges
    assert "Organization.read" not in privileges and "Organization.search" not in privileges
    for method, path in [("POST", "/Organization"), ("PUT", "/Organization/1"), ("DELETE", "/Organization/1")]:
        assert refusal(rule_for(method, path), privileges, "PRACTITIONER") is None
    assert refusal(rule_for("GET", "/Organization/1"), privileges, "PRACTITIONER") == \
        "The privilege Organization.read is required for this request"
    assert refusal(rule_for("POST", "/Patient"), privileges, "PRACTITIONER") == \
        "The privilege Patient.create is required for this request"


def test_reindex_needs_privilege_and_system_user() -> None:
    assert refusal(REINDEX_RULE, frozenset({"$reindex"}), "SYSTEM") is None
    assert refusal(REINDEX_RULE, frozenset({"$reindex"}), "PATIENT") == \
        "The user_type SYSTEM is required for this request, not PATIENT"
    assert refusal(REINDEX_RULE, frozenset({"$reindex"}), None) == \
        "The user_type SYSTEM is required for this request, not none"
    assert refusal(REINDEX_RULE, frozenset({"Organization.write"}), "SYSTEM") == \
        "The privilege $reindex is required for this request"


def test_seed_token_claims_may_reindex_but_not_read() -> None:
    principal = principal_from_claims(jwt.get_unverified_claims(SEED_TOKEN), {})
    assert principal.user_id == "f4bac12b-3c6c-419b-b94f-13d61dfe3986"
    assert principal.user_type == "SYSTEM"
    assert principal.roles == {"$test-only-create", "$reindex"}
    for method, path in [("POST", "/$reindex"), ("GET", "/$hapi.fhir.reindex-status"),
                         ("DELETE", "/$hapi.fhir.reindex-status"), ("POST", "/$hapi.fhir.reindex-status")]:
        assert refusal(rule_for(method, path), principal.privileges, principal.user_type) is None
    for method, path in [("GET", "/Organization/x"), ("POST", "/Organization/x/$reindex"),
                         ("GET", "/Organization/x/$reindex-dryrun")]:
        assert refusal(rule_for(method, path), principal.privileges, principal.user_type) == \
            "The privilege Organization.read is required for this request"


def test_patient_with_reindex_role_may_not_reindex() -> None:
    principal = principal_from_claims({"user_type": "PATIENT", "realm_access": {"roles": ["$reindex"]}}, {})
    assert refusal(rule_for("POST", "/$reindex"), principal.privileges, principal.user_type) is not None


def test_role_map_syntax_and_expansion() -> None:
    parsed = parse_role_map(" fhir-admin = Organization.read | Organization.write , auditor=*.read,,x=$reindex ")
    assert parsed == {"fhir-admin": ["Organization.read", "Organization.write"], "auditor": ["*.read"],
                      "x": ["$reindex"]}
    role_map = expand_role_map(parsed)
    assert role_map["auditor"] == SYSTEM_HISTORY_RULE.privileges
    admin = granted(["fhir-admin"], role_map)
    assert {"fhir-admin", "Organization.read", "Organization.create", "Organization.delete"} <= admin
    assert refusal(SYSTEM_HISTORY_RULE, granted(["auditor"], role_map), "PRACTITIONER") is None
    # A wildcard in a token role is taken literally: only the operator's role map expands `*`.
    assert refusal(SYSTEM_HISTORY_RULE, granted(["*.read"], {}), "SYSTEM") is not None


@pytest.mark.parametrize("text", ["fhir-admin", "=Organization.read", "fhir-admin=", "fhir-admin=|"])
def test_role_map_syntax_errors_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="FHIR_ROLE_MAP entry"):
        parse_role_map(text)


def test_role_map_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ROLE_MAP", "fhir-admin=Organization.read|Organization.write,auditor=*.read")
    assert Settings().role_map == {"fhir-admin": ["Organization.read", "Organization.write"], "auditor": ["*.read"]}
    monkeypatch.setenv("FHIR_ROLE_MAP", "no-privileges")
    with pytest.raises(ValueError, match="FHIR_ROLE_MAP entry 'no-privileges'"):
        Settings()


@pytest.mark.parametrize("claims", [
    {"realm_access": {"roles": "Organization.read"}},
    {"realm_access": {"roles": [1, 2]}},
    {"realm_access": ["Organization.read"]},
    {"user_type": ["SYSTEM"]},
    {"user_id": 7},
])
def test_malformed_principal_claims_are_refused(claims: dict) -> None:
    with pytest.raises(TokenRejected):
        principal_from_claims(claims, {})


def test_principal_without_roles_has_no_privileges() -> None:
    principal = principal_from_claims({"sub": "abc"}, {})
    assert principal.user_id == "abc" and principal.user_type is None and principal.privileges == frozenset()
