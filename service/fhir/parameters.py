"""The `$reindex` and `$reindex-dryrun` request parameters: FHIR `Parameters` bodies into validated values.

Each `Parameters` entry is first reduced to a plain Python value (accepting the value[x] types a HAPI
client sends for that parameter), then a frozen pydantic model checks ranges, codes and URLs. Every
problem becomes a 400 naming the parameter, before any job exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.fhir.errors import FhirError, invalid
from service.fhir.resource_types import RESOURCE_TYPES

MAX_BATCH_SIZE = 10_000  # HAPI clamps to 500; larger chunks are fine for our COPY-based writer


class SearchUrl(NamedTuple):
    """One `url` parameter split for the search layer: `Organization?active=true` -> ("Organization", "active=true")."""

    resource_type: str
    query: str


class _ParameterSpec(NamedTuple):
    field: str  # the ReindexRequest field the parameter fills
    value_types: frozenset[str]  # accepted value[x] element names
    repeats: bool  # 0..* rather than 0..1


_CODE = frozenset({"valueCode", "valueString"})
_REINDEX_PARAMETERS: dict[str, _ParameterSpec] = {
    "url": _ParameterSpec("urls", frozenset({"valueString", "valueUri"}), True),
    "batchSize": _ParameterSpec(
        "batch_size", frozenset({"valueInteger", "valuePositiveInt", "valueDecimal", "valueString"}), False),
    "reindexSearchParameters": _ParameterSpec("reindex_search_parameters", _CODE, False),
    "optimizeStorage": _ParameterSpec("optimize_storage", _CODE, False),
    "optimisticLock": _ParameterSpec("optimistic_lock", frozenset({"valueBoolean", "valueString"}), False),
    "correctCurrentVersion": _ParameterSpec("correct_current_version", _CODE, False),
    "partitionId": _ParameterSpec("partition_ids", frozenset({"valueString", "valueInteger"}), True),
    # Ours, not HAPI's: also rewrite index rows and bodies that are current already (see the README).
    "force": _ParameterSpec("force", frozenset({"valueBoolean", "valueString"}), False),
    # Ours: compare the stored index rows with a fresh extraction and report the differences; write nothing.
    "verify": _ParameterSpec("verify", frozenset({"valueBoolean", "valueString"}), False),
}
_PARAMETER_BY_FIELD = {spec.field: name for name, spec in _REINDEX_PARAMETERS.items()}
# The query part is kept verbatim for the search layer; only a fragment and control characters cannot belong to it.
_URL_FORM = re.compile(r"(?P<type>[A-Za-z]+)\?(?P<query>[^#\x00-\x1f\x7f]*)")
_SEARCH_CODE_FORM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a code, never a `:modifier`


class ReindexRequest(BaseModel):
    """The validated parameters of one `POST $reindex`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    urls: tuple[str, ...] = ()
    batch_size: int = Field(500, ge=1, le=MAX_BATCH_SIZE)
    reindex_search_parameters: Literal["ALL", "NONE"] = "ALL"
    optimize_storage: Literal["NONE", "CURRENT_VERSION", "ALL_VERSIONS"] = "NONE"
    optimistic_lock: bool = True
    correct_current_version: Literal["NONE", "ALL"] = "NONE"
    partition_ids: tuple[str, ...] = ()
    force: bool = False
    verify: bool = False

    @field_validator("reindex_search_parameters", "optimize_storage", "correct_current_version", mode="before")
    @classmethod
    def _upper_case_code(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            _split_search_url(url)
        return tuple(dict.fromkeys(urls))  # the same URL twice would reindex the same resources twice

    @field_validator("partition_ids")
    @classmethod
    def _check_partition_ids(cls, partition_ids: tuple[str, ...]) -> tuple[str, ...]:
        if any(not partition_id.strip() for partition_id in partition_ids):
            raise ValueError("must not be blank")
        return partition_ids

    @model_validator(mode="after")
    def _check_lock_combination(self) -> ReindexRequest:
        # Correcting versions rewrites rows another writer may hold; HAPI refuses it under optimistic locking.
        if self.correct_current_version == "ALL" and self.optimistic_lock:
            raise ValueError("correctCurrentVersion=ALL requires optimisticLock=false")
        if self.verify and (self.force or self.reindex_search_parameters == "NONE" or self.optimize_storage != "NONE"):
            raise ValueError("verify=true checks the index rows of every resource and writes nothing: it takes "
                             "neither force, reindexSearchParameters=NONE nor optimizeStorage")
        if self.reindex_search_parameters == "NONE" and self.optimize_storage == "NONE":
            raise ValueError("reindexSearchParameters=NONE with optimizeStorage=NONE leaves nothing to do")
        return self

    @property
    def searches(self) -> tuple[SearchUrl, ...]:
        """The `url` parameters as (resource type, query string) pairs; empty means every type."""
        return tuple(_split_search_url(url) for url in self.urls)


def parse_reindex_request(body: Any) -> ReindexRequest:
    """Validate a `$reindex` `Parameters` body (already parsed JSON); raise a 400 FhirError on any problem."""
    values: dict[str, Any] = {}
    for name, value in _named_values(body, _REINDEX_PARAMETERS):
        spec = _REINDEX_PARAMETERS[name]
        if spec.repeats:
            values.setdefault(spec.field, []).append(_coerce(name, spec.field, value))
        elif spec.field in values:
            raise invalid(f"Parameter '{name}' of $reindex may appear at most once")
        else:
            values[spec.field] = _coerce(name, spec.field, value)
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    try:
        return ReindexRequest(**values)
    except ValidationError as error:
        raise _as_fhir_error(error) from None


def parse_dryrun_codes(query_codes: Iterable[str], body: Any | None = None) -> tuple[str, ...]:
    """The `code` parameters of `$reindex-dryrun`, from the query (repeated or comma-separated) and/or a body.

    Returns the distinct codes in order of appearance; empty means every search parameter.
    """
    codes = [part.strip() for value in query_codes for part in value.split(",")]
    if body is not None:
        specs = {"code": _ParameterSpec("code", _CODE, True)}
        codes += [_coerce("code", "code", typed_value) for _, typed_value in _named_values(body, specs)]
    for code in codes:
        if not _SEARCH_CODE_FORM.fullmatch(code):
            raise invalid(f"Invalid value for parameter 'code' of $reindex-dryrun: {code!r} is not a search "
                          "parameter code")
    return tuple(dict.fromkeys(codes))


def _split_search_url(url: str) -> SearchUrl:
    match = _URL_FORM.fullmatch(url)
    if match is None:
        raise ValueError(f"{url!r} is not a relative search URL of the form 'Type?' or 'Type?name=value'")
    if match["type"] not in RESOURCE_TYPES:
        raise ValueError(f"{url!r} names an unknown resource type: {match['type']}")
    return SearchUrl(match["type"], match["query"])


def _named_values(body: Any, specs: Mapping[str, _ParameterSpec]) -> Iterable[tuple[str, Any]]:
    """(name, raw value) of each `Parameters` entry, checking the envelope, names and value[x] types."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid("The request body must be a FHIR Parameters resource")
    entries = body.get("parameter", [])
    if not isinstance(entries, list):
        raise invalid("Parameters.parameter must be a list")
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid(f"Parameters.parameter[{index}] has no name")
        if name not in specs:
            # HAPI ignores unknown names; we refuse them, so a misspelt option never runs a job nobody asked for.
            raise invalid(f"Unknown parameter '{name}' for this operation; known: {', '.join(sorted(specs))}")
        yield name, _single_value(name, entry, specs[name].value_types)


def _single_value(name: str, entry: dict[str, Any], accepted: frozenset[str]) -> Any:
    value_keys = [key for key in entry if key.startswith("value")]
    if len(value_keys) != 1:
        raise invalid(f"Parameter '{name}' must have exactly one value[x], found {len(value_keys)}")
    key = value_keys[0]
    if key not in accepted:
        raise invalid(f"Parameter '{name}' does not accept {key}; use one of {', '.join(sorted(accepted))}")
    return key, entry[key]


def _coerce(name: str, field: str, typed_value: tuple[str, Any]) -> Any:
    """The plain Python value of one entry, by the field it fills (pydantic then checks ranges and codes)."""
    key, value = typed_value
    if field == "batch_size":
        return _integer(name, key, value)
    if field in ("optimistic_lock", "force", "verify"):
        return _boolean(name, key, value)
    if field == "partition_ids" and key == "valueInteger" and _is_int(value):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"Parameter '{name}' must have a non-empty {key}")
    return value.strip()


def _integer(name: str, key: str, value: Any) -> int:
    if _is_int(value):
        return value
    if key in ("valueDecimal", "valueString") and isinstance(value, (str, float)):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite() and number == number.to_integral_value():
            return int(number)
    raise invalid(f"Parameter '{name}' must be an integer, got {value!r}")


def _boolean(name: str, key: str, value: Any) -> bool:
    if key == "valueBoolean" and isinstance(value, bool):
        return value
    if key == "valueString" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise invalid(f"Parameter '{name}' must be a boolean (true or false), got {value!r}")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not the integer 1


def _as_fhir_error(error: ValidationError) -> FhirError:
    """The first pydantic error as a 400 naming the FHIR parameter rather than the Python field."""
    detail = error.errors(include_url=False)[0]
    message = detail["msg"].removeprefix("Value error, ")
    location = detail["loc"]
    if not location:  # the cross-field check
        return invalid(f"Invalid $reindex parameters: {message}")
    name = _PARAMETER_BY_FIELD.get(str(location[0]), str(location[0]))
    return invalid(f"Invalid value for parameter '{name}' of $reindex: {message}")
