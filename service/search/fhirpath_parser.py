"""A parser for the FHIRPath subset used by search parameter expressions.

It accepts paths, `|`, `where(...)`, `as`/`is`/`ofType`, `resolve()`, `extension('url')`,
`exists()`, indexers, `=`/`!=`, `and`/`or` and literals, and raises `Unsupported` for anything else
(the registry then falls back to the full engine, fhirpathpy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class Unsupported(Exception):
    """The expression is outside the compiled subset (it may still be valid FHIRPath)."""


class UnknownElement(Unsupported):
    """A path names an element that the R4 model does not have: the expression cannot select anything."""


@dataclass(frozen=True, slots=True)
class Identifier:
    name: str


@dataclass(frozen=True, slots=True)
class Literal:
    value: object


@dataclass(frozen=True, slots=True)
class Member:
    base: object
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    base: object | None  # None: a function called on the input itself, e.g. `resolve()`
    name: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Index:
    base: object
    position: int


@dataclass(frozen=True, slots=True)
class TypeOp:
    operator: str  # "as" or "is"
    operand: object
    type_name: str


@dataclass(frozen=True, slots=True)
class BinaryOp:
    operator: str  # "|", "=", "!=", "and", "or"
    left: object
    right: object


TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+(?:\.\d+)?)"
                   r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)|(?P<op>!=|[.()\[\]|=,]))")
KEYWORDS = {"true": True, "false": False}
# Binary operators by precedence, loosest first (FHIRPath: or < and < equality < union < as/is).
PRECEDENCE = (("or",), ("and",), ("=", "!="), ("|",))


def tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise Unsupported(f"unexpected input at {position}: {text[position:position + 10]!r}")
        tokens.append(match.group().strip())
        position = match.end()
    return tokens


class Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected or 'more input'}, found {token!r}")
        self.position += 1
        return token

    def parse(self) -> object:
        node = self.binary(0)
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r}")
        return node

    def binary(self, level: int) -> object:
        if level == len(PRECEDENCE):
            return self.type_operation()
        node = self.binary(level + 1)
        while self.peek() in PRECEDENCE[level]:
            operator = self.take()
            node = BinaryOp(operator, node, self.binary(level + 1))
        return node

    def type_operation(self) -> object:
        node = self.postfix(self.term())
        while self.peek() in ("as", "is"):
            operator = self.take()
            node = TypeOp(operator, node, self.qualified_name())
        return node

    def qualified_name(self) -> str:
        name = self.name()
        while self.peek() == ".":  # FHIR.Quantity, System.String
            self.take(".")
            name = self.name()
        return name

    def name(self) -> str:
        token = self.take()
        if not re.fullmatch(r"[A-Za-z_]\w*|`[^`]+`", token):
            raise Unsupported(f"expected a name, found {token!r}")
        return token.strip("`")

    def term(self) -> object:
        token = self.peek()
        if token == "(":
            self.take("(")
            node = self.binary(0)
            self.take(")")
            return node
        if token is not None and token.startswith("'"):
            self.take()
            return Literal(re.sub(r"\\(.)", r"\1", token[1:-1]))
        if token is not None and token[0].isdigit():
            self.take()
            return Literal(float(token) if "." in token else int(token))
        if token in KEYWORDS:
            self.take()
            return Literal(KEYWORDS[token])
        return self.invocation(None)

    def invocation(self, base: object | None) -> object:
        name = self.name()
        if self.peek() != "(":
            return Identifier(name) if base is None else Member(base, name)
        self.take("(")
        args = []
        while self.peek() != ")":
            args.append(self.binary(0))
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return Call(base, name, tuple(args))

    def postfix(self, node: object) -> object:
        while self.peek() in (".", "["):
            if self.take() == ".":
                node = self.invocation(node)
            else:
                position = self.take()
                if not position.isdigit():
                    raise Unsupported("only constant indexers are supported")
                self.take("]")
                node = Index(node, int(position))
        return node


def parse(text: str) -> object:
    """The syntax tree of an expression, or `Unsupported`."""
    return Parser(text).parse()
