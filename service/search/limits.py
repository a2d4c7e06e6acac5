"""How much one search request may ask for (pure): a cap on its parameters and on their values.

Checked before anything is parsed, so a request far over a cap costs no more than reading it. Repeated
identical terms are merged later, when parsed (service/search/query.py); the caps count them as sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.fhir.errors import FhirError

# A paging link repeats the request's parameters and adds its own `_cursor`: it does not count.
UNCOUNTED = frozenset({"_cursor"})


def check_limits(items: Sequence[tuple[str, str]], max_terms: int, max_values: int) -> None:
    """400 when the request has more than `max_terms` parameters or `max_values` values in all (a value
    is one of a parameter's comma-separated alternatives; an escaped comma counts as a separator too)."""
    counted = [value for name, value in items if name not in UNCOUNTED]
    if len(counted) > max_terms:
        raise _too_costly(f"The search has {len(counted)} parameters; at most {max_terms} are allowed "
                          "(FHIR_MAX_SEARCH_TERMS)")
    values = sum(value.count(",") + 1 for value in counted)
    if values > max_values:
        raise _too_costly(f"The search has {values} values; at most {max_values} are allowed in all "
                          "(FHIR_MAX_SEARCH_VALUES)")


def _too_costly(diagnostics: str) -> FhirError:
    return FhirError(400, diagnostics, code="too-costly")
