"""Compile the FHIRPath subset to Python closures, with every result's FHIR type known statically.

An expression compiles, for one resource type, to typed branches (`CompiledBranch`): a FHIR type and
how to reach that branch's JSON values from the resource. Choice
elements expand into one branch per type (`Observation.value` reads `valueQuantity`,
`valueCodeableConcept`...), so `as`/`ofType` only drop branches and nothing is tested at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.fhir.resource_types import RESOURCE_TYPES
from service.search import model
from service.search.fhirpath_parser import (
    BinaryOp,
    Call,
    Identifier,
    Index,
    Literal,
    Member,
    TypeOp,
    UnknownElement,
    Unsupported,
    parse,
)
from service.search.values import reference_target

Runner = Callable[[list[Any]], list[Any]]  # parsed JSON values in, parsed JSON values out
Step = str | Runner  # a str step reads that JSON key of every item
TYPE_NAMES = RESOURCE_TYPES | {"Resource", "DomainResource"}
LITERAL_TYPES = {str: "string", bool: "boolean", int: "integer", float: "decimal"}
# FHIRPath's own name of a type where a definition uses it for the FHIR one (code-value-date: `as(DateTime)`).
SYSTEM_TYPES = {"DateTime": "dateTime"}


@dataclass(frozen=True, slots=True)
class Branch:
    type: str
    context: str  # the type or backbone path its children are looked up in
    steps: tuple[Step, ...] = ()
    path: str = ""  # the definition path of the element it selects ("" for computed values)


def read_key(key: str) -> Runner:
    """The values of `key` in every item, lists flattened: the common single-step runner."""
    def run(items: list[Any]) -> list[Any]:
        found = []
        for item in items:
            value = item.get(key) if item.__class__ is dict else None
            if value is not None:
                if value.__class__ is list:
                    found.extend(value)
                else:
                    found.append(value)
        return found
    return run


def run_steps(steps: tuple[Step, ...]) -> Runner:
    runners = [read_key(step) if isinstance(step, str) else step for step in steps]
    if len(runners) == 1:
        return runners[0]

    def run(items: list[Any]) -> list[Any]:
        for runner in runners:
            items = runner(items)
            if not items:
                break
        return items
    return run


def values_of(branches: list[Branch]) -> Runner:
    runners = [run_steps(b.steps) for b in branches]
    return lambda items: [value for run in runners for value in run(items)]


def boolean(step: Runner) -> list[Branch]:
    return [Branch("boolean", "boolean", (step,))]


def type_name_of(node: object) -> str:
    if not isinstance(node, Identifier):
        raise Unsupported("a type name is expected")
    return node.name


def children(branches: list[Branch], name: str) -> list[Branch]:
    result: list[Branch] = []
    for branch in branches:
        elements = model.children(branch.context, name)
        if elements is None:
            raise UnknownElement(f"no element {name!r} in {branch.context}")
        result.extend(Branch(e.type, e.context, branch.steps + (e.key,), e.path) for e in elements)
    return result


def of_type(branches: list[Branch], type_name: str) -> list[Branch]:
    type_name = SYSTEM_TYPES.get(type_name, type_name)
    if any(b.type == "Resource" for b in branches):
        raise Unsupported("the type of a contained resource is not known statically")
    if type_name in model.PRIMITIVE_TYPES:  # exact: `source as uri` must not pick `sourceCanonical`
        return [b for b in branches if b.type == type_name]
    return [b for b in branches if model.is_a(b.type, type_name)]  # Age is a Quantity


def item_test(condition: object, branch: Branch) -> Callable[[Any], bool] | None:
    """A direct test for the common conditions: `resolve() is T` and `key = 'literal'`."""
    if (isinstance(condition, TypeOp) and condition.operator == "is" and branch.type == "Reference"
            and condition.operand == Call(None, "resolve", ())):
        wanted = condition.type_name
        return lambda item: (reference_type(item) == wanted)
    if (isinstance(condition, BinaryOp) and condition.operator == "="
            and isinstance(condition.left, Identifier) and isinstance(condition.right, Literal)
            and type(condition.right.value) is str):
        key, literal = condition.left.name, condition.right.value
        if [e.key for e in model.children(branch.context, key) or ()] != [key]:  # unknown or choice
            return None
        return lambda item: item.__class__ is dict and item.get(key) in (literal, [literal])
    return None


def is_true(predicate: Runner) -> Callable[[Any], bool]:
    """The item test of a compiled condition: `where` keeps an item when the condition gives exactly true."""
    return lambda item: predicate([item]) == [True]


def filtered(branches: list[Branch], condition: object) -> list[Branch]:
    result = []
    for branch in branches:
        test = item_test(condition, branch)
        if test is None:
            test = is_true(values_of(compile_node(condition, [Branch(branch.type, branch.context)])))
        keep = lambda items, test=test: [item for item in items if test(item)]
        result.append(Branch(branch.type, branch.context, branch.steps + (keep,), branch.path))
    return result


def with_url(branches: list[Branch], url: object) -> list[Branch]:
    if not isinstance(url, Literal) or not isinstance(url.value, str):
        raise Unsupported("extension() needs a string literal")
    keep = lambda items: [i for i in items if i.get("url") == url.value]
    return [Branch(b.type, b.context, b.steps + (keep,), b.path) for b in children(branches, "extension")]


def resolves_to(branches: list[Branch], type_name: str) -> list[Branch]:
    """`resolve() is T` on a Reference: true when the literal reference points at a T."""
    if any(b.type != "Reference" for b in branches):
        raise Unsupported("resolve() is only compiled on references")

    return boolean(lambda items: [reference_type(item) == type_name for item in items[:1]])


def reference_type(reference: dict[str, Any]) -> str | None:
    text = reference.get("reference")
    target = reference_target(text) if text.__class__ is str else None
    return target[0] if target else None


def exists(branches: list[Branch]) -> list[Branch]:
    found = values_of(branches)
    return boolean(lambda items: [bool(found(items))])


def call(node: Call, inputs: list[Branch]) -> list[Branch]:
    base = compile_node(node.base, inputs) if node.base is not None else inputs
    if node.name == "where" and len(node.args) == 1:
        return filtered(base, node.args[0])
    if node.name in ("as", "ofType") and len(node.args) == 1:
        return of_type(base, type_name_of(node.args[0]))
    if node.name == "extension" and len(node.args) == 1:
        return with_url(base, node.args[0])
    if node.name == "exists" and not node.args:
        return exists(base)
    raise Unsupported(f"function {node.name}() is not compiled")


def equals(a: object, b: object) -> bool:
    return a == b and (type(a) is bool) == (type(b) is bool)  # true is not 1 in FHIRPath


def comparison(node: BinaryOp, inputs: list[Branch]) -> list[Branch]:
    left, right = values_of(compile_node(node.left, inputs)), values_of(compile_node(node.right, inputs))
    negate = node.operator == "!="

    def compare(items: list[Any]) -> list[Any]:
        a, b = left(items), right(items)
        if not a or not b:
            return []
        return [(len(a) == len(b) and all(map(equals, a, b))) != negate]
    return boolean(compare)


def logical(node: BinaryOp, inputs: list[Branch]) -> list[Branch]:
    """Three-valued and/or over singleton booleans (empty is unknown)."""
    left, right = values_of(compile_node(node.left, inputs)), values_of(compile_node(node.right, inputs))
    decisive = node.operator == "or"  # true decides `or`, false decides `and`

    def combine(items: list[Any]) -> list[Any]:
        a, b = left(items)[:1], right(items)[:1]
        if a == [decisive] or b == [decisive]:
            return [decisive]
        return [not decisive] if a and b else []
    return boolean(combine)


def compile_node(node: object, inputs: list[Branch]) -> list[Branch]:
    if isinstance(node, Identifier):
        if node.name in TYPE_NAMES:  # `Patient.x` at the head of a path filters the input by type
            return of_type(inputs, node.name)
        return children(inputs, node.name)
    if isinstance(node, Member):
        return children(compile_node(node.base, inputs), node.name)
    if isinstance(node, Call):
        return call(node, inputs)
    if isinstance(node, Index):
        position = node.position
        pick = lambda items: items[position:position + 1]
        return [Branch(b.type, b.context, b.steps + (pick,), b.path) for b in compile_node(node.base, inputs)]
    if isinstance(node, TypeOp):
        if node.operator == "as":
            return of_type(compile_node(node.operand, inputs), node.type_name)
        if isinstance(node.operand, Call) and node.operand.name == "resolve" and node.operand.base is None:
            return resolves_to(inputs, node.type_name)
        raise Unsupported("`is` is only compiled as `resolve() is Type`")
    if isinstance(node, Literal):
        value = node.value
        return [Branch(LITERAL_TYPES[type(value)], "literal", (lambda items: [value],))]
    if isinstance(node, BinaryOp):
        if node.operator == "|":
            return compile_node(node.left, inputs) + compile_node(node.right, inputs)
        if node.operator in ("=", "!="):
            return comparison(node, inputs)
        return logical(node, inputs)
    raise Unsupported(f"cannot compile {node!r}")


@dataclass(frozen=True, slots=True)
class CompiledBranch:
    """One typed branch, split for extraction: the resource's `first_key` (None: start from
    `[resource]`), then `rest` (None: nothing more) from that key's values; `path` as in Branch."""

    type: str
    first_key: str | None
    rest: Runner | None
    path: str = ""


def compile_expression(expression: str, resource_type: str) -> list[CompiledBranch]:
    """The typed branches of `expression` on `resource_type`; raises Unsupported."""
    compiled = []
    for branch in compile_node(parse(expression), [Branch(resource_type, resource_type)]):
        steps = branch.steps
        if steps and isinstance(steps[0], str):
            rest = run_steps(steps[1:]) if steps[1:] else None
            compiled.append(CompiledBranch(branch.type, steps[0], rest, branch.path))
        else:
            compiled.append(CompiledBranch(branch.type, None, run_steps(steps), branch.path))
    return compiled
