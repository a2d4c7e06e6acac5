"""FHIRPath Patch (R4 fhirpatch.html): a `Parameters` body of `operation` parameters (add, insert,
delete, replace, move), applied to a resource's parsed JSON (pure).

Paths are the FHIRPath subset clients write for patches: a path from the resource type through element
names, with `[n]` indexes, `where(criteria)`, `first()`, `last()`, `extension('url')` and `ofType(T)`.
They are evaluated to locations in the JSON tree (the object holding the element, its key, its place in
an array); the R4 model says which JSON key an element has (choice types get their type suffix) and
whether it repeats (an array). Criteria are compiled by service/search/fhirpath_compiler.py and run on the
candidate element. Values come from the `exact_json` tree of the body, so their numbers keep their
spelling, as do the resource's untouched numbers.

Operations are counted from 0. `PatchError` (service/fhir/json_patch.py) reports a malformed operation
(`malformed`: a missing part, an unknown type, a path outside the subset) or one that cannot apply (no
such element, several where one is needed, an index out of range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.fhir.json_patch import PatchError, plain
from service.search import model
from service.search.fhirpath_compiler import TYPE_NAMES, Branch, compile_node, is_true, values_of
from service.search.fhirpath_parser import Call, Identifier, Index, Literal, Member, TypeOp, Unsupported, parse

TYPES = ("add", "insert", "delete", "replace", "move")


class _Failure(Exception):
    """An operation that cannot apply; the caller adds which one."""


@dataclass(frozen=True)
class Node:
    """An element found by a path: its JSON value, where it is, and its type."""

    value: Any
    parent: dict[str, Any] | None  # the JSON object holding it (None for the resource itself)
    key: str  # its JSON key in `parent` (with a choice type's suffix)
    index: int | None  # its place when `parent[key]` is an array
    type: str
    context: str  # the type or backbone path its children are looked up in
    parent_context: str  # the context `key` is an element of
    name: str  # its element name (`value` for the key `valueQuantity`)


@dataclass(frozen=True)
class Operation:
    type: str
    text: str  # the path as written, for messages
    path: object  # the parsed FHIRPath expression
    name: str | None
    value: tuple[str | None, Any] | None  # (the value[x] type suffix, or None for parts; the exact value)
    index: int | None
    source: int | None


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any], exact: dict[str, Any]) -> None:
    """Apply the patch (`parameters` as orjson reads it, `exact` the same tree with number fragments) to
    `resource` in place."""
    if parameters.get("resourceType") != "Parameters":
        raise PatchError(None, "A FHIRPath Patch body must be a Parameters resource", malformed=True)
    entries = parameters.get("parameter", [])
    exact_entries = exact.get("parameter", [])
    if not isinstance(entries, list) or not entries:
        raise PatchError(None, "The Parameters resource has no 'operation' parameter", malformed=True)
    for index, (entry, exact_entry) in enumerate(zip(entries, exact_entries)):
        operation = _operation(index, entry, exact_entry)
        try:
            _apply(resource, operation)
        except _Failure as failure:
            raise PatchError(index, f"{operation.type} at '{operation.text[:200]}': {failure}") from None


def _operation(index: int, entry: Any, exact_entry: Any) -> Operation:
    def malformed(message: str) -> PatchError:
        return PatchError(index, message, malformed=True)

    if not isinstance(entry, dict) or entry.get("name") != "operation" or not isinstance(entry.get("part"), list):
        raise malformed("every parameter must be an 'operation' with parts")
    parts = {part.get("name"): (part, exact) for part, exact in zip(entry["part"], exact_entry["part"])
             if isinstance(part, dict)}
    kind = _part(parts, "type", ("valueCode", "valueString"))
    if kind not in TYPES:
        raise malformed(f"the type must be one of {', '.join(TYPES)}, not {str(kind)[:40]!r}")
    path = _part(parts, "path", ("valueString",))
    if not isinstance(path, str):
        raise malformed("the operation has no path (a valueString part)")
    try:
        parsed = parse(path)
    except Unsupported as problem:
        raise malformed(f"the path '{path[:200]}' is not a FHIRPath expression this server applies: {problem}") \
            from None
    name = _part(parts, "name", ("valueString", "valueCode"))
    if name is not None and not isinstance(name, str):
        raise malformed("the name must be a string")
    operation = Operation(kind, path, parsed, name, _value(parts["value"][1]) if "value" in parts else None,
                          _part(parts, "index", ("valueInteger",)), _part(parts, "source", ("valueInteger",)))
    needed = {"add": ("name", "value"), "insert": ("value", "index"), "replace": ("value",),
              "move": ("index", "source"), "delete": ()}[kind]
    for name in needed:
        if getattr(operation, name) is None:
            raise malformed(f"'{kind}' needs a '{name}' part")
    return operation


def _part(parts: dict[Any, tuple[dict[str, Any], Any]], name: str, keys: tuple[str, ...]) -> Any:
    part = parts.get(name, ({}, None))[0]
    return next((part[key] for key in keys if key in part), None)


def _value(part: dict[str, Any]) -> tuple[str | None, Any] | None:
    """(type suffix, value) of a `value` part: a value[x], or (None, parts) for an element without a type
    given as nested parts; None when it has neither."""
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5:
            return key[5:], value
    return (None, part["part"]) if isinstance(part.get("part"), list) else None


def _apply(resource: dict[str, Any], operation: Operation) -> None:
    res_type = resource["resourceType"]
    root = Node(resource, None, "", None, res_type, res_type, "", res_type)
    if operation.type == "add":
        _add(_single(_evaluate(operation.path, [root])), operation)
    elif operation.type in ("insert", "move"):
        _list_operation(root, operation)
    elif operation.type == "delete":
        found = _evaluate(operation.path, [root])
        if found:  # deleting what is not there changes nothing
            _delete(_single(found))
    else:
        _replace(_single(_evaluate(operation.path, [root])), operation)


def _single(nodes: list[Node]) -> Node:
    if len(nodes) != 1:
        raise _Failure(f"the path selects {len(nodes)} elements; exactly one is needed")
    return nodes[0]


def _add(target: Node, operation: Operation) -> None:
    if not isinstance(target.value, dict):
        raise _Failure("the path selects a primitive value, which has no child elements")
    assert operation.name is not None and operation.value is not None
    key, value, context = _child_value(target.context, operation.name, operation.value)
    if model.repeats(target.context, operation.name):
        target.value.setdefault(key, []).append(value)
    else:
        for element in model.children(target.context, operation.name) or ():
            target.value.pop(element.key, None)  # a choice element holds one type at a time
        target.value[key] = value


def _replace(target: Node, operation: Operation) -> None:
    if target.parent is None:
        raise _Failure("the resource itself cannot be replaced")
    assert operation.value is not None
    key, value, _context = _child_value(target.parent_context, target.name, operation.value)
    if target.index is not None:
        target.parent[target.key][target.index] = value
        return
    items = list(target.parent.items())  # rebuilt in order: a choice element may change key
    target.parent.clear()
    target.parent.update((key, value) if item_key == target.key else (item_key, item) for item_key, item in items)


def _delete(target: Node) -> None:
    if target.parent is None:
        raise _Failure("the resource itself cannot be deleted")
    if target.index is None:
        del target.parent[target.key]
        return
    del target.parent[target.key][target.index]
    if not target.parent[target.key]:
        del target.parent[target.key]  # FHIR JSON has no empty arrays


def _list_operation(root: Node, operation: Operation) -> None:
    """insert and move: the path names a repeating element of one parent."""
    path = operation.path
    if not isinstance(path, (Member, Identifier)) or isinstance(path, Identifier) and path.name == root.type:
        raise _Failure("the path must end with the name of a repeating element")
    name = path.name
    parent = _single(_evaluate(path.base, [root]) if isinstance(path, Member) else [root])
    if not isinstance(parent.value, dict) or not model.repeats(parent.context, name):
        raise _Failure(f"'{name}' is not a repeating element of {parent.context}")
    items = parent.value.get(name, [])
    if not isinstance(items, list):
        raise _Failure(f"'{name}' of the element is not an array")
    if operation.type == "insert":
        assert operation.value is not None and operation.index is not None
        _check_index(operation.index, len(items), "index")
        items.insert(operation.index, _child_value(parent.context, name, operation.value)[1])
    else:
        assert operation.source is not None and operation.index is not None
        _check_index(operation.source, len(items) - 1, "source")
        moved = items.pop(operation.source)
        _check_index(operation.index, len(items), "index")
        items.insert(operation.index, moved)
    parent.value[name] = items


def _check_index(index: Any, highest: int, part: str) -> None:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= highest:
        raise _Failure(f"the {part} {index!r} is out of range (0 to {highest})")


def _child_value(context: str, name: str, typed: tuple[str | None, Any]) -> tuple[str, Any, str]:
    """(JSON key, JSON value, context of its children) of a value for the element `name` of `context`."""
    elements = model.children(context, name)
    if elements is None:
        raise _Failure(f"{context} has no element '{name}'")
    suffix, value = typed
    if len(elements) > 1 or elements[0].key != name:  # a choice element: the value's type picks the key
        element = next((e for e in elements if e.key == name + (suffix or "")), None)
        if element is None:
            raise _Failure(f"'{name}' of {context} cannot hold a value{suffix or ' without a type'}")
    else:
        element = elements[0]
    return element.key, value if suffix is not None else _object(element.context, value), element.context


def _object(context: str, parts: Any) -> dict[str, Any]:
    """The JSON object that nested `part`s describe, for an element whose children are in `context`."""
    built: dict[str, Any] = {}
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise _Failure("every part of a value must have a name")
        typed = _value(part)
        if typed is None:
            raise _Failure(f"the part '{part['name']}' has no value")
        key, value, _context = _child_value(context, part["name"], typed)
        if model.repeats(context, part["name"]):
            built.setdefault(key, []).append(value)
        else:
            built[key] = value
    return built


def _evaluate(expression: object, inputs: list[Node]) -> list[Node]:
    """The elements a path selects from `inputs`."""
    if isinstance(expression, Identifier):
        if expression.name in TYPE_NAMES:  # `Patient.x` at the head of a path
            return [node for node in inputs if model.is_a(node.type, expression.name)]
        return _children(inputs, expression.name)
    if isinstance(expression, Member):
        return _children(_evaluate(expression.base, inputs), expression.name)
    if isinstance(expression, Index):
        return _evaluate(expression.base, inputs)[expression.position:expression.position + 1]
    if isinstance(expression, TypeOp) and expression.operator == "as":
        return _of_type(_evaluate(expression.operand, inputs), expression.type_name)
    if isinstance(expression, Call):
        return _call(expression, _evaluate(expression.base, inputs) if expression.base is not None else inputs)
    raise _Failure("only element names, [n], where(), first(), last(), extension() and ofType() are supported "
                   "in a patch path")


def _children(nodes: list[Node], name: str) -> list[Node]:
    found: list[Node] = []
    for node in nodes:
        elements = model.children(node.context, name)
        if elements is None:
            raise _Failure(f"{node.context} has no element '{name}'")
        for element in elements if isinstance(node.value, dict) else ():
            value = node.value.get(element.key)
            items = value if isinstance(value, list) else [] if value is None else [value]
            position = (lambda i: i) if isinstance(value, list) else (lambda i: None)
            found += [Node(item, node.value, element.key, position(i), element.type, element.context, node.context,
                           name) for i, item in enumerate(items)]
    return found


def _call(call: Call, nodes: list[Node]) -> list[Node]:
    if call.name == "where" and len(call.args) == 1:
        return [node for node in nodes if _matches(call.args[0], node)]
    if call.name in ("first", "last") and not call.args:
        return nodes[:1] if call.name == "first" else nodes[-1:]
    if call.name == "extension" and len(call.args) == 1 and isinstance(call.args[0], Literal):
        url = call.args[0].value
        return [node for node in _children(nodes, "extension") if node.value.get("url") == url]
    if call.name in ("ofType", "as") and len(call.args) == 1 and isinstance(call.args[0], Identifier):
        return _of_type(nodes, call.args[0].name)
    raise _Failure(f"the function {call.name}() is not supported in a patch path")


def _matches(criteria: object, node: Node) -> bool:
    """Whether `criteria` is true of the element (compiled as search parameter expressions are)."""
    try:
        predicate = is_true(values_of(compile_node(criteria, [Branch(node.type, node.context)])))
    except Unsupported as problem:
        raise _Failure(f"the where() criteria cannot be evaluated: {problem}") from None
    return predicate(plain(node.value))


def _of_type(nodes: list[Node], type_name: str) -> list[Node]:
    if type_name in model.PRIMITIVE_TYPES:
        return [node for node in nodes if node.type == type_name]
    return [node for node in nodes if model.is_a(node.type, type_name)]
