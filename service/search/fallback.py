"""Expressions outside the compiled subset, evaluated by fhirpathpy.

Known fhirpathpy 2.2.4 gaps and how they are handled: `Resource.x`/`DomainResource.x` select nothing
on a concrete resource, so the head is rewritten to the resource type; `resolve()` is not
implemented, so an expression using it outside `where(resolve() is Type)` is rejected; its parser
recovers from syntax errors silently, so syntax is checked with a strict parse first.
"""

from __future__ import annotations

import re
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from service.search.fhirpath_compiler import Runner

ABSTRACT_HEAD = re.compile(r"(?<![\w.])(?:Resource|DomainResource)\.")


class SyntaxProblem(Exception):
    pass


class RaisingListener(ErrorListener):
    def syntaxError(  # noqa: N802 (antlr API)
        self, recognizer: object, offendingSymbol: object, line: int, column: int, msg: str, e: object  # noqa: N803
    ) -> None:
        raise SyntaxProblem(f"column {column}: {msg}")


def check_syntax(expression: str) -> None:
    """Raise SyntaxProblem unless the whole text is one FHIRPath expression."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(RaisingListener())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(RaisingListener())
    parser.expression()
    following = tokens.LT(1)  # never None for 1 (the stub types LT(0) too)
    if following is not None and following.type != Token.EOF:
        raise SyntaxProblem(f"unexpected {following.text!r} after the expression")


def fallback_runner(expression: str, resource_type: str) -> Runner:
    """A runner from `[resource]` to the expression's (untyped) values; evaluation errors give none."""
    check_syntax(expression)
    if "resolve(" in expression:
        raise SyntaxProblem("resolve() is only supported as where(resolve() is Type)")
    evaluate = fhirpathpy.compile(ABSTRACT_HEAD.sub(f"{resource_type}.", expression), models["r4"])

    def run(items: list[Any]) -> list[Any]:
        try:
            return evaluate(items[0], None)  # no environment variables
        except Exception:  # noqa: BLE001  a data-dependent failure must not stop indexing
            return []
    return run
