"""What a reindex batch extracts before it writes (pure: rows as the chunk cursor returns them)."""

from __future__ import annotations

import orjson

from service.jobs.reindex_batch import prepare_batch
from service.jobs.start import ReindexPlan
from service.search.catalog import ChangeLog, build_catalog
from service.search.extractor import Extractor, current
from service.search.registry import Registry
from service.search.rows import StringRow, fingerprint

ORG = {"resourceType": "Organization", "id": "o1", "name": "Acme"}
CATALOG = build_catalog(Registry.builtin(), ChangeLog(3, changes=[(3, "name", ["Organization"])]))


MINE = current()


def row(res_id: int, index_gen: int, index_hash: int | None, body: bytes = orjson.dumps(ORG),
        extractor: int | None = MINE.number) -> dict:
    return {"res_id": res_id, "fhir_id": f"o{res_id}", "version": 1, "index_gen": index_gen,
            "index_hash": index_hash, "index_extractor": extractor, "body": body}


async def test_what_each_row_needs() -> None:
    current = fingerprint(CATALOG.registry.extract(ORG))
    rows = [row(1, 3, current),  # indexed with these definitions: a read
            row(2, 9, current),  # indexed with newer definitions than this catalog's: its own write did it
            row(3, 2, current),  # `name` changed since: its rows are extracted, to compare with the stored ones
            row(4, 2, 17),  # the same (the fingerprint no longer decides: it is moved by the difference)
            row(5, 3, None),  # rows of unknown provenance: all compared with the stored ones
            row(6, 2, 17, b"[1, 2]")]  # not a resource
    batch = await prepare_batch("Organization", rows, CATALOG, ReindexPlan())
    extracted = {item.res_id: item for item in batch.extracted}
    assert set(extracted) == {3, 4, 5}
    for res_id in (3, 4):  # only the `name` rows are extracted, pending their comparison (jobs/stored_rows.py)
        item = extracted[res_id]
        assert (item.codes, item.current, item.exact) == ({"name"}, False, False)
        assert item.pending == CATALOG.registry.extract(ORG, item.codes)
        assert item.pending.strings == (StringRow("name", "acme", "Acme"),) and not item.pending.tokens
    assert (extracted[5].codes, extracted[5].exact, extracted[5].pending) == (None, True, CATALOG.registry.extract(ORG))
    assert "not a JSON object" in batch.failures[6]
    assert not any(item.records for item in batch.extracted)  # known once compared with the stored rows


async def test_rows_of_another_extractor_are_compared_whole_with_the_stored_rows() -> None:
    current = fingerprint(CATALOG.registry.extract(ORG))
    older = Extractor(MINE.code - 1, MINE.unicode, MINE.definitions).number
    newer = Extractor(MINE.code + 1, MINE.unicode, 0).number
    other_definitions = Extractor(MINE.code, MINE.unicode, (MINE.definitions + 1) % 10**9).number
    rows = [row(1, 3, current, extractor=older), row(2, 3, current, extractor=None),
            row(3, 3, current, extractor=other_definitions), row(4, 3, current, extractor=newer)]
    batch = await prepare_batch("Organization", rows, CATALOG, ReindexPlan())
    # Same fingerprint or not, all their rows are to be compared with the stored ones; a newer extractor's are
    # left to its own replicas.
    assert [(item.res_id, item.exact, item.codes, item.current) for item in batch.extracted] == [
        (1, True, None, False), (2, True, None, False), (3, True, None, False)]
    assert all(item.pending == CATALOG.registry.extract(ORG) for item in batch.extracted)


async def test_force_compares_current_rows_with_the_stored_ones_and_compacts_every_body() -> None:
    current = fingerprint(CATALOG.registry.extract(ORG))
    pretty = orjson.dumps(ORG, option=orjson.OPT_INDENT_2)
    plan = ReindexPlan(force=True, optimize_storage="CURRENT_VERSION")
    batch = await prepare_batch("Organization", [row(1, 3, current), row(2, 3, current, pretty)], CATALOG, plan)
    # the fingerprints are equal, yet every row is kept for the comparison with the stored rows
    assert [(item.res_id, item.exact, item.current) for item in batch.extracted] == [(1, True, True),
                                                                                    (2, True, True)]
    assert all(item.pending == CATALOG.registry.extract(ORG) for item in batch.extracted)
    assert [(item.res_id, item.body, item.differs) for item in batch.rewrites] == [
        (1, orjson.dumps(ORG), False), (2, orjson.dumps(ORG), True)]


async def test_storage_does_not_depend_on_the_index_generation() -> None:
    pretty = orjson.dumps(ORG, option=orjson.OPT_INDENT_2)
    plan = ReindexPlan(optimize_storage="CURRENT_VERSION")
    batch = await prepare_batch("Organization", [row(1, 9, None, pretty)], CATALOG, plan)  # newer definitions
    assert batch.extracted == [] and [item.body for item in batch.rewrites] == [orjson.dumps(ORG)]



ALIAS = {"resourceType": "SearchParameter", "id": "alias", "url": "http://example.org/SearchParameter/alias",
         "name": "alias", "status": "active", "description": "aliases", "code": "alias", "base": ["Organization"],
         "type": "string", "expression": "Organization.alias"}
# `alias` first in force at generation 4 on every type (base Resource), since 5 on Organization alone.
INTRODUCING = build_catalog(Registry.builtin(), ChangeLog(
    5, [ALIAS], changes=[(4, "alias", ["Resource"]), (5, "alias", ["Organization"])],
    introduced=[("alias", "Resource", 4), ("alias", "Organization", 5)]))


async def test_codes_first_in_force_after_the_indexing_are_compared_with_no_rows_at_once() -> None:
    assert INTRODUCING.unstored_codes("Organization", 3) == {"alias"}  # by the earliest base that names the type
    assert INTRODUCING.unstored_codes("Organization", 4) == frozenset()
    aliased = {**ORG, "alias": ["Speedy"]}
    indexed = fingerprint(Registry.builtin().extract(aliased))
    rows = [row(1, 3, indexed, orjson.dumps(aliased)),  # alias was not in force yet: no rows of it are stored
            row(2, 4, indexed, orjson.dumps(aliased))]  # it was: its stored rows are read in the write
    first, second = (await prepare_batch("Organization", rows, INTRODUCING, ReindexPlan())).extracted
    assert (first.codes, first.pending, first.replaces) == ({"alias"}, None, False)  # COPY, nothing to delete
    assert first.records is not None and first.records["idx_string"]
    assert first.fingerprint == fingerprint(INTRODUCING.registry.extract(aliased))  # of all its rows now
    assert (second.codes, second.records) == ({"alias"}, None)
    assert second.pending == INTRODUCING.registry.extract(aliased, frozenset({"alias"}))


def test_a_built_in_code_overridden_has_rows_from_the_start() -> None:
    overridden = build_catalog(Registry.builtin(), ChangeLog(5, changes=[(5, "name", ["Organization"])],
                                                             introduced=[("name", "Organization", 5)]))
    assert overridden.stale_codes("Organization", 3) == {"name"}
    assert overridden.unstored_codes("Organization", 3) == frozenset()
