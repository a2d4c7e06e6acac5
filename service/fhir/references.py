"""The references inside a resource (pure): every `reference` string, at any depth (contained resources and
extensions included), read and rewritten in place.

A Reference is the JSON object that holds a `reference` string. Three R4 `uri` elements share the name
(`DetectedIssue.reference`, `Expression.reference`, `Immunization.education.reference`) and are treated
alike, which is what HAPI does with a placeholder in a `uri`; other strings (identifiers, `Attachment.url`)
are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

from service.fhir.resource import Submitted
from service.fhir.resource_types import RESOURCE_TYPES

PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")
Resolve = Callable[[str], str | None]  # a reference -> what replaces it (None: it stays)


def is_placeholder(reference: str) -> bool:
    return reference.startswith(PLACEHOLDER_PREFIXES)


def conditional_reference(reference: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(type, search parameters) of a conditional reference such as `Organization?identifier=x|1`; else None."""
    res_type, question_mark, query = reference.partition("?")
    if not question_mark or res_type not in RESOURCE_TYPES:
        return None
    return res_type, parse_qsl(query, keep_blank_values=True)


def references(tree: Any) -> Iterator[str]:
    """Every reference string in `tree`, in document order."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from references(item)


def rewrite_references(resource: Submitted, resolve: Resolve) -> None:
    """Replace, in both trees of `resource`, each reference that `resolve` maps to something else."""
    _rewrite(resource.values, resolve)
    if resource.exact is not resource.values:
        _rewrite(resource.exact, resolve)


def _rewrite(tree: Any, resolve: Resolve) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "reference" and isinstance(value, str):
                if (replacement := resolve(value)) is not None:
                    tree[key] = replacement
            else:
                _rewrite(value, resolve)
    elif isinstance(tree, list):
        for item in tree:
            _rewrite(item, resolve)
