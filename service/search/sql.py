"""Search queries -> SQL statements (pure): the page of matches, and the count.

The page is a keyset: rows are ordered by the sort keys then `res_id`, and a cursor selects the rows
strictly after (or, paging backwards, before) the row it names, so pages stay exact while data changes.
A parameter sort key is the minimum of the resource's values ascending, the maximum descending (for
dates: the lowest `low`, the highest `high`), looked up per matching resource through the index on
res_id; resources without a value sort last in both directions.

Most pages are chosen from the index tables alone, and only the page's `count + 1` rows are read from
`resource` (reading the row of every match, to cut to the page afterwards, cost a random read of `resource`
per match: 10,000 of them for a page of 20). Index rows exist only for live resources (a deletion removes
them in its transaction, store/resources.py) and `sp_hash` names the type as well as the code, so a resource
with an index row of a plain or chained term is a live resource of the searched type. A search that needs
`resource` to decide a match (no such term; `_has`, which compares its `fhir_id`) or to order the page
(`_sort` on `_id` or `_lastUpdated`, served by resource's own indexes) reads it for every match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.search.cursor import BACKWARD, Cursor
from service.search.query import SearchQuery, SortKey
from service.search.sql_filters import TABLES, Parameters, hash_test, term_condition, term_subquery
from service.search.terms import Term

RESOURCE_COLUMNS = {"_id": "r.fhir_id", "_lastUpdated": "r.last_updated"}
SORT_COLUMNS = {"string": "normalized", "token": "value", "uri": "uri", "number": "value", "quantity": "value",
                "reference": "coalesce(target_type || '/' || target_id, target_url)"}
CASTS = {"date": "::timestamptz", "number": "::numeric", "text": "::text"}


@dataclass(frozen=True, slots=True)
class Statement:
    text: str
    params: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class OrderItem:
    expression: str
    descending: bool
    nulls_last: bool
    cast: str

    def reversed(self) -> OrderItem:
        return OrderItem(self.expression, not self.descending, not self.nulls_last, self.cast)

    def sql(self) -> str:
        nulls = "LAST" if self.nulls_last else "FIRST"
        return f"{self.expression} {'DESC' if self.descending else 'ASC'} NULLS {nulls}"


def match_conditions(query: SearchQuery, params: Parameters) -> list[str]:
    if query.other_types:
        conditions = [f"r.res_type = ANY({params.add(list(query.types), '::text[]')})", "NOT r.deleted"]
    else:
        conditions = [f"r.res_type = {params.add(query.resource_type)}", "NOT r.deleted"]
    conditions += [term_condition(term, params) for term in query.terms]
    return conditions


def count_statement(query: SearchQuery) -> Statement:
    params = Parameters()
    driver = index_driver(query)
    if driver is None:
        where = " AND ".join(match_conditions(query, params))
        return Statement(f"SELECT count(*) FROM resource r WHERE {where}", tuple(params.values))
    tables, conditions = index_matches(query, driver, params)
    text = f"SELECT count(*) FROM (SELECT DISTINCT m.res_id FROM {tables}{where_clause(conditions)}) c"
    return Statement(text, tuple(params.values))


def page_statement(query: SearchQuery) -> Statement:
    """`count + 1` rows (the extra one tells whether there is a further page): res_id, res_type, fhir_id,
    body and the sort values k0, k1, ...; in reverse order when the cursor pages backwards."""
    params = Parameters()
    driver = None if any(key.code in RESOURCE_COLUMNS for key in query.sort) else index_driver(query)
    if driver is None:
        conditions = match_conditions(query, params)
        joins, order = sort_order(query, params, "r")
        text = page_text(query, params, ("r.res_id, r.res_type, r.fhir_id, r.body", "resource r"), conditions,
                         joins, order)
        return Statement(text, tuple(params.values))
    tables, conditions = index_matches(query, driver, params)
    joins, order = sort_order(query, params, "m")
    page = page_text(query, params, ("DISTINCT m.res_id", tables), conditions, joins, order)
    outer = [replace(item, expression=f"p.k{index}") for index, item in enumerate(order[:-1])]
    outer.append(replace(order[-1], expression="p.res_id"))
    keys = "".join(f", {item.expression}" for item in outer[:-1])
    text = (f"SELECT r.res_id, r.res_type, r.fhir_id, r.body{keys} FROM ({page}) p "
            f"JOIN resource r ON r.res_id = p.res_id ORDER BY {', '.join(item.sql() for item in outer)}")
    return Statement(text, tuple(params.values))


def page_text(query: SearchQuery, params: Parameters, source: tuple[str, str], conditions: list[str],
              joins: list[str], order: list[OrderItem]) -> str:
    """The page's rows of `source` (its columns, its tables) that meet `conditions`, then their sort values k0,
    k1, ..., in `order`."""
    if query.cursor is not None:
        conditions = [*conditions, keyset_condition(order, query.cursor, params)]
    columns, tables = source
    keys = "".join(f", {item.expression} AS k{index}" for index, item in enumerate(order[:-1]))
    return (f"SELECT {columns}{keys} FROM {tables}{''.join(joins)}{where_clause(conditions)} "
            f"ORDER BY {', '.join(item.sql() for item in order)} LIMIT {params.add(query.count + 1)}")


def where_clause(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def index_driver(query: SearchQuery) -> Term | None:
    """The term whose index rows the matches are chosen from, or None when `resource` must be read to decide
    a match (see the module's docstring)."""
    if any(term.reverse for term in query.terms):
        return None
    return next((term for term in query.terms if typed_positive(term)), None)


def typed_positive(term: Term) -> bool:
    """Every resource the term matches has an index row of it, of its type: not `:not`, and not full text (one
    resource_text row per resource, of any type)."""
    return not term.negated and (term.chain is not None or term.full_text_code() is None)


def index_matches(query: SearchQuery, driver: Term, params: Parameters) -> tuple[str, list[str]]:
    """The tables and conditions of the matches `m`: the driver's index rows (several may be of one resource)
    whose res_id meets the other terms. PostgreSQL may still start from one of those, and look its matches up
    in the driver's table by res_id."""
    conditions = [term_condition(term, params, "m", probed=True) for term in query.terms if term is not driver]
    return f"({term_subquery(driver, params)}) m", conditions


def sort_order(query: SearchQuery, params: Parameters, alias: str) -> tuple[list[str], list[OrderItem]]:
    """The joins that look the sort values up, and the page's order: the sort keys, then `alias`.res_id, reversed
    when the cursor pages backwards."""
    joins, expressions = [], []
    for index, key in enumerate(query.sort):
        if key.code in RESOURCE_COLUMNS:
            expressions.append(RESOURCE_COLUMNS[key.code])
            continue
        joins.append(sort_join(query.types, key, f"s{index}", alias, params))
        expressions.append(f"s{index}.v")
    return joins, _ordered(query, [*expressions, f"{alias}.res_id"])


def output_order(query: SearchQuery, alias: str) -> str:
    """The page statement's ORDER BY over its own output columns (k0, k1, ..., res_id) as `alias`, for a statement
    that takes its rows as a subquery."""
    keys = [f"{alias}.k{index}" for index in range(len(query.sort))]
    return ", ".join(item.sql() for item in _ordered(query, [*keys, f"{alias}.res_id"]))


def _ordered(query: SearchQuery, expressions: list[str]) -> list[OrderItem]:
    """The sort keys' `expressions`, then res_id's, in the page's order."""
    order = [OrderItem(expression, key.descending, True, CASTS[key.value_kind])
             for expression, key in zip(expressions, query.sort, strict=False)]
    order.append(OrderItem(expressions[-1], False, True, "::bigint"))
    if query.cursor is not None and query.cursor.direction == BACKWARD:
        order = [item.reversed() for item in order]
    return order


def sort_join(types: tuple[str, ...], key: SortKey, alias: str, matched: str, params: Parameters) -> str:
    if key.kind == "date":
        column = "high" if key.descending else "low"
    else:
        column = SORT_COLUMNS[key.kind]
    aggregate = "max" if key.descending else "min"
    return (f" LEFT JOIN LATERAL (SELECT {aggregate}({column}) AS v FROM {TABLES[key.kind]} "
            f"WHERE res_id = {matched}.res_id AND {hash_test(types, key.code, params)}) {alias} ON true")


def keyset_condition(order: list[OrderItem], cursor: Cursor, params: Parameters) -> str:
    """Rows strictly after the cursor's row in `order` (lexicographic over the keys, res_id last)."""
    values = [*cursor.values, cursor.res_id]
    arms = []
    for position, item in enumerate(order):
        after = after_condition(item, values[position], params)
        if after is None:
            continue
        equal = [equal_condition(order[i], values[i], params) for i in range(position)]
        arms.append("(" + " AND ".join([*equal, after]) + ")")
    return "(" + (" OR ".join(arms) or "false") + ")"


def after_condition(item: OrderItem, value: object, params: Parameters) -> str | None:
    """Values strictly after `value` in the item's order; None when nothing comes after it."""
    if value is None:
        return None if item.nulls_last else f"{item.expression} IS NOT NULL"
    operator = "<" if item.descending else ">"
    condition = f"{item.expression} {operator} {params.add(value, item.cast)}"
    return f"({condition} OR {item.expression} IS NULL)" if item.nulls_last else condition


def equal_condition(item: OrderItem, value: object, params: Parameters) -> str:
    if value is None:
        return f"{item.expression} IS NULL"
    return f"{item.expression} = {params.add(value, item.cast)}"


# What a reindex chunk reads of each resource (jobs/reindex_step.py reads whole chunks with it too): its body,
# and the state of its index rows (sql/0012; every live resource has a state row).
CHUNK_SELECT = ("SELECT r.res_id, r.fhir_id, r.version, st.index_gen, st.index_hash, st.index_extractor, r.body "
                "FROM resource r JOIN resource_index_state st ON st.res_id = r.res_id")


def chunk_statement(queries: Sequence[SearchQuery], after: int, upto: int) -> Statement:
    """The resources of one reindex chunk (res_id in (after, upto]) that match any of the queries, all of
    one resource type, in res_id order, with the columns the reindex step reads."""
    params = Parameters()
    alternatives = " OR ".join(f"({' AND '.join(match_conditions(query, params))})" for query in queries)
    text = (f"{CHUNK_SELECT} WHERE ({alternatives}) "
            f"AND r.res_id > {params.add(after)} AND r.res_id <= {params.add(upto)} ORDER BY r.res_id")
    return Statement(text, tuple(params.values))
