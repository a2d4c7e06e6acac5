"""The absolute base URL as the client saw it, behind the mesh's TLS-terminating proxies."""

from __future__ import annotations

from aiohttp import web

from service.http.keys import SETTINGS


def base_url(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    headers = request.headers
    scheme = _first(headers.get("X-Forwarded-Proto")) or request.scheme
    host = _first(headers.get("X-Forwarded-Host")) or request.host
    prefix = (_first(headers.get("X-Forwarded-Prefix")) or "").rstrip("/")
    return f"{scheme}://{host}{prefix}{settings.base_path}"


def _first(value: str | None) -> str | None:
    """The client-side value of a header a chain of proxies may have appended to."""
    return value.split(",")[0].strip() if value else None
