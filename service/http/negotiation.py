"""Content negotiation: which JSON media type to answer with, and which request bodies are accepted."""

from __future__ import annotations

from functools import lru_cache

from service.fhir.errors import FhirError

FHIR_JSON = "application/fhir+json"
# The JSON media types FHIR R4 clients send, in our order of preference for a wildcard.
JSON_TYPES = (FHIR_JSON, "application/json+fhir", "application/json")
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (*JSON_TYPES, JSON_PATCH)  # FHIRPath Patch (a Parameters resource) or JSON Patch
_XML_TYPES = ("application/fhir+xml", "application/xml+fhir", "application/xml", "text/xml")
_FORMAT_ALIASES = {"json": FHIR_JSON, "xml": "application/fhir+xml", "html": "text/html"}


def _parse_accept(header: str) -> list[tuple[float, int, str]]:
    """(q, position, media type) for each entry; entries with q=0 are refused ones and dropped."""
    entries = []
    for position, part in enumerate(header.split(",")):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type and quality > 0:
            entries.append((quality, position, media_type.lower()))
    return sorted(entries, key=lambda entry: (-entry[0], entry[1]))


def _match(media_type: str) -> str | None:
    if media_type in JSON_TYPES:
        return media_type
    if media_type in ("*/*", "application/*"):
        return FHIR_JSON
    return None


@lru_cache(maxsize=64)  # clients send the same few Accept headers on every request
def negotiate(accept: str | None, format_param: str | None) -> str:
    """The response media type; raises 406 when the client accepts nothing we produce."""
    if format_param:
        # An unencoded '+' in a query string arrives as a space; no media type contains one.
        format_param = format_param.replace(" ", "+")
        wanted = _FORMAT_ALIASES.get(format_param.lower(), format_param.split(";")[0].strip().lower())
        if (chosen := _match(wanted)) is not None:
            return chosen
        raise _not_acceptable(f"_format={format_param}")
    if not accept:
        return FHIR_JSON
    for _quality, _position, media_type in _parse_accept(accept):
        if (chosen := _match(media_type)) is not None:
            return chosen
    raise _not_acceptable(f"Accept: {accept}")


def _not_acceptable(requested: str) -> FhirError:
    xml = any(xml_type in requested.lower() for xml_type in _XML_TYPES) or "xml" in requested.lower()
    reason = "XML is not supported yet" if xml else "the requested media type is not supported"
    return FhirError(
        406, f"Cannot produce {requested}: {reason}; this server answers in {', '.join(JSON_TYPES)}",
        code="not-supported",
    )


def check_body_type(content_type: str, allowed: tuple[str, ...] = JSON_TYPES) -> None:
    """Refuse (415) a request body that is not one of the allowed media types."""
    if content_type.lower() not in allowed:
        shown = content_type or "none"
        raise FhirError(
            415, f"Unsupported Content-Type '{shown}': send one of {', '.join(allowed)}", code="not-supported"
        )
