"""Search terms -> SQL conditions on the index tables (pure).

Each term becomes `res_id IN (SELECT res_id FROM idx_<type> WHERE ...)` (a correlated NOT EXISTS for
`:not`), every alternative carrying `sp_hash = $h` first so the (sp_hash, value) b-tree indexes serve it. Table and
column names come from the fixed tables below; every value is a `$n` parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from service.search.composite import COMPONENT_COLUMNS
from service.search.near import NearMatch, near_condition
from service.search.param_hash import sp_hash
from service.search.query_values import (
    CompositeMatch,
    DateMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    StringMatch,
    TokenMatch,
    TokenText,
    UriMatch,
    uri_ancestors,
)
from service.search.terms import Term

TABLES = {"string": "idx_string", "token": "idx_token", "date": "idx_date", "number": "idx_number",
          "quantity": "idx_quantity", "uri": "idx_uri", "reference": "idx_reference", "composite": "idx_composite",
          "special": "idx_position"}
FULL_TEXT_COLUMNS = {"_text": "narrative", "_content": "content"}
# Row range [low, high] against the query value's range [ql, qh] (FHIR R4 search, prefixes on ranges).
# Redundant bounds (low <= high always) give each arm an index range on `low` or `high`.
DATE_CONDITIONS = {
    "eq": "low >= {ql} AND low <= {qh} AND high <= {qh}",
    "ne": "NOT (low >= {ql} AND high <= {qh})",
    "gt": "high > {qh}",
    "lt": "low < {ql}",
    "ge": "(high > {qh} OR (high >= {ql} AND high <= {qh} AND low >= {ql}))",
    "le": "(low < {ql} OR (low >= {ql} AND low <= {qh} AND high <= {qh}))",
    "sa": "low > {qh}",
    "eb": "high < {ql}",
    "ap": "low <= {qh} AND high >= {ql}",
}
# A stored number {c} against the query value v and its implicit range [low, high).
NUMBER_CONDITIONS = {
    "eq": "{c} >= {low} AND {c} < {high}",
    "ne": "NOT ({c} >= {low} AND {c} < {high})",
    "gt": "{c} > {v}",
    "lt": "{c} < {v}",
    "ge": "{c} >= {v}",
    "le": "{c} <= {v}",
    "sa": "{c} > {v}",
    "eb": "{c} < {v}",
    "ap": "{c} >= {low} AND {c} <= {high}",
}


class Parameters:
    """The `$n` parameters of one statement, in order, and the table aliases its chains use."""

    def __init__(self) -> None:
        self.values: list[object] = []
        self._aliases = 0

    def add(self, value: object, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"

    def alias(self, prefix: str) -> str:
        """A table alias not used before in the statement (chains nest subqueries within subqueries)."""
        self._aliases += 1
        return f"{prefix}{self._aliases}"


def term_condition(term: Term, params: Parameters, alias: str = "r", probed: bool = False) -> str:
    """The condition on the resource row `alias` (which has res_id, res_type and fhir_id); `probed`: a `:not` is
    looked up per candidate, for candidates another term's index rows chose (search/sql.py `index_matches`)."""
    if term.reverse:
        return has_condition(term, params, alias)
    subquery = term_subquery(term, params)
    if term.negated:
        # PostgreSQL never plans `NOT IN (subquery)` as an anti-join (a NULL would change its meaning), only
        # as a per-row or hashed SubPlan; NOT EXISTS says the same here (res_id is never NULL) and is one: the
        # index table is joined once, whatever the number of resources the search walks. Among a few candidates
        # a probe each is the safer plan (OFFSET 0 keeps the SubPlan): an anti-join, estimated cheap for a rare
        # value, may walk that value's whole index for a first row that does not exist (1.7 s at 1,000,000).
        barrier = " OFFSET 0" if probed else ""
        return f"NOT EXISTS (SELECT FROM ({subquery}) AS matched WHERE matched.res_id = {alias}.res_id{barrier})"
    return f"{alias}.res_id IN ({subquery})"


def hash_test(types: tuple[str, ...], code: str, params: Parameters) -> str:
    """`sp_hash` is the parameter `code` of one of `types` (several in a system-level search)."""
    if len(types) == 1:
        return f"sp_hash = {params.add(sp_hash(types[0], code))}"
    return f"sp_hash = ANY({params.add([sp_hash(res_type, code) for res_type in types], '::bigint[]')})"


def term_subquery(term: Term, params: Parameters) -> str:
    if term.chain is not None:
        return chain_subquery(term.chain, params.add(sp_hash(term.resource_type, term.code)), params)
    first = term.values[0]
    if isinstance(first, StringMatch) and first.mode == "text":
        return full_text_subquery(term, params)
    code_test = hash_test(term.types, term.code, params)
    if isinstance(first, MissingMatch):
        table = "idx_missing" if first.missing else TABLES[term.kind]
        return f"SELECT res_id FROM {table} WHERE {code_test}"
    alternatives = " OR ".join(f"({code_test} AND {value_condition(value, params)})" for value in term.values)
    return f"SELECT res_id FROM {TABLES[term.kind]} WHERE {alternatives}"


def full_text_subquery(term: Term, params: Parameters) -> str:
    """`_text` or `_content` on the resource_text GIN indexes (sql/0010): any alternative's words match."""
    column = FULL_TEXT_COLUMNS[term.code]
    alternatives = " OR ".join(f"{column} @@ websearch_to_tsquery('simple', {params.add(value.text)})"
                               for value in term.values if isinstance(value, StringMatch))
    return f"SELECT res_id FROM resource_text WHERE {alternatives}"


def chain_subquery(inner: Term, code_hash: str, params: Parameters) -> str:
    """Resources whose reference `code_hash` points at a live resource matching `inner`."""
    target_type = params.add(inner.resource_type)
    x, t = params.alias("x"), params.alias("t")
    return (f"SELECT {x}.res_id FROM idx_reference {x} JOIN resource {t} ON {points_at(x, t)} "
            f"WHERE {x}.sp_hash = {code_hash} AND {x}.target_type = {target_type} AND {t}.res_type = {target_type} "
            f"AND NOT {t}.deleted AND {term_condition(inner, params, t)}")


def has_condition(term: Term, params: Parameters, alias: str) -> str:
    """`_has`: some resource matching the inner term refers to the row `alias` through the parameter. A semi-join
    on idx_reference; index rows exist for live resources only, so the referring resource is joined only when the
    inner term needs its type and id (a nested `_has`)."""
    inner = term.chain
    assert inner is not None  # a reverse term always has its inner term
    code_hash, target_type = params.add(sp_hash(inner.resource_type, term.code)), params.add(term.resource_type)
    x = params.alias("x")
    source, join = x, ""
    if inner.reverse:
        source = params.alias("s")
        join = f" JOIN resource {source} ON {source}.res_id = {x}.res_id"
    return (f"EXISTS (SELECT 1 FROM idx_reference {x}{join} WHERE {x}.sp_hash = {code_hash} "
            f"AND {x}.target_type = {target_type} AND {points_at(x, alias)} "
            f"AND {term_condition(inner, params, source)})")


def points_at(x: str, alias: str) -> str:
    """The reference row `x` names the resource row `alias` (of the type the caller fixes). idx_reference's target
    columns are "C"-collated and resource's are not, and an index serves a comparison only in its own collation:
    the id is compared in both, so PostgreSQL can go either way, whichever side has fewer matches. From
    the resource to its referrers through idx_reference_target (the "C" comparison), or from the references to
    their targets through resource_type_id_key (the other). The second comparison adds no condition."""
    return f"{x}.target_id = {alias}.fhir_id AND {alias}.fhir_id = {x}.target_id COLLATE \"default\""


def value_condition(value: object, params: Parameters) -> str:
    if isinstance(value, StringMatch):
        return string_condition(value, params)
    if isinstance(value, TokenMatch):
        return token_condition(value, params)
    if isinstance(value, TokenText):
        return f"text ILIKE {params.add(like_prefix(value.text))}"
    if isinstance(value, ReferenceMatch):
        return reference_condition(value, params)
    if isinstance(value, DateMatch):
        return fill(DATE_CONDITIONS[value.prefix], {"ql": value.low, "qh": value.high}, "::timestamptz", params)
    if isinstance(value, NumberMatch):
        return number_condition(value, params)
    if isinstance(value, QuantityMatch):
        return quantity_condition(value, params)
    if isinstance(value, UriMatch):
        return uri_condition(value, params)
    if isinstance(value, CompositeMatch):
        return composite_condition(value, params)
    if isinstance(value, NearMatch):
        return near_condition(value, lambda number: params.add(number, "::float8"))
    raise TypeError(f"not a search value: {value!r}")


def successor(text: str) -> str | None:
    """The smallest string greater than every string starting with `text` (code point order)."""
    last = ord(text[-1]) + 1
    if 0xD800 <= last < 0xE000:  # surrogates cannot be encoded
        last = 0xE000
    return text[:-1] + chr(last) if last <= 0x10FFFF else None


def prefix_condition(column: str, text: str, params: Parameters) -> str:
    """`column` starts with `text`, as a range the "C"-collated b-tree index serves."""
    upper = successor(text) if text else None
    if upper is None:
        return f"starts_with({column}, {params.add(text)})"
    return f"{column} >= {params.add(text)} AND {column} < {params.add(upper)}"


def like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def string_condition(value: StringMatch, params: Parameters) -> str:
    if value.mode == "exact":
        return f"exact = {params.add(value.text)}"
    if value.mode == "contains":
        return f"strpos(normalized, {params.add(value.text)}) > 0"
    return prefix_condition("normalized", value.text, params)


def table_column(name: str) -> str:
    """A column of an index table, by its name (a composite's part reads its fields from JSON instead)."""
    return name


def token_condition(value: TokenMatch, params: Parameters, field: Callable[[str], str] = table_column) -> str:
    parts = []
    if value.code is not None:
        parts.append(f"{field('value')} = {params.add(value.code)}")
    if value.system_rule == "none":
        parts.append(f"{field('system')} IS NULL")
    elif value.system_rule == "equal":
        parts.append(f"{field('system')} = {params.add(value.system)}")
    return " AND ".join(parts)


def reference_condition(value: ReferenceMatch, params: Parameters) -> str:
    if value.target_id is None:
        return f"target_url = {params.add(value.url)}"
    condition = f"target_id = {params.add(value.target_id)}"
    if len(value.target_types) == 1:
        condition = f"target_type = {params.add(value.target_types[0])} AND {condition}"
    elif value.target_types:
        condition = f"target_type = ANY({params.add(list(value.target_types), '::text[]')}) AND {condition}"
    if value.url is not None:
        condition = f"(({condition}) OR target_url = {params.add(value.url)})"
    return condition


def fill(template: str, values: Mapping[str, object], cast: str, params: Parameters) -> str:
    """The template with a parameter for each of its placeholders (only those it uses)."""
    used = {name: params.add(value, cast) for name, value in values.items() if "{" + name + "}" in template}
    return template.format(**used)


def number_condition(value: NumberMatch, params: Parameters, column: str = "value") -> str:
    values = {"v": value.value, "low": value.low, "high": value.high}
    return fill(NUMBER_CONDITIONS[value.prefix].replace("{c}", column), values, "::numeric", params)


def quantity_condition(value: QuantityMatch, params: Parameters, field: Callable[[str], str] = table_column) -> str:
    condition = number_condition(value.number, params, field("value"))
    if value.system is not None:
        condition += f" AND {field('system')} = {params.add(value.system)}"
        if value.code is not None:
            condition += f" AND {field('unit_code')} = {params.add(value.code)}"
    elif value.code is not None:
        unit = params.add(value.code)
        condition += f" AND ({field('unit_code')} = {unit} OR {field('unit')} = {unit})"
    return condition


def uri_condition(value: UriMatch, params: Parameters) -> str:
    if value.mode == "below":
        return prefix_condition("uri", value.uri, params)
    if value.mode == "above":
        return f"uri = ANY({params.add(uri_ancestors(value.uri), '::text[]')})"
    return f"uri = {params.add(value.uri)}"


def composite_condition(value: CompositeMatch, params: Parameters) -> str:
    """Every component matches its part of the same row. Token and quantity parts are compared on their JSON
    fields, as idx_composite_first_value and idx_composite_quantity (sql/0008, 0016) index them: a code and a value
    range read only the rows in that range, and each row costs no more than reading the fields. Any other part is
    read back as a record with the columns of its type's table (a function scan per row), so the usual condition
    applies to it unchanged."""
    conditions = []
    for position, (kind, part) in enumerate(value.parts):
        if isinstance(part, TokenMatch):
            conditions.append(token_condition(part, params, part_field(kind, position)))
        elif isinstance(part, QuantityMatch):  # only quantity parts have a `unit_code` key: the index's predicate
            condition = quantity_condition(part, params, part_field(kind, position))
            conditions.append(f"(parts::jsonb -> {position}) ? 'unit_code' AND {condition}")
        else:
            record = f"jsonb_to_record(parts::jsonb -> {position}) AS part({COMPONENT_COLUMNS[kind]})"
            conditions.append(f"EXISTS (SELECT FROM {record} WHERE {value_condition(part, params)})")
    return " AND ".join(conditions)


def part_field(kind: str, position: int) -> Callable[[str], str]:
    """A field of the composite row's part at `position` as the column of its type's table (what jsonb_to_record
    reads into it), spelled as the indexes of sql/0008 and 0011 spell it."""
    types = dict(pair.split(" ") for pair in COMPONENT_COLUMNS[kind].split(", "))

    def field(name: str) -> str:
        text = f"(parts::jsonb -> {position}) ->> '{name}'"
        return text if types[name] == "text" else f"({text})::{types[name]}"
    return field
