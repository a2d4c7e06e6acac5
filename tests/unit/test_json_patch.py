"""JSON Patch details the HTTP table does not reach: pointer escapes, RFC 6902 equality, whole-document ops."""

from __future__ import annotations

import orjson
import pytest

from service.fhir import exact_json
from service.fhir.json_patch import PatchError, apply_json_patch, json_equal, pointer


def test_pointer_tokens_and_escapes() -> None:
    assert pointer("", "path") == []
    assert pointer("/a~1b/c~0d/0", "path") == ["a/b", "c~d", "0"]
    for bad in ("a", "/x~2", 3):
        with pytest.raises(ValueError):
            pointer(bad, "path")


def test_equality_is_by_json_value() -> None:
    assert json_equal({"a": 1, "b": [1.0, "x"]}, {"b": [1, "x"], "a": 1.0})
    assert not json_equal(True, 1)
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal(None, False)


def test_whole_document_and_escaped_member() -> None:
    document = apply_json_patch({"a": 1}, [{"op": "add", "path": "/m~1n", "value": 2},
                                           {"op": "copy", "from": "", "path": "/copy"}])
    assert document == {"a": 1, "m/n": 2, "copy": {"a": 1, "m/n": 2}}
    assert apply_json_patch(document, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    with pytest.raises(PatchError, match="Operation 0: remove at '': the whole document"):
        apply_json_patch(document, [{"op": "remove", "path": ""}])


def test_untouched_and_moved_numbers_keep_their_text() -> None:
    _, document = exact_json.parse(b'{"a":[1.50,1E-7],"b":{"c":-0}}')
    patched = apply_json_patch(document, [{"op": "move", "from": "/b/c", "path": "/a/0"},
                                          {"op": "test", "path": "/a/1", "value": 1.5}])
    assert orjson.dumps(patched) == b'{"a":[-0,1.50,1E-7],"b":{}}'
