"""A renderer for the subset of Go's text/template and Helm's functions that the chart uses.

There is no `helm` binary on the machines the suite runs on, so the chart test renders with this:
actions with `{{-`/`-}}` trimming, comments, if/else if/else, with/else, range with `$k, $v :=`,
define/include, pipelines, parentheses, and the functions listed in `FUNCTIONS`. It follows Go's and
Helm's semantics where they are observable in a manifest, and fails loudly instead of guessing:

- values from values.yaml are numbers of type float64 in Helm (YAML goes through JSON), and Go prints
  float64 with %v, so 16777216 prints as `1.6777216e+07`; a template has to use `int` to get digits;
- a field of a missing value (`.Values.nope.x`) is an error, as in Helm; `<no value>` prints as "";
- printing a map or a list is an error here (in Go it prints `map[...]`, never what a manifest wants);
- a function or syntax the renderer does not know is an error, so a template that outgrows it fails
  the chart test rather than rendering something else;
- `required` and `fail` raise ExecutionError, worded as Helm's `execution error at (chart/file)`
  (without Helm's line and column), so a test can tell a refusal by the chart from a renderer error.

Its output for the chart's value sets was compared once, byte for byte, with Helm 4's own engine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    pass

class ExecutionError(TemplateError):
    """The chart refused to render (`required` or `fail`), as Helm's `execution error at (...)`."""

class Struct(dict):
    """A Go struct (.Release, .Chart, .Template): an unknown field is an error, unlike a map key."""

_TRIM_LEFT = re.compile(r"^-[ \t\r\n]")
_TRIM_RIGHT = re.compile(r"[ \t\r\n]-$")

def _lex(source: str, name: str) -> list[tuple[str, str]]:
    """Split a template into ("text", s) and ("action", s) items, applying the trim markers."""
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            items.append(("text", text))
            return items
        # Find the closing braces outside string literals.
        i, quote = start + 2, ""
        while i < len(source):
            ch = source[i]
            if quote:
                if ch == "\\" and quote == '"':
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"`":
                quote = ch
            elif source.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateError(f"{name}: unclosed action at offset {start}")
        inner = source[start + 2 : i]
        if _TRIM_LEFT.match(inner):
            text = text.rstrip(" \t\r\n")
            inner = inner[2:]
        trim_next = bool(_TRIM_RIGHT.search(inner))
        if trim_next:
            inner = inner[:-2]
        items.append(("text", text))
        inner = inner.strip()
        if inner.startswith("/*"):
            if not inner.endswith("*/"):
                raise TemplateError(f"{name}: unterminated comment")
        else:
            items.append(("action", inner))
        pos = i + 2

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<decl>:=)
    | (?P<assign>=)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[()|,])
    )""",
    re.VERBOSE,
)

def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {expr[pos:]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out

def _parse_pipeline(expr: str) -> dict[str, Any]:
    toks = _tokens(expr)
    decl: list[str] = []
    # `$v := pipeline`, `$k, $v := pipeline` or `$v = pipeline`.
    for n in (1, 3):
        if len(toks) > n and toks[n][0] in ("decl", "assign") and all(
            t[0] == "var" for t in toks[:n:2]
        ) and all(t == ("punct", ",") for t in toks[1:n:2]):
            decl = [t[1] for t in toks[:n:2]]
            toks = toks[n + 1 :]
            break
    pipe, rest = _pipe(toks)
    if rest:
        raise TemplateError(f"unexpected {rest[0][1]!r} in {expr!r}")
    return {"decl": decl, "cmds": pipe}

def _pipe(toks: list[tuple[str, str]]) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    cmds: list[list[Any]] = []
    cmd: list[Any] = []
    while toks:
        kind, text = toks[0]
        if (kind, text) == ("punct", ")"):
            break
        toks = toks[1:]
        if (kind, text) == ("punct", "|"):
            if not cmd:
                raise TemplateError("empty command in pipeline")
            cmds.append(cmd)
            cmd = []
        elif (kind, text) == ("punct", "("):
            sub, toks = _pipe(toks)
            if not toks or toks[0] != ("punct", ")"):
                raise TemplateError("unclosed parenthesis")
            toks = toks[1:]
            node: Any = ("paren", sub)
            if toks and toks[0][0] == "field" and toks[0][1] != ".":
                node = ("chain", node, toks[0][1][1:].split("."))
                toks = toks[1:]
            cmd.append(node)
        elif kind in ("str", "raw", "num", "var", "field", "ident"):
            cmd.append((kind, text))
        else:
            raise TemplateError(f"unexpected {text!r}")
    if not cmd:
        raise TemplateError("empty pipeline")
    cmds.append(cmd)
    return cmds, toks

def _parse(items: list[tuple[str, str]], name: str) -> tuple[list[Any], dict[str, list[Any]]]:
    """Build the node tree of one file; return its nodes and the templates it defines."""
    defines: dict[str, list[Any]] = {}
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[Any], str]:
        nonlocal pos
        nodes: list[Any] = []
        while pos < len(items):
            kind, text = items[pos]
            pos += 1
            if kind == "text":
                if text:
                    nodes.append(("text", text))
                continue
            word = text.split(None, 1)[0] if text else ""
            arg = text[len(word) :].strip()
            if word in ("end", "else"):
                if word not in stop:
                    raise TemplateError(f"{name}: unexpected {{{{ {text} }}}}")
                return nodes, text
            if word in ("if", "with"):
                nodes.append(conditional(word, arg))
            elif word == "range":
                pipe = _parse_pipeline(arg)
                body, end = block(("end", "else"))
                other = block(("end",))[0] if end == "else" else []
                nodes.append(("range", pipe, body, other))
            elif word == "define":
                tname = json.loads(arg)
                defines[tname] = block(("end",))[0]
            elif word in ("template", "block", "break", "continue"):
                raise TemplateError(f"{name}: {word} is not supported by this renderer")
            else:
                nodes.append(("action", _parse_pipeline(text)))
        if stop:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, ""

    def conditional(word: str, arg: str) -> Any:
        pipe = _parse_pipeline(arg)
        body, end = block(("end", "else"))
        other: list[Any] = []
        if end.startswith("else"):
            rest = end[4:].strip()
            if rest.startswith(word + " "):  # else if / else with: a nested conditional, one end
                other = [conditional(word, rest[len(word) :].strip())]
            elif rest:
                raise TemplateError(f"{name}: unsupported {{{{ {end} }}}}")
            else:
                other = block(("end",))[0]
        return (word, pipe, body, other)

    nodes, _ = block(())
    return nodes, defines

def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    return True

def go_float(value: float) -> str:
    """fmt's %v of a float64: strconv 'g' with the shortest digits, exponent form from 1e+06."""
    if value == 0:
        return "0"
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits))
    dp = len(ds) + exponent  # position of the decimal point
    exp = dp - 1
    out = "-" if sign else ""
    if exp < -4 or exp >= 6:  # fmt's %v: shortest digits, %e decided with precision 6
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{out}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{out}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{out}{ds}{'0' * (dp - len(ds))}"
    return f"{out}{ds[:dp]}.{ds[dp:]}"

def strval(value: Any) -> str:
    """Sprig's strval / fmt's %v for the kinds a template may print."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise TemplateError(f"refusing to print a {type(value).__name__}: {value!r} (use toYaml)")

def go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)

def _to_plain(value: Any) -> Any:
    """Values as encoding/json then YAML would write them (integral floats as integers)."""
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value

class _GoYamlDumper(yaml.SafeDumper):
    """Quote like Helm's YAML encoder: a string that would read back as another type ("1", "true")
    is double-quoted, a multi-line string is a literal block; the rest as PyYAML decides."""

def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = None
    if dumper.resolve(yaml.ScalarNode, data, (True, False)) != "tag:yaml.org,2002:str":
        style = '"'
    elif "\n" in data:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

_GoYamlDumper.add_representer(str, _represent_str)

def to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    # Width 80, as Helm's encoder: long quoted strings fold over lines there too.
    text = yaml.dump(_to_plain(value), Dumper=_GoYamlDumper, default_flow_style=False, sort_keys=True,
                     width=80)
    if text.endswith("\n...\n"):  # a scalar document
        text = text[: -len("...\n")]
    return text.removesuffix("\n")

def _indent(width: int, text: str) -> str:
    pad = " " * int(width)
    return pad + text.replace("\n", "\n" + pad)

def _to_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return 0
    raise TemplateError(f"int of {value!r}")

def _trunc(count: Any, text: str) -> str:
    count = int(count)
    if count < 0 and len(text) + count > 0:
        return text[len(text) + count :]
    if count >= 0 and len(text) > count:
        return text[:count]
    return text

def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        value = next(values)
        if m.group(1) == "d":
            if not isinstance(value, int) or isinstance(value, bool):
                return f"%!d({type(value).__name__}={strval(value)})"
            return str(value)
        if m.group(1) == "q":
            return go_quote(strval(value))
        return strval(value)

    result = re.sub(r"%%|%([sdvq])", one, fmt)
    if re.search(r"%[^sdvq%]", fmt):
        raise TemplateError(f"printf verb not supported: {fmt!r}")
    return result

def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"

def _eq(first: Any, *others: Any) -> bool:
    for other in others:
        ka, kb = _kind(first), _kind(other)
        if ka != kb or ka == "other":
            raise TemplateError(f"incompatible types for comparison: {first!r} and {other!r}")
        if first == other:
            return True
    return False

def _empty(value: Any) -> bool:
    return not _truth(value)

def _required(message: str, value: Any) -> Any:
    """Helm's `required`: only nil and the empty string are missing (false and 0 are values)."""
    if value is None or value == "":
        raise ExecutionError(message)
    return value

def _fail(message: str) -> str:
    raise ExecutionError(message)

FUNCTIONS: dict[str, Any] = {
    "default": lambda default, *given: default if not given or _empty(given[0]) else given[0],
    "quote": lambda *vs: " ".join(go_quote(strval(v)) for v in vs if v is not None),
    "toYaml": to_yaml,
    "indent": _indent,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "int": _to_int,
    "trunc": _trunc,
    "trimSuffix": lambda suffix, text: text.removesuffix(suffix),
    "replace": lambda old, new, text: text.replace(old, new),
    "printf": _printf,
    "sha256sum": lambda text: hashlib.sha256(text.encode()).hexdigest(),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "not": lambda value: not _truth(value),
    "and": lambda *vs: next((v for v in vs if not _truth(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if _truth(v)), vs[-1]),
    "empty": _empty,
    "required": _required,
    "fail": _fail,
}

class Renderer:
    """Renders the templates of one chart directory with a values tree."""

    def __init__(self, chart_dir: Path) -> None:
        self.chart_dir = chart_dir
        self.files: dict[str, list[Any]] = {}
        self.defines: dict[str, list[Any]] = {}
        for path in sorted((chart_dir / "templates").rglob("*")):
            if path.is_file():
                rel = path.relative_to(chart_dir).as_posix()
                nodes, defines = _parse(_lex(path.read_text(), rel), rel)
                for tname in defines:
                    if tname in self.defines:
                        raise TemplateError(f"{rel}: template {tname!r} defined twice")
                self.defines.update(defines)
                self.files[rel] = nodes

    # -- evaluation ---------------------------------------------------------------------------------

    def _lookup(self, value: Any, names: list[str], where: str) -> Any:
        for name in names:
            if value is None:
                raise TemplateError(f"nil pointer evaluating {where}.{name}")
            if isinstance(value, Struct):
                if name not in value:
                    raise TemplateError(f"can't evaluate field {name} in {where}")
                value = value[name]
            elif isinstance(value, dict):
                value = value.get(name)
            else:
                raise TemplateError(f"can't evaluate field {name} of {type(value).__name__} in {where}")
            where = f"{where}.{name}"
        return value

    def _var(self, scopes: list[dict[str, Any]], name: str) -> Any:
        for scope in reversed(scopes):
            if name in scope:
                return scope[name]
        raise TemplateError(f"undefined variable {name}")

    def _operand(self, node: Any, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        kind = node[0]
        if kind == "str":
            return json.loads(node[1])
        if kind == "raw":
            return node[1][1:-1]
        if kind == "num":
            return float(node[1]) if "." in node[1] else int(node[1])
        if kind == "field":
            return dot if node[1] == "." else self._lookup(dot, node[1][1:].split("."), "")
        if kind == "var":
            name, *fields = node[1].split(".")
            return self._lookup(self._var(scopes, name), fields, name)
        if kind == "paren":
            return self._pipeline({"decl": [], "cmds": node[1]}, dot, scopes)
        if kind == "chain":
            return self._lookup(self._operand(node[1], dot, scopes), node[2], "(...)")
        if kind == "ident":
            if node[1] in ("true", "false"):
                return node[1] == "true"
            if node[1] == "nil":
                return None
            return self._call(node[1], [], dot, scopes)
        raise TemplateError(f"bad operand {node!r}")

    def _call(self, name: str, args: list[Any], dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if name == "include":
            if len(args) != 2:
                raise TemplateError("include takes a template name and a context")
            return self.include(args[0], args[1])
        if name not in FUNCTIONS:
            raise TemplateError(f"function {name!r} not defined in this renderer")
        return FUNCTIONS[name](*args)

    def _pipeline(self, pipe: dict[str, Any], dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe["cmds"]):
            head = cmd[0]
            if head[0] == "ident" and head[1] not in ("true", "false", "nil"):
                args = [self._operand(a, dot, scopes) for a in cmd[1:]]
                if i > 0:
                    args.append(value)
                value = self._call(head[1], args, dot, scopes)
            else:
                if len(cmd) > 1 or i > 0:
                    raise TemplateError(f"can't give arguments to a non-function {head[1]!r}")
                value = self._operand(head, dot, scopes)
        if pipe["decl"] and len(pipe["decl"]) == 1:
            scopes[-1][pipe["decl"][0]] = value
        return value

    def _exec(self, nodes: list[Any], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                value = self._pipeline(node[1], dot, scopes)
                if not node[1]["decl"]:
                    out.append(strval(value))
            elif kind in ("if", "with"):
                scopes.append({})
                value = self._pipeline(node[1], dot, scopes)
                if _truth(value):
                    self._exec(node[2], value if kind == "with" else dot, scopes, out)
                else:
                    self._exec(node[3], dot, scopes, out)
                scopes.pop()
            elif kind == "range":
                pipe = node[1]
                value = self._pipeline({"decl": [], "cmds": pipe["cmds"]}, dot, scopes)
                if isinstance(value, dict):
                    pairs = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, list):
                    pairs = list(enumerate(value))
                elif value is None:
                    pairs = []
                else:
                    raise TemplateError(f"range can't iterate over {value!r}")
                if not pairs:
                    self._exec(node[3], dot, scopes, out)
                for key, item in pairs:
                    scope: dict[str, Any] = {}
                    if len(pipe["decl"]) == 1:
                        scope[pipe["decl"][0]] = item
                    elif len(pipe["decl"]) == 2:
                        scope[pipe["decl"][0]] = key
                        scope[pipe["decl"][1]] = item
                    scopes.append(scope)
                    self._exec(node[2], item, scopes, out)
                    scopes.pop()
            else:
                raise TemplateError(f"bad node {kind}")

    def include(self, name: str, context: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"no template {name!r}")
        out: list[str] = []
        self._exec(self.defines[name], context, [{"$": context}], out)
        return "".join(out)

    # -- the chart ----------------------------------------------------------------------------------

    def render(
        self,
        overrides: dict[str, Any] | None = None,
        release: str = "fhir",
        namespace: str = "health",
    ) -> dict[str, str]:
        """Render every template file (not the `_` partials) like `helm template`."""
        meta = yaml.safe_load((self.chart_dir / "Chart.yaml").read_text())
        values = yaml.safe_load((self.chart_dir / "values.yaml").read_text()) or {}
        values = _merge(values, overrides or {})
        context = Struct(
            Values=_as_helm_numbers(values),
            Release=Struct(Name=release, Namespace=namespace, Service="Helm", IsInstall=True,
                           IsUpgrade=False, Revision=1),
            Chart=Struct({k[:1].upper() + k[1:]: v for k, v in meta.items()}),
            Template=Struct(Name="", BasePath=f"{meta['name']}/templates"),
        )
        rendered = {}
        for rel, nodes in self.files.items():
            if Path(rel).name.startswith("_"):
                continue
            out: list[str] = []
            context["Template"] = Struct(Name=f"{meta['name']}/{rel}",
                                         BasePath=f"{meta['name']}/templates")
            try:
                self._exec(nodes, context, [{"$": context}], out)
            except ExecutionError as exc:
                raise ExecutionError(f"execution error at ({meta['name']}/{rel}): {exc}") from None
            rendered[rel] = "".join(out).replace("<no value>", "")
        return rendered

def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values onto the chart's: maps merge, null deletes, others replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged

def _as_helm_numbers(value: Any) -> Any:
    """Helm reads values.yaml through JSON: every number becomes a float64."""
    if isinstance(value, dict):
        return {k: _as_helm_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_helm_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
