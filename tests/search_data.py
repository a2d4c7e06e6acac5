"""Shared by the search tests: a database loaded with Plan-Net and Synthea once per module, the loaded
resources read straight from the NDJSON files (the oracle), and helpers to run searches."""

from __future__ import annotations

import gzip
import unicodedata
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from service.settings import Settings
from tests import tokens
from tests.conftest import DATA_DIR, SEARCH_DATASETS

DATASETS = SEARCH_DATASETS


def search_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, auth_mode="hs256", hs256_secret=tokens.HS256_SECRET,
                    jwt_issuers=[tokens.ISSUER], jwt_audience=tokens.AUDIENCE, base_path="/fhir", reindex_workers=0)


@cache
def resources(res_type: str) -> tuple[dict[str, Any], ...]:
    """The resources of one type as loaded (a later line with the same id replaces an earlier one)."""
    by_id: dict[str, dict[str, Any]] = {}
    for dataset in DATASETS:
        path = DATA_DIR / dataset / f"{res_type}.ndjson.gz"
        if path.exists():
            with gzip.open(path, "rb") as lines:
                for line in lines:
                    resource = orjson.loads(line)
                    by_id[resource["id"]] = resource
    return tuple(by_id.values())


def ids_where(res_type: str, predicate) -> set[str]:
    return {resource["id"] for resource in resources(res_type) if predicate(resource)}


def folded(text: str) -> str:
    """Lower case without accents: what a default string search compares."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()


def relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: relative(link["url"]) for link in bundle.get("link", [])}


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [entry for entry in bundle.get("entry", []) if entry["search"]["mode"] == mode]


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in entries(bundle)]


async def get_bundle(client, url: str, status: int = 200, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(url, headers=headers)
    body = await response.json(content_type=None)
    assert response.status == status, body
    return body


async def search_ids(client, url: str) -> set[str]:
    """The ids of every match, following `next` links; each id must come once."""
    found: list[str] = []
    while url:
        bundle = await get_bundle(client, url)
        found += match_ids(bundle)
        url = links(bundle).get("next")
    assert len(found) == len(set(found)), "a resource came twice"
    return set(found)
