"""JSON Patch (RFC 6902) with JSON Pointers (RFC 6901), applied to a parsed document (pure).

Written here rather than taken from a library because the document is the tree of `exact_json`, where a
number orjson would respell is an `orjson.Fragment` of its text: the operations move those leaves around
untouched, so numbers the patch does not touch keep their spelling, and `test` compares numbers by value.

Operations are counted from 0. A patch document that is not one (not an array of operation objects, an
unknown `op`, a missing member, a malformed pointer) raises `PatchError` with `malformed` set; an
operation that cannot apply (a missing target, an index out of range, a failed `test`) raises it without.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


class PatchError(Exception):
    """A patch that is malformed (400) or cannot be applied (422); `index` names the failing operation."""

    def __init__(self, index: int | None, message: str, malformed: bool = False) -> None:
        where = f"Operation {index}: " if index is not None else ""
        super().__init__(where + message)
        self.index = index
        self.malformed = malformed


class _Failure(Exception):
    """An operation that cannot apply; the caller adds which one."""


def plain(value: Any) -> Any:
    """`value` with its number fragments read as numbers, as orjson reads JSON (for comparisons)."""
    return orjson.loads(orjson.dumps(value))


def deep_copy(value: Any) -> Any:
    """A copy sharing no object or array with `value` (leaves, fragments included, are immutable)."""
    if isinstance(value, dict):
        return {key: deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [deep_copy(item) for item in value]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """RFC 6902 equality of plain JSON values: numbers by value, objects regardless of member order, and
    `true` is not `1`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def apply_json_patch(document: Any, patch: Any) -> Any:
    """The patched document; `document` may be changed in place (pass one of your own)."""
    if not isinstance(patch, list):
        raise PatchError(None, "A JSON Patch document must be a JSON array of operations", malformed=True)
    for index, operation in enumerate(patch):
        op, path, source, value = _parse(index, operation)
        try:
            document = _apply(document, op, path, source, value)
        except _Failure as failure:
            raise PatchError(index, f"{op} at '{operation['path']}': {failure}") from None
    return document


def _parse(index: int, operation: Any) -> tuple[str, list[str], list[str] | None, Any]:
    def malformed(message: str) -> PatchError:
        return PatchError(index, message, malformed=True)

    if not isinstance(operation, dict):
        raise malformed("an operation must be a JSON object")
    op = operation.get("op")
    if op not in OPERATIONS:
        raise malformed(f"'op' must be one of {', '.join(OPERATIONS)}, not {str(op)[:40]!r}")
    if op in ("add", "replace", "test") and "value" not in operation:
        raise malformed(f"'{op}' needs a 'value'")
    try:
        path = pointer(operation.get("path"), "path")
        source = pointer(operation.get("from"), "from") if op in ("move", "copy") else None
    except ValueError as problem:
        raise malformed(str(problem)) from None
    return op, path, source, operation.get("value")


def pointer(text: Any, member: str) -> list[str]:
    """The reference tokens of a JSON Pointer (`""` is the whole document)."""
    if not isinstance(text, str):
        raise ValueError(f"'{member}' must be a JSON Pointer string")
    if text and not text.startswith("/"):
        raise ValueError(f"'{member}' {text[:80]!r} is not a JSON Pointer: it must be empty or start with '/'")
    if _BAD_ESCAPE.search(text):
        raise ValueError(f"'{member}' {text[:80]!r} has a '~' that is not '~0' or '~1'")
    return [token.replace("~1", "/").replace("~0", "~") for token in text.split("/")[1:]]


def _apply(document: Any, op: str, path: list[str], source: list[str] | None, value: Any) -> Any:
    if op == "add":
        return _add(document, path, value)
    if op == "remove":
        _remove(document, path)
        return document
    if op == "replace":
        _get(document, path)  # the target must exist
        return _set(document, path, value)
    if op == "test":
        if not json_equal(plain(_get(document, path)), plain(value)):
            raise _Failure("the value is not the one the test expects")
        return document
    assert source is not None
    if op == "move":
        if path[:len(source)] == source and len(path) > len(source):
            raise _Failure("a value cannot be moved into one of its own children")
        moved = _get(document, source)
        _remove(document, source)
        return _add(document, path, moved)
    return _add(document, path, deep_copy(_get(document, source)))


def _get(document: Any, tokens: list[str]) -> Any:
    node = document
    for depth, token in enumerate(tokens):
        if isinstance(node, dict):
            if token not in node:
                raise _Failure(f"there is no member '{token}' at '{_text(tokens[:depth])}'")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node) - 1, tokens[:depth])]
        else:
            raise _Failure(f"'{_text(tokens[:depth])}' is not an object or an array")
    return node


def _add(document: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _get(document, tokens[:-1]), tokens[-1]
    if isinstance(parent, list):
        position = len(parent) if last == "-" else _index(last, len(parent), tokens[:-1])
        parent.insert(position, value)
        return document
    return _set(document, tokens, value)


def _set(document: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _get(document, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent[_index(last, len(parent) - 1, tokens[:-1])] = value
    else:
        raise _Failure(f"'{_text(tokens[:-1])}' is not an object or an array")
    return document


def _remove(document: Any, tokens: list[str]) -> None:
    if not tokens:
        raise _Failure("the whole document cannot be removed")
    _get(document, tokens)  # the target must exist
    parent, last = _get(document, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(last, len(parent) - 1, tokens[:-1])]


def _index(token: str, highest: int, at: list[str]) -> int:
    """An array index from 0 to `highest`."""
    if not _ARRAY_INDEX.fullmatch(token):
        raise _Failure(f"'{token[:40]}' is not an index of the array at '{_text(at)}'")
    if int(token) > highest:
        raise _Failure(f"index {token} is out of range for the array at '{_text(at)}'")
    return int(token)


def _text(tokens: list[str]) -> str:
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def apply_merge_patch(document: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge member by member, `null` removes, anything else replaces.
    `document` may be changed in place."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(document, dict):
        document = {}
    for name, value in patch.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = apply_merge_patch(document.get(name), value)
    return document
