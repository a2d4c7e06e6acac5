"""FHIR JSON responses: negotiated media type, `_pretty`, gzip."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from service.fhir import exact_json
from service.fhir.outcome import Issue, operation_outcome
from service.http.keys import RESPONSE_TYPE
from service.http.negotiation import FHIR_JSON

# Below this size gzip costs more than it saves.
_COMPRESS_MIN_BYTES = 1024
# Up to this size a body is compressed on the event loop (0.13 ms for a 50 KB searchset of 100 Organizations), not
# handed to a thread: the hand-off cost more than the work, and the thread took CPU from PostgreSQL.
_COMPRESS_IN_LOOP_BYTES = 1 << 18


def fhir_response(
    request: web.Request, status: int, body: dict[str, Any] | bytes | None, headers: dict[str, str] | None = None,
) -> web.Response:
    """A FHIR JSON response; `body` may be the stored compact bytes, served without re-encoding."""
    media_type = request.get(RESPONSE_TYPE, FHIR_JSON)
    if body is None:
        return web.Response(status=status, headers=headers)
    pretty = request.query.get("_pretty", "").lower() == "true"
    if pretty:
        data = orjson.dumps(exact_json.loads(body) if isinstance(body, bytes) else body, option=orjson.OPT_INDENT_2)
    else:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
    # Written as HAPI writes it (no space before `charset`): some clients compare the header as a string.
    headers = {**(headers or {}), "Content-Type": f"{media_type};charset=UTF-8"}
    response = web.Response(status=status, body=data, headers=headers, zlib_executor_size=_COMPRESS_IN_LOOP_BYTES)
    if len(data) >= _COMPRESS_MIN_BYTES:
        response.enable_compression()
    return response


def outcome_response(
    request: web.Request, status: int, *issues: Issue, headers: dict[str, str] | None = None,
) -> web.Response:
    return fhir_response(request, status, operation_outcome(*issues), headers)
